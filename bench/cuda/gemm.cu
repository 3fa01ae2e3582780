/* bench/cuda/gemm.cu: numbered SGEMM kernels (llm.c dev/cuda style), each checked against the CPU
 * reference, and on a GPU timed against cuBLAS in fp32, TF32 and bf16.
 *
 * C (M x N) = A (M x K) B (K x N), row-major, no transposes (the conv forward case).
 *   version 1  naive: one thread per C element, every operand read from global memory
 *   version 2  shared-memory tiles (the engine's kernel, kernels/cuda/gemm.cu, tile 16)
 *   version 3  register blocking: a 64x64 C tile per 256-thread block, each thread 4x4 outputs
 *              from 8-deep shared-memory slices of A and B (fewer shared loads per FMA);
 *              kernels/cuda/gemm.cu with tile 64
 *
 * Usage:
 *   bench_cuda_gemm [--versions 1,3]     validate every version at small odd sizes against
 *                                        cpu::gemm_ref in double (both builds; a ctest test)
 *   gpu_bench_gemm --list                the case names (both builds; needs no GPU)
 *   gpu_bench_gemm --case gemm_4096|all [--versions 1,3] [--budget-ms 150]
 *                                        nvcc build only: validate at full size (1000 sampled C
 *                                        elements vs float64), then time our versions and cuBLAS
 *                                        fp32/TF32/bf16; JSON rows on stdout (docs/cuda-backend.md,
 *                                        "Kernel cases"). No GPU: exit 77.
 * Exit status: 0 all passed, 1 a version failed validation, 2 bad usage, 77 no CUDA device.
 */
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/cuda/bench_util.cuh"
#include "kernels/cpu/gemm.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/gemm.h"
#if defined(__CUDACC__) && defined(NIMBUS_BENCH_CUBLAS)
#include "bench/cuda/references.cuh"
#define NIMBUS_BENCH_CASES 1
#endif

using namespace nimbus;

