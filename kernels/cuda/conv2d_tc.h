/* conv2d_tc.h: the tensor-core convolution (conv2d_tc.cu): forward, backward-data and
 * backward-weight as implicit GEMMs on mma.sync, reading x, w and dy in place (no im2col buffer).
 *
 * Same geometry and maths as kernels/cpu/conv2d.h (x (N,C,H,W), w (K,C,R,S), b (K) or null,
 * y (N,K,P,Q)); device pointers. E = float multiplies in TF32 (operands rounded to 10 mantissa
 * bits, fp32 accumulation: PyTorch's default for convolutions on a GPU); E = bfloat16 in bf16 with
 * fp32 accumulation, each result rounded to bf16 once. Backward writes (=) each non-null dx, dw, db.
 * `ws`: conv2d_tc_workspace(g) floats (the weight gradient's split-K partial sums; may be null when
 * that is 0). `plan` overrides the tile and split choice (tests cover every configuration with it).
 * conv2d_tc_supported(g) is false for a geometry whose GEMM extents overflow the kernels' int
 * indices; the backend then takes the im2col path.
 */
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"
#include "kernels/common/geometry.h"

namespace nimbus::cuda {

// Mirrors mma::Plan (mma_core.cuh, device code) for plain C++ callers.
struct ConvTcPlan {
  int tile = 0;    // 0 auto, 1 the 128x128 tile, 2 the 64x64 tile
  int splits = 0;  // the weight gradient's reduction splits; 0 auto
};

bool conv2d_tc_supported(const ConvGeom& g);
int conv2d_tc_splits(const ConvGeom& g);         // the weight gradient's automatic split count
int64_t conv2d_tc_workspace(const ConvGeom& g, int splits = 0);  // floats

template <typename E>
void conv2d_tc_forward(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, bool relu, ConvTcPlan plan = {});
template <typename E>
void conv2d_tc_backward(E* dx, E* dw, E* db, const E* dy, const E* x, const E* w, const ConvGeom& g, float* ws,
                        ConvTcPlan plan = {});

extern template void conv2d_tc_forward<float>(float*, const float*, const float*, const float*, const ConvGeom&,
                                              bool, ConvTcPlan);
extern template void conv2d_tc_forward<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, const bfloat16*,
                                                 const ConvGeom&, bool, ConvTcPlan);
extern template void conv2d_tc_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                               const ConvGeom&, float*, ConvTcPlan);
extern template void conv2d_tc_backward<bfloat16>(bfloat16*, bfloat16*, bfloat16*, const bfloat16*,
                                                  const bfloat16*, const bfloat16*, const ConvGeom&, float*,
                                                  ConvTcPlan);

}  // namespace nimbus::cuda
