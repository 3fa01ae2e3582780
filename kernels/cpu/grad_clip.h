// grad_clip.h: the gradient-norm clipping kernels on the CPU (kernels/common/grad_clip.h says what
// each call does; engine/optim/clip_grad.h the maths). grad_sumsq_ref is the plain reference the
// tests hold both backends to: one tensor's sum of squares, in the element type T (double there).
#pragma once
#include <cstdint>

#include "kernels/common/grad_clip.h"

namespace nimbus::cpu {

// Each tensor's kGradChunks partial sums of squares (in double) at partial[slot * kGradChunks ...], whose
// sum is the tensor's sum of squares: that is what every backend must give (how a backend splits the
// elements is its own; here chunk c is elements [c n / kGradChunks, (c + 1) n / kGradChunks) in order,
// in CUDA's grad_clip.cu every kGradChunks-th run of 256).
void grad_sumsq(const GradBatch& b, double* partial);
// norm[0] and coef[0] from the partial sums of `tensors` tensors (clip_coefficient).
void grad_clip_coef(float* norm, float* coef, const double* partial, int64_t tensors, float max_norm);
// Every gradient of the batch times coef[0], in place.
void grad_scale(const GradBatch& b, const float* coef);

template <typename T>
T grad_sumsq_ref(const T* g, int64_t n) {
  T s = 0;
  for (int64_t i = 0; i < n; ++i) s += g[i] * g[i];
  return s;
}

}  // namespace nimbus::cpu
