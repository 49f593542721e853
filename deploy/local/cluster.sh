#!/usr/bin/env bash
# The distributed mode on one machine, on loopback: redis-server, msg-service,
# two gateways and HAProxy in front of them.
#
#   deploy/local/cluster.sh up      start everything; prints the load balancer's URL once all is ready
#   deploy/local/cluster.sh down    stop everything
#   deploy/local/cluster.sh status  what runs
#   deploy/local/cluster.sh kill9 NAME    kill -9 one part (redis, msg-service, gateway1, gateway2, haproxy)
#   deploy/local/cluster.sh restart NAME  start a stopped or killed part again, as it was started,
#                                         and wait until it is ready (fault-injection tests)
#
# Environment: CLUSTER_DIR (state, logs, data; default ./.cluster),
# CLUSTER_PORT (the load balancer's port; default: a free one),
# CLUSTER_PROFILE (debug or release binaries; default release),
# CHAT_JWT_SECRET (shared by the gateways; default: generated into CLUSTER_DIR),
# CLUSTER_DEV_AUTH (serve POST /v1/dev/token; default true, for trying it out),
# CLUSTER_MSG_FLAGS (extra msg-service flags, split on whitespace, e.g.
# "--send-rate 100 --send-burst 200"; default none).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="${CLUSTER_DIR:-$root/.cluster}"
profile="${CLUSTER_PROFILE:-release}"
bin="${CARGO_TARGET_DIR:-$root/target}/$profile"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Whether pid $1 still runs. `kill -0` alone also succeeds on a zombie (exited,
# not yet reaped: these processes outlive this script, so PID 1 reaps them,
# late or never in many containers).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0  # no procfs: kill -0 decides
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}

# Waits until `probe` succeeds; fails with the log of `name` if `pid` dies first.
wait_for() {
  local name="$1" pid="$2" probe="$3"
  for _ in $(seq 1 150); do
    if eval "$probe" >/dev/null 2>&1; then return 0; fi
    if ! alive "$pid"; then
      echo "cluster: $name exited; its log:" >&2; tail -n 30 "$dir/$name.log" >&2; return 1
    fi
    sleep 0.2
  done
  echo "cluster: $name not ready after 30 s; its log:" >&2; tail -n 30 "$dir/$name.log" >&2
  return 1
}

