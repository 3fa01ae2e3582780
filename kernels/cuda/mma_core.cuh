/* mma_core.cuh: the block-level machinery of the CUDA backend's tensor-core kernels, for any GEMM
 * whose operands are gathered element by element: a convolution read in place (implicit GEMM, no
 * im2col buffer; conv2d_tc.cu) or a plain row-major matrix with or without a transpose (linear_tc.cu).
 * Device code in the kernel contract (docs/cuda-emulator.md): nvcc (sm_80+) runs it, and so does the
 * CUDA-on-CPU emulator, which models every instruction of kernels/cuda/tensor_core.h.
 *
 * The GEMM a kernel computes, per split s of the reduction (split-K; one split unless a launcher asks):
 *   D[m][n] = sum_{k in split s} A[m][k] B[k][n],  m < M, n < N, k < Kred
 * A problem (a struct passed by value) says where each element lives and what to do with a result:
 *   const E* a(m, k)        address of A[m][k], or nullptr where the element is 0 (padding, a stride gap)
 *   BCol b_col(n)           what column n of B needs, decoded once per thread (a thread stages the
 *                           same column of every B tile: consecutive threads take consecutive n)
 *   const E* b(k, col)      address of B[k][n] for col = b_col(n), or nullptr, likewise
 *   E b_value(k, col)       (optional, instead of b) B[k][n] itself, computed on the way (the
 *                           convolution's batch-norm prologue); staged by a plain load and shared store
 *   store(m, n, v, s)       v = split s's fp32 sum for D[m][n]; called once per element per split
 * The kernel checks m < M, n < N and k < Kred before it asks, so a problem only decodes indices (with
 * FastDivmod, kernels/common/fast_divmod.h: no integer divider on a GPU).
 *
 * Element types: E = float multiplies in TF32 (each operand rounded with cvt.rna.tf32, mma.sync
 * m16n8k8), E = nimbus::bfloat16 in bf16 (mma.sync m16n8k16, fragments from ldmatrix); both
 * accumulate in fp32.
 *
 * Block tile (Tile<BM, BN, WARPS_M, WARPS_N, STAGES>): BM x BN of D per block, BK = 32 of the
 * reduction per step, WARPS_M x WARPS_N warps each owning a (BM / WARPS_M) x (BN / WARPS_N) piece of D
 * as a grid of m16n8 fragments, 4 fp32 accumulators per lane per fragment; STAGES shared-memory
 * buffers. The backend is built in the six configurations of tc_dispatch.h (TileOf<i>), from
 * 128x128 with 8 warps of 64 x 32 (64 accumulators a thread) to 64x64 with 4 warps of 32 x 32.
 * Shared memory per stage: the A tile BM x BK with k contiguous, the B tile BK x BN with n
 * contiguous, each row padded so a warp's fragment reads hit 32 different banks (tf32, scalar
 * reads) or 8 different 16-byte groups (bf16, ldmatrix); see SmemLayout. STAGES - 1 k-tiles are in
 * flight while the warps multiply one (pipelined_k_loop).
 *
 * Loading: every element of a tile is one 4-byte cp.async (tf32; src-size 0 zero-fills where the
 * problem says nullptr) or one plain 2-byte load and shared store (bf16: cp.async copies at least
 * 4 bytes, and a gathered bf16 element is only 2-byte aligned); a problem with b_value has its B
 * elements computed and stored by plain shared stores in both types (no copy in flight then). Consecutive threads take
 * consecutive columns of a tile (k for A, n for B), which are the contiguous direction of every
 * operand the backend gathers. A thread's B column is the same in every k-tile, so its decoding
 * (image, output position) happens once; the reduction index costs one or two multiply-shift
 * divisions per element. Whether that gather or the mma bounds a kernel is the first GPU run's
 * question.
 *
 * Determinism: one thread owns each D element of a split and adds its k-steps in a fixed order,
 * so results do not depend on thread or block order (the emulator's tests run three orders).
 */
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"
#include "kernels/common/error.h"
#include "kernels/cuda/bn_moments.cuh"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/tc_dispatch.h"  // kTcConfigs, tc_config_smem_bytes
#include "kernels/cuda/tensor_core.h"

