#!/usr/bin/env bash
# check_nvcc.sh NVCC ROOT OBJDIR REPORT FILE.cu...: compile each kernel file with nvcc for sm_80
# and sm_90, all warnings as errors (device and host side), and collect ptxas' per-kernel
# register / spill / shared-memory lines into REPORT (in the order of the arguments). Fails if a file
# does not build, printing its log.
# A file that includes kernels/cuda/hopper.h is compiled for sm_90a as well: wgmma and setmaxnreg
# exist only there (on sm_80 / sm_90 they compile to a trap, kernels/cuda/compat.h).
# Files compile $(nproc) at a time, the largest first (conv2d_tc.cu alone is a third of the work).
set -euo pipefail
nvcc=$1 root=$2 objdir=$3 report=$4
shift 4
mkdir -p "$objdir"

compile_one() {  # FILE.cu: writes OBJDIR/NAME.log, and OBJDIR/NAME.failed when nvcc fails
  local cu=$1 name extra=()
  name=$(basename "$cu" .cu)
  rm -f "$objdir/$name.failed"
  if grep -q '#include "kernels/cuda/hopper.h"' "$cu"; then extra=(-gencode arch=compute_90a,code=sm_90a); fi
  "$nvcc" -c -std=c++20 -O3 -I"$root" \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 "${extra[@]}" \
    -Werror all-warnings -Xcompiler -Wall,-Wextra,-Wno-unused-parameter,-Werror \
    -Xptxas -v -o "$objdir/$name.o" "$cu" > "$objdir/$name.log" 2>&1 || { touch "$objdir/$name.failed"; return 1; }
}
export -f compile_one
export nvcc root objdir

rm -f "$objdir"/*.log "$objdir"/*.failed
status=0
ls -S "$@" | xargs -d '\n' -P "$(nproc)" -I{} bash -c 'compile_one "$1"' _ {} || status=$?

tmp="$report.tmp"
echo "# nvcc compile check, $(date -u +%FT%TZ), $("$nvcc" --version | tail -1)" > "$tmp"
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
