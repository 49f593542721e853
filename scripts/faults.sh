#!/usr/bin/env bash
# Fault injection with real processes: the local cluster (HAProxy, two
# gateways, msg-service, Redis) under a bounded load from the load tester,
# one fault injected mid-load per scenario, then healed. Each scenario passes
# when the load tester's exactly-once check does: every acked message reached
# its peer exactly once and in order (sends answered `unavailable` are retried
# by the client with the same client_msg_id, so they are checked too once
# acked). Prints a table: sent, acked, delivered, lost, duplicated, time to
# recover.
#
#   scripts/faults.sh                  # every scenario, debug binaries
#   FAULTS_PROFILE=release scripts/faults.sh redis gateway
#
# Scenarios: redis (kill -9 redis-server, restart), gateway (kill -9 one
# gateway; clients reconnect through HAProxy), msg-service (kill -9, restart
# on the same data), gateway-stop, redis-stop and msg-service-stop (SIGSTOP
# for FAULTS_STOP_S (8) s, then SIGCONT: HAProxy must cut the paused
# gateway's sockets so its clients reconnect elsewhere; with Redis paused,
# notifies must still come, by the gateways' polling; with msg-service
# paused, sends are refused and retried), store-stall (the store's writes stall for 3 s through
# msg-service's fault hook; the history endpoint is timed meanwhile),
# half-fanout (every 5th inbox append fails for 3 s: fan-outs fail part-way;
# then `msg-service audit` over the whole run must find nothing missing),
# history-flood (300 concurrent history requests from 30 users while
# sending: the median send p99 of nine flooded rounds (FLOOD_ROUNDS) must
# stay within 2x of that of nine calm rounds; meant for FAULTS_PROFILE=release, as the test
# command runs it), cassandra-node (not in the default list: needs java 17
# and the Cassandra scripts of deploy/local/cluster.sh: msg-service on a
# 3-node Cassandra cluster, replication factor 3, LOCAL_QUORUM; kill -9 of
# cassandra2, not the seed, for FAULTS_CASSANDRA_DOWN (20) s, then started
# again, under FAULTS_CASSANDRA_RATE (1) msg/s per user after a 10 s warm-up;
# the gateways' acked sends per second are sampled from their /metrics: while
# the node is still down, sends must be acked again at half the rate before
# the kill at least; the row shows the rates, how long sends stalled, and the
# time until deliveries and the node were back), cassandra-stop (the same
# cluster and check, cassandra2 paused by SIGSTOP instead: its connections
# stay open and it answers nothing, so calls sent to it must be sent again
# elsewhere, not wait out the driver's timeout). The replica scenarios (not
# in the default list either: java 17 and the Cassandra scripts) run 3
# msg-service replicas on one Cassandra node, at FAULTS_REPLICA_RATE (2)
# msg/s per user: replica-kill (kill -9 of msg-service2: the time until the
# two others hold all 1,024 shards must stay within the lease + 2 s; then it
# is restarted and takes its share back), replica-stop (SIGSTOP of
# msg-service2 until the others hold its shards, then SIGCONT: it must find
# itself deposed and serve again as a new incarnation, in the same process),
# replica-roll (3 -> 1 -> 3 -> 2 replicas by graceful stops and starts under
# load, then a rolling restart of the two left). lb (kill -9 of the clients'
# HAProxy, restarted 2 s later: every socket drops, the clients reconnect and
# sync), msg-lb and msg-lb-stop (kill -9 of the HAProxy between the gateways
# and the replicas, restarted 2 s later; SIGSTOP of it for FAULTS_STOP_S s:
# the gateways' calls fail or time out, the clients retry) need several
# replicas for msg-lb, as the replica scenarios run them.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
profile="${FAULTS_PROFILE:-debug}"
bin="${CARGO_TARGET_DIR:-$root/target}/$profile"
cluster="$root/deploy/local/cluster.sh"
users="${FAULTS_USERS:-20}"
# The longest an acked message may wait until a live client that should get
# it has it (ack -> delivered), fault included; checked after every scenario.
max_wait_ms="${FAULTS_MAX_WAIT_MS:-5000}"
rate="${FAULTS_RATE:-5}"
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(redis gateway msg-service gateway-stop redis-stop msg-service-stop history-flood)

