#!/usr/bin/env bash
# Side-by-side CPU benchmark: the agent's DistilBERT forward pass (candle,
# `--engine fleetbench`) against PyTorch eager (transformers'
# DistilBertForSequenceClassification, torch.inference_mode), in one run on one
# machine, on the SAME weights: a distilbert-base-uncased-sized model with
# seeded random weights, saved once as safetensors and loaded by both.
#
#   bench/pytorch_vs_candle.sh [ROUNDS] [ITERATIONS]      (defaults 3 and 5)
#
# Environment knobs: THREADS (default: the physical core count), BATCH_SIZES
# (default 1,8,32), SEQ_LEN (128), WARMUP (2), KEEP_MODEL=1 keeps the model dir,
# BASELINE_AGENT=PATH runs another agent build (e.g. from before a change) in
# the same alternation and adds its ratios to the table, DTYPE=f32|bf16|f16
# (f32) the precision of both engines (PyTorch: model.to(dtype)).
# A full default run takes about 5 minutes on 2 cores once the venv exists
# (its first set-up downloads about 2.7 GB).
#
# PyTorch is installed into bench/.venv (git-ignored, about 4.3 GB), never
# needed by the tests. Only PyPI is reachable here, and PyPI has no CPU-only
# torch for Linux x86-64: its wheel (about 540 MB, with MKL and oneDNN inside)
# is the CUDA build, and even libtorch_cpu.so is linked against libcudart and
# libcupti, so `import torch` fails without the CUDA runtime libraries. The
# script therefore installs torch with --no-deps, its pure-Python dependencies,
# and only the CUDA libraries torch's shared objects are linked against (about
# 2 GB of downloads), leaving out triton, cuSOLVER, cuda-bindings and the rest
# (another ~1 GB); nothing CUDA is used at run time. If that import ever fails
# (another torch version), it falls back to a plain `pip install torch`.
#
# Steps: build the agent; write the model; check both engines give the same
# logits on real sentences (max abs diff < 1e-3); then ROUNDS rounds, each
# running every batch size on one engine and then on the other, with the order
# flipped every round; finally a Markdown table of median samples/s.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
iterations=${2:-5}

torch_version=2.15.0
# The CUDA libraries torch 2.15.0's libraries are linked against (readelf -d
# .../torch/lib/*.so | grep NEEDED), at the versions its cuda-toolkit pins.
torch_cuda_libs=(
  nvidia-cuda-runtime==13.2.86 nvidia-cuda-cupti==13.2.86 nvidia-cuda-nvrtc==13.2.86
  nvidia-cublas==13.4.1.3 nvidia-cufft==12.2.0.57 nvidia-cufile==1.17.1.22
  nvidia-cusparse==12.7.10.12 nvidia-nvjitlink==13.5.37 nvidia-cusparselt-cu13==0.8.1
  nvidia-cudnn-cu13==9.26.0.51 nvidia-nccl-cu13==2.30.7 nvidia-nvshmem-cu13==3.7.2
)
venv=bench/.venv
py="$venv/bin/python"
pip=("$py" -m pip install -q --progress-bar off --no-warn-conflicts)

if ! "$py" -c "import torch, transformers, safetensors" 2>/dev/null; then
  echo "== setting up $venv: torch $torch_version (CPU use), transformers, safetensors" >&2
  python3 -m venv "$venv"
  "${pip[@]}" typing-extensions sympy networkx jinja2 fsspec filelock "setuptools>=77.0.3" numpy
  "${pip[@]}" --no-deps "torch==$torch_version" "${torch_cuda_libs[@]}"
  if ! "$py" -c "import torch" 2>/dev/null; then
    echo "== torch does not import with the trimmed set; installing it with all its dependencies" >&2
    "${pip[@]}" "torch==$torch_version"
  fi
  # transformers does not depend on torch; the rest comes from PyPI as usual.
  "${pip[@]}" "transformers>=5,<6" safetensors
fi
"$py" -c 'import torch; print(f"== torch {torch.__version__}: CPU capability {torch.backends.cpu.get_cpu_capability()}, MKL {torch.backends.mkl.is_available()}, oneDNN {torch.backends.mkldnn.is_available()}, CUDA in use: no")'

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleetbench/target}"
cargo build --release -q -p fleetbench-agent
agent="$CARGO_TARGET_DIR/release/fleetbench-agent"

# Same thread count for both engines: the physical cores.
physical=$(lscpu -p=core,socket | grep -v '^#' | sort -u | wc -l)
threads=${THREADS:-$physical}

work=$(mktemp -d)
if [[ "${KEEP_MODEL:-0}" == 1 ]]; then
  echo "keeping $work" >&2
else
  trap 'rm -rf "$work"' EXIT
fi

flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx512f|avx512_bf16|avx512_fp16|amx_.*)$' | paste -sd' ' || true)
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $physical physical cores," \
  "$(nproc) CPUs, flags: ${flags:-none of avx512f/avx512_bf16/amx}; $threads threads per engine"
echo "== load before: $(uptime)"
"$py" bench/pytorch_reference.py make-model "$work/model" \
  --tokenizer testdata/tiny-distilbert-sst2/tokenizer.json
dtype=${DTYPE:-f32}
# Half precisions round differently in each engine: the logits check's
# tolerance follows the golden tests' (agent/tests/golden.rs).
case $dtype in f32) tol=1e-3 ;; *) tol=1e-1 ;; esac
"$py" bench/pytorch_reference.py check "$work/model" --agent "$agent" --threads "$threads" \
  --dtype "$dtype" --tol "$tol"
"$py" bench/pytorch_reference.py compare "$work/model" --agent "$agent" \
  --threads "$threads" --rounds "$rounds" --iterations "$iterations" \
  --warmup "${WARMUP:-2}" --batch-sizes "${BATCH_SIZES:-1,8,32}" \
  --seq-len "${SEQ_LEN:-128}" --work "$work/runs" --dtype "$dtype" \
  ${BASELINE_AGENT:+--baseline-agent "$BASELINE_AGENT"}