// ---- version 1: naive -------------------------------------------------------------------------
__global__ void gemm_naive_kernel(int M, int N, int K, const float* A, const float* B, float* C) {
  const int row = int(blockIdx.y * blockDim.y + threadIdx.y), col = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (row >= M || col >= N) return;
  float acc = 0.0f;
  for (int k = 0; k < K; ++k) acc += A[int64_t(row) * K + k] * B[int64_t(k) * N + col];
  C[int64_t(row) * N + col] = acc;
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
constexpr int kLast = 3;

// ---- small validation (both builds) -----------------------------------------------------------
// Max |got - ref| / (1e-4 + 1e-4 |ref|) over C: <= 1 passes.
bool validate(int v, int M, int N, int K) {
  std::vector<float> A(size_t(M) * K), B(size_t(K) * N), C(size_t(M) * N);
  for (size_t i = 0; i < A.size(); ++i) A[i] = float((i * 37) % 17) / 8.0f - 1.0f;
  for (size_t i = 0; i < B.size(); ++i) B[i] = float((i * 53) % 19) / 9.0f - 1.0f;
  std::vector<double> ref(C.size());
  std::vector<double> Ad(A.begin(), A.end()), Bd(B.begin(), B.end());
  cpu::gemm_ref<double>(false, false, M, N, K, 1.0, Ad.data(), K, Bd.data(), N, 0.0, ref.data(), N);
  float *dA = upload(A), *dB = upload(B), *dC = nullptr;
  CK(cudaMalloc(&dC, C.size() * sizeof(float)));
  CK(cudaMemset(dC, 0xFF, C.size() * sizeof(float)));  // NaN: every element must be written
  kVersions[v](M, N, K, dA, dB, dC);
  CK(cudaMemcpy(C.data(), dC, C.size() * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(dA), cudaFree(dB), cudaFree(dC);
  double worst = 0;
  for (size_t i = 0; i < C.size(); ++i) {
    const double e = std::fabs(double(C[i]) - ref[i]) / (1e-4 + 1e-4 * std::fabs(ref[i]));
    worst = std::isnan(e) ? INFINITY : std::fmax(worst, e);
  }
  std::printf("version %d: %dx%dx%d %s (worst error %.3g of tolerance)\n", v, M, N, K, worst <= 1 ? "OK" : "WRONG",
              worst);
  return worst <= 1;
}

// ---- the cases ------------------------------------------------------------------------------------
struct Case {
  const char* name;
  int M, N, K;
};
const Case kCases[] = {{"gemm_4096", 4096, 4096, 4096}};

#ifdef NIMBUS_BENCH_CASES
// ---- full-size cases (nvcc + cuBLAS) -----------------------------------------------------------
bool run_case(const Case& cs, const std::vector<int>& versions, double budget_ms, const std::string& device) {
  const int M = cs.M, N = cs.N, K = cs.K;
  std::fprintf(stderr, "== %s (%dx%dx%d)\n", cs.name, M, N, K);
  std::vector<Impl> impls;
  impls.push_back(Impl{"cublas", "fp32"});  // first: ours report its time
  for (int v : versions) impls.push_back(Impl{"nimbus_v" + std::to_string(v), "fp32", true});
  impls.push_back(Impl{"cublas", "tf32"});
  impls.push_back(Impl{"cublas", "bf16"});

  // Inputs uniform in [-1, 1); the float64 reference of 1000 sampled C elements.
  const int64_t nA = int64_t(M) * K, nB = int64_t(K) * N, nC = int64_t(M) * N;
  DevBuf A(size_t(nA) * 4), B(size_t(nB) * 4), C(size_t(nC) * 4), A16(size_t(nA) * 2), B16(size_t(nB) * 2);
  uint64_t seed = std::hash<std::string>{}(cs.name);
  fill_uniform(A.f(), nA, seed + 1);
  fill_uniform(B.f(), nB, seed + 2);
  const std::vector<float> hA = download(A.f(), nA), hB = download(B.f(), nB);
  const std::vector<int64_t> idx = sample_indices(nC, seed + 3);
  std::vector<double> ref(idx.size());
  for (size_t j = 0; j < idx.size(); ++j) {
    const int64_t i = idx[j] / N, c = idx[j] % N;
    double acc = 0;
    for (int64_t k = 0; k < K; ++k) acc += double(hA[size_t(i * K + k)]) * hB[size_t(k * N + c)];
    ref[j] = acc;
  }
  const auto poison = [&] { C.poison(); };
  const auto sampled = [&] { return gather(C.f(), idx); };
  for (Impl& im : impls) {
    // bf16 reads A and B in 2 bytes and still writes an fp32 C.
    im.bytes = (im.precision == "bf16" ? 2.0 : 4.0) * double(nA + nB) + 4.0 * double(nC);
    if (im.ours) {
      const GemmFn f = kVersions[std::atoi(im.name.c_str() + 8)];
      measure(im, 1, cs.name, [] {}, poison, [&] { f(M, N, K, A.f(), B.f(), C.f()); }, sampled, ref, budget_ms);
    } else if (im.precision == "bf16") {
      const auto prepare = [&] {
        bench::to_bf16(A16.p, A.f(), bench::Dims4{1, 1, 1, nA}, false);
        bench::to_bf16(B16.p, B.f(), bench::Dims4{1, 1, 1, nB}, false);
      };
      measure(im, 1, cs.name, prepare, poison,
              [&] { bench::cublas_gemm(bench::Precision::bf16, M, N, K, A16.p, B16.p, C.f()); }, sampled, ref,
              budget_ms);
    } else {
      const bench::Precision p = im.precision == "fp32" ? bench::Precision::fp32 : bench::Precision::tf32;
      measure(im, 1, cs.name, [] {}, poison, [&] { bench::cublas_gemm(p, M, N, K, A.p, B.p, C.f()); }, sampled, ref,
              budget_ms);
    }
  }
  return print_rows(cs.name, impls, 2.0 * M * N * double(K), 1, device, "cublas_fp32");
}
#endif

// ---- driver -------------------------------------------------------------------------------------
int usage(const char* prog) {
  std::fprintf(stderr, "usage: %s [--versions 1,3] | --list | --case NAME|all [--case ...] [--versions 1,3] "
                       "[--budget-ms MS]\n", prog);
  return 2;
}

int main(int argc, char** argv) {
  std::vector<int> versions;
  for (int v = 1; v <= kLast; ++v) versions.push_back(v);
  std::vector<std::string> names;
  double budget_ms = 150;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--list") {
      for (const Case& c : kCases) std::printf("%s\n", c.name);
      return 0;
    } else if (arg == "--case" && i + 1 < argc) {
      names.push_back(argv[++i]);
    } else if (arg == "--versions" && i + 1 < argc) {
      versions = split_ints(argv[++i]);
      if (versions.empty()) return usage(argv[0]);
      for (int v : versions)
        if (v < 1 || v > kLast) return usage(argv[0]);
    } else if (arg == "--budget-ms" && i + 1 < argc) {
      budget_ms = std::atof(argv[++i]);
    } else {
      return usage(argv[0]);
    }
  }
  if (names.empty()) {  // small odd sizes, every version
    bool ok = true;
    for (int v : versions) ok = validate(v, 67, 45, 33) && validate(v, 130, 70, 19) && ok;
    return ok ? 0 : 1;
  }
  std::vector<Case> todo;
  for (const std::string& nm : names)
    for (const Case& c : kCases)
      if (nm == "all" || nm == c.name) todo.push_back(c);
  if (todo.empty()) {
    std::fprintf(stderr, "unknown case; --list prints the names\n");
    return 2;
  }
#ifdef NIMBUS_BENCH_CASES
  require_device();
  const std::string device = device_name();
  bool ok = true;
  try {
    for (const Case& c : todo) ok = run_case(c, versions, budget_ms, device) && ok;
  } catch (const std::exception& e) {  // outside any one implementation: allocation, inputs, copies
    std::fprintf(stderr, "gpu_bench_gemm: %s\n", e.what());
    return 1;
  }
  return ok ? 0 : 1;
#else
  (void)budget_ms;
  std::fprintf(stderr, "--case needs the nvcc build with cuBLAS (gpu_bench_gemm, bench/cuda/gpu.cmake)\n");
  return 2;
#endif
}
