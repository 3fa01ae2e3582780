/* elementwise.h: launchers for the pointwise CUDA kernels (elementwise.cu), callable from plain C++.
 *
 * All pointers are device pointers to n contiguous elements of T (float or bfloat16: the kernel
 * computes in float and rounds once, on store); `block` is the threads per block (a multiple of
 * 32, at most 1024). Same semantics and argument order as kernels/cpu/elementwise.h; *_backward
 * writes (=) its input gradient. Launch errors throw nimbus::Error.
 */
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"

namespace nimbus::cuda {

constexpr int kBlock = 256;

void fill(float* y, float value, int64_t n, int block = kBlock);
// y += x  (the gradient accumulator)
template <typename T> void add_inplace(T* y, const T* x, int64_t n, int block = kBlock);
// y = max(x, 0); dx = dy where y > 0 else 0
template <typename T> void relu_forward(T* y, const T* x, int64_t n, int block = kBlock);
template <typename T> void relu_backward(T* dx, const T* dy, const T* y, int64_t n, int block = kBlock);
// y = a + b
template <typename T> void add(T* y, const T* a, const T* b, int64_t n, int block = kBlock);
// y = s * x (y may alias x)
template <typename T> void scale(T* y, const T* x, float s, int64_t n, int block = kBlock);
// Fused: y = max(a + b, 0) (ResNet's block output; a NaN passes through), y = a + s * b (DSen2-CR's
// residual x + 0.1 F(x)); one pass each instead of two.
template <typename T> void add_relu(T* y, const T* a, const T* b, int64_t n, int block = kBlock);
template <typename T> void add_scaled(T* y, const T* a, const T* b, float s, int64_t n, int block = kBlock);
// Input normalisation of (N, C, HW) images: y = (clamp(x, 0, scale) / scale - mean[c]) / std[c]
// (kernels/cpu/elementwise.h); mean and std are C device floats.
// y = mul[c] (clamp(x, lo[c], hi[c]) - sub[c]) / div[c] per band (kernels/cpu/elementwise.h band_affine).
void band_affine(float* y, const float* x, const float* p, int64_t N, int64_t C, int64_t HW, int block = kBlock);
void input_norm(float* y, const float* x, const float* mean, const float* std, float scale, int64_t N, int64_t C,
                int64_t HW, int block = kBlock);
// Sample n of (N, C, S, S) flipped and turned by code[n] (kernels/cpu/elementwise.h flip_rotate).
void flip_rotate(float* y, const float* x, const float* code, int64_t N, int64_t C, int64_t S, int block = kBlock);

// The formula-defined ops of kernels/common/unary_ops.def: y = f(x); dx = dy f'(x).
#define NIMBUS_UNARY(name, f, df)                                                        \
  template <typename T> void name##_forward(T* y, const T* x, int64_t n, int block = kBlock); \
  template <typename T> void name##_backward(T* dx, const T* dy, const T* x, int64_t n, int block = kBlock);
#include "kernels/common/unary_ops.def"
#undef NIMBUS_UNARY

}  // namespace nimbus::cuda
