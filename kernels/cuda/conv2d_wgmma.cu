/* conv2d_wgmma.cu: convolution forward, data gradient and weight gradient on Hopper's warpgroup MMAs
 * (conv2d_wgmma.h), in bf16 (bfloat16 tensors) and TF32 (float tensors). The numbered benchmark
 * versions 6, 7 and 8 of bench/cuda/conv2d.cu are these kernels in bf16 (version 9: all three in
 * TF32); that file says what each gained over the mma.sync kernels (conv2d_tc.cu).
 *
 * Both kernels multiply 128 x 128 output tiles with 256 threads: two warpgroups, each 64 rows x 128
 * columns with wgmma.mma_async (A and B from shared memory through descriptors), 64 fp32 accumulators
 * per thread. A k-tile is one 128-byte line per row (the 128B swizzle span): 64 bf16 (m64n128k16, 4
 * steps) or 32 TF32 (m64n128k8, 4 steps). TF32 operands are rounded with cvt.rna on their way into
 * shared memory or the workspace, as the mma.sync kernels round theirs (the tensor core would
 * otherwise drop the low 13 bits).
 * Shared memory is a ring of 3 stages [A 16 KiB | B 16 KiB] in wgmma's canonical K-major
 * 128B-swizzled layout: one 128-byte line per row (A) or column (B) holding its k-tile, 16-byte chunk j
 * of line l at chunk j ^ (l % 8), 8-line groups 1024 bytes apart (SBO). Iteration kt waits for its
 * stage, issues 4 wgmma, commits, waits until its k-tile kt - 1 is done (wait_group 1), and a
 * __syncthreads() then frees that stage for k-tile kt + 2, which is loaded while k-tile kt multiplies.
 * The one barrier per k-tile also orders each gather before its consumer (gathered in iteration j - 2
 * after its barrier, read in iteration j after iteration j - 1's), which is why the ring has 3 stages.
 * Threads that write the tiles with ordinary stores run fence.proxy.async: wgmma reads through the
 * async proxy.
 *
 * conv_fwd_kernel: y[k, (n,p,q)] = sum_{(c,r,s)} w[k, (c,r,s)] x[n, c, p st - pad + r, q st - pad + s]
 *   M = K (A = w, K x C*R*S row-major, by TMA: one line x 128 rows box per k-tile on the stage's
 *   mbarrier), N = N*P*Q (B = the implicit im2col columns, gathered: thread t owns column t % 128 and
 *   chunks 4 (t / 128) .. + 3 of its line, walked as (c, r, s) without division, packed into 16-byte
 *   stores). TMA needs a 16-byte row stride: when C*R*S is not a multiple of 8 bf16 (the 13-band stem:
 *   637) or w is not 128-byte aligned (a swizzled map's base), and always in TF32 (the rounding), w is first copied into a
 *   padded matrix in the workspace (the map's inner extent stays C*R*S, so TMA zero-fills the padding).
 *   Epilogue: + bias, then ReLU or the residual sum, rounded to E once, stored NCHW.
 *   The data gradient is this kernel once per stride phase (h mod st, w mod st), as conv2d_tc.cu's
 *   DataGrad: in a phase the taps are r = r0 + st rr, and with them flipped (r' = Rp - 1 - rr) it is a
 *   stride-1 forward over dy (K channels, P x Q) with Rp x Sp taps and pads Rp - 1 - hb, Sp - 1 - wb,
 *   writing C channels at (ph + st i, pw + st j) of dx. A = that phase's weights packed into the
 *   workspace (C x K*Rp*Sp). A phase without taps (1x1 stride 2, odd rows) runs one zero tap.
 * conv_wgrad_kernel: dw[k, (c,r,s)] = sum_{(n,p,q)} dy[n, k, p, q] x[n, c, p st - pad + r, q st - pad + s]
 *   M = K, N = C*R*S, reduction N*P*Q split over blockIdx.z. In bf16 with P*Q a multiple of 64 (a
 *   k-tile of positions then lies in one image: DSen2-CR; on 64x64 tiles ResNet-50's stem and first two
 *   stages) A comes by TMA, a 3-D box of dy (64 positions x 128 channels x 1 image) on the stage's
 *   mbarrier, as in the forward. Otherwise (a k-tile crosses images; and always in TF32, whose operands
 *   are rounded on the way in) both tiles are gathered: thread t owns chunk t % 8 (8 bf16 or 4 TF32
 *   consecutive positions) of rows t / 8 + 32 i of A and of columns t / 8 + 32 i of B, i < 4, walking
 *   the positions as (n, p, q) without division, one operand after the other (16 packed registers, not
 *   32: the kernel stays near 128). x's tile (B) is always gathered so. A split writes its
 *   fp32 partial sums to ws[split][K][CRS] and conv2d_tc.cu's splitk_sum adds them in order
 *   (deterministic); one split writes dw directly.
 * conv_fwd_specialised_kernel: the forward warp-specialised (bench versions 10 and 11; see its block
 *   below): a producer warpgroup gathers and starts the copies, two consumer warpgroups multiply.
 * db is gemm.cu's bias_backward. CPU twin: kernels/cpu/conv2d.h (the _ref loops are the definition).
 */
#include "kernels/cuda/conv2d_wgmma.h"

#include <algorithm>
#include <climits>

#include "kernels/common/error.h"
#include "kernels/common/fast_divmod.h"
#include "kernels/cuda/conv2d_tc.h"  // conv2d_tc_max_splits, splitk_sum
#include "kernels/cuda/gemm.h"       // bias_backward
#include "kernels/cuda/bn_apply.cuh"
#include "kernels/cuda/bn_moments.cuh"
#include "kernels/cuda/hopper.h"
#include "kernels/cuda/pack.cuh"         // aligned16
#include "kernels/cuda/tensor_core.h"    // store_vector

