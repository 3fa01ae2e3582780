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
 *   version 8  Hopper (sm_90a), bf16: TMA boxes (128-byte swizzle) into a 4-stage shared-memory ring
 *              with full/empty mbarriers, one producer warpgroup (one elected thread issues the
 *              copies) and two consumer warpgroups issuing wgmma m64n256k16 (B MN-major); a 128x256
 *              C tile per 384-thread block; setmaxnreg 40 / 232. Needs K and N multiples of 8
 *   version 9  the same in TF32 (wgmma m64n128k8), computed as C^T = B^T A^T because tf32 wgmma
 *              reads only K-major shared operands: B^T fragments from registers, A through a
 *              descriptor; a 128x128 C tile. Needs K and N multiples of 4. Versions 8 and 9 run on
 *              compute capability 9.0 only; elsewhere the nvcc build skips them with a message
 *
 * Usage:
 *   bench_cuda_gemm [--versions 1,5]     validate every version at small odd sizes against
 *                                        cpu::gemm_ref in double (both builds; a ctest test);
 *                                        versions 4-9 with their precision's bound, see validate_mma
 *                                        (emulator: forward, reverse and shuffled order); 8 and 9
 *                                        must refuse the sizes TMA cannot describe
 *   gpu_bench_gemm --list                the case names (both builds; needs no GPU)
 *   gpu_bench_gemm --case gemm_4096|all [--versions 4,5] [--budget-ms 150]
 *                                        nvcc build only: validate at full size (1000 sampled C
 *                                        elements vs float64), then time our versions and cuBLAS
 *                                        fp32/TF32/bf16; JSON rows on stdout (docs/cuda-backend.md,
 *                                        "Kernel cases"); each version's row names cuBLAS in its
 *                                        own precision as its reference. No GPU: exit 77.
 * Exit status: 0 all passed, 1 a version failed validation, 2 bad usage, 77 no CUDA device.
 */
#include <algorithm>
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
#include "kernels/cuda/hopper.h"
#include "kernels/cuda/linear_tc.h"
#if defined(__CUDACC__) && defined(NIMBUS_BENCH_CUBLAS)
#include "bench/cuda/references.cuh"
#define NIMBUS_BENCH_CASES 1
#endif

using namespace nimbus;

// What a version reads: fp32 A and B (versions 1-4, 6, 9), or their bf16 copies as uint16_t bit
// patterns (versions 5, 7, 8). C is always fp32.
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

