#!/usr/bin/env bash
# The benchmark suite: builds the release binaries, then with the load tester
# (`loadtest`) measures, in one run on this machine:
#   - pairs against the baseline relay (`relay`: WebSocket forwarding, no storage),
#   - pairs against the single-machine server (and at its knee once more
#     with a typing indicator before every message), and the same with clients
#     of protocol version 1 (`--sync-only`: they sync on every notify,
#     ignoring the entries it carries): the before/after of that lever,
#   - the same against the distributed mode on one machine (deploy/local/cluster.sh:
#     by default 3 msg-service replicas on a Cassandra node),
#     each as a step search for the knee: the offered rate goes up step by step;
#     the knee is the highest step that delivered at least 95% of what it
#     offered AND kept the delivery p99 within BENCH_P99_BOUND_MS (50 ms; the
#     same bound for the relay and the server); the unbounded knee (95%
#     delivered, whatever the latency: the figure before 2026-12) is reported
#     too. The knee step is run BENCH_REPS (3) more times (the spread is
#     reported) and p99 is measured at 50% of the knee's rate,
#   - CPU per delivered message at the knee: the server's processes' CPU
#     time over the run / messages delivered; the load generator's own too
#     (on 2 cores it competes with the server),
#   - catch-up entries/s (single-machine),
#   - server memory per idle connection at 15,000 connections (several
#     loadtest processes, several loopback source addresses),
# prints one table with ratios, and ends with the machine-readable line
#   RESULT pairs_ratio=<single/relay at the bounded knee> unbounded_ratio=<same, unbounded>
#          p99_ms=<single p99 at 50%> cpu_us=<single server CPU per msg> kib_per_conn=<idle>
#
# Knobs (environment): BENCH_USERS (200), BENCH_DURATION (10 s),
# BENCH_RELAY_STEPS ("50 100 150 200 250 300 400 500 600 800" msg/s per user),
# BENCH_SERVER_STEPS ("5 10 15 20 30 40 50 60 80 100 120" msg/s per user),
# BENCH_CLUSTER_STEPS ("1 2 3 5 10 15 20 30 40 60"), BENCH_P99_BOUND_MS (50), BENCH_REPS (3),
# BENCH_CLUSTER_STORE (cassandra: 3 replicas; embedded: 1), BENCH_IDLE (15000),
# BENCH_IDLE_PROCS (3), BENCH_CATCH_UP (50000: 100 sync pages, half the frame
# burst of a connection, so no page waits for the budget; 10,000 take ~35 ms, too short to compare runs),
# BENCH_FLAME (1: a flame graph of
# the single-machine server during one more run at its knee, bench/flame.sh ->
# bench/results/single-knee-flame.svg; 0: none), BENCH_SKIP (comma list of
# relay,single,typing,single-v1,cluster,idle,catch-up).
# JSON reports and plots land in bench/results/ (NAME-rRATE.json per step,
# NAME-rRATE.cpu per step: server and load generator CPU seconds; NAME-knee.json
# is the bounded knee, NAME-max.json the unbounded one, NAME-repN.json the
# repetitions). MIMALLOC_PURGE_DELAY (-1, as in the container images: the
# server's allocator keeps the memory it frees; README, "Configuration").
set -euo pipefail
export MIMALLOC_PURGE_DELAY="${MIMALLOC_PURGE_DELAY--1}"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${CARGO_TARGET_DIR:-$root/target}/release"
out="$root/bench/results"
mkdir -p "$out"
# Figures of an earlier run must not pass for this one's (a skipped step shows "-").
# The flame graph is kept in git (README dates it): a run replaces it only
# when it makes a new one.
find "$out" -maxdepth 1 -type f ! -name single-knee-flame.svg \
  \( -name '*.json' -o -name '*.svg' -o -name '*.cpu' -o -name '*.folded' \) -delete

