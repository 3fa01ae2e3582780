// arith.cpp: add, mul_scalar, add_relu and add_scaled, forward and backward side by side.
// No broadcasting: shapes must match exactly (see arith.h).
#include "engine/ops/arith.h"

#include "engine/autograd.h"
#include "engine/backend.h"

namespace nimbus {

namespace {
void check_pair(const char* op, const Tensor& a, const Tensor& b) {
  NIMBUS_CHECK(a.shape() == b.shape(), op, ": shapes differ: a ", a.shape().str(), " vs b ", b.shape().str());
  NIMBUS_CHECK(a.device() == b.device(), op, ": devices differ: a ", describe(a), " vs b ", describe(b));
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  check_pair("add", a, b);
  Tensor y = Tensor::empty(a.shape(), a.device());
  backend(a.device(), "add").add(y.data(), a.data(), b.data(), y.numel());
  // dL/da = dL/db = dL/dy; autograd allows handing the same tensor to both.
  record("add", {a, b}, y, [](const Tensor& dy, GradSink& sink) {
    sink.set(0, dy);
    sink.set(1, dy);
  });
  return y;
}

Tensor add_relu(const Tensor& a, const Tensor& b) {
  check_pair("add_relu", a, b);
  Tensor y = Tensor::empty(a.shape(), a.device());
  backend(a.device(), "add_relu").add_relu(y.data(), a.data(), b.data(), y.numel());
  Tensor y_saved = y.detach();
  record("add_relu", {a, b}, y, [y_saved](const Tensor& dy, GradSink& sink) {
    Tensor d = Tensor::empty(dy.shape(), dy.device());  // dy where y > 0: the same for both inputs
    backend(dy.device(), "add_relu").relu_backward(d.data(), dy.data(), y_saved.data(), dy.numel());
    sink.set(0, d);
    sink.set(1, d);
  });
  return y;
}

Tensor add_scaled(const Tensor& a, const Tensor& b, float s) {
  check_pair("add_scaled", a, b);
  Tensor y = Tensor::empty(a.shape(), a.device());
  backend(a.device(), "add_scaled").add_scaled(y.data(), a.data(), b.data(), s, y.numel());
  record("add_scaled", {a, b}, y, [s](const Tensor& dy, GradSink& sink) {
    sink.set(0, dy);
    if (!sink.needs(1)) return;
    Tensor db = Tensor::empty(dy.shape(), dy.device());
    backend(dy.device(), "add_scaled").scale(db.data(), dy.data(), s, dy.numel());
    sink.set(1, db);
  });
  return y;
}

Tensor mul_scalar(const Tensor& x, float s) {
  Tensor y = Tensor::empty(x.shape(), x.device());
  backend(x.device(), "mul_scalar").scale(y.data(), x.data(), s, y.numel());
  record("mul_scalar", {x}, y, [s](const Tensor& dy, GradSink& sink) {
    Tensor dx = Tensor::empty(dy.shape(), dy.device());
    backend(dy.device(), "mul_scalar").scale(dx.data(), dy.data(), s, dy.numel());
    sink.set(0, dx);
  });
  return y;
}

}  // namespace nimbus