// ---- versions 8 and 9: Hopper's own path (TMA, an mbarrier ring, wgmma), warp-specialized --------
// What changes from versions 4-7: on sm_90 the tensor cores are fed from shared memory by the copy
// engine and read by warpgroup-wide asynchronous MMAs, so no thread moves operands any more.
//   Loads: TMA (cp.async.bulk.tensor): one elected thread issues a whole 2-d box per copy, described by
//   a tensor map made on the host (encode_tensor_map); the copy engine writes it with the 128-byte
//   swizzle (16-byte chunk c of a 128-byte line l lands at chunk c ^ (l % 8): conflict-free for wgmma)
//   and counts its bytes on an mbarrier (complete_tx). Out-of-bounds parts of a box are zero-filled,
//   so partial tiles need no special case.
//   Pipeline: a ring of kStages = 4 stages with two mbarriers each. full[s] (count 1): the producer's
//   arrive.expect_tx(stage bytes) plus the copies' complete_tx; empty[s] (count 256): every consumer
//   thread arrives once it is done with the stage. The producer may run up to 4 k-tiles ahead
//   (versions 4-7: 1, with a __syncthreads() per k-tile); nobody waits at a block barrier.
//   Parities: k-tile kt uses stage kt % 4 in round r = kt / 4. Consumers wait for phase r of full[s]
//   (try_wait.parity(r & 1)); the producer, before refilling the stage in round r, waits for the
//   consumers' release of round r - 1: parity (r & 1) ^ 1, which a fresh barrier (phase 0) passes at
//   once in round 0.
//   Warp specialization: 384 threads = warpgroup 0, the producer (setmaxnreg.dec to 40 registers; one
//   elected thread issues everything, the other 127 threads exit), and warpgroups 1-2, the consumers
//   (setmaxnreg.inc to 232: 128 x 40 + 256 x 232 = 64,512 of the SM's 65,536 registers), 64 rows
//   each of the 128-row block tile.
//   Math: wgmma.mma_async m64nNk16 (bf16) / m64nNk8 (tf32): one instruction per warpgroup per k-step
//   multiplies 64 x N x k16 (v8, N = 256: 262,144 multiply-adds; one mma.sync m16n8k16 is 2,048).
//   Per k-tile a consumer warpgroup fences, issues 4 wgmma, commits them as one group and waits until
//   at most that group is in flight (v8: wait_group 1): the previous k-tile's group is then done, and
//   its stage is released. So the tensor cores always have the next group queued behind the current
//   one. (v9 waits for its own group: see there.)
//   Epilogue: fp32 C from the accumulator fragments, bounds-checked (M and N may end mid-tile).
// Expected bottleneck (v8; not yet measured: no GPU run so far): the tensor cores, if the ring keeps
// them fed; then the epilogue (plain 8-byte stores straight from the fragments, no TMA store, not
// overlapped with the next tile's math) and the last wave (4096^2 / (128 x 256) = 512 blocks on 132
// SMs, one block per SM). Next steps: a persistent grid, TMA-store epilogue, clusters with multicast.
// Shape rules (TMA): row strides must be multiples of 16 bytes, so K and N multiples of 8 (bf16) or 4
// (fp32); M is free; A and B 128-byte aligned (the base of a swizzled map). The launchers refuse anything else with a nimbus::Error
// (hopper_shape_problem). Runs only on sm_90a (compute capability 9.0); the nvcc build skips these
// versions elsewhere (hopper_device()).
namespace hopper_gemm {
using namespace nimbus::cuda;  // encode_tensor_map, TensorMapDesc, TmaType, TmaSwizzle

constexpr int kStages = 4;
constexpr int kThreads = 384;           // warpgroup 0: producer; warpgroups 1 and 2: consumers
constexpr int kConsumerThreads = 256;   // the arrival count of empty[s]
constexpr int kBM = 128;                // block tile rows of the wgmma M side (2 consumer warpgroups x 64)
constexpr int kProducerRegs = 40, kConsumerRegs = 232;
constexpr int kSwizzleRepeat = 1024;    // 128B swizzle: 8 lines of 128 bytes

// Shared memory: kStages stages of stage_bytes (each a multiple of 1024, so every tile starts on the
// swizzle's repeat), then full[kStages] and empty[kStages]. The launch adds 1 KiB: a GPU's dynamic
// shared memory is only 16-byte aligned, the kernel rounds its start up to 1024.
constexpr size_t ring_smem(int stage_bytes) {
  return size_t(kStages) * size_t(stage_bytes) + 2 * kStages * sizeof(uint64_t) + kSwizzleRepeat;
}

__device__ __forceinline__ unsigned char* ring_base() {
  DYNAMIC_SMEM(unsigned char, raw);
  return raw + (kSwizzleRepeat - smem_address(raw) % kSwizzleRepeat) % kSwizzleRepeat;
}

// Thread 0 initialises the barriers; everyone sees them after the __syncthreads().
__device__ __forceinline__ void ring_init(uint64_t* full, uint64_t* empty) {
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full[s], 1);
      mbarrier_init(&empty[s], kConsumerThreads);
    }
    fence_mbarrier_init();
  }
  __syncthreads();
}

// The producer (one thread): per k-tile, wait until the stage is free, announce its bytes on full[s]
// (arrive.expect_tx), then issue(kt, stage, &full[s]) starts the copies.
template <typename Issue>
__device__ __forceinline__ void produce(unsigned char* smem, int stage_bytes, uint64_t* full, uint64_t* empty,
                                        int tiles, uint32_t tx_bytes, Issue&& issue) {
  for (int kt = 0; kt < tiles; ++kt) {
    const int s = kt % kStages;
    mbarrier_wait_parity(&empty[s], (uint32_t(kt / kStages) & 1u) ^ 1u);
    mbarrier_arrive_expect_tx(&full[s], tx_bytes);
    issue(kt, smem + s * stage_bytes, &full[s]);
  }
}

