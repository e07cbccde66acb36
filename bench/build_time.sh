#!/usr/bin/env bash
# Clean build times and binary sizes, from an empty target directory AND an
# empty cargo cache (a fresh CARGO_HOME: crates are downloaded again, which is
# timed apart from the build), on this machine's cores.
#
#   bench/build_time.sh [WHAT...]
#
# WHAT (default: workspace demo coordinator-only):
#   workspace         cargo build --release --workspace (every binary and library)
#   demo              cargo build --release -p fleetbench-coordinator (README's first command)
#   coordinator-only  cargo build --release -p fleetbench-coordinator --no-default-features
#                     (the coordinator image: no agent, no candle)
# Each WHAT starts from its own empty target directory; `cargo build
# --timings` writes its HTML report under KEEP_DIR (default: a temporary
# folder, printed). Prints one table: seconds and stripped size of fleetbench.
set -euo pipefail
cd "$(dirname "$0")/.."
whats=("$@")
[ ${#whats[@]} -gt 0 ] || whats=(workspace demo coordinator-only)
keep=${KEEP_DIR:-$(mktemp -d)}
export CARGO_HOME="$keep/cargo-home"
mkdir -p "$CARGO_HOME"
export CARGO_TERM_COLOR=never CARGO_TERM_PROGRESS_WHEN=never

t0=$(date +%s)
cargo fetch --locked > "$keep/fetch.log" 2>&1 || { tail -n 20 "$keep/fetch.log"; exit 1; }
fetch_s=$(( $(date +%s) - t0 ))

rows=()
for what in "${whats[@]}"; do
  case "$what" in
    workspace) args=(--workspace) ;;
    demo) args=(-p fleetbench-coordinator) ;;
    coordinator-only) args=(-p fleetbench-coordinator --no-default-features) ;;
    *) echo "unknown: $what (workspace, demo, coordinator-only)" >&2; exit 2 ;;
  esac
  target="$keep/target-$what"
  rm -rf "$target"
  t0=$(date +%s)
  CARGO_TARGET_DIR="$target" cargo build --release --locked --offline --timings "${args[@]}" \
    > "$keep/$what.log" 2>&1 || { tail -n 20 "$keep/$what.log"; exit 1; }
  secs=$(( $(date +%s) - t0 ))
  size="-"
  if [ -x "$target/release/fleetbench" ]; then
    cp "$target/release/fleetbench" "$keep/fleetbench-$what"
    strip "$keep/fleetbench-$what"
    size=$(( $(stat -c %s "$keep/fleetbench-$what") / 1024 / 1024 ))
  fi
  units=$(grep -c '^ *Compiling ' "$keep/$what.log" || true)
  rows+=("| $what | $secs | $(( secs / 60 ))m$(( secs % 60 ))s | $units | $size |")
done

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores; rustc $(rustc --version | cut -d' ' -f2)"
echo "crate download (cargo fetch, empty CARGO_HOME): ${fetch_s} s"
echo
echo "| build (empty target) | seconds | | crates compiled | fleetbench stripped (MiB) |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "timings reports: $keep/target-*/cargo-timings/"
