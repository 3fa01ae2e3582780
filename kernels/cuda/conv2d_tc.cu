/* conv2d_tc.cu: convolution forward, backward-data and backward-weight as implicit GEMMs on the
 * tensor cores (mma_core.cuh), in TF32 (float tensors) and bf16 (bfloat16 tensors).
 *
 * Each direction is a problem for mma::igemm_kernel: the A and B elements are gathered straight
 * from the tensors (0 in the padding and, for the data gradient, at the positions a stride skips),
 * so no im2col buffer exists. Shapes as kernels/cpu/conv2d.h; CRS = C*R*S, PQ = P*Q, HW = H*W:
 *   forward   y[n,k,p,q]  M = K    N = N*PQ  Kred = CRS   A = w (K x CRS, its own layout)
 *                                                         B[(c,r,s)][(n,p,q)] = x[n, c, p*st-pad+r, q*st-pad+s]
 *                                                         bias, then ReLU or a residual r + s y, in the epilogue
 *   dgrad     dx[n,c,h,w] M = C    N = N*HW  Kred = K*RS  A[c][(k,r,s)] = w[k,c,r,s]
 *                                                         B[(k,r,s)][(n,h,w)] = dy[n, k, (h+pad-r)/st, (w+pad-s)/st]
 *                                                         where both divide exactly and land inside;
 *                                                         per phase (h, w mod st) only the taps that do
 *                                                         (DataGrad: st*st launches, Kred/st^2 each)
 *   wgrad     dw[k,c,r,s] M = K    N = CRS   Kred = N*PQ  A[k][(n,p,q)] = dy[n,k,p,q]
 *                                                         B[(n,p,q)][(c,r,s)] = x[n, c, p*st-pad+r, q*st-pad+s]
 * The weight gradient reduces over every image in one launch. Its reduction (N*P*Q) is long and its
 * output (K x CRS) small, so it splits the reduction: split s writes its partial sums to
 * ws[s][K][CRS] and a second kernel adds the splits in order (deterministic; one split writes dw
 * directly). db (bias) is gemm.cu's bias_backward.
 * CPU twin: kernels/cpu/conv2d.h (the _ref loops are the definition).
 */
#include "kernels/cuda/conv2d_tc.h"

#include <algorithm>
#include <climits>
#include <type_traits>

#include "kernels/common/error.h"
#include "kernels/common/fast_divmod.h"
#include "kernels/cuda/bn_apply.cuh"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/conv2d.h"  // kConvWorkspaceFloats
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/mma_core.cuh"

