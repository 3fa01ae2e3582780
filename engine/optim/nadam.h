// nadam.h: Nadam exactly as Keras 2.x optimizers.Nadam, the optimiser DSen2-CR
// was trained with (shared/reference/dsen2cr-sen12mscr.md section 5.1). It is
// NOT torch.optim.NAdam (different momentum-schedule bookkeeping).
//
//   t = step() count (1, 2, ...; one for the whole optimiser, as Keras' `iterations`)
//   mu_t     = beta1 * (1 - 0.5 * 0.96^(t * schedule_decay)),  mu_{t+1} likewise
//   S_t      = S_{t-1} * mu_t, S_0 = 1                  state "m_schedule" (float32, as Keras)
//   g'       = g / (1 - S_t)
//   m        = beta1 * m + (1 - beta1) * g,   m' = m / (1 - S_t * mu_{t+1})   state "<param>.m"
//   v        = beta2 * v + (1 - beta2) * g^2, v' = v / (1 - beta2^t)          state "<param>.v"
//   m_bar    = (1 - mu_t) * g' + mu_{t+1} * m'
//   p       -= lr * m_bar / (sqrt(v') + eps)
// Defaults are DSen2-CR's (beta 0.9/0.999, eps 1e-8, schedule_decay 0.004; lr 7e-5 there).
#pragma once
#include "engine/optim/optimizer.h"

namespace nimbus {

struct NadamOptions {
  double lr = 2e-3;  // Keras' default; DSen2-CR uses 7e-5
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double schedule_decay = 0.004;
};

class Nadam : public Optimizer {
 public:
  Nadam(const NamedTensors& params, const NadamOptions& options);
  const char* type() const override { return "nadam"; }
  const NadamOptions& options() const { return opt_; }
  float m_schedule() const { return clock().m_schedule; }  // a download once the state is on a device

 protected:
  size_t scalars_bytes() const override { return sizeof(NadamScalars); }
  void prepare(Device d, OptimClock* clock, double* steps, void* scalars, bool advance,
               const StepMask& mask) override;
  void update(ParamState& s, const Tensor& grad, const void* scalars) override;
  void end_step(bool apply) override;
  std::map<std::string, std::string> hyperparameters() const override;

 private:
  NadamOptions opt_;
  UpdateBatch<NadamTensor> batch_;
  // S_t, kept in float32 like Keras' variable, so a checkpoint restores it exactly. The device clock
  // holds the live value; this copy is what a new clock starts from and what state_dict() saves.
  mutable float m_schedule_ = 1.f;
  void init_clock(OptimClock& c) const override { c.m_schedule = m_schedule_; }
  void clock_read(const OptimClock& c) const override { m_schedule_ = c.m_schedule; }
};

}  // namespace nimbus
