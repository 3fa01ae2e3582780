/* reduce.h: launchers for whole-buffer reductions (reduce.cu), callable from plain C++.
 *
 * out: device pointer to 1 float; x: device pointer to n floats; scratch: device buffer of at
 * least reduce_scratch_floats(n, block) floats for the per-block partial sums. Two passes and no
 * atomics, so the result is bitwise reproducible for a given (n, block), whatever the order
 * blocks run in. block: a multiple of 32, at most 1024.
 */
#pragma once
#include <cstdint>

#include "kernels/cuda/elementwise.h"  // kBlock

namespace nimbus::cuda {

int64_t reduce_scratch_floats(int64_t n, int block = kBlock);
// *out = sum_i x[i]   (0 for n == 0)
void sum(float* out, const float* x, int64_t n, float* scratch, int block = kBlock);
// *out = sum_i x[i] / n   (NaN for n == 0, like torch.mean of an empty tensor)
void mean(float* out, const float* x, int64_t n, float* scratch, int block = kBlock);

}  // namespace nimbus::cuda
