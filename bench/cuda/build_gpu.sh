#!/usr/bin/env bash
# build_gpu.sh [OUTDIR] [ARCH]: build the CUDA benchmarks with nvcc for a GPU machine, timed against
# cuBLAS (GEMM) and cuDNN (conv). Run from anywhere; needs nvcc, cuBLAS, cuDNN, OpenBLAS, OpenMP.
#   bench/cuda/build_gpu.sh build-gpu 90 && build-gpu/bench_gemm && build-gpu/bench_conv2d
# ARCH: 80 (A100) or 90 (H100/H200, default). Each binary first validates every version against the
# CPU reference at small odd sizes, then times the large case (see the top of gemm.cu / conv2d.cu).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-build-gpu}
arch=${2:-90}
nvcc=${NVCC:-nvcc}
mkdir -p "$out"
flags=(-std=c++20 -O3 -I"$root" -gencode "arch=compute_$arch,code=sm_$arch" -Werror all-warnings)
cpu=("$root"/kernels/cpu/*.cpp -Xcompiler -fopenmp -lopenblas -lgomp)
k="$root/kernels/cuda"
# Our launchers (on the current stream) and the cuBLAS/cuDNN reference calls (kernels/cuda/real/reference.cu).
gpu=("$k/gemm.cu" "$k/elementwise.cu" "$k/launch.cu" "$k/stream.cu" "$k/real/reference.cu" -lcublas -lcudnn)
"$nvcc" "${flags[@]}" -DNIMBUS_BENCH_CUBLAS "$root/bench/cuda/gemm.cu" "${gpu[@]}" "${cpu[@]}" -o "$out/bench_gemm"
"$nvcc" "${flags[@]}" -DNIMBUS_BENCH_CUDNN "$root/bench/cuda/conv2d.cu" "$k/conv2d.cu" "${gpu[@]}" "${cpu[@]}" \
  -o "$out/bench_conv2d"
echo "built $out/bench_gemm and $out/bench_conv2d (sm_$arch)"
