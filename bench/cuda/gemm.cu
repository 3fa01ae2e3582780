/* bench/cuda/gemm.cu: numbered SGEMM kernels (llm.c dev/cuda style), each checked against the CPU
 * reference, and on a GPU timed against cuBLAS in fp32, TF32 and bf16.
 *
 * C (M x N) = A (M x K) B (K x N), row-major, no transposes (the conv forward case).
 *   version 1  naive: one thread per C element, every operand read from global memory
 *   version 2  shared-memory tiles (the engine's kernel, kernels/cuda/gemm.cu, tile 16)
 *   version 3  register blocking: a 64x64 C tile per 256-thread block, each thread 4x4 outputs
 *              from 8-deep shared-memory slices of A and B (fewer shared loads per FMA);
 *              kernels/cuda/gemm.cu with tile 64
 *   version 4  tensor cores, TF32 (mma.sync m16n8k8; precision "tf32", compared with cuBLAS TF32):
 *              a 128x128 C tile per 256-thread block, 8 warps of 64x32 (4x4 m16n8 fragments,
 *              64 accumulators a thread); A and B tiles 32 deep staged with 16-byte cp.async,
 *              double-buffered (bench/cuda/mma_tiles.cuh)
 *   version 5  tensor cores, bf16 (mma.sync m16n8k16; precision "bf16", compared with cuBLAS bf16):
 *              version 4's tiles and pipeline with bf16 operands fetched by ldmatrix. Takes bf16
 *              A and B (the fp32 inputs rounded to nearest even, made untimed like cuBLAS's)
 *   version 6  the backend's tensor-core GEMM in TF32 (kernels/cuda/linear_tc.cu gemm_tc: the linear
 *              layer's kernel on mma_core.cuh, 128x128 or 64x64 tiles by size, every element
 *              staged by its own 4-byte cp.async, two stages)
 *   version 7  the same in bf16 (ldmatrix fragments; bf16 A and B as version 5's)
 *
 * Usage:
 *   bench_cuda_gemm [--versions 1,5]     validate every version at small odd sizes against
 *                                        cpu::gemm_ref in double (both builds; a ctest test);
 *                                        versions 4-7 with their precision's bound, see validate_mma
 *                                        (emulator: forward, reverse and shuffled order)
 *   gpu_bench_gemm --list                the case names (both builds; needs no GPU)
 *   gpu_bench_gemm --case gemm_4096|all [--versions 4,5] [--budget-ms 150]
 *                                        nvcc build only: validate at full size (1000 sampled C
 *                                        elements vs float64), then time our versions and cuBLAS
 *                                        fp32/TF32/bf16; JSON rows on stdout (docs/cuda-backend.md,
 *                                        "Kernel cases"); each version's row names cuBLAS in its
 *                                        own precision as its reference. No GPU: exit 77.
 * Exit status: 0 all passed, 1 a version failed validation, 2 bad usage, 77 no CUDA device.
 */
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "bench/cuda/bench_util.cuh"
#include "bench/cuda/mma_tiles.cuh"
#include "kernels/common/bfloat16.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/linear_tc.h"
#if defined(__CUDACC__) && defined(NIMBUS_BENCH_CUBLAS)
#include "bench/cuda/references.cuh"
#define NIMBUS_BENCH_CASES 1
#endif

using namespace nimbus;

// What a version reads: fp32 A and B (versions 1-4), or their bf16 copies as uint16_t bit
// patterns (version 5). C is always fp32.
struct Inputs {
  const float* A;
  const float* B;
  const uint16_t* A16;
  const uint16_t* B16;
};

// ---- version 1: naive -------------------------------------------------------------------------
__global__ void gemm_naive_kernel(int M, int N, int K, const float* A, const float* B, float* C) {
  const int row = int(blockIdx.y * blockDim.y + threadIdx.y), col = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (row >= M || col >= N) return;
  float acc = 0.0f;
  for (int k = 0; k < K; ++k) acc += A[int64_t(row) * K + k] * B[int64_t(k) * N + col];
  C[int64_t(row) * N + col] = acc;
}

void gemm1(int M, int N, int K, const Inputs& in, float* C) {
  launch(gemm_naive_kernel, dim3{unsigned((N + 15) / 16), unsigned((M + 15) / 16)}, dim3{16, 16}, 0, nullptr, M, N, K,
         in.A, in.B, C);
  cuda::check_launch("gemm1");
}

