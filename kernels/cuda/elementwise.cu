/* elementwise.cu: pointwise kernels (one grid-stride loop each) and their launchers.
 *
 * Shapes: every buffer is n contiguous elements of T (float or bfloat16; a bfloat16 kernel computes
 * in float and rounds once, on store). One thread per element, grid-stride so a capped grid covers
 * any n. No shared memory, no barriers: each element is written by one thread, so the result does
 * not depend on thread or block order. CPU twins: kernels/cpu/elementwise.h.
 */
#include "kernels/cuda/elementwise.h"

#include "kernels/common/unary_math.h"
#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

// ---------------------------------------------------------------------------------------------
// Kernels.
__global__ void fill_kernel(float* y, float value, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = value;
}

template <typename T>
__global__ void add_inplace_kernel(T* y, const T* x, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = compute_t<T>(y[i]) + compute_t<T>(x[i]);
}

template <typename T>
__global__ void relu_forward_kernel(T* y, const T* x, int64_t n) {
  // "x < 0 ? 0 : x": a NaN passes through (see kernels/cpu)
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = compute_t<T>(x[i]) < 0.0f ? T(0.0f) : x[i];
}

template <typename T>
__global__ void relu_backward_kernel(T* dx, const T* dy, const T* y, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) dx[i] = compute_t<T>(y[i]) > 0.0f ? dy[i] : T(0.0f);
}

template <typename T>
__global__ void add_kernel(T* y, const T* a, const T* b, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = compute_t<T>(a[i]) + compute_t<T>(b[i]);
}

template <typename T>
__global__ void scale_kernel(T* y, const T* x, float s, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = s * compute_t<T>(x[i]);
}

template <typename T>
__global__ void add_relu_kernel(T* y, const T* a, const T* b, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const T v = compute_t<T>(a[i]) + compute_t<T>(b[i]);
    y[i] = compute_t<T>(v) < 0.0f ? T(0.0f) : v;  // relu_forward's rule: a NaN passes through
  }
}

template <typename T>
__global__ void add_scaled_kernel(T* y, const T* a, const T* b, float s, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = compute_t<T>(a[i]) + s * compute_t<T>(b[i]);
}

__global__ void input_norm_kernel(float* y, const float* x, const float* mean, const float* std, float scale,
                                  int64_t C, int64_t HW, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const int64_t c = (i / HW) % C;
    const float v = x[i];
    const float r = (v < 0.0f ? 0.0f : (scale < v ? scale : v)) / scale;  // a NaN stays NaN
    y[i] = (r - mean[c]) / std[c];
  }
}

// The ops of kernels/common/unary_ops.def: the formula in float.
#define NIMBUS_UNARY(name, f, df)                                                        \
  template <typename T>                                                                  \
  __global__ void name##_forward_kernel(T* y, const T* xs, int64_t n) {                  \
    for (int64_t i = grid_first(); i < n; i += grid_step()) {                            \
      const float x = xs[i];                                                             \
      y[i] = f;                                                                          \
    }                                                                                    \
  }                                                                                      \
  template <typename T>                                                                  \
  __global__ void name##_backward_kernel(T* dx, const T* dy, const T* xs, int64_t n) {   \
    for (int64_t i = grid_first(); i < n; i += grid_step()) {                            \
      const float x = xs[i];                                                             \
      dx[i] = float(dy[i]) * (df);                                                       \
    }                                                                                    \
  }
#include "kernels/common/unary_ops.def"
#undef NIMBUS_UNARY

// ---------------------------------------------------------------------------------------------
// Launchers.
void fill(float* y, float value, int64_t n, int block) {
  launch_n("cuda::fill", fill_kernel, n, block, y, value, n);
}

template <typename T>
void add_inplace(T* y, const T* x, int64_t n, int block) {
  launch_n("cuda::add_inplace", add_inplace_kernel<T>, n, block, y, x, n);
}

template <typename T>
void relu_forward(T* y, const T* x, int64_t n, int block) {
  launch_n("cuda::relu_forward", relu_forward_kernel<T>, n, block, y, x, n);
}

template <typename T>
void relu_backward(T* dx, const T* dy, const T* y, int64_t n, int block) {
  launch_n("cuda::relu_backward", relu_backward_kernel<T>, n, block, dx, dy, y, n);
}

template <typename T>
void add(T* y, const T* a, const T* b, int64_t n, int block) {
  launch_n("cuda::add", add_kernel<T>, n, block, y, a, b, n);
}

template <typename T>
void scale(T* y, const T* x, float s, int64_t n, int block) {
  launch_n("cuda::scale", scale_kernel<T>, n, block, y, x, s, n);
}

template <typename T>
void add_relu(T* y, const T* a, const T* b, int64_t n, int block) {
  launch_n("cuda::add_relu", add_relu_kernel<T>, n, block, y, a, b, n);
}

template <typename T>
void add_scaled(T* y, const T* a, const T* b, float s, int64_t n, int block) {
  launch_n("cuda::add_scaled", add_scaled_kernel<T>, n, block, y, a, b, s, n);
}

void input_norm(float* y, const float* x, const float* mean, const float* std, float scale, int64_t N, int64_t C,
                int64_t HW, int block) {
  launch_n("cuda::input_norm", input_norm_kernel, N * C * HW, block, y, x, mean, std, scale, C, HW, N * C * HW);
}

#define NIMBUS_UNARY(name, f, df)                                                            \
  template <typename T>                                                                      \
  void name##_forward(T* y, const T* x, int64_t n, int block) {                              \
    launch_n("cuda::" #name "_forward", name##_forward_kernel<T>, n, block, y, x, n);        \
  }                                                                                          \
  template <typename T>                                                                      \
  void name##_backward(T* dx, const T* dy, const T* x, int64_t n, int block) {               \
    launch_n("cuda::" #name "_backward", name##_backward_kernel<T>, n, block, dx, dy, x, n); \
  }
#include "kernels/common/unary_ops.def"
#undef NIMBUS_UNARY

#define NIMBUS_INSTANTIATE(T)                                                    \
  template void add_inplace<T>(T*, const T*, int64_t, int);                      \
  template void relu_forward<T>(T*, const T*, int64_t, int);                     \
  template void relu_backward<T>(T*, const T*, const T*, int64_t, int);          \
  template void add<T>(T*, const T*, const T*, int64_t, int);                    \
  template void scale<T>(T*, const T*, float, int64_t, int);                     \
  template void add_relu<T>(T*, const T*, const T*, int64_t, int);               \
  template void add_scaled<T>(T*, const T*, const T*, float, int64_t, int);
NIMBUS_INSTANTIATE(float)
NIMBUS_INSTANTIATE(bfloat16)
#undef NIMBUS_INSTANTIATE

#define NIMBUS_UNARY(name, f, df)                                                          \
  template void name##_forward<float>(float*, const float*, int64_t, int);                 \
  template void name##_forward<bfloat16>(bfloat16*, const bfloat16*, int64_t, int);        \
  template void name##_backward<float>(float*, const float*, const float*, int64_t, int);  \
  template void name##_backward<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, int64_t, int);
#include "kernels/common/unary_ops.def"
#undef NIMBUS_UNARY

}  // namespace nimbus::cuda
