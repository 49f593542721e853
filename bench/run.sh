#!/usr/bin/env bash
# Builds the release binaries, starts the server on 127.0.0.1 with fresh data,
# runs the benchmark scenarios (bench.py), prints the results and writes
# bench/results/latest.json, then stops the server.
#
#   bench/run.sh                      # single gateway, all scenarios, defaults
#   bench/run.sh --scenarios pairs --rate 4 --duration 30
#   bench/run.sh --target cluster     # the local cluster (deploy/local/cluster.sh) behind HAProxy
#   bench/run.sh --target both --scenarios pairs   # single, then cluster; side by side with ratios
#   bench/run.sh --help               # every option of bench.py
#
# --target single|cluster|both (default single) is run.sh's own option; everything
# else is passed to bench.py. cluster and both default to --scenarios baseline,pairs
# (idle is single only).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
VENV="${BENCH_VENV:-$BENCH_DIR/.venv}"
PY="$VENV/bin/python"
COMMAND="bench/run.sh${*:+ $*}"

# --- run.sh's own option: --target; the rest goes to bench.py
TARGET=single
ARGS=()
while (($#)); do
    case "$1" in
        --target) [[ $# -ge 2 ]] || { echo "run.sh: --target needs single|cluster|both" >&2; exit 2; }
                  TARGET="$2"; shift 2 ;;
        --target=*) TARGET="${1#*=}"; shift ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
case "$TARGET" in
    single) ;;
    cluster|both) ARGS=(--scenarios baseline,pairs "${ARGS[@]}") ;;  # a later --scenarios wins
    *) echo "run.sh: --target must be single, cluster or both (got '$TARGET')" >&2; exit 2 ;;
esac

# --- the client's virtualenv, (re)made only when requirements.txt changes
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$BENCH_DIR/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$PY" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    echo "== setting up $VENV"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$BENCH_DIR/requirements.txt"
    echo "$want" >"$stamp"
fi

if [[ " ${ARGS[*]} " == *" --help "* || " ${ARGS[*]} " == *" -h "* ]]; then
    exec "$PY" "$BENCH_DIR/bench.py" --help
fi

# --- checks the options (bench.py exits 2 on a bad one) and gets the server flags they
# need: --send-rate etc. when --rate > 20, for the gateway (single) or msg-service (cluster)
EXTRA_FLAGS="$("$PY" "$BENCH_DIR/bench.py" --server-flags --target "$TARGET" "${ARGS[@]}")"
read -r -a EXTRA <<<"$EXTRA_FLAGS"

# --- open files: the server holds one fd per connection (10,000 idle by default)
soft="$(ulimit -Sn)"; hard="$(ulimit -Hn)"
if [[ "$soft" != "$hard" ]]; then ulimit -n "$hard" || true; fi
echo "== ulimit -n: $(ulimit -n) (hard $hard); cores: $(nproc) - the client processes compete with the server for them"
if [[ "$(ulimit -n)" != unlimited && "$(ulimit -n)" -lt 11000 ]]; then
    echo "warning: ulimit -n $(ulimit -n) is below what 10,000 idle connections need; lower --idle-conns" >&2
fi

# --- build (cluster.sh builds too; doing it here keeps the build out of the measurements)
PACKAGES=(-p gateway); [[ "$TARGET" != single ]] && PACKAGES+=(-p msg-service)
echo "== cargo build --release ${PACKAGES[*]}"
(cd "$ROOT" && cargo build --release "${PACKAGES[@]}")
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/gateway"  # where cargo put it (as cluster.sh)

SECRET="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
WORK="$(mktemp -d -t chat-bench-out.XXXXXX)"  # per-target JSON of a `both` run
DATA=""; SERVER_PID=""; CLUSTER_DIR=""
CLUSTER_SH="$ROOT/deploy/local/cluster.sh"

