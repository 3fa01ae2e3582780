// elementwise.cpp: pointwise CPU kernels (see elementwise.h).
#include "kernels/cpu/elementwise.h"

#include "kernels/common/parallel.h"

namespace nimbus::cpu {

template <typename T>
void fill(T* y, T value, int64_t n) {
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = value;
}

template <typename T>
void add_inplace(T* y, const T* x, int64_t n) {
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
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
void scale(T* y, const T* x, T s, int64_t n) {
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
void add_scaled(T* y, const T* a, const T* b, T s, int64_t n) {
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + s * b[i];
}

#define NIMBUS_INSTANTIATE(T)                                      \
  template void add_relu<T>(T*, const T*, const T*, int64_t);     \
  template void add_scaled<T>(T*, const T*, const T*, T, int64_t); \
  template void relu_forward<T>(T*, const T*, int64_t);           \
  template void relu_backward<T>(T*, const T*, const T*, int64_t); \
  template void add<T>(T*, const T*, const T*, int64_t);          \
  template void scale<T>(T*, const T*, T, int64_t);
NIMBUS_INSTANTIATE(float)
NIMBUS_INSTANTIATE(double)
#undef NIMBUS_INSTANTIATE

template void fill<float>(float*, float, int64_t);
template void fill<double>(double*, double, int64_t);
template void add_inplace<float>(float*, const float*, int64_t);
template void add_inplace<double>(double*, const double*, int64_t);

}  // namespace nimbus::cpu