namespace nimbus::cuda {

namespace {

constexpr int kStages = 3;  // at least 3: see the pipeline above
constexpr int kThreads = 256;
constexpr int kBM = 128, kBN = 128, kLine = 128;  // a k-tile: one 128-byte line per row of A and B
constexpr int kABytes = kBM * kLine;  // 16 KiB: 128 rows
constexpr int kBBytes = kBN * kLine;  // 16 KiB: 128 lines
constexpr int kStageBytes = kABytes + kBBytes;
constexpr int kSwizzleRepeat = 1024;  // 128B swizzle: 8 lines of 128 bytes
// A GPU's dynamic shared memory is only 16-byte aligned: the kernels round its start up to 1024 (every
// tile then starts on the swizzle's repeat), so the launch adds 1 KiB.
constexpr size_t kSmem = size_t(kStages) * kStageBytes + kStages * sizeof(uint64_t) + kSwizzleRepeat;
static_assert(kStageBytes % kSwizzleRepeat == 0 && kABytes % kSwizzleRepeat == 0, "tiles on the swizzle's repeat");
constexpr int kMinSplitTiles = 4;  // k-tiles per weight-gradient split: fewer is mostly overhead

// The element types. E is the tensors' type; Bits what a shared-memory line holds per element.
template <typename E>
struct Elem;
template <>
struct Elem<bfloat16> {
  using Bits = uint16_t;
  static constexpr TmaType kTma = TmaType::BF16;
  __device__ static uint32_t operand(bfloat16 v) { return v.bits; }  // as the tensor core takes it
};
template <>
struct Elem<float> {
  using Bits = uint32_t;
  static constexpr TmaType kTma = TmaType::F32;
  __device__ static uint32_t operand(float v) { return cvt_rna_tf32(v); }  // TF32, nearest, ties away
};
template <typename E>
constexpr int kBK = kLine / int(sizeof(E));  // k per tile: 64 bf16 or 32 TF32
template <typename E>
constexpr int kChunk = 16 / int(sizeof(E));  // elements per 16-byte chunk: 8 or 4

// Element e of a chunk (its bits b, 16 or 32 of them) into the chunk's words v, the lower k first.
template <typename E>
__device__ __forceinline__ void pack(uint32_t (&v)[4], int e, uint32_t b) {
  if constexpr (sizeof(E) == 2)
    v[e / 2] = e % 2 ? v[e / 2] | b << 16 : b;  // the lower k in bits 0-15
  else
    v[e] = b;
}

__device__ __forceinline__ unsigned char* ring_base() {
  DYNAMIC_SMEM(unsigned char, raw);
  return raw + (kSwizzleRepeat - smem_address(raw) % kSwizzleRepeat) % kSwizzleRepeat;
}

// 16-byte chunk `chunk` (8 consecutive k) of line `line` of a 128B-swizzled tile.
__device__ __forceinline__ void store_chunk(unsigned char* tile, int line, int chunk, const uint32_t (&v)[4]) {
  store_vector(reinterpret_cast<uint4*>(tile + line * 128 + ((chunk ^ (line % 8)) * 16)),
               make_uint4(v[0], v[1], v[2], v[3]));
}

// One k-tile of a warpgroup: its 64 rows of A (at a) times the 128 columns of B (at b), 4 steps of 32
// bytes along the lines (k16 bf16 or k8 TF32; K-major, 128B swizzle). accumulate: add to acc.
template <typename E>
__device__ __forceinline__ void mma_ktile(float (&acc)[kBN / 2], const unsigned char* a, const unsigned char* b,
                                          bool accumulate) {
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    const uint64_t da = wgmma_desc(a + 32 * kk, 16, 1024, WgmmaSwizzle::B128);
    const uint64_t db = wgmma_desc(b + 32 * kk, 16, 1024, WgmmaSwizzle::B128);
    if constexpr (sizeof(E) == 2)
      wgmma_m64k16_bf16<kBN>(acc, da, db, accumulate || kk > 0);
    else
      wgmma_m64k8_tf32<kBN>(acc, da, db, accumulate || kk > 0);
  }
  wgmma_commit_group();
}

// The ring's mbarriers (one per stage, one arrival: the thread that starts its copy) and the tensor
// map's prefetch, by thread 0, then a block barrier. Every thread of the block calls it.
__device__ __forceinline__ void init_ring(uint64_t* full, const CUtensorMap* map) {
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) mbarrier_init(&full[s], 1);
    fence_mbarrier_init();
    tma_prefetch_descriptor(map);
  }
  __syncthreads();
}

// The ring (see the top), shared by both kernels: k-tiles 0 and 1 loaded, then per k-tile kt: wait for
// A's copy (when A comes by TMA: tma_a), multiply, wait until this warpgroup's k-tile kt - 1 is done,
// __syncthreads (every warpgroup's is: its stage may be refilled), and load k-tile kt + 2 into it
// (load_a(kt) by thread 0 when tma_a: the copy of A on full[kt % kStages]; gather(kt) by every thread:
// the tiles the threads write, then fence.proxy.async). acc holds the result when it returns.
template <typename E, typename LoadA, typename Gather>
__device__ __forceinline__ void run_ring(float (&acc)[kBN / 2], const unsigned char* smem, uint64_t* full, int tiles,
                                         bool tma_a, const LoadA& load_a, const Gather& gather) {
  const int tid = int(threadIdx.x), wg = tid / 128;
  for (int kt = 0; kt < kStages - 1 && kt < tiles; ++kt) {
    if (tma_a && tid == 0) load_a(kt);
    gather(kt);
  }
  __syncthreads();
  for (int kt = 0; kt < tiles; ++kt) {
    const unsigned char* stage = smem + (kt % kStages) * kStageBytes;
    if (tma_a) mbarrier_wait_parity(&full[kt % kStages], uint32_t(kt / kStages) & 1u);
    mma_ktile<E>(acc, stage + wg * 64 * kLine, stage + kABytes, kt > 0);
    wgmma_wait_group<1>();  // this warpgroup's k-tile kt - 1 is done
    __syncthreads();        // and every warpgroup's: its stage, (kt - 1) % kStages, may be refilled
    const int next = kt + kStages - 1;
    if (next < tiles) {
      if (tma_a && tid == 0) load_a(next);
      gather(next);
    }
  }
  wgmma_wait_group<0>();
  wgmma_fence_operand(acc);
}

// Accumulator acc[4j + 2h + e] of thread i of a warpgroup: row 16 (i / 32) + (i % 32) / 4 + 8h, column
// 8j + 2 (i % 4) + e of its 64 x 128.
__device__ __forceinline__ int acc_row(int i, int h) { return 16 * (i / 32) + (i % 32) / 4 + 8 * h; }
__device__ __forceinline__ int acc_col(int i, int j, int e) { return 8 * j + 2 * (i % 4) + e; }

// ---- forward (and each data-gradient phase) ------------------------------------------------------
template <typename E>
struct FwdParams {
  const E* x;         // NCHW
  const E* bias;      // K, or null
  const E* residual;  // non-null: y = residual + res_scale * (conv + bias), same layout as y
  float res_scale;
  E* y;
  int C, H, W, K, R, S, stride, pad, pad_w, CRS, PQ, cols;  // the input x (C, H, W); cols = N * P * Q
  int relu;
  // Output position (i, j) of the P x Q grid goes to y[n, k] at (out_ph + out_st i, out_pw + out_st j)
  // of an image of out_HW elements in rows of out_W: the forward writes the grid itself (out_st 1), the
  // data gradient one stride phase of dx.
  int out_st, out_ph, out_pw, out_W, out_HW;
  FastDivmod by_pq, by_q, by_rs, by_s;
  float* moments;  // non-null (forward, no ReLU or residual): batch-norm moments of y (bn_moments.cuh)
  BnReluIn in;     // in.mean non-null (with moments only): x gathered through batch norm + ReLU (bn_apply.cuh)
};

