/* conv2d_tc.cu: convolution forward, backward-data and backward-weight as implicit GEMMs on the
 * tensor cores (mma_core.cuh), in TF32 (float tensors) and bf16 (bfloat16 tensors).
 *
 * Each direction is a problem for mma::igemm_kernel: the A and B elements are gathered straight
 * from the tensors (0 in the padding and, for the data gradient, at the positions a stride skips),
 * so no im2col buffer exists. Shapes as kernels/cpu/conv2d.h; CRS = C*R*S, PQ = P*Q, HW = H*W:
 *   forward   y[n,k,p,q]  M = K    N = N*PQ  Kred = CRS   A = w (K x CRS, its own layout)
 *                                                         B[(c,r,s)][(n,p,q)] = x[n, c, p*st-pad+r, q*st-pad+s]
 *                                                         bias and ReLU applied in the epilogue
 *   dgrad     dx[n,c,h,w] M = C    N = N*HW  Kred = K*RS  A[c][(k,r,s)] = w[k,c,r,s]
 *                                                         B[(k,r,s)][(n,h,w)] = dy[n, k, (h+pad-r)/st, (w+pad-s)/st]
 *                                                         where both divide exactly and land inside
 *   wgrad     dw[k,c,r,s] M = K    N = CRS   Kred = N*PQ  A[k][(n,p,q)] = dy[n,k,p,q]
 *                                                         B[(n,p,q)][(c,r,s)] = x[n, c, p*st-pad+r, q*st-pad+s]
 * The weight gradient reduces over every image in one launch. Its reduction (N*P*Q) is long and its
 * output (K x CRS) small, so it splits the reduction: split s writes its partial sums to
 * ws[s][K][CRS] and a second kernel adds the splits in order (deterministic; one split writes dw
 * directly). The data gradient at stride 2 multiplies the skipped positions' zeros (3/4 of its
 * work at 3x3 stride 2, 1/4 of a ResNet-50 step's stride-2 layers); a stride-aware decomposition
 * is the next version once the GPU measures it. db (bias) is gemm.cu's bias_backward.
 * CPU twin: kernels/cpu/conv2d.h (the _ref loops are the definition).
 */
#include "kernels/cuda/conv2d_tc.h"

#include <algorithm>
#include <climits>

#include "kernels/common/error.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/conv2d.h"  // kConvWorkspaceFloats
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/mma_core.cuh"

