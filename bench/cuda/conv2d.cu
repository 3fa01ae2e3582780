/* bench/cuda/conv2d.cu: numbered convolution kernels (llm.c dev/cuda style), forward, backward-data
 * (dgrad) and backward-weight (wgrad), checked against the CPU reference and, on a GPU, timed
 * against cuDNN in fp32, TF32 and bf16.
 *
 *   x (N,C,H,W)  w (K,C,R,S)  y, dy (N,K,P,Q)  dx (N,C,H,W)  dw (K,C,R,S); cross-correlation, no bias
 *   version 1  direct: one thread per output element, the whole sum from global memory
 *              fwd   y[n,k,p,q]  = sum_{c,r,s} x[n,c,p*st-pad+r,q*st-pad+s] w[k,c,r,s]
 *              dgrad dx[n,c,h,w] = sum_{k,r,s: h+pad-r = p*st, w+pad-s = q*st} dy[n,k,p,q] w[k,c,r,s]
 *              wgrad dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n,c,p*st-pad+r,q*st-pad+s]
 *              (teaching references: readable, slow)
 *   version 2  the engine's: im2col + the tiled SGEMM (kernels/cuda/conv2d.cu: cuda::conv2d_forward,
 *              cuda::conv2d_backward with only dx, or only dw, requested)
 *   version 3  forward only: implicit GEMM on the tensor cores, TF32 (mma.sync m16n8k8; precision
 *              "tf32", compared with cuDNN TF32): gemm.cu version 4's tiles and pipeline with the
 *              B tile gathered from x (zero padding) while it is staged; no im2col buffer
 *   version 4  the engine's default in TF32 (kernels/cuda/conv2d_tc.cu): all three directions as
 *              implicit GEMMs on kernels/cuda/mma_core.cuh (128x128 or 64x64 tiles by size), the
 *              weight gradient over every image in one launch with split-K and an ordered sum
 *   version 5  the same kernels in bf16 (mma.sync m16n8k16, ldmatrix): bf16 NCHW operands and
 *              output; the casts from the fp32 inputs happen outside the timed region
 *   version 6  forward only, Hopper (sm_90a), bf16: v5's implicit GEMM on wgmma.mma_async m64n128k16
 *              (fp32 accumulation, bf16 NCHW output, bias + ReLU in the epilogue): the weights by TMA
 *              into a 3-stage 128B-swizzled ring (a padded copy when C*R*S is not a multiple of 8),
 *              the im2col tile gathered by the threads into wgmma's canonical K-major swizzled layout,
 *              then fence.proxy.async; one __syncthreads per k-tile. Runs on compute capability 9.0
 *              only; elsewhere the nvcc build skips it with a message (see its comment block)
 *   version 7  dgrad only, Hopper, bf16: version 6's kernel once per stride phase (st x st launches),
 *              each a stride-1 forward of dy with the phase's taps flipped, its weights packed per
 *              call into C x K*Rp*Sp bf16 matrices; the outputs scattered into the phase of dx
 *   version 8  wgrad only, Hopper, bf16: wgmma on the same ring, dy by TMA where P*Q is a multiple of
 *              64 (else gathered, as x always is), split-K with version 5's ordered sum.
 *   version 9  versions 6-8 in TF32 (m64n128k8, operands rounded with cvt.rna as version 4's).
 *              Versions 6-9 are the engine's kernels (kernels/cuda/conv2d_wgmma.cu), the backend's
 *              default for tensor-core convolutions on sm_90a
 *   version 10 forward only, bf16: version 6 warp-specialised (conv2d_wgmma_forward_specialised): a
 *              producer warpgroup gathers the im2col tile and starts the weights' copy, two consumer
 *              warpgroups multiply (setmaxnreg 88 / 200), a 4-stage ring on full/empty mbarriers,
 *              no block barrier in the loop; the same results as version 6, bit for bit
 *   version 11 version 10 in TF32 (as version 9 is 6-8's)
 *
 * Usage:
 *   bench_cuda_conv2d [--versions 1,3]    validate every version (the directions it has) at small odd
 *                                         shapes against kernels/cpu/conv2d.h's *_ref in double (both
 *                                         builds; under the emulator this is all it does, versions 3-11
 *                                         in forward, reverse and shuffled order; a ctest test)
 *   gpu_bench_conv2d --list               the case names (both builds; needs no GPU)
 *   gpu_bench_conv2d --sweep NAME|all [--sweep-table FILE] [--budget-ms 20]
 *                                         nvcc build only: every configuration of the backend's
 *                                         tensor-core kernels per layer (sweep_case); the winners as
 *                                         dispatch-table lines in FILE (default sweep_table.inc)
 *   gpu_bench_conv2d --case NAME|all [--case ...] [--versions 2,3] [--budget-ms 150]
 *                                         nvcc build only: validate at full size, then time, our
 *                                         versions and cuDNN fp32/TF32/bf16; JSON rows on stdout
 *                                         (docs/cuda-backend.md, "Kernel cases"). No GPU: exit 77.
 * Exit status: 0 all passed, 1 a version failed validation, 2 bad usage, 77 no CUDA device.
 */
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench/cuda/bench_util.cuh"
#include "bench/cuda/mma_tiles.cuh"
#include "kernels/common/fast_divmod.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/cast.h"
#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/conv2d_tc.h"
#include "kernels/cuda/conv2d_wgmma.h"
#include "kernels/cuda/hopper.h"
#if defined(__CUDACC__) && defined(NIMBUS_BENCH_CUDNN)
#include "bench/cuda/references.cuh"
#define NIMBUS_BENCH_CASES 1
#endif

using namespace nimbus;
using cpu::ConvGeom;

struct Dims {
  int N, C, H, W, K, R, S, P, Q, stride, pad;
};
Dims dims_of(const ConvGeom& g) {
  return Dims{int(g.N), int(g.C), int(g.H), int(g.W), int(g.K), int(g.R), int(g.S), int(g.P()), int(g.Q()),
              int(g.stride), int(g.pad)};
}

// ---- version 1: direct, one thread per output element ------------------------------------------
__global__ void conv_fwd_direct_kernel(float* y, const float* x, const float* w, Dims d) {
  const int64_t n_out = int64_t(d.N) * d.K * d.P * d.Q;
  for (int64_t i = grid_first(); i < n_out; i += grid_step()) {
    const int q = int(i % d.Q), p = int((i / d.Q) % d.P), k = int((i / (int64_t(d.Q) * d.P)) % d.K),
              n = int(i / (int64_t(d.Q) * d.P * d.K));
    float acc = 0.0f;
    for (int c = 0; c < d.C; ++c)
      for (int r = 0; r < d.R; ++r) {
        const int h = p * d.stride - d.pad + r;
        if (h < 0 || h >= d.H) continue;
        for (int s = 0; s < d.S; ++s) {
          const int ww = q * d.stride - d.pad + s;
          if (ww < 0 || ww >= d.W) continue;
          acc += x[((int64_t(n) * d.C + c) * d.H + h) * d.W + ww] * w[((int64_t(k) * d.C + c) * d.R + r) * d.S + s];
        }
      }
    y[i] = acc;
  }
}

// dx[n,c,h,w]: every (k, r, s) whose output position p = (h + pad - r) / stride lands exactly on the grid.
__global__ void conv_dgrad_direct_kernel(float* dx, const float* dy, const float* w, Dims d) {
  const int64_t n_in = int64_t(d.N) * d.C * d.H * d.W;
  for (int64_t i = grid_first(); i < n_in; i += grid_step()) {
    const int ww = int(i % d.W), h = int((i / d.W) % d.H), c = int((i / (int64_t(d.W) * d.H)) % d.C),
              n = int(i / (int64_t(d.W) * d.H * d.C));
    float acc = 0.0f;
    for (int k = 0; k < d.K; ++k)
      for (int r = 0; r < d.R; ++r) {
        const int ph = h + d.pad - r;
        if (ph < 0 || ph % d.stride != 0 || ph / d.stride >= d.P) continue;
        const int p = ph / d.stride;
        for (int s = 0; s < d.S; ++s) {
          const int qw = ww + d.pad - s;
          if (qw < 0 || qw % d.stride != 0 || qw / d.stride >= d.Q) continue;
          const int q = qw / d.stride;
          acc += dy[((int64_t(n) * d.K + k) * d.P + p) * d.Q + q] * w[((int64_t(k) * d.C + c) * d.R + r) * d.S + s];
        }
      }
    dx[i] = acc;
  }
}

// dw[k,c,r,s]: a sum over every image and output position (N*P*Q terms per thread).
__global__ void conv_wgrad_direct_kernel(float* dw, const float* dy, const float* x, Dims d) {
  const int64_t n_w = int64_t(d.K) * d.C * d.R * d.S;
  for (int64_t i = grid_first(); i < n_w; i += grid_step()) {
    const int s = int(i % d.S), r = int((i / d.S) % d.R), c = int((i / (int64_t(d.S) * d.R)) % d.C),
              k = int(i / (int64_t(d.S) * d.R * d.C));
    float acc = 0.0f;
    for (int n = 0; n < d.N; ++n)
      for (int p = 0; p < d.P; ++p) {
        const int h = p * d.stride - d.pad + r;
        if (h < 0 || h >= d.H) continue;
        for (int q = 0; q < d.Q; ++q) {
          const int ww = q * d.stride - d.pad + s;
          if (ww < 0 || ww >= d.W) continue;
          acc += dy[((int64_t(n) * d.K + k) * d.P + p) * d.Q + q] * x[((int64_t(n) * d.C + c) * d.H + h) * d.W + ww];
        }
      }
    dw[i] = acc;
  }
}