// B's column `col` of the forward: output position (img, p, q) as image img's x and its window's corner
// (h0, w0); `in` false past the last position (its column gathers zeros).
template <typename E>
struct FwdColumn {
  const E* x_img;
  int h0, w0;
  bool in;
};
template <typename E>
__device__ __forceinline__ FwdColumn<E> fwd_column(const FwdParams<E>& d, int col) {
  const bool in = col < d.cols;
  int img, pq, p, q;
  d.by_pq.divmod(in ? col : 0, img, pq);
  d.by_q.divmod(pq, p, q);
  return {d.x + int64_t(img) * d.C * d.H * d.W, p * d.stride - d.pad, q * d.stride - d.pad_w, in};
}

// Chunks chunk0 .. chunk0 + Chunks - 1 (CH consecutive k each) of line `line` of k-tile kt's B tile:
// column c's im2col values walked as (c, r, s) without division, 0 in the padding and past C. BnIn:
// each value is E(relu(batch_norm(x))) as batchnorm_forward would have stored it (the prologue; the
// padding stays 0).
template <typename E, int Chunks, bool BnIn = false>
__device__ __forceinline__ void gather_column(unsigned char* b_tile, const FwdParams<E>& d, const FwdColumn<E>& col,
                                              int line, int kt, int chunk0) {
  constexpr int BK = kBK<E>, CH = kChunk<E>;
  int c, rs, r, s;
  d.by_rs.divmod(kt * BK + CH * chunk0, c, rs);
  d.by_s.divmod(rs, r, s);
#pragma unroll
  for (int j = 0; j < Chunks; ++j) {  // chunk chunk0 + j: CH consecutive k
    uint32_t v[4];
#pragma unroll
    for (int e = 0; e < CH; ++e) {
      const int h = col.h0 + r, w = col.w0 + s;
      const bool in = col.in && c < d.C && unsigned(h) < unsigned(d.H) && unsigned(w) < unsigned(d.W);
      uint32_t bits = 0u;
      if (in) {
        const E x = col.x_img[(int64_t(c) * d.H + h) * d.W + w];
        if constexpr (BnIn)
          bits = Elem<E>::operand(E(bn_relu_in(d.in, c, float(x))));
        else
          bits = Elem<E>::operand(x);
      }
      pack<E>(v, e, bits);
      if (++s == d.S) {
        s = 0;
        if (++r == d.R) r = 0, ++c;
      }
    }
    store_chunk(b_tile, line, chunk0 + j, v);
  }
}

// The epilogue of a warpgroup's 64 x 128 accumulators (thread i of it), rows from m_base, columns from n0:
// y[img, k, position] (NCHW), + bias, then ReLU or the residual sum, rounded to E once. Moments: no ReLU or
// residual, and each row's batch-norm moments over the tile's 128 columns too, as chunk blockIdx.x.
template <typename E, bool Moments>
__device__ __forceinline__ void store_fwd_tile(const FwdParams<E>& d, const float (&acc)[kBN / 2], int m_base, int n0,
                                               int i) {
  if constexpr (Moments) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int k = m_base + acc_row(i, h);
      float v[kBN / 4];
      uint32_t valid = 0;
#pragma unroll
      for (int j = 0; j < kBN / 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int cl = n0 + acc_col(i, j, e);
          v[2 * j + e] = 0.0f;
          if (k >= d.K || cl >= d.cols) continue;
          int im, at;
          d.by_pq.divmod(cl, im, at);  // the forward: out_st 1, the grid is y's
          float x = acc[4 * j + 2 * h + e];
          if (d.bias) x += float(d.bias[k]);
          const E out(x);
          d.y[(int64_t(im) * d.K + k) * d.out_HW + at] = out;
          v[2 * j + e] = float(out), valid |= 1u << (2 * j + e);
        }
      quad_row_moments(v, valid, k < d.K ? d.moments + (int64_t(k) * gridDim.x + blockIdx.x) * 3 : nullptr);
    }
  } else {
#pragma unroll
    for (int j = 0; j < kBN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int cl = n0 + acc_col(i, j, e);
        if (cl >= d.cols) continue;
        int im, at, oi, oj;
        d.by_pq.divmod(cl, im, at);
        d.by_q.divmod(at, oi, oj);
        const int64_t out = int64_t(d.out_ph + d.out_st * oi) * d.out_W + d.out_pw + d.out_st * oj;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int k = m_base + acc_row(i, h);
          if (k >= d.K) continue;
          float v = acc[4 * j + 2 * h + e];
          if (d.bias) v += float(d.bias[k]);
          if (d.relu) v = v < 0.0f ? 0.0f : v;  // relu_forward's rule: a NaN passes through
          const int64_t at_y = (int64_t(im) * d.K + k) * d.out_HW + out;
          if (d.residual) v = float(d.residual[at_y]) + d.res_scale * v;
          d.y[at_y] = E(v);
        }
      }
  }
}

// Moments: the epilogue also writes y's batch-norm moments to d.moments (a kernel of its own, so that the
// plain forward is compiled without that epilogue). BnIn: the gather applies d.in (with Moments only).
template <typename E, bool Moments, bool BnIn = false>
__global__ void __launch_bounds__(kThreads, 2)
    conv_fwd_kernel(const __grid_constant__ CUtensorMap map_w, FwdParams<E> d) {
  constexpr int BK = kBK<E>;
  unsigned char* smem = ring_base();
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * kStageBytes);
  const int tid = int(threadIdx.x), wg = tid / 128;
  const int m0 = int(blockIdx.y) * kBM, n0 = int(blockIdx.x) * kBN;
  const int tiles = (d.CRS + BK - 1) / BK;
  init_ring(full, &map_w);

  // This thread's B column and its half of every k-tile's line: chunks 4 khalf .. 4 khalf + 3.
  const int bn = tid % kBN, khalf = tid / kBN;
  const FwdColumn<E> col = fwd_column(d, n0 + bn);
  const auto load_a = [&](int kt) {  // thread 0: k-tile kt of the weights into its stage
    const int s = kt % kStages;
    mbarrier_arrive_expect_tx(&full[s], uint32_t(kABytes));
    tma_load_2d(smem + s * kStageBytes, &map_w, &full[s], kt * BK, m0);
  };
  const auto gather = [&](int kt) {  // every thread: its 4 chunks of column bn of k-tile kt's B
    gather_column<E, 4, BnIn>(smem + (kt % kStages) * kStageBytes + kABytes, d, col, bn, kt, 4 * khalf);
    fence_proxy_async_shared();  // these generic-proxy stores before the wgmma (async proxy) reads them
  };

  float acc[kBN / 2];
  run_ring<E>(acc, smem, full, tiles, true, load_a, gather);
  store_fwd_tile<E, Moments>(d, acc, m0 + 64 * wg, n0, tid % 128);
}

