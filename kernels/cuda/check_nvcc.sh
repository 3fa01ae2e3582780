#!/usr/bin/env bash
# check_nvcc.sh NVCC ROOT OBJDIR REPORT FILE.cu...: compile each kernel file with nvcc for sm_80
# and sm_90, all warnings as errors (device and host side), and collect ptxas' per-kernel
# register / spill / shared-memory lines into REPORT. Fails on the first file that does not build.
# A file that includes kernels/cuda/hopper.h is compiled for sm_90a as well: wgmma and setmaxnreg
# exist only there (on sm_80 / sm_90 they compile to a trap, kernels/cuda/compat.h).
set -euo pipefail
nvcc=$1 root=$2 objdir=$3 report=$4
shift 4
mkdir -p "$objdir"
tmp="$report.tmp"
echo "# nvcc compile check, $(date -u +%FT%TZ), $("$nvcc" --version | tail -1)" > "$tmp"
for cu in "$@"; do
  name=$(basename "$cu" .cu)
  echo "## $name.cu" >> "$tmp"
  extra=()
  if grep -q '#include "kernels/cuda/hopper.h"' "$cu"; then extra=(-gencode arch=compute_90a,code=sm_90a); fi
  if ! "$nvcc" -c -std=c++20 -O3 -I"$root" \
      -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 "${extra[@]}" \
      -Werror all-warnings -Xcompiler -Wall,-Wextra,-Wno-unused-parameter,-Werror \
      -Xptxas -v -o "$objdir/$name.o" "$cu" >> "$tmp" 2>&1; then
    cat "$tmp"
    echo "check_nvcc: $cu failed to compile with nvcc (log above)" >&2
    exit 1
  fi
done
mv "$tmp" "$report"
grep -E "registers|spill" "$report" || true
