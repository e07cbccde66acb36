#!/usr/bin/env bash
# Builds the CUDA agent (cargo feature `cuda`) on a machine WITHOUT a GPU or a
# system CUDA install, in one of three variants:
#
#   variant  artefact                           toolkit   CUDA_COMPUTE_CAP  runs on
#   fleet    fleetbench-agent-cuda12-sm80       CUDA 12   80                A100, A10, L4, L40S, H100, H200 (sm_80 and newer), driver R535 or newer
#   turing   fleetbench-agent-cuda12-sm75       CUDA 12   75                T4 (sm_75) and newer, driver R535 or newer; no bf16
#   lab      fleetbench-agent-cuda13-sm80-lab   CUDA 13.0 80                DEVELOPMENT ONLY, not shipped: the lent H100/H200
#                                                                           test machine, driver R580, whose only CUDA libraries
#                                                                           are the CUDA 13 ones inside PyTorch's wheels
#
# The coordinator (`fleetbench`) is not built here: it needs no CUDA (fleets
# run the CPU build, `cargo build --release -p fleetbench-coordinator`), and a
# CUDA demo binary does not fit beside the lab agent in the lent machine's
# 64 MiB carry limit (agent 56 MiB, coordinator 62 MiB, both stripped).
#
#   deploy/cuda/build.sh [build|check] [fleet|turing|lab] [OUT_DIR]
#     build (default): release build of the agent, stripped, copied to OUT_DIR
#                      (default .gpu/) under the artefact's name, kernels listed
#     check:           `cargo check --features cuda` only (no cuBLAS/cuRAND needed)
#   deploy/cuda/build.sh check all   # check fleet, then turing: what CI runs
#   The variant defaults to fleet (`build.sh check` = `build.sh check fleet`).
#
# Why these toolkits (measured; see deploy/README.md, "GPU agent builds"):
#   - A driver JITs PTX only up to its own PTX ISA: R535 = CUDA 12.2 = ISA 8.2,
#     R550 = 8.4, R570 = 8.7, R580 = 9.0. candle-kernels ships PTX, so the
#     PTX's `.version` sets the oldest driver a build runs on.
#   - No CUDA 12 `nvcc` exists on PyPI: the `nvidia-cuda-nvcc-cu12` wheels
#     (12.0 to 12.9) hold only ptxas, libnvvm and headers. The only CUDA 12
#     nvcc in reach is Debian's nvidia-cuda-toolkit 12.4.131 (trixie,
#     non-free), which writes ISA 8.4 (R550+). So the CUDA 12 toolkit here is:
#       nvcc, cicc, cudafe++, fatbinary, nvlink (and cuobjdump) from Debian's
#       nvidia-cuda-toolkit 12.4.131; ptxas, libdevice and headers from the
#       matching 12.4 wheels; the libraries linked against (build mode only)
#       from the CUDA 12.2 wheels, R535's own version, so the link itself
#       fails if anything needs newer ones; libcuda.so from Debian's libcuda1.
#     and deploy/cuda/rustc-ptx-floor.sh, as RUSTC_WRAPPER, relabels
#     candle-kernels' PTX from `.version 8.4` to 8.2 just before rustc embeds
#     it, and fails the build unless CUDA 12.2's own ptxas (the compiler
#     inside the R535 driver's JIT, from nvidia-cuda-nvcc-cu12 12.2.140)
#     accepts every file for every target card. CUDARC_CUDA_VERSION=12020
#     keeps cudarc to the CUDA 12.2 driver and library API.
#     FLEETBENCH_PTX_ISA=off skips the relabelling: the build then needs R550.
#   - lab: nvcc 13.0 exactly, because the lent machine's driver (580) rejects
#     PTX from nvcc 13.1 or newer.
#
# Each toolkit is unpacked once under ~/.cache/fleetbench/ (cuda-12.4 serves
# fleet and turing, cuda-13.0 serves lab; FLEETBENCH_CUDA_DIR puts both in
# one folder of your choice),
# each variant has its own cargo target directory
# (~/.cache/fleetbench/target-cuda-<variant>, or FLEETBENCH_CUDA_TARGET_DIR),
# so switching variants never redoes another one's nvcc step. Every mode puts
# the variant's nvcc first on PATH and exports CUDA_COMPUTE_CAP: cudarc's and
# the agent's build scripts read both.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