// ---- the warp-specialised forward (bench/cuda/conv2d.cu versions 10 and 11) -------------------------------
// The same tile, multiplication and epilogue with the work split by warpgroup: 384 threads. Warpgroup
// 0 produces (setmaxnreg.dec to kProducerRegs): per k-tile every producer thread waits until the stage
// is free (empty[s]), thread 0 announces A's bytes on full[s] (expect_tx) and starts its TMA copy, and
// every producer thread gathers its column's whole line of B (8 chunks: twice what a thread of
// conv_fwd_kernel gathers), runs fence.proxy.async and arrives on full[s]. Warpgroups 1 and 2 consume
// (setmaxnreg.inc to kConsumerRegs): wait for full[s], 4 wgmma on their 64 rows, commit, wait until
// the previous k-tile's group is done and release that stage (empty, 256 arrivals). No block barrier
// in the loop: the gathers of the next stages run while the tensor cores multiply. A ring of 4 stages
// (128 KiB: one block per SM). full[s]: 128 arrivals + A's bytes; a producer waits for round r's
// release with parity (r & 1) ^ 1, which a fresh barrier passes in round 0. Every output is the same
// sum in the same order as conv_fwd_kernel's: the results are the same bits.
constexpr int kWsStages = 4, kWsThreads = 384;
constexpr int kProducerRegs = 88, kConsumerRegs = 200;  // 128 x 88 + 256 x 200 = 62,464 of 65,536
constexpr size_t kWsSmem = size_t(kWsStages) * kStageBytes + 2 * kWsStages * sizeof(uint64_t) + kSwizzleRepeat;

template <typename E>
__global__ void __launch_bounds__(kWsThreads, 1)
    conv_fwd_specialised_kernel(const __grid_constant__ CUtensorMap map_w, FwdParams<E> d) {
  constexpr int BK = kBK<E>;
  unsigned char* smem = ring_base();
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kWsStages * kStageBytes);
  uint64_t* empty = full + kWsStages;
  const int tid = int(threadIdx.x), wg = tid / 128;
  const int m0 = int(blockIdx.y) * kBM, n0 = int(blockIdx.x) * kBN;
  const int tiles = (d.CRS + BK - 1) / BK;
  if (tid == 0) {
    for (int s = 0; s < kWsStages; ++s) mbarrier_init(&full[s], 128), mbarrier_init(&empty[s], 256);
    fence_mbarrier_init();
    tma_prefetch_descriptor(&map_w);
  }
  __syncthreads();

  if (wg == 0) {  // the producer warpgroup: thread tid owns column tid of every k-tile's B
    setmaxnreg_dec<kProducerRegs>();
    const FwdColumn<E> col = fwd_column(d, n0 + tid);
    for (int kt = 0; kt < tiles; ++kt) {
      const int s = kt % kWsStages;
      unsigned char* stage = smem + s * kStageBytes;
      mbarrier_wait_parity(&empty[s], (uint32_t(kt / kWsStages) & 1u) ^ 1u);
      if (tid == 0) {  // A's copy first, so that it flies during the gather; the phase waits for its bytes
        mbarrier_expect_tx(&full[s], uint32_t(kABytes));
        tma_load_2d(stage, &map_w, &full[s], kt * BK, m0);
      }
      gather_column<E, 8>(stage + kABytes, d, col, tid, kt, 0);
      fence_proxy_async_shared();  // the gathered line before the wgmma (async proxy) reads it
      mbarrier_arrive(&full[s]);
    }
    return;
  }
  setmaxnreg_inc<kConsumerRegs>();
  const int c = wg - 1;  // rows 64 c .. 64 c + 63 of the tile
  float acc[kBN / 2];
  for (int kt = 0; kt < tiles; ++kt) {
    const int s = kt % kWsStages;
    const unsigned char* stage = smem + s * kStageBytes;
    mbarrier_wait_parity(&full[s], uint32_t(kt / kWsStages) & 1u);
    mma_ktile<E>(acc, stage + c * 64 * kLine, stage + kABytes, kt > 0);
    wgmma_wait_group<1>();  // k-tile kt - 1's group is done: its stage is no longer read
    if (kt > 0) mbarrier_arrive(&empty[(kt - 1) % kWsStages]);
  }
  wgmma_wait_group<0>();
  wgmma_fence_operand(acc);
  store_fwd_tile<E, false>(d, acc, m0 + 64 * c, n0, tid % 128);
}

// dst (rows x ld) = src (rows x cols) as the tensor core takes it (TF32-rounded floats), zeros in columns
// cols .. ld - 1: the TMA-able weight copy.
template <typename E>
__global__ void pad_rows_kernel(typename Elem<E>::Bits* dst, const E* src, int rows, int cols, int ld) {
  using Bits = typename Elem<E>::Bits;
  const int64_t n = int64_t(rows) * ld;
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const int64_t r = i / ld, c = i % ld;
    dst[i] = c < cols ? Bits(Elem<E>::operand(src[r * cols + c])) : Bits(0);
  }
}

// dA[c][(k, r', s')] (row stride ld) = w[k, c, r0 + st (Rp-1-r'), s0 + st (Sp-1-s')] for one stride phase
// (Rp x Sp taps; `zero`: a phase without taps, one zero tap), zeros past K*Rp*Sp.
template <typename E>
__global__ void pack_dgrad_weights_kernel(typename Elem<E>::Bits* dst, const E* w, int K, int C, int R, int S,
                                          int st, int r0, int s0, int Rp, int Sp, int zero, int ld) {
  const int64_t n = int64_t(C) * ld;
  const int taps = Rp * Sp;
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const int c = int(i / ld), col = int(i % ld);
    uint32_t v = 0;
    if (!zero && col < K * taps) {
      const int k = col / taps, t = col % taps, rr = t / Sp, ss = t % Sp;
      const int r = r0 + st * (Rp - 1 - rr), s = s0 + st * (Sp - 1 - ss);
      v = Elem<E>::operand(w[((int64_t(k) * C + c) * R + r) * S + s]);
    }
    dst[i] = typename Elem<E>::Bits(v);
  }
}

// ---- weight gradient -----------------------------------------------------------------------------
template <typename E>
struct WgradParams {
  const E* dy;     // (N, K, P, Q)
  const E* x;      // (N, C, H, W)
  E* dw;           // one split: (K, C*R*S) directly
  float* partial;  // several: ws[split][K][C*R*S]
  int C, H, W, K, R, S, stride, pad, P, Q, PQ, CRS, NPQ;
  int split_tiles;  // k-tiles (kBK<E> positions) per split
  int tma_a;        // A (dy) by TMA through map_dy: bf16 with P*Q a multiple of the k-tile (see the top)
  FastDivmod by_pq, by_q, by_rs, by_s;
};

