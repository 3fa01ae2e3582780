/* conv2d.h: launchers for the CUDA convolution (conv2d.cu), callable from plain C++.
 *
 * Same geometry and maths as kernels/cpu/conv2d.h (ConvGeom; x (N,C,H,W), w (K,C,R,S), b (K) or
 * null, y (N,K,P,Q)). All pointers are device pointers; `ws` is a device scratch buffer of
 * conv2d_workspace(g) floats. Backward writes (=) each of dx, dw, db that is non-null.
 */
#pragma once
#include <cstdint>

#include "kernels/cpu/conv2d.h"  // ConvGeom (a plain struct)
#include "kernels/cuda/gemm.h"

namespace nimbus::cuda {

using cpu::ConvGeom;

int64_t conv2d_workspace(const ConvGeom& g);  // floats: one image's im2col matrix (C*R*S, P*Q)
void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                    int tile = kGemmTile);
void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvGeom& g, float* ws, int tile = kGemmTile);

// One image: col (C*R*S, P*Q) from x (C,H,W); col2im writes (=) dx (C,H,W) by gathering, per pixel,
// every col entry that read it (fixed order, no atomics).
void im2col(float* col, const float* x, const ConvGeom& g, int block = 256);
void col2im(float* dx, const float* col, const ConvGeom& g, int block = 256);

}  // namespace nimbus::cuda
