// elementwise.h: CPU kernels for pointwise ops over n contiguous elements.
//
// Each op: forward and backward side by side. Templated on T: float and bfloat16 for the engine
// (a bfloat16 kernel computes in float and rounds once, on store; scalars are compute_t<T>, float),
// double for the tests' references and finite-difference checks.
// Gradient convention: *_backward writes (=) its input-gradient buffers.
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"

namespace nimbus::cpu {

template <typename T> void fill(T* y, T value, int64_t n);
// y += x  (the gradient accumulator)
template <typename T> void add_inplace(T* y, const T* x, int64_t n);

// ReLU: y = max(x, 0). Backward from the output: dx = dy where y > 0, else 0
// (the derivative at 0 is taken as 0, as PyTorch does).
template <typename T> void relu_forward(T* y, const T* x, int64_t n);
template <typename T> void relu_backward(T* dx, const T* dy, const T* y, int64_t n);

// y = a + b. Its backward is the identity for both inputs (no kernel needed).
template <typename T> void add(T* y, const T* a, const T* b, int64_t n);
// y = s * x; also the backward of itself (dx = s * dy). y may alias x.
template <typename T> void scale(T* y, const T* x, compute_t<T> s, int64_t n);

// Fused pairs, one pass instead of two (the residual connections):
// y = relu(a + b) (ResNet; backward: relu_backward, then to both inputs), and
// y = a + s * b (DSen2-CR's scaled residual; backward: dy to a, s * dy to b).
template <typename T> void add_relu(T* y, const T* a, const T* b, int64_t n);
template <typename T> void add_scaled(T* y, const T* a, const T* b, compute_t<T> s, int64_t n);

// Input normalisation of N images of C channels of HW pixels (the classifier's InputNorm):
// y = (clamp(x, 0, scale) / scale - mean[c]) / std[c]; a NaN stays NaN. No backward: it applies to
// data, not to anything trained. Float32 only (with double for the references).
template <typename T>
void input_norm(T* y, const T* x, const float* mean, const float* std, float scale, int64_t N, int64_t C, int64_t HW);
// y = mul[c] (clamp(x, lo[c], hi[c]) - sub[c]) / div[c] per band c, p = lo, hi, sub, mul, div (C each):
// data/normalize.h's formulas, term for term, so the results are bitwise data::normalize_s2 / _s1's.
template <typename T>
void band_affine(T* y, const T* x, const float* p, int64_t N, int64_t C, int64_t HW);

// The training augmentation of N square images of C channels of S x S pixels: sample n flipped and
// turned by code[n] (kernels/common/dihedral.h; y != x); a code that is not an integer in 0..11 fills
// the sample with NaN. A permutation: every backend gives the same bits.
template <typename T>
void flip_rotate(T* y, const T* x, const float* code, int64_t N, int64_t C, int64_t S);

// dst rows of `len` elements `dst_stride` apart <- src rows `src_stride` apart (concat_channels).
template <typename T>
void copy_rows(T* dst, int64_t dst_stride, const T* src, int64_t src_stride, int64_t rows, int64_t len);

// The formula-defined ops of kernels/common/unary_ops.def: y = f(x); dx = dy f'(x).
#define NIMBUS_UNARY(name, f, df)                                    \
  template <typename T> void name##_forward(T* y, const T* x, int64_t n); \
  template <typename T> void name##_backward(T* dx, const T* dy, const T* x, int64_t n);
#include "kernels/common/unary_ops.def"
#undef NIMBUS_UNARY

}  // namespace nimbus::cpu
