#!/usr/bin/env bash
# The GPU check, in one call on a lent H100/H200 machine:
# a PREBUILT CUDA agent against nvidia-smi, Hugging Face transformers' golden
# logits and PyTorch eager on the same card, with one Markdown summary at the
# end (also written as OUT/summary.md). See bench/gpu/README.md.
#
#   bench/gpu/check.sh [--agent PATH | --agent-xz PATH.xz] [--out DIR] [--cpu | --gpu]
#                      [--golden FILE] [--gpu-min-seconds S] [--budget S]
#
#   --agent PATH        the agent binary (default: $CARGO_TARGET_DIR or
#                       ~/.cache/fleetbench/target, then target/, release/fleetbench-agent)
#   --agent-xz PATH     an xz-compressed agent: unpacked with python3's lzma into
#                       OUT/bin/ (removed again at the end unless KEEP_AGENT=1)
#   --out DIR           default $OUT if set, else bench/gpu/out
#   --cpu / --gpu       force the path; default: the GPU path when `nvidia-smi -L` answers
#   --golden FILE       the golden logits (default testdata/tiny-distilbert-sst2/golden.json)
#   --gpu-min-seconds S minimum timed seconds per GPU point for both engines (default
#                       2, or $GPU_MIN_SECONDS); passed to the agent as --gpu-min-seconds
#                       when its `bench --help` lists it, else as --min-seconds
#   --budget S          wall-clock budget (default 450 on a GPU, 110 on the CPU path):
#                       each step's timeout is cut to what is left, and steps
#                       that would start with under 5 s left are skipped
#
# Environment: PYTHON (default python3), GPU_INDEX (0), DTYPES, BATCH_SIZES,
# SEQ_LEN, WARMUP, ITERATIONS, ROUNDS (the GPU path's sweep settings), MATMUL_SIZE
# (8192; 1024 on the CPU path), KEEP_AGENT.
#
# Every step runs under its own `timeout` with its output in OUT/logs/STEP.log;
# a failed step is reported and the run goes on. Exit status: 0 when every step
# that ran passed, 1 when one failed, 2 on a usage error.
set -uo pipefail
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# Paths given on the command line (or in $OUT) are the caller's; the script works from the root.
from_caller() { if [[ -z $1 || $1 == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }

usage() { sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

agent=""
agent_xz=""
out=$(from_caller "${OUT:-}")
out=${out:-$root/bench/gpu/out}
mode=auto
golden=testdata/tiny-distilbert-sst2/golden.json
fixture=testdata/tiny-distilbert-sst2
gpu_min=${GPU_MIN_SECONDS:-2}
budget=""
py=${PYTHON:-python3}
gpu_index=${GPU_INDEX:-0}
while (($#)); do
  case $1 in
    --agent) agent=$(from_caller "${2:?--agent needs a path}"); shift 2 ;;
    --agent-xz) agent_xz=$(from_caller "${2:?--agent-xz needs a path}"); shift 2 ;;
    --out) out=$(from_caller "${2:?--out needs a folder}"); shift 2 ;;
    --cpu) mode=cpu; shift ;;
    --gpu) mode=gpu; shift ;;
    --golden) golden=$(from_caller "${2:?--golden needs a file}"); shift 2 ;;
    --gpu-min-seconds) gpu_min=${2:?--gpu-min-seconds needs a number}; shift 2 ;;
    --budget) budget=${2:?--budget needs seconds}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
cd "$root" || exit 2
if ! [[ $gpu_min =~ ^[0-9]+([.][0-9]+)?$ && ${budget:-1} =~ ^[0-9]+$ && $gpu_index =~ ^[0-9]+$ ]]; then
  echo "check.sh: --gpu-min-seconds takes a number of seconds, --budget whole seconds, GPU_INDEX an index" >&2
  exit 2
fi

if [[ $mode == auto ]]; then
  if command -v nvidia-smi >/dev/null 2>&1 && timeout 30 nvidia-smi -L >/dev/null 2>&1; then
    mode=gpu
  else
    mode=cpu
  fi
