/* bench/cuda/gemm.cu: numbered SGEMM kernels (llm.c dev/cuda style), each checked against the CPU
 * reference, and on a GPU timed against cuBLAS.
 *
 *   version 1  naive: one thread per C element, every operand read from global memory
 *   version 2  shared-memory tiles (the engine's kernel, kernels/cuda/gemm.cu, tile 16)
 *   version 3  register blocking: a 64x64 C tile per 256-thread block, each thread 4x4 outputs
 *              from 8-deep shared-memory slices of A and B (fewer shared loads per FMA);
 *              kernels/cuda/gemm.cu with tile 64
 *
 * C (M x N) = A (M x K) B (K x N), row-major, no transposes (the conv forward case).
 * Usage: bench_cuda_gemm [version] [M N K]. Under the emulator (g++ build) it only validates, on
 * small sizes (timings from the emulator mean nothing). Built by nvcc (see docs/cuda-emulator.md,
 * "Benchmarks on a GPU") it validates, then prints ms, GFLOP/s and the fraction of cuBLAS's speed.
 */
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "bench/cuda/bench_util.cuh"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/gemm.h"
#ifdef NIMBUS_BENCH_CUBLAS
#include "kernels/cuda/real/reference.h"  // cuBLAS, shared with the backend's reference and the GPU test
#endif

using namespace nimbus;

// ---- version 1: naive -------------------------------------------------------------------------
__global__ void gemm_naive_kernel(int M, int N, int K, const float* A, const float* B, float* C) {
  const int row = int(blockIdx.y * blockDim.y + threadIdx.y), col = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (row >= M || col >= N) return;
  float acc = 0.0f;
  for (int k = 0; k < K; ++k) acc += A[row * K + k] * B[k * N + col];
  C[row * N + col] = acc;
}

void gemm1(int M, int N, int K, const float* A, const float* B, float* C) {
  launch(gemm_naive_kernel, dim3{unsigned((N + 15) / 16), unsigned((M + 15) / 16)}, dim3{16, 16}, 0, nullptr, M, N, K,
         A, B, C);
  cuda::check_launch("gemm1");
}

// ---- version 2: shared-memory tiles (the engine's kernel) ---------------------------------------
void gemm2(int M, int N, int K, const float* A, const float* B, float* C) {
  cuda::gemm(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N, 16);
}

// ---- version 3: register-blocked 64x64 tile, 4x4 per thread (the engine's tile == 64 kernel) -------
void gemm3(int M, int N, int K, const float* A, const float* B, float* C) {
  cuda::gemm(false, false, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N, 64);
}

using GemmFn = void (*)(int, int, int, const float*, const float*, float*);
const GemmFn kVersions[] = {nullptr, gemm1, gemm2, gemm3};

// ---- driver -----------------------------------------------------------------------------------
// Max |got - ref| / (1e-4 + 1e-4 |ref|) over C: <= 1 passes.
bool validate(int v, int M, int N, int K) {
  std::vector<float> A(size_t(M) * K), B(size_t(K) * N), C(size_t(M) * N);
  for (size_t i = 0; i < A.size(); ++i) A[i] = float((i * 37) % 17) / 8.0f - 1.0f;
  for (size_t i = 0; i < B.size(); ++i) B[i] = float((i * 53) % 19) / 9.0f - 1.0f;
  std::vector<double> ref(C.size());
  std::vector<double> Ad(A.begin(), A.end()), Bd(B.begin(), B.end());
  cpu::gemm_ref<double>(false, false, M, N, K, 1.0, Ad.data(), K, Bd.data(), N, 0.0, ref.data(), N);
  float *dA = upload(A), *dB = upload(B), *dC = upload(C);
  kVersions[v](M, N, K, dA, dB, dC);
  cudaMemcpy(C.data(), dC, C.size() * sizeof(float), cudaMemcpyDeviceToHost);
  cudaFree(dA), cudaFree(dB), cudaFree(dC);
  double worst = 0;
  for (size_t i = 0; i < C.size(); ++i)
    worst = std::fmax(worst, std::fabs(double(C[i]) - ref[i]) / (1e-4 + 1e-4 * std::fabs(ref[i])));
  std::printf("version %d: %dx%dx%d %s (worst error %.3g of tolerance)\n", v, M, N, K, worst <= 1 ? "OK" : "WRONG",
              worst);
  return worst <= 1;
}

#ifdef __CUDACC__
void benchmark(int v, int M, int N, int K) {
  std::vector<float> A(size_t(M) * K, 0.5f), B(size_t(K) * N, 0.25f), C(size_t(M) * N);
  float *dA = upload(A), *dB = upload(B), *dC = upload(C);
  const double flop = 2.0 * M * N * K;
  const float ms = time_ms([&] { kVersions[v](M, N, K, dA, dB, dC); }, 20);
  float ref_ms = 0;
#ifdef NIMBUS_BENCH_CUBLAS
  ref_ms = time_ms([&] { cuda::ref::cublas_gemm(false, false, M, N, K, 1.0f, dA, K, dB, N, 0.0f, dC, N); }, 20);
#endif
  std::printf("version %d: %dx%dx%d  %.3f ms  %.0f GFLOP/s", v, M, N, K, ms, flop / ms / 1e6);
  if (ref_ms > 0) std::printf("  (cuBLAS %.3f ms, %.0f GFLOP/s; %.0f%% of cuBLAS)", ref_ms, flop / ref_ms / 1e6,
                              100.0 * ref_ms / ms);
  std::printf("\n");
  cudaFree(dA), cudaFree(dB), cudaFree(dC);
}
#endif

int main(int argc, char** argv) {
  const int first = argc > 1 ? std::atoi(argv[1]) : 1, last = argc > 1 ? first : 3;
  if (first < 1 || last > 3) {
    std::fprintf(stderr, "usage: %s [version 1-3] [M N K]\n", argv[0]);
    return 2;
  }
  bool ok = true;
  for (int v = first; v <= last; ++v) ok = validate(v, 67, 45, 33) && validate(v, 130, 70, 19) && ok;  // odd sizes
#ifdef __CUDACC__
  const int M = argc > 4 ? std::atoi(argv[2]) : 4096, N = argc > 4 ? std::atoi(argv[3]) : 4096,
            K = argc > 4 ? std::atoi(argv[4]) : 4096;
  for (int v = first; v <= last; ++v) benchmark(v, M, N, K);
#endif
  return ok ? 0 : 1;
}
