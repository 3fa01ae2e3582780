// conv2d.cpp: reference convolution loops and the im2col + GEMM fast path (see conv2d.h).
#include "kernels/cpu/conv2d.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/conv2d_direct.h"
#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/common/parallel.h"

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
//
// Threads: the GEMMs share out their tiles (fixed by the shape) over OpenMP's threads (gemm.h;
// OpenBLAS itself runs serial), and the copies around them (im2col, col2im, pad,
// pack, crop, scatter) are OpenMP loops on the same libgomp pool. No sum depends
// on the thread count. (With the pthread build of OpenBLAS threading itself these
// copies had to stay serial: libgomp's spinning worker and OpenBLAS's threads
// fought over the two cores. With one pool, making them parallel took ResNet-50
// b32 from 531 to 449 ms per training step and from 162 to 133 ms per inference
// batch.)

namespace {
// GEMM columns we aim for per call (fewer leave BLAS starved on small images),
// and a cap on the im2col buffer (64 MiB).
constexpr int64_t kTargetCols = 1024;
constexpr int64_t kMaxColFloats = int64_t(16) << 20;
constexpr int64_t kShiftedMinChannels = 32;  // input channels below which stride-1 convs use im2col

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
#pragma omp parallel for if (g.C * g.R * g.S * ld > kParallelGrain)
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
#pragma omp parallel for collapse(2) if (g.C * g.R * g.S * ld > kParallelGrain)
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

namespace {
// Which fast path a geometry takes:
//   Direct3x3: 3x3 stride 1 on rows of >= 16 pixels: no GEMM (conv2d_direct.cpp); the forward and
//              the data gradient by Winograd F(2x2, 3x3), the weight gradient by F(3x3, 2x2), where
//              conv2d_winograd.h says it is faster.
//   PerImage:  a batch of images of >= 64 output pixels: the threads split the
//              images, each running single-threaded GEMMs (OpenBLAS runs
//              serially inside a parallel region) straight on its image's
//              NCHW planes: no gather/scatter copies around a batched GEMM.
//              Below 64 output pixels per-image GEMMs lose.
//   Pointwise: 1x1 stride 1 pad 0, one image per GEMM: x_n is the GEMM operand itself.
//   Shifted: stride 1, >= 32 input channels, one image per GEMM: R*S GEMMs on the
//            zero-padded image (below).
//   Im2col:  everything else (strided convs, small images grouped G at a time).
// The forward of a few strided geometries runs k-vectorised instead (use_kvec),
// and that of 1x1 convs on planes of a multiple of 16 pixels the direct 1x1
// tile (conv2d_pointwise_forward), ~3x OpenBLAS's per-image GEMMs there.
// Every threshold here was set by measurement: docs/perf-notes.md, "CPU convolution paths".
enum class Path { Direct3x3, PerImage, Pointwise, Shifted, Im2col };
constexpr int64_t kPerImageMinPixels = 64;
Path path_of(const ConvGeom& g) {
  if (conv2d_direct_applies(g)) return Path::Direct3x3;
  if (g.N > 1 && g.P() * g.Q() >= kPerImageMinPixels) return Path::PerImage;
  if (conv2d_group(g) > 1) return Path::Im2col;
  if (g.pointwise()) return Path::Pointwise;
  // The forward's shifted GEMMs have inner dimension C and dW's have only C
  // columns: with few input channels one im2col GEMM is faster.
  return g.stride == 1 && g.C >= kShiftedMinChannels ? Path::Shifted : Path::Im2col;
}

// Forwards with taps and a long (c, r, s) reduction whose weights for 64
// outputs fit in L2 (CRS <= 4096) run k-vectorised instead of im2col + GEMM.
// It loses without taps (1x1: 64 scalar stores per pixel for 64 FMAs) and with
// 512 channels.
bool use_kvec(const ConvGeom& g) {
  const int64_t CRS = g.C * g.R * g.S;
  return g.R * g.S > 1 && CRS >= 512 && CRS <= 4096;
}

// ---- PerImage: threads split the images ----
// ws: a column buffer per thread (CRS*PQ; none when pointwise), then the backward's dW partial sums,
// one per group of images. The groups are fixed by the batch alone (at most kDwGroups; image n in
// group n * groups / N), each sums its images in order and dW sums the groups in order: the same bits
// for any thread count. (A partial sum per thread made dW, and so training, depend on --threads.)
constexpr int64_t kDwGroups = 8;
int64_t per_image_col_floats(const ConvGeom& g) { return g.pointwise() ? 0 : g.P() * g.Q() * g.C * g.R * g.S; }
int64_t dw_groups(const ConvGeom& g) { return std::min<int64_t>(g.N, kDwGroups); }
int64_t per_image_workspace(const ConvGeom& g) {
  return omp_get_max_threads() * per_image_col_floats(g) + dw_groups(g) * g.K * g.C * g.R * g.S;
}

void per_image_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws) {
  const int64_t PQ = g.P() * g.Q(), CRS = g.C * g.R * g.S, CHW = g.C * g.H * g.W, KPQ = g.K * PQ;
#pragma omp parallel
  {
    float* col = ws + omp_get_thread_num() * per_image_col_floats(g);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.N; ++n) {
      const float* B = x + n * CHW;
      if (!g.pointwise()) {
        im2col(col, B, 1, g);
        B = col;
      }
      float* yn = y + n * KPQ;
      if (b) bias_fill(yn, b, int64_t(1), g.K, PQ);
      gemm<float>(false, false, g.K, PQ, CRS, 1.f, w, CRS, B, PQ, b ? 1.f : 0.f, yn, PQ);
    }
  }
}

