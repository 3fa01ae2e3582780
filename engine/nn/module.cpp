// module.cpp: registration, the PyTorch-ordered walk, load_state_dict, Sequential.
#include "engine/nn/module.h"

#include <set>

namespace nimbus {

void Module::check_new_name(const std::string& name, const char* what) const {
  NIMBUS_CHECK(!name.empty() && name.find('.') == std::string::npos, "Module: ", what, " name '", name,
               "' must be non-empty and contain no '.'");
  auto taken = [&](const auto& list) {
    for (const auto& [n, _] : list)
      if (n == name) return true;
    return false;
  };
  NIMBUS_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_), "Module: cannot register ", what, " '", name,
               "': the name is already used in this module");
}

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  check_new_name(name, "parameter");
  NIMBUS_CHECK(t.defined(), "Module: parameter '", name, "' is an undefined tensor");
  NIMBUS_CHECK(t.is_leaf(), "Module: parameter '", name, "' must be a leaf tensor (detach it first)");
  t.set_requires_grad(true);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  check_new_name(name, "buffer");
  NIMBUS_CHECK(t.defined(), "Module: buffer '", name, "' is an undefined tensor");
  buffers_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  check_new_name(name, "module");
  NIMBUS_CHECK(m, "Module: child module '", name, "' is null");
  m->train(training_);
  children_.emplace_back(name, std::move(m));
}

// PyTorch's _save_to_state_dict order: own params, own buffers, then children.
void Module::collect(const std::string& prefix, int kinds, NamedTensors& out) const {
  if (kinds & kParams)
    for (const auto& [n, t] : params_) out.emplace_back(prefix + n, t);
  if (kinds & kBuffers)
    for (const auto& [n, t] : buffers_) out.emplace_back(prefix + n, t);
  for (const auto& [n, child] : children_) child->collect(prefix + n + ".", kinds, out);
}

namespace {
// A tensor reached under several names (a module registered twice, a weight tied between two layers)
// kept once, under its first name: PyTorch's remove_duplicate. An optimiser given both would step it
// twice (ours refuses), and num_parameters would count it twice.
NamedTensors first_names(NamedTensors all) {
  NamedTensors out;
  std::set<const TensorImpl*> seen;
  for (auto& [n, t] : all)
    if (seen.insert(t.impl()).second) out.emplace_back(std::move(n), std::move(t));
  return out;
}
}  // namespace

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", kParams, out);
  return first_names(std::move(out));
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", kBuffers, out);
  return first_names(std::move(out));
}

NamedTensors Module::state_dict() const {
  NamedTensors out;
  collect("", kParams | kBuffers, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (auto& [n, t] : named_parameters()) t.zero_grad();
}

void Module::to(Device device) {
  for (auto& [n, t] : state_dict()) {
    if (t.device() == device) continue;
    TensorImpl* impl = t.impl();
    impl->storage = t.to(device).impl()->storage;  // swap the storage under the same handle
    if (impl->grad) impl->grad = Tensor(impl->grad).to(device).impl_ptr();
  }
}

LoadResult Module::load_state_dict(const std::map<std::string, Tensor>& source, bool strict) {
  return load_state_dict(NamedTensors(source.begin(), source.end()), strict);
}

LoadResult Module::load_state_dict(const NamedTensors& source, bool strict) {
  NamedTensors mine = state_dict();
  std::map<std::string, const Tensor*> src;
  for (const auto& [n, t] : source) src[n] = &t;
  LoadResult result;
  std::vector<std::string> bad_shape;
  std::set<std::string> known;
  for (auto& [n, t] : mine) {
    known.insert(n);
    auto it = src.find(n);
    if (it == src.end())
      result.missing.push_back(n);
    else if (it->second->shape() != t.shape())
      bad_shape.push_back(str(n, ": checkpoint ", it->second->shape(), " vs model ", t.shape()));
  }
  for (const auto& [n, t] : source)
    if (!known.count(n)) result.unexpected.push_back(n);

  bool fail = !bad_shape.empty() || (strict && (!result.missing.empty() || !result.unexpected.empty()));
  if (fail) {
    auto join = [](const std::vector<std::string>& v) {
      std::string s;
      for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
      return s;
    };
    std::string msg = "load_state_dict: ";
    if (strict && !result.missing.empty())
      msg += str(result.missing.size(), " missing: [", join(result.missing), "]; ");
    if (strict && !result.unexpected.empty())
      msg += str(result.unexpected.size(), " unexpected: [", join(result.unexpected), "]; ");
    if (!bad_shape.empty()) msg += str(bad_shape.size(), " wrongly shaped: [", join(bad_shape), "]; ");
    msg.resize(msg.size() - 2);
    throw Error(msg);  // nothing has been copied yet: the module is unchanged
  }
  for (auto& [n, t] : mine) {
    auto it = src.find(n);
    if (it == src.end()) continue;
    // Another dtype is converted, as PyTorch's load_state_dict does (copy_ takes one dtype: a bfloat16
    // entry used to throw half-way, after the entries before it were copied).
    const Tensor& from = *it->second;
    t.copy_(from.dtype() == t.dtype() ? from : from.to(t.dtype()));
  }
  return result;
}

// ---- Sequential ----

Sequential::Sequential(std::initializer_list<std::shared_ptr<UnaryModule>> layers) {
  for (const auto& l : layers) push_back(l);
}

void Sequential::push_back(std::shared_ptr<UnaryModule> layer) {
  register_module(std::to_string(layers_.size()), layer);
  layers_.push_back(std::move(layer));
}

UnaryModule& Sequential::operator[](size_t i) const {
  NIMBUS_CHECK(i < layers_.size(), "Sequential: index ", i, " out of range for ", layers_.size(), " layers");
  return *layers_[i];
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor y = x;
  for (auto& l : layers_) y = l->forward(y);
  return y;
}

}  // namespace nimbus
