#!/usr/bin/env bash
# Side-by-side CPU benchmark of the agent's two DistilBERT engines: fleetbench's
# own forward pass and candle-transformers' stock module (the baseline).
#
# The engines alternate A/B/A/B within one run on one machine, so that noise
# from other processes hits both alike; the table gives the median samples/s of
# each over the rounds and their ratio.
#
#   bench/engines.sh [ROUNDS] [BATCH_SIZES] [ITERATIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
batches=${2:-8,32}
iterations=${3:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleetbench/target}"
cargo build --release -q -p fleetbench-agent
agent="$CARGO_TARGET_DIR/release/fleetbench-agent"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for round in $(seq 1 "$rounds"); do
  for engine in fleetbench candle-transformers; do
    RUST_LOG=warn "$agent" bench --weights random --device cpu --engine "$engine" \
      --batch-sizes "$batches" --warmup 2 --iterations "$iterations" \
      --out "$work/$engine-$round" >/dev/null
  done
done

python3 - "$work" "$rounds" <<'PY'
import glob, json, statistics, sys, os
work, rounds = sys.argv[1], int(sys.argv[2])
by = {}
for path in glob.glob(os.path.join(work, "*", "*.json")):
    engine = os.path.basename(os.path.dirname(path)).rsplit("-", 1)[0]
    report = json.load(open(path))
    for p in report["points"]:
        if p["outcome"]["status"] == "measured":
            by.setdefault((engine, p["batch_size"]), []).append(p["outcome"]["throughput"])
env = report["environment"]
print(f"candle {env['candle_version']}, {env['threads']} threads, {report['host']['cpu_model']}, "
      f"f32, seq {report['spec']['seq_len']}, {rounds} alternating rounds, median samples/s")
print(f"| batch | fleetbench | candle-transformers | ratio |")
print(f"|------:|-----------:|--------------------:|------:|")
for b in sorted({b for _, b in by}):
    f = statistics.median(by.get(("fleetbench", b), [float("nan")]))
    c = statistics.median(by.get(("candle-transformers", b), [float("nan")]))
    print(f"| {b} | {f:.2f} | {c:.2f} | {f / c:.2f}x |")
PY