template <typename E>
__global__ void __launch_bounds__(kThreads, 2)
    conv_wgrad_kernel(const __grid_constant__ CUtensorMap map_dy, WgradParams<E> d) {
  constexpr int BK = kBK<E>, CH = kChunk<E>;
  unsigned char* smem = ring_base();
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * kStageBytes);  // tma_a: A's copy per stage
  const int tid = int(threadIdx.x), wg = tid / 128;
  const int m0 = int(blockIdx.y) * kBM, n0 = int(blockIdx.x) * kBN, split = int(blockIdx.z);
  const int first = split * d.split_tiles;
  const int tiles = min(d.split_tiles, (d.NPQ + BK - 1) / BK - first);  // >= 1: the launcher's split count
  if (d.tma_a) init_ring(full, &map_dy);  // d.tma_a: the same for every thread of the block
  // thread 0, tma_a: k-tile first + kt of dy, rows m0.. of image n from position pq0 (one image: P*Q is a
  // multiple of BK), into its stage.
  const auto load_a = [&](int kt) {
    const int s = kt % kStages;
    int n, pq0;
    d.by_pq.divmod((first + kt) * BK, n, pq0);
    mbarrier_arrive_expect_tx(&full[s], uint32_t(kABytes));
    tma_load_3d(smem + s * kStageBytes, &map_dy, &full[s], pq0, m0, n);
  };

  // This thread's part of every k-tile: chunk `chunk` (positions CH chunk .. + CH - 1) of A's rows (output
  // channels k) and B's columns (taps (c, r, s)) line + 32 i, i < 4.
  const int chunk = tid % 8, line = tid / 8;
  int c_off[4], tap_r[4], tap_s[4];  // column line + 32 i: channel c's offset in an image of x, tap (r, s)
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int crs = n0 + line + 32 * i;
    int c, rs;
    d.by_rs.divmod(crs < d.CRS ? crs : 0, c, rs);
    d.by_s.divmod(rs, tap_r[i], tap_s[i]);
    c_off[i] = crs < d.CRS ? c * d.H * d.W : -1;  // -1: past the last column (N*C*H*W < 2^31: supported())
  }

  // Calls f(e, n, pq, p, q) for the chunk's CH positions npq = (n, p, q) of k-tile kt (out of range: n = -1),
  // walking them without division: consecutive q, so consecutive memory along a row of dy or x.
  const auto for_positions = [&](int kt, auto&& f) {
    int npq = (first + kt) * BK + CH * chunk, n, pq, p, q;
    d.by_pq.divmod(min(npq, d.NPQ - 1), n, pq);
    d.by_q.divmod(pq, p, q);
#pragma unroll
    for (int e = 0; e < CH; ++e) {
      f(e, npq < d.NPQ ? n : -1, pq, p, q);
      ++npq, ++pq;
      if (++q == d.Q) {
        q = 0;
        if (++p == d.P) p = 0, pq = 0, ++n;
      }
    }
  };
  const auto gather = [&](int kt) {  // k-tile first + kt of B, and of A unless TMA brings it
    unsigned char* a_tile = smem + (kt % kStages) * kStageBytes;
    unsigned char* b_tile = a_tile + kABytes;
    uint32_t v[4][4];
    if (!d.tma_a) {
      for_positions(kt, [&](int e, int n, int pq, int, int) {  // A: dy[n, k, pq]
        const E* dy_at = d.dy + int64_t(n) * d.K * d.PQ + pq;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int k = m0 + line + 32 * i;
          pack<E>(v[i], e, n >= 0 && k < d.K ? Elem<E>::operand(dy_at[int64_t(k) * d.PQ]) : 0u);
        }
      });
#pragma unroll
      for (int i = 0; i < 4; ++i) store_chunk(a_tile, line + 32 * i, chunk, v[i]);
    }
    for_positions(kt, [&](int e, int n, int, int p, int q) {  // B: x[n, c, p st - pad + r, q st - pad + s]
      const E* x_img = d.x + int64_t(n) * d.C * d.H * d.W;
      const int h0 = p * d.stride - d.pad, w0 = q * d.stride - d.pad;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int h = h0 + tap_r[i], w = w0 + tap_s[i];
        const bool in = n >= 0 && c_off[i] >= 0 && unsigned(h) < unsigned(d.H) && unsigned(w) < unsigned(d.W);
        pack<E>(v[i], e, in ? Elem<E>::operand(x_img[c_off[i] + int64_t(h) * d.W + w]) : 0u);
      }
    });
#pragma unroll
    for (int i = 0; i < 4; ++i) store_chunk(b_tile, line + 32 * i, chunk, v[i]);
    fence_proxy_async_shared();  // these generic-proxy stores before the wgmma (async proxy) reads them
  };

  float acc[kBN / 2];
  run_ring<E>(acc, smem, full, tiles, d.tma_a != 0, load_a, gather);

  const int i = tid % 128;
#pragma unroll
  for (int j = 0; j < kBN / 8; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int crs = n0 + acc_col(i, j, e);
      if (crs >= d.CRS) continue;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int k = m0 + 64 * wg + acc_row(i, h);
        if (k >= d.K) continue;
        const float v = acc[4 * j + 2 * h + e];
        if (d.partial)
          d.partial[(int64_t(split) * d.K + k) * d.CRS + crs] = v;
        else
          d.dw[int64_t(k) * d.CRS + crs] = E(v);
      }
    }
}

__global__ void sm90a_probe_kernel(int* out) { *out = NIMBUS_DEVICE_SM90A; }

// ---- host side -------------------------------------------------------------------------------------
// A row stride the copy engine takes: n elements rounded up to 16 bytes.
template <typename E>
int row16(int64_t n) {
  return int((n + kChunk<E> - 1) / kChunk<E> * kChunk<E>);
}

// The tensor map of an A matrix: rows x cols elements with a row stride of ld (16-byte aligned), boxes of
// one line (kBK<E>) by 128 rows, 128B swizzle; the inner extent stays cols, so TMA zero-fills past it.
template <typename E>
CUtensorMap a_map(const void* a, int rows, int cols, int ld) {
  TensorMapDesc md;
  md.type = Elem<E>::kTma;
  md.rank = 2;
  md.global = a;
  md.dims[0] = uint64_t(cols), md.dims[1] = uint64_t(rows);
  md.strides[0] = uint64_t(ld) * sizeof(E);
  md.box[0] = uint32_t(kBK<E>), md.box[1] = uint32_t(kBM);
  md.swizzle = TmaSwizzle::B128;
  alignas(64) CUtensorMap map;
  encode_tensor_map(&map, md);
  return map;
}

