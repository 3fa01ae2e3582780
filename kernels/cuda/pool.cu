/* pool.cu: max pooling and global average pooling, forward and backward.
 *
 * max_pool2d forward: one thread per output, the window's argmax by the CPU kernel's rule
 *   (kernels/common/pool_window.h).
 * max_pool2d backward: one thread per INPUT cell, gathering dy from every window that covers it
 *   and picked it (the argmax is recomputed from x), windows in increasing (p, q) order: the same
 *   sums in the same order as the CPU kernel's scatter, and no atomics.
 * global_avg_pool: one thread per plane sums its hw values in order (forward); backward spreads
 *   dy / hw. All results are independent of thread and block order. T: float or bfloat16 (sums in
 *   float, rounded once). CPU twin: kernels/cpu/pool.h.
 */
#include "kernels/cuda/pool.h"

#include "kernels/common/pool_window.h"
#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

struct PoolDims {
  int64_t planes, H, W, P, Q, kernel, stride, pad;
};

static PoolDims dims(const PoolGeom& g) { return {g.N * g.C, g.H, g.W, g.P(), g.Q(), g.kernel, g.stride, g.pad}; }

template <typename T>
__global__ void max_pool2d_forward_kernel(T* y, const T* x, PoolDims d) {
  const int64_t PQ = d.P * d.Q, n = d.planes * PQ;
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const T* plane = x + (i / PQ) * d.H * d.W;
    const int64_t a = window_argmax(plane, (i % PQ) / d.Q, i % d.Q, d);
    y[i] = a < 0 ? T(-INFINITY) : plane[a];
  }
}

template <typename T>
__global__ void max_pool2d_backward_kernel(T* dx, const T* dy, const T* x, PoolDims d) {
  const int64_t HW = d.H * d.W, n = d.planes * HW;
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const int64_t pl = i / HW, cell = i % HW, h = cell / d.W, w = cell % d.W;
    const T* plane = x + pl * HW;
    const T* dyp = dy + pl * d.P * d.Q;
    // Windows covering row h: p*stride - pad <= h <= p*stride - pad + kernel - 1.
    const int64_t hp = h + d.pad, wp = w + d.pad;
    const int64_t p0 = hp < d.kernel ? 0 : (hp - d.kernel) / d.stride + 1,
                  p1 = hp / d.stride < d.P ? hp / d.stride : d.P - 1;
    const int64_t q0 = wp < d.kernel ? 0 : (wp - d.kernel) / d.stride + 1,
                  q1 = wp / d.stride < d.Q ? wp / d.stride : d.Q - 1;
    float acc = 0.0f;
    for (int64_t p = p0; p <= p1; ++p)
      for (int64_t q = q0; q <= q1; ++q)
        if (window_argmax(plane, p, q, d) == cell) acc += float(dyp[p * d.Q + q]);
    dx[i] = acc;
  }
}

template <typename T>
__global__ void global_avg_pool_forward_kernel(T* y, const T* x, int64_t planes, int64_t hw) {
  for (int64_t pl = grid_first(); pl < planes; pl += grid_step()) {
    float acc = 0.0f;
    for (int64_t i = 0; i < hw; ++i) acc += float(x[pl * hw + i]);
    y[pl] = acc / float(hw);
  }
}

template <typename T>
__global__ void global_avg_pool_backward_kernel(T* dx, const T* dy, int64_t hw, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) dx[i] = float(dy[i / hw]) / float(hw);
}

template <typename T>
void max_pool2d_forward(T* y, const T* x, const PoolGeom& g, int block) {
  launch_n("cuda::max_pool2d_forward", max_pool2d_forward_kernel<T>, g.N * g.C * g.P() * g.Q(), block, y, x, dims(g));
}

template <typename T>
void max_pool2d_backward(T* dx, const T* dy, const T* x, const PoolGeom& g, int block) {
  launch_n("cuda::max_pool2d_backward", max_pool2d_backward_kernel<T>, g.N * g.C * g.H * g.W, block, dx, dy, x,
           dims(g));
}

template <typename T>
void global_avg_pool_forward(T* y, const T* x, int64_t planes, int64_t hw, int block) {
  launch_n("cuda::global_avg_pool_forward", global_avg_pool_forward_kernel<T>, planes, block, y, x, planes, hw);
}

template <typename T>
void global_avg_pool_backward(T* dx, const T* dy, int64_t planes, int64_t hw, int block) {
  launch_n("cuda::global_avg_pool_backward", global_avg_pool_backward_kernel<T>, planes * hw, block, dx, dy, hw,
           planes * hw);
}

#define NIMBUS_INSTANTIATE(T)                                                                     \
  template void max_pool2d_forward<T>(T*, const T*, const PoolGeom&, int);                        \
  template void max_pool2d_backward<T>(T*, const T*, const T*, const PoolGeom&, int);             \
  template void global_avg_pool_forward<T>(T*, const T*, int64_t, int64_t, int);                  \
  template void global_avg_pool_backward<T>(T*, const T*, int64_t, int64_t, int);
NIMBUS_INSTANTIATE(float)
NIMBUS_INSTANTIATE(bfloat16)
#undef NIMBUS_INSTANTIATE

}  // namespace nimbus::cuda
