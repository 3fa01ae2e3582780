// grad_clip.cpp: gradient-norm clipping on the CPU (see grad_clip.h). The chunks of a large tensor
// are summed on both cores; each chunk's sum is the same whichever thread takes it, so the norm is.
#include "kernels/cpu/grad_clip.h"

#include "kernels/common/parallel.h"

namespace nimbus::cpu {

void grad_sumsq(const GradBatch& b, double* partial) {
  for (int k = 0; k < b.count; ++k) {
    const GradTensor t = b.t[k];
    double* out = partial + t.slot * kGradChunks;
#pragma omp parallel for if (t.n > kParallelGrain)
    for (int c = 0; c < kGradChunks; ++c) {
      const int64_t lo = t.n * c / kGradChunks, hi = t.n * (c + 1) / kGradChunks;
      double s = 0;
      for (int64_t i = lo; i < hi; ++i) s += double(t.g[i]) * double(t.g[i]);
      out[c] = s;
    }
  }
}

void grad_clip_coef(float* norm, float* coef, const double* partial, int64_t tensors, float max_norm) {
  double s = 0;
  for (int64_t i = 0; i < tensors * kGradChunks; ++i) s += partial[i];
  clip_coefficient(s, max_norm, norm, coef);
}

void grad_scale(const GradBatch& b, const float* coef) {
  const float c = *coef;
  for (int k = 0; k < b.count; ++k) {
    const GradTensor t = b.t[k];
#pragma omp parallel for simd if (t.n > kParallelGrain)
    for (int64_t i = 0; i < t.n; ++i) t.g[i] *= c;
  }
}

}  // namespace nimbus::cpu