namespace nimbus::cuda {

namespace {

// The geometry as kernel parameters, in int (conv2d_tc_supported checks every product used), with
// the divisors the gathers decode flat indices by.
struct Dims {
  int N, C, H, W, K, R, S, P, Q, stride, pad;
  FastDivmod by_rs, by_s, by_pq, by_q, by_hw, by_w, by_stride;
};

Dims dims_of(const ConvGeom& g) {
  Dims d{};
  d.N = int(g.N), d.C = int(g.C), d.H = int(g.H), d.W = int(g.W), d.K = int(g.K), d.R = int(g.R), d.S = int(g.S);
  d.P = int(g.P()), d.Q = int(g.Q()), d.stride = int(g.stride), d.pad = int(g.pad);
  d.by_rs = FastDivmod(d.R * d.S), d.by_s = FastDivmod(d.S), d.by_pq = FastDivmod(d.P * d.Q);
  d.by_q = FastDivmod(d.Q), d.by_hw = FastDivmod(d.H * d.W), d.by_w = FastDivmod(d.W);
  d.by_stride = FastDivmod(d.stride);
  return d;
}

// An output position (n, p, q) as the corner of its input window: image n's base and the window's
// top-left (p*st - pad, q*st - pad). B's column in the forward.
template <typename E>
struct Window {
  const E* img = nullptr;
  int h0 = 0, w0 = 0;
};

template <typename E>
__device__ __forceinline__ Window<E> window_of(const E* x, const Dims& d, int npq) {
  int n, pq, p, q;
  d.by_pq.divmod(npq, n, pq);
  d.by_q.divmod(pq, p, q);
  return {x + int64_t(n) * d.C * d.H * d.W, p * d.stride - d.pad, q * d.stride - d.pad};
}

template <typename E>
struct Forward {
  const E *x, *w, *bias;
  E* y;
  Dims d;
  bool relu;
  const E* residual;  // non-null: y = residual + res_scale * (conv + bias) (no ReLU then)
  float res_scale;
  using BCol = Window<E>;
  __device__ const E* a(int k, int crs) const { return w + int64_t(k) * (d.C * d.R * d.S) + crs; }
  __device__ BCol b_col(int npq) const { return window_of(x, d, npq); }
  __device__ const E* b(int crs, const BCol& col) const {  // x[n, c, h0 + r, w0 + s]
    int c, rs, r, s;
    d.by_rs.divmod(crs, c, rs);
    d.by_s.divmod(rs, r, s);
    const int h = col.h0 + r, w = col.w0 + s;
    if (h < 0 || h >= d.H || w < 0 || w >= d.W) return nullptr;
    return col.img + (int64_t(c) * d.H + h) * d.W + w;
  }
  // Stores y[n, k, p, q] and returns it as stored (rounded to E): the moments' value.
  __device__ float store(int k, int npq, float v, int) const {
    int n, pq;
    d.by_pq.divmod(npq, n, pq);
    if (bias) v += float(bias[k]);
    if (relu) v = v < 0.0f ? 0.0f : v;  // relu_forward's rule: a NaN passes through
    const int64_t at = (int64_t(n) * d.K + k) * (d.P * d.Q) + pq;
    if (residual) v = float(residual[at]) + res_scale * v;
    const E out(v);
    y[at] = out;
    return float(out);
  }
};

// The forward that also writes y's batch-norm moments per (channel, chunk) (bn_moments.cuh): a type of
// its own, so that the plain forward's kernel is compiled without that epilogue.
template <typename E>
struct ForwardMoments : Forward<E> {
  float* moments;
  __device__ float* moments_at(int k, int chunk, int chunks) const {
    return moments + (int64_t(k) * chunks + chunk) * 3;
  }
};

// The same with the previous layer's batch norm + ReLU applied to x as it is gathered (the prologue,
// bn_apply.cuh): B's elements are values, not addresses (mma_core.cuh stages them with plain stores),
// E(relu(bn(x))) as batchnorm_forward would have stored it, 0 in the padding (after the prologue: the
// padding is the activation's, not x's).
template <typename E>
struct ForwardMomentsBnIn : ForwardMoments<E> {
  BnReluIn in;
  __device__ E b_value(int crs, const Window<E>& col) const {
    int c, rs, r, s;
    this->d.by_rs.divmod(crs, c, rs);
    this->d.by_s.divmod(rs, r, s);
    const int h = col.h0 + r, w = col.w0 + s;
    if (h < 0 || h >= this->d.H || w < 0 || w >= this->d.W) return E(0.0f);
    return E(bn_relu_in(in, c, float(col.img[(int64_t(c) * this->d.H + h) * this->d.W + w])));
  }
};

// The data gradient, one phase at a time. dx[n, c, h, w] sums dy[n, k, p, q] w[k, c, r, s] over the
// taps with h + pad - r = p*st (and likewise w): for a stride st > 1 only every st-th r contributes
// to a given h. So the input positions split into st*st phases (h mod st, w mod st) = (ph, pw), and
// in a phase the taps are r = r0 + st*rr, s = s0 + st*ss with r0 = (ph + pad) mod st: Rp*Sp of the
// R*S taps (a quarter at 3x3 stride 2), and p = i + hb - rr for h = ph + st*i, hb = (ph + pad - r0)/st.
// Stride 1 is the one phase r0 = s0 = 0, hb = pad. A phase without taps (1x1 stride 2, odd rows) has
// an empty reduction: the kernel writes its zeros.
struct Phase {
  int ph, pw, r0, s0, Rp, Sp, Hp, Wp, hb, wb;  // Hp x Wp positions, Rp x Sp taps
  FastDivmod by_taps, by_sp, by_pos, by_wp;    // Rp*Sp, Sp, Hp*Wp, Wp
};

Phase phase_of(const ConvGeom& g, int ph, int pw) {
  const int st = int(g.stride), pad = int(g.pad), R = int(g.R), S = int(g.S), H = int(g.H), W = int(g.W);
  Phase f{};
  f.ph = ph, f.pw = pw, f.r0 = (ph + pad) % st, f.s0 = (pw + pad) % st;
  f.Rp = f.r0 < R ? (R - f.r0 + st - 1) / st : 0, f.Sp = f.s0 < S ? (S - f.s0 + st - 1) / st : 0;
  f.Hp = ph < H ? (H - ph + st - 1) / st : 0, f.Wp = pw < W ? (W - pw + st - 1) / st : 0;
  f.hb = (ph + pad - f.r0) / st, f.wb = (pw + pad - f.s0) / st;
  f.by_taps = FastDivmod(std::max(f.Rp * f.Sp, 1)), f.by_sp = FastDivmod(std::max(f.Sp, 1));
  f.by_pos = FastDivmod(std::max(f.Hp * f.Wp, 1)), f.by_wp = FastDivmod(std::max(f.Wp, 1));
  return f;
}

// B's column in a phase: image n's dy and the output position (i + hb, j + wb) of tap (0, 0).
template <typename E>
struct Position {
  const E* dy_img = nullptr;
  int pi = 0, qj = 0;
};

template <typename E>
struct DataGrad {
  const E *dy, *w;
  E* dx;
  Dims d;
  Phase f;
  using BCol = Position<E>;
  __device__ const E* a(int c, int krs) const {  // w[k, c, r0 + st*rr, s0 + st*ss]
    int k, t, rr, ss;
    f.by_taps.divmod(krs, k, t);
    f.by_sp.divmod(t, rr, ss);
    return w + ((int64_t(k) * d.C + c) * d.R + f.r0 + d.stride * rr) * d.S + f.s0 + d.stride * ss;
  }
  __device__ BCol b_col(int nij) const {
    int n, ij, i, j;
    f.by_pos.divmod(nij, n, ij);
    f.by_wp.divmod(ij, i, j);
    return {dy + int64_t(n) * d.K * d.P * d.Q, i + f.hb, j + f.wb};
  }
  __device__ const E* b(int krs, const BCol& col) const {  // dy[n, k, i + hb - rr, j + wb - ss]
    int k, t, rr, ss;
    f.by_taps.divmod(krs, k, t);
    f.by_sp.divmod(t, rr, ss);
    const int p = col.pi - rr, q = col.qj - ss;
    if (p < 0 || p >= d.P || q < 0 || q >= d.Q) return nullptr;
    return col.dy_img + (int64_t(k) * d.P + p) * d.Q + q;
  }
  __device__ void store(int c, int nij, float v, int) const {  // dx[n, c, ph + st*i, pw + st*j]
    int n, ij, i, j;
    f.by_pos.divmod(nij, n, ij);
    f.by_wp.divmod(ij, i, j);
    dx[((int64_t(n) * d.C + c) * d.H + f.ph + d.stride * i) * d.W + f.pw + d.stride * j] = E(v);
  }
};

// B's column in the weight gradient: the tap (c, r, s) as channel c's offset and the window shift.
struct Tap {
  int64_t c_off = 0;
  int r = 0, s = 0;
};

template <typename E>
struct WeightGrad {
  const E *dy, *x;
  E* dw;
  float* partial;  // splits > 1: ws[split][K][CRS]; else null and results go to dw
  Dims d;
  using BCol = Tap;
  __device__ const E* a(int k, int npq) const {  // dy[n, k, p, q]
    int n, pq;
    d.by_pq.divmod(npq, n, pq);
    return dy + (int64_t(n) * d.K + k) * (d.P * d.Q) + pq;
  }
  __device__ BCol b_col(int crs) const {
    int c, rs, r, s;
    d.by_rs.divmod(crs, c, rs);
    d.by_s.divmod(rs, r, s);
    return {int64_t(c) * d.H * d.W, r, s};
  }
  __device__ const E* b(int npq, const BCol& tap) const {  // x[n, c, p*st - pad + r, q*st - pad + s]
    const Window<E> win = window_of(x, d, npq);
    const int h = win.h0 + tap.r, w = win.w0 + tap.s;
    if (h < 0 || h >= d.H || w < 0 || w >= d.W) return nullptr;
    return win.img + tap.c_off + int64_t(h) * d.W + w;
  }
  __device__ void store(int k, int crs, float v, int split) const {
    const int CRS = d.C * d.R * d.S;
    if (partial)
      partial[(int64_t(split) * d.K + k) * CRS + crs] = v;
    else
      dw[int64_t(k) * CRS + crs] = E(v);
  }
};

// The plan's configuration, or the dispatch's for this problem.
template <typename E>
int config_of(const TcPlan& p, TcKind kind, int64_t M, int64_t N, int64_t K, int splits) {
  return p.config >= 0 ? p.config : tc_pick_config(kind, std::is_same_v<E, bfloat16>, M, N, K, splits, device_smem_opt_in());
}

constexpr int kMinSplitLength = 256;  // reduction elements per split (8 k-tiles): below this a split is mostly overhead

}  // namespace

// out[i] = sum_s partial[s][i], the splits in order.
template <typename E>
__global__ void splitk_sum_kernel(E* out, const float* partial, int64_t n, int splits) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    float acc = 0.0f;
    for (int s = 0; s < splits; ++s) acc += partial[int64_t(s) * n + i];
    out[i] = E(acc);
  }
}

