// conv2d.h: 2-D convolution kernels (cross-correlation, as PyTorch's Conv2d).
//
//   x: (N, C, H, W)   w: (K, C, R, S)   b: (K)   y: (N, K, P, Q)
//   y[n,k,p,q] = b[k] + sum_{c,r,s} w[k,c,r,s] * x[n, c, p*stride - pad + r, q*stride - pad + s]
//   (x outside the image is 0).
//
// Two implementations of the same maths:
// - *_ref: plain loops, templated (the tests run them in double against finite
//   differences). This is the definition; read it first.
// - the float fast path: im2col turns each image into a matrix
//   col (C*R*S, P*Q), so the convolution is one GEMM  y_n (K, PQ) = W (K, CRS) col.
//   Backward is two more GEMMs: dcol = W^T dy_n, folded back into dx by col2im,
//   and dW += dy_n col^T. A 1x1 stride-1 pad-0 conv needs no im2col: the image
//   (C, HW) already IS the matrix. Small images are processed in groups of G so
//   each GEMM has enough columns (G*PQ) to run near peak; the GEMM output
//   (K, G*PQ) is then scattered to (G, K, PQ).
//   Stride-1 convs with >= 32 input channels on large images (DSen2-CR) skip im2col
//   altogether: R*S GEMMs on shifted views of the zero-padded image (conv2d.cpp).
#pragma once
#include <cstdint>

#include "kernels/common/geometry.h"  // ConvGeom

namespace nimbus::cpu {

// ---- reference (any T). Each writes (=) its output; b may be null. ----
template <typename T> void conv2d_forward_ref(T* y, const T* x, const T* w, const T* b, const ConvGeom& g);
template <typename T> void conv2d_backward_data_ref(T* dx, const T* dy, const T* w, const ConvGeom& g);
template <typename T> void conv2d_backward_weight_ref(T* dw, const T* dy, const T* x, const ConvGeom& g);
// The bias gradient is bias_backward(db, dy, N, K, P*Q) from gemm.h.

// ---- fast float path ----
// Images per GEMM, and the scratch floats the caller must pass as `ws`
// (taken from the caching allocator once per call, never inside the loops).
int64_t conv2d_group(const ConvGeom& g);
// Which implementation runs the forward (forward = true) or the backward:
// "winograd" (forward), "winograd dx, dw", "direct3x3, winograd dx" or "direct3x3, winograd dw"
// (backward: which gradients Winograd computes), "direct3x3", "kvec" (forward only),
// "per_image", "pointwise", "shifted" or "im2col".
const char* conv2d_path(const ConvGeom& g, bool forward);
// The per-image and Winograd paths keep a slice of it per OpenMP thread: the size holds for the
// omp_get_max_threads() (and set_winograd_enabled) in force when it is asked, which the call must not
// exceed (the engine asks right before each call).
int64_t conv2d_workspace(const ConvGeom& g);
// relu: y = max(y, 0) afterwards, fused into the store where the path allows (conv2d_relu).
void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                    bool relu = false);
// Writes each of dx, dw, db that is non-null; x is needed only for dw, w only for dx.
void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvGeom& g, float* ws);

// im2col / col2im for `count` images starting at x: col is (C*R*S, count*P*Q),
// image i occupying columns [i*PQ, (i+1)*PQ). col2im ADDS nothing: it writes dx.
void im2col(float* col, const float* x, int64_t count, const ConvGeom& g);
void col2im(float* dx, const float* col, int64_t count, const ConvGeom& g);

}  // namespace nimbus::cpu
