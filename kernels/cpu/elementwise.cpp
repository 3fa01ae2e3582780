// elementwise.cpp: pointwise CPU kernels (see elementwise.h).
#include "kernels/cpu/elementwise.h"

#include <cstring>
#include <limits>

#include "kernels/common/dihedral.h"
#include "kernels/common/parallel.h"
#include "kernels/common/unary_math.h"

namespace nimbus::cpu {

template <typename T>
void fill(T* y, T value, int64_t n) {
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = value;
}

template <typename T>
void add_inplace(T* y, const T* x, int64_t n) {
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] + x[i];
}

template <typename T>
void relu_forward(T* y, const T* x, int64_t n) {
#pragma omp parallel for simd if (n > kParallelGrain)
  // Written as "x < 0 ? 0 : x" so a NaN passes through, as in PyTorch: a diverged
  // network must show NaN in its loss, not silently turn it into zeros.
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < T(0) ? T(0) : x[i];
}

template <typename T>
void relu_backward(T* dx, const T* dy, const T* y, int64_t n) {
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] > T(0) ? dy[i] : T(0);
}

template <typename T>
void add(T* y, const T* a, const T* b, int64_t n) {
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

template <typename T>
void scale(T* y, const T* x, compute_t<T> s, int64_t n) {
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = s * x[i];
}

template <typename T>
void add_relu(T* y, const T* a, const T* b, int64_t n) {
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    const T v = a[i] + b[i];
    y[i] = v < T(0) ? T(0) : v;  // relu_forward's rule: a NaN passes through
  }
}

template <typename T>
void add_scaled(T* y, const T* a, const T* b, compute_t<T> s, int64_t n) {
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + s * b[i];
}

template <typename T>
void input_norm(T* y, const T* x, const float* mean, const float* std, float scale, int64_t N, int64_t C,
                int64_t HW) {
  const T sc = T(scale);
#pragma omp parallel for collapse(2) if (N * C * HW > kParallelGrain)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const T m = T(mean[c]), s = T(std[c]);
      const T* xs = x + (n * C + c) * HW;
      T* ys = y + (n * C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) {
        const T v = xs[i];
        const T r = (v < T(0) ? T(0) : (sc < v ? sc : v)) / sc;  // std::clamp's rule: a NaN stays NaN
        ys[i] = (r - m) / s;
      }
    }
}
template <typename T>
void band_affine(T* y, const T* x, const float* p, int64_t N, int64_t C, int64_t HW) {
#pragma omp parallel for collapse(2) if (N * C * HW > kParallelGrain)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const T lo = T(p[c]), hi = T(p[C + c]), sub = T(p[2 * C + c]), mul = T(p[3 * C + c]), div = T(p[4 * C + c]);
      const T* xs = x + (n * C + c) * HW;
      T* ys = y + (n * C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) {
        const T v = xs[i];
        ys[i] = mul * ((v < lo ? lo : (hi < v ? hi : v)) - sub) / div;  // std::clamp's rule: a NaN stays NaN
      }
    }
}
template <typename T>
void flip_rotate(T* y, const T* x, const float* code, int64_t N, int64_t C, int64_t S) {
#pragma omp parallel for collapse(2) if (N * C * S * S > kParallelGrain)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const float k = code[n];
      const bool valid = k >= 0 && k < float(kDihedralCodes) && k == float(int(k));  // NaN fails every test
      const T* src = x + (n * C + c) * S * S;
      T* dst = y + (n * C + c) * S * S;
      for (int64_t i = 0; i < S; ++i)
        for (int64_t j = 0; j < S; ++j) {
          int64_t sy = 0, sx = 0;
          if (valid) dihedral_source(int(k), S, S, i, j, sy, sx);
          dst[i * S + j] = valid ? src[sy * S + sx] : std::numeric_limits<T>::quiet_NaN();
        }
    }
}
template void flip_rotate<float>(float*, const float*, const float*, int64_t, int64_t, int64_t);
template void flip_rotate<double>(double*, const double*, const float*, int64_t, int64_t, int64_t);

template void band_affine<float>(float*, const float*, const float*, int64_t, int64_t, int64_t);
template void band_affine<double>(double*, const double*, const float*, int64_t, int64_t, int64_t);

template void input_norm<float>(float*, const float*, const float*, const float*, float, int64_t, int64_t, int64_t);
template void input_norm<double>(double*, const double*, const float*, const float*, float, int64_t, int64_t,
                                 int64_t);

template <typename T>
void copy_rows(T* dst, int64_t dst_stride, const T* src, int64_t src_stride, int64_t rows, int64_t len) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * dst_stride, src + r * src_stride, sizeof(T) * size_t(len));
}

// The ops of unary_ops.def: the formula in C (float for float and bfloat16, double for double).
#define NIMBUS_UNARY(name, f, df)                                           \
  template <typename T>                                                     \
  void name##_forward(T* y, const T* xs, int64_t n) {                       \
    _Pragma("omp parallel for simd if (n > kParallelGrain)")                \
    for (int64_t i = 0; i < n; ++i) {                                        \
      const compute_t<T> x = xs[i];                                         \
      y[i] = f;                                                             \
    }                                                                       \
  }                                                                         \
  template <typename T>                                                     \
  void name##_backward(T* dx, const T* dy, const T* xs, int64_t n) {        \
    _Pragma("omp parallel for simd if (n > kParallelGrain)")                \
    for (int64_t i = 0; i < n; ++i) {                                        \
      const compute_t<T> x = xs[i];                                         \
      dx[i] = compute_t<T>(dy[i]) * (df);                                   \
    }                                                                       \
  }
#include "kernels/common/unary_ops.def"
#undef NIMBUS_UNARY

#define NIMBUS_INSTANTIATE(T)                                                             \
  template void add_relu<T>(T*, const T*, const T*, int64_t);                            \
  template void add_scaled<T>(T*, const T*, const T*, compute_t<T>, int64_t);             \
  template void relu_forward<T>(T*, const T*, int64_t);                                  \
  template void relu_backward<T>(T*, const T*, const T*, int64_t);                        \
  template void add<T>(T*, const T*, const T*, int64_t);                                 \
  template void scale<T>(T*, const T*, compute_t<T>, int64_t);                            \
  template void add_inplace<T>(T*, const T*, int64_t);                                   \
  template void copy_rows<T>(T*, int64_t, const T*, int64_t, int64_t, int64_t);
NIMBUS_INSTANTIATE(float)
NIMBUS_INSTANTIATE(double)
NIMBUS_INSTANTIATE(bfloat16)
#undef NIMBUS_INSTANTIATE

#define NIMBUS_UNARY(name, f, df)                                                        \
  template void name##_forward<float>(float*, const float*, int64_t);                    \
  template void name##_forward<double>(double*, const double*, int64_t);                 \
  template void name##_forward<bfloat16>(bfloat16*, const bfloat16*, int64_t);           \
  template void name##_backward<float>(float*, const float*, const float*, int64_t);     \
  template void name##_backward<double>(double*, const double*, const double*, int64_t); \
  template void name##_backward<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, int64_t);
#include "kernels/common/unary_ops.def"
#undef NIMBUS_UNARY

template void fill<float>(float*, float, int64_t);
template void fill<double>(double*, double, int64_t);

}  // namespace nimbus::cpu
