// optim_scalars.h: the per-step scalars of the fused optimiser updates, computed on the host by the
// optimiser (engine/optim) and passed to every backend's update kernel (a neutral header).
// Each update applies, element by element, exactly the float expressions of engine/optim/*.cpp.
#pragma once

namespace nimbus {

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

namespace cuda {
using nimbus::AdamScalars;
using nimbus::NadamScalars;
using nimbus::SgdScalars;
}  // namespace cuda

}  // namespace nimbus
