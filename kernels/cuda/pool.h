/* pool.h: launchers for the CUDA pooling kernels (pool.cu), callable from plain C++.
 *
 * Same geometry and semantics as kernels/cpu/pool.h (PoolGeom; first max wins ties, NaN wins).
 * Device pointers; backward writes (=) dx.
 */
#pragma once
#include <cstdint>

#include "kernels/common/geometry.h"  // PoolGeom

namespace nimbus::cuda {

using cpu::PoolGeom;

void max_pool2d_forward(float* y, const float* x, const PoolGeom& g, int block = 256);
void max_pool2d_backward(float* dx, const float* dy, const float* x, const PoolGeom& g, int block = 256);
// planes = N*C, hw = H*W.
void global_avg_pool_forward(float* y, const float* x, int64_t planes, int64_t hw, int block = 256);
void global_avg_pool_backward(float* dx, const float* dy, int64_t planes, int64_t hw, int block = 256);

}  // namespace nimbus::cuda
