# syntax=docker/dockerfile:1
#
# The CUDA agent image: fleetbench-agent built with candle's CUDA backend
# (cargo feature `cuda`) on NVIDIA's CUDA 12.2 devel image, run on the
# matching runtime image. Two variants, as deploy/cuda/build.sh names them
# (deploy/README.md, "GPU agent builds"); build from the repository root:
#
#   # fleet (default): compute 8.0 PTX, JIT-compiled at load by A100, A10, L4, L40S, H100, H200
#   docker build -f deploy/docker/agent.Dockerfile -t fleetbench-agent:0.1.0 .
#   # turing: compute 7.5 for T4 (candle has no bf16 kernels below 8.0)
#   docker build -f deploy/docker/agent.Dockerfile --build-arg VARIANT=turing -t fleetbench-agent:0.1.0-cuda12-sm75 .
#
# CUDA 12.2 because R535 is the CUDA 12.2 driver: its nvcc writes PTX ISA 8.2,
# which every driver from R535 on JIT-compiles (R550, R570, R580 too), and the
# CUDA 12.2 libraries run on all of them. A newer CUDA_VERSION raises that
# floor (12.4: R550). NVIDIA deletes nvidia/cuda tags some months after their
# driver branch's end of life; without the 12.2 images, build the binaries
# with deploy/cuda/build.sh (same R535 floor) instead.
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
ARG CUDA_VERSION=12.2.2
ARG UBUNTU_VERSION=22.04
# Must match rust-version in Cargo.toml (or be newer).
ARG RUST_VERSION=1.95.0

# The Rust toolchain, copied from the official image (Ubuntu 22.04, the newest
# Ubuntu with CUDA 12.2 images, has no rustup package).
FROM rust:${RUST_VERSION}-slim-bookworm AS rust

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build
# fleet (compute 80) or turing (compute 75); see the top of this file.
ARG VARIANT=fleet
ARG CARGO_FEATURES=cuda
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A C compiler for the bundled SQLite and the build scripts. DL3008 (pin apt
# versions) is ignored on purpose: the base image tag pins the Ubuntu release,
# and the archive drops superseded versions, so exact pins break rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential ca-certificates pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY --from=rust /usr/local/rustup /usr/local/rustup
COPY --from=rust /usr/local/cargo /usr/local/cargo
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:${PATH} \
    CUDA_HOME=/usr/local/cuda \
    CUDA_PATH=/usr/local/cuda
WORKDIR /src
COPY . .
# Without a GPU in the build, candle needs the compute capability spelled
# out. The cache mounts keep crates and one target directory per variant
# between builds; the binary is copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    case "${VARIANT}" in \
      fleet) CUDA_COMPUTE_CAP=80 ;; \
      turing) CUDA_COMPUTE_CAP=75 ;; \
      *) echo "VARIANT must be fleet or turing, not '${VARIANT}'" >&2; exit 1 ;; \
    esac \
 && export CUDA_COMPUTE_CAP CARGO_TARGET_DIR="/src/target/${VARIANT}" \
 && nvcc --version | tail -n 2 \
 && cargo build --release --locked -p fleetbench-agent --features "${CARGO_FEATURES}" \
 && install -D -m 0755 "${CARGO_TARGET_DIR}/release/fleetbench-agent" /out/fleetbench-agent \
 && strip /out/fleetbench-agent

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION}
ARG CUDA_VERSION
ARG VARIANT=fleet
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
      org.opencontainers.image.description="fleetbench agent: DistilBERT inference sweeps on NVIDIA GPUs (CUDA ${CUDA_VERSION}, variant ${VARIANT}; driver R535 or newer)" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /var/lib/fleetbench-agent
ENTRYPOINT ["/usr/local/bin/fleetbench-agent"]
CMD ["run"]
