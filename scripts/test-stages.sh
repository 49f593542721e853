# shellcheck shell=bash
# The stages of scripts/test.sh, in the order they run, and what each needs
# installed. Sourced, not run; each stage_NAME runs in a subshell of its own
# (scripts/test-runner.sh).

# shellcheck source=scripts/test-runner.sh
source "$root/scripts/test-runner.sh"

conformance="${CONFORMANCE_DIR:-$root/../shared/conformance}"
cassandra="${CASSANDRA_DIR:-$root/../shared/cassandra}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

STAGES=(fmt clippy shell rust vendor conformance smoke cluster faults history-flood scylla cassandra-faults replicas deploy
  schemathesis browser selftest)
QUICK_STAGES="fmt,clippy,rust,conformance"
declare -A STAGE_DESC=(
  [fmt]="cargo fmt --check"
  [clippy]="cargo clippy --all-targets, warnings are errors"
  [shell]="bash -n and shellcheck (errors) on every script"
  [rust]="cargo test --workspace: unit, integration, Redis (real redis-server) and local-cluster tests"
  [vendor]="the unit tests of the patched fjall and lsm-tree in vendor/ (vendor/PATCHES.md)"
  [conformance]="../shared/conformance against a fresh single-machine server"
  [smoke]="every load test scenario briefly against a fresh server (0 lost, 0 duplicated), then SIGTERM exits 0"
  [cluster]="../shared/conformance through HAProxy against the two-gateway cluster"
  [faults]="kill -9 redis, a gateway, msg-service; a stalled store; fan-outs failing part-way; under load"
  [history-flood]="a history flood from 30 users while sending (release binaries): send p99 within 2x of calm"
  [scylla]="a Cassandra node from ../shared/cassandra: every Scylla-gated test against it; conformance and smoke on 3 msg-service replicas (--store scylla)"
  [cassandra-faults]="3 Cassandra nodes (RF 3) and 3 msg-service replicas under load: kill -9 of a node, restarted; SIGSTOP of a node for 20 s (0 lost, 0 duplicated, acks go on)"
  [replicas]="3 msg-service replicas on Cassandra under load: kill -9 of one, SIGSTOP of one past its lease, scale 3-1-3-2 and a rolling restart; then the redis, gateway, msg-service (kill -9 and restart of replica 1) and store-stall faults with 3 replicas; kill -9 of the clients' HAProxy and of the gateways' gRPC HAProxy, SIGSTOP of the latter"
  [deploy]="deployment files validated offline (kustomize, schemas, haproxy -c, nginx -t, rules)"
  [schemathesis]="schemathesis against the REST API of a fresh server"
  [browser]="the web client in headless Chromium"
  [selftest]="this script's own test: --list, --only, --skip, a failing stage"
)

log() { printf '\n==> %s\n' "$*"; }