// ---- version 2: shared-memory tiles (the engine's kernel) ---------------------------------------
void gemm2(int M, int N, int K, const Inputs& in, float* C) {
  cuda::gemm(false, false, M, N, K, 1.0f, in.A, K, in.B, N, 0.0f, C, N, 16);
}

// ---- version 3: register-blocked 64x64 tile, 4x4 per thread (the engine's tile == 64 kernel) -------
void gemm3(int M, int N, int K, const Inputs& in, float* C) {
  cuda::gemm(false, false, M, N, K, 1.0f, in.A, K, in.B, N, 0.0f, C, N, 64);
}

// ---- version 4: tensor cores, TF32 (mma.sync m16n8k8) ----------------------------------------------
// What changes from version 3: the multiply-adds leave the FP32 pipes for the tensor cores. One
// mma.sync.m16n8k8 is 16 x 8 x 8 = 1024 multiply-adds issued by a warp (an FFMA: 32); its operands
// are TF32 (fp32 rounded to a 10-bit mantissa with cvt.rna.tf32, relative error 2^-11), the sums fp32.
//   Tile: 128x128 of C per 256-thread block, 8 warps of 64x32, each a 4x4 grid of m16n8
//   fragments (64 accumulators a thread, version 3: 16), so every value a warp reads from shared
//   memory feeds 4 mma instead of 4 FMAs.
//   Loads: 16-byte cp.async from global straight into shared memory (no registers, no LDG.32),
//   double-buffered: k-tile kt + 1 is in flight while the warps multiply k-tile kt; one barrier
//   before a tile is read, one after (the buffer is then refilled).
//   Any M, N, K: loads past the matrix are zero-filled (cp.async src_bytes 0), stores are guarded.
//   The 16-byte path needs K and N multiples of 4 (rows 16-byte aligned); otherwise each element is
//   one 4-byte cp.async (kVec false), slower but any size.
//   mma_tiles.cuh holds the layout (padded rows: conflict-free fragment reads), the loaders, the
//   warp's mma loop, the double-buffered k loop and the epilogue walk; this kernel puts them together.
// Expected bottleneck: shared-memory bandwidth for the fragments. Per k-step of 8 a warp issues 24
// scalar shared loads (16 for A, 8 for B: one 128-byte wavefront each) and 24 cvt for 16 mma, so at
// one wavefront per clock per SM the loads, not the tensor cores, set the pace; then the L2 traffic
// of a 128x128 tile (32 flop per byte loaded) and the short 2-stage pipeline. Next steps: ldmatrix-
// friendly layouts, larger warp tiles, more stages, and on sm_90 wgmma with TMA (cuBLAS's path).
//
// Versions 4 and 5 are this one kernel over the operand type T: float (TF32, m16n8k8) or uint16_t
// (bf16 bit patterns, m16n8k16 with ldmatrix); kVec picks the 16-byte cp.async staging.
template <typename T, bool kVec>
__global__ void __launch_bounds__(mma_tiles::kThreads)
    gemm_mma_kernel(int M, int N, int K, const T* A, const T* B, float* C) {
  using namespace mma_tiles;
  using L = StageLayout<T>;
  DYNAMIC_SMEM(T, smem);  // two stages of [A tile kBM x L::kLda | B tile kBK x L::kLdb]
  const int warp = int(threadIdx.x) / 32, wm = warp / kWarpsN, wn = warp % kWarpsN;
  const int m0 = int(blockIdx.y) * kBM, n0 = int(blockIdx.x) * kBN;
  // Start the copies of k-tile kt into buffer buf (A: rows m0.., columns k; B: rows k.., columns n0..).
  const auto stage = [&](int buf, int kt) {
    T* As = smem + buf * L::kStage;
    T* Bs = As + kBM * L::kLda;
    if constexpr (kVec) {
      stage_tile_cp16<T, kBM, kBK, L::kLda>(As, A, M, K, m0, kt * kBK);
      stage_tile_cp16<T, kBK, kBN, L::kLdb>(Bs, B, K, N, kt * kBK, n0);
    } else if constexpr (std::is_same_v<T, float>) {
      stage_tile_cp4<kBM, kBK, L::kLda>(As, A, M, K, m0, kt * kBK);
      stage_tile_cp4<kBK, kBN, L::kLdb>(Bs, B, K, N, kt * kBK, n0);
    } else {
      stage_tile_plain<T, kBM, kBK, L::kLda>(As, A, M, K, m0, kt * kBK);
      stage_tile_plain<T, kBK, kBN, L::kLdb>(Bs, B, K, N, kt * kBK, n0);
    }
    cp_async_commit();  // an empty group on the plain path
  };

  Acc acc = {};  // 4 x 4 fragments x c0..c3
  double_buffered_k_loop((K + kBK - 1) / kBK, stage, [&](int buf) {
    const T* As = smem + buf * L::kStage;
    if constexpr (std::is_same_v<T, float>)
      warp_mma_tf32(As, As + kBM * L::kLda, acc, wm, wn);
    else
      warp_mma_bf16(As, As + kBM * L::kLda, acc, wm, wn);
  });

  store_c_row_major(acc, C, M, N, m0, n0, wm, wn);
}

