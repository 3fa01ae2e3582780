// tensor.h: the tensor every part of nimbus passes around.
//
// A Tensor is a handle (shared_ptr) to a TensorImpl: a contiguous row-major
// buffer on one device plus its Shape and its element type (DType: float32, the
// default and what every op computes in, or bfloat16, kernels/common/dtype.h). Images are NCHW. Copying a
// Tensor copies the handle, not the data (like torch.Tensor); clone() copies
// the data. reshape()/view share storage. There are no strides: every tensor is
// contiguous, which keeps every kernel a plain loop over memory.
//
// Autograd state lives on the impl: requires_grad, the accumulated .grad of a
// leaf, and grad_fn, the Node that produced a non-leaf (see autograd.h).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/shape.h"
#include "kernels/common/dtype.h"

namespace nimbus {

class Rng;
struct Node;

// One device buffer, returned to its device's caching allocator when the last
// tensor using it goes away. `version` counts the writes into it after it was made
// (copy_, fill_, add_inplace, an optimiser's update, mark_written): autograd compares
// it with what an op saved for backward (autograd.h), as PyTorch's version counter.
struct Storage {
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
  uint64_t version = 0;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  DType dtype = DType::F32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;  // leaves only: dL/dthis, accumulated by backward()
  std::shared_ptr<Node> grad_fn;     // non-leaves: the op that produced this tensor
};

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor (like an empty torch Optional)
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories (memory from the device's caching allocator) ----
  static Tensor empty(const Shape& shape, Device device = Device::CPU, DType dtype = DType::F32);  // uninitialised
  static Tensor zeros(const Shape& shape, Device device = Device::CPU);
  static Tensor full(const Shape& shape, float value, Device device = Device::CPU);
  static Tensor ones(const Shape& shape, Device device = Device::CPU) { return full(shape, 1.f, device); }
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values, Device device = Device::CPU);
  static Tensor scalar(float value) { return from_vector(Shape{}, {value}); }
  static Tensor randn(const Shape& shape, Rng& rng, float mean = 0.f, float std = 1.f);
  static Tensor uniform(const Shape& shape, Rng& rng, float lo, float hi);

  // ---- what it is ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int ndim() const { return shape().ndim(); }
  int64_t size(int dim) const { return shape()[dim]; }
  int64_t numel() const { return shape().numel(); }
  Device device() const;
  bool is_cpu() const { return device() == Device::CPU; }
  DType dtype() const;
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype()); }

  // Raw data. On a non-CPU device this is a device pointer: pass it to kernels, never dereference.
  // data() is the float32 view most ops use: on a bfloat16 tensor it throws an Error saying so
  // (cast with to(DType::F32) first); data_bf16() is a bfloat16 tensor's elements (and throws on a
  // float32 one). data_as<T>() is either, for ops written once for both dtypes (T float or bfloat16).
  float* data();
  const float* data() const;
  bfloat16* data_bf16();
  const bfloat16* data_bf16() const;
  template <typename T> T* data_as();
  template <typename T> const T* data_as() const;

  // ---- values (copies to the host when needed) ----
  float item() const;  // the one value of a 1-element tensor
  std::vector<float> to_vector() const;  // bfloat16 values are widened (exactly)
  Tensor to(Device device) const;  // same tensor if already there; never records autograd
  // Same tensor if already of that type; else a new one on the same device, cast by the device's
  // backend (float32 -> bfloat16 rounds to nearest even, keeps NaN; back is exact). Not recorded:
  // no gradient flows through a cast.
  Tensor to(DType dtype) const;
  Tensor clone() const;            // deep copy of the data, no autograd history
  Tensor detach() const;           // same storage, no autograd history, requires_grad false
  void copy_(const Tensor& src);   // overwrite data in place; shapes and dtypes must match; not recorded
  void fill_(float value);         // float32 only; not recorded
  // Writes in place count (Storage::version): a backward that needs what was overwritten is an error.
  // Code writing through data() itself says so with mark_written().
  uint64_t version() const;
  void mark_written();
  Tensor view(const Shape& shape) const;  // same storage and history-free; numel must match

  // ---- autograd ----
  bool requires_grad() const;
  Tensor& set_requires_grad(bool on);
  Tensor grad() const;  // undefined until backward() reached this leaf
  void set_grad(const Tensor& g);
  void zero_grad();     // drops the accumulated gradient
  bool is_leaf() const;
  const std::shared_ptr<Node>& grad_fn() const;
  // Reverse-mode autodiff from this tensor. With no argument it must have one
  // element and dL/dthis = 1 (a loss); otherwise grad_output has this shape.
  void backward(const Tensor& grad_output = Tensor()) const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

 private:
  TensorImpl& checked() const;
  std::shared_ptr<TensorImpl> impl_;
};

template <> inline float* Tensor::data_as<float>() { return data(); }
template <> inline const float* Tensor::data_as<float>() const { return data(); }
template <> inline bfloat16* Tensor::data_as<bfloat16>() { return data_bf16(); }
template <> inline const bfloat16* Tensor::data_as<bfloat16>() const { return data_bf16(); }

// "(2,3,8,8) cpu" style description for error messages ("(2,3) cuda bfloat16" for bf16).
std::string describe(const Tensor& t);

}  // namespace nimbus
