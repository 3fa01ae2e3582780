/* conv2d.cu: convolution forward, backward-data and backward-weight as im2col + the tiled SGEMM.
 *
 * Images go in groups of G (conv2d_group: as many as fit kConvWorkspaceFloats of im2col columns),
 * one im2col and one batched GEMM launch per group. Per image n (shapes as in
 * kernels/cpu/conv2d.h, CRS = C*R*S, PQ = P*Q):
 *   forward:         col = im2col(x_n) (CRS, PQ);  y_n (K, PQ) = W (K, CRS) col  (+ bias, pre-filled)
 *   backward-weight: dW (K, CRS) += sum_n dy_n (K, PQ) col_n^T   (gemm_reduce: one launch per group)
 *   backward-data:   dcol (CRS, PQ) = W^T dy_n;  dx_n = col2im(dcol)
 *   bias:            db = bias_backward(dy)  (gemm.cu)
 * A 1x1 stride-1 unpadded conv uses x_n itself as col. im2col and col2im are pointwise over their
 * output (col2im gathers, so there are no atomics): every result is independent of thread and
 * block order. CPU twin: kernels/cpu/conv2d.h (the _ref loops are the definition).
 */
#include "kernels/cuda/conv2d.h"

#include <algorithm>

#include "kernels/cuda/compat.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/common/error.h"

namespace nimbus::cuda {

// The geometry as kernel parameters (ConvGeom's P()/Q() are host functions).
struct ConvDims {
  int64_t C, H, W, R, S, P, Q, stride, pad;
};

static ConvDims dims(const ConvGeom& g) { return {g.C, g.H, g.W, g.R, g.S, g.P(), g.Q(), g.stride, g.pad}; }

// For each of `count` images: col[img][(c*R + r)*S + s][p*Q + q] = x[img][c][p*stride - pad + r][q*stride - pad + s]
// (0 outside the image).
__global__ void im2col_kernel(float* col, const float* x, ConvDims d, int64_t count) {
  const int64_t PQ = d.P * d.Q, per_image = d.C * d.R * d.S * PQ, n = count * per_image;
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const int64_t img = i / per_image, row = (i % per_image) / PQ, pq = i % PQ;
    const int64_t s = row % d.S, r = (row / d.S) % d.R, c = row / (d.S * d.R);
    const int64_t h = (pq / d.Q) * d.stride - d.pad + r, w = (pq % d.Q) * d.stride - d.pad + s;
    col[i] = (h >= 0 && h < d.H && w >= 0 && w < d.W) ? x[((img * d.C + c) * d.H + h) * d.W + w] : 0.0f;
  }
}

// dx[img][c][h][w] = sum over the (r, s, p, q) with h = p*stride - pad + r, w = q*stride - pad + s.
__global__ void col2im_kernel(float* dx, const float* col, ConvDims d, int64_t count) {
  const int64_t PQ = d.P * d.Q, n = count * d.C * d.H * d.W;
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const int64_t w = i % d.W, h = (i / d.W) % d.H, c = (i / (d.W * d.H)) % d.C, img = i / (d.W * d.H * d.C);
    const float* col_img = col + img * d.C * d.R * d.S * PQ;
    float acc = 0.0f;
    for (int64_t r = 0; r < d.R; ++r) {
      const int64_t ph = h + d.pad - r;  // = p * stride
      if (ph < 0 || ph % d.stride != 0 || ph / d.stride >= d.P) continue;
      for (int64_t s = 0; s < d.S; ++s) {
        const int64_t qw = w + d.pad - s;
        if (qw < 0 || qw % d.stride != 0 || qw / d.stride >= d.Q) continue;
        acc += col_img[((c * d.R + r) * d.S + s) * PQ + (ph / d.stride) * d.Q + qw / d.stride];
      }
    }
    dx[i] = acc;
  }
}

void im2col(float* col, const float* x, int64_t count, const ConvGeom& g, int block) {
  const int64_t n = count * g.C * g.R * g.S * g.P() * g.Q();
  if (n <= 0) return;
  launch(im2col_kernel, grid_for(n, block), block, 0, launch_stream(), col, x, dims(g), count);
  check_launch("cuda::im2col");
}

