/* grad_clip.h: what the gradient-norm clipping kernels take (a neutral header, shared by the CPU
 * loops of kernels/cpu/grad_clip.cpp and the CUDA kernels of kernels/cuda/grad_clip.cu), and the
 * clipping coefficient's formula, written once for both. The engine's clip_grad_norm
 * (engine/optim/clip_grad.h) states the maths.
 *
 * Three calls on the gradients' device, none of which the host waits for:
 *   grad_sumsq      per batch of up to kOptimBatch gradients: each tensor's sum of squares, in double,
 *                   as kGradChunks partial sums at partial[slot * kGradChunks ...] (the slot is the
 *                   tensor's index in the whole list);
 *   grad_clip_coef  once: the total norm sqrt(sum of every partial) and the coefficient, into two
 *                   floats in device memory;
 *   grad_scale      per batch: g *= coef, reading the coefficient through its pointer.
 * The partial sums are summed in a fixed order on each backend, so a step's norm does not depend on
 * thread timing: an eager step and its graph replay clip alike, bit for bit.
 */
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/common/optim_scalars.h"  // kOptimBatch

#if defined(__CUDACC__)
#define NIMBUS_CLIP_FN __host__ __device__ __forceinline__
#else
#define NIMBUS_CLIP_FN inline
#endif

namespace nimbus {

// Partial sums per gradient tensor: the CPU sums kGradChunks contiguous pieces (over both cores), a
// CUDA launch gives each tensor kGradChunks blocks.
constexpr int kGradChunks = 32;

struct GradTensor {
  float* g;      // the gradient, scaled in place by grad_scale
  int64_t n;     // elements
  int64_t slot;  // index in the whole list: its partial sums are partial[slot * kGradChunks + c]
};
using GradBatch = TensorBatch<GradTensor>;
static_assert(sizeof(GradBatch) <= 4096, "a batch must fit in a CUDA kernel's 4 KiB of parameters");

// PyTorch's torch.nn.utils.clip_grad_norm_ (norm_type 2, error_if_nonfinite off), from the total
// sum of squares: norm = sqrt(sumsq) rounded to float32, then in float32 as PyTorch evaluates
// `max_norm / (norm + 1e-6)` (Tensor.__rtruediv__: reciprocal, then times max_norm) and
// clamp(max=1). A NaN norm gives a NaN coefficient (clamp keeps NaN), an infinite one 0: a
// non-finite gradient then makes every gradient NaN or zero, as in PyTorch, and the step's
// weights show it.
NIMBUS_CLIP_FN void clip_coefficient(double sumsq, float max_norm, float* norm, float* coef) {
  const float total = float(sqrt(sumsq));
  const float c = (1.0f / (total + 1e-6f)) * max_norm;
  *norm = total;
  *coef = c > 1.0f ? 1.0f : c;  // NaN > 1 is false: NaN stays NaN
}

}  // namespace nimbus

namespace nimbus::cuda {
using nimbus::GradBatch;
using nimbus::GradTensor;
using nimbus::kGradChunks;
}  // namespace nimbus::cuda
