#!/usr/bin/env bash
# A short run of every load test scenario against a running server (pairs
# and groups also edit and recall some of their messages), each
# failing (exit 1) on a lost, duplicated or out-of-order message.
#   CHAT_JWT_SECRET=... scripts/loadtest-smoke.sh ws://127.0.0.1:PORT/v1/ws
# Numbers stay within the server's default per-user send rate (20/s, burst 50).
set -euo pipefail

url="${1:?usage: loadtest-smoke.sh ws://host:port/v1/ws}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
loadtest="${LOADTEST:-${CARGO_TARGET_DIR:-$root/target}/debug/loadtest}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

run() {
  local name="$1"; shift
  echo "-- loadtest $name $*"
  "$loadtest" "$name" --url "$url" --ramp 0.5 --drain-timeout 20 --json "$out/$name.json" "$@"
}

run pairs --users 20 --rate 5 --duration 3 --changes 4 --plot "$out/pairs.svg"
run groups --groups 3 --members 5 --rate 2 --duration 3 --changes 3
run idle --connections 200 --duration 1
run reconnect-storm --users 40 --rate 2 --duration 2 --backlog 3 --jitter-ms 500
run catch-up --entries 400 --senders 10
grep -q '<svg' "$out/pairs.svg"
echo "-- every scenario: 0 lost, 0 duplicated, 0 out of order"
