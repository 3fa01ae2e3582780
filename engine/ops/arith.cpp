// arith.cpp: add, mul_scalar, add_relu and add_scaled, forward and backward side by side, in float32
// or bfloat16.
// No broadcasting: shapes must match exactly (see arith.h).
#include "engine/ops/arith.h"

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/backend.h"

namespace nimbus {

namespace {
void check_pair(const char* op, const Tensor& a, const Tensor& b) {
  NIMBUS_CHECK(a.shape() == b.shape(), op, ": shapes differ: a ", a.shape().str(), " vs b ", b.shape().str());
  NIMBUS_CHECK(a.device() == b.device(), op, ": devices differ: a ", describe(a), " vs b ", describe(b));
}
}  // namespace

// Each op runs in its inputs' dtype (float32 or bfloat16: autocast_pair makes a mixed pair float32
// inside a bfloat16 autocast scope, and refuses it outside one); gradients come back in that dtype.
// (The pair is not a structured binding: clang 14 cannot capture one in the lambdas.)
Tensor add(const Tensor& a_in, const Tensor& b_in) {
  check_pair("add", a_in, b_in);
  const std::pair<Tensor, Tensor> ab = autocast_pair("add", a_in, b_in);
  const Tensor &a = ab.first, &b = ab.second;
  const DType dt = a.dtype();
  Tensor y = Tensor::empty(a.shape(), a.device(), dt);
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    backend<T>(a.device(), "add").add(y.data_as<T>(), a.data_as<T>(), b.data_as<T>(), y.numel());
  });
  // dL/da = dL/db = dL/dy; autograd allows handing the same tensor to both.
  record("add", {a, b}, y, [dt](const Tensor& dy_in, GradSink& sink) {
    const Tensor dy = dy_in.to(dt);
    sink.set(0, dy);
    sink.set(1, dy);
  });
  return y;
}

Tensor add_relu(const Tensor& a_in, const Tensor& b_in) {
  check_pair("add_relu", a_in, b_in);
  const std::pair<Tensor, Tensor> ab = autocast_pair("add_relu", a_in, b_in);
  const Tensor &a = ab.first, &b = ab.second;
  const DType dt = a.dtype();
  Tensor y = Tensor::empty(a.shape(), a.device(), dt);
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    backend<T>(a.device(), "add_relu").add_relu(y.data_as<T>(), a.data_as<T>(), b.data_as<T>(), y.numel());
  });
  Tensor y_saved = y.detach();
  record("add_relu", {a, b}, y, {y_saved}, [y_saved, dt](const Tensor& dy_in, GradSink& sink) {
    const Tensor dy = dy_in.to(dt);
    Tensor d = Tensor::empty(dy.shape(), dy.device(), dt);  // dy where y > 0: the same for both inputs
    visit_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      backend<T>(dy.device(), "add_relu").relu_backward(d.data_as<T>(), dy.data_as<T>(), y_saved.data_as<T>(), dy.numel());
    });
    sink.set(0, d);
    sink.set(1, d);
  });
  return y;
}

Tensor add_scaled(const Tensor& a_in, const Tensor& b_in, float s) {
  check_pair("add_scaled", a_in, b_in);
  const std::pair<Tensor, Tensor> ab = autocast_pair("add_scaled", a_in, b_in);
  const Tensor &a = ab.first, &b = ab.second;
  const DType dt = a.dtype();
  Tensor y = Tensor::empty(a.shape(), a.device(), dt);
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    backend<T>(a.device(), "add_scaled").add_scaled(y.data_as<T>(), a.data_as<T>(), b.data_as<T>(), s, y.numel());
  });
  record("add_scaled", {a, b}, y, [s, dt](const Tensor& dy_in, GradSink& sink) {
    const Tensor dy = dy_in.to(dt);
    sink.set(0, dy);
    if (!sink.needs(1)) return;
    Tensor db = Tensor::empty(dy.shape(), dy.device(), dt);
    visit_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      backend<T>(dy.device(), "add_scaled").scale(db.data_as<T>(), dy.data_as<T>(), s, dy.numel());
    });
    sink.set(1, db);
  });
  return y;
}

Tensor mul_scalar(const Tensor& x, float s) {
  const DType dt = x.dtype();
  Tensor y = Tensor::empty(x.shape(), x.device(), dt);
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    backend<T>(x.device(), "mul_scalar").scale(y.data_as<T>(), x.data_as<T>(), s, y.numel());
  });
  record("mul_scalar", {x}, y, [s, dt](const Tensor& dy_in, GradSink& sink) {
    const Tensor dy = dy_in.to(dt);
    Tensor dx = Tensor::empty(dy.shape(), dy.device(), dt);
    visit_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      backend<T>(dy.device(), "mul_scalar").scale(dx.data_as<T>(), dy.data_as<T>(), s, dy.numel());
    });
    sink.set(0, dx);
  });
  return y;
}

}  // namespace nimbus