fi
if [[ $mode == gpu ]]; then
  budget=${budget:-450}
  device="cuda:$gpu_index"
  export CUDA_DEVICE_ORDER=PCI_BUS_ID # CUDA's ordinals follow nvidia-smi's indices
  golden_dtypes="f32 f16 bf16"
  seed_dtypes=${DTYPES:-f32 f16 bf16}
  compare_dtypes=$seed_dtypes
  batch_sizes=${BATCH_SIZES:-8,16,32,64,128}
  seq_len=${SEQ_LEN:-128}
  warmup=${WARMUP:-5}
  iterations=${ITERATIONS:-20}
  rounds=${ROUNDS:-2}
  sweep_limit=150 # seconds per agent or PyTorch run
else
  budget=${budget:-110}
  device=cpu
  golden_dtypes="f32 f16 bf16" # each under 1 s on 2 cores
  seed_dtypes="f32 bf16"
  compare_dtypes="f32"
  batch_sizes=1,2
  seq_len=128
  warmup=1
  iterations=2
  rounds=2
  sweep_limit=60
fi

mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
# Only what this script writes is cleared, so a reused folder shows this run alone.
rm -rf "${out:?}"/{logs,smi,golden,reports,runs,bin} "$out"/{steps.tsv,meta.tsv,summary.md,matmul.json}
rm -f "$out"/{agent-info.json,agent-info.txt,nvidia-smi.txt,nvidia-smi-query.csv}
mkdir -p "$out"/{logs,smi,golden,reports,runs}
work=$(mktemp -d "${TMPDIR:-/tmp}/gpucheck.XXXXXX") || exit 2
smi_pid=""

now_us() {
  local t=${EPOCHREALTIME:-}
  t=${t/./}
  echo "${t:-$(($(date +%s) * 1000000))}"
}
seconds_since() { awk -v a="$1" -v b="$(now_us)" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }
t_start=$(now_us)
deadline=$((t_start + budget * 1000000))

smi_stop() {
  if [[ -n $smi_pid ]]; then
    kill "$smi_pid" 2>/dev/null
    wait "$smi_pid" 2>/dev/null
    smi_pid=""
  fi
}
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  smi_stop
  rm -rf "$work"
  if [[ -n $agent_xz && ${KEEP_AGENT:-0} != 1 ]]; then rm -rf "${out:?}/bin"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

meta() { printf '%s\t%s\n' "$1" "$2" >>"$out/meta.tsv"; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$out/steps.tsv"; }
skip_step() { # ID TITLE REASON
  record "$1" "$2" skip 0 "$3"
  printf '== %-20s %s: skipped: %s\n' "$1" "$2" "$3"
}

# run_step ID LIMIT TITLE CMD...: CMD under its own timeout (cut to the budget
# left), stdout and stderr in logs/ID.log; returns CMD's status.
run_step() {
  local id=$1 limit=$2 title=$3 left start rc secs status note
  shift 3
  left=$(((deadline - $(now_us)) / 1000000))
  if ((left < 5)); then
    skip_step "$id" "$title" "the ${budget} s budget is spent"
    return 3
  fi
  ((limit > left)) && limit=$left
  printf '== %-20s %s (limit %d s) ... ' "$id" "$title" "$limit"
  start=$(now_us)
  timeout -k 10 "$limit" "$@" >"$out/logs/$id.log" 2>&1
  rc=$?
  secs=$(seconds_since "$start")
  case $rc in
    0) status=ok note="" ;;
    124 | 137) status=FAIL note="timed out after $limit s" ;;
    *) status=FAIL note="exit status $rc" ;;
  esac
  record "$id" "$title" "$status" "$secs" "$note"
  printf '%s in %s s%s\n' "$status" "$secs" "${note:+ ($note)}"
  if [[ $status != ok ]]; then
    grep -v '^\s*$' "$out/logs/$id.log" | tail -n 5 | cut -c1-300 | sed 's/^/   | /'
  fi
  return $rc
}