// A consumer warpgroup: per k-tile, wait for the stage's data, mma(kt, stage) issues the wgmma batch
// (wgmma_fence first), commit; wait until at most kInFlight groups are in flight, then release the
// stage whose group is complete: with kInFlight = 1 (version 8) the previous k-tile's, so the next
// batch is queued while one runs; with 0 (version 9) this k-tile's.
template <int kInFlight, typename Mma>
__device__ __forceinline__ void consume(const unsigned char* smem, int stage_bytes, uint64_t* full, uint64_t* empty,
                                        int tiles, Mma&& mma) {
  for (int kt = 0; kt < tiles; ++kt) {
    const int s = kt % kStages;
    mbarrier_wait_parity(&full[s], uint32_t(kt / kStages) & 1u);
    mma(kt, smem + s * stage_bytes);
    wgmma_commit_group();
    wgmma_wait_group<kInFlight>();  // k-tile kt - kInFlight's group is complete: its operands are no longer read
    if (kt >= kInFlight) mbarrier_arrive(&empty[(kt - kInFlight) % kStages]);
  }
  wgmma_wait_group<0>();
}

// ---- version 8: bf16, C tile 128 x BN -----------------------------------------------------------
// Per stage: A tile 128 rows x 64 k (one box, 128-byte lines: 16 KiB), K-major; B tile 64 k x BN
// (BN / 64 boxes of 64 k lines x 64 n, 8 KiB each), n contiguous: MN-major, which bf16 wgmma reads
// with its transpose bit. Descriptors (canonical 128B-swizzled layouts):
//   A: K-major, 8-row groups 1024 bytes apart (SBO); the k16 step moves the start 32 bytes along the
//      line; warpgroup c reads rows 64c.. (start + 8 KiB).
//   B: MN-major, n in 64-wide blocks one box (8 KiB, LBO) apart, k in groups of 8 lines 1024 bytes
//      apart (SBO); the k16 step moves the start 16 lines (2 KiB).
template <int BN>
struct Bf16Tile {
  static constexpr int kTileK = 64;                     // bf16: 64 x 2 bytes = the 128-byte swizzle span
  static constexpr int kABytes = kBM * kTileK * 2;      // 16 KiB
  static constexpr int kBBox = 64 * kTileK * 2;         // 8 KiB: 64 n x 64 k
  static constexpr int kStageBytes = kABytes + (BN / 64) * kBBox;
  static constexpr size_t kSmem = ring_smem(kStageBytes);
  static_assert(BN % 64 == 0 && BN >= 64 && BN <= 256, "BN: 64, 128, 192 or 256");
};

template <int BN>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_wgmma_bf16_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                           float* C, int M, int N, int K) {
  using T = Bf16Tile<BN>;
  unsigned char* smem = ring_base();
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * T::kStageBytes);
  uint64_t* empty = full + kStages;
  const int wg = int(threadIdx.x) / 128, tiles = (K + T::kTileK - 1) / T::kTileK;
  const int m0 = int(blockIdx.y) * kBM, n0 = int(blockIdx.x) * BN;
  ring_init(full, empty);
  if (wg == 0) {  // the producer warpgroup
    setmaxnreg_dec<kProducerRegs>();
    if (threadIdx.x < 32 && elect_one_sync()) {
      tma_prefetch_descriptor(&map_a);
      tma_prefetch_descriptor(&map_b);
      produce(smem, T::kStageBytes, full, empty, tiles, uint32_t(T::kStageBytes),
              [&](int kt, unsigned char* stage, uint64_t* bar) {
                tma_load_2d(stage, &map_a, bar, kt * T::kTileK, m0);
                for (int b = 0; b < BN / 64; ++b)
                  tma_load_2d(stage + T::kABytes + b * T::kBBox, &map_b, bar, n0 + 64 * b, kt * T::kTileK);
              });
    }
    return;
  }
  setmaxnreg_inc<kConsumerRegs>();
  const int c = wg - 1;  // rows 64c .. 64c + 63 of the block tile
  float acc[BN / 2];
  consume<1>(smem, T::kStageBytes, full, empty, tiles, [&](int kt, const unsigned char* stage) {
    const unsigned char* a = stage + c * 64 * 128;
    const unsigned char* b = stage + T::kABytes;
    wgmma_fence();
    for (int kk = 0; kk < T::kTileK / 16; ++kk) {
      const uint64_t da = wgmma_desc(a + 32 * kk, 16, 1024, WgmmaSwizzle::B128);
      const uint64_t db = wgmma_desc(b + 2048 * kk, T::kBBox, 1024, WgmmaSwizzle::B128);
      wgmma_m64k16_bf16<BN, 0, 1>(acc, da, db, kt > 0 || kk > 0);
    }
  });
  wgmma_fence_operand(acc);
  // Accumulator d[4j + i]: row 16w + g + 8(i >> 1), column 8j + 2t + (i & 1) of the warpgroup's 64 x BN.
  const int i = int(threadIdx.x) % 128, w = i / 32, g = (i % 32) / 4, t = i % 4;
  for (int j = 0; j < BN / 8; ++j) {
    const int col = n0 + 8 * j + 2 * t;  // even, and N is a multiple of 8: col < N means col + 1 < N
    if (col >= N) break;
    for (int h = 0; h < 2; ++h) {
      const int row = m0 + 64 * c + 16 * w + g + 8 * h;
      if (row < M) store_vector(C + int64_t(row) * N + col, make_float2(acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]));
    }
  }
}

