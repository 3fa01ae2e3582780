/* conv2d_wgmma.h: Hopper's convolution (conv2d_wgmma.cu): forward, backward-data and backward-weight
 * as implicit GEMMs on wgmma, the weights fed by the bulk tensor copy engine (TMA).
 * The CUDA backend's default for tensor-core convolutions on an sm_90a device (backend.h ConvKernels);
 * conv2d_tc.h (mma.sync) is the path everywhere else and the fallback.
 *
 * Same geometry and maths as kernels/cpu/conv2d.h (x (N,C,H,W), w (K,C,R,S), b (K) or null,
 * y (N,K,P,Q)); device pointers. E = bfloat16: bf16 operands; E = float: operands rounded to TF32 (as
 * conv2d_tc.h's); fp32 accumulation, each output rounded to E once.
 *   forward:  y = conv(x, w) + b, then ReLU when `relu`, or y = r + s (conv + b) when r is non-null
 *             (DSen2-CR's residual block; no ReLU then).
 *   backward: writes (=) each non-null dx, dw, db.
 * `ws`: conv2d_wgmma_workspace(g) floats, 128-byte aligned (a swizzled tensor map's base): the padded (TF32: rounded) or per-phase
 * packed weights the copy engine reads, and the weight gradient's split partial sums. Work goes on the current
 * stream; nothing is allocated, so a call may be captured into a CUDA graph.
 * conv2d_wgmma_supported(g) is false where the kernels' 32-bit indices or grid would overflow, or the
 * stride is above 4; the backend then takes the mma.sync path.
 * Runs on a device of compute capability 9.0 built for sm_90a, or under the emulator (which models
 * the instructions, kernels/emu/hopper.cpp); elsewhere the kernels trap (wgmma_available() says).
 */
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"
#include "kernels/common/geometry.h"
#include "kernels/cuda/bn_relu_in.h"
#include "kernels/cuda/tc_dispatch.h"  // TcKind

namespace nimbus::cuda {

bool conv2d_wgmma_supported(const ConvGeom& g);
// The weight gradient's split count: the dispatch table's kTcWgmma line for this shape, else enough
// blocks for two per SM of an H200 (132 SMs) with at least 4 k-tiles a split; at most
// conv2d_tc_max_splits(g). A k-tile is 64 positions in bf16, 32 in TF32.
int conv2d_wgmma_splits(const ConvGeom& g, bool tf32 = false);
// False when the dispatch table (tc_dispatch.h) measured an mma.sync configuration faster for this
// direction at g (its first GEMM: the data gradient's phases share the choice); true without a line
// or with a kTcWgmma line. The backend's Auto choice on sm_90a asks it.
bool conv2d_wgmma_preferred(const ConvGeom& g, TcKind kind, bool tf32);
// True when the dispatch table's forward line for g names kTcWgmmaSpecialised: the backend then runs its
// wgmma forwards (plain, ReLU, residual; not the batch-norm moments') on conv2d_wgmma_forward_specialised.
bool conv2d_wgmma_specialised_preferred(const ConvGeom& g, bool tf32);
// Floats of workspace for a forward and a backward at g, either dtype, with `splits` weight-gradient
// splits (0: conv2d_wgmma_splits(g) of each dtype).
int64_t conv2d_wgmma_workspace(const ConvGeom& g, int splits = 0);

template <typename E>
void conv2d_wgmma_forward(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, bool relu, const E* r, float s,
                          float* ws);
// The warp-specialised forward (bench/cuda/conv2d.cu versions 10 and 11): one producer warpgroup gathers
// the im2col tile and starts the weights' copy while two consumer warpgroups multiply (setmaxnreg), on a
// 4-stage ring of full/empty mbarriers. The same arguments and the same results, bit for bit, as
// conv2d_wgmma_forward; not the backend's choice until a GPU measures it faster.
template <typename E>
void conv2d_wgmma_forward_specialised(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, bool relu,
                                      const E* r, float s, float* ws);
// The forward (no ReLU or residual) that also writes its output's batch-norm moments per channel and
// 128-column chunk (bn_moments.cuh) to `moments` (conv2d_bn_moments_floats(g) floats, conv2d_tc.h);
// returns the chunk count per channel, for batchnorm_stats_from_moments. With `in`: the previous layer's
// batch norm + ReLU applied to x in the gather (the prologue; as conv2d_tc_forward_bn_moments).
template <typename E>
int conv2d_wgmma_forward_bn_moments(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, float* ws,
                                    float* moments, const BnReluIn& in = {});
template <typename E>
void conv2d_wgmma_backward(E* dx, E* dw, E* db, const E* dy, const E* x, const E* w, const ConvGeom& g, float* ws,
                           int splits = 0);

extern template void conv2d_wgmma_forward<float>(float*, const float*, const float*, const float*, const ConvGeom&,
                                                 bool, const float*, float, float*);
extern template void conv2d_wgmma_forward<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, const bfloat16*,
                                                    const ConvGeom&, bool, const bfloat16*, float, float*);
extern template void conv2d_wgmma_forward_specialised<float>(float*, const float*, const float*, const float*,
                                                             const ConvGeom&, bool, const float*, float, float*);
extern template void conv2d_wgmma_forward_specialised<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*,
                                                                const bfloat16*, const ConvGeom&, bool,
                                                                const bfloat16*, float, float*);
extern template int conv2d_wgmma_forward_bn_moments<float>(float*, const float*, const float*, const float*,
                                                           const ConvGeom&, float*, float*, const BnReluIn&);
extern template int conv2d_wgmma_forward_bn_moments<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*,
                                                              const bfloat16*, const ConvGeom&, float*, float*,
                                                              const BnReluIn&);
extern template void conv2d_wgmma_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                                  const ConvGeom&, float*, int);
extern template void conv2d_wgmma_backward<bfloat16>(bfloat16*, bfloat16*, bfloat16*, const bfloat16*,
                                                     const bfloat16*, const bfloat16*, const ConvGeom&, float*, int);

// What the kernels must do at g, for the emulator's counters (tests): the TMA copies, wgmma instructions
// and mbarrier phases of the forward (one box, 8 wgmma and one phase per block and k-tile) and of the
// weight gradient (8 wgmma per block and k-tile, whatever the splits; a box and a phase too where it
// takes dy by TMA: bf16, P*Q a multiple of 64, dy 128-byte aligned).
struct WgmmaConvCounts {
  int64_t tma, wgmma, phases;
};
WgmmaConvCounts conv2d_wgmma_forward_counts(const ConvGeom& g, bool tf32 = false);
WgmmaConvCounts conv2d_wgmma_wgrad_counts(const ConvGeom& g, bool tf32 = false);

// True when the code running on the current device was compiled for sm_90a (one probe kernel, run
// once on the first call: a launch and a host wait; the backend asks at registration, never during a
// capture). False under the emulator, whose device is no
// sm_90a one although it models the instructions (tests ask for the path explicitly).
bool wgmma_available();

}  // namespace nimbus::cuda
