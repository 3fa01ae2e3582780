// conv.h: 2-D convolution (cross-correlation, as PyTorch's nn.Conv2d).
//
//   x: (N, C, H, W)   w: (K, C, R, S)   b: (K) or undefined
//   y: (N, K, P, Q)   P = (H + 2*padding - R) / stride + 1, Q likewise with W, S
// Zero padding on all four sides; square stride and padding (all ResNet and
// DSen2-CR need). Backward gives dx, dw and db, each only when needed.
#pragma once
#include "engine/tensor.h"

namespace nimbus {

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int stride = 1, int padding = 0);
// relu(conv2d(...)) as one op: on the CPU's direct 3x3 path the ReLU is
// applied as each output tile is stored, saving a pass over the activations.
Tensor conv2d_relu(const Tensor& x, const Tensor& w, const Tensor& b, int stride = 1, int padding = 0);
// r + s * conv2d(x, w, b) as one op (DSen2-CR's residual block, x + 0.1 F(x)): the CUDA tensor-core
// kernels add r in the convolution's epilogue, saving a pass over the activations. r has the
// output's shape. Backward: dr = dy, and the convolution's gradients from s dy. In bfloat16 the CUDA
// epilogue rounds r + s v once, where the CPU rounds v and then the sum (both within 2^-8 of float32).
Tensor conv2d_residual(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& r, float s, int stride = 1,
                       int padding = 0);
// conv2d (no ReLU) that also gives its output's batch-norm training statistics, as batch_norm2d in
// training computes them from y (N, K, P, Q): mean and invstd = 1/sqrt(var + eps) per output channel
// (new (K) float32 tensors), running_mean and running_var updated in place, num_batches_tracked + 1
// (null: not counted). Recorded as "conv2d_bn_stats" with conv2d's backward: the statistics carry no
// gradient of their own (batch_norm2d_from_stats backpropagates through them). The CUDA tensor-core
// kernels compute them in the convolution's epilogue; conv_bn (engine/nn/layers.h) pairs it with
// batch_norm2d_from_stats. Training needs N*P*Q > 1: refused before anything is updated.
Tensor conv2d_bn_stats(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int padding, Tensor& mean,
                       Tensor& invstd, Tensor& running_mean, Tensor& running_var, float momentum, float eps,
                       Tensor* num_batches_tracked);
// conv2d_bn_stats of relu(batch_norm(x)) with batch statistics already computed (in_mean, in_invstd, as
// conv2d_bn_stats gave them for x) and in_weight, in_bias (may be undefined): the previous layer's
// batch norm + ReLU applied by the convolution as it reads x (the CUDA tensor-core kernels' prologue),
// so that activation is neither written nor kept for backward; backward makes it again. Gradients reach
// x (through the batch statistics, as batch_norm2d_from_stats's do), in_weight, in_bias, w and b; the
// statistics themselves carry none. Recorded as "bn_relu_conv2d_bn_stats". Same values as
// batch_norm2d_from_stats(x, ..., relu = true) followed by conv2d_bn_stats, bit for bit; under a bfloat16
// autocast with a float32 x (which autocast would round before the batch norm) it is those two ops.
Tensor bn_relu_conv2d_bn_stats(const Tensor& x, const Tensor& in_weight, const Tensor& in_bias,
                               const Tensor& in_mean, const Tensor& in_invstd, const Tensor& w, const Tensor& b,
                               int stride, int padding, Tensor& mean, Tensor& invstd, Tensor& running_mean,
                               Tensor& running_var, float momentum, float eps, Tensor* num_batches_tracked);

}  // namespace nimbus