// ---- version 9: TF32, C tile 128 x 128 (computed transposed) ---------------------------------------
// What changes from version 8: fp32 operands read as TF32 (the precision of versions 4 and 6), so a
// k-tile of 128 bytes is 32 deep, wgmma k8, and a C tile of 128 x 128 (v8's 128 x 256 stage would be
// 96 KiB in fp32). tf32 wgmma has no transpose: both operands must be K-major in shared memory. A (M x K) is, B (K x N,
// n contiguous) is not. So version 9 computes C^T = B^T A^T: the wgmma M side is n (each consumer
// warpgroup 64 n-rows), fed from registers (the _rs form: A fragments may come from registers, and a
// thread can load them from any layout), and the wgmma N side is m, A's K-major tile through a
// descriptor. Per stage: A tile 128 m x 32 k (one box, 128-byte lines of 32 fp32: 16 KiB); B tile
// 32 k x 128 n as 4 boxes of 32 k lines x 32 n (4 KiB each, 128B-swizzled). A consumer thread loads
// its 4 tf32 fragment registers per k8 step with 4-byte shared loads (element (n, k) at box n / 32,
// line k, chunk ((n % 32) / 4) ^ (k % 8)). The wgmma reads those registers asynchronously, and ptxas
// serializes every wgmma of a kernel that writes a wgmma's input registers while a group is in flight
// (warning C7513, seen with two alternating register sets). So a consumer waits for its group
// (wait_group 0) before it loads the next k-tile's fragments; the two consumer warpgroups still
// overlap each other's loads and math. The copy engine moves raw fp32 words; the tensor cores use
// their top 19 bits (tf32 by truncation, the emulator's model: validate_mma's rounded reference for
// this version truncates too).
// Expected bottleneck: the fragment loads (16 four-byte shared loads per thread per k-tile, with
// 2-way bank conflicts) and the wait for each group before the next loads; TF32 math is half bf16's
// rate, so there is more slack for them than in v8. The epilogue writes C transposed from the
// fragments (4-byte stores, 32-byte pieces of 4 rows per warp store).
struct Tf32Tile {
  static constexpr int kTileK = 32;                   // fp32: 32 x 4 bytes = the swizzle span
  static constexpr int kBN = 128;                     // n: 2 consumer warpgroups x 64
  static constexpr int kABytes = kBM * kTileK * 4;    // 16 KiB
  static constexpr int kBBox = 32 * kTileK * 4;       // 4 KiB: 32 n x 32 k
  static constexpr int kStageBytes = kABytes + (kBN / 32) * kBBox;
  static constexpr size_t kSmem = ring_smem(kStageBytes);
};