template <typename E>
void splitk_sum(E* out, const float* partial, int64_t n, int splits, const char* what) {
  launch_n(what, splitk_sum_kernel<E>, n, 256, out, partial, n, splits);
}

bool conv2d_tc_supported(const ConvGeom& g) {
  const int64_t lim = INT_MAX - 256;  // room for a tile past the end
  const int64_t PQ = g.P() * g.Q();
  return g.N > 0 && g.K > 0 && PQ > 0 && g.N * g.C * g.H * g.W < lim && g.N * g.K * PQ < lim &&
         g.K * g.C * g.R * g.S < lim && g.N * PQ < lim && g.N * g.H * g.W < lim && g.K * g.R * g.S < lim &&
         (g.K + 63) / 64 < 65535 && (g.C + 63) / 64 < 65535;  // grid rows: 64-row tiles in configs 3-5
}

int conv2d_tc_max_splits(const ConvGeom& g) {
  return int(std::clamp<int64_t>(kConvWorkspaceFloats / std::max<int64_t>(g.K * g.C * g.R * g.S, 1), 1, 64));
}

int conv2d_tc_splits(const ConvGeom& g, bool bf16) {
  const int64_t CRS = g.C * g.R * g.S, red = g.N * g.P() * g.Q();
  // A line's split count goes with its configuration: not taken where that does not fit the device.
  const bool fits = tc_config_fits_device(tc_table_config(TcKind::ConvWeightGrad, bf16, g.K, CRS, red), bf16);
  const int table = fits ? tc_table_splits(TcKind::ConvWeightGrad, bf16, g.K, CRS, red) : 0;
  if (table > 0) return std::min(table, conv2d_tc_max_splits(g));
  const int64_t blocks = ((g.K + 63) / 64) * ((CRS + 63) / 64);  // small tiles
  int64_t s = (264 + blocks - 1) / blocks;                         // two blocks per SM of an H200
  s = std::min(s, red / kMinSplitLength);
  return int(std::clamp<int64_t>(s, 1, conv2d_tc_max_splits(g)));
}

