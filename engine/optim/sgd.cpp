// sgd.cpp: one fused loop per parameter (see sgd.h for the update).
#include "engine/optim/sgd.h"

#include "engine/backend.h"

namespace nimbus {

SGD::SGD(const NamedTensors& params, const SGDOptions& o) : Optimizer(params, o.lr, {"momentum_buffer"}), opt_(o) {
  NIMBUS_CHECK(o.momentum >= 0 && o.weight_decay >= 0 && o.dampening >= 0, "sgd: momentum (", o.momentum,
               "), dampening (", o.dampening, ") and weight_decay (", o.weight_decay, ") must be >= 0");
  NIMBUS_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
               "sgd: nesterov needs momentum > 0 and dampening 0 (as in PyTorch)");
}

void SGD::update(ParamState& s, const Tensor& grad) {
  float* p = s.param.data();
  float* buf = s.slots[0].data();
  const float* g = grad.data();
  const int64_t n = s.param.numel();
  const float lr = float(lr_), wd = float(opt_.weight_decay), mom = float(opt_.momentum);
  const float keep = float(1.0 - opt_.dampening);
  const bool first = s.step == 1, use_mom = opt_.momentum != 0, nesterov = opt_.nesterov;
  backend(s.param.device(), "sgd").sgd_update(p, buf, g, n, {lr, wd, mom, keep, first, use_mom, nesterov});
}

std::map<std::string, std::string> SGD::hyperparameters() const {
  return {{"momentum", str(opt_.momentum)},
          {"dampening", str(opt_.dampening)},
          {"weight_decay", str(opt_.weight_decay)},
          {"nesterov", opt_.nesterov ? "true" : "false"}};
}

}  // namespace nimbus