// The launch of gemm_mma_kernel<T>: the 16-byte path when K and N are whole 16-byte chunks of T
// and both operands are 16-byte aligned.
template <typename T>
void gemm_mma(int M, int N, int K, const T* A, const T* B, float* C, const char* what) {
  using namespace mma_tiles;
  using L = StageLayout<T>;
  if (M <= 0 || N <= 0) return;
  constexpr int kPerChunk = 16 / int(sizeof(T));
  const bool vec = K % kPerChunk == 0 && N % kPerChunk == 0 && aligned16(A) && aligned16(B);
  void (*kernel)(int, int, int, const T*, const T*, float*) =
      vec ? gemm_mma_kernel<T, true> : gemm_mma_kernel<T, false>;
  if constexpr (L::kSmem > 48 * 1024) {
    static const bool smem_allowed = [] {  // tf32: 70 KiB of dynamic shared memory, above the 48 KiB default
      CK(cudaFuncSetAttribute(gemm_mma_kernel<T, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(L::kSmem)));
      CK(cudaFuncSetAttribute(gemm_mma_kernel<T, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(L::kSmem)));
      return true;
    }();
    (void)smem_allowed;
  }
  launch(kernel, dim3(unsigned((N + kBN - 1) / kBN), unsigned((M + kBM - 1) / kBM)), dim3(kThreads), L::kSmem,
         nullptr, M, N, K, A, B, C);
  cuda::check_launch(what);
}

void gemm4(int M, int N, int K, const Inputs& in, float* C) { gemm_mma(M, N, K, in.A, in.B, C, "gemm4"); }

// ---- version 5: tensor cores, bf16 (mma.sync m16n8k16, ldmatrix) ------------------------------------
// What changes from version 4: bf16 operands (8-bit mantissa, relative rounding 2^-9; fp32
// accumulation and an fp32 C). A and B come in as bf16 (the case rounds the fp32 inputs to nearest
// even once, untimed, as for cuBLAS's bf16 row), so each 16-byte cp.async moves 8 elements and a
// k-tile is half the bytes. Fragments come from ldmatrix: one ldmatrix.x4 gives a whole 16x16 A
// fragment (4 registers, versus 4 scalar loads for version 4's 16x8), one ldmatrix.x4.trans two
// 16x8 B fragments of the row-major B tile; no cvt. One mma.m16n8k16 does twice the work of
// m16n8k8 and the tensor cores run bf16 at twice the TF32 rate.
//   Same tile, warps, pipeline, zero-fill and epilogue as version 4. The 16-byte path needs K and
//   N multiples of 8; otherwise plain 2-byte loads and stores stage the tiles (cp.async copies at
//   least 4 bytes, and odd-length bf16 rows are only 2-byte aligned).
// Expected bottleneck: still shared memory: per k-step of 16 a warp reads 24 wavefronts (6 ldmatrix.x4)
// for 16 mma that take twice version 4's work, so the ratio per flop halves but the tensor cores
// also got twice as fast; then latency, with only two k16 steps between barriers and 2 stages.
void gemm5(int M, int N, int K, const Inputs& in, float* C) { gemm_mma(M, N, K, in.A16, in.B16, C, "gemm5"); }

// ---- versions 6 and 7: the backend's tensor-core GEMM (kernels/cuda/linear_tc.cu) ---------------------
void gemm6(int M, int N, int K, const Inputs& in, float* C) {
  cuda::gemm_tc<float>(false, false, M, N, K, in.A, K, in.B, N, C, N);
}
void gemm7(int M, int N, int K, const Inputs& in, float* C) {
  cuda::gemm_tc<bfloat16>(false, false, M, N, K, reinterpret_cast<const bfloat16*>(in.A16), K,
                          reinterpret_cast<const bfloat16*>(in.B16), N, C, N);
}

