#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, the workspace's unit and
# integration tests (Redis tests start their own redis-server), then the
# PROTOCOL.md conformance suite against a freshly started single-machine
# server, short runs of every load test scenario against it, and again through HAProxy against the local two-gateway cluster,
# the deployment files validated offline, then the web client's end-to-end
# tests in headless Chromium.
# Installs what the tests need when it is missing; safe to run again.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
conformance="${CONFORMANCE_DIR:-$root/../shared/conformance}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

log() { printf '\n==> %s\n' "$*"; }

# Debian packages the tests use; installed only when missing.
ensure_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  fi
}

ensure_packages curl ca-certificates redis-server haproxy
python3 -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' \
  || { echo "python3 >= 3.11 with venv is needed for the conformance suite" >&2; exit 2; }

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test --workspace"
cargo test --workspace --locked

log "conformance suite against a fresh server"
cargo build --locked -p gateway -p loadtest
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
data_dir="$(mktemp -d)"
secret="conformance-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
server_log="$data_dir/server.log"
CHAT_JWT_SECRET="$secret" "$target_dir/debug/gateway" --listen "127.0.0.1:$port" --data-dir "$data_dir/data" \
  >"$server_log" 2>&1 &
server=$!
stop_server() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data_dir"; }
trap stop_server EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$server_log"; echo "the server exited at start-up" >&2; exit 1; }
  sleep 0.1
done
CHAT_JWT_SECRET="$secret" "$conformance/run.sh" "http://127.0.0.1:$port"

log "load test scenarios, short runs against the same server (0 lost, 0 duplicated)"
CHAT_JWT_SECRET="$secret" scripts/loadtest-smoke.sh "ws://127.0.0.1:$port/v1/ws"

log "graceful shutdown exits 0"
kill -TERM "$server"
wait "$server"
trap - EXIT
rm -rf "$data_dir"

log "conformance suite through HAProxy against the two-gateway cluster"
cluster_dir="$(mktemp -d)"
export CLUSTER_DIR="$cluster_dir" CLUSTER_PROFILE=debug CHAT_JWT_SECRET="$secret"
stop_cluster() { deploy/local/cluster.sh down || true; rm -rf "$cluster_dir"; }
trap stop_cluster EXIT
cargo build --locked -p msg-service
lb_url="$(deploy/local/cluster.sh up)"
"$conformance/run.sh" "$lb_url"
stop_cluster
trap - EXIT

log "fault injection with real processes under load: kill -9 redis, a gateway, msg-service; a stalled store; fan-outs failing part-way"
scripts/faults.sh redis gateway msg-service store-stall half-fanout

# Latency is only meaningful in optimized code: this scenario builds and runs
# release binaries (debug JSON and HTTP are an order of magnitude slower, so
# a debug run measures the compiler's optimizer, not the bulkheads).
log "a history flood from 30 users while sending, release binaries: send p99 within 2x of calm"
FAULTS_PROFILE=release scripts/faults.sh history-flood

log "deployment files, validated offline (kustomize, schemas, haproxy -c, nginx -t, alert rules, metric names)"
bash deploy/validate.sh

log "schemathesis against the REST API of a fresh server"; bash scripts/test-hostile.sh

log "browser end-to-end tests (headless Chromium)"
bash e2e/run.sh

log "all tests passed"
