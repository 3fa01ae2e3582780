// arith.cpp: add and mul_scalar, forward and backward side by side.
// No broadcasting: shapes must match exactly (see arith.h).
#include "engine/ops/arith.h"

#include "engine/autograd.h"
#include "engine/cuda_ops.h"
#include "kernels/cpu/elementwise.h"

namespace nimbus {

Tensor add(const Tensor& a, const Tensor& b) {
  NIMBUS_CHECK(a.shape() == b.shape(), "add: shapes differ: a ", a.shape().str(), " vs b ", b.shape().str());
  NIMBUS_CHECK(a.device() == b.device(), "add: devices differ: a ", describe(a), " vs b ", describe(b));
  Tensor y = Tensor::empty(a.shape(), a.device());
  if (a.is_cpu())
    cpu::add(y.data(), a.data(), b.data(), y.numel());
  else
    cuda_ops("add").add(y.data(), a.data(), b.data(), y.numel());
  // dL/da = dL/db = dL/dy; autograd allows handing the same tensor to both.
  record("add", {a, b}, y, [](const Tensor& dy, GradSink& sink) {
    sink.set(0, dy);
    sink.set(1, dy);
  });
  return y;
}

Tensor mul_scalar(const Tensor& x, float s) {
  Tensor y = Tensor::empty(x.shape(), x.device());
  if (x.is_cpu())
    cpu::scale(y.data(), x.data(), s, y.numel());
  else
    cuda_ops("mul_scalar").scale(y.data(), x.data(), s, y.numel());
  record("mul_scalar", {x}, y, [s](const Tensor& dy, GradSink& sink) {
    Tensor dx = Tensor::empty(dy.shape(), dy.device());
    if (dy.is_cpu())
      cpu::scale(dx.data(), dy.data(), s, dy.numel());
    else
      cuda_ops("mul_scalar").scale(dx.data(), dy.data(), s, dy.numel());
    sink.set(0, dx);
  });
  return y;
}

}  // namespace nimbus