using GemmFn = void (*)(int M, int N, int K, const Inputs& in, float* C);
struct Version {
  GemmFn run;
  const char* precision;  // of the arithmetic: "fp32", "tf32" (inputs fp32), "bf16" (inputs bf16)
};
const Version kVersions[] = {{nullptr, ""},     {gemm1, "fp32"}, {gemm2, "fp32"}, {gemm3, "fp32"},
                             {gemm4, "tf32"},   {gemm5, "bf16"}, {gemm6, "tf32"}, {gemm7, "bf16"}};
constexpr int kLast = 7;

// ---- small validation (both builds) -----------------------------------------------------------
// fp32 versions: max |got - ref| / (1e-4 + 1e-4 |ref|) over C, <= 1 passes.
bool validate_fp32(int v, int M, int N, int K) {
  std::vector<float> A(size_t(M) * K), B(size_t(K) * N), C(size_t(M) * N);
  for (size_t i = 0; i < A.size(); ++i) A[i] = float((i * 37) % 17) / 8.0f - 1.0f;
  for (size_t i = 0; i < B.size(); ++i) B[i] = float((i * 53) % 19) / 9.0f - 1.0f;
  std::vector<double> ref(C.size());
  std::vector<double> Ad(A.begin(), A.end()), Bd(B.begin(), B.end());
  cpu::gemm_ref<double>(false, false, M, N, K, 1.0, Ad.data(), K, Bd.data(), N, 0.0, ref.data(), N);
  float *dA = upload(A), *dB = upload(B), *dC = nullptr;
  CK(cudaMalloc(&dC, C.size() * sizeof(float)));
  CK(cudaMemset(dC, 0xFF, C.size() * sizeof(float)));  // NaN: every element must be written
  kVersions[v].run(M, N, K, Inputs{dA, dB, nullptr, nullptr}, dC);
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

// Tensor-core versions (tf32, bf16), inputs uniform in [-1, 1), two float64 references:
//   ref      of the fp32 inputs: rel_err = ||C - ref|| / ||ref|| must be within the precision's bound
//            (bench_util.cuh's bound(): tf32 5e-3, bf16 2e-2), as in the --case rows;
//   rounded  of the operands as the tensor cores see them (cvt.rna.tf32, or bf16 round-to-nearest-
//            even): every element within fp32 accumulation error, |C - rounded| <= 1e-5 sum_k |a b|.
//            Much tighter than the norm bound, it catches a wrong or lost fragment in a single element.
// Under the emulator: forward, reverse and shuffled order, bitwise equal; v5 also reports ldmatrix
// bank conflicts (the padded layout should have none).
bool validate_mma(int v, int M, int N, int K) {
  const std::string precision = kVersions[v].precision;
  const bool bf16 = precision == "bf16";
  std::mt19937 rng(uint32_t(M * 1000003 + N * 1009 + K));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> A(size_t(M) * K), B(size_t(K) * N);
  for (float& x : A) x = u(rng);
  for (float& x : B) x = u(rng);
  std::vector<uint16_t> A16(A.size()), B16(B.size());
  std::vector<double> Ar(A.size()), Br(B.size());  // the operands' values inside the mma
  for (size_t i = 0; i < A.size(); ++i)
    A16[i] = bf16_from_float_rne(A[i]), Ar[i] = bf16 ? bf16_to_float(A16[i]) : mma_tiles::round_tf32(A[i]);
  for (size_t i = 0; i < B.size(); ++i)
    B16[i] = bf16_from_float_rne(B[i]), Br[i] = bf16 ? bf16_to_float(B16[i]) : mma_tiles::round_tf32(B[i]);
  std::vector<double> ref(size_t(M) * N), rounded(ref.size()), mag(ref.size());
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0, sr = 0, sm = 0;
      for (int k = 0; k < K; ++k) {
        const size_t a = size_t(i) * K + k, b = size_t(k) * N + j;
        s += double(A[a]) * B[b], sr += Ar[a] * Br[b], sm += std::fabs(Ar[a] * Br[b]);
      }
      ref[size_t(i) * N + j] = s, rounded[size_t(i) * N + j] = sr, mag[size_t(i) * N + j] = sm;
    }
  float *dA = upload(A), *dB = upload(B);
  uint16_t *dA16 = mma_tiles::upload_any(A16), *dB16 = mma_tiles::upload_any(B16);
  const double bnd = mma_tiles::precision_bound(precision);
  const bool ok = mma_tiles::check_in_every_order(
      [&](float* dC) { kVersions[v].run(M, N, K, Inputs{dA, dB, dA16, dB16}, dC); }, ref, rounded, mag, bnd,
      [&](const char* order, const mma_tiles::MmaCheck& c) {
        std::string extra;
#ifndef __CUDACC__
        if (bf16) extra = ", ldmatrix bank conflicts " + std::to_string(emu::last_launch_stats().smem_bank_conflicts);
#endif
        std::printf("version %d (%s): %dx%dx%d %-7s %s (rel_err %.2e, bound %.0e; vs rounded operands %.3g of "
                    "tolerance%s%s)\n",
                    v, precision.c_str(), M, N, K, order, c.pass ? "OK" : "WRONG", c.rel, bnd, c.worst,
                    extra.c_str(), c.same ? "" : "; differs from the first order");
      });
  cudaFree(dA), cudaFree(dB), cudaFree(dA16), cudaFree(dB16);
  return ok;
}

