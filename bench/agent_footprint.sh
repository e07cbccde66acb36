#!/usr/bin/env bash
# The agent's own footprint while idle and connected: resident memory and CPU
# share over a quiet window, for a real (candle) agent and a simulated one.
#
#   bench/agent_footprint.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-30}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleetbench/target}"
cargo build --release -q -p fleetbench-agent -p fleetbench-coordinator
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
pids=()
trap cleanup EXIT

"$bin/fleetbench" serve --listen 127.0.0.1:0 --data "$work/data" >"$work/addr" 2>/dev/null &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/addr" ] && break; sleep 0.1; done
url="http://$(sed 's/listening on //' "$work/addr")"
RUST_LOG=warn "$bin/fleetbench-agent" run --coordinator "$url" --name idle-real --spool "$work/spool-real" 2>/dev/null &
real=$!; pids+=($real)
RUST_LOG=warn "$bin/fleetbench-agent" run --coordinator "$url" --name idle-sim --spool "$work/spool-sim" --simulate H100-SXM 2>/dev/null &
sim=$!; pids+=($sim)
sleep 3   # connect and settle

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, in 1/100 s
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
declare -A before
for p in $real $sim; do before[$p]=$(ticks "$p"); done
sleep "$window"
echo "| agent | RSS (MB) | CPU share over ${window} s |"
echo "|---|---:|---:|"
for p in $real $sim; do
  name=$([ "$p" = "$real" ] && echo "real (candle, CPU)" || echo "simulated")
  used=$(( $(ticks "$p") - ${before[$p]} ))
  awk -v n="$name" -v r="$(rss_kb "$p")" -v u="$used" -v w="$window" \
    'BEGIN { printf "| %s | %.1f | %.3f%% |\n", n, r / 1024, u / (w * 100) * 100 }'
done
