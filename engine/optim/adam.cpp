// adam.cpp: the step's prepare (scalars on the device) and each parameter queued for the fused batch update (see adam.h).
#include "engine/optim/adam.h"

#include "engine/backend.h"

namespace nimbus {

Adam::Adam(const NamedTensors& params, const AdamOptions& o)
    : Optimizer(params, o.lr, {"exp_avg", "exp_avg_sq"}),
      opt_(o),
      batch_([](Device d, const AdamBatch& b) { backend(d, "adam").adam_update(b); }) {
  NIMBUS_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1 && o.eps >= 0 && o.weight_decay >= 0,
               "adam: need 0 <= beta1, beta2 < 1 and eps, weight_decay >= 0; got beta1=", o.beta1, " beta2=", o.beta2,
               " eps=", o.eps, " weight_decay=", o.weight_decay);
}

void Adam::prepare(Device d, OptimClock* clock, double* steps, void* scalars, bool advance, const StepMask& mask) {
  backend(d, "adam").adam_prepare({clock, steps, static_cast<AdamScalars*>(scalars),
                                   {opt_.beta1, opt_.beta2, opt_.eps, opt_.weight_decay, opt_.decoupled_weight_decay},
                                   advance, mask});
}

void Adam::update(ParamState& s, const Tensor& grad, const void* scalars) {
  batch_.add(s.param.device(), {s.param.data(), s.slots[0].data(), s.slots[1].data(), grad.data(), s.param.numel(),
                                static_cast<const AdamScalars*>(scalars)});
}

void Adam::end_step(bool apply) { apply ? batch_.flush() : batch_.discard(); }

std::map<std::string, std::string> Adam::hyperparameters() const {
  return {{"beta1", exact_str(opt_.beta1)},
          {"beta2", exact_str(opt_.beta2)},
          {"eps", exact_str(opt_.eps)},
          {"weight_decay", exact_str(opt_.weight_decay)}};
}

}  // namespace nimbus