std::vector<TcGemmShape> conv2d_tc_gemms(const ConvGeom& g, TcKind kind) {
  const int64_t CRS = g.C * g.R * g.S, NPQ = g.N * g.P() * g.Q();
  if (kind == TcKind::ConvForward) return {{g.K, NPQ, CRS}};
  if (kind == TcKind::ConvWeightGrad) return {{g.K, CRS, NPQ}};
  std::vector<TcGemmShape> out;
  for (int ph = 0; ph < g.stride && ph < g.H; ++ph)
    for (int pw = 0; pw < g.stride && pw < g.W; ++pw) {
      const Phase f = phase_of(g, ph, pw);
      out.push_back({g.C, g.N * f.Hp * f.Wp, g.K * f.Rp * f.Sp});
    }
  return out;
}

int64_t conv2d_tc_workspace(const ConvGeom& g, int splits) {
  if (splits <= 0) splits = std::max(conv2d_tc_splits(g, false), conv2d_tc_splits(g, true));  // either dtype's
  return splits > 1 ? int64_t(splits) * g.K * g.C * g.R * g.S : 0;
}

// The forward with its whole epilogue: bias, then ReLU or the residual sum.
template <typename E>
void conv2d_tc_forward_epilogue(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, bool relu,
                                const E* residual, float res_scale, TcPlan plan);

