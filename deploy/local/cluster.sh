#!/usr/bin/env bash
# The distributed mode on one machine, on loopback: redis-server, msg-service
# (3 replicas on a Cassandra node by default, 1 on the embedded store), two
# gateways and HAProxy in front of them (and, with several replicas, in front
# of the replicas for the gateways' gRPC).
#
#   deploy/local/cluster.sh up      start everything; prints the load balancer's URL once all is ready
#   deploy/local/cluster.sh down    stop everything
#   deploy/local/cluster.sh status  what runs
#   deploy/local/cluster.sh kill9 NAME    kill -9 one part (redis, msg-service, msg-service2, ...,
#                                         gateway1, gateway2, haproxy, cassandraN)
#   deploy/local/cluster.sh stop NAME     stop one part gracefully (SIGTERM; a replica hands its shards over)
#   deploy/local/cluster.sh restart NAME  start a stopped or killed part again, as it was started,
#                                         and wait until it is ready (a replica: serves its shards)
#
# Environment: CLUSTER_DIR (state, logs, data; default ./.cluster),
# CLUSTER_PORT (the load balancer's port; default: a free one),
# CLUSTER_PROFILE (debug or release binaries; default release),
# CHAT_JWT_SECRET (shared by the gateways; default: generated into CLUSTER_DIR),
# CLUSTER_DEV_AUTH (serve POST /v1/dev/token; default true, for trying it out),
# CLUSTER_MSG_FLAGS (extra msg-service flags, split on whitespace, e.g.
# "--send-rate 100 --send-burst 200"; default none),
# MIMALLOC_PURGE_DELAY (-1, as in the container images: msg-service's and the
# gateways' allocator keeps the memory it frees; README, "Configuration").
#
# The store: CLUSTER_STORE=cassandra (the default) or embedded (msg-service's
# embedded store under CLUSTER_DIR/msg-data: one replica, no Java needed).
# CLUSTER_MSG_REPLICAS: msg-service replicas (default 3 on Cassandra; the
# embedded store belongs to one process: 1), named msg-service, msg-service2,
# msg-service3, ...; each serves the shards it holds a lease on and forwards
# the other calls to their owners. cassandra: Apache Cassandra 3.11 node(s)
# started with CASSANDRA_DIR/start.sh (default: ../shared/cassandra beside
# the repository; needs java 17), node dirs CLUSTER_DIR/cassandraN, and
# msg-service run with --store scylla on them (keyspace `chat`, replication
# factor = number of nodes, LOCAL_QUORUM). CLUSTER_CASSANDRA_NODES=1 (the
# default: one node on a free loopback address 127.0.1.N and a free CQL port)
# or 3 (127.0.0.1, 127.0.0.2, 127.0.0.3 on port 9042, seed 127.0.0.1; these
# addresses must be free). CLUSTER_CASSANDRA_HEAP (default 512M). The parts
# are then also cassandra1 (the seed), cassandra2, cassandra3: `kill9
# cassandra2` and `restart cassandra2` (back when its CQL port answers) work
# like for the others. Node dirs are kept by `down`: a later `up` on the same
# CLUSTER_DIR starts the same nodes, with their data, again.
set -euo pipefail
export MIMALLOC_PURGE_DELAY="${MIMALLOC_PURGE_DELAY--1}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="${CLUSTER_DIR:-$root/.cluster}"
profile="${CLUSTER_PROFILE:-release}"
bin="${CARGO_TARGET_DIR:-$root/target}/$profile"
cassandra_home="${CASSANDRA_DIR:-$root/../shared/cassandra}"
# `up` records where the nodes' scripts are: `down` stops them with those.
[ -f "$dir/cassandra.home" ] && cassandra_home="$(cat "$dir/cassandra.home")"