template <typename E, bool Moments, bool BnIn = false>
void launch_fwd_as(const CUtensorMap& map, const FwdParams<E>& p, const char* what) {
  allow_dynamic_smem(conv_fwd_kernel<E, Moments, BnIn>, kSmem, what);
  launch(conv_fwd_kernel<E, Moments, BnIn>, dim3(unsigned((p.cols + kBN - 1) / kBN), unsigned((p.K + kBM - 1) / kBM)),
         dim3(kThreads), kSmem, launch_stream(), map, p);
  check_launch(what);
}
template <typename E>
void launch_fwd(const CUtensorMap& map, const FwdParams<E>& p, const char* what) {
  if (p.in.mean) return launch_fwd_as<E, true, true>(map, p, what);  // forward_with: only with moments
  if (p.moments) return launch_fwd_as<E, true>(map, p, what);
  launch_fwd_as<E, false>(map, p, what);
}
template <typename E>
void launch_fwd_specialised(const CUtensorMap& map, const FwdParams<E>& p, const char* what) {
  allow_dynamic_smem(conv_fwd_specialised_kernel<E>, kWsSmem, what);
  launch(conv_fwd_specialised_kernel<E>, dim3(unsigned((p.cols + kBN - 1) / kBN), unsigned((p.K + kBM - 1) / kBM)),
         dim3(kWsThreads), kWsSmem, launch_stream(), map, p);
  check_launch(what);
}

// The data gradient's stride phases (see the top): geometry, and where its packed weights sit.
struct PhaseGeom {
  int ph, pw, r0, s0, Rp, Sp, Hp, Wp, hb, wb, zero, ld;
  int64_t at;  // elements into the workspace (a multiple of 128 bytes)
};
template <typename E>
std::vector<PhaseGeom> dgrad_phases(const ConvGeom& g, int64_t* total) {
  const int st = int(g.stride), pad = int(g.pad), R = int(g.R), S = int(g.S), H = int(g.H), W = int(g.W);
  std::vector<PhaseGeom> phases;
  int64_t at = 0;
  for (int ph = 0; ph < st; ++ph)
    for (int pw = 0; pw < st; ++pw) {
      PhaseGeom f{};
      f.ph = ph, f.pw = pw, f.r0 = (ph + pad) % st, f.s0 = (pw + pad) % st;
      f.Rp = f.r0 < R ? (R - f.r0 + st - 1) / st : 0, f.Sp = f.s0 < S ? (S - f.s0 + st - 1) / st : 0;
      f.Hp = ph < H ? (H - ph + st - 1) / st : 0, f.Wp = pw < W ? (W - pw + st - 1) / st : 0;
      f.hb = (ph + pad - f.r0) / st, f.wb = (pw + pad - f.s0) / st;
      if (f.Hp == 0 || f.Wp == 0) continue;
      f.zero = f.Rp * f.Sp == 0;
      if (f.zero) f.Rp = f.Sp = 1, f.hb = f.wb = 0;
      f.ld = row16<E>(g.K * f.Rp * f.Sp);
      f.at = at;
      const int64_t line = 128 / int64_t(sizeof(E));  // each phase's block starts 128-byte aligned (its map's base)
      at += (g.C * f.ld + line - 1) / line * line;
      phases.push_back(f);
    }
  if (total) *total = at;
  return phases;
}

// The weight gradient takes dy by TMA when every k-tile lies in one image (P*Q a multiple of it) and the
// copy engine can map dy (128-byte aligned, a swizzled map's base); in bf16 only: TF32 operands must be rounded on the way in.
template <typename E>
bool wgrad_tma_a(const ConvGeom& g, const void* dy) {
  return sizeof(E) == 2 && (g.P() * g.Q()) % kBK<E> == 0 && aligned128(dy);
}

// dy (N, K, P*Q) as a 3-D map (innermost first): boxes of one k-tile of positions x 128 channels x 1
// image, 128B swizzle; channels past K (the last row tile) come as zeros (they would only feed rows of
// dw that are not written).
CUtensorMap dy_map(const bfloat16* dy, const ConvGeom& g) {
  TensorMapDesc md;
  md.type = TmaType::BF16;
  md.rank = 3;
  md.global = dy;
  md.dims[0] = uint64_t(g.P() * g.Q()), md.dims[1] = uint64_t(g.K), md.dims[2] = uint64_t(g.N);
  md.strides[0] = uint64_t(g.P() * g.Q()) * 2, md.strides[1] = uint64_t(g.K * g.P() * g.Q()) * 2;
  md.box[0] = uint32_t(kBK<bfloat16>), md.box[1] = uint32_t(kBM), md.box[2] = 1;
  md.swizzle = TmaSwizzle::B128;
  alignas(64) CUtensorMap map;
  encode_tensor_map(&map, md);
  return map;
}
CUtensorMap dy_map(const float*, const ConvGeom&) { return CUtensorMap{}; }  // never: TF32 gathers dy

template <typename E>
int wgrad_tiles(const ConvGeom& g) {
  return int((g.N * g.P() * g.Q() + kBK<E> - 1) / kBK<E>);
}

// Splits as launched: every split gets at least one k-tile (so none is left unwritten).
template <typename E>
int effective_splits(const ConvGeom& g, int wanted) {
  const int tiles = wgrad_tiles<E>(g), per = (tiles + wanted - 1) / wanted;
  return (tiles + per - 1) / per;
}

template <typename E>
int splits_of(const ConvGeom& g) {
  const int64_t CRS = g.C * g.R * g.S, NPQ = g.N * g.P() * g.Q();
  const int table = tc_table_splits(TcKind::ConvWeightGrad, sizeof(E) == 2, g.K, CRS, NPQ, true);
  if (table > 0) return std::min(table, conv2d_tc_max_splits(g));  // what an sm_90a sweep measured
  const int64_t blocks = ((g.K + kBM - 1) / kBM) * ((g.C * g.R * g.S + kBN - 1) / kBN);
  int64_t s = (264 + blocks - 1) / blocks;  // two blocks per SM of an H200
  s = std::min<int64_t>(s, wgrad_tiles<E>(g) / kMinSplitTiles);
  return int(std::clamp<int64_t>(s, 1, conv2d_tc_max_splits(g)));
}

// Floats of workspace for E: the padded or packed weights (E elements), or the split partial sums.
template <typename E>
int64_t workspace_of(const ConvGeom& g, int splits) {
  if (splits <= 0) splits = splits_of<E>(g);
  int64_t dgrad = 0;
  dgrad_phases<E>(g, &dgrad);
  const int64_t packed = std::max(g.K * row16<E>(g.C * g.R * g.S), dgrad);
  const int64_t partial = splits > 1 ? int64_t(effective_splits<E>(g, splits)) * g.K * g.C * g.R * g.S : 0;
  return std::max((packed * int64_t(sizeof(E)) + 3) / 4, partial);
}

}  // namespace