__global__ void __launch_bounds__(kThreads, 1)
    gemm_wgmma_tf32_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                           float* C, int M, int N, int K) {
  using T = Tf32Tile;
  unsigned char* smem = ring_base();
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * T::kStageBytes);
  uint64_t* empty = full + kStages;
  const int wg = int(threadIdx.x) / 128, tiles = (K + T::kTileK - 1) / T::kTileK;
  const int m0 = int(blockIdx.y) * kBM, n0 = int(blockIdx.x) * T::kBN;
  ring_init(full, empty);
  if (wg == 0) {
    setmaxnreg_dec<kProducerRegs>();
    if (threadIdx.x < 32 && elect_one_sync()) {
      tma_prefetch_descriptor(&map_a);
      tma_prefetch_descriptor(&map_b);
      produce(smem, T::kStageBytes, full, empty, tiles, uint32_t(T::kStageBytes),
              [&](int kt, unsigned char* stage, uint64_t* bar) {
                tma_load_2d(stage, &map_a, bar, kt * T::kTileK, m0);
                for (int b = 0; b < T::kBN / 32; ++b)
                  tma_load_2d(stage + T::kABytes + b * T::kBBox, &map_b, bar, n0 + 32 * b, kt * T::kTileK);
              });
    }
    return;
  }
  setmaxnreg_inc<kConsumerRegs>();
  const int c = wg - 1;  // n rows 64c .. 64c + 63 of the block tile
  const int i = int(threadIdx.x) % 128, w = i / 32, g = (i % 32) / 4, t = i % 4;
  float acc[kBM / 2];
  // The fragments live out here, not in the lambda: wgmma reads them until the wait_group after it
  // returns (PTX: not modified before the wait; the emulator reads them at the wait to check that).
  uint32_t a[T::kTileK / 8][4];
  consume<0>(smem, T::kStageBytes, full, empty, tiles, [&](int kt, const unsigned char* stage) {
    const unsigned char* b = stage + T::kABytes;
    for (int kk = 0; kk < T::kTileK / 8; ++kk)
      for (int r = 0; r < 4; ++r) {  // tf32 A fragment: register r is (row 16w + g + 8(r & 1), k t + 4(r >> 1))
        const int n = 64 * c + 16 * w + g + 8 * (r & 1), k = 8 * kk + t + 4 * (r >> 1);
        const int off = (n / 32) * T::kBBox + k * 128 + ((((n % 32) / 4) ^ (k % 8)) * 16) + (n % 4) * 4;
        a[kk][r] = *reinterpret_cast<const uint32_t*>(b + off);
      }
    wgmma_fence();  // after the fragment registers are written, before the wgmma that read them
    for (int kk = 0; kk < T::kTileK / 8; ++kk)
      wgmma_m64k8_tf32_rs<kBM>(acc, a[kk], wgmma_desc(stage + 32 * kk, 16, 1024, WgmmaSwizzle::B128),
                               kt > 0 || kk > 0);
  });
  wgmma_fence_operand(acc);
  // d[4j + i2] is (n row 16w + g + 8(i2 >> 1), m column 8j + 2t + (i2 & 1)) of the transposed tile.
  for (int j = 0; j < kBM / 8; ++j)
    for (int i2 = 0; i2 < 4; ++i2) {
      const int n = n0 + 64 * c + 16 * w + g + 8 * (i2 >> 1), m = m0 + 8 * j + 2 * t + (i2 & 1);
      if (m < M && n < N) C[int64_t(m) * N + n] = acc[4 * j + i2];
    }
}

// What a launch of version 8 (bf16) or 9 must do, for the emulator's counters: per block, per k-tile one
// A box and 4 B boxes, 4 wgmma per consumer warpgroup, and mbarrier phases: full[s] once per k-tile,
// empty[s] once per k-tile released (v8: all but the last, whose group ends after the loop; v9: all).
struct RingCounts {
  int64_t tma, wgmma, phases;
};
RingCounts expected_counts(bool bf16, int M, int N, int K) {
  const int bn = bf16 ? 256 : Tf32Tile::kBN, tk = bf16 ? Bf16Tile<256>::kTileK : Tf32Tile::kTileK;
  const int64_t blocks = int64_t((N + bn - 1) / bn) * ((M + kBM - 1) / kBM), tiles = (K + tk - 1) / tk;
  const int b_boxes = bf16 ? bn / 64 : bn / 32, steps = bf16 ? tk / 16 : tk / 8;
  return {blocks * tiles * (1 + b_boxes), blocks * 2 * tiles * steps, blocks * (2 * tiles - (bf16 ? 1 : 0))};
}

// "" when the TMA versions can run C = A B (A M x K, B K x N, elements of elem_bytes), else why not.
std::string hopper_shape_problem(int elem_bytes, int M, int N, int K, const void* A, const void* B) {
  const int per16 = 16 / elem_bytes;
  if (M < 1 || N < 1 || K < 1) return str("M, N and K must be positive (", M, "x", N, "x", K, ")");
  if (K % per16 || N % per16)
    return str("TMA needs 16-byte row strides: K = ", K, " and N = ", N, " must be multiples of ", per16);
  if (reinterpret_cast<uintptr_t>(A) % 128 || reinterpret_cast<uintptr_t>(B) % 128)
    return "A and B must be 128-byte aligned (the base of a swizzled tensor map)";
  return "";
}

