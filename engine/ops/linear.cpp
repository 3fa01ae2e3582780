// linear.cpp: the fully connected autograd op, y = x w^T + b, and its backward.
#include "engine/ops/linear.h"

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/backend.h"

namespace nimbus {

Tensor linear(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in) {
  NIMBUS_CHECK(x_in.defined() && w_in.defined(), "linear: input and weight must be defined");
  // Under a bfloat16 autocast scope the operands are cast (recorded: gradients return in float32).
  const Tensor x = autocast_matmul(x_in), w = autocast_matmul(w_in), b = autocast_matmul(b_in);
  NIMBUS_CHECK(x.ndim() == 2, "linear: input ", x.shape().str(), " must be 2-D (N,in)");
  NIMBUS_CHECK(w.ndim() == 2, "linear: weight ", w.shape().str(), " must be 2-D (out,in)");
  NIMBUS_CHECK(x.size(1) == w.size(1), "linear: input ", x.shape().str(), " has ", x.size(1),
               " features but weight ", w.shape().str(), " expects ", w.size(1));
  NIMBUS_CHECK(x.device() == w.device(), "linear: input ", describe(x), " and weight ", describe(w),
               " are on different devices");
  if (b.defined()) {
    NIMBUS_CHECK(b.ndim() == 1 && b.size(0) == w.size(0), "linear: bias ", b.shape().str(), " does not match weight ",
                 w.shape().str(), " (expected (", w.size(0), "))");
    NIMBUS_CHECK(b.device() == x.device(), "linear: bias ", describe(b), " and input ", describe(x),
                 " are on different devices");
  }
  NIMBUS_CHECK(w.dtype() == x.dtype() && (!b.defined() || b.dtype() == x.dtype()), "linear: input ", describe(x),
               ", weight ", describe(w), b.defined() ? str(" and bias ", describe(b)) : std::string(),
               " must have one dtype");
  const int64_t N = x.size(0), in = x.size(1), out = w.size(0);
  const DType dt = x.dtype();
  Tensor y = Tensor::empty({N, out}, x.device(), dt);
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    backend<T>(x.device(), "linear")
        .linear_forward(y.data_as<T>(), x.data_as<T>(), w.data_as<T>(), b.defined() ? b.data_as<T>() : nullptr, N, in,
                        out);
  });

  Tensor x_saved = w.requires_grad() ? x.detach() : Tensor();  // for dw
  Tensor w_saved = x.requires_grad() ? w.detach() : Tensor();  // for dx
  const bool has_bias = b.defined();
  record("linear", {x, w, b}, y, {x_saved, w_saved},
         [x_saved, w_saved, N, in, out, has_bias, dt](const Tensor& dy_in, GradSink& sink) {
    const Tensor dy = dy_in.to(dt);
    Tensor dx, dw, db;
    if (sink.needs(0)) dx = Tensor::empty({N, in}, dy.device(), dt);
    if (sink.needs(1)) dw = Tensor::empty({out, in}, dy.device(), dt);
    if (has_bias && sink.needs(2)) db = Tensor::empty({out}, dy.device(), dt);
    visit_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      backend<T>(dy.device(), "linear_backward")
          .linear_backward(dx.defined() ? dx.data_as<T>() : nullptr, dw.defined() ? dw.data_as<T>() : nullptr,
                           db.defined() ? db.data_as<T>() : nullptr, dy.data_as<T>(),
                           dw.defined() ? x_saved.data_as<T>() : nullptr, dx.defined() ? w_saved.data_as<T>() : nullptr,
                           N, in, out);
    });
    if (dx.defined()) sink.set(0, dx);
    if (dw.defined()) sink.set(1, dw);
    if (db.defined()) sink.set(2, db);
  });
  return y;
}

}  // namespace nimbus