work="$(mktemp -d)"
export CLUSTER_DIR="$work/cluster" CLUSTER_PROFILE="$profile"
# One msg-service on its embedded store unless a scenario says otherwise.
export CLUSTER_STORE="${CLUSTER_STORE:-embedded}"
export CHAT_JWT_SECRET="faults-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
# msg-service's fault hook reads this file (empty: no fault).
fault_file="$work/store-faults"
: >"$fault_file"
export CLUSTER_MSG_FLAGS="--fault-file $fault_file ${FAULTS_MSG_FLAGS:-}"
# FAULTS_KEEP=1 keeps the work dir (reports, logs, samples) for a look.
cleanup() {
  "$cluster" down >/dev/null 2>&1 || true
  if [ -n "${FAULTS_KEEP:-}" ]; then echo "faults: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

cargo_flags=(); [ "$profile" = release ] && cargo_flags=(--release)
cargo build --locked "${cargo_flags[@]}" -p gateway -p msg-service -p loadtest >&2

say() { printf '== %s\n' "$*" >&2; }

# Injects the fault of scenario $1.
inject() {
  case "$1" in
    redis) "$cluster" kill9 redis; sleep 2; "$cluster" restart redis ;;
    gateway) "$cluster" kill9 gateway1; sleep 2; "$cluster" restart gateway1 ;;
    msg-service) "$cluster" kill9 msg-service; sleep 2; "$cluster" restart msg-service ;;
    gateway-stop) paused gateway1 "${FAULTS_STOP_S:-8}" ;;
    redis-stop) paused redis "${FAULTS_STOP_S:-8}" ;;
    msg-service-stop) paused msg-service "${FAULTS_STOP_S:-8}" ;;
    lb) "$cluster" kill9 haproxy; sleep 2; "$cluster" restart haproxy ;;
    msg-lb) "$cluster" kill9 msg-lb; sleep 2; "$cluster" restart msg-lb ;;
    msg-lb-stop) paused msg-lb "${FAULTS_STOP_S:-8}" ;;
    store-stall)
      echo stall_writes >"$fault_file"
      sleep 0.5  # the hook reads the file every 100 ms
      history_ms="$(timed_history "$lb")"
      sleep 2.5; : >"$fault_file" ;;
    half-fanout) echo fail_inbox_every=5 >"$fault_file"; sleep 3; : >"$fault_file" ;;
    replica-kill)
      "$cluster" kill9 msg-service2; mark killed
      takeover="$(shards_served_again msg-service msg-service3)" || failed=1
      "$cluster" restart msg-service2 ;;
    replica-stop)
      local pid; pid="$(cat "$CLUSTER_DIR/msg-service2.pid")"
      kill -STOP "$pid"; mark killed
      takeover="$(shards_served_again msg-service msg-service3)" || failed=1
      kill -CONT "$pid"
      woke="$(serving_again msg-service2 "$pid")" || failed=1 ;;
    replica-roll)
      for step in "stop msg-service2" "stop msg-service3" "restart msg-service2" "restart msg-service3" \
        "stop msg-service3" "stop msg-service" "restart msg-service" "stop msg-service2" "restart msg-service2"; do
        say "  $step"
        # shellcheck disable=SC2086  # two words: the action and the part
        "$cluster" $step
      done ;;
    cassandra-node)
      "$cluster" kill9 cassandra2; mark killed
      sleep "${FAULTS_CASSANDRA_DOWN:-20}"
      mark restarting; "$cluster" restart cassandra2; mark back ;;
    cassandra-stop) paused cassandra2 "${FAULTS_CASSANDRA_DOWN:-20}" ;;
    *) echo "faults: unknown scenario $1" >&2; exit 2 ;;
  esac
}

# Whether scenario $1 runs on the 3-node Cassandra cluster.
is_cassandra() { [ "$1" = cassandra-node ] || [ "$1" = cassandra-stop ]; }

# SIGSTOP of part $1 for $2 s, then SIGCONT: a process that hangs instead of
# dying (the load balancer and the clients must not wait on it).
paused() {
  local pid; pid="$(cat "$CLUSTER_DIR/$1.pid")"
  kill -STOP "$pid"; mark killed
  sleep "$2"
  kill -CONT "$pid"; mark back
}

# The chat_shards_held gauges of replicas $@, summed (from their /metrics).
shards_held() {
  local name url
  for name in "$@"; do
    url="$(sed -n "s/^$name=//p" "$CLUSTER_DIR/replica-metrics")"
    curl -s -m 1 "$url/metrics" || true
  done | awk '/^chat_shards_held / { n += $2 } END { print n + 0 }'
}

