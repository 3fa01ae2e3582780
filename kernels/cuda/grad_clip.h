/* grad_clip.h: launchers for the gradient-norm clipping kernels (grad_clip.cu), callable from plain
 * C++. What each call does: kernels/common/grad_clip.h; the maths: engine/optim/clip_grad.h.
 */
#pragma once
#include "kernels/common/grad_clip.h"

namespace nimbus::cuda {

void grad_sumsq(const GradBatch& b, double* partial);  // grid (kGradChunks, b.count), 256 threads
void grad_clip_coef(float* norm, float* coef, const double* partial, int64_t tensors, float max_norm);  // one block
void grad_scale(const GradBatch& b, const float* coef);

}  // namespace nimbus::cuda