// A 2-d tensor map of a rows x cols row-major matrix (cols contiguous), box box_cols x box_rows,
// 128-byte swizzle, zero fill outside.
CUtensorMap row_major_map(const void* p, TmaType type, int rows, int cols, int box_rows, int box_cols) {
  CUtensorMap map;
  TensorMapDesc d;
  d.type = type;
  d.rank = 2;
  d.global = p;
  d.dims[0] = uint64_t(cols), d.dims[1] = uint64_t(rows);
  d.strides[0] = uint64_t(cols) * uint64_t(tma_type_bytes(type));
  d.box[0] = uint32_t(box_cols), d.box[1] = uint32_t(box_rows);
  d.swizzle = TmaSwizzle::B128;
  encode_tensor_map(&map, d);
  return map;
}

// A launcher's two tensor maps, kept while A, B and the shape stay the same (a map depends on nothing
// else), so that a timed call of --case launches the kernel and does no driver call.
struct MapPair {
  const void* a = nullptr;
  const void* b = nullptr;
  int M = 0, N = 0, K = 0;
  CUtensorMap ma, mb;
  bool same(const void* a2, const void* b2, int M2, int N2, int K2) const {
    return a == a2 && b == b2 && M == M2 && N == N2 && K == K2;
  }
};

// kBoxK: the k-tile (elements); kBoxB: the B box's width in n.
template <TmaType kType, int kBoxK, int kBoxB>
const MapPair& maps_for(MapPair& cache, const void* A, const void* B, int M, int N, int K) {
  if (!cache.same(A, B, M, N, K)) {
    cache.ma = row_major_map(A, kType, M, K, kBM, kBoxK);
    cache.mb = row_major_map(B, kType, K, N, kBoxK, kBoxB);
    cache.a = A, cache.b = B, cache.M = M, cache.N = N, cache.K = K;
  }
  return cache;
}

using RingKernel = void (*)(CUtensorMap, CUtensorMap, float*, int, int, int);

// smem_allowed: the launcher's own flag (both kernels have one type, so no static here can tell them
// apart): the first launch raises the kernel's dynamic shared memory limit above the 48 KiB default.
void launch_ring(RingKernel kernel, bool& smem_allowed, size_t smem, dim3 grid, const MapPair& maps, float* C, int M,
                 int N, int K, const char* what) {
  if (!smem_allowed) {
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    smem_allowed = true;
  }
  launch(kernel, grid, dim3(kThreads), smem, nullptr, maps.ma, maps.mb, C, M, N, K);
  cuda::check_launch(what);
}

}  // namespace hopper_gemm

void gemm8(int M, int N, int K, const Inputs& in, float* C) {
  using namespace hopper_gemm;
  constexpr int kBN = 256;
  if (M <= 0 || N <= 0) return;
  const std::string problem = hopper_shape_problem(2, M, N, K, in.A16, in.B16);
  NIMBUS_CHECK(problem.empty(), "gemm8: ", problem);
  static MapPair cache;
  static bool smem_allowed = false;
  const MapPair& maps = maps_for<TmaType::BF16, Bf16Tile<kBN>::kTileK, 64>(cache, in.A16, in.B16, M, N, K);
  launch_ring(gemm_wgmma_bf16_kernel<kBN>, smem_allowed, Bf16Tile<kBN>::kSmem,
              dim3(unsigned((N + kBN - 1) / kBN), unsigned((M + kBM - 1) / kBM)), maps, C, M, N, K, "gemm8");
}

void gemm9(int M, int N, int K, const Inputs& in, float* C) {
  using namespace hopper_gemm;
  if (M <= 0 || N <= 0) return;
  const std::string problem = hopper_shape_problem(4, M, N, K, in.A, in.B);
  NIMBUS_CHECK(problem.empty(), "gemm9: ", problem);
  static MapPair cache;
  static bool smem_allowed = false;
  const MapPair& maps = maps_for<TmaType::F32, Tf32Tile::kTileK, 32>(cache, in.A, in.B, M, N, K);
  launch_ring(gemm_wgmma_tf32_kernel, smem_allowed, Tf32Tile::kSmem,
              dim3(unsigned((N + Tf32Tile::kBN - 1) / Tf32Tile::kBN), unsigned((M + kBM - 1) / kBM)), maps, C, M, N,
              K, "gemm9");
}