# Seconds from the fault until replicas $@ hold all 1,024 shards (polled
# every 0.1 s); fails past the lease (3 s, msg-service's default) + 2 s.
shards_served_again() {
  local start="$EPOCHREALTIME" bound_s=5 took
  while [ "$(shards_held "$@")" -lt 1024 ]; do
    took="$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')"
    if awk -v t="$took" 'BEGIN { exit !(t > 30) }'; then echo "not within 30 s"; return 1; fi
    sleep 0.1
  done
  took="$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"
  if awk -v t="$took" -v b="$bound_s" 'BEGIN { exit !(t > b) }'; then echo "$took s (over $bound_s s: FAILED)"; return 1; fi
  echo "$took s"
}

# Seconds until the woken replica $1 (pid $2), deposed, serves again as a
# new incarnation in the same process (its /readyz answers 200 again); fails
# after 20 s, if it exited, or if it never logged its lost lease.
serving_again() {
  local start="$EPOCHREALTIME" url
  url="$(sed -n "s/^$1=//p" "$CLUSTER_DIR/replica-metrics")"
  for _ in $(seq 1 200); do
    if ! kill -0 "$2" 2>/dev/null; then echo "it exited"; return 1; fi
    if grep -q "lost its lease" "$CLUSTER_DIR/$1.log" && curl -fsS -m 1 "$url/readyz" >/dev/null 2>&1; then
      awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f s\n", b - a }'
      return 0
    fi
    sleep 0.1
  done
  echo "not serving 20 s after SIGCONT"; return 1
}

# Records when event $1 happened (seconds since the load started).
mark() { awk -v e="$1" -v now="$EPOCHREALTIME" -v t0="$started" 'BEGIN { printf "%s %.3f\n", e, now - t0 }' >>"$work/events"; }

# Every 0.25 s until killed: seconds since the load started, and the sends the
# gateways answered ok and with an error so far (their chat_sends_total).
sample_acks() {
  local urls=() url now
  mapfile -t urls < <(sed -n 's/^gw[0-9]=//p' "$CLUSTER_DIR/endpoints")
  while :; do
    now="$EPOCHREALTIME"
    for url in "${urls[@]}"; do curl -s -m 1 "$url/metrics" || true; done \
      | awk -v now="$now" -v t0="$started" '/^chat_sends_total\{/ { if ($0 ~ /outcome="ok"/) ok += $NF; else err += $NF }
                       END { printf "%.3f %d %d\n", now - t0, ok, err }'
    sleep 0.25
  done >"$work/acks"
}

# Acked sends per second before the kill, while two nodes answer and after
# the node is back; how long sends stalled. Exits 1 unless, while the node was
# still down, sends were acked again at half the rate before the kill at least.
ack_rates() {
  python3 - "$work/acks" "$work/events" "$1" "${FAULTS_MAX_ACK_GAP_S:-3}" <<'EOF'
import sys
samples = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 3]
events = {l.split()[0]: float(l.split()[1]) for l in open(sys.argv[2])}
end = float(sys.argv[3])  # the end of the send phase
def at(t):  # the counters at time t, linearly interpolated between samples
    for (t0, ok0, e0), (t1, ok1, e1) in zip(samples, samples[1:]):
        if t0 <= t <= t1:
            f = (t - t0) / (t1 - t0) if t1 > t0 else 0
            return ok0 + f * (ok1 - ok0), e0 + f * (e1 - e0)
    return None
def rate(a, b):  # acks per second over [a, b], and the errors answered in it
    x, y = at(a), at(b)
    if x is None or y is None or b - a < 1:
        return None
    return (y[0] - x[0]) / (b - a), y[1] - x[1]
def show(name, v):
    return (f"{name} {v[0]:.1f}" + (f" ({v[1]:.0f} errors)" if v[1] else "")) if v else f"{name} n/a"
kill, back = events["killed"], events["back"]
down_end = min(back, end)
before = rate(2, kill)
# Sends are back once a whole second holds half the rate before the kill.
recovered = next((t for t in (kill + i * 0.25 for i in range(int((down_end - kill) * 4)))
                  if before and (r := rate(t, t + 1)) and r[0] >= before[0] / 2), None)
