// layers.cpp: each layer = its parameters + a call to the op that does the work.
#include "engine/nn/layers.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <string>
#include <typeinfo>

#include "engine/distributed/sync_batchnorm.h"
#include "engine/nn/init.h"
#include "engine/ops/activation.h"
#include "engine/ops/batchnorm.h"
#include "engine/ops/conv.h"
#include "engine/ops/linear.h"
#include "engine/ops/pool.h"
#include "engine/ops/shape_ops.h"

namespace nimbus {

namespace {
// PyTorch's reset_parameters() for Conv/Linear (see layers.h).
void torch_default_init(Tensor& weight, Tensor* bias, Rng& rng) {
  init::kaiming_uniform_(weight, rng, std::sqrt(5.0));
  if (bias) {
    float b = float(1.0 / std::sqrt(double(init::fan_in(weight.shape()))));
    init::uniform_(*bias, rng, -b, b);
  }
}
}  // namespace

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int kernel, int stride, int padding, bool with_bias, Rng& rng)
    : stride(stride), padding(padding) {
  NIMBUS_CHECK(in_channels > 0 && out_channels > 0 && kernel > 0 && stride > 0 && padding >= 0,
               "Conv2d: bad configuration in=", in_channels, " out=", out_channels, " kernel=", kernel,
               " stride=", stride, " padding=", padding);
  weight = register_parameter("weight", Tensor::empty({out_channels, in_channels, kernel, kernel}));
  if (with_bias) bias = register_parameter("bias", Tensor::empty({out_channels}));
  torch_default_init(weight, with_bias ? &bias : nullptr, rng);
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, weight, bias, stride, padding); }
Tensor Conv2d::forward_relu(const Tensor& x) { return conv2d_relu(x, weight, bias, stride, padding); }
Tensor Conv2d::forward_residual(const Tensor& x, const Tensor& r, float s) {
  return conv2d_residual(x, weight, bias, r, s, stride, padding);
}

BatchNorm2d::BatchNorm2d(int64_t num_features, float eps, float momentum) : eps(eps), momentum(momentum) {
  NIMBUS_CHECK(num_features > 0, "BatchNorm2d: num_features must be positive, got ", num_features);
  weight = register_parameter("weight", Tensor::ones({num_features}));
  bias = register_parameter("bias", Tensor::zeros({num_features}));
  running_mean = register_buffer("running_mean", Tensor::zeros({num_features}));
  running_var = register_buffer("running_var", Tensor::ones({num_features}));
  num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}));
}

// Training also counts the batch in num_batches_tracked, on its device, inside the statistics
// kernel (exact up to 2^24 steps): the host never reads the counter back.
Tensor BatchNorm2d::forward(const Tensor& x) {
  if (sync && is_training())
    return sync_batch_norm2d(x, weight, bias, running_mean, running_var, true, momentum, eps, &num_batches_tracked,
                             *sync);
  return batch_norm2d(x, weight, bias, running_mean, running_var, is_training(), momentum, eps, &num_batches_tracked);
}

Tensor BatchNorm2d::forward_relu(const Tensor& x) {
  if (sync && is_training()) return relu(forward(x));  // the synchronised op has no fused ReLU
  return batch_norm2d_relu(x, weight, bias, running_mean, running_var, is_training(), momentum, eps,
                           &num_batches_tracked);
}

Tensor conv_bn(Conv2d& conv, BatchNorm2d& bn, const Tensor& x, bool relu) {
  // A subclass may override forward (a quantised or adapted convolution): then its forwards, as written.
  if (typeid(conv) != typeid(Conv2d) || typeid(bn) != typeid(BatchNorm2d)) {
    const Tensor y = bn.forward(conv.forward(x));
    return relu ? nimbus::relu(y) : y;
  }
  if (!bn.is_training() || bn.sync) return relu ? bn.forward_relu(conv.forward(x)) : bn.forward(conv.forward(x));
  Tensor mean, invstd;
  const Tensor y = conv2d_bn_stats(x, conv.weight, conv.bias, conv.stride, conv.padding, mean, invstd,
                                   bn.running_mean, bn.running_var, bn.momentum, bn.eps, &bn.num_batches_tracked);
  return batch_norm2d_from_stats(y, bn.weight, bn.bias, mean, invstd, relu);
}