bool conv2d_wgmma_supported(const ConvGeom& g) {
  if (g.N <= 0 || g.K <= 0 || g.C <= 0 || g.P() <= 0 || g.Q() <= 0 || g.stride > 4) return false;
  const int64_t lim = INT_MAX - 256;  // room for a tile past the end
  const int64_t CRS = g.C * g.R * g.S, NPQ = g.N * g.P() * g.Q();
  return NPQ < lim && CRS < lim && g.K * g.R * g.S < lim && g.N * g.C * g.H * g.W < lim && g.K * NPQ < lim &&
         g.K * CRS < lim && g.N * g.H * g.W < lim && (g.K + kBM - 1) / kBM <= 65535 && (g.C + kBM - 1) / kBM <= 65535;
}

bool conv2d_wgmma_preferred(const ConvGeom& g, TcKind kind, bool tf32) {
  const std::vector<TcGemmShape> gemms = conv2d_tc_gemms(g, kind);
  if (gemms.empty()) return true;
  const int config = tc_table_config(kind, !tf32, gemms[0].M, gemms[0].N, gemms[0].K);
  return !(config >= 0 && config < kTcConfigCount);
}

bool conv2d_wgmma_specialised_preferred(const ConvGeom& g, bool tf32) {
  const TcGemmShape f = conv2d_tc_gemms(g, TcKind::ConvForward)[0];
  return tc_table_config(TcKind::ConvForward, !tf32, f.M, f.N, f.K) == kTcWgmmaSpecialised;
}

int conv2d_wgmma_splits(const ConvGeom& g, bool tf32) { return tf32 ? splits_of<float>(g) : splits_of<bfloat16>(g); }

int64_t conv2d_wgmma_workspace(const ConvGeom& g, int splits) {
  return std::max(workspace_of<float>(g, splits), workspace_of<bfloat16>(g, splits));
}

namespace {
template <typename E>
int forward_with(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, bool relu, const E* r, float s,
                 float* ws, float* moments, bool specialised = false, const BnReluIn& in = {}) {
  NIMBUS_CHECK(conv2d_wgmma_supported(g), "cuda::conv2d_wgmma_forward: geometry outside the wgmma kernels' range");
  NIMBUS_CHECK(!in.mean || (moments && in.invstd && !specialised),
               "cuda::conv2d_wgmma_forward_bn_moments: a batch-norm prologue needs mean, invstd and the moments' ",
               "kernel");
  const int K = int(g.K), CRS = int(g.C * g.R * g.S);
  const int ld = row16<E>(CRS);
  const void* wa = w;
  // TMA needs a 16-byte row stride and (swizzled) a 128-byte aligned base, and TF32 operands their
  // rounding: then a copy of w in the workspace.
  if (sizeof(E) == 4 || ld != CRS || !aligned128(w)) {
    NIMBUS_CHECK(ws && aligned128(ws), "cuda::conv2d_wgmma_forward: the weights' copy needs a 128-byte aligned ",
                 "workspace");
    auto* dst = reinterpret_cast<typename Elem<E>::Bits*>(ws);
    launch_n("cuda::conv2d_wgmma_forward (weight copy)", pad_rows_kernel<E>, int64_t(K) * ld, 256, dst, w, K, CRS, ld);
    wa = dst;
  }
  FwdParams<E> p{};
  p.x = x, p.bias = b, p.residual = r, p.res_scale = s, p.y = y;
  p.C = int(g.C), p.H = int(g.H), p.W = int(g.W), p.K = K, p.R = int(g.R), p.S = int(g.S);
  p.stride = int(g.stride), p.pad = int(g.pad), p.pad_w = int(g.pad), p.CRS = CRS, p.PQ = int(g.P() * g.Q());
  p.cols = int(g.N * g.P() * g.Q());
  p.relu = relu && !r ? 1 : 0;
  p.out_st = 1, p.out_ph = 0, p.out_pw = 0, p.out_W = int(g.Q()), p.out_HW = p.PQ;
  p.by_pq = FastDivmod(p.PQ), p.by_q = FastDivmod(int(g.Q())), p.by_rs = FastDivmod(int(g.R * g.S));
  p.by_s = FastDivmod(int(g.S));
  p.moments = moments;
  p.in = in;
  if (specialised)
    launch_fwd_specialised(a_map<E>(wa, K, CRS, ld), p, "cuda::conv2d_wgmma_forward_specialised");
  else
    launch_fwd(a_map<E>(wa, K, CRS, ld), p,
               in.mean   ? "cuda::conv2d_wgmma_forward_bn_moments (batch norm + ReLU prologue)"
               : moments ? "cuda::conv2d_wgmma_forward_bn_moments"
                         : "cuda::conv2d_wgmma_forward");
  return (p.cols + kBN - 1) / kBN;  // the moments' chunks per channel
}
}  // namespace

template <typename E>
void conv2d_wgmma_forward(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, bool relu, const E* r, float s,
                          float* ws) {
  forward_with(y, x, w, b, g, relu, r, s, ws, nullptr);
}

template <typename E>
void conv2d_wgmma_forward_specialised(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, bool relu,
                                      const E* r, float s, float* ws) {
  forward_with(y, x, w, b, g, relu, r, s, ws, nullptr, true);
}

template <typename E>
int conv2d_wgmma_forward_bn_moments(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, float* ws,
                                    float* moments, const BnReluIn& in) {
  NIMBUS_CHECK(moments, "cuda::conv2d_wgmma_forward_bn_moments: no moments buffer");
  return forward_with(y, x, w, b, g, false, static_cast<const E*>(nullptr), 1.0f, ws, moments, false, in);
}