// Every direction has one signature: out = f(a, b), with (a, b) = (x, w) fwd, (dy, w) dgrad, (dy, x) wgrad.
using ConvFn = void (*)(float* out, const float* a, const float* b, const ConvGeom& g, float* ws);

void fwd1(float* y, const float* x, const float* w, const ConvGeom& g, float*) {
  launch(conv_fwd_direct_kernel, cuda::grid_for(g.N * g.K * g.P() * g.Q(), 256, 65535), 256, 0, nullptr, y, x, w,
         dims_of(g));
  cuda::check_launch("conv fwd v1");
}
void dgrad1(float* dx, const float* dy, const float* w, const ConvGeom& g, float*) {
  launch(conv_dgrad_direct_kernel, cuda::grid_for(g.N * g.C * g.H * g.W, 256, 65535), 256, 0, nullptr, dx, dy, w,
         dims_of(g));
  cuda::check_launch("conv dgrad v1");
}
void wgrad1(float* dw, const float* dy, const float* x, const ConvGeom& g, float*) {
  launch(conv_wgrad_direct_kernel, cuda::grid_for(g.K * g.C * g.R * g.S, 256, 65535), 256, 0, nullptr, dw, dy, x,
         dims_of(g));
  cuda::check_launch("conv wgrad v1");
}

// ---- version 2: im2col + tiled SGEMM (the engine's) ---------------------------------------------
void fwd2(float* y, const float* x, const float* w, const ConvGeom& g, float* ws) {
  cuda::conv2d_forward(y, x, w, nullptr, g, ws);
}
void dgrad2(float* dx, const float* dy, const float* w, const ConvGeom& g, float* ws) {
  cuda::conv2d_backward(dx, nullptr, nullptr, dy, nullptr, w, g, ws);
}
void wgrad2(float* dw, const float* dy, const float* x, const ConvGeom& g, float* ws) {
  cuda::conv2d_backward(nullptr, dw, nullptr, dy, x, nullptr, g, ws);
}

// ---- version 3: implicit GEMM on the tensor cores, TF32 (forward) ------------------------------
// What changes from version 2: no im2col buffer, and tensor cores. The forward convolution is the
// GEMM  y[k, (n,p,q)] = sum_{(c,r,s)} w[k, (c,r,s)] * x[n, c, p*st-pad+r, q*st-pad+s]:
// M = K output channels, N = N*P*Q output positions, reduction C*R*S. Version 2 writes that B
// matrix (C*R*S x N*P*Q: R*S copies of x) to memory with im2col and reads it back in the SGEMM;
// here each block gathers its 32 x 128 B tile straight from x while staging it into shared memory,
// zeros where the window hangs over the padding, and the tile goes through gemm.cu version 4's
// machinery (mma_tiles.cuh: 128x128 tile, 8 warps of 64x32, mma.sync m16n8k8 TF32, two stages).
//   A = w viewed as a K x C*R*S row-major matrix (its own layout): 16-byte cp.async when C*R*S is a
//   multiple of 4, else one 4-byte cp.async per element (the 7x7 stem with 13 channels: 637).
//   B: thread t owns column t % 128 of every B tile (an output position (n, p, q), decoded once)
//   and rows t / 128, +2, +4, ... of the reduction index, walked as (c, r, s) in steps of 2 with
//   no division; each element is one 4-byte cp.async whose src_bytes is 0 in the padding.
//   Output: y is NCHW, so the C tile's columns are scattered over images: scalar stores.
// Expected bottleneck: the gather. Per k-tile a thread issues 16 four-byte cp.async (version 4: 4
// of 16 bytes) with bounds checks, and stride-2 convolutions read x with gaps; then the same
// shared-memory fragment loads as gemm.cu version 4. Next: 16-byte gathers along q for stride-1
// convs (or an NHWC layout, where C is contiguous), and a precomputed (c, r, s) offset table.
template <bool kVecA>
__global__ void __launch_bounds__(mma_tiles::kThreads)
    conv_fwd_implicit_tf32_kernel(float* y, const float* x, const float* w, Dims d) {
  using namespace mma_tiles;
  DYNAMIC_SMEM(float, smem);  // two stages of [A tile kBM x kLdaF | B tile kBK x kLdbF]
  const int warp = int(threadIdx.x) / 32, wm = warp / kWarpsN, wn = warp % kWarpsN;
  const int CRS = d.C * d.R * d.S, PQ = d.P * d.Q, cols = d.N * PQ;
  const int m0 = int(blockIdx.y) * kBM, n0 = int(blockIdx.x) * kBN;  // output channels, output positions

  // This thread's B column: output position (img, p, q), whose window starts at (h0, w0) in x.
  constexpr int kRowStep = kThreads / kBN;  // 2: the B rows a thread fills are kr0, kr0 + 2, ...
  const int bc = int(threadIdx.x) % kBN, kr0 = int(threadIdx.x) / kBN;
  const int col = n0 + bc;
  const bool col_in = col < cols;
  const int img = col_in ? col / PQ : 0, pq = col_in ? col % PQ : 0;
  const int h0 = (pq / d.Q) * d.stride - d.pad, w0 = (pq % d.Q) * d.stride - d.pad;
  const float* x_img = x + int64_t(img) * d.C * d.H * d.W;
  // Its next reduction index as (c, r, s): the tiles are staged in order, so the rows it fills
  // are kr0, kr0 + 2, ... over the whole loop, and (c, r, s) just advances by 2 each time.
  int c = kr0 / (d.R * d.S), r = kr0 / d.S % d.R, s = kr0 % d.S;
  const auto advance = [&] {
    s += kRowStep;
    while (s >= d.S) s -= d.S, ++r;
    while (r >= d.R) r -= d.R, ++c;
  };

  const auto stage = [&](int buf, int kt) {
    float* As = smem + buf * kStageF;
    float* Bs = As + kBM * kLdaF;
    if constexpr (kVecA)
      stage_tile_cp16<float, kBM, kBK, kLdaF>(As, w, d.K, CRS, m0, kt * kBK);
    else
      stage_tile_cp4<kBM, kBK, kLdaF>(As, w, d.K, CRS, m0, kt * kBK);
    for (int i = 0; i < kBK / kRowStep; ++i) {  // B: x gathered, 0 in the padding and past the edges
      const int h = h0 + r, ww = w0 + s;
      const bool in = col_in && c < d.C && h >= 0 && h < d.H && ww >= 0 && ww < d.W;
      const float* src = in ? x_img + (int64_t(c) * d.H + h) * d.W + ww : x;
      cp_async_ca<4>(Bs + (kr0 + kRowStep * i) * kLdbF + bc, src, in ? 4 : 0);
      advance();
    }
    cp_async_commit();
  };

  Acc acc = {};
  double_buffered_k_loop((CRS + kBK - 1) / kBK, stage, [&](int buf) {  // gemm.cu version 4's pipeline
    const float* As = smem + buf * kStageF;
    warp_mma_tf32(As, As + kBM * kLdaF, acc, wm, wn);
  });

  for_each_acc_pair(acc, m0, n0, wm, wn, [&](int k, int j, float v0, float v1) {  // row k, columns j, j + 1
    if (k >= d.K) return;
    if (j < cols) y[(int64_t(j / PQ) * d.K + k) * PQ + j % PQ] = v0;
    if (j + 1 < cols) y[(int64_t((j + 1) / PQ) * d.K + k) * PQ + (j + 1) % PQ] = v1;
  });
}

void fwd3(float* y, const float* x, const float* w, const ConvGeom& g, float*) {
  using namespace mma_tiles;
  const Dims d = dims_of(g);
  const int64_t cols = g.N * g.P() * g.Q();
  if (cols <= 0 || d.K <= 0) return;
  if (cols > INT_MAX - kBN || g.C * g.R * g.S > INT_MAX - kBK)
    throw std::runtime_error("conv fwd v3: N*P*Q or C*R*S too large for 32-bit tile indices");
  const bool vec = (d.C * d.R * d.S) % 4 == 0 && aligned16(w);
  void (*kernel)(float*, const float*, const float*, Dims) =
      vec ? conv_fwd_implicit_tf32_kernel<true> : conv_fwd_implicit_tf32_kernel<false>;
  static const bool smem_allowed = [] {  // 70 KiB of dynamic shared memory: above the 48 KiB default
    CK(cudaFuncSetAttribute(conv_fwd_implicit_tf32_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            int(kSmemTf32)));
    CK(cudaFuncSetAttribute(conv_fwd_implicit_tf32_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            int(kSmemTf32)));
    return true;
  }();
  (void)smem_allowed;
  launch(kernel, dim3(unsigned((cols + kBN - 1) / kBN), unsigned((d.K + kBM - 1) / kBM)), dim3(kThreads), kSmemTf32,
         nullptr, y, x, w, d);
  cuda::check_launch("conv fwd v3");
}

