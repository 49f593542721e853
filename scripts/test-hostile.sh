#!/usr/bin/env bash
# Throws schemathesis (PyPI) at the REST API of a freshly started
# single-machine gateway: every operation of GET /openapi.json with
# generated valid and invalid input, a valid token for a fresh user, a
# bounded number of examples. Fails on any 5xx or any response that does
# not match the schema (status, content type, body).
# Installs schemathesis into a venv under ${XDG_CACHE_HOME:-~/.cache} once;
# safe to run again. HOSTILE_EXAMPLES sets the examples per operation.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/chat-test-venv-hostile"
examples="${HOSTILE_EXAMPLES:-40}"

log() { printf '\n==> %s\n' "$*"; }

if [ ! -x "$venv/bin/st" ]; then
  log "installing schemathesis into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q 'schemathesis>=4,<5'
fi

cargo build --locked -q -p gateway
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
work="$(mktemp -d)"
secret="hostile-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
# Long polls are cut to 100 ms: schemathesis asks for wait_ms up to the
# documented 30000, and the run must stay short. For the same reason the
# history rate is raised: one user here reads history faster than any
# client would, and each refusal waits a second (the limit has its own test).
CHAT_JWT_SECRET="$secret" "$target_dir/debug/gateway" --listen "127.0.0.1:$port" \
  --data-dir "$work/data" --max-long-poll-ms 100 --history-rate 10000 --history-burst 10000 >"$work/server.log" 2>&1 &
server=$!
stop_server() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"; }
trap stop_server EXIT

base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; echo "the server exited at start-up" >&2; exit 1; }
  sleep 0.1
done

# A token from the dev endpoint (on in the single-machine default). The
# user is fresh, so most conversation ids schemathesis makes up are 403.
token="$(curl -fsS -X POST "$base/v1/dev/token" -H 'content-type: application/json' \
  -d '{"user":"schemathesis"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')"

log "schemathesis against $base/openapi.json ($examples examples per operation)"
# Checks: no 5xx, and every response documented (status code, content
# type, body schema). negative_data_rejection etc. are left out: this API
# clamps out-of-range limits on purpose (PROTOCOL.md), which they flag.
# From the scratch dir: schemathesis keeps its replay data in ./.schemathesis.
(cd "$work" && "$venv/bin/st" run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" \
  --seed 20261128 \
  --request-timeout 35 \
  --no-color)
log "schemathesis: no 5xx, every response matches the schema"

kill -TERM "$server"
wait "$server"
trap - EXIT
rm -rf "$work"