namespace nimbus::cuda::mma {

template <int BM_, int BN_, int WARPS_M, int WARPS_N, int STAGES = 2>
struct Tile {
  static constexpr int BM = BM_, BN = BN_, BK = 32, WarpsM = WARPS_M, WarpsN = WARPS_N, Stages = STAGES;
  static_assert(STAGES >= 2, "at least one k-tile in flight while one is multiplied");
  static constexpr int Threads = 32 * WARPS_M * WARPS_N;
  static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;  // a warp's piece of D
  static constexpr int FM = WM / 16, FN = WN / 8;             // its m16n8 fragments
  static_assert(WM % 16 == 0 && WN % 16 == 0, "whole fragments, and pairs of B fragments (ldmatrix .x4.trans)");
  static_assert((BM * BK) % Threads == 0 && (BK * BN) % Threads == 0, "the same number of elements per thread");
  static_assert(Threads % BN == 0 && Threads % BK == 0, "a thread keeps its column of every tile");
};
// The backend's menu (tc_dispatch.h kTcConfigs, same order): config i is TileOf<i>.
template <int I>
struct TileOf;
template <> struct TileOf<0> { using type = Tile<128, 128, 2, 4, 2>; };
template <> struct TileOf<1> { using type = Tile<128, 128, 2, 4, 3>; };
template <> struct TileOf<2> { using type = Tile<128, 64, 2, 2, 3>; };
template <> struct TileOf<3> { using type = Tile<64, 128, 2, 2, 3>; };
template <> struct TileOf<4> { using type = Tile<64, 64, 2, 2, 2>; };
template <> struct TileOf<5> { using type = Tile<64, 64, 2, 2, 4>; };

// What an element of type E becomes in shared memory: float (rounded to tf32 when read into a
// fragment) or the bf16 bit pattern that ldmatrix moves.
template <typename E>
struct SmemType {
  using type = float;
};
template <>
struct SmemType<bfloat16> {
  using type = uint16_t;
};

// Row pitches (elements) of the two tiles in shared memory.
//   tf32: A rows BK + 4 = 36 floats apart, so row g of a fragment read starts at bank 4g and lanes
//         (g, t) read banks 4g + t, all different; B rows BN + 8 floats apart (BN = 64 or 128: a
//         multiple of 32 plus 8), so lanes read banks 8t + g, all different.
//   bf16: ldmatrix reads eight 16-byte rows per 8x8 matrix in one phase, conflict-free when they
//         start in eight different 16-byte groups: A rows 40 bf16 = 80 bytes apart (group 5r mod 8),
//         B rows BN + 8 bf16 (144 or 272 bytes: group 9r or 17r mod 8 = r mod 8).
// Both keep every row 16-byte aligned (ldmatrix needs it).
template <typename E, class T>
struct SmemLayout {
  using S = typename SmemType<E>::type;
  static constexpr int kPadA = sizeof(S) == 4 ? 4 : 8;
  static constexpr int kLda = T::BK + kPadA, kLdb = T::BN + 8;
  static constexpr int kStage = T::BM * kLda + T::BK * kLdb;  // elements per stage: A, then B
  static constexpr size_t kBytes = size_t(T::Stages) * size_t(kStage) * sizeof(S);
};

// TileOf<i> is the menu's configuration i, and takes the shared memory that the dispatch, which knows
// no kernels, reckons with (tc_pick_config keeps to the device's limit by it).
template <int I>
constexpr bool menu_agrees() {
  using T = typename TileOf<I>::type;
  constexpr TcConfig c = kTcConfigs[I];
  return T::BM == c.bm && T::BN == c.bn && T::WarpsM == c.warps_m && T::WarpsN == c.warps_n &&
         T::Stages == c.stages && SmemLayout<float, T>::kBytes == size_t(tc_config_smem_bytes(I, false)) &&
         SmemLayout<bfloat16, T>::kBytes == size_t(tc_config_smem_bytes(I, true));
}
static_assert(kTcConfigCount == 6 && menu_agrees<0>() && menu_agrees<1>() && menu_agrees<2>() && menu_agrees<3>() &&
                  menu_agrees<4>() && menu_agrees<5>(),
              "TileOf and SmemLayout disagree with tc_dispatch.h's menu");

// ---- staging one element ----------------------------------------------------------------------------
// tf32: one 4-byte cp.async, zero-filled (src-size 0) when p is null; `any` is a valid global address
// to name then (nothing is read from it).
__device__ __forceinline__ void stage_element(float* dst, const float* p, const float* any) {
  cp_async_ca<4>(dst, p ? p : any, p ? 4 : 0);
}
__device__ __forceinline__ void stage_element(uint16_t* dst, const bfloat16* p, const bfloat16*) {
  *dst = p ? p->bits : uint16_t(0);
}
// A value computed on the way (a problem's b_value: the batch-norm prologue), by a plain shared store.
__device__ __forceinline__ void stage_value(float* dst, float v) { *dst = v; }
__device__ __forceinline__ void stage_value(uint16_t* dst, bfloat16 v) { *dst = v.bits; }

// ---- the warp's mma loop over one staged k-tile -----------------------------------------------------
// tf32, m16n8k8: BK / 8 steps. A fragment (PTX): a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4)
// with g = lane / 4, t = lane % 4; B fragment: b0 (k t, n g), b1 (k t+4, n g).
template <class T, class L>
__device__ __forceinline__ void warp_mma(const float* As, const float* Bs, float (&acc)[T::FM][T::FN][4], int wm,
                                         int wn) {
  const int lane = int(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int kk = 0; kk < T::BK; kk += 8) {
    uint32_t a[T::FM][4], b[T::FN][2];
#pragma unroll
    for (int i = 0; i < T::FM; ++i) {
      const float* p = As + (wm * T::WM + i * 16 + g) * L::kLda + kk + t;
      a[i][0] = cvt_rna_tf32(p[0]);
      a[i][1] = cvt_rna_tf32(p[8 * L::kLda]);
      a[i][2] = cvt_rna_tf32(p[4]);
      a[i][3] = cvt_rna_tf32(p[8 * L::kLda + 4]);
    }
#pragma unroll
    for (int j = 0; j < T::FN; ++j) {
      const float* p = Bs + (kk + t) * L::kLdb + wn * T::WN + j * 8 + g;
      b[j][0] = cvt_rna_tf32(p[0]);
      b[j][1] = cvt_rna_tf32(p[4 * L::kLdb]);
    }
#pragma unroll
    for (int i = 0; i < T::FM; ++i)
#pragma unroll
      for (int j = 0; j < T::FN; ++j) mma_m16n8k8_tf32(acc[i][j], a[i], b[j], acc[i][j]);
  }
}

// bf16, m16n8k16: BK / 16 steps. One ldmatrix.x4 per A fragment (matrices: rows 0-7 / 8-15 x k 0-7 /
// 8-15, in the register order a0a1, a2a3, a4a5, a6a7); one ldmatrix.x4.trans per pair of B fragments
// (B's rows are k: the transpose hands lane (g, t) the pair k = 2t, 2t+1 of column g).
template <class T, class L>
__device__ __forceinline__ void warp_mma(const uint16_t* As, const uint16_t* Bs, float (&acc)[T::FM][T::FN][4],
                                         int wm, int wn) {
  const int lane = int(threadIdx.x) % 32, mat = lane / 8, row = lane % 8;  // lane addresses row `row` of matrix `mat`
#pragma unroll
  for (int kk = 0; kk < T::BK; kk += 16) {
    uint32_t a[T::FM][4], b[T::FN][2];
#pragma unroll
    for (int i = 0; i < T::FM; ++i)
      ldmatrix_x4(a[i], As + (wm * T::WM + i * 16 + row + 8 * (mat & 1)) * L::kLda + kk + 8 * (mat >> 1));
#pragma unroll
    for (int j = 0; j < T::FN; j += 2) {  // matrices: k 0-7 / 8-15 of fragment j, then of j + 1
      uint32_t r[4];
      ldmatrix_x4_trans(r, Bs + (kk + row + 8 * (mat & 1)) * L::kLdb + wn * T::WN + (j + (mat >> 1)) * 8);
      b[j][0] = r[0], b[j][1] = r[1], b[j + 1][0] = r[2], b[j + 1][1] = r[3];
    }
#pragma unroll
    for (int i = 0; i < T::FM; ++i)
#pragma unroll
      for (int j = 0; j < T::FN; ++j) mma_m16n8k16_bf16(acc[i][j], a[i], b[j], acc[i][j]);
  }
}

// ---- the k loops ------------------------------------------------------------------------------------------
// Every thread of the block runs one over `tiles` k-tiles: stage(buf, kt) starts the cp.async copies of
// k-tile kt into stage buffer buf and commits them as one group; multiply(buf) runs the warps' mma
// loop over buffer buf.
//
// double_buffered_k_loop (bench/cuda's versions 4 and 5, conv version 3): two buffers; k-tile kt + 1 is
// in flight while the warps multiply k-tile kt; one barrier before a tile is read, one after (the
// buffer is then refilled).
template <typename Stage, typename Multiply>
__device__ __forceinline__ void double_buffered_k_loop(int tiles, Stage&& stage, Multiply&& multiply) {
  if (tiles > 0) stage(0, 0);
  for (int kt = 0; kt < tiles; ++kt) {
    if (kt + 1 < tiles) {
      stage((kt + 1) % 2, kt + 1);  // the next tile flies while this one is used
      cp_async_wait_group<1>();     // every group but the newest is complete: this thread's part of tile kt
    } else {
      cp_async_wait_group<0>();
    }
    __syncthreads();  // ... and every other thread's part
    multiply(kt % 2);
    __syncthreads();  // all warps are done with this buffer before tile kt + 2 is copied into it
  }
}

// pipelined_k_loop<S> (the backend's kernels): S buffers, S - 1 k-tiles in flight. Each iteration
// waits for tile kt (this thread's copies: all but the newest S - 2 groups), meets the other threads
// at one barrier (their copies of tile kt have landed, and every warp is done with tile kt - 1), then
// refills tile kt - 1's buffer with tile kt + S - 1 and multiplies tile kt. Past the last tile the
// refills are empty groups, which keeps the group count the waits rely on.
template <int S, typename Stage, typename Multiply>
__device__ __forceinline__ void pipelined_k_loop(int tiles, Stage&& stage, Multiply&& multiply) {
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    if (s < tiles)
      stage(s, s);
    else
      cp_async_commit();
  }
  for (int kt = 0; kt < tiles; ++kt) {
    cp_async_wait_group<S - 2>();
    __syncthreads();
    const int next = kt + S - 1;
    if (next < tiles)
      stage(next % S, next);
    else
      cp_async_commit();
    multiply(kt % S);
  }
  cp_async_wait_group<0>();  // no copy outlives the kernel
}