void per_image_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const ConvGeom& g,
                        float* ws) {
  const int64_t PQ = g.P() * g.Q(), CRS = g.C * g.R * g.S, CHW = g.C * g.H * g.W, KPQ = g.K * PQ, KCRS = g.K * CRS;
  const int64_t cols = per_image_col_floats(g), groups = dw_groups(g);
  float* const partial = ws + omp_get_max_threads() * cols;  // group q's share of dW at partial + q * KCRS
#pragma omp parallel
  {
    float* col = ws + omp_get_thread_num() * cols;
    if (dw) {
#pragma omp for schedule(dynamic)
      for (int64_t q = 0; q < groups; ++q) {
        float* dw_q = partial + q * KCRS;
        std::fill(dw_q, dw_q + KCRS, 0.f);
        for (int64_t n = g.N * q / groups; n < g.N * (q + 1) / groups; ++n) {  // dW_q (K, CRS) += dy_n col_n^T
          const float* B = x + n * CHW;
          if (!g.pointwise()) {
            im2col(col, B, 1, g);
            B = col;
          }
          gemm<float>(false, true, g.K, CRS, PQ, 1.f, dy + n * KPQ, PQ, B, PQ, 1.f, dw_q, CRS);
        }
      }
    }
    if (dx) {  // no sum across images: every thread takes images, whatever the groups
#pragma omp for schedule(static)
      for (int64_t n = 0; n < g.N; ++n) {  // dcol (CRS, PQ) = W^T dy_n, folded into dx_n
        float* out = g.pointwise() ? dx + n * CHW : col;
        gemm<float>(true, false, CRS, PQ, g.K, 1.f, w, CRS, dy + n * KPQ, PQ, 0.f, out, PQ);
        if (!g.pointwise()) col2im(dx + n * CHW, col, 1, g);
      }
    }
  }
  if (!dw) return;
#pragma omp parallel for if (KCRS > kParallelGrain)
  for (int64_t i = 0; i < KCRS; ++i) {
    float s = 0.f;
    for (int64_t q = 0; q < groups; ++q) s += partial[q * KCRS + i];
    dw[i] = s;
  }
}

// ---- the stride-1 path: shifted GEMMs, no im2col ----
// With stride 1, output (p,q) reads the padded image at (p+r, q+s). Put the
// output on the padded grid's width Wp, column j = p*Wp + q. Then kernel tap
// (r,s) needs the padded image shifted by off = r*Wp + s: a plain strided
// matrix, xpad[:, off : off + P*Wp], so
//   ypad (K, P*Wp) = sum_{r,s} W_rs (K, C) xpad_shifted (C, P*Wp)
// is R*S GEMMs that read a C*Hp*Wp image instead of a 9x larger im2col
// buffer. Columns q in [Q, Wp) wrap into the next row: junk, dropped on the
// way out (and zero in dy on the way back, so they add nothing).
// W_rs is w repacked tap-major: wr[rs][k][c].
struct Shifted {
  int64_t Hp, Wp, J, Lp;  // padded size, output columns J = P*Wp, per-channel stride Lp
  explicit Shifted(const ConvGeom& g)
      : Hp(g.H + 2 * g.pad), Wp(g.W + 2 * g.pad), J(g.P() * (g.W + 2 * g.pad)),
        Lp((g.H + 2 * g.pad) * (g.W + 2 * g.pad) + g.S) {}  // + S: the last junk columns stay in bounds
};