usage() {
  echo "usage: deploy/cuda/build.sh [build|check] [fleet|turing|lab] [OUT_DIR]" >&2
  echo "       deploy/cuda/build.sh check all" >&2
  exit 2
}

mode=${1:-build}
variant=${2:-fleet}
out=${3:-.gpu}
case "$mode" in build|check) ;; *) usage ;; esac

if [ "$variant" = all ]; then
  if [ "$mode" != check ] || [ $# -gt 2 ]; then usage; fi
  for v in fleet turing; do
    echo "== deploy/cuda/build.sh check $v"
    bash "$0" check "$v"
  done
  exit 0
fi

cache=$HOME/.cache/fleetbench
case "$variant" in
  fleet)  cuda=12 cap=80 artefact=fleetbench-agent-cuda12-sm80 ;;
  turing) cuda=12 cap=75 artefact=fleetbench-agent-cuda12-sm75 ;;
  lab)    cuda=13 cap=80 artefact=fleetbench-agent-cuda13-sm80-lab ;;
  *) echo "deploy/cuda/build.sh: unknown variant '$variant'" >&2; usage ;;
esac

if [ "$cuda" = 12 ]; then
  toolkit=${FLEETBENCH_CUDA_DIR:-$cache/cuda-12.4}
  cuda_home="$toolkit/cuda"
  # Compiler side (check and build): 12.4, matching Debian's nvcc.
  debian_nvcc_version=12.4.131
  compile_wheels=(
    nvidia-cuda-nvcc-cu12==12.4.131 nvidia-cuda-runtime-cu12==12.4.127
    nvidia-cuda-cccl-cu12==12.4.127.post1
  )
  # CUDA 12.2's ptxas: the PTX verifier (R535's JIT is this compiler).
  verifier_wheel=nvidia-cuda-nvcc-cu12==12.2.140
  # Linked against (build only): CUDA 12.2, R535's own version.
  link_wheels=(
    nvidia-cuda-runtime-cu12==12.2.140 nvidia-cuda-nvrtc-cu12==12.2.140
    nvidia-cublas-cu12==12.2.5.6 nvidia-curand-cu12==10.3.3.141
  )
  lib_major=12
else
  toolkit=${FLEETBENCH_CUDA_DIR:-$cache/cuda-13.0}
  cuda_home="$toolkit/nvidia/cu13"
  # 13.0 exactly: the 580-series drivers reject PTX from newer nvcc.
  compile_wheels=(
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
  )
  link_wheels=(nvidia-cuda-nvrtc==13.0.88 nvidia-curand==10.4.0.35 nvidia-cublas==13.1.1.3)
  lib_major=13
fi

pip_download() {  # DEST WHEEL...
  local dest=$1
  shift
  mkdir -p "$dest"
  python3 -m pip download -q --no-deps --only-binary=:all: \
    --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 -d "$dest" "$@"
}

unzip_all() {  # DEST WHEEL_FILE...
  local dest=$1 w
  shift
  for w in "$@"; do python3 -m zipfile -e "$w" "$dest"; done
}

