// nadam.cpp: the Keras-2 schedule per step, then each parameter queued for the fused batch update.
#include "engine/optim/nadam.h"

#include <cmath>

#include "engine/backend.h"

namespace nimbus {

Nadam::Nadam(const NamedTensors& params, const NadamOptions& o)
    : Optimizer(params, o.lr, {"m", "v"}),
      opt_(o),
      batch_([](Device d, const NadamBatch& b) { backend(d, "nadam").nadam_update(b); }) {
  NIMBUS_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1 && o.eps >= 0 && o.schedule_decay >= 0,
               "nadam: need 0 <= beta1, beta2 < 1 and eps, schedule_decay >= 0; got beta1=", o.beta1,
               " beta2=", o.beta2, " eps=", o.eps, " schedule_decay=", o.schedule_decay);
  register_scalar("m_schedule", &m_schedule_);
}

void Nadam::begin_step() {
  const double t = double(steps_);
  auto mu = [&](double k) { return opt_.beta1 * (1 - 0.5 * std::pow(0.96, k * opt_.schedule_decay)); };
  mu_t_ = mu(t);
  mu_next_ = mu(t + 1);
  s_t_ = double(m_schedule_) * mu_t_;
  s_next_ = s_t_ * mu_next_;
  m_schedule_ = float(s_t_);
}

void Nadam::update(ParamState& s, const Tensor& grad) {
  const float b1 = float(opt_.beta1), b2 = float(opt_.beta2);
  const float one_m_b1 = float(1 - opt_.beta1), one_m_b2 = float(1 - opt_.beta2);
  const float g_scale = float(1 / (1 - s_t_));                                  // g' = g * g_scale
  const float m_scale = float(1 / (1 - s_next_));                               // m' = m * m_scale
  const float v_scale = float(1 / (1 - std::pow(opt_.beta2, double(steps_))));  // v' = v * v_scale
  const float c_g = float(1 - mu_t_), c_m = float(mu_next_);
  const float lr = float(lr_), eps = float(opt_.eps);
  batch_.add(s.param.device(), {s.param.data(), s.slots[0].data(), s.slots[1].data(), grad.data(), s.param.numel(),
                                {b1, b2, one_m_b1, one_m_b2, g_scale, m_scale, v_scale, c_g, c_m, lr, eps}});
}

void Nadam::end_step(bool apply) { apply ? batch_.flush() : batch_.discard(); }

std::map<std::string, std::string> Nadam::hyperparameters() const {
  return {{"beta1", str(opt_.beta1)},
          {"beta2", str(opt_.beta2)},
          {"eps", str(opt_.eps)},
          {"schedule_decay", str(opt_.schedule_decay)}};
}

}  // namespace nimbus