void pad_image(float* xp, const float* x, const ConvGeom& g, const Shifted& sh) {
  for (int64_t c = 0; c < g.C; ++c) {
    float* d = xp + c * sh.Lp;
    std::fill(d, d + sh.Lp, 0.f);
    for (int64_t h = 0; h < g.H; ++h)
      std::memcpy(d + (h + g.pad) * sh.Wp + g.pad, x + (c * g.H + h) * g.W, sizeof(float) * g.W);
  }
}

// w (K, C, R, S) <-> wr (R*S, K, C)
void pack_taps(float* wr, const float* w, const ConvGeom& g) {
  const int64_t RS = g.R * g.S;
  for (int64_t k = 0; k < g.K; ++k)
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t t = 0; t < RS; ++t) wr[(t * g.K + k) * g.C + c] = w[(k * g.C + c) * RS + t];
}
void unpack_taps(float* w, const float* wr, const ConvGeom& g) {
  const int64_t RS = g.R * g.S;
  for (int64_t k = 0; k < g.K; ++k)
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t t = 0; t < RS; ++t) w[(k * g.C + c) * RS + t] = wr[(t * g.K + k) * g.C + c];
}

int64_t tap_offset(int64_t t, const ConvGeom& g, const Shifted& sh) { return (t / g.S) * sh.Wp + t % g.S; }

// One image, taps already packed in wr. ws: xpad (C*Lp) | wr (RS*K*C) | ypad (K*J).
void shifted_forward(float* y, const float* x, const float* b, const ConvGeom& g, float* ws) {
  const Shifted sh(g);
  const int64_t RS = g.R * g.S, P = g.P(), Q = g.Q();
  float *xp = ws, *wr = xp + g.C * sh.Lp, *yp = wr + RS * g.K * g.C;
  pad_image(xp, x, g, sh);
  for (int64_t t = 0; t < RS; ++t)
    gemm<float>(false, false, g.K, sh.J, g.C, 1.f, wr + t * g.K * g.C, g.C, xp + tap_offset(t, g, sh), sh.Lp,
                t == 0 ? 0.f : 1.f, yp, sh.J);
  for (int64_t k = 0; k < g.K; ++k) {
    const float bk = b ? b[k] : 0.f;
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q) y[(k * P + p) * Q + q] = yp[k * sh.J + p * sh.Wp + q] + bk;
  }
}

// One image; dwr (RS*K*C) accumulates over images when accumulate is set.
// ws: xpad (C*Lp) | wr (RS*K*C) | dypad (K*J) | dwr (RS*K*C) | dxpad (C*Lp).
void shifted_backward(float* dx, float* dwr, const float* dy, const float* x, const float* wr, bool accumulate,
                      const ConvGeom& g, float* xp, float* dyp, float* dxp) {
  const Shifted sh(g);
  const int64_t RS = g.R * g.S, P = g.P(), Q = g.Q();
  for (int64_t k = 0; k < g.K; ++k)
    for (int64_t p = 0; p < P; ++p) {
      float* d = dyp + k * sh.J + p * sh.Wp;
      std::memcpy(d, dy + (k * P + p) * Q, sizeof(float) * Q);
      std::fill(d + Q, d + sh.Wp, 0.f);  // junk columns carry no gradient
    }
  if (dwr) {  // dW_rs (K, C) += dypad (K, J) xpad_shifted^T (J, C)
    pad_image(xp, x, g, sh);
    for (int64_t t = 0; t < RS; ++t)
      gemm<float>(false, true, g.K, g.C, sh.J, 1.f, dyp, sh.J, xp + tap_offset(t, g, sh), sh.Lp,
                  accumulate ? 1.f : 0.f, dwr + t * g.K * g.C, g.C);
  }
  if (dx) {  // dxpad[:, off_rs + j] += W_rs^T (C, K) dypad (K, J), then crop the padding
    std::fill(dxp, dxp + g.C * sh.Lp, 0.f);
    for (int64_t t = 0; t < RS; ++t)
      gemm<float>(true, false, g.C, sh.J, g.K, 1.f, wr + t * g.K * g.C, g.C, dyp, sh.J, 1.f,
                  dxp + tap_offset(t, g, sh), sh.Lp);
    for (int64_t c = 0; c < g.C; ++c)
      for (int64_t h = 0; h < g.H; ++h)
        std::memcpy(dx + (c * g.H + h) * g.W, dxp + c * sh.Lp + (h + g.pad) * sh.Wp + g.pad, sizeof(float) * g.W);
  }
}

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

