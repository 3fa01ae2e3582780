/* pool.h: launchers for the CUDA pooling kernels (pool.cu), callable from plain C++.
 *
 * Same geometry and semantics as kernels/cpu/pool.h (PoolGeom; first max wins ties, NaN wins).
 * Device pointers; backward writes (=) dx.
 */
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"
#include "kernels/common/geometry.h"  // PoolGeom

namespace nimbus::cuda {

using cpu::PoolGeom;

// T: float or bfloat16.
template <typename T> void max_pool2d_forward(T* y, const T* x, const PoolGeom& g, int block = 256);
template <typename T> void max_pool2d_backward(T* dx, const T* dy, const T* x, const PoolGeom& g, int block = 256);
// planes = N*C, hw = H*W.
template <typename T> void global_avg_pool_forward(T* y, const T* x, int64_t planes, int64_t hw, int block = 256);
template <typename T> void global_avg_pool_backward(T* dx, const T* dy, int64_t planes, int64_t hw, int block = 256);

}  // namespace nimbus::cuda