# A free TCP port (on address $1; default 127.0.0.1), never one handed out
# before by this `up` (listed in $dir/ports.used): a port is free again the
# moment free_port's socket closes, so two parts could otherwise get the same.
free_port() {
  python3 - "${1:-127.0.0.1}" "$dir/ports.used" <<'PY'
import os, socket, sys
address, used_file = sys.argv[1], sys.argv[2]
used = set(open(used_file).read().split()) if os.path.exists(used_file) else set()
while True:
    with socket.socket() as s:
        s.bind((address, 0))
        port = str(s.getsockname()[1])
    if port not in used:
        break
with open(used_file, "a") as f:
    f.write(port + "\n")
print(port)
PY
}

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

# Waits until `probe` succeeds (at most $4 polls 0.2 s apart; default 150: 30 s);
# fails with the log of `name` if `pid` dies first.
wait_for() {
  local name="$1" pid="$2" probe="$3" tries="${4:-150}"
  for _ in $(seq 1 "$tries"); do
    if eval "$probe" >/dev/null 2>&1; then return 0; fi
    if ! alive "$pid"; then
      echo "cluster: $name exited; its log:" >&2; tail -n 30 "$dir/$name.log" >&2; return 1
    fi
    sleep 0.2
  done
  echo "cluster: $name not ready after $((tries / 5)) s; its log:" >&2; tail -n 30 "$dir/$name.log" >&2
  return 1
}

# After part $1 failed to start on port $3: whether to try another port
# (its log matches grep pattern $2, and attempt $4 of 3 was not the last);
# then its log is cleared for the next attempt.
port_was_taken() {
  local name="$1" pattern="$2" port="$3" attempt="$4"
  grep -qi "$pattern" "$dir/$name.log" && [ "$attempt" -lt 3 ] || return 1
  echo "cluster: $name: port $port was taken; trying another" >&2
  : >"$dir/$name.log"
}

