# syntax=docker/dockerfile:1
#
# The CUDA agent image: fleetbench-agent built with candle's CUDA backend
# (cargo feature `cuda`) on NVIDIA's CUDA 13.0 devel image, run on the
# matching runtime image. Build it from the repository root:
#
#   docker build -f deploy/docker/agent.Dockerfile -t fleetbench-agent:0.1.0 .
#   docker build -f deploy/docker/agent.Dockerfile --build-arg CUDA_COMPUTE_CAP=80 -t fleetbench-agent:0.1.0-sm80 .
#
# BuildKit reads deploy/docker/agent.Dockerfile.dockerignore (beside this
# file) as the build context's ignore list, so target/ and bench/.venv stay out
# of the context without a .dockerignore at the root.
#
# libcuda.so.1 and NVML (libnvidia-ml.so.1) are NOT in the image: the NVIDIA
# Container Toolkit mounts the host driver's copies at start, as asked by the
# NVIDIA_* variables below (on Kubernetes, the device plugin and the `nvidia`
# runtime class do the same). Run it with:
#
#   docker run --rm --gpus all fleetbench-agent:0.1.0 info
#   docker run -d --gpus all -e FLEETBENCH_COORDINATOR=https://coord:7070 ... fleetbench-agent:0.1.0
#
# CUDA 13.0 exactly: the 580-series drivers reject PTX from newer nvcc.
ARG CUDA_VERSION=13.0.2
ARG UBUNTU_VERSION=24.04

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build
# Must match rust-version in Cargo.toml (or be newer).
ARG RUST_VERSION=1.95.0
# 90 = H100/H200 kernels only; 80 gives PTX that every newer card JITs (A100,
# L40S, H100, B200...). Without a GPU in the build, candle needs it spelled out.
ARG CUDA_COMPUTE_CAP=90
ARG CARGO_FEATURES=cuda
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A C compiler for the bundled SQLite and the build scripts, rustup from
# Ubuntu's own archive (it then fetches the pinned toolchain). DL3008 (pin apt
# versions) is ignored on purpose: the base image tag pins the Ubuntu release,
# and the archive drops superseded versions, so exact pins break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates pkg-config rustup \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/opt/rustup \
    CARGO_HOME=/opt/cargo \
    CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP} \
    CUDA_HOME=/usr/local/cuda \
    CUDA_PATH=/usr/local/cuda
RUN rustup toolchain install "${RUST_VERSION}" --profile minimal \
 && rustup default "${RUST_VERSION}" \
 && rustup run "${RUST_VERSION}" rustc --version
WORKDIR /src
COPY . .
# The cache mounts keep crates and the target directory between builds; the
# binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/opt/cargo/registry \
    --mount=type=cache,target=/src/target \
    nvcc --version | tail -n 2 \
 && rustup run "${RUST_VERSION}" cargo build --release --locked -p fleetbench-agent --features "${CARGO_FEATURES}" \
 && install -D -m 0755 target/release/fleetbench-agent /out/fleetbench-agent \
 && strip /out/fleetbench-agent

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION}
ARG CUDA_VERSION
# The runtime image brings libcudart, libcublas(Lt) and libcurand of the same
# CUDA version; the toolkit adds the driver's libcuda and NVML (utility).
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    FLEETBENCH_SPOOL=/var/lib/fleetbench-agent/spool \
    HF_HOME=/var/cache/fleetbench/huggingface \
    CUDA_CACHE_PATH=/var/cache/fleetbench/cuda \
    RUST_LOG=info
RUN groupadd --system --gid 10001 fleetbench \
 && useradd --system --uid 10001 --gid fleetbench --home-dir /var/lib/fleetbench-agent --shell /usr/sbin/nologin fleetbench \
 && install -d -o fleetbench -g fleetbench -m 0750 /var/lib/fleetbench-agent /var/lib/fleetbench-agent/spool \
 && install -d -o fleetbench -g fleetbench -m 0750 /var/cache/fleetbench /var/cache/fleetbench/huggingface /var/cache/fleetbench/cuda
COPY --from=build /out/fleetbench-agent /usr/local/bin/fleetbench-agent
LABEL org.opencontainers.image.title="fleetbench-agent" \
      org.opencontainers.image.description="fleetbench agent: DistilBERT inference sweeps on NVIDIA GPUs (CUDA ${CUDA_VERSION})" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /var/lib/fleetbench-agent
ENTRYPOINT ["/usr/local/bin/fleetbench-agent"]
CMD ["run"]
