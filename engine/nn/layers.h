// layers.h: the standard layers as Modules, with PyTorch's parameter names,
// shapes and default initialisation, so torch state_dicts load one to one.
//
//   Conv2d(in, out, k, stride, pad, bias)  weight (out,in,k,k), bias (out)
//   BatchNorm2d(C)                         weight (C)=1, bias (C)=0,
//                                          buffers running_mean (C)=0, running_var (C)=1,
//                                          num_batches_tracked ()=0, +1 per training forward
//   Linear(in, out, bias)                  weight (out,in), bias (out)
//   ReLU, MaxPool2d(k, stride, pad), GlobalAvgPool ((N,C,H,W) -> (N,C)), Flatten
// Conv2d and Linear use PyTorch's reset_parameters(): weight kaiming_uniform
// with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and bias
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Models wanting another init re-initialise.
#pragma once
#include <initializer_list>

#include "engine/nn/module.h"
#include "engine/random.h"

namespace nimbus {

class ProcessGroup;  // engine/distributed/process_group.h

class Conv2d : public UnaryModule {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int kernel, int stride = 1, int padding = 0, bool bias = true,
         Rng& rng = global_rng());
  Tensor forward(const Tensor& x) override;
  Tensor forward_relu(const Tensor& x);  // relu(forward(x)), fused (conv2d_relu)
  Tensor forward_residual(const Tensor& x, const Tensor& r, float s);  // r + s forward(x), fused (conv2d_residual)
  Tensor weight, bias;  // bias undefined when built without one
  int stride, padding;
};

class BatchNorm2d : public UnaryModule {
 public:
  explicit BatchNorm2d(int64_t num_features, float eps = 1e-5f, float momentum = 0.1f);
  Tensor forward(const Tensor& x) override;
  Tensor forward_relu(const Tensor& x);  // relu(forward(x)), fused (batch_norm2d_relu)
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  float eps, momentum;
  // Non-null: training statistics over every rank of this group (engine/distributed/sync_batchnorm.h).
  ProcessGroup* sync = nullptr;
};

// bn(conv(x)), then ReLU when `relu`: in training (unless bn is synchronised) as conv2d_bn_stats then
// batch_norm2d_from_stats, so that a backend computes the statistics in the convolution's epilogue
// (the same values as the two modules' forwards up to float rounding; on the CPU the same bits);
// otherwise the two modules' forwards. A subclass of either (one that overrides forward) gets its own
// forwards, then ReLU.
Tensor conv_bn(Conv2d& conv, BatchNorm2d& bn, const Tensor& x, bool relu);

// A chain of conv -> bn pairs with a ReLU after every batch norm but the last, which has one when
// `relu` (ResNet's bottleneck: three pairs; its basic block: two). With bn_relu_prologue() on, in
// training, each convolution after the first reads the previous pair's raw output through
// bn_relu_conv2d_bn_stats (engine/ops/conv.h: that batch norm + ReLU in the convolution's prologue,
// the activation never written or kept); otherwise, or when a pair is not eligible as conv_bn's fused
// path (a subclass, eval, a synchronised batch norm), conv_bn after conv_bn. The same bits either way.
struct ConvBn {
  Conv2d* conv;
  BatchNorm2d* bn;
};
Tensor conv_bn_chain(std::initializer_list<ConvBn> pairs, const Tensor& x, bool relu);
// Process-wide; NIMBUS_BN_PROLOGUE=1 or 0 gives the initial value (read at the first call of either; another
// value is an error). Off by default: it saves the activation's write, its read and its memory until
// backward, but evaluates the batch norm (four per-channel loads) for every element the convolution gathers,
// R*S times per input value, and in TF32 on mma.sync gathers B without cp.async. Which is faster on a GPU is
// the device run's question (bench_models' resnet50_train_b256_64_prologue row).
void set_bn_relu_prologue(bool on);
bool bn_relu_prologue();
// Scope object (tests, benchmarks): sets the prologue switch, restores the previous value.
class BnReluPrologueScope {
 public:
  explicit BnReluPrologueScope(bool on) : saved_(bn_relu_prologue()) { set_bn_relu_prologue(on); }
  ~BnReluPrologueScope() { set_bn_relu_prologue(saved_); }
  BnReluPrologueScope(const BnReluPrologueScope&) = delete;
  BnReluPrologueScope& operator=(const BnReluPrologueScope&) = delete;

 private:
  bool saved_;
};

class Linear : public UnaryModule {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Rng& rng = global_rng());
  Tensor forward(const Tensor& x) override;
  Tensor weight, bias;
};

class ReLU : public UnaryModule {
 public:
  Tensor forward(const Tensor& x) override;
};

class MaxPool2d : public UnaryModule {
 public:
  explicit MaxPool2d(int kernel, int stride = 0 /* 0: = kernel, as PyTorch */, int padding = 0);
  Tensor forward(const Tensor& x) override;
  int kernel, stride, padding;
};

class GlobalAvgPool : public UnaryModule {
 public:
  Tensor forward(const Tensor& x) override;
};

class Flatten : public UnaryModule {
 public:
  explicit Flatten(int start_dim = 1) : start_dim(start_dim) {}
  Tensor forward(const Tensor& x) override;
  int start_dim;
};

}  // namespace nimbus
