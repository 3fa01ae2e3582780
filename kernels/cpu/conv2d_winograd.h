// conv2d_winograd.h: the 3x3 stride-1 convolution by Winograd's minimal filtering, F(2x2, 3x3) for
// the forward and the data gradient, F(3x3, 2x2) for the weight gradient (Lavin & Gray 2016, "Fast
// Algorithms for Convolutional Neural Networks").
//
// A 2x2 block of outputs of one channel pair (k, c) needs 2*2*9 = 36 multiplies done directly.
// Winograd computes the same block from a 4x4 tile d of the input (rows and columns 2t .. 2t+3 of
// the zero-padded plane) with 16:
//
//   Y (2x2) = A^T [ (G g G^T) .* (B^T d B) ] A       g: the 3x3 filter w[k, c]
//
//   B^T = | 1  0 -1  0 |    G = | 1    0    0  |    A^T = | 1  1  1  0 |
//         | 0  1  1  0 |        | 1/2  1/2  1/2|          | 0  1 -1 -1 |
//         | 0 -1  1  0 |        | 1/2 -1/2  1/2|
//         | 0  1  0 -1 |        | 0    0    1  |
//
// and the sum over c moves inside, between the transforms: with U[xi][k][c] = (G g G^T)[xi] and
// V[xi][c][t] = (B^T d_t B)[xi] for each tile t and each of the 16 positions xi,
//
//   M[xi][k][t] = sum_c U[xi][k][c] V[xi][c][t]      16 independent (K x C) x (C x T) products
//   y[k, tile t] = A^T M[.][k][t] A                  (+ bias, then the fused ReLU)
//
// so the multiplies per output fall from 9*C to 4*C: 2.25x fewer. The transforms are additions
// (G's halves are exact), done once per tile and channel, not per channel pair. The price could be
// rounding: V's entries are sums of up to 4 inputs, U's of up to 9 weights, and the output transform
// adds 9 products. Measured, it is not: the largest error is about 2^-22.4 of sum_{c,r,s} |w| |x| + |b|,
// the direct kernel's about 2^-22 (its longer sums round as much); the tests hold it to 2^-20. A NaN
// input reaches exactly the outputs whose window holds it (the transforms are additions, no 0 * NaN);
// an infinite one may give NaN where the direct sum gives an infinity (Inf - Inf in a transform).
//
// Layout: the input is copied once into row-interleaved zero-padded planes (row h of every channel
// side by side, kernels/cpu/planes.h); a tile vector is 16 horizontally adjacent tiles of
// one tile row, so its 4x4 inputs are read as 2 x 32 consecutive floats per input row and split into
// even and odd columns. A job is (image, block of kTileVectors tile vectors): transform the inputs of
// its 16 * kTileVectors tiles for every channel (V, kept in L2), then for each block of 8 output
// channels the 16 products (8 outputs x 16 tiles x 3 vectors = 24 accumulators, as the direct
// kernel's tile) and the output transform. Each output is computed by one job in a fixed order: the
// same bits for any thread count.
//
// The weight gradient is the same algorithm turned around (Lavin & Gray's F(3x3, 2x2)): the sum
// over a 2x2 tile of dy of the 3x3 window products, dW[k, c] += sum_{a,b} dy[2tp+a, 2tq+b] d[a+r, b+s],
// is, with the same A, B and G,
//
//   dW[k, c] (3x3) += G^T [ (A dy_t A^T) .* (B^T d_t B) ] G      dy_t: the tile's 2x2 of dy[k]
//
// (the forward's bilinear form read the other way: sum_i dy_i y_i = g . G^T [(A dy) .* (B^T d)]).
// The sum over tiles moves inside: Mw[xi][k][c] = sum_t (A dy_t A^T)[xi][k] (B^T d_t B)[xi][c], 16
// (K x T) x (T x C) products, then one output transform per (k, c): 16 multiplies per tile and pair
// instead of 36, 2.25x fewer. Each tile's input transform is the forward's; the tiles run in chunks
// (about 8 MiB of transformed inputs and gradients), and each element of Mw is summed by one product
// tile, in tile order: the same bits for any thread count. Measured, its error is no larger than the
// direct kernel's (2^-22 of sum_{n,p,q} |dy| |x| at worst on the tests' shapes, 2^-25 at 256
// channels x 128^2 with 16 outputs, where the direct kernel's is 2^-22): the same 2^-20 bound holds.
//
// conv2d.cpp runs it, in place of the direct kernels, for the 3x3 stride-1 convolutions where it was
// measured faster on this project's 2-core AVX-512 VM (docs/perf-notes.md, "Winograd F(2x2, 3x3)"): at
// least 32 output channels (a product tile has 8; DSen2-CR's 13-band tail is faster direct) and output
// rows of at least 20 pixels (a tile vector is 16 tiles of 2 columns: at 16 pixels half its lanes are
// wasted and it loses). That is DSen2-CR's convolutions at 128x128, but the data gradient of its head
// (15 input channels with SAR, 13 without) and the forward of its tail (13 outputs), and none of
// ResNet-50's at EuroSAT's 64x64. The weight gradient pays for its chunks' transforms and for
// Mw with less reuse than the forward: it wins from about 96 input and output channels (96 at 64^2:
// 0.87 of the direct time; 64: 0.99-1.06; 128 and 256: 0.63-0.82), so conv2d.cpp takes it when both
// are at least 128 and rows hold at least 20 outputs: DSen2-CR's body at its paper's 256 features,
// not its 64-feature variant. NIMBUS_CPU_WINOGRAD=0 in the environment (read once) or
// set_winograd_enabled(false) keeps the direct kernels (switch it before sizing a workspace: conv2d.h). Shapes and the meaning of ws are those of conv2d.h.
#pragma once
#include <cstdint>

#include "kernels/cpu/conv2d.h"

namespace nimbus::cpu {

// Whether conv2d.cpp takes Winograd for the forward, the data gradient, and the weight gradient of g.
bool conv2d_winograd_applies(const ConvGeom& g);
bool conv2d_winograd_applies_data_grad(const ConvGeom& g);
bool conv2d_winograd_applies_weight_grad(const ConvGeom& g);
bool winograd_enabled();
void set_winograd_enabled(bool on);
int64_t conv2d_winograd_workspace(const ConvGeom& g);
// The kernels themselves run any 3x3 stride-1 geometry with pad <= 2 (the tests run them on shapes
// the routing never gives them).
// y = b + conv(x, w) (b may be null), then max(y, 0) when relu.
void conv2d_winograd_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                             bool relu = false);
// dx = the data gradient of that convolution (the same kernel on dy padded by 2 - pad, w flipped).
void conv2d_winograd_backward_data(float* dx, const float* dy, const float* w, const ConvGeom& g, float* ws);
// dw (K, C, 3, 3) = the weight gradient of that convolution (overwritten), by F(3x3, 2x2): see above.
void conv2d_winograd_backward_weight(float* dw, const float* dy, const float* x, const ConvGeom& g, float* ws);

}  // namespace nimbus::cpu