# The longest stretch after the kill, while the node was down, without a new ack.
stalled, since = 0.0, None
for (t0, ok0, _), (t1, ok1, _) in zip(samples, samples[1:]):
    if t1 <= kill or t0 >= down_end:
        continue
    if ok1 == ok0:
        since = t0 if since is None else since
        stalled = max(stalled, t1 - max(since, kill))
    else:
        since = None
parts = [show("before", before), show("two nodes", rate(kill, down_end))]
if recovered is not None:
    parts.append(show("two nodes once recovered", rate(recovered, down_end)))
parts.append(show("node back", rate(back, end)) if back + 1 < end else "node back after the load")
print("acks/s: " + ", ".join(parts) + f"; sends stalled up to {stalled:.1f} s; "
      + (f"sends back {recovered - kill:.1f} s after the kill" if recovered is not None
         else "sends not back while the node was down")
      + (f"; node answered CQL {back - events['restarting']:.0f} s after its restart"
         if "restarting" in events else ""))
# Sends must keep being acked while two nodes answer: no stretch without an
# ack longer than FAULTS_MAX_ACK_GAP_S (3 s).
sys.exit(0 if recovered is not None and stalled <= float(sys.argv[4]) else 1)
EOF
}

# Milliseconds one history request takes (a member of a DM with a message).
timed_history() {
  local lb="$1" token
  token="$(curl -fsS -X POST "$lb/v1/dev/token" -H 'content-type: application/json' \
    -d '{"user":"reader"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
  curl -s -o /dev/null -m 30 -w '%{http_code} %{time_total}' -H "authorization: Bearer $token" \
    "$lb/v1/conversations/dm:reader:writer/messages?limit=50" \
    | python3 -c 'import sys; code, t = sys.stdin.read().split(); print(f"{code} in {float(t) * 1000:.0f} ms")'
}

# Seconds from the fault until deliveries per second are back to half their
# median before it (the load tester's per-second timeline).
recovery() {
  python3 - "$1" "$2" <<'EOF'
import json, statistics, sys
report, fault = json.load(open(sys.argv[1])), float(sys.argv[2])
points = report["timeline"]
before = [p["delivered"] for p in points if p["second"] < fault]
normal = statistics.median(before) if before else 0
after = [p for p in points if p["second"] > fault and p["delivered"] >= normal / 2]
print(f"{after[0]['second'] - fault:.0f}" if after and normal else "n/a")
EOF
}