# CUDA 12 wheels unpack into one folder per package (nvidia/cuda_runtime/,
# nvidia/cublas/, ...): merge the given parts (bin, include, lib, nvvm) of
# each into CUDA_HOME.
merge_cu12() {  # UNPACKED_DIR PART...
  local from=$1 pkg part
  shift
  for pkg in "$from"/nvidia/*/; do
    for part in "$@"; do
      if [ -d "$pkg$part" ]; then mkdir -p "$cuda_home/$part" && cp -a "$pkg$part/." "$cuda_home/$part/"; fi
    done
  done
  find "$cuda_home" \( -name __init__.py -o -name __pycache__ \) -prune -exec rm -rf {} +
}

# Debian packages through a private apt configuration (the system's sources
# stay as they are): the system's own suites with contrib and non-free, plus
# trixie's non-free (where nvidia-cuda-toolkit 12.4 is). Sets $apt_dir.
apt_download() {  # PACKAGE_SPEC...
  apt_dir=$(mktemp -d)
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/etc/sources.list.d"
  sed -e 's/^Components:.*/Components: main contrib non-free/' /etc/apt/sources.list.d/debian.sources \
    > "$apt_dir/etc/sources.list.d/debian.sources"
  cat > "$apt_dir/etc/sources.list.d/trixie-non-free.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Downloads as root, into this private folder (apt's _apt user cannot
  # write there, and would only be a fallback with a warning).
  local apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/etc/sources.list.d"
                  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
                  -o "APT::Sandbox::User=root")
  apt-get "${apt_opts[@]}" update -qq
  (cd "$apt_dir" && apt-get "${apt_opts[@]}" download "$@" >/dev/null)
}

# The linker looks for unversioned names.
link_unversioned() {
  local lib target
  # shellcheck disable=SC2012 # fixed ASCII library names: ls | sort is safe
  (cd "$cuda_home/lib" && for lib in cublas cublasLt cudart nvrtc curand; do
     target=$(ls "lib$lib.so."* 2>/dev/null | sort | head -n 1)
     [ -n "$target" ] && ln -sf "$target" "lib$lib.so"
   done)
}