bool validate(int v, int M, int N, int K) {
  return std::string(kVersions[v].precision) == "fp32" ? validate_fp32(v, M, N, K) : validate_mma(v, M, N, K);
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
  // Per precision: cuBLAS in it, then our versions in it (each row names the reference in its own
  // precision, mma_tiles::print_rows_by_precision).
  std::vector<Impl> impls;
  for (const char* p : {"fp32", "tf32", "bf16"}) {
    impls.push_back(Impl{"cublas", p});
    for (int v : versions)
      if (std::string(kVersions[v].precision) == p) impls.push_back(Impl{"nimbus_v" + std::to_string(v), p, true});
  }

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
    const auto to_bf16 = [&] {  // the bf16 inputs of cuBLAS bf16 and version 5, made untimed
      bench::to_bf16(A16.p, A.f(), bench::Dims4{1, 1, 1, nA}, false);
      bench::to_bf16(B16.p, B.f(), bench::Dims4{1, 1, 1, nB}, false);
    };
    if (im.ours) {
      const GemmFn f = kVersions[std::atoi(im.name.c_str() + 8)].run;
      const Inputs in{A.f(), B.f(), static_cast<const uint16_t*>(A16.p), static_cast<const uint16_t*>(B16.p)};
      const auto prepare = [&] {
        if (im.precision == "bf16") to_bf16();
      };
      measure(im, 1, cs.name, prepare, poison, [&] { f(M, N, K, in, C.f()); }, sampled, ref, budget_ms);
    } else if (im.precision == "bf16") {
      measure(im, 1, cs.name, to_bf16, poison,
              [&] { bench::cublas_gemm(bench::Precision::bf16, M, N, K, A16.p, B16.p, C.f()); }, sampled, ref,
              budget_ms);
    } else {
      const bench::Precision p = im.precision == "fp32" ? bench::Precision::fp32 : bench::Precision::tf32;
      measure(im, 1, cs.name, [] {}, poison, [&] { bench::cublas_gemm(p, M, N, K, A.p, B.p, C.f()); }, sampled, ref,
              budget_ms);
    }
  }
  return mma_tiles::print_rows_by_precision(cs.name, impls, 2.0 * M * N * double(K), 1, device, "cublas");
}
#else
constexpr RunCase<Case> run_case = nullptr;  // no --case timing in this build (bench_main says so)
#endif

// ---- driver -------------------------------------------------------------------------------------
// Small odd sizes, every chosen version. Odd sizes (K, N not multiples of 4: the 4-byte / plain
// staging paths of versions 4-5), then partial tiles on the 16-byte paths: 67x44x36 (v4: 16-byte,
// v5: plain), 150x136x72 (both 16-byte; 2x2 blocks, 3 k-tiles, so the double buffer is reused).
bool validate_small(const std::vector<int>& versions) {
  const int sizes[][3] = {{67, 45, 33}, {130, 70, 19}, {67, 44, 36}, {150, 136, 72}};
  bool ok = true;
  for (int v : versions)
    for (const auto& sz : sizes) ok = validate(v, sz[0], sz[1], sz[2]) && ok;
  return ok;
}

int main(int argc, char** argv) {
  const std::vector<Case> cases(std::begin(kCases), std::end(kCases));
  return bench_main(argc, argv, BenchProgram<Case>{"gpu_bench_gemm", "cuBLAS", kLast, cases, validate_small, run_case});
}