template <typename E>
void conv2d_tc_forward(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, bool relu, TcPlan plan) {
  conv2d_tc_forward_epilogue<E>(y, x, w, b, g, relu, nullptr, 1.0f, plan);
}

template <typename E>
void conv2d_tc_residual_forward(E* y, const E* x, const E* w, const E* b, const E* r, float s, const ConvGeom& g,
                                TcPlan plan) {
  NIMBUS_CHECK(r, "cuda::conv2d_tc_residual_forward: no residual");
  conv2d_tc_forward_epilogue<E>(y, x, w, b, g, false, r, s, plan);
}

template <typename E>
void conv2d_tc_forward_epilogue(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, bool relu,
                                const E* residual, float res_scale, TcPlan plan) {
  NIMBUS_CHECK(conv2d_tc_supported(g), "cuda::conv2d_tc_forward: geometry too large for the tensor-core kernels");
  const Dims d = dims_of(g);
  const Forward<E> pb{x, w, b, y, d, relu, residual, res_scale};
  const int M = d.K, N = d.N * d.P * d.Q, K = d.C * d.R * d.S;
  mma::launch_igemm<E>(pb, M, N, K, 1, config_of<E>(plan, TcKind::ConvForward, M, N, K, 1), w,
                       "cuda::conv2d_tc_forward");
}

int64_t conv2d_bn_moments_floats(const ConvGeom& g) {
  // mma.sync: ceil(NPQ / BN) * WarpsN chunks of WN >= 32 columns (at most NPQ / 32 + 4); wgmma: NPQ / 128.
  return 3 * g.K * ((g.N * g.P() * g.Q() + 31) / 32 + 4);
}

template <typename E>
int conv2d_tc_forward_bn_moments(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, float* moments,
                                 TcPlan plan, const BnReluIn& in) {
  NIMBUS_CHECK(conv2d_tc_supported(g), "cuda::conv2d_tc_forward: geometry too large for the tensor-core kernels");
  NIMBUS_CHECK(moments, "cuda::conv2d_tc_forward_bn_moments: no moments buffer");
  NIMBUS_CHECK(!in.mean == !in.invstd, "cuda::conv2d_tc_forward_bn_moments: a prologue needs mean and invstd");
  const Dims d = dims_of(g);
  const ForwardMoments<E> pb{{x, w, b, y, d, false, nullptr, 1.0f}, moments};
  const int M = d.K, N = d.N * d.P * d.Q, K = d.C * d.R * d.S;
  const int config = config_of<E>(plan, TcKind::ConvForward, M, N, K, 1);
  if (in.mean)
    mma::launch_igemm<E>(ForwardMomentsBnIn<E>{pb, in}, M, N, K, 1, config, w,
                         "cuda::conv2d_tc_forward_bn_moments (batch norm + ReLU prologue)");
  else
    mma::launch_igemm<E>(pb, M, N, K, 1, config, w, "cuda::conv2d_tc_forward_bn_moments");
  const TcConfig& c = kTcConfigs[config];
  return (N + c.bn - 1) / c.bn * c.warps_n;
}

