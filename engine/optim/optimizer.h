// optimizer.h: the base of SGD, Adam and Nadam: the parameter list, per-parameter
// state, the learning rate, and state export/import for checkpoints.
//
// Parameters are given by name (Module::named_parameters()), so a checkpoint
// stores optimiser state under the same names as the weights:
//   "<param>.step"        updates this parameter has had (PyTorch keeps it per parameter)
//   "<param>.<slot>"      the optimiser's tensors: momentum_buffer | exp_avg, exp_avg_sq | m, v
//   "step"                step() calls so far; plus scalars a subclass adds (Nadam: "m_schedule")
// All are float32 tensors (0-d for scalars: counts are exact up to 2^24).
// A parameter's slots are created (zeros, from the caching allocator) at its
// first update; one with no .grad at a step() is skipped, as in PyTorch.
// The learning rate is not state: a schedule (lr_schedule.h) sets it, and the
// checkpoint keeps it as text in the metadata so that it round-trips exactly.
//
// What a step computes per step lives on the parameters' device (kernels/common/optim_scalars.h):
// the clock (learning rate, step count, Nadam's schedule), each parameter's update count and its
// scalars. A step is one prepare launch, which advances them there, then the fused updates, which
// read the scalars there; set_lr() writes the new rate there in order with the steps. So a step
// captured in a CUDA graph replays as a correct next step, and a step never waits for the device.
// The host keeps exact mirrors of the counts (they are integers) for checkpoints.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/nn/module.h"
#include "kernels/common/optim_scalars.h"  // TensorBatch, kOptimBatch

namespace nimbus {

// Collects one step's per-tensor updates and hands them to the backend kOptimBatch at a time: one
// call per batch and device (one CUDA launch each), so an optimiser step is a handful of launches,
// not one per parameter tensor. The entries point at the parameters' data, slots and gradients,
// which the optimiser and the parameters keep alive until flush().
template <typename Entry>
class UpdateBatch {
 public:
  using Launch = void (*)(Device, const TensorBatch<Entry>&);
  explicit UpdateBatch(Launch launch) : launch_(launch) {}
  void add(Device d, const Entry& e) {
    if (batch_.count == kOptimBatch || (batch_.count > 0 && d != device_)) flush();
    device_ = d;
    batch_.t[batch_.count++] = e;
  }
  void flush() {  // emptied before the launch: a launch that throws leaves no stale entries behind
    if (batch_.count == 0) return;
    const TensorBatch<Entry> full = batch_;
    batch_.count = 0;
    launch_(device_, full);
  }
  void discard() { batch_.count = 0; }

 private:
  Launch launch_;
  Device device_ = Device::CPU;
  TensorBatch<Entry> batch_;
};

struct OptimizerState {
  NamedTensors tensors;                     // names as above
  std::map<std::string, std::string> info;  // "type", "lr", hyper-parameters (exact_str), compared on load
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a .grad. A parameter, gradient or device it cannot take is
  // refused before anything changes. An error from the update itself (out of memory, a device fault)
  // comes after the device's step counts advanced and leaves the host's behind them: state_dict() is
  // then not to be trusted; load the last checkpoint.
  void step();
  void zero_grad();  // drops every parameter's .grad
  double lr() const { return lr_; }
  // Writes the rate into the device clock in order with the steps (a one-thread launch). Refused
  // during a graph capture: the graph would replay the rate it was given at every replay.
  void set_lr(double lr);
  int64_t steps() const { return steps_; }
  virtual const char* type() const = 0;  // "sgd", "adam", "adamw", "nadam"

  OptimizerState state_dict() const;
  // Replaces all state. Throws ONE Error listing every missing, unexpected or
  // wrongly shaped tensor, or a type mismatch; on error nothing is changed. Refused during a graph
  // capture; a graph captured before the load still points at the old state: capture again.
  void load_state_dict(const OptimizerState& state);

 protected:
  struct ParamState {
    std::string name;
    Tensor param;
    int64_t step = 0;           // updates so far; 0 = no slots yet
    std::vector<Tensor> slots;  // one per slot name, allocated at the first update
  };
  Optimizer(const NamedTensors& params, double lr, std::vector<std::string> slot_names);
  // Subclass hooks. prepare(): launch the step's prepare on device d (optim_scalars.h; the pointers
  // are the device state, `scalars` an array of scalars_bytes() per parameter). Then update() once
  // per parameter with a gradient, after s.step was incremented and slots exist, with its scalars'
  // device address (queue it: UpdateBatch); then end_step(true), or end_step(false) when the step
  // failed (queued updates are dropped).
  virtual size_t scalars_bytes() const = 0;
  virtual void prepare(Device d, OptimClock* clock, double* steps, void* scalars, bool advance,
                       const StepMask& mask) = 0;
  virtual void update(ParamState& s, const Tensor& grad, const void* scalars) = 0;
  virtual void end_step(bool apply) {}
  // The clock's subclass fields: written into a new device clock, and read back from it.
  virtual void init_clock(OptimClock& c) const {}
  virtual void clock_read(const OptimClock& c) const {}
  OptimClock clock() const;  // the device clock (a download: a host wait), or the host's view before any step
  // Optimiser-wide float scalars saved with the state (name -> variable).
  void register_scalar(const std::string& name, float* value) { scalars_.emplace_back(name, value); }
  virtual std::map<std::string, std::string> hyperparameters() const { return {}; }

  std::vector<ParamState> params_;
  std::vector<std::string> slot_names_;
  double lr_;
  int64_t steps_ = 0;

 private:
  // The device state: [OptimClock, padded to 64 bytes][double steps[P]][scalars[P]], one float32
  // tensor's storage on the parameters' device; created at the first step, dropped by a load.
  void ensure_state(Device d);
  OptimClock* clock_ptr();
  double* steps_ptr();
  unsigned char* scalars_ptr();
  std::vector<std::pair<std::string, float*>> scalars_;
  Tensor state_;
};

}  // namespace nimbus