users="${BENCH_USERS:-200}"
duration="${BENCH_DURATION:-10}"
relay_steps="${BENCH_RELAY_STEPS:-50 100 150 200 250 300 400 500 600 800}"
server_steps="${BENCH_SERVER_STEPS:-5 10 15 20 30 40 50 60 80 100 120}"
cluster_steps="${BENCH_CLUSTER_STEPS:-1 2 3 5 10 15 20 30 40 60}"
bound_ms="${BENCH_P99_BOUND_MS:-50}"
reps="${BENCH_REPS:-3}"
cluster_store="${BENCH_CLUSTER_STORE:-cassandra}"
flame="${BENCH_FLAME:-1}"
idle_conns="${BENCH_IDLE:-15000}"
idle_procs="${BENCH_IDLE_PROCS:-3}"
catch_up="${BENCH_CATCH_UP:-50000}"
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

# The processes whose CPU time counts as the server's (set per section).
server_pids=()
# cpu_s: the server processes' CPU time (user + system) so far, in seconds.
cpu_s() {
  local ticks=0 pid
  for pid in "${server_pids[@]}"; do
    # Fields 14 and 15 (utime, stime), counted after the ")" ending the name.
    ticks=$((ticks + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  python3 -c "print($ticks / $(getconf CLK_TCK))"
}

# Extra loadtest flags of the runs (--sync-only for version-1 clients).
pairs_flags=()
# pairs NAME URL RATE: runs pairs, leaves bench/results/NAME.json and
# NAME.cpu ("SERVER_CPU_S LOADGEN_CPU_S").
pairs() {
  say "pairs on $1: $users users x $3 msg/s"
  local before after
  before="$(cpu_s)"
  python3 "$root/bench/cpu_of.py" "$work/loadgen.cpu" \
    "$bin/loadtest" pairs --url "$2" --users "$users" --rate "$3" --duration "$duration" \
    --drain-timeout 120 --json "$out/$1.json" --plot "$out/$1.svg" "${pairs_flags[@]}" | tail -n 9 >&2
  after="$(cpu_s)"
  echo "$(python3 -c "print(round($after - $before, 3))") $(cat "$work/loadgen.cpu")" >"$out/$1.cpu"
}
delivered() { field "$out/$1.json" 'round(delivered_per_s, 1)'; }
p99() { field "$out/$1.json" 'delivery_latency["p99_ms"]'; }
# cpu_us NAME WHICH: CPU microseconds per delivered message of the server
# (WHICH=1) or the load generator (WHICH=2) in run NAME.
cpu_us() {
  local cpu; cpu="$(cut -d' ' -f"$2" "$out/$1.cpu")"
  field "$out/$1.json" "round($cpu * 1e6 / max(delivered, 1))"
}
# keeps_up NAME: whether the run delivered at least 95% of its offered rate.
keeps_up() { [[ "$(field "$out/$1.json" 'delivered_per_s >= 0.95 * extra["offered_per_s"]')" == True ]]; }
# p99_within_bound NAME: whether the run's delivery p99 is within the bound.
p99_within_bound() { [[ "$(field "$out/$1.json" "delivery_latency['p99_ms'] <= $bound_ms")" == True ]]; }
# copy_run FROM TO: run FROM's report and CPU figures, as TO's.
copy_run() { cp "$out/$1.json" "$out/$2.json"; cp "$out/$1.cpu" "$out/$2.cpu"; }
# knee NAME URL "RATES": pairs at each rate per user, lowest first, until a
# step falls behind. NAME-knee.json is the highest step within the p99
# bound (absent when none was), NAME-max.json the highest that kept up
# whatever its latency (the first step when none did, so that the table
# still shows what was delivered); the knee step then runs $reps more times
# (NAME-repN.json).
knee() {
  local bounded="" unbounded="" first=""
  for rate in $3; do
    pairs "$1-r$rate" "$2" "$rate"
    [[ -z "$first" ]] && first="$rate"
    keeps_up "$1-r$rate" || break
    unbounded="$rate"
    p99_within_bound "$1-r$rate" && bounded="$rate"
  done
  copy_run "$1-r${unbounded:-$first}" "$1-max"
  if [[ -z "$bounded" ]]; then
    say "$1: no step kept p99 <= $bound_ms ms; unbounded knee at ${unbounded:-none} msg/s per user"
    return 0
  fi
  echo "$bounded" >"$work/$1.knee-rate"
  copy_run "$1-r$bounded" "$1-knee"
  for i in $(seq 1 "$reps"); do pairs "$1-rep$i" "$2" "$bounded"; done
  say "$1: knee (p99 <= $bound_ms ms) at $bounded msg/s per user ($(delivered "$1-knee") delivered/s); unbounded at ${unbounded:-none}"
}
# spread NAME: "min-max delivered/s, p99 min-max ms" over the knee and its repetitions.
spread() {
  [[ -f "$out/$1-knee.json" ]] || { echo "-"; return; }
  python3 - "$out" "$1" "$reps" <<'PY'
import json, sys
out, name, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = [json.load(open(f"{out}/{name}-knee.json"))]
runs += [json.load(open(f"{out}/{name}-rep{i}.json")) for i in range(1, reps + 1)]
rates = [r["delivered_per_s"] for r in runs]
p99s = [r["delivery_latency"]["p99_ms"] for r in runs]
print(f"{min(rates):.0f}-{max(rates):.0f}/s, p99 {min(p99s):.0f}-{max(p99s):.0f} ms ({len(runs)} runs)")
PY
}
# half_rate NAME: the rate per user at 50% of NAME's bounded knee (else of
# its unbounded one).
half_rate() {
  local knee="$1-knee"; [[ -f "$out/$knee.json" ]] || knee="$1-max"
  python3 -c "print(round($(delivered "$knee") / 2 / $users, 3))"
}

say "cargo build --release (gateway, msg-service, loadtest)"
# Built as cluster.sh builds them (the same features), so that its build is a no-op.
cargo build --release --locked -p gateway -p msg-service >&2
cargo build --release --locked -p loadtest >&2

if ! skipped relay; then
  port="$(free_port)"
  RUST_LOG=warn "$bin/relay" --listen "127.0.0.1:$port" >"$work/relay.log" 2>&1 &
  relay_pid=$!; pids+=("$relay_pid"); server_pids=("$relay_pid")
  sleep 0.5
  knee relay "ws://127.0.0.1:$port/v1/ws" "$relay_steps"
  stop "$relay_pid"
fi

if ! skipped single; then
  start_gateway
  server_pids=("$gw_pid")
  knee single "ws://127.0.0.1:$gw_port/v1/ws" "$server_steps"
  pairs single-half "ws://127.0.0.1:$gw_port/v1/ws" "$(half_rate single)"
  if [[ "$flame" == 1 && -f "$work/single.knee-rate" ]]; then
    say "flame graph of the single-machine server at its knee"
    bench/flame.sh "$gw_pid" "$duration" "$out/single-knee-flame.svg" &
    flame_pid=$!
    pairs single-flame "ws://127.0.0.1:$gw_port/v1/ws" "$(cat "$work/single.knee-rate")"
    wait "$flame_pid"
  fi
  if ! skipped typing && [[ -f "$work/single.knee-rate" ]]; then
    # The cost of typing indicators: the knee's rate again, every client
    # sending one before each message (protocol 1.1; the server drops those
    # within 3 s of the last, so about one in 3 s per user goes out).
    pairs_flags=(--typing)
    pairs single-typing "ws://127.0.0.1:$gw_port/v1/ws" "$(cat "$work/single.knee-rate")"
    pairs_flags=()
  fi
  if ! skipped single-v1; then
    pairs_flags=(--sync-only)
    knee single-v1 "ws://127.0.0.1:$gw_port/v1/ws" "$server_steps"
    pairs single-v1-half "ws://127.0.0.1:$gw_port/v1/ws" "$(half_rate single-v1)"
    pairs_flags=()
  fi
  if ! skipped catch-up; then
    say "catch-up: $catch_up entries"
    "$bin/loadtest" catch-up --url "ws://127.0.0.1:$gw_port/v1/ws" --entries "$catch_up" --senders 20 \
      --json "$out/catch-up.json" | tail -n 4 >&2
  fi
  stop "$gw_pid"
fi

if ! skipped cluster; then
  say "cluster ($cluster_store store): redis, msg-service, two gateways, HAProxy"
  CLUSTER_DIR="$work/cluster" CLUSTER_STORE="$cluster_store" CLUSTER_PROFILE=release \
    CLUSTER_MSG_FLAGS="--send-rate 100000 --send-burst 100000" \
    RUST_LOG=warn deploy/local/cluster.sh up >/dev/null
  lb="$(cat "$work/cluster/lb.url")"
  # Every process of the cluster is the server's, Cassandra's JVMs included.
  server_pids=()
  for pid_file in "$work"/cluster/*.pid; do server_pids+=("$(cat "$pid_file")"); done
  knee cluster "ws://${lb#http://}/v1/ws" "$cluster_steps"
  pairs cluster-half "ws://${lb#http://}/v1/ws" "$(half_rate cluster)"
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
cpu() { [[ -f "$out/$1.cpu" ]] && cpu_us "$1" "$2" || echo "-"; }
catch_up_rate="$( [[ -f "$out/catch-up.json" ]] && field "$out/catch-up.json" 'round(extra["entries_per_s"])' || echo -)"
kib="$( [[ -f "$out/idle.json" ]] && field "$out/idle.json" 'kib_per_conn' || echo -)"
relay_knee="$(value relay-knee delivered)"
relay_max="$(value relay-max delivered)"

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $users users in pairs, $duration s per run; knee: >= 95% delivered and p99 <= $bound_ms ms"
printf '%-24s %9s %7s %7s %30s %10s %7s %7s %9s %9s\n' "" "knee/s" "p99 ms" "x relay" "knee spread" "unbnd/s" "x relay" "p99@50%" "srv us/m" "gen us/m"
row() {
  local name="$1" label="$2" half="$3"
  local knee; knee="$(value "$name-knee" delivered)"
  local max; max="$(value "$name-max" delivered)"
  local half_p99="-"; [[ -n "$half" ]] && half_p99="$(value "$half" p99)"
  printf '%-24s %9s %7s %7s %30s %10s %7s %7s %9s %9s\n' "$label" "$knee" "$(value "$name-knee" p99)" \
    "$(ratio "$knee" "$relay_knee")" "$(spread "$name")" "$max" "$(ratio "$max" "$relay_max")" "$half_p99" \
    "$(cpu "$name-knee" 1)" "$(cpu "$name-knee" 2)"
}
row relay "relay (no storage)" ""
row single "single machine" single-half
row single-v1 "single, v1 clients" single-v1-half
row cluster "distributed ($cluster_store)" cluster-half
echo "(knee/s: delivered msgs/s at the bounded knee; unbnd/s: at the unbounded one; p99@50%: delivery p99 at half the knee's rate; srv/gen us/m: server / load generator CPU microseconds per delivered message at the knee)"
if [[ -f "$out/single-typing.json" ]]; then
  echo "typing before every message at the single knee: $(value single-typing delivered)/s delivered, p99 $(value single-typing p99) ms, server $(cpu single-typing 1) us/msg (the knee's runs without: $(spread single), $(cpu single-knee 1) us/msg)"
fi
echo "catch-up (single): $catch_up_rate entries/s"
echo "memory per idle connection (single, $idle_conns): $kib KiB"
echo "JSON reports and plots: bench/results/"
echo "RESULT pairs_ratio=$(ratio "$(value single-knee delivered)" "$relay_knee") unbounded_ratio=$(ratio "$(value single-max delivered)" "$relay_max") p99_ms=$(value single-half p99) cpu_us=$(cpu single-knee 1) kib_per_conn=$kib"
