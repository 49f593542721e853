#!/usr/bin/env bash
# Builds the release gateway, starts it on a free 127.0.0.1 port with a fresh
# data dir, runs the benchmark scenarios (bench.py), prints the results and
# writes bench/results/latest.json, then stops the server.
#
#   bench/run.sh                      # all scenarios, defaults
#   bench/run.sh --scenarios pairs --rate 4 --duration 30
#   bench/run.sh --help               # every option of bench.py
#
# Everything after the script name is passed to bench.py.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
VENV="${BENCH_VENV:-$BENCH_DIR/.venv}"
PY="$VENV/bin/python"

# --- the client's virtualenv, (re)made only when requirements.txt changes
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$BENCH_DIR/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$PY" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "== setting up $VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$BENCH_DIR/requirements.txt"
    echo "$want" >"$stamp"
fi

if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then
    exec "$PY" "$BENCH_DIR/bench.py" --help
fi

# --- open files: the server holds one fd per connection (10,000 idle by default)
soft="$(ulimit -Sn)"; hard="$(ulimit -Hn)"
if [[ "$soft" != "$hard" ]]; then ulimit -n "$hard" || true; fi
echo "== ulimit -n: $(ulimit -n) (hard $hard); cores: $(nproc) - the client processes compete with the server for them"
if [[ "$(ulimit -n)" != unlimited && "$(ulimit -n)" -lt 11000 ]]; then
    echo "warning: ulimit -n $(ulimit -n) is below what 10,000 idle connections need; lower --idle-conns" >&2
fi

# --- build
echo "== cargo build --release -p gateway"
(cd "$ROOT" && cargo build --release -p gateway)
BIN="$ROOT/target/release/gateway"

# --- start the server
DATA="$(mktemp -d -t chat-bench.XXXXXX)"
SECRET="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
EXTRA_FLAGS="$("$PY" "$BENCH_DIR/bench.py" --server-flags "$@")"  # --send-rate etc. when --rate > 20
read -r -a EXTRA <<<"$EXTRA_FLAGS"
SERVER_PID=""

stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

echo "== starting gateway on 127.0.0.1:$PORT (data dir $DATA) ${EXTRA[*]:-}"
RUST_LOG="${RUST_LOG:-warn}" "$BIN" --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
    --jwt-secret "$SECRET" "${EXTRA[@]}" >"$DATA/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    if "$PY" -c "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:$PORT/readyz', timeout=1)" 2>/dev/null; then
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DATA/server.log"; echo "gateway exited" >&2; exit 1; }
    sleep 0.1
done

# --- run
status=0
"$PY" "$BENCH_DIR/bench.py" --url "ws://127.0.0.1:$PORT/v1/ws" --pid "$SERVER_PID" --secret "$SECRET" \
    --command "bench/run.sh${*:+ $*}" "$@" || status=$?
if [[ -s "$DATA/server.log" ]]; then
    echo "== server log (warnings and errors, last 20 lines)"
    tail -n 20 "$DATA/server.log"
fi
exit "$status"
