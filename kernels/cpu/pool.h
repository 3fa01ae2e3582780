// pool.h: pooling kernels.
//
// max_pool2d: x (N,C,H,W) -> y (N,C,P,Q), P = (H + 2*pad - kernel)/stride + 1.
//   Each output is the max over its kernel x kernel window; padded cells never
//   win (PyTorch pads with -inf). The backward sends dy to the argmax of each
//   window, recomputed from x: ties go to the FIRST max in row-major window
//   order and NaN counts as the max, exactly as PyTorch picks its index.
// global_avg_pool: x (N,C,H,W) -> y (N,C), the mean of each H*W plane.
//
// One implementation each: the loops are plain and already parallel over the
// N*C planes, so there is no separate fast path.
#pragma once
#include <cstdint>

namespace nimbus::cpu {

struct PoolGeom {
  int64_t N, C, H, W;
  int64_t kernel, stride, pad;
  int64_t P() const { return (H + 2 * pad - kernel) / stride + 1; }
  int64_t Q() const { return (W + 2 * pad - kernel) / stride + 1; }
};

template <typename T> void max_pool2d_forward(T* y, const T* x, const PoolGeom& g);
// Writes dx (zero except at each window's argmax, where the dy of every window
// choosing that cell is summed).
template <typename T> void max_pool2d_backward(T* dx, const T* dy, const T* x, const PoolGeom& g);

// planes = N*C, hw = H*W.
template <typename T> void global_avg_pool_forward(T* y, const T* x, int64_t planes, int64_t hw);
template <typename T> void global_avg_pool_backward(T* dx, const T* dy, int64_t planes, int64_t hw);

}  // namespace nimbus::cpu
