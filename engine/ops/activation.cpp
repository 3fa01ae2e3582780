// activation.cpp: ReLU forward and, right below it, its backward.
//
// This file is the pattern every op follows: check inputs, run the forward
// kernel, then record() a closure that computes the input gradients from
// dL/dy and the tensors it saved (detached, so the graph holds no cycles).
#include "engine/ops/activation.h"

#include "engine/autograd.h"
#include "engine/backend.h"

namespace nimbus {

Tensor relu(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), x.device());
  backend(x.device(), "relu").relu_forward(y.data(), x.data(), x.numel());
  Tensor y_saved = y.detach();  // backward needs the output's sign only
  record("relu", {x}, y, [y_saved](const Tensor& dy, GradSink& sink) {
    Tensor dx = Tensor::empty(dy.shape(), dy.device());
    backend(dy.device(), "relu").relu_backward(dx.data(), dy.data(), y_saved.data(), dy.numel());
    sink.set(0, dx);
  });
  return y;
}

}  // namespace nimbus