using GemmFn = void (*)(int M, int N, int K, const Inputs& in, float* C);
struct Version {
  GemmFn run;
  const char* precision;  // of the arithmetic: "fp32", "tf32" (inputs fp32), "bf16" (inputs bf16)
  bool hopper = false;    // TMA + wgmma: needs sm_90a (compute capability 9.0), 16-byte row strides
                          // (hopper_shape_problem), and its tf32 operands are truncated, not rounded
};
const Version kVersions[] = {{nullptr, ""},       {gemm1, "fp32"},       {gemm2, "fp32"}, {gemm3, "fp32"},
                             {gemm4, "tf32"},     {gemm5, "bf16"},       {gemm6, "tf32"}, {gemm7, "bf16"},
                             {gemm8, "bf16", true}, {gemm9, "tf32", true}};
constexpr int kLast = 9;

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
// Under the emulator: forward, reverse and shuffled order, bitwise equal; v5 and v7 also report ldmatrix
// bank conflicts (the padded layout should have none), v8 and v9 the TMA copies, wgmma and mbarrier
// phases of the last order (the ring's traffic, checked against the counts the tiling implies).
// The fp32 word as the Hopper tensor cores read it for tf32: the low 13 mantissa bits dropped.
float truncate_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u &= 0xFFFFE000u;
  std::memcpy(&x, &u, 4);
  return x;
}

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
  // tf32: versions 4 and 6 convert with cvt.rna; version 9's tensor cores read the raw fp32 words
  // and use their top 19 bits (truncation).
  const auto tf32 = [&](float x) { return kVersions[v].hopper ? truncate_tf32(x) : mma_tiles::round_tf32(x); };
  for (size_t i = 0; i < A.size(); ++i)
    A16[i] = bf16_from_float_rne(A[i]), Ar[i] = bf16 ? bf16_to_float(A16[i]) : tf32(A[i]);
  for (size_t i = 0; i < B.size(); ++i)
    B16[i] = bf16_from_float_rne(B[i]), Br[i] = bf16 ? bf16_to_float(B16[i]) : tf32(B[i]);
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
  bool counts_ok = true;
  const bool ok = mma_tiles::check_in_every_order(
      [&](float* dC) { kVersions[v].run(M, N, K, Inputs{dA, dB, dA16, dB16}, dC); }, ref, rounded, mag, bnd,
      [&](const char* order, const mma_tiles::MmaCheck& c) {
        std::string extra;
        bool pass = c.pass;
#ifndef __CUDACC__
        const emu::LaunchStats& st = emu::last_launch_stats();
        if (kVersions[v].hopper) {
          const hopper_gemm::RingCounts want = hopper_gemm::expected_counts(bf16, M, N, K);
          const bool same = st.tma == want.tma && st.wgmma == want.wgmma && st.mbarrier_phases == want.phases;
          counts_ok = counts_ok && same;
          pass = pass && same;
          extra = ", " + std::to_string(st.tma) + " TMA copies, " + std::to_string(st.wgmma) + " wgmma, " +
                  std::to_string(st.mbarrier_phases) + " mbarrier phases" +
                  (same ? "" : str(" WRONG: expected ", want.tma, ", ", want.wgmma, ", ", want.phases));
        }
        else if (bf16)
          extra = ", ldmatrix bank conflicts " + std::to_string(st.smem_bank_conflicts);
#endif
        std::printf("version %d (%s): %dx%dx%d %-7s %s (rel_err %.2e, bound %.0e; vs rounded operands %.3g of "
                    "tolerance%s%s)\n",
                    v, precision.c_str(), M, N, K, order, pass ? "OK" : "WRONG", c.rel, bnd, c.worst,
                    extra.c_str(), c.same ? "" : "; differs from the first order");
      });
  cudaFree(dA), cudaFree(dB), cudaFree(dA16), cudaFree(dB16);
  return ok && counts_ok;
}

