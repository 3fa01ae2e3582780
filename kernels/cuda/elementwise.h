/* elementwise.h: launchers for the pointwise CUDA kernels (elementwise.cu), callable from plain C++.
 *
 * All pointers are device pointers to n contiguous floats; `block` is the threads per block (a
 * multiple of 32, at most 1024). Same semantics and argument order as kernels/cpu/elementwise.h;
 * *_backward writes (=) its input gradient. Launch errors throw nimbus::Error.
 */
#pragma once
#include <cstdint>

namespace nimbus::cuda {

constexpr int kBlock = 256;

void fill(float* y, float value, int64_t n, int block = kBlock);
// y += x  (the gradient accumulator)
void add_inplace(float* y, const float* x, int64_t n, int block = kBlock);
// y = max(x, 0); dx = dy where y > 0 else 0
void relu_forward(float* y, const float* x, int64_t n, int block = kBlock);
void relu_backward(float* dx, const float* dy, const float* y, int64_t n, int block = kBlock);
// y = a + b
void add(float* y, const float* a, const float* b, int64_t n, int block = kBlock);
// y = s * x (y may alias x)
void scale(float* y, const float* x, float s, int64_t n, int block = kBlock);
// Fused: y = max(a + b, 0) (ResNet's block output; a NaN passes through), y = a + s * b (DSen2-CR's
// residual x + 0.1 F(x)); one pass each instead of two.
void add_relu(float* y, const float* a, const float* b, int64_t n, int block = kBlock);
void add_scaled(float* y, const float* a, const float* b, float s, int64_t n, int block = kBlock);

}  // namespace nimbus::cuda
