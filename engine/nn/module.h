// module.h: the base class of every layer and model, with PyTorch's naming.
//
// A Module owns named parameters (trainable leaves, requires_grad on), named
// buffers (state that is saved but not trained: BatchNorm's running stats) and
// named child modules. state_dict() walks them exactly as PyTorch's
// nn.Module.state_dict() does, so names match torch checkpoints one to one:
//   own parameters (registration order), then own buffers, then each child
//   (registration order) under "<child>." -> "layer1.0.conv1.weight",
//   "bn1.running_mean", "bn1.num_batches_tracked".
// Tensors are handles: a layer keeps the Tensor it registered and uses it in
// forward; load_state_dict() and to() change the data in place, so those
// handles stay valid.
//
// There is no virtual forward on Module (models take different inputs); layers
// with one input and one output derive from UnaryModule, which Sequential chains.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace nimbus {

// Ordered (name, tensor) list: the order is part of the contract (PyTorch's order).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// What a non-strict load_state_dict skipped (PyTorch's _IncompatibleKeys).
struct LoadResult {
  std::vector<std::string> missing;     // in the module, absent from the source
  std::vector<std::string> unexpected;  // in the source, not in the module
};

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;  // modules are shared through shared_ptr, never copied
  Module& operator=(const Module&) = delete;

  // ---- building (called from a layer's constructor) ----
  // Each returns a handle to what it stored. Names must be unique within this
  // module (across parameters, buffers and children) and contain no '.'.
  Tensor register_parameter(const std::string& name, Tensor t);  // sets requires_grad
  Tensor register_buffer(const std::string& name, Tensor t);
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

  // ---- walking (recursive, PyTorch order, dotted names) ----
  // A tensor reached under several names (tied weights, a module registered twice) is listed once by
  // named_parameters and named_buffers, under its first name, and under every name by state_dict: PyTorch's.
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  NamedTensors state_dict() const;  // parameters and buffers, interleaved per module as PyTorch does
  std::vector<Tensor> parameters() const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }
  int64_t num_parameters() const;  // total elements over all parameters

  // ---- modes and gradients ----
  void train(bool on = true);  // recursive; BatchNorm uses batch statistics while training
  void eval() { train(false); }
  bool is_training() const { return training_; }
  void zero_grad();  // drops every parameter's .grad (PyTorch's set_to_none)

  // Moves every parameter and buffer (and grad) to `device`, in place: handles
  // held by layers see the new device.
  void to(Device device);

  // Copies values into this module's tensors (in place, shapes must match).
  // strict: every name must match both ways. Any problem (missing, unexpected
  // with strict, or a wrong shape, which is an error even when not strict)
  // throws ONE Error listing all of them. Returns what a non-strict load skipped.
  LoadResult load_state_dict(const NamedTensors& source, bool strict = true);
  LoadResult load_state_dict(const std::map<std::string, Tensor>& source, bool strict = true);

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void check_new_name(const std::string& name, const char* what) const;
  enum Kind { kParams = 1, kBuffers = 2 };
  void collect(const std::string& prefix, int kinds, NamedTensors& out) const;

  NamedTensors params_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// A module with one tensor in and one tensor out: what Sequential can chain.
class UnaryModule : public Module {
 public:
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
};

// Children named "0", "1", ... applied in order (PyTorch's nn.Sequential).
class Sequential : public UnaryModule {
 public:
  Sequential() = default;
  Sequential(std::initializer_list<std::shared_ptr<UnaryModule>> layers);
  void push_back(std::shared_ptr<UnaryModule> layer);
  size_t size() const { return layers_.size(); }
  UnaryModule& operator[](size_t i) const;
  Tensor forward(const Tensor& x) override;

 private:
  std::vector<std::shared_ptr<UnaryModule>> layers_;
};

// make_sequential(a, b, c): a shared Sequential of any UnaryModule subclasses.
template <typename... L>
std::shared_ptr<Sequential> make_sequential(std::shared_ptr<L>... layers) {
  return std::make_shared<Sequential>(std::initializer_list<std::shared_ptr<UnaryModule>>{layers...});
}

}  // namespace nimbus
