// conv2d.cpp: reference convolution loops and the im2col + GEMM fast path (see conv2d.h).
#include "kernels/cpu/conv2d.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"

namespace nimbus::cpu {

// ============================== reference ==============================

template <typename T>
void conv2d_forward_ref(T* y, const T* x, const T* w, const T* b, const ConvGeom& g) {
  const int64_t P = g.P(), Q = g.Q();
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          T acc = b ? b[k] : T(0);
          for (int64_t c = 0; c < g.C; ++c)
            for (int64_t r = 0; r < g.R; ++r)
              for (int64_t s = 0; s < g.S; ++s) {
                int64_t ih = p * g.stride - g.pad + r, iw = q * g.stride - g.pad + s;
                if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;  // zero padding
                acc += w[((k * g.C + c) * g.R + r) * g.S + s] * x[((n * g.C + c) * g.H + ih) * g.W + iw];
              }
          y[((n * g.K + k) * P + p) * Q + q] = acc;
        }
}

// dx[n,c,ih,iw] = sum over every (k,p,q,r,s) that read x[n,c,ih,iw] of dy[n,k,p,q] * w[k,c,r,s]
template <typename T>
void conv2d_backward_data_ref(T* dx, const T* dy, const T* w, const ConvGeom& g) {
  const int64_t P = g.P(), Q = g.Q();
  std::fill(dx, dx + g.N * g.C * g.H * g.W, T(0));
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          T d = dy[((n * g.K + k) * P + p) * Q + q];
          for (int64_t c = 0; c < g.C; ++c)
            for (int64_t r = 0; r < g.R; ++r)
              for (int64_t s = 0; s < g.S; ++s) {
                int64_t ih = p * g.stride - g.pad + r, iw = q * g.stride - g.pad + s;
                if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
                dx[((n * g.C + c) * g.H + ih) * g.W + iw] += d * w[((k * g.C + c) * g.R + r) * g.S + s];
              }
        }
}

// dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[n, c, p*stride - pad + r, q*stride - pad + s]
template <typename T>
void conv2d_backward_weight_ref(T* dw, const T* dy, const T* x, const ConvGeom& g) {
  const int64_t P = g.P(), Q = g.Q();
  for (int64_t k = 0; k < g.K; ++k)
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t r = 0; r < g.R; ++r)
        for (int64_t s = 0; s < g.S; ++s) {
          T acc = 0;
          for (int64_t n = 0; n < g.N; ++n)
            for (int64_t p = 0; p < P; ++p)
              for (int64_t q = 0; q < Q; ++q) {
                int64_t ih = p * g.stride - g.pad + r, iw = q * g.stride - g.pad + s;
                if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
                acc += dy[((n * g.K + k) * P + p) * Q + q] * x[((n * g.C + c) * g.H + ih) * g.W + iw];
              }
          dw[((k * g.C + c) * g.R + r) * g.S + s] = acc;
        }
}

#define NIMBUS_INSTANTIATE(T)                                                                \
  template void conv2d_forward_ref<T>(T*, const T*, const T*, const T*, const ConvGeom&); \
  template void conv2d_backward_data_ref<T>(T*, const T*, const T*, const ConvGeom&);     \
  template void conv2d_backward_weight_ref<T>(T*, const T*, const T*, const ConvGeom&);
NIMBUS_INSTANTIATE(float)
NIMBUS_INSTANTIATE(double)
#undef NIMBUS_INSTANTIATE

// ============================== fast path ==============================

namespace {
// GEMM columns we aim for per call (fewer leave BLAS starved on small images),
// and a cap on the im2col buffer (64 MiB).
constexpr int64_t kTargetCols = 1024;
constexpr int64_t kMaxColFloats = int64_t(16) << 20;

// Output positions o in [lo, hi) whose input coordinate o*stride - pad + r lies
// inside [0, extent): the rest read zero padding.
struct Range {
  int64_t lo, hi;
};
Range valid(int64_t r, int64_t extent, int64_t out, const ConvGeom& g) {
  auto first_at_least = [&](int64_t v) {  // smallest o >= 0 with o*stride >= v
    return v <= 0 ? int64_t(0) : (v + g.stride - 1) / g.stride;
  };
  int64_t lo = std::min(first_at_least(g.pad - r), out);
  int64_t hi = std::min(first_at_least(extent + g.pad - r), out);
  return {lo, std::max(lo, hi)};
}
}  // namespace