# points_ok ID: a batch size that failed (out of memory, say) does not stop the
# agent's sweep, but fails its step.
points_ok() {
  local log="$out/logs/$1.log" tmp
  if [[ -f $log ]] && grep -q 'batch *[0-9]*: failed:' "$log"; then
    tmp=$(mktemp)
    awk -F '\t' -v OFS='\t' -v id="$1" \
      '$1 == id && $3 == "ok" { $3 = "FAIL"; $5 = "a batch size failed" } { print }' \
      "$out/steps.tsv" >"$tmp" && cat "$tmp" >"$out/steps.tsv"
    rm -f "$tmp"
    echo "   ... FAIL after all, a batch size failed: $(grep -m1 'batch *[0-9]*: failed:' "$log" | cut -c1-250)"
  fi
}

# smi_start NAME: nvidia-smi samples every 100 ms into smi/NAME.csv until smi_stop.
smi_start() {
  [[ $mode == gpu ]] || return 0
  TZ=UTC nvidia-smi -i "$gpu_index" --format=csv,noheader,nounits -lms 100 \
    --query-gpu=timestamp,memory.used,power.draw,clocks.sm,temperature.gpu >"$out/smi/$1.csv" 2>&1 &
  smi_pid=$!
}

echo "== GPU check ($mode path) into $out; budget $budget s"
meta mode "$mode"
meta device "$device"
meta budget "$budget"
meta started "$(date -u '+%Y-%m-%d %H:%M:%S')"
meta golden_dtypes "$golden_dtypes"
meta seed_dtypes "$seed_dtypes"
meta compare_dtypes "$compare_dtypes"
meta batch_sizes "$batch_sizes"
meta seq_len "$seq_len"
meta warmup "$warmup"
meta iterations "$iterations"
meta rounds "$rounds"

# ---------------------------------------------------------------- 0. set-up
if [[ -n $agent_xz ]]; then
  agent="$out/bin/fleetbench-agent"
  run_step 0-unpack 60 "unpack $agent_xz" "$py" "$here/gpucheck.py" unxz "$agent_xz" "$agent"
elif [[ -z $agent ]]; then
  for candidate in "${CARGO_TARGET_DIR:-$HOME/.cache/fleetbench/target}/release/fleetbench-agent" \
    target/release/fleetbench-agent; do
    if [[ -x $candidate ]]; then agent=$candidate; break; fi
  done
  if [[ -z $agent ]]; then
    echo "check.sh: no agent binary found: build it (CARGO_TARGET_DIR=\$HOME/.cache/fleetbench/target" \
      "cargo build --release -p fleetbench-agent) or pass --agent / --agent-xz" >&2
    exit 2
  fi
fi
agent=$(cd "$(dirname "$agent")" && pwd)/$(basename "$agent")
meta agent "$agent"

# The CUDA libraries (libcublas.so.13, ...) come from PyTorch's nvidia wheels.
libdirs=$("$py" "$here/gpucheck.py" libdirs 2>/dev/null)
if [[ -n $libdirs ]]; then
  export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "== LD_LIBRARY_PATH from PyTorch's nvidia wheels: $libdirs"
fi
# shellcheck disable=SC2016 # expanded by the inner bash
check_libs='if ! [[ -x $1 ]]; then echo "no executable agent at $1"; exit 1; fi
ldd "$1"
if ldd "$1" | grep -q "not found"; then
  echo "MISSING LIBRARIES (LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}):"
  ldd "$1" | grep "not found"
  exit 1
fi'
if ! run_step 0-libs 20 "ldd: the agent's shared libraries" bash -c "$check_libs" _ "$agent"; then
  grep 'not found\|no executable' "$out/logs/0-libs.log" | sed 's/^/   MISSING: /'
fi
meta agent_version "$("$agent" --version 2>/dev/null || echo '?')"

run_step 0-py-compile 30 "python3 -m py_compile of the helpers" \
  "$py" -m py_compile "$here/gpucheck.py" bench/pytorch_reference.py
