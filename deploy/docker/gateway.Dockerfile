# syntax=docker/dockerfile:1.7
# The gateway image (WebSocket + REST; with --msg-service and --redis it is a
# stateless gateway of the distributed mode, without them the whole
# single-machine server). Build from the repository root:
#
#   docker build -f deploy/docker/gateway.Dockerfile -t chat/gateway:0.1.0 .
#
# Stages: `chef` (toolchain + cargo-chef), `planner` (the dependency recipe),
# `builder` (dependencies compiled in their own layer, then the workspace),
# `runtime` (debian:bookworm-slim, non-root UID 10001, curl for HEALTHCHECK).
# The runtime stage is the same in msg-service.Dockerfile, so the two images
# share their base layers.

ARG RUST_VERSION=1.90
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# The dependency layer: rebuilt only when Cargo.toml/Cargo.lock change.
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json -p gateway
COPY . .
RUN cargo build --release --locked -p gateway --bin gateway \
    && install -m 0755 target/release/gateway /usr/local/bin/gateway

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 chat \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin chat \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=builder /usr/local/bin/gateway /usr/local/bin/gateway
USER 10001:10001
WORKDIR /data
# Listen on every interface inside the container; the data dir holds the
# embedded store and generated JWT secret in the single-machine mode only.
# mimalloc keeps the memory it frees instead of returning it to the OS
# (README, "Configuration"): the engine's memtables free and refill tens of
# MiB every few seconds, and returning and faulting that memory back cost
# ~5% of the CPU under sustained load.
ENV CHAT_LISTEN=0.0.0.0:8080 \
    CHAT_DATA_DIR=/data \
    MIMALLOC_PURGE_DELAY=-1 \
    RUST_LOG=info
EXPOSE 8080
VOLUME ["/data"]
# Liveness (the process answers), on the port CHAT_LISTEN names. /readyz is
# for load balancers: it turns 503 during a drain, which is not unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${CHAT_LISTEN##*:}/healthz" || exit 1
# Exec form: the gateway is PID 1 and receives SIGTERM itself (graceful drain).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/gateway"]