namespace nimbus::cuda {

namespace {

// The geometry as kernel parameters, in int (conv2d_tc_supported checks every product used).
struct Dims {
  int N, C, H, W, K, R, S, P, Q, stride, pad;
};

Dims dims_of(const ConvGeom& g) {
  return {int(g.N), int(g.C), int(g.H), int(g.W), int(g.K), int(g.R), int(g.S), int(g.P()), int(g.Q()),
          int(g.stride), int(g.pad)};
}

// x[n, c, p*st-pad+r, q*st-pad+s] for reduction index crs = (c, r, s) and output position npq = (n, p, q),
// or null in the padding: B of the forward and of the weight gradient.
template <typename E>
__device__ __forceinline__ const E* x_window(const E* x, const Dims& d, int crs, int npq) {
  const int RS = d.R * d.S, PQ = d.P * d.Q;
  const int c = crs / RS, r = crs % RS / d.S, s = crs % d.S;
  const int n = npq / PQ, p = npq % PQ / d.Q, q = npq % d.Q;
  const int h = p * d.stride - d.pad + r, w = q * d.stride - d.pad + s;
  if (h < 0 || h >= d.H || w < 0 || w >= d.W) return nullptr;
  return x + ((int64_t(n) * d.C + c) * d.H + h) * d.W + w;
}

template <typename E>
struct Forward {
  const E *x, *w, *bias;
  E* y;
  Dims d;
  bool relu;
  __device__ const E* a(int k, int crs) const { return w + int64_t(k) * (d.C * d.R * d.S) + crs; }
  __device__ const E* b(int crs, int npq) const { return x_window(x, d, crs, npq); }
  __device__ void store(int k, int npq, float v, int) const {
    const int PQ = d.P * d.Q, n = npq / PQ, pq = npq % PQ;
    if (bias) v += float(bias[k]);
    if (relu) v = v < 0.0f ? 0.0f : v;  // relu_forward's rule: a NaN passes through
    y[(int64_t(n) * d.K + k) * PQ + pq] = E(v);
  }
};

template <typename E>
struct DataGrad {
  const E *dy, *w;
  E* dx;
  Dims d;
  __device__ const E* a(int c, int krs) const {  // w[k, c, r, s]
    const int RS = d.R * d.S;
    return w + (int64_t(krs / RS) * d.C + c) * RS + krs % RS;
  }
  __device__ const E* b(int krs, int nhw) const {  // dy[n, k, p, q] with h = p*st - pad + r, w = q*st - pad + s
    const int RS = d.R * d.S, HW = d.H * d.W;
    const int k = krs / RS, r = krs % RS / d.S, s = krs % d.S;
    const int n = nhw / HW, h = nhw % HW / d.W, w = nhw % d.W;
    const int ph = h + d.pad - r, qw = w + d.pad - s;
    if (ph < 0 || qw < 0 || ph % d.stride != 0 || qw % d.stride != 0) return nullptr;
    const int p = ph / d.stride, q = qw / d.stride;
    if (p >= d.P || q >= d.Q) return nullptr;
    return dy + ((int64_t(n) * d.K + k) * d.P + p) * d.Q + q;
  }
  __device__ void store(int c, int nhw, float v, int) const {
    const int HW = d.H * d.W;
    dx[(int64_t(nhw / HW) * d.C + c) * HW + nhw % HW] = E(v);
  }
};

template <typename E>
struct WeightGrad {
  const E *dy, *x;
  E* dw;
  float* partial;  // splits > 1: ws[split][K][CRS]; else null and results go to dw
  Dims d;
  __device__ const E* a(int k, int npq) const {  // dy[n, k, p, q]
    const int PQ = d.P * d.Q;
    return dy + (int64_t(npq / PQ) * d.K + k) * PQ + npq % PQ;
  }
  __device__ const E* b(int npq, int crs) const { return x_window(x, d, crs, npq); }
  __device__ void store(int k, int crs, float v, int split) const {
    const int CRS = d.C * d.R * d.S;
    if (partial)
      partial[(int64_t(split) * d.K + k) * CRS + crs] = v;
    else
      dw[int64_t(k) * CRS + crs] = E(v);
  }
};

// out[i] = sum_s partial[s][i], the splits in order.
template <typename E>
__global__ void splitk_sum_kernel(E* out, const float* partial, int64_t n, int splits) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    float acc = 0.0f;
    for (int s = 0; s < splits; ++s) acc += partial[int64_t(s) * n + i];
    out[i] = E(acc);
  }
}

mma::TileChoice tile_of(const ConvTcPlan& p) {
  return p.tile == 1 ? mma::TileChoice::Large : p.tile == 2 ? mma::TileChoice::Small : mma::TileChoice::Auto;
}

constexpr int kMinSplitLength = 256;  // reduction elements per split (8 k-tiles): below this a split is mostly overhead

}  // namespace

bool conv2d_tc_supported(const ConvGeom& g) {
  const int64_t lim = INT_MAX - 256;  // room for a tile past the end
  const int64_t PQ = g.P() * g.Q();
  return g.N > 0 && g.K > 0 && PQ > 0 && g.N * g.C * g.H * g.W < lim && g.N * g.K * PQ < lim &&
         g.K * g.C * g.R * g.S < lim && g.N * PQ < lim && g.N * g.H * g.W < lim && g.K * g.R * g.S < lim &&
         (g.K + 127) / 128 < 65535 && (g.C + 127) / 128 < 65535;
}