# start NAME PROBE CMD...: runs CMD in the background; remembers how (for restart).
start() {
  local name="$1" probe="$2"; shift 2
  printf '%s\0' "$@" >"$dir/$name.cmd"
  printf '%s' "$probe" >"$dir/$name.probe"
  "$@" >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

# The name of replica $1 (1-based): msg-service, msg-service2, msg-service3, ...
replica_name() { if [ "$1" = 1 ]; then echo msg-service; else echo "msg-service$1"; fi; }

# The msg-service replicas this cluster dir started (msg-service alone before `up` ran).
replica_parts() {
  if [ -s "$dir/replicas" ]; then cat "$dir/replicas"; else echo msg-service; fi
}

# The Cassandra nodes of this cluster dir: cassandra1 cassandra2 ...
cassandra_nodes() {
  local d
  for d in "$dir"/cassandra[0-9]; do [ -f "$d/node.env" ] && echo "${d##*/}"; done
  return 0
}

# A node's setting from its node.env (ADDRESS, PORT).
node_env() { sed -n "s/^$2=//p" "$dir/$1/node.env"; }

# Whether process $1's command line has an argument matching grep pattern $2
# (extra grep flags after it). grep reads the whole line list (no -q): with
# pipefail, a grep -q that stops at the first match would make tr die of
# SIGPIPE on a long JVM command line, and the pipeline fail at random.
cmdline_has() {
  local pid="$1" pattern="$2"; shift 2
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep "$@" -- "$pattern" >/dev/null
}

# The pid of node $1 if it runs (its process is started from its node dir).
cassandra_pid() {
  local pid; pid="$(cat "$dir/$1/pid" 2>/dev/null)" || return 0
  alive "$pid" && cmdline_has "$pid" "-Dcassandra.storagedir=.*/$1/data$" && echo "$pid"
  return 0
}

# Starts node $1 (cassandraN) with start.sh, which returns once its CQL port
# answers (or fails with the node's last log lines). A node dir that holds a
# node already starts that node again with its own options.
start_cassandra_node() {
  local name="$1" node_dir="$dir/$1"; shift
  mkdir -p "$node_dir"
  node_dir="$(cd "$node_dir" && pwd -P)"
  [ -f "$node_dir/node.env" ] && set --
  echo "cluster: starting $name ($(date +%T))" >>"$dir/$name.log"
  if ! "$cassandra_home/start.sh" --dir "$node_dir" "$@" >>"$dir/$name.log" 2>&1; then
    # start.sh can take a JVM that is just starting for one that exited (its
    # first check can see the forked shell before it runs java: on a busy
    # machine) and then forgets it: take that process back and wait for it.
    local pid; pid="$(node_process "$node_dir")"
    if [ -z "$pid" ] || ! adopt_cassandra_node "$name" "$node_dir" "$pid" "$@"; then
      echo "cluster: $name did not start; its log:" >&2; tail -n 30 "$dir/$name.log" >&2
      return 1
    fi
  fi
  cat "$node_dir/pid" >"$dir/$name.pid"
}

# The pid of the JVM started from node dir $1 (its exact storagedir flag), if any.
node_process() {
  local cmdline pid
  for cmdline in /proc/[0-9]*/cmdline; do
    pid="${cmdline#/proc/}" pid="${pid%/cmdline}"
    if cmdline_has "$pid" "-Dcassandra.storagedir=$1/data" -xF && alive "$pid"; then
      echo "$pid"; return 0
    fi
  done
  return 0
}

# adopt_cassandra_node NAME DIR PID [start.sh options]: records PID as the
# node's, waits (120 s at most, like start.sh) for its CQL port, and writes the
# node.env start.sh would have written; kills it if it does not answer.
adopt_cassandra_node() {
  local name="$1" node_dir="$2" pid="$3" address="" port="" seeds="" heap="" cluster=""; shift 3
  echo "$pid" >"$node_dir/pid"
  echo "cluster: start.sh lost pid $pid, which runs: waiting for it" >>"$dir/$name.log"
  if [ -f "$node_dir/node.env" ]; then
    address="$(node_env "$name" ADDRESS)" port="$(node_env "$name" PORT)"
  fi
  while [ $# -gt 1 ]; do
    case "$1" in
      --address) address="$2" ;; --port) port="$2" ;; --seeds) seeds="$2" ;;
      --heap) heap="$2" ;; --cluster-name) cluster="$2" ;;
    esac
    shift 2
  done
  [ -n "$address" ] && [ -n "$port" ] || return 1
  for _ in $(seq 1 600); do
    if (exec 3<>"/dev/tcp/$address/$port") 2>/dev/null; then
      echo "cluster: CQL is up on $address:$port" >>"$dir/$name.log"
      [ -f "$node_dir/node.env" ] || printf 'ADDRESS=%s\nPORT=%s\nSEEDS=%s\nHEAP=%s\nCLUSTER=%s\nBOOTSTRAP=false\n' \
        "$address" "$port" "$seeds" "$heap" "$cluster" >"$node_dir/node.env"
      return 0
    fi
    alive "$pid" || return 1
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  return 1
}

# Starts CLUSTER_CASSANDRA_NODES nodes one after another (a node joins the
# ring through the seed, which must answer first); prints the contact points.
start_cassandra() {
  local count="${CLUSTER_CASSANDRA_NODES:-1}" heap="${CLUSTER_CASSANDRA_HEAP:-512M}" n name address cql seeds cluster
  case "$count" in 1|3) ;; *) echo "cluster: CLUSTER_CASSANDRA_NODES must be 1 or 3 (got '$count')" >&2; return 2 ;; esac
  [ -x "$cassandra_home/start.sh" ] \
    || { echo "cluster: no Cassandra scripts in $cassandra_home (set CASSANDRA_DIR)" >&2; return 2; }
  cassandra_home="$(cd "$cassandra_home" && pwd)"
  echo "$cassandra_home" >"$dir/cassandra.home"
  local existing; existing="$(cassandra_nodes | wc -l)"
  if [ "$existing" -ne 0 ] && [ "$existing" -ne "$count" ]; then
    echo "cluster: $dir holds $existing Cassandra node(s), not $count; remove $dir/cassandra* first" >&2
    return 2
  fi
  # A name of its own: a node of another cluster on these addresses is refused.
  [ -f "$dir/cassandra.cluster" ] || echo "chat-local-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')" >"$dir/cassandra.cluster"
  cluster="$(cat "$dir/cassandra.cluster")"
  for n in $(seq 1 "$count"); do
    name="cassandra$n"
    if [ "$count" = 3 ]; then
      address="127.0.0.$n" cql=9042 seeds=127.0.0.1
    else
      # The first 127.0.1.N whose storage port (always 7000) is free.
      address=""
      for a in $(seq 1 50); do
        if ! (exec 3<>"/dev/tcp/127.0.1.$a/7000") 2>/dev/null; then address="127.0.1.$a"; break; fi
      done
      [ -n "$address" ] || { echo "cluster: no free loopback address for Cassandra" >&2; return 1; }
      cql="$(free_port "$address")" seeds="$address"
    fi
    start_cassandra_node "$name" --address "$address" --port "$cql" --seeds "$seeds" \
      --heap "$heap" --cluster-name "$cluster" || return 1
  done
  local points=()
  for name in $(cassandra_nodes); do points+=("$(node_env "$name" ADDRESS):$(node_env "$name" PORT)"); done
  (IFS=,; echo "${points[*]}")
}