void im2col(float* col, const float* x, int64_t count, const ConvGeom& g) {
  const int64_t P = g.P(), Q = g.Q(), PQ = P * Q, HW = g.H * g.W, ld = count * PQ;
  const int64_t work = g.C * g.R * g.S * ld;
#pragma omp parallel for collapse(3) if (work > kParallelGrain)
  for (int64_t c = 0; c < g.C; ++c)
    for (int64_t r = 0; r < g.R; ++r)
      for (int64_t s = 0; s < g.S; ++s) {
        float* row = col + ((c * g.R + r) * g.S + s) * ld;
        const Range rp = valid(r, g.H, P, g), rq = valid(s, g.W, Q, g);
        for (int64_t i = 0; i < count; ++i) {
          const float* xc = x + (i * g.C + c) * HW;
          float* dst = row + i * PQ;
          std::fill(dst, dst + rp.lo * Q, 0.f);
          for (int64_t p = rp.lo; p < rp.hi; ++p) {
            float* d = dst + p * Q;
            const int64_t base = (p * g.stride - g.pad + r) * g.W - g.pad + s;  // + q*stride = input index
            for (int64_t q = 0; q < rq.lo; ++q) d[q] = 0.f;
            if (g.stride == 1) std::memcpy(d + rq.lo, xc + base + rq.lo, sizeof(float) * (rq.hi - rq.lo));
            else
              for (int64_t q = rq.lo; q < rq.hi; ++q) d[q] = xc[base + q * g.stride];
            for (int64_t q = rq.hi; q < Q; ++q) d[q] = 0.f;
          }
          std::fill(dst + rp.hi * Q, dst + PQ, 0.f);
        }
      }
}

void col2im(float* dx, const float* col, int64_t count, const ConvGeom& g) {
  const int64_t P = g.P(), Q = g.Q(), PQ = P * Q, HW = g.H * g.W, ld = count * PQ;
  const int64_t work = g.C * g.R * g.S * ld;
  // Each (image, channel) plane of dx is written by one thread only: no races.
#pragma omp parallel for collapse(2) if (work > kParallelGrain)
  for (int64_t i = 0; i < count; ++i)
    for (int64_t c = 0; c < g.C; ++c) {
      float* dxc = dx + (i * g.C + c) * HW;
      std::fill(dxc, dxc + HW, 0.f);
      for (int64_t r = 0; r < g.R; ++r)
        for (int64_t s = 0; s < g.S; ++s) {
          const float* row = col + ((c * g.R + r) * g.S + s) * ld + i * PQ;
          const Range rp = valid(r, g.H, P, g), rq = valid(s, g.W, Q, g);
          for (int64_t p = rp.lo; p < rp.hi; ++p) {
            const float* src = row + p * Q;
            const int64_t base = (p * g.stride - g.pad + r) * g.W - g.pad + s;
            for (int64_t q = rq.lo; q < rq.hi; ++q) dxc[base + q * g.stride] += src[q];
          }
        }
    }
}

int64_t conv2d_group(const ConvGeom& g) {
  const int64_t PQ = g.P() * g.Q(), CRS = g.C * g.R * g.S;
  int64_t G = std::min(g.N, (kTargetCols + PQ - 1) / PQ);
  while (G > 1 && CRS * G * PQ > kMaxColFloats) --G;
  return std::max<int64_t>(G, 1);
}

int64_t conv2d_workspace(const ConvGeom& g) {
  const int64_t G = conv2d_group(g), PQ = g.P() * g.Q(), CRS = g.C * g.R * g.S;
  const int64_t col = (g.pointwise() && G == 1) ? 0 : CRS * G * PQ;
  const int64_t tmp = G > 1 ? g.K * G * PQ : 0;
  return col + tmp;
}