namespace {
std::atomic<bool>& prologue_flag() {
  static std::atomic<bool> on = [] {
    const char* v = std::getenv("NIMBUS_BN_PROLOGUE");
    if (!v) return false;
    const std::string s = v;
    NIMBUS_CHECK(s == "0" || s == "1", "NIMBUS_BN_PROLOGUE=", s,
                 ": expected 1 (batch norm + ReLU in the next convolution's prologue) or 0");
    return s == "1";
  }();
  return on;
}
bool prologue_eligible(const ConvBn& p) {
  return typeid(*p.conv) == typeid(Conv2d) && typeid(*p.bn) == typeid(BatchNorm2d) && p.bn->is_training() &&
         !p.bn->sync;
}
}  // namespace

void set_bn_relu_prologue(bool on) { prologue_flag() = on; }
bool bn_relu_prologue() { return prologue_flag().load(); }

Tensor conv_bn_chain(std::initializer_list<ConvBn> pairs, const Tensor& x, bool relu) {
  NIMBUS_CHECK(pairs.size() > 0, "conv_bn_chain: no conv -> bn pairs");
  bool fused = bn_relu_prologue() && pairs.size() > 1;
  for (const ConvBn& p : pairs) fused = fused && prologue_eligible(p);
  if (!fused) {
    Tensor h = x;
    size_t i = 0;
    for (const ConvBn& p : pairs) h = conv_bn(*p.conv, *p.bn, h, ++i < pairs.size() || relu);
    return h;
  }
  // y: the last pair's raw convolution output, (mean, invstd) its batch statistics, prev its batch norm.
  Tensor y, mean, invstd;
  BatchNorm2d* prev = nullptr;
  for (const ConvBn& p : pairs) {
    Conv2d& c = *p.conv;
    BatchNorm2d& b = *p.bn;
    Tensor m, s;
    y = prev ? bn_relu_conv2d_bn_stats(y, prev->weight, prev->bias, mean, invstd, c.weight, c.bias, c.stride,
                                       c.padding, m, s, b.running_mean, b.running_var, b.momentum, b.eps,
                                       &b.num_batches_tracked)
             : conv2d_bn_stats(x, c.weight, c.bias, c.stride, c.padding, m, s, b.running_mean, b.running_var,
                               b.momentum, b.eps, &b.num_batches_tracked);
    mean = m, invstd = s, prev = &b;
  }
  return batch_norm2d_from_stats(y, prev->weight, prev->bias, mean, invstd, relu);
}

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, Rng& rng) {
  NIMBUS_CHECK(in_features > 0 && out_features > 0, "Linear: bad configuration in=", in_features,
               " out=", out_features);
  weight = register_parameter("weight", Tensor::empty({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", Tensor::empty({out_features}));
  torch_default_init(weight, with_bias ? &bias : nullptr, rng);
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight, bias); }

Tensor ReLU::forward(const Tensor& x) { return relu(x); }

MaxPool2d::MaxPool2d(int kernel, int stride, int padding)
    : kernel(kernel), stride(stride > 0 ? stride : kernel), padding(padding) {
  NIMBUS_CHECK(kernel > 0 && stride >= 0 && padding >= 0, "MaxPool2d: bad configuration kernel=", kernel,
               " stride=", stride, " padding=", padding);
}

Tensor MaxPool2d::forward(const Tensor& x) { return max_pool2d(x, kernel, stride, padding); }

Tensor GlobalAvgPool::forward(const Tensor& x) { return global_avg_pool(x); }

Tensor Flatten::forward(const Tensor& x) { return flatten(x, start_dim); }

}  // namespace nimbus
