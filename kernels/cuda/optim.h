/* optim.h: launchers for the fused optimiser updates (optim.cu), callable from plain C++.
 *
 * One kernel per parameter tensor updates p and its state slots in place, element by element,
 * with exactly the float expressions of engine/optim/{adam,nadam,sgd}.cpp; the per-step scalars
 * (bias corrections, schedules) are computed on the host by the optimiser and passed in here.
 */
#pragma once
#include <cstdint>

namespace nimbus::cuda {

struct AdamScalars {
  float b1, b2, one_m_b1, one_m_b2, wd, eps, step_size, bc2_sqrt;
};
struct NadamScalars {
  float b1, b2, one_m_b1, one_m_b2, g_scale, m_scale, v_scale, c_g, c_m, lr, eps;
};
struct SgdScalars {
  float lr, wd, mom, keep;
  bool first, use_mom, nesterov;
};

void adam_update(float* p, float* m, float* v, const float* g, int64_t n, const AdamScalars& s, int block = 256);
void nadam_update(float* p, float* m, float* v, const float* g, int64_t n, const NadamScalars& s, int block = 256);
void sgd_update(float* p, float* buf, const float* g, int64_t n, const SgdScalars& s, int block = 256);

}  // namespace nimbus::cuda
