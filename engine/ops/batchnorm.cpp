// batchnorm.cpp: batch_norm2d forward and, right below it, its backward (PyTorch semantics).
//
// Training: normalise with the batch mean and biased variance, update the
// running statistics in place (momentum, unbiased variance), and backpropagate
// through the batch statistics. Eval: normalise with the running statistics;
// backward is the plain per-channel affine gradient. batch_norm2d_relu is the
// same op with a ReLU applied in the forward's pass (ResNet's bn -> relu: one
// pass over the activations fewer) and undone first in backward.
#include "engine/ops/batchnorm.h"

#include "engine/autograd.h"
#include "engine/backend.h"

namespace nimbus {

namespace {
// A per-channel parameter: undefined is allowed when `optional`, else it must be (C) on x's device.
void check_channel_param(const Tensor& p, const char* name, const Tensor& x, bool optional) {
  if (!p.defined() && optional) return;
  NIMBUS_CHECK(p.defined(), "batch_norm2d: ", name, " is undefined");
  NIMBUS_CHECK(p.shape() == Shape{x.size(1)}, "batch_norm2d: input ", x.shape().str(), " has ", x.size(1),
               " channels but ", name, " has shape ", p.shape().str());
  NIMBUS_CHECK(p.device() == x.device(), "batch_norm2d: ", name, " ", describe(p), " is not on the device of input ",
               describe(x));
}
}  // namespace

namespace {
// Batch statistics computed before the call (conv2d_bn_stats): mean and invstd of x.
struct GivenStats {
  const Tensor &mean, &invstd;
};

// batch_norm2d, then ReLU when `relu` (in the same pass over the data on the CPU). With `given`,
// training with those statistics (the running statistics are not used).
Tensor batch_norm2d_impl(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                         Tensor& running_var, bool training, float momentum, float eps, bool relu,
                         Tensor* num_batches_tracked, const GivenStats* given = nullptr) {
  NIMBUS_CHECK(x.ndim() == 4, "batch_norm2d: input must be (N,C,H,W), got ", x.shape().str());
  check_channel_param(weight, "weight", x, true);
  check_channel_param(bias, "bias", x, true);
  if (given) {
    check_channel_param(given->mean, "mean", x, false);
    check_channel_param(given->invstd, "invstd", x, false);
  } else {
    check_channel_param(running_mean, "running_mean", x, false);
    check_channel_param(running_var, "running_var", x, false);
  }
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  NIMBUS_CHECK(!training || N * HW > 1, "batch_norm2d: training needs more than 1 value per channel, input ",
               x.shape().str());

  // x, y and their gradients in x's dtype (float32 or bfloat16); statistics, parameters and their
  // gradients in float32.
  const Device dev = x.device();
  const DType dt = x.dtype();
  const char* op = relu ? "batch_norm2d_relu" : "batch_norm2d";
  Tensor mean = given ? given->mean : Tensor::empty({C}, dev), invstd = given ? given->invstd : Tensor::empty({C}, dev);
  const float* w = weight.defined() ? weight.data() : nullptr;
  const float* b = bias.defined() ? bias.data() : nullptr;
  Tensor y = Tensor::empty(x.shape(), dev, dt);
  const Backend& tables = backend_tables(dev, op);  // once: one op boundary for the profiler
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const Kernels<T>& be = tables.of<T>();
    if (training && !given)  // (given: the statistics came with x)
      be.batchnorm_train_stats(mean.data(), invstd.data(), running_mean.data(), running_var.data(),
                               num_batches_tracked ? num_batches_tracked->data() : nullptr, x.data_as<T>(), N, C, HW,
                               momentum, eps);
    else if (!training) {
      mean.copy_(running_mean);  // a copy: later training steps must not change what backward sees
      tables.f32.batchnorm_invstd(invstd.data(), running_var.data(), eps, C);
    }
    be.batchnorm_forward(y.data_as<T>(), x.data_as<T>(), mean.data(), invstd.data(), w, b, N, C, HW, relu);
  });

  if (!any_requires_grad({&x, &weight, &bias})) return y;
  Tensor xs = x.detach(), ws = weight.defined() ? weight.detach() : Tensor();
  Tensor ys = relu ? y.detach() : Tensor();  // the ReLU's mask: y > 0
  record(op, {x, weight, bias}, y, {xs, ws, ys, mean, invstd}, [=](const Tensor& dy_in, GradSink& sink) {
    const Tensor dy = dy_in.to(dt);
    Tensor dx = sink.needs(0) ? Tensor::empty(xs.shape(), dev, dt) : Tensor();
    Tensor dw = Tensor::empty({C}, dev), db = Tensor::empty({C}, dev);
    visit_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      // With the ReLU, its backward (dy where y > 0) happens inside the kernel, in the same pass.
      backend<T>(dev, relu ? "batch_norm2d_relu_backward" : "batch_norm2d_backward")
          .batchnorm_backward(dx.defined() ? dx.data_as<T>() : nullptr, dw.data(), db.data(), dy.data_as<T>(),
                              xs.data_as<T>(), mean.data(), invstd.data(), ws.defined() ? ws.data() : nullptr,
                              relu ? ys.data_as<T>() : nullptr, N, C, HW, training);
    });
    if (sink.needs(0)) sink.set(0, dx);
    if (sink.needs(1)) sink.set(1, dw);
    if (sink.needs(2)) sink.set(2, db);
  });
  return y;
}
}  // namespace

Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                    Tensor& running_var, bool training, float momentum, float eps, Tensor* num_batches_tracked) {
  return batch_norm2d_impl(x, weight, bias, running_mean, running_var, training, momentum, eps, false,
                           num_batches_tracked);
}

Tensor batch_norm2d_relu(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                         Tensor& running_var, bool training, float momentum, float eps, Tensor* num_batches_tracked) {
  return batch_norm2d_impl(x, weight, bias, running_mean, running_var, training, momentum, eps, true,
                           num_batches_tracked);
}

Tensor batch_norm2d_from_stats(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& mean,
                               const Tensor& invstd, bool relu) {
  Tensor unused;
  const GivenStats given{mean, invstd};
  return batch_norm2d_impl(x, weight, bias, unused, unused, true, 0.0f, 0.0f, relu, nullptr, &given);
}

}  // namespace nimbus
