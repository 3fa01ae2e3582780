// optimizer.cpp: parameter bookkeeping, the device state a step advances, and state export/import
// (see optimizer.h).
#include "engine/optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>

#include "engine/backend.h"
#include "engine/device.h"
#include "engine/graph.h"

namespace nimbus {

Optimizer::Optimizer(const NamedTensors& params, double lr, std::vector<std::string> slot_names)
    : slot_names_(std::move(slot_names)), lr_(lr) {
  set_lr(lr);
  std::set<std::string> names;
  std::set<TensorImpl*> seen;
  for (const auto& [name, t] : params) {
    NIMBUS_CHECK(t.defined(), "optimizer: parameter '", name, "' is undefined");
    NIMBUS_CHECK(t.requires_grad() && t.is_leaf(), "optimizer: '", name, "' is not a trainable leaf tensor");
    NIMBUS_CHECK(names.insert(name).second, "optimizer: parameter name '", name, "' given twice");
    NIMBUS_CHECK(seen.insert(t.impl()).second, "optimizer: parameter '", name, "' is the same tensor as another");
    params_.push_back({name, t, 0, {}});
  }
  register_scalar("step", nullptr);  // steps_, handled specially (an integer)
}

void Optimizer::set_lr(double lr) {
  NIMBUS_CHECK(std::isfinite(lr) && lr >= 0, "optimizer: learning rate must be finite and >= 0, got ", lr);
  NIMBUS_CHECK(!(state_.defined() && device_capturing(state_.device())), type(),
               ": set_lr inside a graph capture (the graph would replay this rate); set it between replays");
  if (state_.defined() && lr != lr_) backend(state_.device(), "optim_set_lr").optim_set_lr(clock_ptr(), lr);
  lr_ = lr;
}

void Optimizer::zero_grad() {
  for (auto& p : params_) p.param.zero_grad();
}

namespace {
constexpr size_t kClockBytes = 64;
static_assert(sizeof(OptimClock) <= kClockBytes, "the clock's slot is too small");
}  // namespace

OptimClock* Optimizer::clock_ptr() { return reinterpret_cast<OptimClock*>(state_.data()); }
double* Optimizer::steps_ptr() { return reinterpret_cast<double*>(reinterpret_cast<unsigned char*>(state_.data()) + kClockBytes); }
unsigned char* Optimizer::scalars_ptr() { return reinterpret_cast<unsigned char*>(steps_ptr() + params_.size()); }

void Optimizer::ensure_state(Device d) {
  if (state_.defined() && state_.device() == d) return;
  NIMBUS_CHECK(!device_capturing(d), type(), ": the optimiser's first step on ", device_name(d),
               " is inside a graph capture; run one step eagerly before capturing (it creates the state)");
  if (state_.defined()) clock_read(clock());  // moving devices: the subclass's fields as they stand now
  const size_t bytes = kClockBytes + params_.size() * (sizeof(double) + scalars_bytes());
  std::vector<float> host((bytes + sizeof(float) - 1) / sizeof(float), 0.f);
  OptimClock c;
  c.lr = lr_;
  c.step = double(steps_);
  init_clock(c);
  auto* base = reinterpret_cast<unsigned char*>(host.data());
  std::memcpy(base, &c, sizeof c);
  for (size_t i = 0; i < params_.size(); ++i) {
    const double t = double(params_[i].step);
    std::memcpy(base + kClockBytes + i * sizeof(double), &t, sizeof t);
  }
  state_ = Tensor::from_vector({int64_t(host.size())}, host).to(d);
}

OptimClock Optimizer::clock() const {
  OptimClock c;
  if (state_.defined()) {
    const Tensor host = state_.to(Device::CPU);
    std::memcpy(static_cast<void*>(&c), host.data(), sizeof c);
  } else {
    c.lr = lr_;
    c.step = double(steps_);
    init_clock(c);
  }
  return c;
}

void Optimizer::step() {
  // Which parameters step, on which device; their slots (before anything is launched, so that a
  // refusal leaves the state as it was).
  std::vector<size_t> stepping;
  Device dev = params_.empty() ? Device::CPU : params_[0].param.device();
  for (size_t i = 0; i < params_.size(); ++i) {
    ParamState& p = params_[i];
    NIMBUS_CHECK(p.param.device() == dev, type(), ": parameter '", p.name, "' is on ", device_name(p.param.device()),
                 " but '", params_[0].name, "' on ", device_name(dev), ": one device per optimiser");
    Tensor g = p.param.grad();
    if (!g.defined()) continue;
    NIMBUS_CHECK(p.param.device() == g.device(), type(), ": parameter '", p.name, "' is on ",
                 device_name(p.param.device()), " but its gradient on ", device_name(g.device()));
    // float32 master weights and gradients (the update kernels' types): refused here, before the
    // prepare advances any count, not by the update half-way through the step.
    NIMBUS_CHECK(p.param.dtype() == DType::F32 && g.dtype() == DType::F32 && g.shape() == p.param.shape(), type(),
                 ": parameter '", p.name, "' is ", describe(p.param), " with gradient ", describe(g),
                 "; the optimisers update float32 parameters from float32 gradients of their shape");
    if (p.step == 0) {
      NIMBUS_CHECK(!device_capturing(dev), type(), ": parameter '", p.name, "' gets its first update inside a graph "
                   "capture (its state would be created by the graph at every replay); run one step eagerly first");
      p.slots.clear();
      for (size_t k = 0; k < slot_names_.size(); ++k) p.slots.push_back(Tensor::zeros(p.param.shape(), dev));
    }
    // Slots on another device: loaded from a checkpoint before the model moved (the trainers resume on
    // the CPU, then move to the GPU). They follow the parameter, as the first step there runs eagerly.
    for (Tensor& slot : p.slots) {
      if (slot.device() == dev) continue;
      NIMBUS_CHECK(!device_capturing(dev), type(), ": the state of '", p.name, "' is on ", device_name(slot.device()),
                   " but the parameter on ", device_name(dev), " inside a graph capture; run one step eagerly first");
      slot = slot.to(dev);
    }
    stepping.push_back(i);
  }
  ensure_state(dev);
  // The prepare: the clock advances once; parameters kStepMaskParams at a time.
  const size_t P = params_.size();
  size_t next = 0;
  for (size_t first = 0; first == 0 || first < P; first += kStepMaskParams) {
    StepMask m;
    m.first = int(first);
    m.count = int(std::min(P - first, size_t(kStepMaskParams)));
    bool any = false;
    for (; next < stepping.size() && stepping[next] < first + size_t(m.count); ++next) {
      const size_t i = stepping[next] - first;
      m.bits[i >> 5] |= 1u << (i & 31);
      any = true;
    }
    if (first == 0 || any) prepare(dev, clock_ptr(), steps_ptr(), scalars_ptr(), first == 0, m);
  }
  try {
    for (size_t i : stepping) update(params_[i], params_[i].param.grad(), scalars_ptr() + i * scalars_bytes());
  } catch (...) {
    end_step(false);
    throw;
  }
  end_step(true);
  for (size_t i : stepping) params_[i].param.mark_written();  // a graph that saved them is stale now
  // The host's mirrors of the counts the prepare advanced: now, or at each replay of a captured step.
  auto advance = [this, stepping = std::move(stepping)] {
    ++steps_;
    for (size_t i : stepping) ++params_[i].step;
  };
  if (DeviceGraph::capturing()) DeviceGraph::at_replay(std::move(advance));
  else advance();
}

OptimizerState Optimizer::state_dict() const {
  clock_read(clock());  // the subclass's scalars, as the device has them
  OptimizerState st;
  NIMBUS_CHECK(steps_ < (int64_t(1) << 24), type(), ": ", steps_, " steps, more than a checkpoint's float32 count "
               "holds exactly (2^24)");
  for (const auto& [name, v] : scalars_) st.tensors.emplace_back(name, Tensor::scalar(v ? *v : float(steps_)));
  for (const auto& p : params_) {
    if (p.step == 0) continue;
    // Counts travel as float32 (as PyTorch saves them), exact to 2^24: refused now rather than at the resume.
    NIMBUS_CHECK(p.step < (int64_t(1) << 24), type(), ": parameter '", p.name, "' has taken ", p.step,
                 " steps, more than a checkpoint's float32 count holds exactly (2^24)");
    st.tensors.emplace_back(p.name + ".step", Tensor::scalar(float(p.step)));
    for (size_t i = 0; i < slot_names_.size(); ++i)
      st.tensors.emplace_back(p.name + "." + slot_names_[i], p.slots[i].clone());
  }
  st.info = hyperparameters();
  st.info["type"] = type();
  st.info["lr"] = exact_str(lr_);
  return st;
}

void Optimizer::load_state_dict(const OptimizerState& st) {
  for (const ParamState& p : params_)
    NIMBUS_CHECK(!device_capturing(p.param.device()), type(), ": load_state_dict inside a graph capture");
  std::map<std::string, const Tensor*> src;
  for (const auto& [n, t] : st.tensors) src[n] = &t;
  std::vector<std::string> problems;
  std::set<std::string> used;
  auto take = [&](const std::string& name, const Shape& shape) -> const Tensor* {
    auto it = src.find(name);
    if (it == src.end()) {
      problems.push_back("missing " + name);
      return nullptr;
    }
    used.insert(name);
    if (it->second->shape() != shape) {
      problems.push_back(str(name, " has shape ", it->second->shape(), ", expected ", shape));
      return nullptr;
    }
    // The state is float32 (the moments' precision); another dtype would fail only at the next step.
    if (it->second->dtype() != DType::F32) {
      problems.push_back(str(name, " is ", dtype_name(it->second->dtype()), ", expected float32"));
      return nullptr;
    }
    return it->second;
  };
  auto type_it = st.info.find("type");
  if (type_it == st.info.end())
    problems.push_back("no optimizer type recorded");
  else if (type_it->second != type())
    problems.push_back(str("saved by ", type_it->second, ", loading into ", type()));
  // The hyperparameters the state was made with (betas, eps, ...) must be this optimiser's: the
  // moments of one beta continued with another are neither run (PyTorch would overwrite them silently).
  for (const auto& [key, mine] : hyperparameters()) {
    auto it = st.info.find(key);
    if (it != st.info.end() && it->second != mine)
      problems.push_back(str(key, " was ", it->second, " where this ", type(), " has ", mine));
  }
  double lr = lr_;
  if (auto it = st.info.find("lr"); it != st.info.end()) {
    char* end = nullptr;
    lr = std::strtod(it->second.c_str(), &end);
    if (end == it->second.c_str() || *end || !std::isfinite(lr) || lr < 0)
      problems.push_back("bad lr '" + it->second + "'");
  }

  // Scalars; "step" counts must be non-negative integers.
  auto count = [&](const Tensor* t, const std::string& name) -> int64_t {
    if (!t) return 0;
    float v = t->item();
    if (!(v >= 0 && v == std::floor(v) && v < 16777216.f)) {
      problems.push_back(str(name, " = ", v, " is not a valid step count"));
      return 0;
    }
    return int64_t(v);
  };
  std::vector<float> scalar_values;
  int64_t steps = 0;
  for (const auto& [name, v] : scalars_) {
    const Tensor* t = take(name, Shape{});
    if (!v) steps = count(t, name);
    scalar_values.push_back(t ? t->item() : 0.f);
  }
  // Per parameter: present (step + every slot) or absent (not updated yet).
  std::vector<int64_t> steps_of(params_.size(), 0);
  std::vector<std::vector<const Tensor*>> slots_of(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const ParamState& p = params_[i];
    if (!src.count(p.name + ".step")) continue;
    steps_of[i] = count(take(p.name + ".step", Shape{}), p.name + ".step");
    for (const auto& s : slot_names_) slots_of[i].push_back(take(p.name + "." + s, p.param.shape()));
  }
  for (const auto& [n, t] : st.tensors)
    if (!used.count(n)) problems.push_back("unexpected " + n);
  if (!problems.empty()) {
    std::string msg = str(type(), ": cannot load optimizer state: ");
    for (size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
    throw Error(msg);
  }

  lr_ = lr;
  steps_ = steps;
  for (size_t k = 0; k < scalars_.size(); ++k)
    if (scalars_[k].second) *scalars_[k].second = scalar_values[k];
  for (size_t i = 0; i < params_.size(); ++i) {
    ParamState& p = params_[i];
    p.step = steps_of[i];
    p.slots.clear();
    for (const Tensor* t : slots_of[i]) p.slots.push_back(t->clone().to(p.param.device()));
  }
  state_ = Tensor();  // rebuilt from the loaded values at the next step
}

}  // namespace nimbus