const char* conv2d_path(const ConvGeom& g, bool forward) {
  if (path_of(g) == Path::Direct3x3) {
    if (forward) return conv2d_winograd_applies(g) ? "winograd" : "direct3x3";
    const bool dx = conv2d_winograd_applies_data_grad(g), dw = conv2d_winograd_applies_weight_grad(g);
    return dx && dw ? "winograd dx, dw" : dx ? "direct3x3, winograd dx" : dw ? "direct3x3, winograd dw" : "direct3x3";
  }
  if (forward && use_kvec(g)) return "kvec";
  if (forward && conv2d_pointwise_applies(g)) return "direct1x1";
  switch (path_of(g)) {
    case Path::Direct3x3: return "direct3x3";
    case Path::PerImage: return "per_image";
    case Path::Pointwise: return "pointwise";
    case Path::Shifted: return "shifted";
    case Path::Im2col: break;
  }
  return "im2col";
}

int64_t conv2d_workspace(const ConvGeom& g) {
  const int64_t G = conv2d_group(g), PQ = g.P() * g.Q(), CRS = g.C * g.R * g.S;
  // forward only: the k-vectorised and the direct 1x1 kernels
  const int64_t kvec = use_kvec(g) ? conv2d_kvec_workspace(g)
                       : conv2d_pointwise_applies(g) ? conv2d_pointwise_workspace(g)
                                                     : 0;
  switch (path_of(g)) {
    case Path::Direct3x3:
      return conv2d_winograd_applies(g) || conv2d_winograd_applies_data_grad(g) || conv2d_winograd_applies_weight_grad(g)
                 ? std::max(conv2d_direct_workspace(g), conv2d_winograd_workspace(g))
                 : conv2d_direct_workspace(g);
    case Path::PerImage: return std::max(kvec, per_image_workspace(g));
    case Path::Pointwise: return kvec;
    case Path::Shifted: {  // the backward's; the forward takes the k-vectorised kernel when it applies
      const Shifted sh(g);
      return std::max(kvec, 2 * g.C * sh.Lp + 2 * g.R * g.S * g.K * g.C + g.K * sh.J);
    }
    case Path::Im2col: break;
  }
  return std::max(kvec, CRS * G * PQ + (G > 1 ? g.K * G * PQ : 0));  // col | the grouped GEMM's output / dy
}