# start NAME PROBE CMD...: runs CMD in the background; remembers how (for restart).
start() {
  local name="$1" probe="$2"; shift 2
  printf '%s\0' "$@" >"$dir/$name.cmd"
  printf '%s' "$probe" >"$dir/$name.probe"
  "$@" >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

up() {
  if [ -f "$dir/lb.url" ]; then echo "cluster: already up at $(cat "$dir/lb.url") (run down first)" >&2; exit 1; fi
  command -v redis-server >/dev/null && command -v haproxy >/dev/null \
    || { echo "cluster: needs redis-server and haproxy (apt-get install redis-server haproxy)" >&2; exit 2; }
  local cargo_flags=(); [ "$profile" = release ] && cargo_flags=(--release)
  (cd "$root" && cargo build --quiet "${cargo_flags[@]}" -p gateway -p msg-service)
  mkdir -p "$dir"
  # A part that fails to start leaves nothing running behind it.
  trap 'echo "cluster: up failed; stopping what started" >&2; down' ERR
  local redis_port msg_port gw1_port gw2_port lb_port secret
  redis_port=$(free_port); msg_port=$(free_port); gw1_port=$(free_port); gw2_port=$(free_port)
  lb_port="${CLUSTER_PORT:-$(free_port)}"
  if [ -n "${CHAT_JWT_SECRET:-}" ]; then secret="$CHAT_JWT_SECRET"
  else
    [ -f "$dir/jwt-secret" ] || (umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$dir/jwt-secret")
    secret="$(cat "$dir/jwt-secret")"
  fi
  local redis_url="redis://127.0.0.1:$redis_port"

  start redis "redis-cli -p $redis_port ping | grep -q PONG" \
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no
  wait_for redis "$(cat "$dir/redis.pid")" "$(cat "$dir/redis.probe")"

  local msg_flags=(); read -r -a msg_flags <<<"${CLUSTER_MSG_FLAGS:-}"
  start msg-service "(exec 3<>/dev/tcp/127.0.0.1/$msg_port)" \
    "$bin/msg-service" --listen "127.0.0.1:$msg_port" --data-dir "$dir/msg-data" --redis "$redis_url" \
    "${msg_flags[@]}"
  wait_for msg-service "$(cat "$dir/msg-service.pid")" "$(cat "$dir/msg-service.probe")"

  local n port attempt
  for n in 1 2; do
    port=$gw1_port; [ "$n" = 2 ] && port=$gw2_port
    # A free port can be taken by another process between free_port and the
    # bind (cluster tests run in parallel): then try another one.
    for attempt in 1 2 3; do
      CHAT_JWT_SECRET="$secret" start "gateway$n" "curl -fsS http://127.0.0.1:$port/readyz" \
        "$bin/gateway" --listen "127.0.0.1:$port" \
        --data-dir "$dir/gateway$n" --msg-service "http://127.0.0.1:$msg_port" --redis "$redis_url" \
        --gateway-id "gw$n" --dev-auth "${CLUSTER_DEV_AUTH:-true}"
      if wait_for "gateway$n" "$(cat "$dir/gateway$n.pid")" "curl -fsS http://127.0.0.1:$port/readyz"; then
        break
      fi
      grep -qi "already in use" "$dir/gateway$n.log" && [ "$attempt" -lt 3 ] || false
      echo "cluster: gateway$n: port $port was taken; trying another" >&2
      : >"$dir/gateway$n.log"
      port=$(free_port)
    done
    if [ "$n" = 1 ]; then gw1_port=$port; else gw2_port=$port; fi
  done

  sed -e "s/@LB_PORT@/$lb_port/" -e "s/@GW1_PORT@/$gw1_port/" -e "s/@GW2_PORT@/$gw2_port/" \
    "$root/deploy/local/haproxy.cfg.tmpl" >"$dir/haproxy.cfg"
  haproxy -c -q -f "$dir/haproxy.cfg"
  start haproxy "curl -fsS http://127.0.0.1:$lb_port/readyz" haproxy -db -f "$dir/haproxy.cfg"
  wait_for haproxy "$(cat "$dir/haproxy.pid")" "curl -fsS http://127.0.0.1:$lb_port/readyz"

  printf 'gw1=http://127.0.0.1:%s\ngw2=http://127.0.0.1:%s\nmsg=http://127.0.0.1:%s\nredis=%s\n' \
    "$gw1_port" "$gw2_port" "$msg_port" "$redis_url" >"$dir/endpoints"
  echo "http://127.0.0.1:$lb_port" >"$dir/lb.url"
  trap - ERR
  cat "$dir/lb.url"
}

down() {
  local name pid
  # The load balancer first, the store's owner last: nothing is left half-served.
  for name in haproxy gateway1 gateway2 msg-service redis; do
    [ -f "$dir/$name.pid" ] || continue
    pid="$(cat "$dir/$name.pid")"
    if kill -TERM "$pid" 2>/dev/null; then
      for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
      if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$dir/$name.pid"
  done
  rm -f "$dir/lb.url"
}

status() {
  local name
  for name in redis msg-service gateway1 gateway2 haproxy; do
    if [ -f "$dir/$name.pid" ] && alive "$(cat "$dir/$name.pid")"; then
      echo "$name: running (pid $(cat "$dir/$name.pid"))"
    else
      echo "$name: stopped"
    fi
  done
  [ -f "$dir/lb.url" ] && echo "load balancer: $(cat "$dir/lb.url")"
  return 0
}

known_part() {
  case "$1" in
    redis|msg-service|gateway1|gateway2|haproxy) [ -f "$dir/$1.cmd" ] ;;
    *) false ;;
  esac || { echo "cluster: no part named '$1' (redis, msg-service, gateway1, gateway2, haproxy)" >&2; exit 2; }
}

kill9() {
  known_part "$1"
  local pid; pid="$(cat "$dir/$1.pid")"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do alive "$pid" || return 0; sleep 0.05; done
}

# The gateways read the secret from CHAT_JWT_SECRET or the cluster's secret file.
restart() {
  known_part "$1"
  local args=() secret="${CHAT_JWT_SECRET:-}"
  [ -z "$secret" ] && [ -f "$dir/jwt-secret" ] && secret="$(cat "$dir/jwt-secret")"
  mapfile -d '' args <"$dir/$1.cmd"
  if alive "$(cat "$dir/$1.pid")"; then echo "cluster: $1 is running" >&2; exit 1; fi
  CHAT_JWT_SECRET="$secret" start "$1" "$(cat "$dir/$1.probe")" "${args[@]}"
  wait_for "$1" "$(cat "$dir/$1.pid")" "$(cat "$dir/$1.probe")"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  kill9) kill9 "${2:?kill9 needs a part name}" ;;
  restart) restart "${2:?restart needs a part name}" ;;
  *) echo "usage: $0 up|down|status|kill9 NAME|restart NAME" >&2; exit 2 ;;
esac
