// nadam.cpp: the step's prepare (the Keras-2 schedule advanced on the device), then each parameter
// queued for the fused batch update.
#include "engine/optim/nadam.h"

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

void Nadam::prepare(Device d, OptimClock* clock, double* steps, void* scalars, bool advance, const StepMask& mask) {
  backend(d, "nadam").nadam_prepare({clock, steps, static_cast<NadamScalars*>(scalars),
                                     {opt_.beta1, opt_.beta2, opt_.eps, opt_.schedule_decay}, advance, mask});
}

void Nadam::update(ParamState& s, const Tensor& grad, const void* scalars) {
  batch_.add(s.param.device(), {s.param.data(), s.slots[0].data(), s.slots[1].data(), grad.data(), s.param.numel(),
                                static_cast<const NadamScalars*>(scalars)});
}

void Nadam::end_step(bool apply) { apply ? batch_.flush() : batch_.discard(); }

std::map<std::string, std::string> Nadam::hyperparameters() const {
  return {{"beta1", exact_str(opt_.beta1)},
          {"beta2", exact_str(opt_.beta2)},
          {"eps", exact_str(opt_.eps)},
          {"schedule_decay", exact_str(opt_.schedule_decay)}};
}

}  // namespace nimbus
