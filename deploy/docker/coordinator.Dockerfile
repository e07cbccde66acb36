# syntax=docker/dockerfile:1
#
# The coordinator image: `fleetbench` (server and operator CLI), CPU only,
# on a slim Debian. Build it from the repository root:
#
#   docker build -f deploy/docker/coordinator.Dockerfile -t fleetbench-coordinator:0.1.0 .
#
# BuildKit reads deploy/docker/coordinator.Dockerfile.dockerignore (beside
# this file) as the build context's ignore list.
#
# It listens on 0.0.0.0:7070 (gRPC) and serves Prometheus metrics on
# 0.0.0.0:9464; without TLS the coordinator refuses a non-loopback address
# unless told `--insecure`:
#
#   fleetbench dev-certs certs --san coordinator.example   # or your own CA
#   docker run -d -p 7070:7070 -p 9464:9464 -v fleetbench-data:/var/lib/fleetbench \
#     -v "$PWD/certs:/etc/fleetbench/certs:ro" \
#     -e FLEETBENCH_TLS_CERT=/etc/fleetbench/certs/coordinator.pem \
#     -e FLEETBENCH_TLS_KEY=/etc/fleetbench/certs/coordinator-key.pem \
#     fleetbench-coordinator:0.1.0 serve \
#     --agent-token-file /etc/fleetbench/certs/agent.token \
#     --operator-token-file /etc/fleetbench/certs/operator.token
#
# (the files under certs/ must be readable by uid 10001).
ARG RUST_VERSION=1.95.0
ARG DEBIAN_SUITE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_SUITE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
# rust:*-slim has gcc and libc6-dev, all that the bundled SQLite needs; gRPC
# code is generated without protoc. The cache mounts keep crates and the
# target directory between builds. --no-default-features leaves out the
# demo's in-process agent, and with it candle, tokenizers and NVML: the
# coordinator and the operator CLI need none of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p fleetbench-coordinator --no-default-features --bin fleetbench \
 && install -D -m 0755 target/release/fleetbench /out/fleetbench \
 && strip /out/fleetbench

FROM debian:${DEBIAN_SUITE}-slim
ENV FLEETBENCH_LISTEN=0.0.0.0:7070 \
    FLEETBENCH_DATA=/var/lib/fleetbench \
    FLEETBENCH_METRICS_LISTEN=0.0.0.0:9464 \
    RUST_LOG=info
RUN groupadd --system --gid 10001 fleetbench \
 && useradd --system --uid 10001 --gid fleetbench --home-dir /var/lib/fleetbench --shell /usr/sbin/nologin fleetbench \
 && install -d -o fleetbench -g fleetbench -m 0750 /var/lib/fleetbench
COPY --from=build /out/fleetbench /usr/local/bin/fleetbench
LABEL org.opencontainers.image.title="fleetbench-coordinator" \
      org.opencontainers.image.description="fleetbench coordinator: fleet inventory, sweeps, results store, reports, Prometheus metrics" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /var/lib/fleetbench
VOLUME ["/var/lib/fleetbench"]
# 7070: gRPC (agents and operators); 9464: HTTP GET /metrics.
EXPOSE 7070 9464
ENTRYPOINT ["/usr/local/bin/fleetbench"]
CMD ["serve"]