# --- the single-machine gateway
start_single() {
    DATA="$(mktemp -d -t chat-bench.XXXXXX)"
    PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    echo "== starting gateway on 127.0.0.1:$PORT (data dir $DATA) ${EXTRA[*]:-}"
    RUST_LOG="${RUST_LOG:-warn}" "$BIN" --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
        --jwt-secret "$SECRET" "${EXTRA[@]}" >"$DATA/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        if "$PY" -c "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:$PORT/readyz', timeout=1)" 2>/dev/null; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DATA/server.log"; echo "gateway exited" >&2; exit 1; }
        sleep 0.1
    done
    echo "gateway not ready after 10 s" >&2; exit 1
}

stop_single() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
    if [[ -n "$DATA" ]]; then
        if [[ -s "$DATA/server.log" ]]; then
            echo "== gateway log (warnings and errors, last 20 lines)"
            tail -n 20 "$DATA/server.log"
        fi
        rm -rf "$DATA"
    fi
    DATA=""
}

run_single() {  # run_single OUT
    start_single
    local status=0
    "$PY" "$BENCH_DIR/bench.py" "${ARGS[@]}" --target single --url "ws://127.0.0.1:$PORT/v1/ws" \
        --pid "$SERVER_PID" --secret "$SECRET" --command "$COMMAND" ${1:+--out "$1"} || status=$?
    stop_single
    return "$status"
}

# --- the local cluster: redis, msg-service, two gateways, HAProxy (deploy/local/cluster.sh)
start_cluster() {
    CLUSTER_DIR="$(mktemp -d -t chat-bench-cluster.XXXXXX)"
    echo "== starting the cluster (deploy/local/cluster.sh up, dir $CLUSTER_DIR) ${EXTRA[*]:+msg-service ${EXTRA[*]}}"
    CLUSTER_DIR="$CLUSTER_DIR" CLUSTER_PROFILE=release CHAT_JWT_SECRET="$SECRET" \
        CLUSTER_MSG_FLAGS="$EXTRA_FLAGS" RUST_LOG="${RUST_LOG:-warn}" "$CLUSTER_SH" up >/dev/null
    LB_URL="$(cat "$CLUSTER_DIR/lb.url")"
    PROCS=()
    local name
    for name in msg-service gateway1 gateway2 haproxy redis; do
        PROCS+=(--proc "$name=$(cat "$CLUSTER_DIR/$name.pid")")
    done
    METRICS=(--metrics-url "gateway1=$(sed -n 's/^gw1=//p' "$CLUSTER_DIR/endpoints")"
             --metrics-url "gateway2=$(sed -n 's/^gw2=//p' "$CLUSTER_DIR/endpoints")")
    echo "== cluster up: load balancer $LB_URL; $(tr '\n' ' ' <"$CLUSTER_DIR/endpoints")"
}

stop_cluster() {
    [[ -n "$CLUSTER_DIR" ]] || return 0
    CLUSTER_DIR="$CLUSTER_DIR" "$CLUSTER_SH" down || true
    local name
    for name in gateway1 gateway2 msg-service haproxy; do
        if [[ -s "$CLUSTER_DIR/$name.log" ]]; then
            echo "== $name log (last 10 lines)"
            tail -n 10 "$CLUSTER_DIR/$name.log"
        fi
    done
    rm -rf "$CLUSTER_DIR"
    CLUSTER_DIR=""
}

run_cluster() {  # run_cluster OUT
    start_cluster
    local status=0
    "$PY" "$BENCH_DIR/bench.py" "${ARGS[@]}" --target cluster --url "ws://${LB_URL#http://}/v1/ws" \
        "${PROCS[@]}" "${METRICS[@]}" --secret "$SECRET" --command "$COMMAND" ${1:+--out "$1"} || status=$?
    stop_cluster
    return "$status"
}

cleanup() {
    stop_single
    stop_cluster
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- run
case "$TARGET" in
    single) run_single "" ;;
    cluster) run_cluster "" ;;
    both)
        echo "== 1/2: single-machine gateway"
        run_single "$WORK/single.json"
        sleep 2
        echo "== 2/2: cluster"
        run_cluster "$WORK/cluster.json"
        "$PY" "$BENCH_DIR/bench.py" "${ARGS[@]}" --command "$COMMAND" \
            --compare "$WORK/single.json" "$WORK/cluster.json"
        ;;
esac