// ---- versions 4 and 5: the engine's tensor-core kernels (kernels/cuda/conv2d_tc.cu) -------------
// ws: conv_workspace(g) floats (the weight gradient's split partial sums).
template <typename E>
void fwd_tc(E* y, const E* x, const E* w, const ConvGeom& g, float*) {
  cuda::conv2d_tc_forward<E>(y, x, w, nullptr, g, false);
}
template <typename E>
void dgrad_tc(E* dx, const E* dy, const E* w, const ConvGeom& g, float* ws) {
  cuda::conv2d_tc_backward<E>(dx, nullptr, nullptr, dy, nullptr, w, g, ws);
}
template <typename E>
void wgrad_tc(E* dw, const E* dy, const E* x, const ConvGeom& g, float* ws) {
  cuda::conv2d_tc_backward<E>(nullptr, dw, nullptr, dy, x, nullptr, g, ws);
}
using Bf16Fn = void (*)(bfloat16* out, const bfloat16* a, const bfloat16* b, const ConvGeom& g, float* ws);
const Bf16Fn kBf16[3] = {fwd_tc<bfloat16>, dgrad_tc<bfloat16>, wgrad_tc<bfloat16>};

// ---- version 6: Hopper (sm_90a), bf16 forward: TMA weights, gathered im2col tile, wgmma ---------------
// What changes from version 5: the tensor cores are Hopper's warpgroup MMAs, fed from shared memory
// without fragments in registers, and the weights arrive by the copy engine. Same GEMM as versions
// 3-5: y[k, (n,p,q)] = sum_{(c,r,s)} w[k, (c,r,s)] x[n, c, p*st-pad+r, q*st-pad+s]; M = K output
// channels (A = w, K x C*R*S row-major: K-major for wgmma), N = N*P*Q output positions (B = the
// implicit im2col columns), reduction C*R*S; y is NCHW, bf16, with bias and ReLU fused as in v5's
// forward (conv2d_tc.cu's Forward::store: + bias[k], then max(v, 0)); the bench passes neither
// (v5's row does not either), validate_v6_epilogue checks both.
//   Tile: 128 channels x 128 positions per 256-thread block: two warpgroups, each multiplies 64
//   channels x 128 positions with wgmma.mma_async m64n128k16 (A and B through descriptors), 64 fp32
//   accumulators per thread. k-tile 64 (one 128-byte line of bf16 per row: the 128B swizzle span).
//   A (weights): one TMA box per k-tile (64 k x 128 rows, 16 KiB, 128B swizzle, zero outside the
//   matrix), completing on the stage's mbarrier. TMA needs a 16-byte row stride, so when C*R*S is
//   not a multiple of 8 (the 13-channel stem: 637; C = 3 3x3: 27) or w is not 128-byte aligned, the
//   launcher first copies w into a padded bf16 matrix (row stride rounded up to 8 elements) in a
//   buffer it keeps; the copy is part of every call (timed: K * CRS elements, tiny next to x). The
//   map's inner extent stays C*R*S, so the padding is never read (TMA zero-fills past it).
//   B (im2col): gathered by all 256 threads with plain 2-byte loads (cp.async copies at least 4 bytes
//   and an im2col element is only 2-byte aligned), 0 in the padding, packed 8 at a time into 16-byte
//   shared stores. Thread t owns position column t % 128 (decoded once) and k rows 32 (t / 128) ..
//   +31 of every k-tile, walked as (c, r, s) with no division: lanes of a warp read consecutive
//   positions of one (c, r, s), i.e. consecutive x along q for stride 1. Shared layout: wgmma's
//   canonical K-major 128B-swizzled layout, one 128-byte line per position (its 64 k), 16-byte chunk j
//   of line l at chunk j ^ (l % 8), 8-line groups 1024 bytes apart (SBO). Each gathering thread then
//   runs fence.proxy.async: its generic-proxy stores must be visible to the async proxy (wgmma).
//   Pipeline: a ring of 3 stages [A 16 KiB | B 16 KiB]; no warp specialization. Iteration kt: wait
//   for A's TMA of k-tile kt (full[kt % 3], parity (kt / 3) & 1), issue 4 wgmma on its stage, commit,
//   wait_group 1 (this warpgroup's k-tile kt - 1 is done), __syncthreads (every warpgroup's is: stage
//   (kt - 1) % 3 is free), then thread 0 starts the TMA of k-tile kt + 2 into it and every thread
//   gathers its B part. So the gather of k-tile kt + 2 overlaps the wgmma of k-tile kt, and the one
//   barrier per k-tile also orders each gather before its consumer: k-tile j is gathered in
//   iteration j - 2 after that iteration's barrier and read in iteration j, after iteration j - 1's
//   barrier (why the ring needs at least 3 stages). 96 KiB of shared memory: two blocks per SM.
// Expected bottleneck: the gather. Per k-tile a thread issues 32 two-byte loads with bounds checks
// and 4 shared stores for 4 wgmma of its warpgroup; the loads of a warp are 64 contiguous bytes at
// best (stride 1) and strided for stride 2. Then the epilogue's scattered 2-byte stores. Next steps:
// warp-specialized producers for B (the gather off the MMA warps' critical path), 16-byte gathers
// along q, the stem and 1x1 convs as special cases (1x1 stride 1 is a plain GEMM per image: TMA for
// B too), a 128x256 tile, and a shared-memory-staged, coalesced epilogue.
// The kernel is the engine's (kernels/cuda/conv2d_wgmma.cu, conv_fwd_kernel; the backend's default for
// bf16 convolutions on sm_90a), with DSen2-CR's residual sum as a third epilogue. Runs only on compute
// capability 9.0 (sm_90a); elsewhere the nvcc build skips it with a message.
// ---- version 7: the data gradient on the same kernel ----------------------------------------------
// dx[n, c, h, w] = sum_{k, r, s} dy[n, k, (h + pad - r) / st, (w + pad - s) / st] w[k, c, r, s] over the
// taps where both divide exactly and land inside dy. Split into the st x st phases (h mod st, w mod st)
// = (ph, pw) as conv2d_tc.cu's DataGrad: in a phase the taps are r = r0 + st rr (rr < Rp), and
// dx[n, c, ph + st i, ...] = sum_{k, rr, ss} dy[n, k, i + hb - rr, j + wb - ss] w[k, c, r0 + st rr, ...].
// With the taps flipped, r' = Rp - 1 - rr, that is version 6's forward: input dy (K channels, P x Q),
// stride 1, pad Rp - 1 - hb (rows) and Sp - 1 - wb (columns), Rp x Sp taps, C output channels over
// the phase's Hp x Wp positions, written into dx at (ph + st i, pw + st j). A = the phase's weights
// packed into the workspace (C x K*Rp*Sp, every call: K*C*R*S elements in all). A phase without taps
// (1x1 stride 2, odd rows) runs one zero tap: its outputs are 0. One launch per phase.
// ---- version 8: the weight gradient on wgmma -------------------------------------------------------
// What changes from version 5's weight gradient: wgmma m64n128k16 from shared memory, the same 3-stage
// 128B-swizzled ring as version 6 (conv_wgrad_kernel). Where P*Q is a multiple of 64 a k-tile of output
// positions lies in one image, and dy comes by TMA as a 3-D box (64 positions x 128 channels x 1
// image) on the stage's mbarrier; elsewhere (ResNet-50's 4x4 and 2x2 stages) dy's rows are no boxes and
// are gathered like x. A thread owns 8 consecutive positions (one 16-byte
// chunk of a line) of 4 rows of A (output channels) and 4 columns of B (taps (c, r, s)), walked as
// (n, p, q) without division, so a warp reads 4 rows of dy and x 128 contiguous bytes at a time for
// stride 1. The reduction N*P*Q is long and the output K x C*R*S small: split-K over blockIdx.z (two
// blocks per SM of an H200, at least 4 k-tiles a split), fp32 partial sums in the workspace, then
// version 5's ordered split sum. Expected bottleneck: the gather of x's im2col tile (and of dy where it
// is no box: 64 two-byte loads a thread per k-tile) and the split partials' traffic; next: a
// warp-specialized producer.
template <int Dir>
void hopper_conv(bfloat16* out, const bfloat16* a, const bfloat16* b, const ConvGeom& g, float* ws) {
  if (Dir == 0) cuda::conv2d_wgmma_forward<bfloat16>(out, a, b, nullptr, g, false, nullptr, 1.0f, ws);
  if (Dir == 1) cuda::conv2d_wgmma_backward<bfloat16>(out, nullptr, nullptr, a, nullptr, b, g, ws);
  if (Dir == 2) cuda::conv2d_wgmma_backward<bfloat16>(nullptr, out, nullptr, a, b, nullptr, g, ws);
}
const Bf16Fn kBf16Hopper[3] = {hopper_conv<0>, hopper_conv<1>, hopper_conv<2>};  // versions 6, 7, 8
// ---- version 9: versions 6-8 in TF32 ----------------------------------------------------------------
// The same kernels on float tensors: a k-tile is 32 TF32 values a line (m64n128k8, 4 steps), the
// operands rounded with cvt.rna on their way into shared memory (the gathers) or the workspace (the
// weights, copied and rounded every call, so TMA reads rounded values), as version 4 rounds its own.
void fwd9(float* y, const float* x, const float* w, const ConvGeom& g, float* ws) {
  cuda::conv2d_wgmma_forward<float>(y, x, w, nullptr, g, false, nullptr, 1.0f, ws);
}
void dgrad9(float* dx, const float* dy, const float* w, const ConvGeom& g, float* ws) {
  cuda::conv2d_wgmma_backward<float>(dx, nullptr, nullptr, dy, nullptr, w, g, ws);
}
void wgrad9(float* dw, const float* dy, const float* x, const ConvGeom& g, float* ws) {
  cuda::conv2d_wgmma_backward<float>(nullptr, dw, nullptr, dy, x, nullptr, g, ws);
}
// ---- versions 10 and 11: version 6 (and 9's forward) warp-specialised ----------------------------------
// What changes from version 6: the block's 256 threads all gather, then all wait at one __syncthreads
// per k-tile, so the tensor cores idle while the next tile is gathered unless another block fills in
// (two per SM). Here 384 threads split the work: warpgroup 0 (setmaxnreg.dec to 88 registers) gathers
// whole lines of the im2col tile and starts the weights' TMA copy; warpgroups 1 and 2 (setmaxnreg.inc
// to 200) only wait for full[s], multiply and release the stage on empty[s]. 4 stages (128 KiB: one
// block per SM). Expected: the gather (twice the values per producer thread) hidden behind the MMAs
// where C*R*S is long (DSen2-CR's 2304); no gain, or a loss, where one block per SM leaves the MMAs
// idle in the epilogue (small layers). The GPU decides.
void fwd10(bfloat16* y, const bfloat16* x, const bfloat16* w, const ConvGeom& g, float* ws) {
  cuda::conv2d_wgmma_forward_specialised<bfloat16>(y, x, w, nullptr, g, false, nullptr, 1.0f, ws);
}
const Bf16Fn kBf16Specialised[3] = {fwd10, nullptr, nullptr};
void fwd11(float* y, const float* x, const float* w, const ConvGeom& g, float* ws) {
  cuda::conv2d_wgmma_forward_specialised<float>(y, x, w, nullptr, g, false, nullptr, 1.0f, ws);
}
// The bf16 kernels of version v (5 to 8, 10) by direction.
const Bf16Fn* bf16_kernels(int v) { return v == 10 ? kBf16Specialised : v >= 6 ? kBf16Hopper : kBf16; }