// ---- the kernel ---------------------------------------------------------------------------------------------
// Grid (ceil(N / BN), ceil(M / BM), splits), T::Threads threads, SmemLayout<E, T>::kBytes of dynamic
// shared memory. Split s reduces k in [s * k_per_split, min(Kred, (s + 1) * k_per_split)).
template <typename E, class T, class Problem>
__global__ void __launch_bounds__(T::Threads)
    igemm_kernel(Problem pb, int M, int N, int Kred, int k_per_split, const E* any) {
  using L = SmemLayout<E, T>;
  using S = typename L::S;
  DYNAMIC_SMEM(S, smem);  // T::Stages stages of [A tile BM x kLda | B tile BK x kLdb]
  const int m0 = int(blockIdx.y) * T::BM, n0 = int(blockIdx.x) * T::BN, split = int(blockIdx.z);
  const int kbeg = split * k_per_split, kend = min(Kred, kbeg + k_per_split);
  const int warp = int(threadIdx.x) / 32, wm = warp / T::WarpsN, wn = warp % T::WarpsN;
  // The B column this thread stages in every k-tile, decoded once.
  const int bc = int(threadIdx.x) % T::BN;
  const bool n_in = n0 + bc < N;
  const typename Problem::BCol col = n_in ? pb.b_col(n0 + bc) : typename Problem::BCol{};

  // Stages k-tile kt of this split into buffer buf (of T::Stages) as one cp.async group.
  auto stage = [&](int buf, int kt) {
    S* As = smem + buf * L::kStage;
    S* Bs = As + T::BM * L::kLda;
    const int k0 = kbeg + kt * T::BK;
#pragma unroll 4
    for (int j = 0; j < T::BM / (T::Threads / T::BK); ++j) {  // A: this thread's k, rows every Threads / BK
      const int r = int(threadIdx.x) / T::BK + j * (T::Threads / T::BK), c = int(threadIdx.x) % T::BK;
      const int m = m0 + r, k = k0 + c;
      stage_element(As + r * L::kLda + c, m < M && k < kend ? pb.a(m, k) : nullptr, any);
    }
#pragma unroll 4
    for (int j = 0; j < T::BK / (T::Threads / T::BN); ++j) {  // B: this thread's column, rows every Threads / BN
      const int r = int(threadIdx.x) / T::BN + j * (T::Threads / T::BN), k = k0 + r;
      if constexpr (requires { pb.b_value(0, col); })  // B's values computed as they are read
        stage_value(Bs + r * L::kLdb + bc, k < kend && n_in ? pb.b_value(k, col) : E(0.0f));
      else
        stage_element(Bs + r * L::kLdb + bc, k < kend && n_in ? pb.b(k, col) : nullptr, any);
    }
    cp_async_commit();
  };

  float acc[T::FM][T::FN][4] = {};
  pipelined_k_loop<T::Stages>(kend > kbeg ? (kend - kbeg + T::BK - 1) / T::BK : 0, stage, [&](int buf) {
    const S* As = smem + buf * L::kStage;
    warp_mma<T, L>(As, As + T::BM * L::kLda, acc, wm, wn);
  });

  // Epilogue: accumulator c0 c1 at (g, 2t), (g, 2t + 1) of its fragment, c2 c3 eight rows down.
  const int lane = int(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
  if constexpr (requires { pb.moments_at(0, 0, 0); }) {
    // A problem that asks for batch-norm moments (bn_moments.cuh): the stored values of each row, a
    // quad's FN * 8 columns (the warp's WN), as chunk blockIdx.x * WarpsN + wn of gridDim.x * WarpsN.
    const int chunk = int(blockIdx.x) * T::WarpsN + wn, chunks = int(gridDim.x) * T::WarpsN;
#pragma unroll
    for (int i = 0; i < T::FM; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int m = m0 + wm * T::WM + i * 16 + g + 8 * h;
        float v[2 * T::FN];
        uint32_t valid = 0;
#pragma unroll
        for (int j = 0; j < T::FN; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int n = n0 + wn * T::WN + j * 8 + 2 * t + e;
            v[2 * j + e] = 0.0f;
            if (m >= M || n >= N) continue;
            v[2 * j + e] = pb.store(m, n, acc[i][j][2 * h + e], split);
            valid |= 1u << (2 * j + e);
          }
        quad_row_moments(v, valid, m < M ? pb.moments_at(m, chunk, chunks) : nullptr);
      }
  } else {
#pragma unroll
    for (int i = 0; i < T::FM; ++i)
#pragma unroll
      for (int j = 0; j < T::FN; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int m = m0 + wm * T::WM + i * 16 + g + 8 * h, n = n0 + wn * T::WN + j * 8 + 2 * t;
          if (m >= M) continue;
          if (n < N) pb.store(m, n, acc[i][j][2 * h], split);
          if (n + 1 < N) pb.store(m, n + 1, acc[i][j][2 * h + 1], split);
        }
  }
}

// ---- host side ------------------------------------------------------------------------------------------------
// Launches igemm_kernel<E, T, Problem> on the current stream. A configuration above 48 KiB of dynamic
// shared memory needs one cudaFuncSetAttribute per instantiation and device (allow_dynamic_smem).
template <typename E, class T, class Problem>
void launch_igemm(const Problem& pb, int M, int N, int Kred, int splits, const E* any, const char* what) {
  using L = SmemLayout<E, T>;
  if (M <= 0 || N <= 0) return;
  const int per = splits <= 1 ? Kred : (((Kred + splits - 1) / splits + T::BK - 1) / T::BK) * T::BK;
  if constexpr (L::kBytes > 48 * 1024) {
    const int64_t most = device_smem_opt_in();  // the dispatch keeps to it; a TcPlan may not
    NIMBUS_CHECK(int64_t(L::kBytes) <= most, what, ": tensor-core tile ", T::BM, "x", T::BN, " with ", T::Stages,
                 " stages needs ", L::kBytes, " bytes of shared memory, more than this device's ", most);
    allow_dynamic_smem(igemm_kernel<E, T, Problem>, L::kBytes, what);
  }
  const dim3 grid(unsigned((N + T::BN - 1) / T::BN), unsigned((M + T::BM - 1) / T::BM), unsigned(splits < 1 ? 1 : splits));
  launch(igemm_kernel<E, T, Problem>, grid, dim3(T::Threads), L::kBytes, launch_stream(), pb, M, N, Kred,
         per < 1 ? 1 : per, any);
  check_launch(what);
}

// The same with configuration `config` of the menu (tc_dispatch.h: 0 .. kTcConfigCount - 1).
template <typename E, class Problem>
void launch_igemm(const Problem& pb, int M, int N, int Kred, int splits, int config, const E* any, const char* what) {
  switch (config) {
    case 0: return launch_igemm<E, typename TileOf<0>::type>(pb, M, N, Kred, splits, any, what);
    case 1: return launch_igemm<E, typename TileOf<1>::type>(pb, M, N, Kred, splits, any, what);
    case 2: return launch_igemm<E, typename TileOf<2>::type>(pb, M, N, Kred, splits, any, what);
    case 3: return launch_igemm<E, typename TileOf<3>::type>(pb, M, N, Kred, splits, any, what);
    case 4: return launch_igemm<E, typename TileOf<4>::type>(pb, M, N, Kred, splits, any, what);
    case 5: return launch_igemm<E, typename TileOf<5>::type>(pb, M, N, Kred, splits, any, what);
    default: throw Error(str(what, ": no tensor-core configuration ", config));
  }
}

}  // namespace nimbus::cuda::mma
