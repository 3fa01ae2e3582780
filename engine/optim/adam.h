// adam.h: Adam with PyTorch's torch.optim.Adam semantics (amsgrad off), and AdamW (torch.optim.AdamW,
// Loshchilov & Hutter's decoupled weight decay) with decoupled_weight_decay.
//
//   t = this parameter's update count (1, 2, ...)
//   Adam:  g = grad + weight_decay * p              (L2 added to the gradient)
//   AdamW: p = p * (1 - lr * weight_decay), g = grad  (the parameter decays, the moments never see it)
//   m = beta1 * m + (1 - beta1) * g                 state "<param>.exp_avg"
//   v = beta2 * v + (1 - beta2) * g^2               state "<param>.exp_avg_sq"
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// The arithmetic follows PyTorch's order so float32 results agree to rounding.
#pragma once
#include "engine/optim/optimizer.h"

namespace nimbus {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  bool decoupled_weight_decay = false;  // AdamW; its checkpoints say "adamw", which an Adam does not load
};

class Adam : public Optimizer {
 public:
  Adam(const NamedTensors& params, const AdamOptions& options);
  const char* type() const override { return opt_.decoupled_weight_decay ? "adamw" : "adam"; }
  const AdamOptions& options() const { return opt_; }

 protected:
  size_t scalars_bytes() const override { return sizeof(AdamScalars); }
  void prepare(Device d, OptimClock* clock, double* steps, void* scalars, bool advance,
               const StepMask& mask) override;
  void update(ParamState& s, const Tensor& grad, const void* scalars) override;
  void end_step(bool apply) override;
  std::map<std::string, std::string> hyperparameters() const override;

 private:
  AdamOptions opt_;
  UpdateBatch<AdamTensor> batch_;
};

}  // namespace nimbus