template <typename E>
void conv2d_wgmma_backward(E* dx, E* dw, E* db, const E* dy, const E* x, const E* w, const ConvGeom& g, float* ws,
                           int splits) {
  NIMBUS_CHECK(conv2d_wgmma_supported(g), "cuda::conv2d_wgmma_backward: geometry outside the wgmma kernels' range");
  const int K = int(g.K), C = int(g.C), CRS = int(g.C * g.R * g.S);
  if (db) bias_backward(db, dy, g.N, g.K, g.P() * g.Q());
  if (dw) {  // first: its partial sums and the data gradient's packed weights share the workspace
    NIMBUS_CHECK(x, "cuda::conv2d_wgmma_backward: dw needs x");
    const int used = effective_splits<E>(g, splits > 0 ? splits : splits_of<E>(g));
    NIMBUS_CHECK(used == 1 || ws, "cuda::conv2d_wgmma_backward: ", used, " splits need a workspace");
    WgradParams<E> p{};
    p.dy = dy, p.x = x, p.dw = dw, p.partial = used > 1 ? ws : nullptr;
    p.C = C, p.H = int(g.H), p.W = int(g.W), p.K = K, p.R = int(g.R), p.S = int(g.S);
    p.stride = int(g.stride), p.pad = int(g.pad), p.P = int(g.P()), p.Q = int(g.Q()), p.PQ = p.P * p.Q;
    p.CRS = CRS, p.NPQ = int(g.N) * p.PQ;
    const int tiles = wgrad_tiles<E>(g);
    p.split_tiles = (tiles + used - 1) / used;
    p.by_pq = FastDivmod(p.PQ), p.by_q = FastDivmod(p.Q), p.by_rs = FastDivmod(int(g.R * g.S));
    p.by_s = FastDivmod(int(g.S));
    p.tma_a = wgrad_tma_a<E>(g, dy) ? 1 : 0;
    alignas(64) CUtensorMap map{};  // unused unless tma_a
    if (p.tma_a) map = dy_map(dy, g);
    allow_dynamic_smem(conv_wgrad_kernel<E>, kSmem, "cuda::conv2d_wgmma_backward (dw)");
    launch(conv_wgrad_kernel<E>, dim3(unsigned((CRS + kBN - 1) / kBN), unsigned((K + kBM - 1) / kBM), unsigned(used)),
           dim3(kThreads), kSmem, launch_stream(), map, p);
    check_launch("cuda::conv2d_wgmma_backward (dw)");
    if (used > 1) splitk_sum(dw, ws, int64_t(K) * CRS, used, "cuda::conv2d_wgmma_backward (dw split sum)");
  }
  if (dx) {
    NIMBUS_CHECK(w, "cuda::conv2d_wgmma_backward: dx needs w");
    NIMBUS_CHECK(ws && aligned128(ws), "cuda::conv2d_wgmma_backward: dx needs a 128-byte aligned workspace");
    const int st = int(g.stride), N = int(g.N);
    const std::vector<PhaseGeom> phases = dgrad_phases<E>(g, nullptr);
    auto* packed = reinterpret_cast<typename Elem<E>::Bits*>(ws);
    for (const PhaseGeom& f : phases)
      launch_n("cuda::conv2d_wgmma_backward (weight packing)", pack_dgrad_weights_kernel<E>, int64_t(C) * f.ld, 256,
               packed + f.at, w, K, C, int(g.R), int(g.S), st, f.r0, f.s0, f.Rp, f.Sp, f.zero, f.ld);
    for (const PhaseGeom& f : phases) {
      FwdParams<E> p{};
      p.x = dy, p.bias = nullptr, p.residual = nullptr, p.res_scale = 1.0f, p.y = dx;
      p.C = K, p.H = int(g.P()), p.W = int(g.Q()), p.K = C, p.R = f.Rp, p.S = f.Sp;
      p.stride = 1, p.pad = f.Rp - 1 - f.hb, p.pad_w = f.Sp - 1 - f.wb;
      p.CRS = K * f.Rp * f.Sp, p.PQ = f.Hp * f.Wp, p.cols = N * f.Hp * f.Wp, p.relu = 0;
      p.out_st = st, p.out_ph = f.ph, p.out_pw = f.pw, p.out_W = int(g.W), p.out_HW = int(g.H * g.W);
      p.by_pq = FastDivmod(p.PQ), p.by_q = FastDivmod(f.Wp), p.by_rs = FastDivmod(f.Rp * f.Sp);
      p.by_s = FastDivmod(f.Sp);
      launch_fwd(a_map<E>(packed + f.at, C, p.CRS, f.ld), p, "cuda::conv2d_wgmma_backward (dx)");
    }
  }
}

WgmmaConvCounts conv2d_wgmma_forward_counts(const ConvGeom& g, bool tf32) {
  const int64_t blocks = (g.N * g.P() * g.Q() + kBN - 1) / kBN * ((g.K + kBM - 1) / kBM);
  const int bk = tf32 ? kBK<float> : kBK<bfloat16>;
  const int64_t tiles = (g.C * g.R * g.S + bk - 1) / bk;
  return {blocks * tiles, blocks * tiles * 2 * 4, blocks * tiles};
}

WgmmaConvCounts conv2d_wgmma_wgrad_counts(const ConvGeom& g, bool tf32) {  // the splits' k-tiles: all of them
  const int64_t blocks = ((g.K + kBM - 1) / kBM) * ((g.C * g.R * g.S + kBN - 1) / kBN);
  const int64_t tiles = blocks * (tf32 ? wgrad_tiles<float>(g) : wgrad_tiles<bfloat16>(g));
  const bool tma = tf32 ? wgrad_tma_a<float>(g, nullptr) : wgrad_tma_a<bfloat16>(g, nullptr);
  return {tma ? tiles : 0, tiles * 2 * 4, tma ? tiles : 0};
}

bool wgmma_available() {
  static const bool available = [] {
    int* flag = nullptr;
    if (cudaMalloc(reinterpret_cast<void**>(&flag), sizeof(int)) != cudaSuccess) return false;
    int host = 0;
    launch(sm90a_probe_kernel, dim3(1), dim3(1), 0, launch_stream(), flag);
    count_host_wait();
    const bool ok = cudaGetLastError() == cudaSuccess && cudaStreamSynchronize(launch_stream()) == cudaSuccess &&
                    cudaMemcpy(&host, flag, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess;
    cudaFree(flag);
    return ok && host == 1;
  }();
  return available;
}

template void conv2d_wgmma_forward_specialised<float>(float*, const float*, const float*, const float*,
                                                      const ConvGeom&, bool, const float*, float, float*);
template void conv2d_wgmma_forward_specialised<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*,
                                                         const bfloat16*, const ConvGeom&, bool, const bfloat16*,
                                                         float, float*);
template int conv2d_wgmma_forward_bn_moments<float>(float*, const float*, const float*, const float*,
                                                    const ConvGeom&, float*, float*, const BnReluIn&);
template int conv2d_wgmma_forward_bn_moments<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, const bfloat16*,
                                                       const ConvGeom&, float*, float*, const BnReluIn&);
template void conv2d_wgmma_forward<float>(float*, const float*, const float*, const float*, const ConvGeom&, bool,
                                          const float*, float, float*);
template void conv2d_wgmma_forward<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, const bfloat16*,
                                             const ConvGeom&, bool, const bfloat16*, float, float*);
template void conv2d_wgmma_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                           const ConvGeom&, float*, int);
template void conv2d_wgmma_backward<bfloat16>(bfloat16*, bfloat16*, bfloat16*, const bfloat16*, const bfloat16*,
                                              const bfloat16*, const ConvGeom&, float*, int);

}  // namespace nimbus::cuda
