/* bn_apply.cuh: batch norm's per-element formula, in one place for the two kinds of kernel that apply it:
 * batchnorm_forward_kernel (batchnorm.cu), which writes relu(batch_norm(x)) out, and the convolutions
 * that apply the previous layer's batch norm + ReLU to their input as they gather it (the prologue:
 * conv2d_tc.cu, conv2d_wgmma.cu), which never write it. One definition, so that a value gathered
 * through the prologue has the bits batchnorm_forward would have stored (the tests compare them).
 *
 *   y = (x - mean[c]) * (invstd[c] * weight[c]) + bias[c], then max(y, 0) with a ReLU
 * weight and bias may be null (1 and 0). Subtracting the mean first, not folding it into the shift,
 * avoids cancellation when |mean| >> std (the CPU kernel does the same).
 */
#pragma once
#include "kernels/cuda/bn_relu_in.h"
#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

__device__ __forceinline__ float bn_apply(float x, float m, float scale, float shift, bool relu) {
  const float v = (x - m) * scale + shift;
  return relu && v < 0.0f ? 0.0f : v;  // relu_forward's rule: a NaN passes through
}

// The prologue's value for input channel c (BnReluIn, bn_relu_in.h), with the ReLU.
__device__ __forceinline__ float bn_relu_in(const BnReluIn& in, int c, float x) {
  const float scale = in.invstd[c] * (in.weight ? in.weight[c] : 1.0f), shift = in.bias ? in.bias[c] : 0.0f;
  return bn_apply(x, in.mean[c], scale, shift, true);
}

}  // namespace nimbus::cuda
