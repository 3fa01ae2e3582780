// pool.cpp: max and global-average pooling (see pool.h).
#include "kernels/cpu/pool.h"

#include <cmath>

#include "kernels/cpu/parallel.h"

namespace nimbus::cpu {

namespace {
// Index (into the H*W plane) of the window's max; -1 only if the window lies
// entirely in padding, which the op rules out (pad <= kernel/2).
template <typename T>
int64_t window_argmax(const T* plane, int64_t p, int64_t q, const PoolGeom& g) {
  int64_t best = -1;
  T best_v = T(0);
  for (int64_t r = 0; r < g.kernel; ++r) {
    const int64_t ih = p * g.stride - g.pad + r;
    if (ih < 0 || ih >= g.H) continue;
    for (int64_t s = 0; s < g.kernel; ++s) {
      const int64_t iw = q * g.stride - g.pad + s;
      if (iw < 0 || iw >= g.W) continue;
      const T v = plane[ih * g.W + iw];
      // Strictly greater keeps the first of equal maxima; a NaN always wins (PyTorch's rule).
      if (best < 0 || v > best_v || std::isnan(v)) {
        best = ih * g.W + iw;
        best_v = v;
      }
    }
  }
  return best;
}

// The same max for a window that lies inside the plane, without the bounds
// checks (the forward's common case: only border windows touch padding).
template <typename T>
T window_max_inside(const T* plane, int64_t ih0, int64_t iw0, const PoolGeom& g) {
  T m = plane[ih0 * g.W + iw0];
  for (int64_t r = 0; r < g.kernel; ++r)
    for (int64_t s = 0; s < g.kernel; ++s) {
      const T v = plane[(ih0 + r) * g.W + iw0 + s];
      if (v > m || std::isnan(v)) m = v;
    }
  return m;
}
}  // namespace

template <typename T>
void max_pool2d_forward(T* y, const T* x, const PoolGeom& g) {
  const int64_t P = g.P(), Q = g.Q(), planes = g.N * g.C;
#pragma omp parallel for if (planes * P * Q * g.kernel * g.kernel > kParallelGrain)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* xp = x + pl * g.H * g.W;
    T* yp = y + pl * P * Q;
    for (int64_t p = 0; p < P; ++p) {
      const int64_t ih0 = p * g.stride - g.pad;
      const bool rows_inside = ih0 >= 0 && ih0 + g.kernel <= g.H;
      for (int64_t q = 0; q < Q; ++q) {
        const int64_t iw0 = q * g.stride - g.pad;
        if (rows_inside && iw0 >= 0 && iw0 + g.kernel <= g.W) {
          yp[p * Q + q] = window_max_inside(xp, ih0, iw0, g);
        } else {
          const int64_t a = window_argmax(xp, p, q, g);
          yp[p * Q + q] = a < 0 ? T(-INFINITY) : xp[a];
        }
      }
    }
  }
}

template <typename T>
void max_pool2d_backward(T* dx, const T* dy, const T* x, const PoolGeom& g) {
  const int64_t P = g.P(), Q = g.Q(), planes = g.N * g.C, HW = g.H * g.W;
  // Windows overlap within a plane, so a plane belongs to one thread.
#pragma omp parallel for if (planes * P * Q * g.kernel * g.kernel > kParallelGrain)
  for (int64_t pl = 0; pl < planes; ++pl) {
    T* dxp = dx + pl * HW;
    const T* dyp = dy + pl * P * Q;
    for (int64_t i = 0; i < HW; ++i) dxp[i] = T(0);
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q) {
        const int64_t a = window_argmax(x + pl * HW, p, q, g);
        if (a >= 0) dxp[a] += dyp[p * Q + q];
      }
  }
}

template <typename T>
void global_avg_pool_forward(T* y, const T* x, int64_t planes, int64_t hw) {
#pragma omp parallel for if (planes * hw > kParallelGrain)
  for (int64_t pl = 0; pl < planes; ++pl) {
    T acc = 0;
    for (int64_t i = 0; i < hw; ++i) acc += x[pl * hw + i];
    y[pl] = acc / T(hw);
  }
}

template <typename T>
void global_avg_pool_backward(T* dx, const T* dy, int64_t planes, int64_t hw) {
#pragma omp parallel for if (planes * hw > kParallelGrain)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T d = dy[pl] / T(hw);
    for (int64_t i = 0; i < hw; ++i) dx[pl * hw + i] = d;
  }
}

#define NIMBUS_INSTANTIATE(T)                                                      \
  template void max_pool2d_forward<T>(T*, const T*, const PoolGeom&);             \
  template void max_pool2d_backward<T>(T*, const T*, const T*, const PoolGeom&);  \
  template void global_avg_pool_forward<T>(T*, const T*, int64_t, int64_t);       \
  template void global_avg_pool_backward<T>(T*, const T*, int64_t, int64_t);
NIMBUS_INSTANTIATE(float)
NIMBUS_INSTANTIATE(double)
#undef NIMBUS_INSTANTIATE

}  // namespace nimbus::cpu