namespace {
// (K, count*PQ) <-> (count, K, PQ): the layout change around a grouped GEMM.
// scatter also adds the bias (b may be null).
void scatter(float* y, const float* tmp, const float* b, int64_t count, int64_t K, int64_t PQ) {
#pragma omp parallel for collapse(2) if (count * K * PQ > kParallelGrain)
  for (int64_t i = 0; i < count; ++i)
    for (int64_t k = 0; k < K; ++k) {
      const float* src = tmp + k * count * PQ + i * PQ;
      float* dst = y + (i * K + k) * PQ;
      const float bk = b ? b[k] : 0.f;
      for (int64_t j = 0; j < PQ; ++j) dst[j] = src[j] + bk;
    }
}
void gather(float* tmp, const float* dy, int64_t count, int64_t K, int64_t PQ) {
#pragma omp parallel for collapse(2) if (count * K * PQ > kParallelGrain)
  for (int64_t i = 0; i < count; ++i)
    for (int64_t k = 0; k < K; ++k)
      std::memcpy(tmp + k * count * PQ + i * PQ, dy + (i * K + k) * PQ, sizeof(float) * PQ);
}
}  // namespace

void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws) {
  const int64_t G = conv2d_group(g), PQ = g.P() * g.Q(), CRS = g.C * g.R * g.S;
  const int64_t CHW = g.C * g.H * g.W, KPQ = g.K * PQ;
  float* col = ws;
  float* tmp = ws + ((g.pointwise() && G == 1) ? 0 : CRS * G * PQ);
  for (int64_t n0 = 0; n0 < g.N; n0 += G) {
    const int64_t cnt = std::min(G, g.N - n0), cols = cnt * PQ;
    const float* B = x + n0 * CHW;  // pointwise, one image: x_n (C, HW) is the matrix
    if (!(g.pointwise() && G == 1)) {
      im2col(col, x + n0 * CHW, cnt, g);
      B = col;
    }
    if (G == 1) {  // y_n (K, PQ) = W (K, CRS) col (CRS, PQ) [+ b]
      float* yn = y + n0 * KPQ;
      if (b) bias_fill(yn, b, int64_t(1), g.K, PQ);
      gemm<float>(false, false, g.K, PQ, CRS, 1.f, w, CRS, B, PQ, b ? 1.f : 0.f, yn, PQ);
    } else {
      gemm<float>(false, false, g.K, cols, CRS, 1.f, w, CRS, B, cols, 0.f, tmp, cols);
      scatter(y + n0 * KPQ, tmp, b, cnt, g.K, PQ);
    }
  }
}

void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvGeom& g, float* ws) {
  const int64_t G = conv2d_group(g), PQ = g.P() * g.Q(), CRS = g.C * g.R * g.S;
  const int64_t CHW = g.C * g.H * g.W, KPQ = g.K * PQ;
  const bool direct = g.pointwise() && G == 1;  // x_n / dx_n are the GEMM matrices themselves
  float* col = ws;
  float* tmp = ws + (direct ? 0 : CRS * G * PQ);
  if (db) bias_backward(db, dy, g.N, g.K, PQ);
  if (dw && g.N == 0) std::fill(dw, dw + g.K * CRS, 0.f);  // no image, no GEMM to write it
  for (int64_t n0 = 0; n0 < g.N; n0 += G) {
    const int64_t cnt = std::min(G, g.N - n0), cols = cnt * PQ;
    const float* dyg = dy + n0 * KPQ;  // (K, cols)
    if (G > 1) {
      gather(tmp, dyg, cnt, g.K, PQ);
      dyg = tmp;
    }
    if (dw) {  // dW (K, CRS) += dy_g (K, cols) col^T (cols, CRS)
      const float* B = x + n0 * CHW;
      if (!direct) {
        im2col(col, x + n0 * CHW, cnt, g);
        B = col;
      }
      gemm<float>(false, true, g.K, CRS, cols, 1.f, dyg, cols, B, cols, n0 == 0 ? 0.f : 1.f, dw, CRS);
    }
    if (dx) {  // dcol (CRS, cols) = W^T (CRS, K) dy_g (K, cols), then folded into dx
      float* out = direct ? dx + n0 * CHW : col;
      gemm<float>(true, false, CRS, cols, g.K, 1.f, w, CRS, dyg, cols, 0.f, out, cols);
      if (!direct) col2im(dx + n0 * CHW, col, cnt, g);
    }
  }
}

}  // namespace nimbus::cpu