# Debian packages the stages use; installed only when missing.
ensure_packages() {
  local missing=() pkg sudo=""
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

ensure_prerequisites() {
  command -v cargo >/dev/null || { echo "test.sh: cargo is needed (Rust >= 1.90, rustup.rs)" >&2; return 1; }
  ensure_packages curl ca-certificates python3 python3-venv redis-server haproxy \
    openjdk-17-jre-headless shellcheck
  python3 -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' \
    || { echo "test.sh: python3 >= 3.11 with venv is needed" >&2; return 1; }
}

free_port() {
  python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "${1:-127.0.0.1}"
}

new_secret() { echo "$1-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"; }

# Starts a debug single-machine server on a free port; sets server, server_url,
# server_dir and secret, and an EXIT trap that stops it.
start_single_server() {
  cargo build --locked -p gateway -p loadtest
  local port
  port="$(free_port)"
  server_dir="$(mktemp -d)"
  secret="$(new_secret "$1")"
  CHAT_JWT_SECRET="$secret" "$target_dir/debug/gateway" --listen "127.0.0.1:$port" \
    --data-dir "$server_dir/data" >"$server_dir/server.log" 2>&1 &
  server=$!
  server_url="http://127.0.0.1:$port"
  trap 'stop_single_server $?' EXIT
  for _ in $(seq 1 100); do
    curl -fsS "$server_url/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  cat "$server_dir/server.log"
  echo "the server did not become ready" >&2
  return 1
}

# The EXIT trap of start_single_server: shows the log's end if the stage failed.
stop_single_server() {
  if [ "$1" -ne 0 ]; then
    echo "-- end of the server's log:" >&2
    tail -n 20 "$server_dir/server.log" >&2
  fi
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$server_dir"
}

# Notes the count of "N passed" / "N failed" from a pytest log.
note_pytest_counts() {
  stage_note "$(grep -Eo '[0-9]+ passed(, [0-9]+ [a-z]+)*' "$1" | tail -n 1)"
}

stage_fmt() { cargo fmt --all -- --check; }

stage_clippy() { cargo clippy --workspace --all-targets --locked -- -D warnings; }

stage_shell() {
  local scripts
  mapfile -t scripts < <(git ls-files '*.sh' .ci/run)
  for script in "${scripts[@]}"; do bash -n "$script"; done
  shellcheck -S error -x "${scripts[@]}"
  stage_note "${#scripts[@]} scripts"
}

# "N passed, N failed, N ignored" summed over the `test result:` lines of
# cargo's output in $1.
test_totals() {
  awk '/^test result:/ { p += $4; f += $6; i += $8 } END { print p " passed, " f " failed, " i " ignored" }' "$1"
}

stage_rust() {
  local out
  out="$(mktemp)"
  cargo test --workspace --locked 2>&1 | tee "$out"
  stage_note "$(test_totals "$out")"
  rm -f "$out"
}

# The store's engine, patched (vendor/PATCHES.md): upstream's unit tests and
# the patches' own, each crate with its own lock file, in the same target dir.
stage_vendor() {
  local out crate
  out="$(mktemp)"
  for crate in lsm-tree fjall; do
    CARGO_TARGET_DIR="$target_dir" cargo test --locked --manifest-path "vendor/$crate/Cargo.toml" --lib 2>&1 | tee -a "$out"
  done
  stage_note "$(test_totals "$out")"
  rm -f "$out"
}

stage_conformance() {
  start_single_server conformance
  CHAT_JWT_SECRET="$secret" "$conformance/run.sh" "$server_url" 2>&1 | tee "$server_dir/pytest.log"
  note_pytest_counts "$server_dir/pytest.log"
}

stage_smoke() {
  start_single_server smoke
  CHAT_JWT_SECRET="$secret" scripts/loadtest-smoke.sh "ws://${server_url#http://}/v1/ws"
  log "graceful shutdown exits 0"
  kill -TERM "$server"
  wait "$server"
}

# Brings up deploy/local/cluster.sh (its store from CLUSTER_STORE) and runs
# the conformance suite through HAProxy; sets lb_url. Its EXIT trap takes the
# cluster down (and removes a Cassandra node dir the stage left, if any).
cluster_conformance() {
  # not local: the EXIT trap reads it after the function returned
  cluster_dir="$(mktemp -d)"
  CHAT_JWT_SECRET="$(new_secret "$1")"
  export CLUSTER_DIR="$cluster_dir" CLUSTER_PROFILE=debug CHAT_JWT_SECRET
  trap 'deploy/local/cluster.sh down || true; rm -rf "$cluster_dir" "${node_dir:-}" || true' EXIT
  cargo build --locked -p gateway -p msg-service -p loadtest
  lb_url="$(deploy/local/cluster.sh up)"
  "$conformance/run.sh" "$lb_url" 2>&1 | tee "$cluster_dir/pytest.log"
  note_pytest_counts "$cluster_dir/pytest.log"
}

stage_cluster() { CLUSTER_STORE=embedded cluster_conformance cluster; }

stage_faults() { scripts/faults.sh redis gateway msg-service gateway-stop redis-stop msg-service-stop store-stall half-fanout; }

# Latency is only meaningful in optimized code: release binaries (debug JSON
# and HTTP are an order of magnitude slower). Their build takes about 8
# minutes on 2 cores, which would put a fresh clone's full run past its
# 20-minute budget, so the full command skips this stage, saying so in the
# summary, unless it is asked for by name (--only history-flood) or with
# CHAT_TEST_HISTORY_FLOOD=1 (README: its last ten runs).
stage_history_flood() {
  if [[ ",${TEST_ONLY:-}," != *",history-flood,"* ]] && [ "${CHAT_TEST_HISTORY_FLOOD:-}" != 1 ]; then
    stage_skip "needs a release build (~8 min); run: scripts/test.sh --only history-flood"
  fi
  FAULTS_PROFILE=release scripts/faults.sh history-flood
}

# An address of 127.0.0.0/8 whose Cassandra storage port (7000) is free (not
# 127.0.0.1-3, where deploy/local/cluster.sh puts its 3-node cluster).
free_cassandra_address() {
  local last
  for last in 11 12 13 14 15 16 17 18 19; do
    if python3 -c 'import socket, sys; socket.socket().bind((sys.argv[1], 7000))' "127.0.0.$last" 2>/dev/null; then
      echo "127.0.0.$last"
      return 0
    fi
  done
  return 1
}

# Starts one Cassandra node in a fresh folder; sets node_dir and nodes, and an
# EXIT trap that stops it whatever happens.
start_cassandra_node() {
  [ -x "$cassandra/start.sh" ] || { echo "no Cassandra at $cassandra (set CASSANDRA_DIR)" >&2; return 1; }
  local address port
  address="$(free_cassandra_address)" || { echo "no 127.0.0.x with port 7000 free" >&2; return 1; }
  port="$(free_port "$address")"
  node_dir="$(mktemp -d)"
  trap '"$cassandra/stop.sh" "$node_dir/node" >/dev/null 2>&1 || true; rm -rf "$node_dir" || true' EXIT
  "$cassandra/start.sh" --dir "$node_dir/node" --address "$address" --port "$port" --heap 512M >/dev/null
  nodes="$address:$port"
  echo "Cassandra node on $nodes"
}

# Runs the gated tests of one test binary against $nodes with --ignored and
# fails unless every listed one ran and passed; prints the count (the tests'
# output goes to stderr).
run_gated() {
  local out expected ran
  out="$(mktemp)"
  expected="$(cargo test --locked "$@" -- --ignored --list 2>/dev/null | grep -c ': test$')"
  SCYLLA_NODES="$nodes" cargo test --locked "$@" -- --ignored 2>&1 | tee "$out" >&2
  ran="$(awk '/^test result:/ { p += $4 } END { print p + 0 }' "$out")"
  if grep -q 'SKIPPED' "$out" || [ "$ran" -ne "$expected" ]; then
    echo "only $ran of $expected gated tests ran and passed" >&2
    return 1
  fi
  echo "$ran"
}

stage_scylla() {
  start_cassandra_node
  local storage_ran service_ran
  storage_ran="$(run_gated -p storage --test scylla | tail -n 1)"
  service_ran="$(run_gated -p msg-service --test api scylla_needs_node | tail -n 1)"
  stage_note "$storage_ran storage + $service_ran msg-service tests ran against Cassandra"
  "$cassandra/stop.sh" "$node_dir/node" >/dev/null 2>&1 || true

  log "conformance and load-test smoke through HAProxy, msg-service --store scylla on one Cassandra node"
  export CLUSTER_STORE=cassandra CLUSTER_CASSANDRA_NODES=1
  cluster_conformance scylla
  scripts/loadtest-smoke.sh "ws://${lb_url#http://}/v1/ws"
}

stage_cassandra_faults() { scripts/faults.sh cassandra-node cassandra-stop; }

stage_replicas() {
  local out
  out="$(mktemp)"
  # Scenarios of the faults stage too, here with 3 replicas on Cassandra
  # (half-fanout audits an embedded data dir: it stays in the faults stage).
  # msg-service is kill -9 of replica 1 and its restart 2 s later. All at
  # the replica scenarios' 2 msg/s per user: at the faults stage's 5, three
  # debug replicas and a JVM on 2 cores are past their capacity before any
  # fault (delivery p50 0.4-1.0 s), and a fault's wait was measured on top
  # of that queue (4.3-5.6 s); at 2 the p50 is 30-70 ms.
  FAULTS_RATE=2 CLUSTER_STORE=cassandra CLUSTER_CASSANDRA_NODES=1 scripts/faults.sh \
    replica-kill replica-stop replica-roll redis gateway msg-service store-stall lb msg-lb msg-lb-stop | tee "$out"
  stage_note "$(grep -o 'served again after [0-9.]* s' "$out" | tr '\n' ';' | sed 's/;$//')"
  rm -f "$out"
}

stage_deploy() {
  command -v kubectl >/dev/null || stage_note "kustomize render SKIPPED: kubectl not found"
  bash deploy/validate.sh
}

stage_schemathesis() { bash scripts/test-hostile.sh; }

stage_browser() { bash e2e/run.sh; }

stage_selftest() { bash scripts/test-selftest.sh; }