# The flood: FLOOD_USERS users (30), each a member of a conversation with
# history, and curl keeping FLOOD_PARALLEL (300) history requests in flight
# across them until killed, firing the next one the moment one is answered
# (429s included: it ignores Retry-After). curl runs under SCHED_IDLE: on
# this one machine its own CPU would otherwise count against the server,
# which a flood arriving over the network does not (at nice 19 it still
# took about 2 ms off the flooded send p99).
prepare_flood() {
  local lb="$1" user token conv i
  : >"$work/flooders"
  for u in $(seq 1 "${FLOOD_USERS:-30}"); do
    user="flooder$u" conv="dm:flooder$u:flooder${u}x"
    token="$(curl -fsS -X POST "$lb/v1/dev/token" -H 'content-type: application/json' \
      -d "{\"user\":\"$user\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
    for i in $(seq 1 5); do
      curl -fsS -X POST "$lb/v1/conversations/$conv/messages" -H "authorization: Bearer $token" \
        -H 'content-type: application/json' -d "{\"client_msg_id\":\"f-$i\",\"body\":\"history $i\"}" >/dev/null
    done
    printf '%s %s\n' "$token" "$conv" >>"$work/flooders"
  done
  for _ in $(seq 1 2000); do
    while read -r token conv; do
      printf 'url = "%s/v1/conversations/%s/messages?limit=50"\nheader = "authorization: Bearer %s"\n' \
        "$lb" "$conv" "$token"
      printf 'output = "/dev/null"\nwrite-out = "%%{http_code}\\n"\nnext\n'
    done <"$work/flooders"
  done >"$work/flood.cfg"
}

start_flood() {
  chrt --idle 0 curl --parallel --parallel-max "${FLOOD_PARALLEL:-300}" -s -K "$work/flood.cfg" \
    >>"$work/flood.codes" 2>/dev/null &
  flood=$!
}

# FLOOD_ROUNDS (9) rounds of pairs for 8 s without, then with the flood (from its first
# request on). One p99 of a few ms moves by 2x between two calm runs on this
# machine, so the check compares the medians of the rounds' send->ack
# p99s: flooded <= 2x calm.
history_flood() {
  local lb="$1" url="ws://${1#http://}/v1/ws" round
  prepare_flood "$lb"
  : >"$work/flood.codes"
  for round in $(seq 1 "${FLOOD_ROUNDS:-9}"); do
    "$bin/loadtest" pairs --url "$url" --users "$users" --rate "$((rate * 2))" --duration 8 --ramp 1 \
      --json "$work/calm-$round.json" >&2
    start_flood
    "$bin/loadtest" pairs --url "$url" --users "$users" --rate "$((rate * 2))" --duration 8 --ramp 1 \
      --json "$work/flood-$round.json" >&2 || { kill "$flood" 2>/dev/null; return 1; }
    kill "$flood" 2>/dev/null || true; wait "$flood" 2>/dev/null || true
  done
  python3 - "$work" "${FLOOD_ROUNDS:-9}" <<'EOF'
import collections, json, statistics, sys
work = sys.argv[1]
rounds = range(1, int(sys.argv[2]) + 1)
calm = [json.load(open(f"{work}/calm-{r}.json")) for r in rounds]
flood = [json.load(open(f"{work}/flood-{r}.json")) for r in rounds]
codes = collections.Counter(l.strip() for l in open(f"{work}/flood.codes") if l.strip())
p99 = lambda runs: [r["ack_latency"]["p99_ms"] for r in runs]
a, b = statistics.median(p99(calm)), statistics.median(p99(flood))
total = lambda key: sum(r["verdict"][key] for r in flood)
ok = b <= 2 * max(a, 1.0) and total("lost") == total("duplicated") == 0 \
    and all(r["verdict"]["lost"] == 0 for r in calm)
history = ", ".join(f"{n} x {c}" for c, n in sorted(codes.items()))
show = lambda xs: "/".join(f"{x:.1f}" for x in xs)
print(f"| history-flood | send p99 median {a:.1f} ms calm ({show(p99(calm))}), {b:.1f} ms flooded ({show(p99(flood))}): "
      f"{b / max(a, 1e-9):.2f}x; history answers: {history} | {sum(r['acked'] for r in flood)} | "
      f"{total('delivered')} of {total('expected')} | {total('lost')} | {total('duplicated')} | "
      f"{max(r['after_ack_latency']['max_ms'] for r in calm + flood) / 1000:.2f} s | - |")
sys.exit(0 if ok else 1)
EOF
}

rows=()
failed=0
for scenario in "${scenarios[@]}"; do
  if [ "$scenario" = history-flood ]; then
    say "scenario history-flood: pairs without, then with ${FLOOD_PARALLEL:-300} concurrent history requests"
    lb="$("$cluster" up)"
    row="$(history_flood "$lb")" || failed=1
    rows+=("${row:-| history-flood | failed | | | | | | |}")
    "$cluster" down >/dev/null
    continue
  fi
  # The Cassandra scenario: a 3-node cluster, and a load long enough to span
  # the outage, the node's restart (about 20 s) and some seconds after it.
  # Three JVMs and debug binaries on two cores: its own, lower rate
  # (FAULTS_CASSANDRA_RATE, 1 msg/s each), below what the cluster sustains.
  up_env=() duration=12 sampler="" scenario_rate="$rate" takeover="" woke=""
  case "$scenario" in
    replica-*)
      up_env=(CLUSTER_STORE=cassandra CLUSTER_CASSANDRA_NODES=1 CLUSTER_MSG_REPLICAS=3)
      scenario_rate="${FAULTS_REPLICA_RATE:-2}" duration=25
      [ "$scenario" = replica-roll ] && duration=50 ;;
  esac
  if is_cassandra "$scenario"; then
    up_env=(CLUSTER_STORE=cassandra CLUSTER_CASSANDRA_NODES=3)
    duration=$(( ${FAULTS_CASSANDRA_DOWN:-20} + 35 )) scenario_rate="${FAULTS_CASSANDRA_RATE:-1}"
  fi
  say "scenario $scenario: $users users in pairs, $scenario_rate msg/s each"
  up_started=$(date +%s)
  lb="$(env "${up_env[@]}" "$cluster" up)"
  say "cluster up in $(( $(date +%s) - up_started )) s"
  json="$work/$scenario.json"
  : >"$work/events"
  started=$(date +%s.%N)
  if is_cassandra "$scenario"; then
    # Fresh JVMs are slow for their first seconds: a short load first, not measured.
    "$bin/loadtest" pairs --url "ws://${lb#http://}/v1/ws" --users "$users" --rate "$scenario_rate" \
      --duration 10 --ramp 1 --drain-timeout 60 >"$work/warm-up.out" 2>&1 || { cat "$work/warm-up.out" >&2; failed=1; }
    started=$(date +%s.%N)
    sample_acks & sampler=$!
  fi
  "$bin/loadtest" pairs --url "ws://${lb#http://}/v1/ws" --users "$users" --rate "$scenario_rate" \
    --duration "$duration" --ramp 1 --drain-timeout 60 --json "$json" >"$work/$scenario.out" 2>&1 &
  load=$!
  sleep 5  # mid-load: the clients have been sending for about 4 s
  fault_at="$(python3 -c "print($(date +%s.%N) - $started)")"
  say "injecting: $scenario"
  history_ms=""
  inject "$scenario"
  [ -n "$history_ms" ] && say "history during the stall: $history_ms"
  status=0; wait "$load" || status=$?
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; fi
  cat "$work/$scenario.out" >&2
  if [ "$status" -ne 0 ] || [ ! -f "$json" ]; then
    failed=1
    rows+=("$(printf '| %s | load tester failed (exit %s) | | | | | | |' "$scenario" "$status")")
  else
    label="$scenario${history_ms:+ (history answered $history_ms)}"
    [ -n "$takeover" ] && label="$label (its shards served again after $takeover${woke:+; woken, it found itself deposed and served again as a new incarnation after $woke})"
    recovered="$(recovery "$json" "$fault_at") s"
    if [ "$scenario" = cassandra-node ]; then
      rates="$(ack_rates "$((duration + 1))")" || { failed=1; rates="$rates: FAILED"; }
      label="cassandra-node (kill -9 cassandra2 of 3 for ${FAULTS_CASSANDRA_DOWN:-20} s, then restarted; $rates)"
      recovered="deliveries $recovered; node $(awk '$1 == "back" { b = $2 } $1 == "killed" { k = $2 }
        END { printf "%.0f", b - k }' "$work/events") s after the kill"
    elif [ "$scenario" = cassandra-stop ]; then
      rates="$(ack_rates "$((duration + 1))")" || { failed=1; rates="$rates: FAILED"; }
      label="cassandra-stop (SIGSTOP of cassandra2 of 3 for ${FAULTS_CASSANDRA_DOWN:-20} s, then SIGCONT; $rates)"
    fi
    row="$(python3 - "$json" "$label" "$recovered" "$max_wait_ms" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); v = r["verdict"]
