// activation.cpp: ReLU forward and, right below it, its backward; then the formula-defined ops.
//
// This file is the pattern every op follows: check inputs, run the forward
// kernel, then record() a closure that computes the input gradients from
// dL/dy and the tensors it saved (detached, so the graph holds no cycles),
// naming those tensors to record() too (a write into them before backward is an error).
#include "engine/ops/activation.h"

#include "engine/autograd.h"
#include "engine/backend.h"
#include "kernels/common/error.h"

namespace nimbus {

// In x's dtype (float32, or bfloat16 under autocast): the kernel of that dtype, y in it too.
Tensor relu(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), x.device(), x.dtype());
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    backend<T>(x.device(), "relu").relu_forward(y.data_as<T>(), x.data_as<T>(), x.numel());
  });
  Tensor y_saved = y.detach();  // backward needs the output's sign only
  record("relu", {x}, y, {y_saved}, [y_saved](const Tensor& dy_in, GradSink& sink) {
    const Tensor dy = dy_in.to(y_saved.dtype());  // the gradient arrives in the dtype of what used y
    Tensor dx = Tensor::empty(dy.shape(), dy.device(), dy.dtype());
    visit_dtype(dy.dtype(), [&](auto tag) {
      using T = decltype(tag);
      backend<T>(dy.device(), "relu").relu_backward(dx.data_as<T>(), dy.data_as<T>(), y_saved.data_as<T>(),
                                                    dy.numel());
    });
    sink.set(0, dx);
  });
  return y;
}

// The ops of unary_ops.def, one function each, in x's dtype: y = name_forward(x); the backward
// saves x and runs name_backward(dy, x) (dx = dy f'(x)) in the same dtype.
#define NIMBUS_UNARY(name, f, df)                                                                       \
  Tensor name(const Tensor& x) {                                                                        \
    Tensor y = Tensor::empty(x.shape(), x.device(), x.dtype());                                         \
    visit_dtype(x.dtype(), [&](auto tag) {                                                              \
      using T = decltype(tag);                                                                          \
      backend<T>(x.device(), #name).name##_forward(y.data_as<T>(), x.data_as<T>(), x.numel());          \
    });                                                                                                 \
    Tensor x_saved = x.detach();                                                                        \
    record(#name, {x}, y, {x_saved}, [x_saved](const Tensor& dy_in, GradSink& sink) {                   \
      const Tensor dy = dy_in.to(x_saved.dtype());                                                      \
      Tensor dx = Tensor::empty(dy.shape(), dy.device(), dy.dtype());                                   \
      visit_dtype(dy.dtype(), [&](auto tag) {                                                           \
        using T = decltype(tag);                                                                        \
        backend<T>(dy.device(), #name "_backward")                                                      \
            .name##_backward(dx.data_as<T>(), dy.data_as<T>(), x_saved.data_as<T>(), dy.numel());       \
      });                                                                                               \
      sink.set(0, dx);                                                                                  \
    });                                                                                                 \
    return y;                                                                                           \
  }
#include "kernels/common/unary_ops.def"
#undef NIMBUS_UNARY

}  // namespace nimbus
