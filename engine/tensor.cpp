// tensor.cpp: storage, factories, host<->device copies and the autograd accessors.
#include "engine/tensor.h"

#include <cstring>

#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/random.h"

namespace nimbus {

Storage::Storage(size_t nbytes, Device dev) : bytes(nbytes), device(dev) {
  data = device_runtime(dev).allocator->allocate(nbytes);
}

Storage::~Storage() { device_runtime(device).allocator->deallocate(data); }

namespace {
std::shared_ptr<TensorImpl> make_impl(const Shape& shape, Device device, DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  // Shape keeps the element count in 64 bits; the byte count must fit too (1 << 62 floats do not).
  const size_t n = size_t(shape.numel()), unit = dtype_size(dtype);
  NIMBUS_CHECK(n <= (size_t(1) << 62) / unit, "tensor: ", shape.str(), " of ", dtype_name(dtype),
               " is too large to address (", n, " elements)");
  impl->storage = std::make_shared<Storage>(n * unit, device);
  return impl;
}
}  // namespace

Tensor Tensor::empty(const Shape& shape, Device device, DType dtype) {
  return Tensor(make_impl(shape, device, dtype));
}

Tensor Tensor::zeros(const Shape& shape, Device device) { return full(shape, 0.f, device); }

Tensor Tensor::full(const Shape& shape, float value, Device device) {
  Tensor t = empty(shape, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values, Device device) {
  NIMBUS_CHECK(int64_t(values.size()) == shape.numel(), "from_vector: ", values.size(),
               " values for shape ", shape.str());
  Tensor t = empty(shape, device);
  device_runtime(device).copy(t.data(), device, values.data(), Device::CPU, values.size() * sizeof(float));
  return t;
}

Tensor Tensor::randn(const Shape& shape, Rng& rng, float mean, float std) {
  Tensor t = empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = mean + std * float(rng.normal());
  return t;
}

Tensor Tensor::uniform(const Shape& shape, Rng& rng, float lo, float hi) {
  Tensor t = empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.uniform(lo, hi);
  return t;
}

TensorImpl& Tensor::checked() const {
  NIMBUS_CHECK(impl_, "use of an undefined tensor");
  return *impl_;
}

const Shape& Tensor::shape() const { return checked().shape; }
Device Tensor::device() const { return checked().storage->device; }
DType Tensor::dtype() const { return checked().dtype; }

float* Tensor::data() { return const_cast<float*>(static_cast<const Tensor*>(this)->data()); }
const float* Tensor::data() const {
  NIMBUS_CHECK(checked().dtype == DType::F32, "tensor ", describe(*this),
               ": this operation needs float32 data (cast with .to(DType::F32))");
  return static_cast<const float*>(impl_->storage->data);
}
bfloat16* Tensor::data_bf16() { return const_cast<bfloat16*>(static_cast<const Tensor*>(this)->data_bf16()); }
const bfloat16* Tensor::data_bf16() const {
  NIMBUS_CHECK(checked().dtype == DType::BF16, "tensor ", describe(*this), " is not bfloat16");
  return static_cast<const bfloat16*>(impl_->storage->data);
}

float Tensor::item() const {
  NIMBUS_CHECK(numel() == 1, "item: tensor of shape ", shape().str(), " has ", numel(), " elements, not 1");
  return to_vector()[0];
}

std::vector<float> Tensor::to_vector() const {
  const Tensor f = to(DType::F32);  // a cast on the tensor's device first, if bfloat16
  std::vector<float> v(static_cast<size_t>(numel()));
  device_runtime(device()).copy(v.data(), Device::CPU, f.data(), device(), v.size() * sizeof(float));
  return v;
}

Tensor Tensor::to(Device dst) const {
  if (device() == dst) return *this;
  Tensor t = empty(shape(), dst, dtype());
  Device src = device();
  // The non-CPU side owns the copy routine (it knows its own memory).
  const DeviceRuntime& rt = device_runtime(dst == Device::CPU ? src : dst);
  rt.copy(t.impl_->storage->data, dst, impl_->storage->data, src, nbytes());
  return t;
}

Tensor Tensor::to(DType dst) const {
  if (dtype() == dst) return *this;
  Tensor t = empty(shape(), device(), dst);
  const Kernels<float>& be = backend(device(), "to(dtype)");
  if (dst == DType::BF16)
    be.cast_f32_to_bf16(t.data_bf16(), data(), numel());
  else
    be.cast_bf16_to_f32(t.data(), data_bf16(), numel());
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape(), device(), dtype());
  device_runtime(device()).copy(t.impl_->storage->data, device(), impl_->storage->data, device(), nbytes());
  return t;
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = checked().storage;
  impl->shape = impl_->shape;
  impl->dtype = impl_->dtype;
  return Tensor(impl);
}

void Tensor::copy_(const Tensor& src) {
  NIMBUS_CHECK(shape() == src.shape() && dtype() == src.dtype(), "copy_: destination ", describe(*this),
               " vs source ", describe(src));
  void* d = checked().storage->data;
  const void* s = src.checked().storage->data;
  if (s == d) return;
  Device dd = device(), sd = src.device();
  const DeviceRuntime& rt = device_runtime(dd == Device::CPU ? sd : dd);
  rt.copy(d, dd, s, sd, nbytes());
  mark_written();
}

void Tensor::fill_(float value) {
  device_runtime(device()).fill(data(), value, size_t(numel()));
  mark_written();
}

uint64_t Tensor::version() const { return checked().storage->version; }
void Tensor::mark_written() { ++checked().storage->version; }

Tensor Tensor::view(const Shape& s) const {
  NIMBUS_CHECK(s.numel() == numel(), "view: cannot view ", describe(*this), " as ", s.str());
  Tensor t = detach();
  t.impl_->shape = s;
  return t;
}

bool Tensor::requires_grad() const { return checked().requires_grad; }

Tensor& Tensor::set_requires_grad(bool on) {
  // Either way on a tensor an op made: turning it off would silently cut the gradient to what made it
  // (use detach() for a copy without history), and it could not be turned on again.
  NIMBUS_CHECK(!checked().grad_fn, "set_requires_grad: only leaf tensors can be marked; this one comes from ",
               impl_->grad_fn->op, (on ? "" : " (detach() gives a tensor without its history)"));
  checked().requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return Tensor(checked().grad); }

void Tensor::set_grad(const Tensor& g) {
  NIMBUS_CHECK(!g.defined() || (g.shape() == shape() && g.dtype() == dtype() && g.device() == device()),
               "set_grad: gradient ", describe(g), " for tensor ", describe(*this));
  checked().grad = g.impl_ptr();
}

void Tensor::zero_grad() { checked().grad.reset(); }

bool Tensor::is_leaf() const { return !checked().grad_fn; }

const std::shared_ptr<Node>& Tensor::grad_fn() const { return checked().grad_fn; }

void Tensor::backward(const Tensor& grad_output) const { run_backward(*this, grad_output); }

std::string describe(const Tensor& t) {
  if (!t.defined()) return "(undefined)";
  return t.shape().str() + " " + device_name(t.device()) + (t.dtype() == DType::F32 ? "" : " bfloat16");
}

}  // namespace nimbus