# Stops every Cassandra node of this cluster dir, in parallel (start.sh's
# stop.sh: SIGTERM, SIGKILL after 20 s; it signals only that node's process).
stop_cassandra() {
  local name pid pids=() node_dir
  for name in $(cassandra_nodes); do
    [ -n "$(cassandra_pid "$name")" ] || continue
    if [ -x "$cassandra_home/stop.sh" ]; then
      "$cassandra_home/stop.sh" "$dir/$name" >>"$dir/$name.log" 2>&1 &
      pids+=($!)
    fi
  done
  [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}" || true
  # Without stop.sh, if it failed, or a node whose start failed (start.sh
  # may have lost its pid): kill -9 what runs from the node dirs.
  for node_dir in "$dir"/cassandra[0-9]; do
    [ -d "$node_dir" ] || continue
    name="${node_dir##*/}"
    pid="$(cassandra_pid "$name")"
    [ -n "$pid" ] || pid="$(node_process "$(cd "$node_dir" && pwd -P)")"
    if [ -n "$pid" ]; then
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    fi
    rm -f "$dir/$name.pid"
  done
  return 0
}

up() {
  if [ -f "$dir/lb.url" ]; then echo "cluster: already up at $(cat "$dir/lb.url") (run down first)" >&2; exit 1; fi
  command -v redis-server >/dev/null && command -v haproxy >/dev/null \
    || { echo "cluster: needs redis-server and haproxy (apt-get install redis-server haproxy)" >&2; exit 2; }
  local cargo_flags=(); [ "$profile" = release ] && cargo_flags=(--release)
  (cd "$root" && cargo build --quiet "${cargo_flags[@]}" -p gateway -p msg-service)
  mkdir -p "$dir"
  : >"$dir/ports.used"
  # A part that fails to start leaves nothing running behind it.
  trap 'echo "cluster: up failed; stopping what started" >&2; down' ERR
  local redis_port msg_port msg_lb_port gw1_port gw2_port lb_port secret
  redis_port=$(free_port); msg_port=$(free_port); gw1_port=$(free_port); gw2_port=$(free_port)
  msg_lb_port=$(free_port)
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
  # msg-service listens once its store is open (on Cassandra: the keyspace
  # and tables created, which takes longer than 30 s on a busy machine).
  local msg_tries=150
  local store="${CLUSTER_STORE:-cassandra}" replicas
  case "$store" in
    embedded) replicas="${CLUSTER_MSG_REPLICAS:-1}"
      [ "$replicas" = 1 ] || { echo "cluster: the embedded store serves one msg-service replica (CLUSTER_MSG_REPLICAS=1)" >&2; false; } ;;
    cassandra)
      local points
      points="$(start_cassandra)"
      msg_flags=(--store scylla --scylla-nodes "$points" --scylla-keyspace chat
        --scylla-replication "SimpleStrategy:${CLUSTER_CASSANDRA_NODES:-1}" --scylla-consistency LOCAL_QUORUM
        "${msg_flags[@]}")
      msg_tries=900 replicas="${CLUSTER_MSG_REPLICAS:-3}" ;;
    *) echo "cluster: CLUSTER_STORE must be embedded or cassandra (got '$store')" >&2; false ;;
  esac
  [[ "$replicas" =~ ^[1-9]$ ]] || { echo "cluster: CLUSTER_MSG_REPLICAS must be 1-9 (got '$replicas')" >&2; false; }
  # One after another: the first creates the keyspace and tables (two at
  # once would race on the schema); each is ready once it serves its shards.
  local i name port metrics servers=()
  : >"$dir/replicas"; : >"$dir/replica-metrics"
  for i in $(seq 1 "$replicas"); do
    name="$(replica_name "$i")" port=$(free_port) metrics=$(free_port)
    [ "$i" = 1 ] && port=$msg_port
    start "$name" "(exec 3<>/dev/tcp/127.0.0.1/$port) && curl -fsS http://127.0.0.1:$metrics/readyz" \
      "$bin/msg-service" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics" \
      --instance-name "$name" --data-dir "$dir/msg-data" --redis "$redis_url" "${msg_flags[@]}"
    wait_for "$name" "$(cat "$dir/$name.pid")" "$(cat "$dir/$name.probe")" "$msg_tries"
    echo "$name" >>"$dir/replicas"
    servers+=("    server $name 127.0.0.1:$port check port $metrics")
    printf '%s=http://127.0.0.1:%s\n' "$name" "$metrics" >>"$dir/replica-metrics"
  done
  # Gateways reach one replica directly, or several through msg-lb.
  local msg_url="http://127.0.0.1:$msg_port"
  if [ "$replicas" -gt 1 ]; then
    { sed -e "s/@MSG_LB_PORT@/$msg_lb_port/" "$root/deploy/local/haproxy-msg.cfg.tmpl"
      printf '%s\n' "${servers[@]}"; } >"$dir/haproxy-msg.cfg"
    haproxy -c -q -f "$dir/haproxy-msg.cfg"
    start msg-lb "(exec 3<>/dev/tcp/127.0.0.1/$msg_lb_port)" haproxy -db -f "$dir/haproxy-msg.cfg"
    wait_for msg-lb "$(cat "$dir/msg-lb.pid")" "$(cat "$dir/msg-lb.probe")"
    msg_url="http://127.0.0.1:$msg_lb_port"
  fi

  local n port attempt
  for n in 1 2; do
    port=$gw1_port; [ "$n" = 2 ] && port=$gw2_port
    # A free port can be taken by another process between free_port and the
    # bind (cluster tests run in parallel): then try another one.
    for attempt in 1 2 3; do
      CHAT_JWT_SECRET="$secret" start "gateway$n" "curl -fsS http://127.0.0.1:$port/readyz" \
        "$bin/gateway" --listen "127.0.0.1:$port" \
        --data-dir "$dir/gateway$n" --msg-service "$msg_url" --redis "$redis_url" \
        --gateway-id "gw$n" --dev-auth "${CLUSTER_DEV_AUTH:-true}"
      if wait_for "gateway$n" "$(cat "$dir/gateway$n.pid")" "curl -fsS http://127.0.0.1:$port/readyz"; then
        break
      fi
      port_was_taken "gateway$n" "already in use" "$port" "$attempt" || false
      port=$(free_port)
    done
    if [ "$n" = 1 ]; then gw1_port=$port; else gw2_port=$port; fi
  done

  # A port can also be taken as the source port of an outgoing connection
  # between free_port and the bind: then another one (unless CLUSTER_PORT
  # fixed it).
  for attempt in 1 2 3; do
    sed -e "s/@LB_PORT@/$lb_port/" -e "s/@GW1_PORT@/$gw1_port/" -e "s/@GW2_PORT@/$gw2_port/" \
      "$root/deploy/local/haproxy.cfg.tmpl" >"$dir/haproxy.cfg"
    haproxy -c -q -f "$dir/haproxy.cfg"
    start haproxy "curl -fsS http://127.0.0.1:$lb_port/readyz" haproxy -db -f "$dir/haproxy.cfg"
    if wait_for haproxy "$(cat "$dir/haproxy.pid")" "curl -fsS http://127.0.0.1:$lb_port/readyz"; then
      break
    fi
    [ -z "${CLUSTER_PORT:-}" ] && port_was_taken haproxy "cannot bind socket" "$lb_port" "$attempt" || false
    lb_port=$(free_port)
  done

  printf 'gw1=http://127.0.0.1:%s\ngw2=http://127.0.0.1:%s\nmsg=%s\nredis=%s\n' \
    "$gw1_port" "$gw2_port" "$msg_url" "$redis_url" >"$dir/endpoints"
  echo "http://127.0.0.1:$lb_port" >"$dir/lb.url"
  trap - ERR
  cat "$dir/lb.url"
}

