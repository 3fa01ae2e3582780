// sgd.cpp: each parameter queued for the fused batch update (see sgd.h for the update).
#include "engine/optim/sgd.h"

#include "engine/backend.h"

namespace nimbus {

SGD::SGD(const NamedTensors& params, const SGDOptions& o)
    : Optimizer(params, o.lr, {"momentum_buffer"}),
      opt_(o),
      batch_([](Device d, const SgdBatch& b) { backend(d, "sgd").sgd_update(b); }) {
  NIMBUS_CHECK(o.momentum >= 0 && o.weight_decay >= 0 && o.dampening >= 0, "sgd: momentum (", o.momentum,
               "), dampening (", o.dampening, ") and weight_decay (", o.weight_decay, ") must be >= 0");
  NIMBUS_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
               "sgd: nesterov needs momentum > 0 and dampening 0 (as in PyTorch)");
}

void SGD::prepare(Device d, OptimClock* clock, double* steps, void* scalars, bool advance, const StepMask& mask) {
  backend(d, "sgd").sgd_prepare({clock, steps, static_cast<SgdScalars*>(scalars),
                                 {opt_.momentum, opt_.dampening, opt_.weight_decay, opt_.nesterov}, advance, mask});
}

void SGD::update(ParamState& s, const Tensor& grad, const void* scalars) {
  batch_.add(s.param.device(), {s.param.data(), s.slots[0].data(), grad.data(), s.param.numel(),
                                static_cast<const SgdScalars*>(scalars)});
}

void SGD::end_step(bool apply) { apply ? batch_.flush() : batch_.discard(); }

std::map<std::string, std::string> SGD::hyperparameters() const {
  return {{"momentum", exact_str(opt_.momentum)},
          {"dampening", exact_str(opt_.dampening)},
          {"weight_decay", exact_str(opt_.weight_decay)},
          {"nesterov", opt_.nesterov ? "true" : "false"}};
}

}  // namespace nimbus
