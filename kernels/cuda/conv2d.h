/* conv2d.h: launchers for the CUDA convolution (conv2d.cu), callable from plain C++.
 *
 * Same geometry and maths as kernels/cpu/conv2d.h (ConvGeom; x (N,C,H,W), w (K,C,R,S), b (K) or
 * null, y (N,K,P,Q)). All pointers are device pointers; `ws` is a device scratch buffer of
 * conv2d_workspace(g, group) floats (same group as the call). Backward writes (=) each of dx, dw,
 * db that is non-null.
 */
#pragma once
#include <cstdint>

#include "kernels/common/geometry.h"  // ConvGeom
#include "kernels/cuda/gemm.h"

namespace nimbus::cuda {

using cpu::ConvGeom;

// Images per im2col + batched-GEMM step: `group` if > 0 (tests), else as many as fit
// kConvWorkspaceFloats of columns (all of them for a 1x1 stride-1 unpadded conv: no im2col).
constexpr int64_t kConvWorkspaceFloats = int64_t(1) << 24;  // 64 MiB
int64_t conv2d_group(const ConvGeom& g, int64_t group = 0);
int64_t conv2d_workspace(const ConvGeom& g, int64_t group = 0);  // floats: the group's im2col columns
void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                    int tile = kGemmTile, int64_t group = 0);
void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvGeom& g, float* ws, int tile = kGemmTile, int64_t group = 0);

// `count` consecutive images: col (count, C*R*S, P*Q) from x (count, C, H, W); col2im writes (=)
// dx (count, C, H, W) by gathering, per pixel, every col entry that read it (fixed order, no atomics).
void im2col(float* col, const float* x, int64_t count, const ConvGeom& g, int block = 256);
void col2im(float* dx, const float* col, int64_t count, const ConvGeom& g, int block = 256);

}  // namespace nimbus::cuda