bool validate(int v, int M, int N, int K) {
  if (kVersions[v].hopper) {
    // Versions 8 and 9 need 16-byte row strides (TMA): at other sizes the launcher must refuse.
    const std::string problem = hopper_gemm::hopper_shape_problem(std::string(kVersions[v].precision) == "bf16" ? 2 : 4,
                                                                  M, N, K, nullptr, nullptr);
    if (problem.rfind("TMA needs", 0) == 0) {
      std::vector<float> A(size_t(M) * K, 0.0f), B(size_t(K) * N, 0.0f);
      std::vector<uint16_t> Z16(std::max(A.size(), B.size()), 0);
      float *dA = upload(A), *dB = upload(B), *dC = nullptr;
      uint16_t* d16 = mma_tiles::upload_any(Z16);
      CK(cudaMalloc(&dC, size_t(M) * N * sizeof(float)));
      std::string error;
      try {
        kVersions[v].run(M, N, K, Inputs{dA, dB, d16, d16}, dC);
      } catch (const std::exception& e) {
        error = e.what();
      }
      cudaFree(dA), cudaFree(dB), cudaFree(d16), cudaFree(dC);
      const bool refused = error.find("TMA needs") != std::string::npos;
      std::printf("version %d (%s): %dx%dx%d %s (%s)\n", v, kVersions[v].precision, M, N, K,
                  refused ? "refused as it must be" : "WRONG: not refused", refused ? error.c_str() : problem.c_str());
      return refused;
    }
  }
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
  // Versions 8 and 9 (sm_90a) are skipped, with a message, on a device that is not compute capability 9.0.
  std::vector<Impl> impls;
  const bool hopper = hopper_device();
  for (int v : versions)
    if (kVersions[v].hopper && !hopper)
      std::fprintf(stderr, "version %d skipped: needs sm_90a (compute capability 9.0), this is %s\n", v,
                   device.c_str());
  for (const char* p : {"fp32", "tf32", "bf16"}) {
    impls.push_back(Impl{"cublas", p});
    for (int v : versions)
      if (std::string(kVersions[v].precision) == p && (hopper || !kVersions[v].hopper))
        impls.push_back(Impl{"nimbus_v" + std::to_string(v), p, true});
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
  const auto nonfinite = [&] { return count_nonfinite(C.p, nC, 4); };
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
      measure(im, 1, cs.name, prepare, poison, [&] { f(M, N, K, in, C.f()); }, sampled, ref, nonfinite, budget_ms);
    } else if (im.precision == "bf16") {
      measure(im, 1, cs.name, to_bf16, poison,
              [&] { bench::cublas_gemm(bench::Precision::bf16, M, N, K, A16.p, B16.p, C.f()); }, sampled, ref,
              nonfinite, budget_ms);
    } else {
      const bench::Precision p = im.precision == "fp32" ? bench::Precision::fp32 : bench::Precision::tf32;
      measure(im, 1, cs.name, [] {}, poison, [&] { bench::cublas_gemm(p, M, N, K, A.p, B.p, C.f()); }, sampled, ref,
              nonfinite, budget_ms);
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
// v5: plain), 150x136x72 (both 16-byte; 2x2 blocks, 3 k-tiles, so the double buffer is reused),
// 67x264x520 (odd M; a last block column of 8 columns for v8 (256 + 8) and v9 (2 x 128 + 8); 9 (v8)
// or 17 (v9) k-tiles, the last one partial: the 4-stage ring goes round more than twice). Versions 8 and 9 must refuse the sizes TMA cannot
// describe (N or K not a multiple of 8 for bf16, 4 for fp32): 67x45x33 and 130x70x19 for both,
// 67x44x36 for v8. On a GPU that is not compute capability 9.0 they are skipped.
bool validate_small(const std::vector<int>& versions) {
  const int sizes[][3] = {{67, 45, 33}, {130, 70, 19}, {67, 44, 36}, {150, 136, 72}, {67, 264, 520}};
  bool ok = nonfinite_counter_works();
  const bool hopper = hopper_device();
  for (int v : versions) {
    if (kVersions[v].hopper && !hopper) {
      std::printf("version %d (%s): skipped: needs sm_90a (compute capability 9.0)\n", v, kVersions[v].precision);
      continue;
    }
    for (const auto& sz : sizes) ok = validate(v, sz[0], sz[1], sz[2]) && ok;
  }
  return ok;
}

int main(int argc, char** argv) {
  const std::vector<Case> cases(std::begin(kCases), std::end(kCases));
  return bench_main(argc, argv, BenchProgram<Case>{"gpu_bench_gemm", "cuBLAS", kLast, cases, validate_small, run_case});
}
