#!/usr/bin/env bash
# The benchmark suite: builds the release binaries, then with the load tester
# (`loadtest`) measures, in one run on this machine:
#   - pairs against the baseline relay (`relay`: WebSocket forwarding, no storage),
#   - pairs against the single-machine server,
#   - the same against the distributed mode on one machine (deploy/local/cluster.sh),
#     each as a step search for the knee: the offered rate goes up step by step
#     and "max" is the delivered rate of the highest step that delivered at
#     least 95% of what it offered within the run; p99 is then measured at 50%
#     of that rate,
#   - catch-up entries/s (single-machine),
#   - server memory per idle connection at 15,000 connections (several
#     loadtest processes, several loopback source addresses),
# prints one table with ratios, and ends with the machine-readable line
#   RESULT pairs_ratio=<single/relay delivered msgs/s> p99_ms=<single p99 at 50%> kib_per_conn=<idle>
#
# Knobs (environment): BENCH_USERS (200), BENCH_DURATION (10 s),
# BENCH_RELAY_STEPS ("100 150 200 250 300 400" msg/s per user), BENCH_SERVER_STEPS
# ("10 20 30 40 50 60" msg/s per user), BENCH_IDLE (15000), BENCH_IDLE_PROCS (3),
# BENCH_CATCH_UP (10000), BENCH_SKIP (comma list of relay,single,cluster,idle,catch-up).
# JSON reports and plots land in bench/results/ (NAME-rRATE.json per step,
# NAME-max.json is the knee).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
out="$root/bench/results"
mkdir -p "$out"
# Figures of an earlier run must not pass for this one's (a skipped step shows "-").
rm -f "$out"/*.json "$out"/*.svg

users="${BENCH_USERS:-200}"
duration="${BENCH_DURATION:-10}"
relay_steps="${BENCH_RELAY_STEPS:-100 150 200 250 300 400}"
server_steps="${BENCH_SERVER_STEPS:-10 20 30 40 50 60}"
idle_conns="${BENCH_IDLE:-15000}"
idle_procs="${BENCH_IDLE_PROCS:-3}"
catch_up="${BENCH_CATCH_UP:-10000}"
skip=",${BENCH_SKIP:-},"

export CHAT_JWT_SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
work="$(mktemp -d -t chat-bench.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  CLUSTER_DIR="$work/cluster" deploy/local/cluster.sh down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

say() { printf '== %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, r))" "$@"; }
skipped() { [[ "$skip" == *",$1,"* ]]; }
wait_ready() {
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server on port $1 not ready" >&2; return 1
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# Starts a fresh single-machine gateway; sets $gw_pid, $gw_port.
start_gateway() {
  gw_port="$(free_port)"
  RUST_LOG=warn "$bin/gateway" --listen "127.0.0.1:$gw_port" --data-dir "$work/data-$gw_port" \
    --send-rate 100000 --send-burst 100000 >"$work/gateway-$gw_port.log" 2>&1 &
  gw_pid=$!; pids+=("$gw_pid")
  wait_ready "$gw_port"
}
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# pairs NAME URL RATE: runs pairs, leaves bench/results/NAME.json
pairs() {
  say "pairs on $1: $users users x $3 msg/s"
  "$bin/loadtest" pairs --url "$2" --users "$users" --rate "$3" --duration "$duration" \
    --drain-timeout 120 --json "$out/$1.json" --plot "$out/$1.svg" | tail -n 8 >&2
}
delivered() { field "$out/$1.json" 'round(delivered_per_s, 1)'; }
# keeps_up NAME: whether the run delivered at least 95% of its offered rate.
keeps_up() { [[ "$(field "$out/$1.json" 'delivered_per_s >= 0.95 * extra["offered_per_s"]')" == True ]]; }
# knee NAME URL "RATES": pairs at each rate per user, lowest first, until a
# step falls behind; NAME-max.json is the highest step that kept up (the
# first step when none did, so the table still shows what was delivered).
knee() {
  local best=""
  for rate in $3; do
    pairs "$1-r$rate" "$2" "$rate"
    [[ -z "$best" ]] && best="$rate"
    keeps_up "$1-r$rate" || break
    best="$rate"
  done
  cp "$out/$1-r$best.json" "$out/$1-max.json"
  say "$1: knee at $best msg/s per user ($(delivered "$1-max") delivered/s)"
}
p99() { field "$out/$1.json" 'delivery_latency["p99_ms"]'; }
half_rate() { python3 -c "print(round($1 / 2 / $users, 3))"; }

say "cargo build --release (gateway, msg-service, loadtest)"
cargo build --release --locked -p gateway -p msg-service -p loadtest >&2

if ! skipped relay; then
  port="$(free_port)"
  RUST_LOG=warn "$bin/relay" --listen "127.0.0.1:$port" >"$work/relay.log" 2>&1 &
  relay_pid=$!; pids+=("$relay_pid")
  sleep 0.5
  knee relay "ws://127.0.0.1:$port/v1/ws" "$relay_steps"
  stop "$relay_pid"
fi

if ! skipped single; then
  start_gateway
  knee single "ws://127.0.0.1:$gw_port/v1/ws" "$server_steps"
  pairs single-half "ws://127.0.0.1:$gw_port/v1/ws" "$(half_rate "$(delivered single-max)")"
  if ! skipped catch-up; then
    say "catch-up: $catch_up entries"
    "$bin/loadtest" catch-up --url "ws://127.0.0.1:$gw_port/v1/ws" --entries "$catch_up" --senders 20 \
      --json "$out/catch-up.json" | tail -n 4 >&2
  fi
  stop "$gw_pid"
fi

if ! skipped cluster; then
  say "cluster: redis, msg-service, two gateways, HAProxy"
  CLUSTER_DIR="$work/cluster" CLUSTER_STORE=embedded CLUSTER_PROFILE=release CLUSTER_MSG_FLAGS="--send-rate 100000 --send-burst 100000" \
    RUST_LOG=warn deploy/local/cluster.sh up >/dev/null
  lb="$(cat "$work/cluster/lb.url")"
  knee cluster "ws://${lb#http://}/v1/ws" "$server_steps"
  pairs cluster-half "ws://${lb#http://}/v1/ws" "$(half_rate "$(delivered cluster-max)")"
  CLUSTER_DIR="$work/cluster" deploy/local/cluster.sh down >/dev/null
fi

if ! skipped idle; then
  start_gateway
  say "idle: $idle_conns connections from $idle_procs processes"
  before="$(rss_kib "$gw_pid")"
  per_proc=$((idle_conns / idle_procs))
  idle_pids=()
  for i in $(seq 1 "$idle_procs"); do
    "$bin/loadtest" idle --url "ws://127.0.0.1:$gw_port/v1/ws" --connections "$per_proc" --duration 3600 \
      --ramp 5 --prefix "idle$i" --sources "127.0.0.$((2 * i))-127.0.0.$((2 * i + 1))" >"$work/idle-$i.out" 2>&1 &
    idle_pids+=("$!"); pids+=("$!")
  done
  for i in $(seq 1 "$idle_procs"); do
    until grep -q '^READY' "$work/idle-$i.out"; do
      kill -0 "${idle_pids[$((i - 1))]}" 2>/dev/null || { cat "$work/idle-$i.out" >&2; exit 1; }
      sleep 0.5
    done
  done
  sleep 2  # let the server settle its per-connection buffers before reading RSS
  after="$(rss_kib "$gw_pid")"
  open=$((per_proc * idle_procs))
  kib_per_conn="$(python3 -c "print(round(($after - $before) / $open, 1))")"
  printf '{"connections": %d, "rss_before_kib": %d, "rss_after_kib": %d, "kib_per_conn": %s}\n' \
    "$open" "$before" "$after" "$kib_per_conn" >"$out/idle.json"
  for pid in "${idle_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  stop "$gw_pid"
fi

# --- the table
value() { [[ -f "$out/$1.json" ]] && "${@:2}" "$1" || echo "-"; }
ratio() { python3 -c "a, b = '$1', '$2'; print('-' if '-' in (a, b) else round(float(a) / float(b), 3))"; }
relay_max="$(value relay-max delivered)"
single_max="$(value single-max delivered)"
cluster_max="$(value cluster-max delivered)"
single_p99="$(value single-half p99)"
cluster_p99="$(value cluster-half p99)"
relay_p99="$(value relay-max p99)"
catch_up_rate="$( [[ -f "$out/catch-up.json" ]] && field "$out/catch-up.json" 'round(extra["entries_per_s"])' || echo -)"
kib="$( [[ -f "$out/idle.json" ]] && field "$out/idle.json" 'kib_per_conn' || echo -)"

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $users users in pairs, $duration s per run"
printf '%-34s %14s %12s %10s\n' "" "delivered/s" "p99 ms" "vs relay"
printf '%-34s %14s %12s %10s\n' "relay baseline (no storage)" "$relay_max" "$relay_p99" "1"
printf '%-34s %14s %12s %10s\n' "single-machine, max" "$single_max" "$(value single-max p99)" "$(ratio "$single_max" "$relay_max")"
printf '%-34s %14s %12s %10s\n' "single-machine, 50% of max" "$(value single-half delivered)" "$single_p99" ""
printf '%-34s %14s %12s %10s\n' "distributed on one machine, max" "$cluster_max" "$(value cluster-max p99)" "$(ratio "$cluster_max" "$relay_max")"
printf '%-34s %14s %12s %10s\n' "distributed, 50% of max" "$(value cluster-half delivered)" "$cluster_p99" ""
echo "catch-up (single): $catch_up_rate entries/s"
echo "memory per idle connection (single, $idle_conns): $kib KiB"
echo "JSON reports and plots: bench/results/"
echo "RESULT pairs_ratio=$(ratio "$single_max" "$relay_max") p99_ms=$single_p99 kib_per_conn=$kib"