// Whether they run here: the engine's code for this device is sm_90a (its probe), or the emulator.
bool wgmma_runs() {
#ifdef __CUDACC__
  return cuda::wgmma_available();
#else
  return true;
#endif
}

// Version 5 (or 6) behind the fp32 signature, for validation: the operands cast to bf16 scratch, the
// output cast back (timing calls kBf16 on bf16 buffers made once, run_case).
template <int V, int Dir>
void conv_bf16_via_f32(float* out, const float* a, const float* b, const ConvGeom& g, float* ws) {
  const int64_t x = g.N * g.C * g.H * g.W, w = g.K * g.C * g.R * g.S, y = g.N * g.K * g.P() * g.Q();
  const int64_t na = Dir == 0 ? x : y, nb = Dir == 2 ? x : w, nout = Dir == 0 ? y : Dir == 1 ? x : w;
  bfloat16 *a16 = nullptr, *b16 = nullptr, *o16 = nullptr;
  CK(cudaMalloc(&a16, size_t(na) * 2));
  CK(cudaMalloc(&b16, size_t(nb) * 2));
  CK(cudaMalloc(&o16, size_t(nout) * 2));
  cuda::cast_f32_to_bf16(a16, a, na);
  cuda::cast_f32_to_bf16(b16, b, nb);
  bf16_kernels(V)[Dir](o16, a16, b16, g, ws);
  cuda::cast_bf16_to_f32(out, o16, nout);
  CK(cudaDeviceSynchronize());
  cudaFree(a16), cudaFree(b16), cudaFree(o16);
}

enum { kFwd, kDgrad, kWgrad };
const char* const kDirName[] = {"fwd", "dgrad", "wgrad"};
// Per version, one function per direction (nullptr: the version has none), and its precision.
const ConvFn kVersions[][3] = {{nullptr, nullptr, nullptr},
                               {fwd1, dgrad1, wgrad1},
                               {fwd2, dgrad2, wgrad2},
                               {fwd3, nullptr, nullptr},
                               {fwd_tc<float>, dgrad_tc<float>, wgrad_tc<float>},
                               {conv_bf16_via_f32<5, 0>, conv_bf16_via_f32<5, 1>, conv_bf16_via_f32<5, 2>},
                               {conv_bf16_via_f32<6, 0>, nullptr, nullptr},
                               {nullptr, conv_bf16_via_f32<7, 1>, nullptr},
                               {nullptr, nullptr, conv_bf16_via_f32<8, 2>},
                               {fwd9, dgrad9, wgrad9},
                               {conv_bf16_via_f32<10, 0>, nullptr, nullptr},
                               {fwd11, nullptr, nullptr}};
const char* const kPrecision[] = {"",     "fp32", "fp32", "tf32", "tf32", "bf16",
                                  "bf16", "bf16", "bf16", "tf32", "bf16", "tf32"};
constexpr int kLast = 11;
// Versions that need sm_90a (compute capability 9.0): TMA + wgmma.
bool is_hopper_version(int v) { return v >= 6 && v <= 11; }

// Scratch floats any version needs at g: im2col columns (version 2), split partial sums (4, 5, 8), the
// padded or packed weights (6, 7).
int64_t conv_workspace(const ConvGeom& g) {
  const int64_t wgmma = cuda::conv2d_wgmma_supported(g) ? cuda::conv2d_wgmma_workspace(g) : 0;
  return std::max({cuda::conv2d_workspace(g), cuda::conv2d_tc_workspace(g), wgmma}) + 1;
}

// Element counts of the operands (a, b) and of the output, by direction.
struct Sizes {
  int64_t a, b, out;
};
Sizes sizes(const ConvGeom& g, int dir) {
  const int64_t x = g.N * g.C * g.H * g.W, w = g.K * g.C * g.R * g.S, y = g.N * g.K * g.P() * g.Q();
  return dir == kFwd ? Sizes{x, w, y} : dir == kDgrad ? Sizes{y, w, x} : Sizes{y, x, w};
}

