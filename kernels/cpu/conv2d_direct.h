// conv2d_direct.h: the direct (GEMM-free, im2col-free) convolutions, hand-vectorised: the 3x3
// stride-1 kernels, and the two tiles they are built from and that conv2d.cpp also runs on their
// own (the 1x1 tile, the k-vectorised tile for any kernel size and stride). One file because they
// share the padded-plane layout, the weight packing and the tiles; conv2d.cpp (path_of) chooses.
//
// The 3x3 stride-1 convolution is DSen2-CR's only layer and ResNet's middle
// layer. Lowering it to GEMM (conv2d.cpp) costs copies (im2col, packing) and,
// for the weight gradient, runs OpenBLAS on shapes it does badly: K x C
// outputs with a pixel-long inner dimension (measured 49 GFLOP/s for
// 64x64x4224 against 420 on square GEMMs). These kernels work on the NCHW
// tensors after one copy that zero-pads each plane, so a tap is an offset, and
// interleaves the channels' rows (row h of every channel side by side: a tile
// reads all channels of 3 rows from one contiguous block; see Planes):
//
//   forward    y[k, p, q] = b[k] + sum_{c,r,s} w[k,c,r,s] xpad[c, p+r, q+s]
//              vectorised along q: a tile is 8 output channels x 3 vectors of
//              16 pixels (anywhere in the image) = 24 accumulators in registers;
//              per (c, r, s) it loads 3 pixel vectors and broadcasts 8 weights.
//   dx         the same kernel: with stride 1, dx is the convolution of dy
//              (padded by 2 - pad) with w transposed (k <-> c) and flipped
//              (r, s -> 2-r, 2-s).
//   dw         dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] xpad[n, c, p+r, q+s],
//              vectorised along k: dy is transposed to pixel-major (P*Q, K),
//              blocked by groups of <= 3 vectors of output channels; a tile is
//              one group (up to 3 vectors of 16 output channels) x 9 taps of one
//              input channel = up to 27 accumulators, kept in memory between blocks of
//              pixels so that a block of a group's dy is read from L1 by every
//              input channel, not from L2 or DRAM.
//
//   1x1        the forward tile with one tap, straight on NCHW planes of a
//              multiple of 16 pixels (no padding); a tile's 3 vectors may lie in
//              different images (conv2d_pointwise_forward).
//   k-vec      forward vectorised along k: a tile is 6 output pixels (anywhere
//              in the batch) x 4 vectors of 16 output channels; per (c, r, s) it
//              loads 4 weight vectors and broadcasts 6 input floats. A broadcast
//              reads one float, so any stride and kernel size works: conv2d.cpp
//              runs ResNet's 7x7/2 stem and 3x3/2 convs with it
//              (conv2d_kvec_forward), and the 3x3 path uses it for a dx whose
//              rows are shorter than a vector (pad 2).
//
// conv2d_direct_* apply when R = S = 3, stride 1, pad <= 2 and Q >= 16;
// everything else takes conv2d.cpp's GEMM paths.
// Shapes and the meaning of ws are those of conv2d.h.
#pragma once
#include <cstdint>

#include "kernels/cpu/conv2d.h"

namespace nimbus::cpu {

bool conv2d_direct_applies(const ConvGeom& g);
// Scratch floats for either direction (padded planes, packed weights, dy^T).
int64_t conv2d_direct_workspace(const ConvGeom& g);
// relu: y = max(y, 0) applied as the tile is stored (conv2d_relu).
void conv2d_direct_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                           bool relu = false);
// Writes each of dx, dw, db that is non-null; x is needed only for dw, w only for dx.
void conv2d_direct_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                            const ConvGeom& g, float* ws);

// Forward of a 1x1 stride-1 unpadded convolution whose planes hold a multiple
// of 16 pixels: the q-vectorised tile with one tap, on the NCHW tensor as is.
bool conv2d_pointwise_applies(const ConvGeom& g);
int64_t conv2d_pointwise_workspace(const ConvGeom& g);
void conv2d_pointwise_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                              bool relu = false);

// Forward of any geometry, vectorised along k.
int64_t conv2d_kvec_workspace(const ConvGeom& g);
void conv2d_kvec_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws);

}  // namespace nimbus::cpu