namespace {
// Every forward path but Direct3x3.
void conv2d_forward_gemm(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws) {
  const int64_t G = conv2d_group(g), PQ = g.P() * g.Q(), CRS = g.C * g.R * g.S;
  const int64_t CHW = g.C * g.H * g.W, KPQ = g.K * PQ;
  const Path path = path_of(g);
  if (use_kvec(g)) return conv2d_kvec_forward(y, x, w, b, g, ws);
  if (path == Path::PerImage) return per_image_forward(y, x, w, b, g, ws);
  float* col = ws;
  float* tmp = G > 1 ? ws + CRS * G * PQ : nullptr;  // the grouped GEMM's output / dy
  for (int64_t n0 = 0; n0 < g.N; n0 += G) {
    const int64_t cnt = std::min(G, g.N - n0), cols = cnt * PQ;
    if (path == Path::Shifted) {
      if (n0 == 0) pack_taps(ws + g.C * Shifted(g).Lp, w, g);  // once per call: the wr slot of ws
      shifted_forward(y + n0 * KPQ, x + n0 * CHW, b, g, ws);
      continue;
    }
    const float* B = x + n0 * CHW;  // Pointwise: x_n (C, HW) is the matrix
    if (path == Path::Im2col) {
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
}  // namespace

void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                    bool relu) {
  if (path_of(g) == Path::Direct3x3)
    return conv2d_winograd_applies(g) ? conv2d_winograd_forward(y, x, w, b, g, ws, relu)
                                      : conv2d_direct_forward(y, x, w, b, g, ws, relu);
  if (conv2d_pointwise_applies(g)) return conv2d_pointwise_forward(y, x, w, b, g, ws, relu);
  conv2d_forward_gemm(y, x, w, b, g, ws);
  if (relu) relu_forward(y, y, g.N * g.K * g.P() * g.Q());  // a second pass on the GEMM paths
}

void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvGeom& g, float* ws) {
  const int64_t G = conv2d_group(g), PQ = g.P() * g.Q(), CRS = g.C * g.R * g.S;
  const int64_t CHW = g.C * g.H * g.W, KPQ = g.K * PQ;
  const Path path = path_of(g);
  if (dw && g.N == 0) std::fill(dw, dw + g.K * CRS, 0.f);  // no image, no GEMM to write it
  if (path == Path::Direct3x3) {  // each gradient by Winograd where it applies (one after another: ws is shared)
    const bool wdx = dx && conv2d_winograd_applies_data_grad(g), wdw = dw && conv2d_winograd_applies_weight_grad(g);
    if ((dx && !wdx) || (dw && !wdw) || db) conv2d_direct_backward(wdx ? nullptr : dx, wdw ? nullptr : dw, db, dy, x, w, g, ws);
    if (wdw) conv2d_winograd_backward_weight(dw, dy, x, g, ws);
    if (wdx) conv2d_winograd_backward_data(dx, dy, w, g, ws);
    return;
  }
  if (path == Path::PerImage) {
    per_image_backward(dx, dw, dy, x, w, g, ws);
    if (db) bias_backward(db, dy, g.N, g.K, PQ);
    return;
  }

  if (path == Path::Shifted) {
    const Shifted sh(g);
    const int64_t RSKC = g.R * g.S * g.K * g.C;
    float *xp = ws, *wr = xp + g.C * sh.Lp, *dyp = wr + RSKC, *dwr = dyp + g.K * sh.J, *dxp = dwr + RSKC;
    if (dx) pack_taps(wr, w, g);
    for (int64_t n = 0; n < g.N; ++n)
      shifted_backward(dx ? dx + n * CHW : nullptr, dw ? dwr : nullptr, dy + n * KPQ, x ? x + n * CHW : nullptr, wr,
                       n > 0, g, xp, dyp, dxp);
    if (dw && g.N > 0) unpack_taps(dw, dwr, g);
    if (db) bias_backward(db, dy, g.N, g.K, PQ);  // after the GEMMs (OpenMP, see above)
    return;
  }

  float* col = ws;
  float* tmp = G > 1 ? ws + CRS * G * PQ : nullptr;  // the grouped GEMM's output / dy
  for (int64_t n0 = 0; n0 < g.N; n0 += G) {
    const int64_t cnt = std::min(G, g.N - n0), cols = cnt * PQ;
    const float* dyg = dy + n0 * KPQ;  // (K, cols)
    if (G > 1) {
      gather(tmp, dyg, cnt, g.K, PQ);
      dyg = tmp;
    }
    if (dw) {  // dW (K, CRS) += dy_g (K, cols) col^T (cols, CRS)
      const float* B = x + n0 * CHW;
      if (path == Path::Im2col) {
        im2col(col, x + n0 * CHW, cnt, g);
        B = col;
      }
      gemm<float>(false, true, g.K, CRS, cols, 1.f, dyg, cols, B, cols, n0 == 0 ? 0.f : 1.f, dw, CRS);
    }
    if (dx) {  // dcol (CRS, cols) = W^T (CRS, K) dy_g (K, cols), then folded into dx
      float* out = path == Path::Pointwise ? dx + n0 * CHW : col;
      gemm<float>(true, false, CRS, cols, g.K, 1.f, w, CRS, dyg, cols, 0.f, out, cols);
      if (path == Path::Im2col) col2im(dx + n0 * CHW, col, cnt, g);
    }
  }
  if (db) bias_backward(db, dy, g.N, g.K, PQ);
}

}  // namespace nimbus::cpu
