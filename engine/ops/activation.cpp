// activation.cpp: ReLU forward and, right below it, its backward.
//
// This file is the pattern every op follows: check inputs, run the forward
// kernel, then record() a closure that computes the input gradients from
// dL/dy and the tensors it saved (detached, so the graph holds no cycles).
#include "engine/ops/activation.h"

#include "engine/autograd.h"
#include "engine/cuda_ops.h"
#include "kernels/cpu/elementwise.h"

namespace nimbus {

Tensor relu(const Tensor& x) {
  Tensor y = Tensor::empty(x.shape(), x.device());
  if (x.is_cpu())
    cpu::relu_forward(y.data(), x.data(), x.numel());
  else
    cuda_ops("relu").relu_forward(y.data(), x.data(), x.numel());
  Tensor y_saved = y.detach();  // backward needs the output's sign only
  record("relu", {x}, y, [y_saved](const Tensor& dy, GradSink& sink) {
    Tensor dx = Tensor::empty(dy.shape(), dy.device());
    if (dy.is_cpu())
      cpu::relu_backward(dx.data(), dy.data(), y_saved.data(), dy.numel());
    else
      cuda_ops("relu").relu_backward(dx.data(), dy.data(), y_saved.data(), dy.numel());
    sink.set(0, dx);
  });
  return y;
}

}  // namespace nimbus