// ---- small validation (both builds): every element vs the double reference ----------------------
// fp32 versions: max |got - ref| / (1e-4 + 1e-4 |ref|) over the output: <= 1 passes.
bool validate_fp32(int v, int dir, const ConvGeom& g) {
  const Sizes n = sizes(g, dir);
  std::vector<float> a(size_t(n.a)), b(size_t(n.b));
  for (size_t i = 0; i < a.size(); ++i) a[i] = float((i * 37) % 17) / 8.0f - 1.0f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = float((i * 53) % 19) / 9.0f - 1.0f;
  std::vector<double> ad(a.begin(), a.end()), bd(b.begin(), b.end()), ref(size_t(n.out));
  if (dir == kFwd) cpu::conv2d_forward_ref<double>(ref.data(), ad.data(), bd.data(), nullptr, g);
  if (dir == kDgrad) cpu::conv2d_backward_data_ref<double>(ref.data(), ad.data(), bd.data(), g);
  if (dir == kWgrad) cpu::conv2d_backward_weight_ref<double>(ref.data(), ad.data(), bd.data(), g);
  float *da = upload(a), *db = upload(b), *dout = nullptr, *ws = nullptr;
  CK(cudaMalloc(&dout, sizeof(float) * size_t(n.out)));
  CK(cudaMemset(dout, 0xFF, sizeof(float) * size_t(n.out)));  // NaN: every element must be written
  CK(cudaMalloc(&ws, sizeof(float) * size_t(conv_workspace(g))));
  kVersions[v][dir](dout, da, db, g, ws);
  std::vector<float> out(size_t(n.out));
  CK(cudaMemcpy(out.data(), dout, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(da), cudaFree(db), cudaFree(dout), cudaFree(ws);
  double worst = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double e = std::fabs(double(out[i]) - ref[i]) / (1e-4 + 1e-4 * std::fabs(ref[i]));
    worst = std::isnan(e) ? INFINITY : std::fmax(worst, e);
  }
  std::printf("version %d %-5s: N%ld C%ld %ldx%ld K%ld %ldx%ld s%ld p%ld %s (worst error %.3g of tolerance)\n", v,
              kDirName[dir], long(g.N), long(g.C), long(g.H), long(g.W), long(g.K), long(g.R), long(g.S),
              long(g.stride), long(g.pad), worst <= 1 ? "OK" : "WRONG", worst);
  return worst <= 1;
}

// The float64 reference of direction dir: out from operands (a, b) = (x, w), (dy, w) or (dy, x).
void conv_reference(int dir, const ConvGeom& g, const double* a, const double* b, double* out) {
  if (dir == kFwd) cpu::conv2d_forward_ref<double>(out, a, b, nullptr, g);
  if (dir == kDgrad) cpu::conv2d_backward_data_ref<double>(out, a, b, g);
  if (dir == kWgrad) cpu::conv2d_backward_weight_ref<double>(out, a, b, g);
}

// Tensor-core versions (tf32, bf16), inputs uniform in [-1, 1), as gemm.cu's validate_mma:
// rel_err against the float64 reference of the fp32 inputs within the precision's bound (tf32
// 5e-3, bf16 2e-2), and every element within 1e-5 sum |a b| of the float64 result on the rounded
// operands (what the tensor cores multiply; bf16 outputs also within their own rounding, 2^-8 of
// |ref|). Emulator: forward, reverse, shuffled order, bitwise equal.
bool validate_mma(int v, int dir, const ConvGeom& g) {
  const std::string precision = kPrecision[v];
  const bool bf16 = precision == "bf16";
  const Sizes n = sizes(g, dir);
  std::mt19937 rng(uint32_t(n.a * 31 + n.b * 7 + n.out));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> a(size_t(n.a)), b(size_t(n.b));
  for (float& e : a) e = u(rng);
  for (float& e : b) e = u(rng);
  const auto seen = [&](float f) { return bf16 ? double(float(bfloat16(f))) : double(mma_tiles::round_tf32(f)); };
  std::vector<double> ad(a.begin(), a.end()), bd(b.begin(), b.end()), ar(a.size()), br(b.size()), aa(a.size()),
      ba(b.size());
  for (size_t i = 0; i < a.size(); ++i) ar[i] = seen(a[i]), aa[i] = std::fabs(ar[i]);
  for (size_t i = 0; i < b.size(); ++i) br[i] = seen(b[i]), ba[i] = std::fabs(br[i]);
  std::vector<double> ref(size_t(n.out)), rounded(ref.size()), mag(ref.size());
  conv_reference(dir, g, ad.data(), bd.data(), ref.data());
  conv_reference(dir, g, ar.data(), br.data(), rounded.data());
  conv_reference(dir, g, aa.data(), ba.data(), mag.data());  // sum |a b| per output
  // A bf16 output is the rounded sum: 2^-8 of |rounded| more, written into mag's 1e-5 units.
  if (bf16)
    for (size_t i = 0; i < mag.size(); ++i) mag[i] += std::ldexp(std::fabs(rounded[i]), -8) / 1e-5;
  float *da = upload(a), *db = upload(b), *ws = nullptr;
  CK(cudaMalloc(&ws, sizeof(float) * size_t(conv_workspace(g))));
  const double bnd = mma_tiles::precision_bound(precision);
  bool counts_ok = true;
#ifndef __CUDACC__
  emu::LaunchStats before{};  // the emulator's counters before the run being checked
#endif
  const bool ok = mma_tiles::check_in_every_order(
      [&](float* out) {
#ifndef __CUDACC__
        before = emu::all_launch_stats();
#endif
        kVersions[v][dir](out, da, db, g, ws);
      },
      ref, rounded, mag, bnd,
      [&](const char* order, const mma_tiles::MmaCheck& c) {
        std::string extra;
        bool pass = c.pass;
#ifndef __CUDACC__
        // Versions 6, 8, 9, 10 and 11 (wgmma; not the data gradient's phases): the TMA copies, wgmma and
        // mbarrier phases of the run must be the counts their tiling implies (the casts around them issue
        // none). The warp-specialised forward adds its empty[s] phases: every k-tile but a block's last.
        if (v == 6 || v == 8 || (v == 9 && dir != kDgrad) || v >= 10) {
          const emu::LaunchStats st = emu::all_launch_stats();
          const int64_t tma = st.tma - before.tma, wgmma = st.wgmma - before.wgmma;
          const int64_t phases = st.mbarrier_phases - before.mbarrier_phases;
          const bool tf32 = v == 9 || v == 11;
          cuda::WgmmaConvCounts want =
              dir == kFwd ? cuda::conv2d_wgmma_forward_counts(g, tf32) : cuda::conv2d_wgmma_wgrad_counts(g, tf32);
          if (v >= 10) want.phases = 2 * want.phases - ((g.N * g.P() * g.Q() + 127) / 128) * ((g.K + 127) / 128);
          const bool same = tma == want.tma && wgmma == want.wgmma && phases == want.phases;
          counts_ok = counts_ok && same;
          pass = pass && same;
          extra = str("; ", tma, " TMA copies, ", wgmma, " wgmma, ", phases, " mbarrier phases",
                      same ? "" : str(" WRONG: expected ", want.tma, ", ", want.wgmma, ", ", want.phases));
        }
#endif
        std::printf("version %d %-5s (%s): N%ld C%ld %ldx%ld K%ld %ldx%ld s%ld p%ld %-8s %s (rel_err %.2e, bound "
                    "%.0e; vs rounded operands %.3g of tolerance%s%s)\n",
                    v, kDirName[dir], precision.c_str(), long(g.N), long(g.C), long(g.H), long(g.W), long(g.K),
                    long(g.R), long(g.S), long(g.stride), long(g.pad), order, pass ? "OK" : "WRONG", c.rel, bnd,
                    c.worst, extra.c_str(), c.same ? "" : "; differs from the first order");
      });
  cudaFree(da), cudaFree(db), cudaFree(ws);
  return ok && counts_ok;
}

// An error a version raises (the emulator's checks: an operand changed while a wgmma read it, a
// missing proxy fence, a deadlock; a launcher's refusal) fails that validation with its message, and
// the other validations still run.
bool validate(int v, int dir, const ConvGeom& g) {
  try {
    return std::string(kPrecision[v]) == "fp32" ? validate_fp32(v, dir, g) : validate_mma(v, dir, g);
  } catch (const std::exception& e) {
    std::printf("version %d %-5s: N%ld C%ld %ldx%ld K%ld %ldx%ld s%ld p%ld WRONG: %s\n", v, kDirName[dir], long(g.N),
                long(g.C), long(g.H), long(g.W), long(g.K), long(g.R), long(g.S), long(g.stride), long(g.pad),
                e.what());
    return false;
  }
}

// ---- the cases ------------------------------------------------------------------------------------
struct Layer {
  ConvGeom g;
  int count;  // how many convs of the network have this geometry
};
struct Case {
  const char* name;
  int dir;
  std::vector<Layer> layers;
};

// DSen2-CR's body conv: 256 -> 256 channels, 3x3, stride 1, pad 1, on 128x128 patches, batch 8.
std::vector<Layer> dsen2cr_layers() { return {{ConvGeom{8, 256, 128, 128, 256, 3, 3, 1, 1}, 1}}; }

// torchvision's ResNet-50 (v1.5: the stride sits on each stage's first 3x3 conv and on its 1x1
// downsample), 13 input channels (Sentinel-2), input 64x64, batch 256. Bottleneck = 1x1 (in -> width),
// 3x3 (width -> width), 1x1 (width -> 4 width); block 1 of each stage adds a 1x1 downsample.
//   stem   13 -> 64, 7x7 s2 p3: 64 -> 32; then maxpool 3x3 s2: 32 -> 16                    1 conv
//   layer1 3 blocks at 16x16, width 64, out 256 (no stride)                              10 convs
//   layer2 4 blocks, width 128, out 512: 16 -> 8 in block 1 (3x3 and downsample s2)      13 convs
//   layer3 6 blocks, width 256, out 1024: 8 -> 4                                         19 convs
//   layer4 3 blocks, width 512, out 2048: 4 -> 2                                         10 convs
// 1 + 10 + 13 + 19 + 10 = 53 convs in 23 distinct geometries. Per stage with b blocks, input
// channels `in`, at resolution h (-> h/2 when strided):
//   1x1 in -> width at h (1); 3x3 width at h, stride (1); 1x1 width -> out at h' (b: every block's
//   conv3 ... b of them); downsample 1x1 in -> out, stride, at h (1); 1x1 out -> width at h' (b-1);
//   3x3 width at h' (b-1). (layer1: stride 1, so its two 3x3 rows merge: 3 of them, and its 1x1
//   64 -> 256 downsample merges with the conv3s: 4.)
std::vector<Layer> resnet50_layers() {
  constexpr int64_t B = 256;
  return {
      {{B, 13, 64, 64, 64, 7, 7, 2, 3}, 1},  // stem
      // layer1, 16x16
      {{B, 64, 16, 16, 64, 1, 1, 1, 0}, 1},    // block 1 conv1
      {{B, 64, 16, 16, 64, 3, 3, 1, 1}, 3},    // conv2, all 3 blocks
      {{B, 64, 16, 16, 256, 1, 1, 1, 0}, 4},   // conv3 x3 + downsample
      {{B, 256, 16, 16, 64, 1, 1, 1, 0}, 2},   // blocks 2-3 conv1
      // layer2, 16x16 -> 8x8
      {{B, 256, 16, 16, 128, 1, 1, 1, 0}, 1},  // block 1 conv1
      {{B, 128, 16, 16, 128, 3, 3, 2, 1}, 1},  // block 1 conv2, stride 2
      {{B, 128, 8, 8, 512, 1, 1, 1, 0}, 4},    // conv3 x4
      {{B, 256, 16, 16, 512, 1, 1, 2, 0}, 1},  // downsample, stride 2
      {{B, 512, 8, 8, 128, 1, 1, 1, 0}, 3},    // blocks 2-4 conv1
      {{B, 128, 8, 8, 128, 3, 3, 1, 1}, 3},    // blocks 2-4 conv2
      // layer3, 8x8 -> 4x4
      {{B, 512, 8, 8, 256, 1, 1, 1, 0}, 1},
      {{B, 256, 8, 8, 256, 3, 3, 2, 1}, 1},
      {{B, 256, 4, 4, 1024, 1, 1, 1, 0}, 6},
      {{B, 512, 8, 8, 1024, 1, 1, 2, 0}, 1},
      {{B, 1024, 4, 4, 256, 1, 1, 1, 0}, 5},
      {{B, 256, 4, 4, 256, 3, 3, 1, 1}, 5},
      // layer4, 4x4 -> 2x2
      {{B, 1024, 4, 4, 512, 1, 1, 1, 0}, 1},
      {{B, 512, 4, 4, 512, 3, 3, 2, 1}, 1},
      {{B, 512, 2, 2, 2048, 1, 1, 1, 0}, 3},
      {{B, 1024, 4, 4, 2048, 1, 1, 2, 0}, 1},
      {{B, 2048, 2, 2, 512, 1, 1, 1, 0}, 2},
      {{B, 512, 2, 2, 512, 3, 3, 1, 1}, 2},
  };
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (int dir : {kFwd, kDgrad, kWgrad})
    out.push_back({dir == kFwd ? "dsen2cr_conv3x3_fwd" : dir == kDgrad ? "dsen2cr_conv3x3_dgrad" : "dsen2cr_conv3x3_wgrad",
                   dir, dsen2cr_layers()});
  for (int dir : {kFwd, kDgrad, kWgrad})
    out.push_back({dir == kFwd ? "resnet50_convs_fwd" : dir == kDgrad ? "resnet50_convs_dgrad" : "resnet50_convs_wgrad",
                   dir, resnet50_layers()});
  return out;
}

#ifdef NIMBUS_BENCH_CASES
// ---- full-size cases (nvcc + cuDNN) ------------------------------------------------------------
// The float64 reference of output element `i` (flat NCHW index) from the fp32 inputs on the host.
double reference_at(int dir, const ConvGeom& g, const std::vector<float>& a, const std::vector<float>& b, int64_t i) {
  const int64_t P = g.P(), Q = g.Q();
  double acc = 0;
  if (dir == kFwd) {  // a = x, b = w
    const int64_t q = i % Q, p = (i / Q) % P, k = (i / (Q * P)) % g.K, n = i / (Q * P * g.K);
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t r = 0; r < g.R; ++r)
        for (int64_t s = 0; s < g.S; ++s) {
          const int64_t h = p * g.stride - g.pad + r, w = q * g.stride - g.pad + s;
          if (h >= 0 && h < g.H && w >= 0 && w < g.W)
            acc += double(a[size_t(((n * g.C + c) * g.H + h) * g.W + w)]) * b[size_t(((k * g.C + c) * g.R + r) * g.S + s)];
        }
  } else if (dir == kDgrad) {  // a = dy, b = w
    const int64_t w = i % g.W, h = (i / g.W) % g.H, c = (i / (g.W * g.H)) % g.C, n = i / (g.W * g.H * g.C);
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t r = 0; r < g.R; ++r)
        for (int64_t s = 0; s < g.S; ++s) {
          const int64_t ph = h + g.pad - r, qw = w + g.pad - s;
          if (ph < 0 || qw < 0 || ph % g.stride || qw % g.stride || ph / g.stride >= P || qw / g.stride >= Q) continue;
          acc += double(a[size_t(((n * g.K + k) * P + ph / g.stride) * Q + qw / g.stride)]) *
                 b[size_t(((k * g.C + c) * g.R + r) * g.S + s)];
        }
  } else {  // a = dy, b = x
    const int64_t s = i % g.S, r = (i / g.S) % g.R, c = (i / (g.S * g.R)) % g.C, k = i / (g.S * g.R * g.C);
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t h = p * g.stride - g.pad + r, w = q * g.stride - g.pad + s;
          if (h >= 0 && h < g.H && w >= 0 && w < g.W)
            acc += double(a[size_t(((n * g.K + k) * P + p) * Q + q)]) * b[size_t(((n * g.C + c) * g.H + h) * g.W + w)];
        }
  }
  return acc;
}

