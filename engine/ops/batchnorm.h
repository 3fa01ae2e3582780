// batchnorm.h: 2-D batch normalisation with PyTorch's semantics.
//
//   x: (N, C, H, W)   weight, bias: (C)   running_mean, running_var: (C)
//   training: normalise with the batch statistics over (N, H, W) (biased
//     variance), then update the running statistics in place:
//     running = (1 - momentum) * running + momentum * batch, using the
//     UNBIASED variance (n / (n - 1)) for running_var, as PyTorch does.
//   eval: normalise with the running statistics; nothing is updated.
//   y = (x - mean) / sqrt(var + eps) * weight + bias
//   num_batches_tracked: a 0-d counter (the module's) that training adds 1 to on its device, or null.
//   x may be float32 or bfloat16 (y and dx in its dtype); everything else is float32.
#pragma once
#include "engine/tensor.h"

namespace nimbus {

Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                    Tensor& running_var, bool training, float momentum = 0.1f, float eps = 1e-5f,
                    Tensor* num_batches_tracked = nullptr);

// relu(batch_norm2d(...)) as one op: the ReLU is applied in the normalisation's
// pass over the data, and its backward in the batch norm backward's, saving a
// pass over the activations each way.
Tensor batch_norm2d_relu(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                         Tensor& running_var, bool training, float momentum = 0.1f, float eps = 1e-5f,
                         Tensor* num_batches_tracked = nullptr);

// Training's normalisation (then the ReLU when `relu`) with the batch statistics of x already computed:
// mean and invstd (C) float32, as conv2d_bn_stats (conv.h) gives them. The backward is batch_norm2d's in
// training (through the batch statistics); nothing running is updated here.
Tensor batch_norm2d_from_stats(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& mean,
                               const Tensor& invstd, bool relu);

}  // namespace nimbus