waited, bound = r["after_ack_latency"]["max_ms"], float(sys.argv[4])
verdict = "" if waited <= bound else f" (over {bound / 1000:.0f} s: FAILED)"
if verdict:
    print(f"faults: the message that waited longest: {json.dumps(r.get('slowest_after_ack'))}",
          file=sys.stderr)
print(f"| {sys.argv[2]} | {r['sent']} | {r['acked']} | {v['delivered']} of {v['expected']} | {v['lost']} | "
      f"{v['duplicated']} | {waited / 1000:.2f} s{verdict} | {sys.argv[3]} |")
sys.exit(1 if verdict else 0)
EOF
)" || failed=1
    rows+=("$row")
  fi
  "$cluster" down >/dev/null
  if [ "$scenario" = half-fanout ]; then
    # The audit compares every conversation log with the members' inboxes
    # (offline: the store is msg-service's, now stopped).
    say "msg-service audit of the whole run"
    if "$bin/msg-service" audit --data-dir "$CLUSTER_DIR/msg-data" --from 0 --to "$(( $(date +%s) + 86400 ))000" \
      >"$work/audit.out" 2>"$work/audit.err"; then
      rows[-1]="${rows[-1]% |}; $(tail -n 1 "$work/audit.out") |"
    else
      cat "$work/audit.out" "$work/audit.err" >&2
      failed=1
      rows[-1]="${rows[-1]} audit FAILED |"
    fi
  fi
done

echo
echo "| fault | sends written (incl. retries) | acked | delivered | lost | duplicated | longest wait after ack | time to recover |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
exit "$failed"