if [[ $mode == cpu ]]; then
  if command -v shellcheck >/dev/null 2>&1; then
    run_step 0-shellcheck 30 "shellcheck bench/gpu/*.sh" shellcheck "$here"/*.sh
  else
    skip_step 0-shellcheck "shellcheck bench/gpu/*.sh" "shellcheck not installed"
  fi
fi

torch_ok=0
torch_note="PyTorch not importable: skipped"
if torch_line=$("$py" -c 'import torch, transformers, tokenizers, safetensors
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, GPU usable: {torch.cuda.is_available()}), transformers {transformers.__version__}")' 2>/dev/null); then
  torch_note=$torch_line
  if [[ $mode == cpu || $torch_line == *"GPU usable: True"* ]]; then
    torch_ok=1
  else
    torch_note="PyTorch cannot use the GPU: skipped ($torch_line)"
  fi
fi
echo "== PyTorch: $torch_note"
[[ $torch_ok == 1 ]] || echo "$torch_note (steps 4 and 6)"
meta torch "$torch_note"
meta torch_ok "$torch_ok"

# ------------------------------------------------ 1. nvidia-smi beside info
# shellcheck disable=SC2016 # the bash -c scripts expand their own arguments
if [[ $mode == gpu ]]; then
  run_step 1-nvidia-smi 20 "nvidia-smi" bash -c 'nvidia-smi | tee "$1"' _ "$out/nvidia-smi.txt"
  run_step 1-nvidia-smi-query 20 "nvidia-smi --query-gpu" bash -c \
    'nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm,compute_cap --format=csv | tee "$1"' \
    _ "$out/nvidia-smi-query.csv"
else
  skip_step 1-nvidia-smi "nvidia-smi" "no GPU"
fi
# shellcheck disable=SC2016 # the bash -c scripts expand their own arguments
run_step 1-info 30 "fleetbench-agent info" bash -c '"$1" info | tee "$2"' _ "$agent" "$out/agent-info.txt"
# shellcheck disable=SC2016 # the bash -c scripts expand their own arguments
run_step 1-info-json 30 "fleetbench-agent info --json" bash -c '"$1" info --json > "$2"' _ "$agent" "$out/agent-info.json"

# -------------------------------------------------------- 2. golden texts
limit=120 # the first CUDA run may JIT-compile the agent's PTX kernels
for dt in $golden_dtypes; do
  run_step "2-golden-$dt" "$limit" "golden texts, $device $dt" \
    "$py" "$here/gpucheck.py" golden --agent "$agent" --model "$fixture" --golden "$golden" \
    --device "$device" --dtype "$dt" --json "$out/golden/$dt.json"
  limit=60
done

# --------------------------------------------- 6. matrix-product rate (early: short)
if [[ $torch_ok == 1 ]]; then
  if [[ $mode == gpu ]]; then size=${MATMUL_SIZE:-8192} secs=0.5; else size=${MATMUL_SIZE:-1024} secs=0.1; fi
  run_step 6-matmul 90 "torch.matmul ${size}x$size bf16, f32 (TF32 off)" \
    "$py" "$here/gpucheck.py" matmul --device "$device" --size "$size" --seconds "$secs" \
    --json "$out/matmul.json"
else
  skip_step 6-matmul "torch.matmul rate" "${torch_note%%:*}"
fi

# -------------------------------------------------------- 3. seed sweep
min_flags=()
min_note="none (CPU path)"
if [[ $mode == gpu ]]; then
  if "$agent" bench --help 2>/dev/null | grep -q -- '--gpu-min-seconds'; then
    min_flags=(--gpu-min-seconds "$gpu_min")
    min_note="$gpu_min s (agent: --gpu-min-seconds $gpu_min; PyTorch: --min-seconds $gpu_min)"
  else
    min_flags=(--min-seconds "$gpu_min")
    min_note="$gpu_min s (this agent has no --gpu-min-seconds: passed as --min-seconds $gpu_min; PyTorch the same)"
  fi
fi
meta min_time_note "$min_note"
for dt in $seed_dtypes; do
  bs=$batch_sizes
  [[ $mode == cpu && $dt != f32 ]] && bs=1 # one bf16 point on the CPU path
  smi_start "3-seed-$dt"
  run_step "3-seed-$dt" "$sweep_limit" "seed sweep (--weights random), $device $dt, batch $bs" \
    "$agent" bench --weights random --device "$device" --dtype "$dt" --batch-sizes "$bs" \
    --seq-len "$seq_len" --warmup "$warmup" --iterations "$iterations" "${min_flags[@]}" \
    --out "$out/reports/$dt"
  smi_stop
  points_ok "3-seed-$dt"
done

# ---------------------- 3b. what the agent's allocator settings change (GPU)
# The same f32 sweep with candle's own allocator settings (the pool returns
# memory at every synchronisation, events recorded per allocation): the
# summary puts its throughput beside the tuned run's, per batch size.
if [[ $mode == gpu ]]; then
  run_step 3-seed-f32-stock "$sweep_limit" "seed sweep f32 with candle's stock allocator settings" \
    env FLEETBENCH_CUDA_STOCK_ALLOCATOR=1 "$agent" bench --weights random --device "$device" \
    --dtype f32 --batch-sizes "$batch_sizes" --seq-len "$seq_len" --warmup "$warmup" \
    --iterations "$iterations" "${min_flags[@]}" --out "$out/reports/f32-stock"
else
  skip_step 3-seed-f32-stock "seed sweep f32 with candle's stock allocator settings" "no GPU"
fi

# --------------------------- 4 and 5. the agent against PyTorch, alternating
if [[ $torch_ok == 1 ]]; then
  if [[ $mode == gpu ]]; then
    model="$work/model"
    run_step 4-make-model 120 "seeded random distilbert-base-sized model (safetensors)" \
      "$py" bench/pytorch_reference.py make-model "$model" --tokenizer "$fixture/tokenizer.json"
    model_note="seeded random distilbert-base-uncased-sized model written by pytorch_reference.py make-model (seed 0)"
  else
    model=$fixture
    model_note="the tiny fixture $fixture (CPU path)"
  fi
  meta compare_model "$model_note"
  if [[ -f $model/model.safetensors ]]; then
    if [[ $mode == gpu ]]; then tol=1e-3; else tol=1e-4; fi
    run_step 4-check-f32 90 "same logits from both engines ($device f32)" \
      "$py" bench/pytorch_reference.py check "$model" --agent "$agent" --device "$device" \
      --dtype f32 --tol "$tol" --seq-len "$seq_len"
    agent_run() { # DTYPE ROUND
      local id="4-agent-$1-r$2"
      smi_start "$id"
      run_step "$id" "$sweep_limit" "agent, $device $1, round $2" \
        "$agent" bench --model "$model" --weights hub --device "$device" --dtype "$1" \
        --batch-sizes "$batch_sizes" --seq-len "$seq_len" --warmup "$warmup" \
        --iterations "$iterations" "${min_flags[@]}" --out "$out/runs/$id"
      smi_stop
      points_ok "$id"
    }
    torch_run() { # DTYPE ROUND
      local id="4-torch-$1-r$2" min=0
      [[ $mode == gpu ]] && min=$gpu_min
      smi_start "$id"
      run_step "$id" "$sweep_limit" "PyTorch eager, $device $1, round $2" \
        "$py" bench/pytorch_reference.py bench "$model" --json "$out/runs/$id.json" \
        --device "$device" --dtype "$1" --batch-sizes "$batch_sizes" --seq-len "$seq_len" \
        --warmup "$warmup" --iterations "$iterations" --min-seconds "$min"
      smi_stop
    }
    for dt in $compare_dtypes; do
      for ((r = 1; r <= rounds; r++)); do
        if ((r % 2)); then agent_run "$dt" "$r"; torch_run "$dt" "$r"
        else torch_run "$dt" "$r"; agent_run "$dt" "$r"; fi
      done
    done
  else
    skip_step 4-compare "agent vs PyTorch" "no model to load"
  fi
else
  skip_step 4-compare "agent vs PyTorch eager" "${torch_note%% (*}"
fi

# ---------------------------------------------------------------- summary
meta elapsed "$(seconds_since "$t_start")"
echo
echo "== total $(seconds_since "$t_start") s; summary in $out/summary.md"
echo
if ! "$py" "$here/gpucheck.py" summary --out "$out"; then
  echo "the summary could not be written; the steps were:"
  cat "$out/steps.tsv"
fi
if cut -f3 "$out/steps.tsv" | grep -qx FAIL; then exit 1; fi
exit 0
