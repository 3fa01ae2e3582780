// pool.h: pooling kernels.
//
// max_pool2d: x (N,C,H,W) -> y (N,C,P,Q), P = (H + 2*pad - kernel)/stride + 1.
//   Each output is the max over its kernel x kernel window; padded cells never
//   win (PyTorch pads with -inf). The backward sends dy to the argmax of each
//   window, recomputed from x: ties go to the FIRST max in row-major window
//   order and NaN counts as the max, exactly as PyTorch picks its index.
// global_avg_pool: x (N,C,H,W) -> y (N,C), the mean of each H*W plane.
//
// Max pooling has plain serial references (one window at a time) and
// separable fast versions, parallel over the N*C planes, that the tests hold
// to them bit for bit; global_avg_pool (parallel over planes) is plain enough
// to be its own reference. The fast kernels also exist for bfloat16: the
// maxima are selections (exact), the sums run in float and round once.
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"
#include "kernels/common/geometry.h"  // PoolGeom

namespace nimbus::cpu {

// The reference: each window's max, one window at a time (window_argmax).
template <typename T> void max_pool2d_forward_ref(T* y, const T* x, const PoolGeom& g);
// The same values, separable (a row pass, then a column pass).
template <typename T> void max_pool2d_forward(T* y, const T* x, const PoolGeom& g);
// Writes dx (zero except at each window's argmax, where the dy of every window
// choosing that cell is summed).
template <typename T> void max_pool2d_backward(T* dx, const T* dy, const T* x, const PoolGeom& g);
// The same, one window at a time (the reference the fast version is held to).
template <typename T> void max_pool2d_backward_ref(T* dx, const T* dy, const T* x, const PoolGeom& g);

// planes = N*C, hw = H*W.
template <typename T> void global_avg_pool_forward(T* y, const T* x, int64_t planes, int64_t hw);
template <typename T> void global_avg_pool_backward(T* dx, const T* dy, int64_t planes, int64_t hw);

}  // namespace nimbus::cpu
