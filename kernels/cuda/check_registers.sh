#!/usr/bin/env bash
# check_registers.sh: what ptxas gives the warp-specialised wgmma forward, checked before a GPU sees it.
#
# conv_fwd_specialised_kernel (conv2d_wgmma.cu) moves registers between its warpgroups with setmaxnreg:
# the producer warpgroup gives back down to kProducerRegs, then the two consumer warpgroups ask for
# kConsumerRegs each. The request waits until the block's pool holds 128 x kProducerRegs + 256 x
# kConsumerRegs, and the pool is 384 x the registers ptxas gave the kernel at entry. Too few at entry
# and the consumers wait forever: a hang on the GPU that would eat a whole device call, and that the
# emulator cannot see (it assumes the __launch_bounds__(384, 1) maximum, 168). So compile the file for
# sm_90a and require every instantiation to start with enough.
#
#   kernels/cuda/check_registers.sh [NVCC]      exit 0: enough; 1: too few or not found; 77: no nvcc
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
nvcc=${1:-/usr/local/cuda/bin/nvcc}
[[ -x $nvcc ]] || { echo "check_registers: skipped: no nvcc at $nvcc"; exit 77; }
src=$root/kernels/cuda/conv2d_wgmma.cu
read -r producer consumer < <(sed -n 's/^constexpr int kProducerRegs = \([0-9]*\), kConsumerRegs = \([0-9]*\);.*/\1 \2/p' "$src")
[[ -n ${producer:-} && -n ${consumer:-} ]] || { echo "check_registers: no kProducerRegs/kConsumerRegs line in $src"; exit 1; }
need=$(( (128 * producer + 256 * consumer + 383) / 384 ))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$nvcc" -c -std=c++20 -O3 -I"$root" -gencode arch=compute_90a,code=sm_90a -Xptxas -v -o "$tmp/w.o" "$src" \
  > "$tmp/log" 2>&1 || { cat "$tmp/log"; echo "check_registers: nvcc failed"; exit 1; }
# ptxas prints "Compiling entry function '<name>'", then "Used N registers" for it.
used=$(awk '/Compiling entry function/ {f = ($0 ~ /conv_fwd_specialised_kernel/)} f && /Used [0-9]+ registers/ {
              for (i = 1; i <= NF; ++i) if ($i == "Used") print $(i + 1); f = 0 }' "$tmp/log")
[[ -n $used ]] || { echo "check_registers: ptxas reported no conv_fwd_specialised_kernel"; exit 1; }
status=0
for u in $used; do
  if (( u < need )); then
    echo "check_registers: conv_fwd_specialised_kernel starts with $u registers: 384 x $u < 128 x $producer + 256 x $consumer (needs $need): setmaxnreg.inc would wait forever"
    status=1
  fi
done
(( status )) || echo "check_registers: conv_fwd_specialised_kernel starts with $(echo $used | tr ' ' ',') registers (needs $need for $producer/$consumer): ok"
exit $status
