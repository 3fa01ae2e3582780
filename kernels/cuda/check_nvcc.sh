#!/usr/bin/env bash
# check_nvcc.sh NVCC ROOT OBJDIR REPORT FILE.cu...: compile each kernel file with nvcc for sm_80
# and sm_90, all warnings as errors (device and host side), and collect ptxas' per-kernel
# register / spill / shared-memory lines into REPORT (in the order of the arguments). Fails if a file
# does not build, printing its log.
# A file that includes kernels/cuda/hopper.h is compiled for sm_90a as well: wgmma and setmaxnreg
# exist only there (on sm_80 / sm_90 they compile to a trap, kernels/cuda/compat.h).
# NIMBUS_NVCC_CHECK_ARCHS (default "80 90") chooses the architectures; sm_90a comes with 90. CI sets
# it to 80: its GPU bundle (scripts/gpu_package.sh) compiles every file for sm_90a with the same
# warnings as errors, and each architecture costs a full device compile (half of this check's time).
# Files compile $(nproc) at a time, the largest first (conv2d_tc.cu alone is a third of the work).
set -euo pipefail
nvcc=$1 root=$2 objdir=$3 report=$4
shift 4
mkdir -p "$objdir"

archs=${NIMBUS_NVCC_CHECK_ARCHS:-80 90}
[[ $archs =~ ^[0-9]+( [0-9]+)*$ ]] || { echo "check_nvcc: NIMBUS_NVCC_CHECK_ARCHS='$archs': numbers, e.g. '80 90'" >&2; exit 1; }

compile_one() {  # FILE.cu: writes OBJDIR/NAME.log, and OBJDIR/NAME.failed when nvcc fails
  local cu=$1 name a gencode=()
  name=$(basename "$cu" .cu)
  rm -f "$objdir/$name.failed"
  for a in $archs; do gencode+=(-gencode "arch=compute_$a,code=sm_$a"); done
  if [[ " $archs " == *" 90 "* ]] && grep -q '#include "kernels/cuda/hopper.h"' "$cu"; then
    gencode+=(-gencode arch=compute_90a,code=sm_90a)
  fi
  "$nvcc" -c -std=c++20 -O3 -I"$root" "${gencode[@]}" \
    -Werror all-warnings -Xcompiler -Wall,-Wextra,-Wno-unused-parameter,-Werror \
    -Xptxas -v -o "$objdir/$name.o" "$cu" > "$objdir/$name.log" 2>&1 || { touch "$objdir/$name.failed"; return 1; }
}
export -f compile_one
export nvcc root objdir archs

rm -f "$objdir"/*.log "$objdir"/*.failed
status=0
ls -S "$@" | xargs -d '\n' -P "$(nproc)" -I{} bash -c 'compile_one "$1"' _ {} || status=$?

tmp="$report.tmp"
echo "# nvcc compile check, $(date -u +%FT%TZ), $("$nvcc" --version | tail -1), sm: $archs" > "$tmp"
failed=()
for cu in "$@"; do
  name=$(basename "$cu" .cu)
  echo "## $name.cu" >> "$tmp"
  cat "$objdir/$name.log" >> "$tmp" 2>/dev/null || true
  [[ -f "$objdir/$name.log" && ! -f "$objdir/$name.failed" ]] || failed+=("$cu")
done
if (( status != 0 || ${#failed[@]} > 0 )); then
  for cu in "${failed[@]}"; do
    cat "$objdir/$(basename "$cu" .cu).log" 2>/dev/null || true
    echo "check_nvcc: $cu failed to compile with nvcc (log above)" >&2
  done
  (( ${#failed[@]} > 0 )) || echo "check_nvcc: nvcc failed (exit $status)" >&2
  rm -f "$tmp"
  exit 1
fi
mv "$tmp" "$report"
grep -E "registers|spill" "$report" || true
