/* optim_update.h: the optimisers' element updates, written once for the CPU loops
 * (kernels/cpu/optim.cpp) and the CUDA kernels (kernels/cuda/optim.cu), so both backends apply the
 * same float expressions (bit for bit under the emulator). Element i of p and its state slots is
 * updated in place; the scalars come from engine/optim/{adam,nadam,sgd}.cpp, which state the maths.
 */
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/common/optim_scalars.h"

#if defined(__CUDACC__)
#define NIMBUS_OPTIM_FN __host__ __device__ __forceinline__
#else
#define NIMBUS_OPTIM_FN inline
#endif

namespace nimbus {

// Adam (PyTorch's, with L2 weight decay folded into the gradient).
NIMBUS_OPTIM_FN void adam_element(float* p, float* m, float* v, const float* g, int64_t i, const AdamScalars& s) {
  const float gi = s.wd != 0.0f ? g[i] + s.wd * p[i] : g[i];
  m[i] = m[i] * s.b1 + s.one_m_b1 * gi;
  v[i] = v[i] * s.b2 + s.one_m_b2 * (gi * gi);
  const float denom = sqrtf(v[i]) / s.bc2_sqrt + s.eps;
  p[i] += -s.step_size * (m[i] / denom);
}

// Keras 2's Nadam (momentum schedule, bias-corrected moments).
NIMBUS_OPTIM_FN void nadam_element(float* p, float* m, float* v, const float* g, int64_t i, const NadamScalars& s) {
  m[i] = s.b1 * m[i] + s.one_m_b1 * g[i];
  v[i] = s.b2 * v[i] + s.one_m_b2 * (g[i] * g[i]);
  const float m_bar = s.c_g * (g[i] * s.g_scale) + s.c_m * (m[i] * s.m_scale);
  p[i] -= s.lr * m_bar / (sqrtf(v[i] * s.v_scale) + s.eps);
}

// SGD with PyTorch's momentum, dampening and Nesterov.
NIMBUS_OPTIM_FN void sgd_element(float* p, float* buf, const float* g, int64_t i, const SgdScalars& s) {
  float d = s.wd != 0.0f ? g[i] + s.wd * p[i] : g[i];
  if (s.use_mom) {
    buf[i] = s.first ? d : buf[i] * s.mom + s.keep * d;
    d = s.nesterov ? d + s.mom * buf[i] : buf[i];
  }
  p[i] += -s.lr * d;
}

}  // namespace nimbus

#undef NIMBUS_OPTIM_FN
