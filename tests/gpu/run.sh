#!/usr/bin/env bash
# tests/gpu/run.sh [BUILD_DIR]: on a machine with an NVIDIA GPU (CUDA 13 toolkit, cuBLAS, cuDNN 9
# under /usr/local/cuda), build the real CUDA backend in BUILD_DIR (default build-cudart) and run
# the GPU tests: our GEMM and convolution kernels against cuBLAS/cuDNN at several shapes, and a tiny
# ResNet training step with NIMBUS_CUDA_REFERENCE=none|cublas|cudnn (docs/cuda-backend.md).
# Exit 0: all passed; 1: a comparison failed; without a GPU the test reports itself skipped.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-cudart}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNIMBUS_CUDA_BACKEND=ON > /dev/null
cmake --build "$build" --target test_gpu_reference
ctest --test-dir "$build" -R '^gpu: ' --output-on-failure -V