// The 4-D NCHW shape of each operand, for the bf16 NHWC copies.
struct Shapes {
  bench::Dims4 a, b, out;
};
Shapes shapes(const ConvGeom& g, int dir) {
  const bench::Dims4 x{g.N, g.C, g.H, g.W}, w{g.K, g.C, g.R, g.S}, y{g.N, g.K, g.P(), g.Q()};
  return dir == kFwd ? Shapes{x, w, y} : dir == kDgrad ? Shapes{y, w, x} : Shapes{y, x, w};
}

bool run_case(const Case& cs, const std::vector<int>& versions, double budget_ms, const std::string& device) {
  std::fprintf(stderr, "== %s (%zu distinct layers)\n", cs.name, cs.layers.size());
  // Order matters: the fp32 reference first (ours report its time), then ours, then TF32 and bf16.
  // Per precision: cuDNN in it, then our versions in it that have this direction (each row names
  // the reference in its own precision, mma_tiles::print_rows_by_precision).
  // Versions 6-11 (sm_90a) are skipped, with a message, on a device that is not compute capability 9.0.
  std::vector<Impl> impls;
  const bool hopper = wgmma_runs();
  for (int v : versions)
    if (is_hopper_version(v) && kVersions[v][cs.dir] && !hopper)
      std::fprintf(stderr, "version %d skipped: needs sm_90a (compute capability 9.0), this is %s\n", v,
                   device.c_str());
  for (const char* p : {"fp32", "tf32", "bf16"}) {
    impls.push_back(Impl{"cudnn", p});
    for (int v : versions)
      if (std::string(kPrecision[v]) == p && kVersions[v][cs.dir] && (hopper || !is_hopper_version(v)))
        impls.push_back(Impl{"nimbus_v" + std::to_string(v), p, true});
  }
  double flops = 0, slowest_layer_s = 0;
  int layers = 0, layers_total = 0;
  for (const auto& layer : cs.layers) layers_total += layer.count;
  uint64_t seed = std::hash<std::string>{}(cs.name);
  for (size_t li = 0; li < cs.layers.size(); ++li) {
    if (li > 0 && time_left_s() < slowest_layer_s) {  // rows for what was timed, not none (bench_util.cuh)
      std::fprintf(stderr, "%s: stopped after %zu of %zu distinct layers: --deadline-s is %.1f s away\n", cs.name, li,
                   cs.layers.size(), time_left_s());
      break;
    }
    const auto layer_start = std::chrono::steady_clock::now();
    const ConvGeom& g = cs.layers[li].g;
    const int count = cs.layers[li].count;
    layers += count;
    flops += count * 2.0 * double(g.N * g.K * g.P() * g.Q()) * double(g.C * g.R * g.S);
    const Sizes n = sizes(g, cs.dir);
    const Shapes sh = shapes(g, cs.dir);
    char label[160];
    std::snprintf(label, sizeof label, "%s [%zu/%zu] x%d N%ld C%ld %ldx%ld K%ld %ldx%ld s%ld p%ld", cs.name, li + 1,
                  cs.layers.size(), count, long(g.N), long(g.C), long(g.H), long(g.W), long(g.K), long(g.R), long(g.S),
                  long(g.stride), long(g.pad));
    // Inputs uniform in [-1, 1), fresh per case and layer; the float64 reference of the sampled outputs.
    DevBuf a(size_t(n.a) * 4), b(size_t(n.b) * 4), out(size_t(n.out) * 4);
    fill_uniform(a.f(), n.a, seed += 0x1234567);
    fill_uniform(b.f(), n.b, seed += 0x1234567);
    const std::vector<float> ha = download(a.f(), n.a), hb = download(b.f(), n.b);
    const std::vector<int64_t> idx = sample_indices(n.out, seed);
    std::vector<double> ref(idx.size());
    for (size_t j = 0; j < idx.size(); ++j) ref[j] = reference_at(cs.dir, g, ha, hb, idx[j]);
    DevBuf ws(sizeof(float) * size_t(conv_workspace(g)));
    const auto fp32_sampled = [&] { return gather(out.f(), idx); };
    const auto fp32_nonfinite = [&] { return count_nonfinite(out.p, n.out, 4); };
    const auto poison = [&] { out.poison(); };
    // bf16 copies (NHWC), made once per layer when the bf16 reference first needs them.
    DevBuf a16(size_t(n.a) * 2), b16(size_t(n.b) * 2), out16(size_t(n.out) * 2);
    std::vector<int64_t> idx16(idx.size());
    for (size_t j = 0; j < idx.size(); ++j) idx16[j] = bench::nhwc_index(idx[j], sh.out);

    for (Impl& im : impls) {
      const bench::Precision p = im.precision == "fp32"   ? bench::Precision::fp32
                                 : im.precision == "tf32" ? bench::Precision::tf32
                                                          : bench::Precision::bf16;
      const double elem = p == bench::Precision::bf16 ? 2 : 4;
      im.bytes += count * elem * double(n.a + n.b + n.out);
      if (im.ours && p == bench::Precision::bf16) {  // versions 5-7: bf16 NCHW operands made once, outside the timing
        const Bf16Fn f = bf16_kernels(std::atoi(im.name.c_str() + 8))[cs.dir];
        DevBuf an(size_t(n.a) * 2), bn(size_t(n.b) * 2), on(size_t(n.out) * 2);
        const auto prepare = [&] {
          cuda::cast_f32_to_bf16(static_cast<bfloat16*>(an.p), a.f(), n.a);
          cuda::cast_f32_to_bf16(static_cast<bfloat16*>(bn.p), b.f(), n.b);
        };
        measure(im, count, label, prepare, [&] { on.poison(); },
                [&] { f(static_cast<bfloat16*>(on.p), static_cast<const bfloat16*>(an.p),
                        static_cast<const bfloat16*>(bn.p), g, ws.f()); },
                [&] { return gather(static_cast<const __nv_bfloat16*>(on.p), idx); }, ref,
                [&] { return count_nonfinite(on.p, n.out, 2); }, budget_ms);
        continue;
      }
      if (im.ours) {
        const ConvFn f = kVersions[std::atoi(im.name.c_str() + 8)][cs.dir];
        measure(im, count, label, [] {}, poison, [&] { f(out.f(), a.f(), b.f(), g, ws.f()); }, fp32_sampled, ref,
                fp32_nonfinite, budget_ms);
        continue;
      }
      // cuDNN: descriptors and the algorithm search inside prepare(), so a refusal marks the row failed.
      const bench::Dir d = cs.dir == kFwd ? bench::Dir::fwd : cs.dir == kDgrad ? bench::Dir::dgrad : bench::Dir::wgrad;
      std::unique_ptr<bench::CudnnConv> conv;
      if (p == bench::Precision::bf16) {
        const auto prepare = [&] {
          conv = std::make_unique<bench::CudnnConv>(g, p, d);
          bench::to_bf16(a16.p, a.f(), sh.a, true);
          bench::to_bf16(b16.p, b.f(), sh.b, true);
          im.algos.push_back(conv->find(a16.p, b16.p, out16.p));
        };
        measure(im, count, label, prepare, [&] { out16.poison(); }, [&] { conv->run(a16.p, b16.p, out16.p); },
                [&] { return gather(static_cast<const __nv_bfloat16*>(out16.p), idx16); }, ref,
                [&] { return count_nonfinite(out16.p, n.out, 2); }, budget_ms);
      } else {
        const auto prepare = [&] {
          conv = std::make_unique<bench::CudnnConv>(g, p, d);
          im.algos.push_back(conv->find(a.p, b.p, out.p));
        };
        measure(im, count, label, prepare, poison, [&] { conv->run(a.p, b.p, out.p); }, fp32_sampled, ref,
                fp32_nonfinite, budget_ms);
      }
    }
    slowest_layer_s = std::max(
        slowest_layer_s, std::chrono::duration<double>(std::chrono::steady_clock::now() - layer_start).count());
  }
  return mma_tiles::print_rows_by_precision(cs.name, impls, flops, layers, device, "cudnn", layers_total);
}

