// sgd.h: stochastic gradient descent with PyTorch's torch.optim.SGD semantics.
//
//   g = grad + weight_decay * p
//   momentum != 0:  buf = g at the first update, else buf = momentum * buf + (1 - dampening) * g
//                   g = nesterov ? g + momentum * buf : buf
//   p -= lr * g
// State: "<param>.momentum_buffer" (allocated even when momentum is 0, kept at zero).
#pragma once
#include "engine/optim/optimizer.h"

namespace nimbus {

struct SGDOptions {
  double lr = 0.01;
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(const NamedTensors& params, const SGDOptions& options);
  const char* type() const override { return "sgd"; }
  const SGDOptions& options() const { return opt_; }

 protected:
  size_t scalars_bytes() const override { return sizeof(SgdScalars); }
  void prepare(Device d, OptimClock* clock, double* steps, void* scalars, bool advance,
               const StepMask& mask) override;
  void update(ParamState& s, const Tensor& grad, const void* scalars) override;
  void end_step(bool apply) override;
  std::map<std::string, std::string> hyperparameters() const override;

 private:
  SGDOptions opt_;
  UpdateBatch<SgdTensor> batch_;
};

}  // namespace nimbus