# ---------------------------------------------------------------- compiler
if [ ! -e "$toolkit/.compiler-ok-cuda$cuda" ]; then
  echo "== fetching the CUDA $cuda compiler into $toolkit"
  rm -rf "$toolkit/wheels" "$toolkit/unpacked" "$cuda_home"
  pip_download "$toolkit/wheels" "${compile_wheels[@]}"
  if [ "$cuda" = 12 ]; then
    unzip_all "$toolkit/unpacked" "$toolkit"/wheels/*.whl
    mkdir -p "$cuda_home/bin" "$cuda_home/nvvm/bin"
    merge_cu12 "$toolkit/unpacked" bin include lib nvvm
    # The 12.4 runtime wheel is here for its headers; the libraries linked
    # against are 12.2's (below).
    rm -f "$cuda_home"/lib/libcudart.so*
    apt_download "nvidia-cuda-toolkit/trixie"
    deb=$(echo "$apt_dir"/nvidia-cuda-toolkit_*.deb)
    got=$(dpkg-deb -f "$deb" Version)
    case "$got" in
      "$debian_nvcc_version"~*) ;;
      *) echo "deploy/cuda/build.sh: Debian's nvidia-cuda-toolkit is now $got, not $debian_nvcc_version: update the 12.x wheels above to match, and check the PTX ISA it writes" >&2
         exit 1 ;;
    esac
    dpkg -x "$deb" "$apt_dir/root"
    tk=$apt_dir/root/usr/lib/nvidia-cuda-toolkit
    cp -a "$tk/bin/nvcc" "$tk/bin/crt" "$cuda_home/bin/"
    cp -a "$tk/bin/cicc" "$cuda_home/nvvm/bin/"
    for b in cudafe++ fatbinary nvlink bin2c nvprune cuobjdump; do cp -a "$apt_dir/root/usr/bin/$b" "$cuda_home/bin/"; done
    # NVIDIA's layout (Debian's profile points into /usr).
    cat > "$cuda_home/bin/nvcc.profile" <<'EOF'
TOP                = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
LD_LIBRARY_PATH   += $(TOP)/lib:
PATH              += $(TOP)/nvvm/bin:$(_HERE_):
INCLUDES          += "-I$(TOP)/include" $(_SPACE_)
LIBRARIES         =+ $(_SPACE_) "-L$(TOP)/lib/stubs" "-L$(TOP)/lib"
CUDAFE_FLAGS      +=
PTXAS_FLAGS       +=
EOF
    ln -sfn lib "$cuda_home/lib64"
    rm -rf "$apt_dir"
    # CUDA 12.2's ptxas, kept apart: it only verifies the PTX.
    pip_download "$toolkit/verifier" "$verifier_wheel"
    unzip_all "$toolkit/verifier/unpacked" "$toolkit"/verifier/*.whl
    mkdir -p "$toolkit/ptxas-12.2"
    mv "$toolkit/verifier/unpacked/nvidia/cuda_nvcc/bin/ptxas" "$toolkit/ptxas-12.2/ptxas"
    chmod +x "$toolkit/ptxas-12.2/ptxas"
    rm -rf "$toolkit/verifier"
  else
    unzip_all "$toolkit" "$toolkit"/wheels/*.whl
  fi
  rm -rf "$toolkit/wheels" "$toolkit/unpacked"
  # Unzipping drops the executable bits.
  chmod +x "$cuda_home"/bin/* "$cuda_home"/nvvm/bin/*
  touch "$toolkit/.compiler-ok-cuda$cuda"
fi

# ---------------------------------------------------------------- libraries (build only)
if [ "$mode" = build ] && [ ! -e "$toolkit/.libraries-ok-cuda$cuda" ]; then
  echo "== fetching the CUDA $cuda libraries (cuBLAS, cuRAND, NVRTC, runtime) into $toolkit"
  rm -rf "$toolkit/wheels" "$toolkit/unpacked"
  pip_download "$toolkit/wheels" "${link_wheels[@]}"
  if [ "$cuda" = 12 ]; then
    unzip_all "$toolkit/unpacked" "$toolkit"/wheels/*.whl
    # Only their libraries: the headers stay 12.4's, nvcc's own.
    merge_cu12 "$toolkit/unpacked" lib
  else
    unzip_all "$toolkit" "$toolkit"/wheels/*.whl
  fi
  rm -rf "$toolkit/wheels" "$toolkit/unpacked"
  link_unversioned

  echo "== fetching libcuda.so (link-time only) from Debian's non-free libcuda1"
  # The system's release: R535 on Debian 12, the oldest driver the CUDA 12
  # builds support, so the link fails if anything needs a newer driver API.
  codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
  apt_download "libcuda1/$codename"
  dpkg -x "$apt_dir"/libcuda1_*.deb "$apt_dir/root"
  mkdir -p "$cuda_home/lib/stubs"
  # Debian keeps it under nvidia/current/ (alternatives pick the driver).
  find "$apt_dir/root" -name 'libcuda.so*' \( -type f -o -type l \) -exec cp -a {} "$cuda_home/lib/stubs/" \;
  # shellcheck disable=SC2012 # fixed ASCII library names: ls is safe
  (cd "$cuda_home/lib/stubs" && { [ -e libcuda.so ] || ln -sf "$(ls libcuda.so.* | head -n 1)" libcuda.so; })
  rm -rf "$apt_dir"
  touch "$toolkit/.libraries-ok-cuda$cuda"
fi

# ---------------------------------------------------------------- environment
if [ -n "${CUDA_COMPUTE_CAP:-}" ] && [ "$CUDA_COMPUTE_CAP" != "$cap" ]; then
  echo "note: CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP ignored: the $variant variant is compute $cap" >&2
fi
export CUDA_COMPUTE_CAP=$cap
# candle-kernels' build script (cudaforge) runs nvcc on half the cores by
# default: one job on a 2-core machine. All of them: its nvcc step (most of a
# cold check) went from 424 s to 265 s on 2 cores (fleet, measured).
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
export CUDA_HOME="$cuda_home" CUDA_PATH="$cuda_home" NVCC="$cuda_home/bin/nvcc"
export PATH="$cuda_home/bin:$PATH"
export LIBRARY_PATH="$cuda_home/lib:$cuda_home/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$cuda_home/lib:$cuda_home/lib/stubs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Its own target directory per variant, whatever CARGO_TARGET_DIR says: CUDA
# artefacts must neither evict nor be mistaken for the CPU build's or another
# variant's.
export CARGO_TARGET_DIR="${FLEETBENCH_CUDA_TARGET_DIR:-$cache/target-cuda-$variant}"
if [ "$cuda" = 12 ]; then
  export CUDARC_CUDA_VERSION=12020
  if [ "${FLEETBENCH_PTX_ISA:-8.2}" != off ]; then
    export FLEETBENCH_PTX_ISA="${FLEETBENCH_PTX_ISA:-8.2}"
    export FLEETBENCH_PTX_VERIFIER="$toolkit/ptxas-12.2/ptxas"
    if [ "$cap" = 80 ]; then
      export FLEETBENCH_PTX_ARCHS="sm_80 sm_86 sm_89 sm_90"   # A100; A10; L4, L40S; H100, H200
    else
      export FLEETBENCH_PTX_ARCHS="sm_$cap"
    fi
    export FLEETBENCH_INNER_RUSTC_WRAPPER="${RUSTC_WRAPPER:-}"
    export RUSTC_WRAPPER="$repo/deploy/cuda/rustc-ptx-floor.sh"
  fi
fi
echo "== $variant: CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, $(command -v nvcc): $(nvcc --version | tail -n 2 | head -n 1)," \
  "target dir $CARGO_TARGET_DIR${FLEETBENCH_PTX_ISA:+, PTX relabelled to ISA $FLEETBENCH_PTX_ISA and verified by ptxas 12.2 for ${FLEETBENCH_PTX_ARCHS:-}}"

# Lists the kernels a binary carries: candle-kernels' embedded PTX (.version
# = PTX ISA, .target = compute capability), and the compiled (SASS) kernels
# of the statically linked libmoe.a.
list_kernels() {  # BINARY
  echo "embedded PTX (count, directive):"
  strings -n 8 "$1" | grep -E '^\.(version|target) ' | sort | uniq -c | sed 's/^/  /'
  # The CUDA 13 wheels have no cuobjdump; the CUDA 12 toolkit's reads both.
  local cuobjdump
  for cuobjdump in "$cuda_home/bin/cuobjdump" "$cache/cuda-12.4/cuda/bin/cuobjdump" ""; do
    [ -z "$cuobjdump" ] || [ -x "$cuobjdump" ] && break
  done
  if [ -n "$cuobjdump" ]; then
    echo "compiled kernels (cuobjdump --list-elf: count, card):"
    "$cuobjdump" --list-elf "$1" 2>&1 | grep -o -E 'sm_[0-9]+[a-z]?' | sort | uniq -c | sed 's/^/  /'
  fi
}

case "$mode" in
  check)
    cargo check --locked -p fleetbench-agent -p fleetbench-coordinator --features cuda
    ;;
  build)
    cargo build --locked --release -p fleetbench-agent --features cuda
    mkdir -p "$out"
    install -m 0755 "$CARGO_TARGET_DIR/release/fleetbench-agent" "$out/$artefact"
    strip "$out/$artefact"
    ls -la "$out/$artefact"
    list_kernels "$out/$artefact"
    echo "needs at run time (besides the driver's libcuda.so.1):"
    ldd "$out/$artefact" | grep -E 'libcu|libnvrtc' | grep -v libcuda.so | sed 's/^/ /' || true
    echo "on the GPU host: LD_LIBRARY_PATH must hold the CUDA $lib_major libraries above (libcudart, libcublas, libcublasLt, libcurand; e.g. the nvidia/cuda runtime image's, or the wheels')"
    ;;
esac