void col2im(float* dx, const float* col, int64_t count, const ConvGeom& g, int block) {
  const int64_t n = count * g.C * g.H * g.W;
  if (n <= 0) return;
  launch(col2im_kernel, grid_for(n, block), block, 0, launch_stream(), dx, col, dims(g), count);
  check_launch("cuda::col2im");
}

int64_t conv2d_group(const ConvGeom& g, int64_t group) {
  if (group <= 0) {
    const int64_t per_image = std::max<int64_t>(g.C * g.R * g.S * g.P() * g.Q(), 1);
    group = g.pointwise() ? g.N : kConvWorkspaceFloats / per_image;
  }
  return std::max<int64_t>(1, std::min<int64_t>({group, g.N, 65535}));
}

int64_t conv2d_workspace(const ConvGeom& g, int64_t group) {
  return g.pointwise() ? 0 : conv2d_group(g, group) * g.C * g.R * g.S * g.P() * g.Q();
}

// Images [n0, n0 + count) as GEMM operands: x itself for a pointwise conv, else their im2col in ws.
static const float* columns(const float* x, int64_t n0, int64_t count, const ConvGeom& g, float* ws,
                            int64_t* stride) {
  const int64_t CHW = g.C * g.H * g.W;
  if (g.pointwise()) {
    *stride = CHW;
    return x + n0 * CHW;
  }
  cuda::im2col(ws, x + n0 * CHW, count, g);
  *stride = g.C * g.R * g.S * g.P() * g.Q();
  return ws;
}

void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws, int tile,
                    int64_t group) {
  const int64_t CRS = g.C * g.R * g.S, PQ = g.P() * g.Q(), G = conv2d_group(g, group);
  if (b) bias_fill(y, b, g.N, g.K, PQ);
  for (int64_t n0 = 0; n0 < g.N; n0 += G) {
    const int64_t count = std::min(G, g.N - n0);
    int64_t stride = 0;
    const float* col = columns(x, n0, count, g, ws, &stride);
    // y_n (K, PQ) (+)= W (K, CRS) col_n (CRS, PQ), for the group's images at once.
    gemm_batched(false, false, g.K, PQ, CRS, 1.0f, w, CRS, 0, col, PQ, stride, b ? 1.0f : 0.0f, y + n0 * g.K * PQ, PQ,
                 g.K * PQ, count, tile);
  }
}

void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvGeom& g, float* ws, int tile, int64_t group) {
  const int64_t CRS = g.C * g.R * g.S, PQ = g.P() * g.Q(), CHW = g.C * g.H * g.W, G = conv2d_group(g, group);
  if (db) bias_backward(db, dy, g.N, g.K, PQ);
  if (dw) {
    NIMBUS_CHECK(x, "cuda::conv2d_backward: dw needs x");
    if (g.N == 0) fill(dw, 0.0f, g.K * CRS);
    for (int64_t n0 = 0; n0 < g.N; n0 += G) {
      const int64_t count = std::min(G, g.N - n0);
      int64_t stride = 0;
      const float* col = columns(x, n0, count, g, ws, &stride);
      // dW (K, CRS) (+)= sum over the group's images of dy_n (K, PQ) col_n^T: one launch per group.
      gemm_reduce(false, true, g.K, CRS, PQ, 1.0f, dy + n0 * g.K * PQ, PQ, g.K * PQ, col, PQ, stride,
                  n0 == 0 ? 0.0f : 1.0f, dw, CRS, count, tile);
    }
  }
  if (dx) {
    NIMBUS_CHECK(w, "cuda::conv2d_backward: dx needs w");
    for (int64_t n0 = 0; n0 < g.N; n0 += G) {
      const int64_t count = std::min(G, g.N - n0);
      // dcol_n (CRS, PQ) = W^T dy_n, straight into dx for a pointwise conv, else folded by col2im.
      float* dcol = g.pointwise() ? dx + n0 * CHW : ws;
      gemm_batched(true, false, CRS, PQ, g.K, 1.0f, w, CRS, 0, dy + n0 * g.K * PQ, PQ, g.K * PQ, 0.0f, dcol, PQ,
                   g.pointwise() ? CHW : CRS * PQ, count, tile);
      if (!g.pointwise()) cuda::col2im(dx + n0 * CHW, ws, count, g);
    }
  }
}

}  // namespace nimbus::cuda
