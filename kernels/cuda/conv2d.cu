/* conv2d.cu: convolution forward, backward-data and backward-weight as im2col + the tiled SGEMM.
 *
 * Per image n (shapes as in kernels/cpu/conv2d.h, CRS = C*R*S, PQ = P*Q):
 *   forward:         col = im2col(x_n) (CRS, PQ);  y_n (K, PQ) = W (K, CRS) col  (+ bias, pre-filled)
 *   backward-weight: dW (K, CRS) += dy_n (K, PQ) col^T           (beta 0 for the first image)
 *   backward-data:   dcol (CRS, PQ) = W^T dy_n;  dx_n = col2im(dcol)
 *   bias:            db = bias_backward(dy)  (gemm.cu)
 * A 1x1 stride-1 unpadded conv uses x_n itself as col. im2col and col2im are pointwise over their
 * output (col2im gathers, so there are no atomics): every result is independent of thread and
 * block order. CPU twin: kernels/cpu/conv2d.h (the _ref loops are the definition).
 */
#include "kernels/cuda/conv2d.h"

#include "kernels/cuda/compat.h"
#include "kernels/cuda/elementwise.h"
#include "engine/error.h"

namespace nimbus::cuda {

// The geometry as kernel parameters (ConvGeom's P()/Q() are host functions).
struct ConvDims {
  int64_t C, H, W, R, S, P, Q, stride, pad;
};

static ConvDims dims(const ConvGeom& g) { return {g.C, g.H, g.W, g.R, g.S, g.P(), g.Q(), g.stride, g.pad}; }

// col[(c*R + r)*S + s][p*Q + q] = x[c][p*stride - pad + r][q*stride - pad + s] (0 outside the image).
__global__ void im2col_kernel(float* col, const float* x, ConvDims d) {
  const int64_t PQ = d.P * d.Q, n = d.C * d.R * d.S * PQ;
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const int64_t row = i / PQ, pq = i % PQ;
    const int64_t s = row % d.S, r = (row / d.S) % d.R, c = row / (d.S * d.R);
    const int64_t h = (pq / d.Q) * d.stride - d.pad + r, w = (pq % d.Q) * d.stride - d.pad + s;
    col[i] = (h >= 0 && h < d.H && w >= 0 && w < d.W) ? x[(c * d.H + h) * d.W + w] : 0.0f;
  }
}

// dx[c][h][w] = sum over the (r, s, p, q) with h = p*stride - pad + r, w = q*stride - pad + s.
__global__ void col2im_kernel(float* dx, const float* col, ConvDims d) {
  const int64_t PQ = d.P * d.Q, n = d.C * d.H * d.W;
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const int64_t w = i % d.W, h = (i / d.W) % d.H, c = i / (d.W * d.H);
    float acc = 0.0f;
    for (int64_t r = 0; r < d.R; ++r) {
      const int64_t ph = h + d.pad - r;  // = p * stride
      if (ph < 0 || ph % d.stride != 0 || ph / d.stride >= d.P) continue;
      for (int64_t s = 0; s < d.S; ++s) {
        const int64_t qw = w + d.pad - s;
        if (qw < 0 || qw % d.stride != 0 || qw / d.stride >= d.Q) continue;
        acc += col[((c * d.R + r) * d.S + s) * PQ + (ph / d.stride) * d.Q + qw / d.stride];
      }
    }
    dx[i] = acc;
  }
}

void im2col(float* col, const float* x, const ConvGeom& g, int block) {
  const int64_t n = g.C * g.R * g.S * g.P() * g.Q();
  if (n <= 0) return;
  launch(im2col_kernel, grid_for(n, block), block, 0, nullptr, col, x, dims(g));
  check_launch("cuda::im2col");
}

void col2im(float* dx, const float* col, const ConvGeom& g, int block) {
  const int64_t n = g.C * g.H * g.W;
  if (n <= 0) return;
  launch(col2im_kernel, grid_for(n, block), block, 0, nullptr, dx, col, dims(g));
  check_launch("cuda::col2im");
}

int64_t conv2d_workspace(const ConvGeom& g) { return g.pointwise() ? 0 : g.C * g.R * g.S * g.P() * g.Q(); }

void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                    int tile) {
  const int64_t CRS = g.C * g.R * g.S, PQ = g.P() * g.Q(), HW = g.H * g.W;
  if (b) bias_fill(y, b, g.N, g.K, PQ);
  for (int64_t n = 0; n < g.N; ++n) {
    const float* col = x + n * g.C * HW;
    if (!g.pointwise()) {
      im2col(ws, col, g);
      col = ws;
    }
    gemm(false, false, g.K, PQ, CRS, 1.0f, w, CRS, col, PQ, b ? 1.0f : 0.0f, y + n * g.K * PQ, PQ, tile);
  }
}

void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvGeom& g, float* ws, int tile) {
  const int64_t CRS = g.C * g.R * g.S, PQ = g.P() * g.Q(), HW = g.H * g.W;
  if (db) bias_backward(db, dy, g.N, g.K, PQ);
  if (dw) {
    NIMBUS_CHECK(x, "cuda::conv2d_backward: dw needs x");
    if (g.N == 0) fill(dw, 0.0f, g.K * CRS);
    for (int64_t n = 0; n < g.N; ++n) {
      const float* col = x + n * g.C * HW;
      if (!g.pointwise()) {
        im2col(ws, col, g);
        col = ws;
      }
      gemm(false, true, g.K, CRS, PQ, 1.0f, dy + n * g.K * PQ, PQ, col, PQ, n == 0 ? 0.0f : 1.0f, dw, CRS, tile);
    }
  }
  if (dx) {
    NIMBUS_CHECK(w, "cuda::conv2d_backward: dx needs w");
    for (int64_t n = 0; n < g.N; ++n) {
      float* dxn = dx + n * g.C * HW;
      if (g.pointwise()) {
        gemm(true, false, CRS, PQ, g.K, 1.0f, w, CRS, dy + n * g.K * PQ, PQ, 0.0f, dxn, PQ, tile);
      } else {
        gemm(true, false, CRS, PQ, g.K, 1.0f, w, CRS, dy + n * g.K * PQ, PQ, 0.0f, ws, PQ, tile);
        col2im(dxn, ws, g);
      }
    }
  }
}

}  // namespace nimbus::cuda
