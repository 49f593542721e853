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

# Whether process $1 holds a listening TCP socket on every port $2...: a
# probe on a port can be answered by another process that holds it (another
# cluster's part, when this one could not bind it).
listens_on() {
  python3 - "$@" <<'PY'
import os, sys
pid, ports = sys.argv[1], {int(port) for port in sys.argv[2:]}
listening = {}  # socket inode -> local port, of the sockets in state LISTEN
tables = [t for t in ("/proc/net/tcp", "/proc/net/tcp6") if os.path.exists(t)]
if not tables:
    sys.exit(0)  # no procfs: the probe decides, as `alive` lets kill -0
for table in tables:
    try:
        rows = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for row in rows:
        fields = row.split()
        if fields[3] == "0A":
            listening[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
held = set()
try:
    fds = os.listdir(f"/proc/{pid}/fd")
except OSError:
    sys.exit(1)
for fd in fds:
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        continue
    if target.startswith("socket:[") and target[8:-1] in listening:
        held.add(listening[target[8:-1]])
sys.exit(0 if ports <= held else 1)
PY
}

# Waits until part $1 is ready: its probe succeeds and its own process listens
# on its ports (at most $2 polls 0.2 s apart; default 150: 30 s); fails with
# its log if the process dies first.
wait_for() {
  local name="$1" tries="${2:-150}" pid probe ports
  pid="$(cat "$dir/$name.pid")" probe="$(cat "$dir/$name.probe")" ports="$(cat "$dir/$name.ports")"
  for _ in $(seq 1 "$tries"); do
    # shellcheck disable=SC2086 # the ports are words
    if eval "$probe" >/dev/null 2>&1 && listens_on "$pid" $ports; then return 0; fi
    if ! alive "$pid"; then
      echo "cluster: $name exited; its log:" >&2; tail -n 30 "$dir/$name.log" >&2; return 1
    fi
    sleep 0.2
  done
  echo "cluster: $name not ready after $((tries / 5)) s; its log:" >&2; tail -n 30 "$dir/$name.log" >&2
  return 1
}

# After part $1 failed to start on ports $3: whether to try other ports
# (its log matches grep pattern $2, and attempt $4 of 3 was not the last);
# then its log is cleared for the next attempt.
port_was_taken() {
  local name="$1" pattern="$2" ports="$3" attempt="$4"
  grep -qi "$pattern" "$dir/$name.log" && [ "$attempt" -lt 3 ] || return 1
  echo "cluster: $name: a port of $ports was taken; trying others" >&2
  : >"$dir/$name.log"
}

# start NAME PORTS PROBE CMD...: runs CMD in the background; remembers how (for
# restart) and the ports (space-separated) it listens on once ready.
start() {
  local name="$1" ports="$2" probe="$3"; shift 3
  printf '%s\0' "$@" >"$dir/$name.cmd"
  printf '%s' "$probe" >"$dir/$name.probe"
  printf '%s' "$ports" >"$dir/$name.ports"
  "$@" >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

# start_listening NAME TAKEN TRIES LAUNCHER PORT...: `LAUNCHER PORT...` starts
# part NAME (with `start`) on those ports; waits (TRIES polls) until it is
# ready. A free port can be taken before the part binds it (by a part of
# another cluster: cluster tests run in parallel; or as the source port of an
# outgoing connection): if the part exits with grep pattern TAKEN in its log,
# it starts again on new free ports, 3 attempts in all (TAKEN empty: the
# ports are fixed). Leaves the ports it listens on in the caller's `ports`.
# Every failure returns 1 (the ERR trap of `up` is not run inside functions).
start_listening() {
  local name="$1" taken="$2" tries="$3" launcher="$4" attempt i; shift 4
  ports=("$@")
  for attempt in 1 2 3; do
    "$launcher" "${ports[@]}" || return 1
    wait_for "$name" "$tries" && return 0
    [ -n "$taken" ] && port_was_taken "$name" "$taken" "${ports[*]}" "$attempt" || return 1
    # Gone by now (its bind failed), unless it hangs: then it goes.
    kill -KILL "$(cat "$dir/$name.pid")" 2>/dev/null || true
    for i in "${!ports[@]}"; do ports[i]=$(free_port) || return 1; done
  done
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

# The parts' launchers for start_listening (PORT...): each starts its part
# on those ports, with what `up` set (bash's locals are seen by the functions
# a function calls). They run where `set -e` does not apply: each step that
# can fail returns 1 itself.
launch_redis() {
  start redis "$1" "redis-cli -p $1 ping | grep -q PONG" \
    redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no
}

# A msg-service replica ($name) on gRPC port $1 and metrics port $2; ready once
# it serves its shards.
launch_replica() {
  start "$name" "$1 $2" "curl -fsS http://127.0.0.1:$2/readyz" \
    "$bin/msg-service" --listen "127.0.0.1:$1" --metrics-listen "127.0.0.1:$2" \
    --instance-name "$name" --data-dir "$dir/msg-data" --redis "$redis_url" "${msg_flags[@]}"
}

# HAProxy in front of the replicas (the `servers` lines) for the gateways' gRPC.
launch_msg_lb() {
  { sed -e "s/@MSG_LB_PORT@/$1/" "$root/deploy/local/haproxy-msg.cfg.tmpl"
    printf '%s\n' "${servers[@]}"; } >"$dir/haproxy-msg.cfg" || return 1
  haproxy -c -q -f "$dir/haproxy-msg.cfg" || return 1
  start msg-lb "$1" "(exec 3<>/dev/tcp/127.0.0.1/$1)" haproxy -db -f "$dir/haproxy-msg.cfg"
}

# Gateway $n.
launch_gateway() {
  CHAT_JWT_SECRET="$secret" start "gateway$n" "$1" "curl -fsS http://127.0.0.1:$1/readyz" \
    "$bin/gateway" --listen "127.0.0.1:$1" \
    --data-dir "$dir/gateway$n" --msg-service "$msg_url" --redis "$redis_url" \
    --gateway-id "gw$n" --dev-auth "${CLUSTER_DEV_AUTH:-true}"
}

# HAProxy in front of the gateways (their ports in `gw_ports`).
launch_haproxy() {
  sed -e "s/@LB_PORT@/$1/" -e "s/@GW1_PORT@/${gw_ports[0]}/" -e "s/@GW2_PORT@/${gw_ports[1]}/" \
    "$root/deploy/local/haproxy.cfg.tmpl" >"$dir/haproxy.cfg" || return 1
  haproxy -c -q -f "$dir/haproxy.cfg" || return 1
  start haproxy "$1" "curl -fsS http://127.0.0.1:$1/readyz" haproxy -db -f "$dir/haproxy.cfg"
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
  local secret ports=()
  if [ -n "${CHAT_JWT_SECRET:-}" ]; then secret="$CHAT_JWT_SECRET"
  else
    [ -f "$dir/jwt-secret" ] || (umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$dir/jwt-secret")
    secret="$(cat "$dir/jwt-secret")"
  fi

  start_listening redis "already in use" 150 launch_redis "$(free_port)"
  local redis_url="redis://127.0.0.1:${ports[0]}"

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
  local i name msg_port servers=()
  : >"$dir/replicas"; : >"$dir/replica-metrics"
  for i in $(seq 1 "$replicas"); do
    name="$(replica_name "$i")"
    start_listening "$name" "already in use" "$msg_tries" launch_replica "$(free_port)" "$(free_port)"
    [ "$i" = 1 ] && msg_port="${ports[0]}"
    echo "$name" >>"$dir/replicas"
    servers+=("    server $name 127.0.0.1:${ports[0]} check port ${ports[1]}")
    printf '%s=http://127.0.0.1:%s\n' "$name" "${ports[1]}" >>"$dir/replica-metrics"
  done
  # Gateways reach one replica directly, or several through msg-lb.
  local msg_url="http://127.0.0.1:$msg_port"
  if [ "$replicas" -gt 1 ]; then
    start_listening msg-lb "cannot bind socket" 150 launch_msg_lb "$(free_port)"
    msg_url="http://127.0.0.1:${ports[0]}"
  fi

  local n gw_ports=()
  for n in 1 2; do
    start_listening "gateway$n" "already in use" 150 launch_gateway "$(free_port)"
    gw_ports+=("${ports[0]}")
  done

  if [ -n "${CLUSTER_PORT:-}" ]; then
    start_listening haproxy "" 150 launch_haproxy "$CLUSTER_PORT"
  else
    start_listening haproxy "cannot bind socket" 150 launch_haproxy "$(free_port)"
  fi

  printf 'gw1=http://127.0.0.1:%s\ngw2=http://127.0.0.1:%s\nmsg=%s\nredis=%s\n' \
    "${gw_ports[0]}" "${gw_ports[1]}" "$msg_url" "$redis_url" >"$dir/endpoints"
  echo "http://127.0.0.1:${ports[0]}" >"$dir/lb.url"
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
  CHAT_JWT_SECRET="$secret" start "$1" "$(cat "$dir/$1.ports")" "$(cat "$dir/$1.probe")" "${args[@]}"
  wait_for "$1"
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
