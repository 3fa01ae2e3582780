/* conv2d_tc.h: the tensor-core convolution (conv2d_tc.cu): forward, backward-data and
 * backward-weight as implicit GEMMs on mma.sync, reading x, w and dy in place (no im2col buffer).
 *
 * Same geometry and maths as kernels/cpu/conv2d.h (x (N,C,H,W), w (K,C,R,S), b (K) or null,
 * y (N,K,P,Q)); device pointers. E = float multiplies in TF32 (operands rounded to 10 mantissa
 * bits, fp32 accumulation: PyTorch's default for convolutions on a GPU); E = bfloat16 in bf16 with
 * fp32 accumulation, each result rounded to bf16 once. Backward writes (=) each non-null dx, dw, db.
 * `ws`: conv2d_tc_workspace(g) floats (the weight gradient's split-K partial sums; may be null when
 * that is 0). `plan` overrides the configuration (tc_dispatch.h) and the weight gradient's split count
 * (tests cover every configuration with it; the benchmarks' sweep times them).
 * conv2d_tc_supported(g) is false for a geometry whose GEMM extents overflow the kernels' int
 * indices; the backend then takes the im2col path.
 */
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/common/bfloat16.h"
#include "kernels/common/geometry.h"
#include "kernels/cuda/bn_relu_in.h"
#include "kernels/cuda/tc_dispatch.h"  // TcPlan

namespace nimbus::cuda {

bool conv2d_tc_supported(const ConvGeom& g);
// The weight gradient's split count: the dispatch table's for this shape and precision, else enough
// blocks for two per SM of an H200 with at least 256 terms a split; at most conv2d_tc_max_splits(g)
// (64, and what kConvWorkspaceFloats of partial sums hold).
int conv2d_tc_splits(const ConvGeom& g, bool bf16 = false);
int conv2d_tc_max_splits(const ConvGeom& g);
// The GEMMs (M, N, K) a direction launches at g: one for the forward and the weight gradient, one per
// stride phase for the data gradient. The dispatch table is keyed by them (the sweep prints them).
struct TcGemmShape {
  int64_t M, N, K;
};
std::vector<TcGemmShape> conv2d_tc_gemms(const ConvGeom& g, TcKind kind);

// Floats of workspace for `splits` splits (0: the larger automatic count of the two precisions).
int64_t conv2d_tc_workspace(const ConvGeom& g, int splits = 0);

template <typename E>
void conv2d_tc_forward(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, bool relu, TcPlan plan = {});
// The forward (no ReLU) that also writes its output's batch-norm moments per channel and column chunk
// (bn_moments.cuh) to `moments` (conv2d_bn_moments_floats(g) floats, either kernel family); returns the
// chunk count per channel, for batchnorm_stats_from_moments. With `in` (bn_relu_in.h), x is the previous
// layer's raw output and the convolution reads relu(batch_norm(x)) as it gathers it (the prologue): the
// bits of batchnorm_forward's output, which is never written.
template <typename E>
int conv2d_tc_forward_bn_moments(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, float* moments,
                                 TcPlan plan = {}, const BnReluIn& in = {});
int64_t conv2d_bn_moments_floats(const ConvGeom& g);
// y = r + s * (conv + b), the sum in the epilogue (DSen2-CR's residual block).
template <typename E>
void conv2d_tc_residual_forward(E* y, const E* x, const E* w, const E* b, const E* r, float s, const ConvGeom& g,
                                TcPlan plan = {});
template <typename E>
void conv2d_tc_backward(E* dx, E* dw, E* db, const E* dy, const E* x, const E* w, const ConvGeom& g, float* ws,
                        TcPlan plan = {});

// out[i] = sum_s partial[s][i] over `splits` slices of n floats, the splits in order (deterministic):
// the weight gradients' split sums (also conv2d_wgmma.cu's). On the current stream.
template <typename E>
void splitk_sum(E* out, const float* partial, int64_t n, int splits, const char* what);

extern template void conv2d_tc_forward<float>(float*, const float*, const float*, const float*, const ConvGeom&,
                                              bool, TcPlan);
extern template void conv2d_tc_forward<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, const bfloat16*,
                                                 const ConvGeom&, bool, TcPlan);
extern template int conv2d_tc_forward_bn_moments<float>(float*, const float*, const float*, const float*,
                                                        const ConvGeom&, float*, TcPlan, const BnReluIn&);
extern template int conv2d_tc_forward_bn_moments<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*,
                                                           const bfloat16*, const ConvGeom&, float*, TcPlan,
                                                           const BnReluIn&);
extern template void conv2d_tc_residual_forward<float>(float*, const float*, const float*, const float*,
                                                       const float*, float, const ConvGeom&, TcPlan);
extern template void conv2d_tc_residual_forward<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*,
                                                          const bfloat16*, const bfloat16*, float, const ConvGeom&,
                                                          TcPlan);
extern template void conv2d_tc_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                               const ConvGeom&, float*, TcPlan);
extern template void splitk_sum<float>(float*, const float*, int64_t, int, const char*);
extern template void splitk_sum<bfloat16>(bfloat16*, const float*, int64_t, int, const char*);
extern template void conv2d_tc_backward<bfloat16>(bfloat16*, bfloat16*, bfloat16*, const bfloat16*,
                                                  const bfloat16*, const bfloat16*, const ConvGeom&, float*,
                                                  TcPlan);

}  // namespace nimbus::cuda
