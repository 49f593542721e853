# syntax=docker/dockerfile:1.7
# The msg-service image (gRPC; owns every inbox: run exactly one). Build from
# the repository root:
#
#   docker build -f deploy/docker/msg-service.Dockerfile -t chat/msg-service:0.1.0 .
#
# Same stages and runtime base as gateway.Dockerfile (debian:bookworm-slim,
# non-root UID 10001). msg-service serves gRPC only, so its HEALTHCHECK is a
# TCP connect through bash's /dev/tcp (no extra tool needed).

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
RUN cargo chef cook --release --locked --recipe-path recipe.json -p msg-service
COPY . .
RUN cargo build --release --locked -p msg-service --bin msg-service \
    && install -m 0755 target/release/msg-service /usr/local/bin/msg-service

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 chat \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin chat \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=builder /usr/local/bin/msg-service /usr/local/bin/msg-service
USER 10001:10001
WORKDIR /data
# gRPC on every interface inside the container (the binary's default is
# loopback); the embedded store lives under /data: mount a volume there.
# mimalloc keeps the memory it frees instead of returning it to the OS
# (README, "Configuration"): the engine's memtables free and refill tens of
# MiB every few seconds, and returning and faulting that memory back cost
# ~5% of the CPU under sustained load.
ENV CHAT_MSG_LISTEN=0.0.0.0:9090 \
    CHAT_DATA_DIR=/data \
    MIMALLOC_PURGE_DELAY=-1 \
    RUST_LOG=info
EXPOSE 9090
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${CHAT_MSG_LISTEN##*:}"]
# Exec form: msg-service is PID 1, gets SIGTERM, stops gRPC and flushes the store.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/msg-service"]