template <typename E>
void conv2d_tc_backward(E* dx, E* dw, E* db, const E* dy, const E* x, const E* w, const ConvGeom& g, float* ws,
                        TcPlan plan) {
  NIMBUS_CHECK(conv2d_tc_supported(g), "cuda::conv2d_tc_backward: geometry too large for the tensor-core kernels");
  const Dims d = dims_of(g);
  const int CRS = d.C * d.R * d.S;
  if (db) bias_backward(db, dy, g.N, g.K, g.P() * g.Q());
  if (dw) {
    NIMBUS_CHECK(x, "cuda::conv2d_tc_backward: dw needs x");
    const int M = d.K, N = CRS, K = d.N * d.P * d.Q;
    const int splits = plan.splits > 0 ? plan.splits : conv2d_tc_splits(g, std::is_same_v<E, bfloat16>);
    NIMBUS_CHECK(splits == 1 || ws, "cuda::conv2d_tc_backward: ", splits, " splits need a workspace");
    const WeightGrad<E> pb{dy, x, dw, splits > 1 ? ws : nullptr, d};
    mma::launch_igemm<E>(pb, M, N, K, splits, config_of<E>(plan, TcKind::ConvWeightGrad, M, N, K, splits), dy,
                         "cuda::conv2d_tc_backward (dw)");
    if (splits > 1) splitk_sum(dw, ws, int64_t(d.K) * CRS, splits, "cuda::conv2d_tc_backward (dw split sum)");
  }
  if (dx) {
    NIMBUS_CHECK(w, "cuda::conv2d_tc_backward: dx needs w");
    for (int ph = 0; ph < d.stride && ph < d.H; ++ph)  // one launch per phase: stride^2 of them
      for (int pw = 0; pw < d.stride && pw < d.W; ++pw) {
        const DataGrad<E> pb{dy, w, dx, d, phase_of(g, ph, pw)};
        const int M = d.C, N = d.N * pb.f.Hp * pb.f.Wp, K = d.K * pb.f.Rp * pb.f.Sp;
        mma::launch_igemm<E>(pb, M, N, K, 1, config_of<E>(plan, TcKind::ConvDataGrad, M, N, K, 1), w,
                             "cuda::conv2d_tc_backward (dx)");
      }
  }
}

template void splitk_sum<float>(float*, const float*, int64_t, int, const char*);
template void splitk_sum<bfloat16>(bfloat16*, const float*, int64_t, int, const char*);
template void conv2d_tc_forward<float>(float*, const float*, const float*, const float*, const ConvGeom&, bool,
                                       TcPlan);
template int conv2d_tc_forward_bn_moments<float>(float*, const float*, const float*, const float*, const ConvGeom&,
                                                 float*, TcPlan, const BnReluIn&);
template int conv2d_tc_forward_bn_moments<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, const bfloat16*,
                                                    const ConvGeom&, float*, TcPlan, const BnReluIn&);
template void conv2d_tc_residual_forward<float>(float*, const float*, const float*, const float*, const float*, float,
                                                const ConvGeom&, TcPlan);
template void conv2d_tc_residual_forward<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, const bfloat16*,
                                                   const bfloat16*, float, const ConvGeom&, TcPlan);
template void conv2d_tc_forward<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, const bfloat16*,
                                          const ConvGeom&, bool, TcPlan);
template void conv2d_tc_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const ConvGeom&, float*, TcPlan);
template void conv2d_tc_backward<bfloat16>(bfloat16*, bfloat16*, bfloat16*, const bfloat16*, const bfloat16*,
                                           const bfloat16*, const ConvGeom&, float*, TcPlan);

}  // namespace nimbus::cuda