// ---- the sweep: every configuration of the backend's tensor-core kernels, per layer -----------------
// For each distinct layer of the case, in TF32 and bf16: every configuration of the menu
// (kernels/cuda/tc_dispatch.h) and, on sm_90a, Hopper's wgmma kernel (config kTcWgmma; for the forward
// also its warp-specialised variant, kTcWgmmaSpecialised), and for the
// weight gradient every power-of-two split count up to the workspace's limit, timed (CUDA events, medians) next to the dispatch's own choice. One JSON row
// per layer and precision on stdout (the winner, the default, the speed-up); the winners' dispatch
// table lines go to `table` (tc_dispatch_table.inc's format, one line per GEMM the layer launches).
// The configurations themselves are validated by the tests (test_cuda_tensor_core_ops.cpp, on the
// emulator and in test_cuda_real on the device), not here.
bool sweep_case(const Case& cs, double budget_ms, const std::string& device, FILE* table) {
  const cuda::TcKind kind = cs.dir == kFwd     ? cuda::TcKind::ConvForward
                            : cs.dir == kDgrad ? cuda::TcKind::ConvDataGrad
                                               : cuda::TcKind::ConvWeightGrad;
  uint64_t seed = std::hash<std::string>{}(cs.name) ^ 0x5eedULL;
  for (size_t li = 0; li < cs.layers.size(); ++li) {
    const ConvGeom& g = cs.layers[li].g;
    const Sizes n = sizes(g, cs.dir);
    DevBuf a(size_t(n.a) * 4), b(size_t(n.b) * 4), out(size_t(n.out) * 4);
    DevBuf a16(size_t(n.a) * 2), b16(size_t(n.b) * 2), out16(size_t(n.out) * 2);
    fill_uniform(a.f(), n.a, seed += 0x1234567);
    fill_uniform(b.f(), n.b, seed += 0x1234567);
    cuda::cast_f32_to_bf16(static_cast<bfloat16*>(a16.p), a.f(), n.a);
    cuda::cast_f32_to_bf16(static_cast<bfloat16*>(b16.p), b.f(), n.b);
    const int max_splits = cs.dir == kWgrad ? cuda::conv2d_tc_max_splits(g) : 1;
    const bool hopper = wgmma_runs() && cuda::conv2d_wgmma_supported(g);  // time Hopper's kernel too
    DevBuf ws(sizeof(float) * size_t(std::max({cuda::conv2d_tc_workspace(g, max_splits), cuda::conv2d_tc_workspace(g),
                                               hopper ? cuda::conv2d_wgmma_workspace(g, max_splits) : 0}) +
                                     1));
    for (const bool bf16 : {false, true}) {
      const auto run32 = [&](cuda::TcPlan plan) {
        if (cs.dir == kFwd)
          cuda::conv2d_tc_forward<float>(out.f(), a.f(), b.f(), nullptr, g, false, plan);
        else if (cs.dir == kDgrad)
          cuda::conv2d_tc_backward<float>(out.f(), nullptr, nullptr, a.f(), nullptr, b.f(), g, ws.f(), plan);
        else
          cuda::conv2d_tc_backward<float>(nullptr, out.f(), nullptr, a.f(), b.f(), nullptr, g, ws.f(), plan);
      };
      const auto run16 = [&](cuda::TcPlan plan) {
        const auto* x = static_cast<const bfloat16*>(a16.p);
        const auto* y = static_cast<const bfloat16*>(b16.p);
        auto* o = static_cast<bfloat16*>(out16.p);
        if (cs.dir == kFwd)
          cuda::conv2d_tc_forward<bfloat16>(o, x, y, nullptr, g, false, plan);
        else if (cs.dir == kDgrad)
          cuda::conv2d_tc_backward<bfloat16>(o, nullptr, nullptr, x, nullptr, y, g, ws.f(), plan);
        else
          cuda::conv2d_tc_backward<bfloat16>(nullptr, o, nullptr, x, y, nullptr, g, ws.f(), plan);
      };
      // Hopper's kernel (config kTcWgmma) with `splits` weight-gradient splits; its warp-specialised
      // forward (kTcWgmmaSpecialised) when `specialised`.
      const auto run_wgmma = [&](int splits, bool specialised) {
        if (specialised) {
          if (bf16)
            cuda::conv2d_wgmma_forward_specialised<bfloat16>(static_cast<bfloat16*>(out16.p),
                                                             static_cast<const bfloat16*>(a16.p),
                                                             static_cast<const bfloat16*>(b16.p), nullptr, g, false,
                                                             nullptr, 1.0f, ws.f());
          else
            cuda::conv2d_wgmma_forward_specialised<float>(out.f(), a.f(), b.f(), nullptr, g, false, nullptr, 1.0f,
                                                          ws.f());
          return;
        }
        if (bf16) {
          const auto* x = static_cast<const bfloat16*>(a16.p);
          const auto* y = static_cast<const bfloat16*>(b16.p);
          auto* o = static_cast<bfloat16*>(out16.p);
          if (cs.dir == kFwd) cuda::conv2d_wgmma_forward<bfloat16>(o, x, y, nullptr, g, false, nullptr, 1.0f, ws.f());
          if (cs.dir == kDgrad) cuda::conv2d_wgmma_backward<bfloat16>(o, nullptr, nullptr, x, nullptr, y, g, ws.f());
          if (cs.dir == kWgrad)
            cuda::conv2d_wgmma_backward<bfloat16>(nullptr, o, nullptr, x, y, nullptr, g, ws.f(), splits);
        } else {
          float *x = a.f(), *y = b.f(), *o = out.f();
          if (cs.dir == kFwd) cuda::conv2d_wgmma_forward<float>(o, x, y, nullptr, g, false, nullptr, 1.0f, ws.f());
          if (cs.dir == kDgrad) cuda::conv2d_wgmma_backward<float>(o, nullptr, nullptr, x, nullptr, y, g, ws.f());
          if (cs.dir == kWgrad) cuda::conv2d_wgmma_backward<float>(nullptr, o, nullptr, x, y, nullptr, g, ws.f(), splits);
        }
      };
      const auto time_plan = [&](cuda::TcPlan plan) {
        if (plan.config >= cuda::kTcWgmma)
          return time_runs([&] { run_wgmma(plan.splits, plan.config == cuda::kTcWgmmaSpecialised); }, budget_ms, 30)
              .median;
        return time_runs([&] { bf16 ? run16(plan) : run32(plan); }, budget_ms, 30).median;
      };
      const double default_ms = time_plan(cuda::TcPlan{});
      int best_config = -1, best_splits = 1;
      double best_ms = INFINITY;
      // The menu, then kTcWgmma, then (forward only) kTcWgmmaSpecialised.
      // A configuration over this device's shared memory a block (TF32 config 1 on an sm_86 or sm_89) is
      // left out: it cannot run here.
      for (int c = 0; c < cuda::kTcConfigCount + (hopper ? (cs.dir == kFwd ? 2 : 1) : 0); ++c)
        for (int sp = 1; sp <= max_splits && cuda::tc_config_fits_device(c, bf16); sp *= 2) {
          const double ms = time_plan(cuda::TcPlan{c, sp});
          if (ms < best_ms) best_ms = ms, best_config = c, best_splits = sp;
        }
      const char* precision = bf16 ? "bf16" : "tf32";
      std::printf("{\"case\":\"%s_sweep\",\"layer\":%zu,\"geometry\":\"N%ld C%ld %ldx%ld K%ld %ldx%ld s%ld p%ld\","
                  "\"precision\":\"%s\",\"best_config\":%d,\"best_splits\":%d,\"best_ms\":%.4f,\"default_ms\":%.4f,"
                  "\"speedup\":%.3f,\"device\":\"%s\"}\n",
                  cs.name, li + 1, long(g.N), long(g.C), long(g.H), long(g.W), long(g.K), long(g.R), long(g.S),
                  long(g.stride), long(g.pad), precision, best_config, best_splits, best_ms, default_ms,
                  default_ms / best_ms, json_escape(device).c_str());
      std::fflush(stdout);
      for (const cuda::TcGemmShape& sh : cuda::conv2d_tc_gemms(g, kind))
        std::fprintf(table, "{%d, %d, %ld, %ld, %ld, %d, %d},  // %s layer %zu %s: %.4f ms (default %.4f)\n",
                     int(kind), int(bf16), long(sh.M), long(sh.N), long(sh.K), best_config,
                     cs.dir == kWgrad ? best_splits : 0, cs.name, li + 1, precision, best_ms, default_ms);
      std::fflush(table);
    }
  }
  return true;
}

