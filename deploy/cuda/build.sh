#!/usr/bin/env bash
# Builds the CUDA agent (cargo feature `cuda`) on a machine WITHOUT a GPU or a
# system CUDA install, as measured in the shared gpu/README:
#   - nvcc and the CUDA 13.0 libraries come from NVIDIA's PyPI wheels, unpacked
#     into one folder (no root install); 13.0 exactly, because the 580-series
#     drivers reject PTX from newer nvcc;
#   - libcuda.so (needed only to link; the real one comes from the driver on
#     the GPU host) comes from Debian's non-free `libcuda1` package, fetched
#     through a private apt configuration so the system's sources stay as
#     they are.
#
#   deploy/cuda/build.sh [build|check] [OUT_DIR]
#     build (default): release build of fleetbench-agent and fleetbench (demo),
#                      stripped, copied to OUT_DIR (default .gpu/)
#     check:           `cargo check --features cuda` only (what CI runs)
#
# Environment: CUDA_COMPUTE_CAP (default 90 = H100/H200; 80 gives PTX every
# newer card can JIT), FLEETBENCH_CUDA_DIR (toolkit cache, default
# ~/.cache/fleetbench/cuda-13.0), FLEETBENCH_CUDA_TARGET_DIR (default
# ~/.cache/fleetbench/target-cuda).
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-build}
out=${2:-.gpu}
toolkit=${FLEETBENCH_CUDA_DIR:-$HOME/.cache/fleetbench/cuda-13.0}
cuda_home="$toolkit/nvidia/cu13"

wheels=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
  nvidia-curand==10.4.0.35 nvidia-cublas==13.1.1.3
)

if [ ! -x "$cuda_home/bin/nvcc" ]; then
  echo "== fetching the CUDA 13.0 toolkit wheels into $toolkit"
  mkdir -p "$toolkit/wheels"
  python3 -m pip download -q --no-deps --only-binary=:all: \
    --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 \
    -d "$toolkit/wheels" "${wheels[@]}"
  for w in "$toolkit"/wheels/*.whl; do python3 -m zipfile -e "$w" "$toolkit"; done
  # Unzipping drops the executable bits.
  chmod +x "$cuda_home"/bin/* "$cuda_home"/nvvm/bin/*
  # The linker looks for unversioned names.
  # shellcheck disable=SC2012 # fixed ASCII library names: ls | sort is safe
  (cd "$cuda_home/lib" && for lib in cublas cublasLt cudart nvrtc curand; do
     target=$(ls "lib$lib.so."* 2>/dev/null | sort | head -n 1)
     [ -n "$target" ] && ln -sf "$target" "lib$lib.so"
   done)
fi

if [ ! -e "$cuda_home/lib/stubs/libcuda.so" ]; then
  echo "== fetching libcuda.so (link-time only) from Debian's non-free libcuda1"
  apt_dir=$(mktemp -d)
  chmod 755 "$apt_dir"   # apt's download user (_apt) must be able to write there
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/etc/sources.list.d"
  # The system's own Debian sources, with the components that hold libcuda1.
  sed -e 's/^Components:.*/Components: main contrib non-free/' /etc/apt/sources.list.d/debian.sources \
    > "$apt_dir/etc/sources.list.d/debian.sources"
  apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
            -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives")
  apt-get "${apt_opts[@]}" update -qq
  (cd "$apt_dir" && apt-get "${apt_opts[@]}" download libcuda1 >/dev/null)
  dpkg -x "$apt_dir"/libcuda1_*.deb "$apt_dir/root"
  mkdir -p "$cuda_home/lib/stubs"
  # Debian keeps it under nvidia/current/ (alternatives pick the driver).
  find "$apt_dir/root" -name 'libcuda.so*' \( -type f -o -type l \) -exec cp -a {} "$cuda_home/lib/stubs/" \;
  # shellcheck disable=SC2012 # fixed ASCII library names: ls is safe
  (cd "$cuda_home/lib/stubs" && { [ -e libcuda.so ] || ln -sf "$(ls libcuda.so.* | head -n 1)" libcuda.so; })
  rm -rf "$apt_dir"
fi

export CUDA_HOME="$cuda_home" CUDA_PATH="$cuda_home"
export PATH="$cuda_home/bin:$PATH"
export LIBRARY_PATH="$cuda_home/lib:$cuda_home/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$cuda_home/lib:$cuda_home/lib/stubs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
# Its own target directory, whatever CARGO_TARGET_DIR says: CUDA artifacts
# must neither evict nor be mistaken for the CPU build's.
export CARGO_TARGET_DIR="${FLEETBENCH_CUDA_TARGET_DIR:-$HOME/.cache/fleetbench/target-cuda}"
nvcc --version | tail -n 2

case "$mode" in
  check)
    cargo check --locked -p fleetbench-agent -p fleetbench-coordinator --features cuda
    ;;
  build)
    cargo build --locked --release -p fleetbench-agent --features cuda
    cargo build --locked --release -p fleetbench-coordinator --features cuda
    mkdir -p "$out"
    for b in fleetbench-agent fleetbench; do
      cp "$CARGO_TARGET_DIR/release/$b" "$out/$b"
      strip "$out/$b"
    done
    ls -la "$out"
    echo "on the GPU host: LD_LIBRARY_PATH must hold libcublas.so.13, libcublasLt.so.13, libcudart.so.13 and libcurand.so.10 (e.g. from the same wheels or PyTorch's)"
    ;;
  *)
    echo "usage: deploy/cuda/build.sh [build|check] [OUT_DIR]" >&2
    exit 2
    ;;
esac