down() {
  local name pid
  # The load balancer first, the store's owner last: nothing is left half-served.
  for name in haproxy gateway1 gateway2 msg-lb $(replica_parts) cassandra redis; do
    if [ "$name" = cassandra ]; then stop_cassandra; continue; fi
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
  for name in redis $(replica_parts) msg-lb gateway1 gateway2 haproxy; do
    [ "$name" = msg-lb ] && [ ! -f "$dir/msg-lb.cmd" ] && continue
    if [ -f "$dir/$name.pid" ] && alive "$(cat "$dir/$name.pid")"; then
      echo "$name: running (pid $(cat "$dir/$name.pid"))"
    else
      echo "$name: stopped"
    fi
  done
  for name in $(cassandra_nodes); do
    if [ -n "$(cassandra_pid "$name")" ]; then
      echo "$name: running (pid $(cassandra_pid "$name"), CQL $(node_env "$name" ADDRESS):$(node_env "$name" PORT))"
    else
      echo "$name: stopped"
    fi
  done
  [ -f "$dir/lb.url" ] && echo "load balancer: $(cat "$dir/lb.url")"
  return 0
}

known_part() {
  case "$1" in
    redis|msg-service|msg-service[0-9]|msg-lb|gateway1|gateway2|haproxy) [ -f "$dir/$1.cmd" ] ;;
    cassandra[0-9]) [ -f "$dir/$1/node.env" ] ;;
    *) false ;;
  esac || { echo "cluster: no part named '$1' (redis, msg-service, msg-serviceN, msg-lb, gateway1, gateway2, haproxy, cassandraN)" >&2; exit 2; }
}

kill9() {
  known_part "$1"
  local pid
  case "$1" in
    cassandra*) pid="$(cassandra_pid "$1")"; [ -n "$pid" ] || return 0 ;;
    *) pid="$(cat "$dir/$1.pid")" ;;
  esac
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do alive "$pid" || return 0; sleep 0.05; done
}

# Stops part $1 gracefully: SIGTERM, then waits (kill -9 after 10 s).
stop_part() {
  known_part "$1"
  local pid
  case "$1" in cassandra*) echo "cluster: stop a Cassandra node with kill9" >&2; exit 2 ;; esac
  pid="$(cat "$dir/$1.pid")"
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do alive "$pid" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

# The gateways read the secret from CHAT_JWT_SECRET or the cluster's secret file.
restart() {
  known_part "$1"
  case "$1" in
    cassandra*)
      if [ -n "$(cassandra_pid "$1")" ]; then echo "cluster: $1 is running" >&2; exit 1; fi
      start_cassandra_node "$1"
      return ;;
  esac
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
  stop) stop_part "${2:?stop needs a part name}" ;;
  restart) restart "${2:?restart needs a part name}" ;;
  *) echo "usage: $0 up|down|status|kill9 NAME|stop NAME|restart NAME" >&2; exit 2 ;;
esac