// gpu_bench_conv2d --sweep CASE|all [--sweep-table FILE] [--budget-ms MS]
int sweep_main(int argc, char** argv) {
  std::vector<std::string> names;
  std::string table_path = "sweep_table.inc";
  double budget_ms = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--sweep" && i + 1 < argc) names.push_back(argv[++i]);
    else if (arg == "--sweep-table" && i + 1 < argc) table_path = argv[++i];
    else if (arg == "--budget-ms" && i + 1 < argc) budget_ms = std::atof(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s --sweep CASE|all [--sweep ...] [--sweep-table FILE] [--budget-ms MS]\n", argv[0]);
      return 2;
    }
  }
  const std::vector<Case> todo = pick_cases(names, cases());
  if (todo.empty()) return 2;
  require_device();
  const std::string device = device_name();
  FILE* table = std::fopen(table_path.c_str(), "w");
  if (!table) {
    std::fprintf(stderr, "%s: cannot write %s\n", argv[0], table_path.c_str());
    return 1;
  }
  std::fprintf(table, "// gpu_bench_conv2d --sweep on %s: the fastest configuration per GEMM\n", device.c_str());
  bool ok = true;
  try {
    for (const Case& c : todo) ok = sweep_case(c, budget_ms, device, table) && ok;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
    ok = false;
  }
  std::fclose(table);
  return ok ? 0 : 1;
}
#else
constexpr RunCase<Case> run_case = nullptr;  // no --case timing in this build (bench_main says so)
#endif

// Version 6's fused epilogue (bias, then ReLU; the cases run it without either, like version 5's
// rows): once with both at a small geometry, against the float64 reference on the bf16-rounded
// operands and bias, each element within 1e-5 sum |a b| + 2^-8 |ref| (the output's bf16 rounding),
// bitwise equal in every emulator order.
bool validate_v6_epilogue() {
  const ConvGeom g{2, 5, 9, 8, 12, 3, 3, 1, 1};
  const Sizes n = sizes(g, kFwd);
  std::mt19937 rng(12345);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<uint16_t> x(size_t(n.a)), w(size_t(n.b)), b(size_t(g.K));
  std::vector<double> xd(x.size()), wd(w.size()), bd(b.size()), xa(x.size()), wa(w.size());
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = bf16_from_float_rne(u(rng)), xd[i] = bf16_to_float(x[i]), xa[i] = std::fabs(xd[i]);
  for (size_t i = 0; i < w.size(); ++i)
    w[i] = bf16_from_float_rne(u(rng)), wd[i] = bf16_to_float(w[i]), wa[i] = std::fabs(wd[i]);
  for (size_t i = 0; i < b.size(); ++i) b[i] = bf16_from_float_rne(u(rng)), bd[i] = bf16_to_float(b[i]);
  std::vector<double> ref(size_t(n.out)), mag(ref.size());
  cpu::conv2d_forward_ref<double>(ref.data(), xd.data(), wd.data(), bd.data(), g);
  cpu::conv2d_forward_ref<double>(mag.data(), xa.data(), wa.data(), nullptr, g);
  for (double& r : ref) r = r < 0 ? 0 : r;
  uint16_t *dx = mma_tiles::upload_any(x), *dw = mma_tiles::upload_any(w), *db = mma_tiles::upload_any(b);
  uint16_t* dy = nullptr;
  float* ws = nullptr;
  CK(cudaMalloc(&dy, ref.size() * 2));
  CK(cudaMalloc(&ws, sizeof(float) * size_t(conv_workspace(g))));
  bool ok = true;
  std::vector<uint16_t> first;
  for (int o = 0; o < mma_tiles::ValidationOrder::kCount; ++o) {
    const mma_tiles::ValidationOrder order(o);
    CK(cudaMemset(dy, 0xFF, ref.size() * 2));
    cuda::conv2d_wgmma_forward<bfloat16>(reinterpret_cast<bfloat16*>(dy), reinterpret_cast<const bfloat16*>(dx),
                               reinterpret_cast<const bfloat16*>(dw), reinterpret_cast<const bfloat16*>(db), g, true,
                               nullptr, 1.0f, ws);
    std::vector<uint16_t> y(ref.size());
    CK(cudaMemcpy(y.data(), dy, y.size() * 2, cudaMemcpyDeviceToHost));
    double worst = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      const double got = bf16_to_float(y[i]);
      const double e = std::fabs(got - ref[i]) / (1e-5 * mag[i] + std::ldexp(std::fabs(ref[i]), -8) + 1e-30);
      worst = std::isfinite(got) ? std::fmax(worst, e) : INFINITY;
    }
    const bool same = first.empty() || first == y, pass = worst <= 1 && same;
    std::printf("version 6 fwd   (bf16): N%ld C%ld %ldx%ld K%ld %ldx%ld s%ld p%ld + bias + ReLU %-8s %s (%.3g of "
                "tolerance%s)\n",
                long(g.N), long(g.C), long(g.H), long(g.W), long(g.K), long(g.R), long(g.S), long(g.stride),
                long(g.pad), order.name(), pass ? "OK" : "WRONG", worst, same ? "" : "; differs from the first order");
    ok = ok && pass;
    if (first.empty()) first = y;
  }
  cudaFree(dx), cudaFree(dw), cudaFree(db), cudaFree(dy), cudaFree(ws);
  return ok;
}

// ---- driver ---------------------------------------------------------------------------------------
// Small sizes, every chosen version and direction. The fifth and sixth: several tiles in both
// dimensions of version 3's GEMM (K 130 > 128, N*P*Q 396 > 128) and several k-tiles with a partial
// one on its 16-byte path for w (C*R*S 72, 108). The seventh and eighth complete the kernel cases' geometries:
// 1x1 stride 2 (C*R*S 16: version 6's unpadded TMA path), and the 13-channel 7x7 stride-2 stem
// (C*R*S 637: 10 k-tiles of version 6, its 3-stage ring goes round more than three times). The ninth has
// an 8x8 output grid: version 8 takes dy by TMA there (P*Q a multiple of 64).
// Version 6 is skipped on a GPU that is not compute capability 9.0.
bool validate_small(const std::vector<int>& versions) {
  const ConvGeom small[] = {{2, 3, 9, 7, 5, 3, 3, 1, 1},        {1, 4, 11, 10, 3, 3, 3, 2, 1},
                            {2, 6, 5, 5, 7, 1, 1, 1, 0},        {2, 5, 9, 8, 4, 7, 7, 2, 3},
                            {3, 8, 12, 11, 130, 3, 3, 1, 1},    {2, 12, 13, 15, 20, 3, 3, 2, 1},
                            {2, 16, 7, 9, 6, 1, 1, 2, 0},       {1, 13, 11, 9, 6, 7, 7, 2, 3},
                            {2, 5, 16, 16, 7, 3, 3, 2, 1}};
  bool ok = nonfinite_counter_works();
  const bool hopper = wgmma_runs();
  for (int v : versions) {
    if (is_hopper_version(v) && !hopper) {
      std::printf("version %d (%s): skipped: needs sm_90a (compute capability 9.0)\n", v, kPrecision[v]);
      continue;
    }
    for (int dir : {kFwd, kDgrad, kWgrad})
      if (kVersions[v][dir])
        for (const ConvGeom& g : small) ok = validate(v, dir, g) && ok;
    if (v == 6) try {
        ok = validate_v6_epilogue() && ok;
      } catch (const std::exception& e) {
        std::printf("version 6 fwd   (bf16): + bias + ReLU WRONG: %s\n", e.what());
        ok = false;
      }
  }
  return ok;
}

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--sweep") {
#ifdef NIMBUS_BENCH_CASES
    return sweep_main(argc, argv);
#else
    std::fprintf(stderr, "--sweep needs the nvcc build (gpu_bench_conv2d, bench/cuda/gpu.cmake)\n");
    return 2;
#endif
  }
  return bench_main(argc, argv,
                    BenchProgram<Case>{"gpu_bench_conv2d", "cuDNN", kLast, cases(), validate_small, run_case});
}
