/* elementwise.cu: pointwise kernels (one grid-stride loop each) and their launchers.
 *
 * Shapes: every buffer is n contiguous elements of T (float or bfloat16; a bfloat16 kernel computes
 * in float and rounds once, on store). Grid-stride, so a capped grid covers any n. No shared memory,
 * no barriers: each element is written by one thread, so the result does not depend on thread or
 * block order. CPU twins: kernels/cpu/elementwise.h.
 *
 * The arithmetic ones (add, scale, add_relu, add_scaled, relu and its backward, add_inplace) go
 * through map_kernel: when every pointer is 16-byte aligned (the caching allocator's blocks are) a
 * thread moves a 16-byte pack of each operand per step (4 floats or 8 bfloat16: one load or store
 * instruction instead of 4 or 8; memory-bound kernels need few, wide accesses to reach the HBM's
 * bandwidth), then the tail element by element; otherwise element by element throughout. The
 * element operation is the same functor either way, so the results are bitwise the same.
 */
#include "kernels/cuda/elementwise.h"

#include <cstdint>

#include "kernels/common/dihedral.h"
#include "kernels/common/unary_math.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/pack.cuh"
#include "kernels/cuda/tensor_core.h"  // load_vector, store_vector

namespace nimbus::cuda {

// ---------------------------------------------------------------------------------------------
// Kernels.
__global__ void fill_kernel(float* y, float value, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = value;
}

// ---- map_kernel: y[i] = op(a[i]) or op(a[i], b[i]) -------------------------------------------------

// One operand (b null) or two. vec: every pointer 16-byte aligned (the launcher checks).
template <typename T, typename Op>
__global__ void map_kernel(T* y, const T* a, const T* b, int64_t n, bool vec, Op op) {
  int64_t done = 0;
  if (vec) {
    constexpr int K = Pack<T>::K;
    const int64_t packs = n / K;
    for (int64_t p = grid_first(); p < packs; p += grid_step()) {
      const Pack<T> pa = load_vector<Pack<T>>(a + p * K);
      Pack<T> pb{}, py;
      if (b) pb = load_vector<Pack<T>>(b + p * K);
#pragma unroll
      for (int k = 0; k < K; ++k) py.v[k] = op(pa.v[k], pb.v[k]);
      store_vector(y + p * K, py);
    }
    done = packs * K;
  }
  for (int64_t i = done + grid_first(); i < n; i += grid_step()) y[i] = op(a[i], b ? b[i] : T{});
}


template <typename T, typename Op>
void launch_map(const char* what, T* y, const T* a, const T* b, int64_t n, int block, Op op) {
  launch_n(what, map_kernel<T, Op>, n, block, y, a, b, n, aligned16(y) && aligned16(a) && aligned16(b), op);
}

// The element operations (a, b); unary ones ignore b. In float, rounded once to T.
template <typename T>
struct AddOp {
  __device__ T operator()(T a, T b) const { return compute_t<T>(a) + compute_t<T>(b); }
};
template <typename T>
struct ReluOp {  // "x < 0 ? 0 : x": a NaN passes through (see kernels/cpu)
  __device__ T operator()(T x, T) const { return compute_t<T>(x) < 0.0f ? T(0.0f) : x; }
};
template <typename T>
struct ReluBackwardOp {  // (dy, y)
  __device__ T operator()(T dy, T y) const { return compute_t<T>(y) > 0.0f ? dy : T(0.0f); }
};
template <typename T>
struct ScaleOp {
  float s;
  __device__ T operator()(T x, T) const { return s * compute_t<T>(x); }
};
template <typename T>
struct AddReluOp {
  __device__ T operator()(T a, T b) const {
    const T v = compute_t<T>(a) + compute_t<T>(b);
    return compute_t<T>(v) < 0.0f ? T(0.0f) : v;  // relu_forward's rule: a NaN passes through
  }
};
template <typename T>
struct AddScaledOp {
  float s;
  __device__ T operator()(T a, T b) const { return compute_t<T>(a) + s * compute_t<T>(b); }
};

__global__ void input_norm_kernel(float* y, const float* x, const float* mean, const float* std, float scale,
                                  int64_t C, int64_t HW, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const int64_t c = (i / HW) % C;
    const float v = x[i];
    const float r = (v < 0.0f ? 0.0f : (scale < v ? scale : v)) / scale;  // a NaN stays NaN
    y[i] = (r - mean[c]) / std[c];
  }
}

__global__ void band_affine_kernel(float* y, const float* x, const float* p, int64_t C, int64_t HW, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const int64_t c = (i / HW) % C;
    const float lo = p[c], hi = p[C + c], v = x[i];
    y[i] = p[3 * C + c] * ((v < lo ? lo : (hi < v ? hi : v)) - p[2 * C + c]) / p[4 * C + c];  // a NaN stays NaN
  }
}

// One thread per output element; sample n's code decides where it reads from (dihedral.h).
__global__ void flip_rotate_kernel(float* y, const float* x, const float* code, int64_t C, int64_t S, int64_t n) {
  const int64_t plane = S * S;
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const float k = code[i / (C * plane)];
    const bool valid = k >= 0.0f && k < float(kDihedralCodes) && k == float(int(k));  // NaN fails every test
    const int64_t p = i % plane;
    int64_t sy = 0, sx = 0;
    if (valid) dihedral_source(int(k), S, S, p / S, p % S, sy, sx);
    y[i] = valid ? x[i - p + sy * S + sx] : __int_as_float(0x7fc00000);  // the quiet NaN
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
  launch_map("cuda::add_inplace", y, static_cast<const T*>(y), x, n, block, AddOp<T>{});
}

template <typename T>
void relu_forward(T* y, const T* x, int64_t n, int block) {
  launch_map("cuda::relu_forward", y, x, static_cast<const T*>(nullptr), n, block, ReluOp<T>{});
}

template <typename T>
void relu_backward(T* dx, const T* dy, const T* y, int64_t n, int block) {
  launch_map("cuda::relu_backward", dx, dy, y, n, block, ReluBackwardOp<T>{});
}

template <typename T>
void add(T* y, const T* a, const T* b, int64_t n, int block) {
  launch_map("cuda::add", y, a, b, n, block, AddOp<T>{});
}

template <typename T>
void scale(T* y, const T* x, float s, int64_t n, int block) {
  launch_map("cuda::scale", y, x, static_cast<const T*>(nullptr), n, block, ScaleOp<T>{s});
}

template <typename T>
void add_relu(T* y, const T* a, const T* b, int64_t n, int block) {
  launch_map("cuda::add_relu", y, a, b, n, block, AddReluOp<T>{});
}

template <typename T>
void add_scaled(T* y, const T* a, const T* b, float s, int64_t n, int block) {
  launch_map("cuda::add_scaled", y, a, b, n, block, AddScaledOp<T>{s});
}

void band_affine(float* y, const float* x, const float* p, int64_t N, int64_t C, int64_t HW, int block) {
  launch_n("cuda::band_affine", band_affine_kernel, N * C * HW, block, y, x, p, C, HW, N * C * HW);
}

void flip_rotate(float* y, const float* x, const float* code, int64_t N, int64_t C, int64_t S, int block) {
  launch_n("cuda::flip_rotate", flip_rotate_kernel, N * C * S * S, block, y, x, code, C, S, N * C * S * S);
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
