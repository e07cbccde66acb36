#!/usr/bin/env bash
# RUSTC_WRAPPER set by deploy/cuda/build.sh for the CUDA 12 variants (fleet,
# turing); not meant to be run by hand. It passes every rustc call through
# unchanged, except that just before rustc compiles the crate candle_kernels
# (whose ptx.rs embeds $OUT_DIR/*.ptx with include_str!), it
#   1. relabels each PTX file's `.version` down to $FLEETBENCH_PTX_ISA (8.2)
#      when nvcc wrote a newer one (Debian's nvcc 12.4 writes 8.4, which
#      drivers older than R550 refuse to JIT), keeping the file's mtime so
#      cargo sees nothing new next time;
#   2. assembles every file with $FLEETBENCH_PTX_VERIFIER (CUDA 12.2's ptxas,
#      the compiler inside the R535 driver's JIT) for each of
#      $FLEETBENCH_PTX_ARCHS, and fails the build if one is refused (an
#      instruction newer than the ISA it now claims).
# $FLEETBENCH_INNER_RUSTC_WRAPPER, when set, is the wrapper it replaced.
set -euo pipefail

crate="" prev=""
for arg in "$@"; do
  [ "$prev" = --crate-name ] && crate=$arg
  prev=$arg
done

if [ "$crate" = candle_kernels ] && [ -n "${OUT_DIR:-}" ] && [ -n "${FLEETBENCH_PTX_ISA:-}" ]; then
  isa=$FLEETBENCH_PTX_ISA
  relabelled=0 files=0
  for ptx in "$OUT_DIR"/*.ptx; do
    [ -e "$ptx" ] || continue
    files=$((files + 1))
    have=$(sed -n -E 's/^\.version ([0-9]+\.[0-9]+)$/\1/p' "$ptx" | head -n 1)
    if [ -z "$have" ]; then
      echo "rustc-ptx-floor: no .version line in $ptx" >&2
      exit 1
    fi
    if [ "$(printf '%s\n%s\n' "$have" "$isa" | sort -V | tail -n 1)" != "$isa" ]; then
      touch -r "$ptx" "$ptx.mtime"
      sed -i -E "s/^\\.version $have\$/.version $isa/" "$ptx"
      touch -r "$ptx.mtime" "$ptx"
      rm -f "$ptx.mtime"
      relabelled=$((relabelled + 1))
    fi
  done
  if [ "$files" -eq 0 ]; then
    echo "rustc-ptx-floor: no PTX files in $OUT_DIR" >&2
    exit 1
  fi
  started=$SECONDS
  for arch in ${FLEETBENCH_PTX_ARCHS:-sm_80}; do
    for ptx in "$OUT_DIR"/*.ptx; do
      if ! log=$("$FLEETBENCH_PTX_VERIFIER" -arch="$arch" -o /dev/null "$ptx" 2>&1); then
        echo "rustc-ptx-floor: CUDA 12.2's ptxas refuses $ptx (relabelled to PTX ISA $isa) for $arch:" >&2
        printf '%s\n' "$log" >&2
        echo "rustc-ptx-floor: this build would not load on R535 drivers; FLEETBENCH_PTX_ISA=off builds for R550+" >&2
        exit 1
      fi
    done
  done
  echo "rustc-ptx-floor: candle-kernels: $files PTX files, $relabelled relabelled to ISA $isa;" \
    "all accepted by ptxas $("$FLEETBENCH_PTX_VERIFIER" --version | sed -n -E "s/.*release ([0-9.]+), (V[0-9.]+).*/\1 (\2)/p") for ${FLEETBENCH_PTX_ARCHS:-sm_80} ($((SECONDS - started)) s)" >&2
fi

exec ${FLEETBENCH_INNER_RUSTC_WRAPPER:+"$FLEETBENCH_INNER_RUSTC_WRAPPER"} "$@"
