/* optim_update.h: the optimisers' per-step scalars and element updates, written once for the CPU
 * loops (kernels/cpu/optim.cpp) and the CUDA kernels (kernels/cuda/optim.cu), so both backends
 * compute the same expressions (bit for bit under the emulator; on a GPU the double-precision
 * scalars may differ in their last bit, as nvcc fuses multiply-adds). Element i of p and its state
 * slots is updated in place. The maths is stated in engine/optim/{adam,nadam,sgd}.h.
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

// The clock's advance at the start of a step: t += 1, and Nadam's schedule (nadam != nullptr).
NIMBUS_OPTIM_FN void advance_clock(OptimClock& c, const NadamHyper* nadam) {
  c.step += 1;
  if (!nadam) return;
  const double t = c.step;
  c.mu_t = nadam->beta1 * (1 - 0.5 * pow(0.96, t * nadam->schedule_decay));
  c.mu_next = nadam->beta1 * (1 - 0.5 * pow(0.96, (t + 1) * nadam->schedule_decay));
  c.s_t = double(c.m_schedule) * c.mu_t;
  c.s_next = c.s_t * c.mu_next;
  c.m_schedule = float(c.s_t);
}

// A parameter's scalars for its t-th update (t counts that parameter's updates).
NIMBUS_OPTIM_FN AdamScalars adam_scalars(const AdamHyper& h, const OptimClock& c, double t) {
  return {float(h.beta1),
          float(h.beta2),
          float(1 - h.beta1),
          float(1 - h.beta2),
          float(h.decoupled ? 0.0 : h.weight_decay),
          float(h.eps),
          float(c.lr / (1 - pow(h.beta1, t))),
          float(sqrt(1 - pow(h.beta2, t))),
          float(h.decoupled ? 1 - c.lr * h.weight_decay : 1.0)};
}
NIMBUS_OPTIM_FN NadamScalars nadam_scalars(const NadamHyper& h, const OptimClock& c) {
  return {float(h.beta1),
          float(h.beta2),
          float(1 - h.beta1),
          float(1 - h.beta2),
          float(1 / (1 - c.s_t)),                    // g' = g * g_scale
          float(1 / (1 - c.s_next)),                 // m' = m * m_scale
          float(1 / (1 - pow(h.beta2, c.step))),     // v' = v * v_scale
          float(1 - c.mu_t),
          float(c.mu_next),
          float(c.lr),
          float(h.eps)};
}
NIMBUS_OPTIM_FN SgdScalars sgd_scalars(const SgdHyper& h, const OptimClock& c, double t) {
  return {float(c.lr), float(h.weight_decay), float(h.momentum), float(1.0 - h.dampening), t == 1,
          h.momentum != 0, h.nesterov};
}
NIMBUS_OPTIM_FN AdamScalars scalars_of(const AdamHyper& h, const OptimClock& c, double t) { return adam_scalars(h, c, t); }
NIMBUS_OPTIM_FN NadamScalars scalars_of(const NadamHyper& h, const OptimClock& c, double) { return nadam_scalars(h, c); }
NIMBUS_OPTIM_FN SgdScalars scalars_of(const SgdHyper& h, const OptimClock& c, double t) { return sgd_scalars(h, c, t); }
NIMBUS_OPTIM_FN const NadamHyper* nadam_of(const NadamHyper& h) { return &h; }
NIMBUS_OPTIM_FN const NadamHyper* nadam_of(const AdamHyper&) { return nullptr; }
NIMBUS_OPTIM_FN const NadamHyper* nadam_of(const SgdHyper&) { return nullptr; }

// Parameter i of a prepare's mask: its count advances and its scalars are written. Called once per
// i in [0, mask.count) after the clock advanced (p.advance), with the clock read once.
template <typename Hyper, typename Scalars>
NIMBUS_OPTIM_FN void prepare_param(const OptimPrepare<Hyper, Scalars>& p, const OptimClock& c, int i) {
  if (!((p.mask.bits[i >> 5] >> (i & 31)) & 1u)) return;
  const int k = p.mask.first + i;
  const double t = p.steps[k] + 1;
  p.steps[k] = t;
  p.scalars[k] = scalars_of(p.h, c, t);
}

// Adam (PyTorch's, with L2 weight decay folded into the gradient), or AdamW (PyTorch's: the parameter
// scaled by 1 - lr * weight_decay first, the gradient as it is).
NIMBUS_OPTIM_FN void adam_element(float* p, float* m, float* v, const float* g, int64_t i, const AdamScalars& s) {
  if (s.keep != 1.0f) p[i] *= s.keep;
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