int conv2d_tc_splits(const ConvGeom& g) {
  const int64_t CRS = g.C * g.R * g.S, red = g.N * g.P() * g.Q();
  const int64_t blocks = ((g.K + 63) / 64) * ((CRS + 63) / 64);  // small tiles
  int64_t s = (264 + blocks - 1) / blocks;                         // two blocks per SM of an H200
  s = std::min(s, red / kMinSplitLength);
  s = std::min(s, kConvWorkspaceFloats / std::max<int64_t>(g.K * CRS, 1));
  return int(std::max<int64_t>(1, std::min<int64_t>(s, 64)));
}

int64_t conv2d_tc_workspace(const ConvGeom& g, int splits) {
  if (splits <= 0) splits = conv2d_tc_splits(g);
  return splits > 1 ? int64_t(splits) * g.K * g.C * g.R * g.S : 0;
}

template <typename E>
void conv2d_tc_forward(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, bool relu, ConvTcPlan plan) {
  NIMBUS_CHECK(conv2d_tc_supported(g), "cuda::conv2d_tc_forward: geometry too large for the tensor-core kernels");
  const Dims d = dims_of(g);
  const Forward<E> pb{x, w, b, y, d, relu};
  mma::launch_igemm<E>(pb, d.K, d.N * d.P * d.Q, d.C * d.R * d.S, 1, tile_of(plan), w, "cuda::conv2d_tc_forward");
}

template <typename E>
void conv2d_tc_backward(E* dx, E* dw, E* db, const E* dy, const E* x, const E* w, const ConvGeom& g, float* ws,
                        ConvTcPlan plan) {
  NIMBUS_CHECK(conv2d_tc_supported(g), "cuda::conv2d_tc_backward: geometry too large for the tensor-core kernels");
  const Dims d = dims_of(g);
  const int CRS = d.C * d.R * d.S;
  if (db) bias_backward(db, dy, g.N, g.K, g.P() * g.Q());
  if (dw) {
    NIMBUS_CHECK(x, "cuda::conv2d_tc_backward: dw needs x");
    const int splits = plan.splits > 0 ? plan.splits : conv2d_tc_splits(g);
    NIMBUS_CHECK(splits == 1 || ws, "cuda::conv2d_tc_backward: ", splits, " splits need a workspace");
    const WeightGrad<E> pb{dy, x, dw, splits > 1 ? ws : nullptr, d};
    mma::launch_igemm<E>(pb, d.K, CRS, d.N * d.P * d.Q, splits, tile_of(plan), dy, "cuda::conv2d_tc_backward (dw)");
    if (splits > 1)
      launch_n("cuda::conv2d_tc_backward (dw split sum)", splitk_sum_kernel<E>, int64_t(d.K) * CRS, 256, dw,
               static_cast<const float*>(ws), int64_t(d.K) * CRS, splits);
  }
  if (dx) {
    NIMBUS_CHECK(w, "cuda::conv2d_tc_backward: dx needs w");
    const DataGrad<E> pb{dy, w, dx, d};
    mma::launch_igemm<E>(pb, d.C, d.N * d.H * d.W, d.K * d.R * d.S, 1, tile_of(plan), w,
                         "cuda::conv2d_tc_backward (dx)");
  }
}

template void conv2d_tc_forward<float>(float*, const float*, const float*, const float*, const ConvGeom&, bool,
                                       ConvTcPlan);
template void conv2d_tc_forward<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, const bfloat16*,
                                          const ConvGeom&, bool, ConvTcPlan);
template void conv2d_tc_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const ConvGeom&, float*, ConvTcPlan);
template void conv2d_tc_backward<bfloat16>(bfloat16*, bfloat16*, bfloat16*, const bfloat16*, const bfloat16*,
                                           const bfloat16*, const ConvGeom&, float*, ConvTcPlan);

}  // namespace nimbus::cuda
