// optim.cpp: the optimisers' element loops (see optim.h), over both cores for large tensors.
#include "kernels/cpu/optim.h"

#include <cmath>

#include "kernels/common/parallel.h"

namespace nimbus::cpu {

// Adam (PyTorch's, with L2 weight decay folded into the gradient).
void adam_update(float* p, float* m, float* v, const float* g, int64_t n, const AdamScalars& s) {
  const float b1 = s.b1, b2 = s.b2, one_m_b1 = s.one_m_b1, one_m_b2 = s.one_m_b2, wd = s.wd, eps = s.eps;
  const float step_size = s.step_size, bc2_sqrt = s.bc2_sqrt;
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    float gi = wd != 0.f ? g[i] + wd * p[i] : g[i];
    m[i] = m[i] * b1 + one_m_b1 * gi;
    v[i] = v[i] * b2 + one_m_b2 * (gi * gi);
    float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
    p[i] += -step_size * (m[i] / denom);
  }
}

// Keras 2's Nadam (momentum schedule, bias-corrected moments).
void nadam_update(float* p, float* m, float* v, const float* g, int64_t n, const NadamScalars& s) {
  const float b1 = s.b1, b2 = s.b2, one_m_b1 = s.one_m_b1, one_m_b2 = s.one_m_b2;
  const float g_scale = s.g_scale, m_scale = s.m_scale, v_scale = s.v_scale, c_g = s.c_g, c_m = s.c_m;
  const float lr = s.lr, eps = s.eps;
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + one_m_b1 * g[i];
    v[i] = b2 * v[i] + one_m_b2 * (g[i] * g[i]);
    float m_bar = c_g * (g[i] * g_scale) + c_m * (m[i] * m_scale);
    p[i] -= lr * m_bar / (std::sqrt(v[i] * v_scale) + eps);
  }
}

// SGD with PyTorch's momentum, dampening and Nesterov.
void sgd_update(float* p, float* buf, const float* g, int64_t n, const SgdScalars& s) {
  const float lr = s.lr, wd = s.wd, mom = s.mom, keep = s.keep;
  const bool first = s.first, use_mom = s.use_mom, nesterov = s.nesterov;
#pragma omp parallel for simd if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    float d = wd != 0.f ? g[i] + wd * p[i] : g[i];
    if (use_mom) {
      buf[i] = first ? d : buf[i] * mom + keep * d;
      d = nesterov ? d + mom * buf[i] : buf[i];
    }
    p[i] += -lr * d;
  }
}

}  // namespace nimbus::cpu
