#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, one after another on one core,
# and prints a table: target, executions, seconds, coverage, findings.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 300 s, all targets)
#
# Environment:
#   CARGO_TARGET_DIR  build directory (default fuzz/target)
#   FUZZ_SANITIZER    address (default) or none, passed to `cargo fuzz -s`
#
# Seeds are read from fuzz/corpus/<target>/ (kept in git) and new inputs are
# written to fuzz/work/<target>/ (not in git); a crash lands in
# fuzz/artifacts/<target>/ and stops that target. Logs: fuzz/logs/<target>.log.
# Only a stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it take the -Z
# flags cargo-fuzz passes to rustc.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
seconds=${1:-300}
if [[ $# -gt 0 ]]; then
    shift
fi
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(sweep_spec config agent_message control_request)
fi
sanitizer=${FUZZ_SANITIZER:-address}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$here/target}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing; installing it" >&2
    cargo install cargo-fuzz --locked
fi

cd "$root"
echo "building ${targets[*]} (sanitizer: $sanitizer, target dir: $CARGO_TARGET_DIR)" >&2
for t in "${targets[@]}"; do
    cargo fuzz build --sanitizer "$sanitizer" --target-dir "$CARGO_TARGET_DIR" "$t"
done

mkdir -p "$here/logs"
summary="$here/logs/summary.txt"
{
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n) $(nproc) cores; $seconds s per target; sanitizer $sanitizer"
    printf '%-16s %12s %8s %8s %8s %9s  %s\n' target runs seconds cov ft findings artifacts
} >"$summary"

failed=0
for t in "${targets[@]}"; do
    work="$here/work/$t"
    artifacts="$here/artifacts/$t"
    log="$here/logs/$t.log"
    mkdir -p "$work" "$artifacts"
    marker=$(mktemp)
    options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    if [[ -f "$here/dict/$t.dict" ]]; then
        options+=(-dict="$here/dict/$t.dict")
    fi
    echo "fuzzing $t for $seconds s (log: $log)" >&2
    start=$(date +%s)
    rc=0
    cargo fuzz run --sanitizer "$sanitizer" --target-dir "$CARGO_TARGET_DIR" \
        "$t" "$work" "$here/corpus/$t" -- "${options[@]}" >"$log" 2>&1 || rc=$?
    elapsed=$(($(date +%s) - start))

    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [[ -z $runs ]]; then
        runs=$(sed -n 's/^#\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    fi
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1 || true)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    found=()
    while IFS= read -r f; do
        found+=("$(basename "$f")")
    done < <(find "$artifacts" -type f -newer "$marker" \
        \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'slow-unit-*' \))
    rm -f "$marker"
    if [[ $rc -ne 0 && ${#found[@]} -eq 0 ]]; then
        found=("exit status $rc, see $log")
    fi
    if [[ ${#found[@]} -gt 0 ]]; then
        failed=1
    fi
    printf '%-16s %12s %8s %8s %8s %9s  %s\n' "$t" "${runs:-?}" "$elapsed" "${cov:-?}" "${ft:-?}" \
        "${#found[@]}" "${found[*]:-}" >>"$summary"
done

cat "$summary"
exit "$failed"
