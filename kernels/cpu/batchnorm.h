// batchnorm.h: CPU kernels for 2-D batch normalisation (PyTorch semantics, see engine/ops/batchnorm.h).
//
// Layout: x, y, dy, dx are (N, C, HW) contiguous (NCHW with H*W flattened);
// mean, var, invstd, weight, bias, dweight, dbias, running_* are (C).
// weight / bias may be null (affine=false: weight 1, bias 0).
//
// Two versions of the three hot kernels:
//   *_ref   templated, plain loops, two-pass statistics: the readable definition,
//           run in double by the finite-difference tests.
//   (plain) float or bfloat16 activations, OpenMP over channels, one pass over x for the
//           per-channel sums with double accumulators (float sums of ~1e5 terms would lose digits).
//
//   stats:    mean_c = sum x / M,  var_c = sum (x - mean)^2 / M   (biased), M = N*HW
//   forward:  y = (x - mean) * invstd * w + b
//   backward: xhat = (x - mean) * invstd,  dbias = sum dy,  dweight = sum dy * xhat,
//             training: dx = w * invstd * (dy - dbias / M - xhat * dweight / M)
//                       (the gradient also flows through the batch mean and variance)
//             eval:     dx = w * invstd * dy                (running stats are constants)
//             dx may be null when the input needs no gradient.
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"

namespace nimbus::cpu {

template <typename T> void batchnorm_stats_ref(T* mean, T* var, const T* x, int64_t N, int64_t C, int64_t HW);
template <typename T>
void batchnorm_forward_ref(T* y, const T* x, const T* mean, const T* invstd, const T* weight, const T* bias,
                           int64_t N, int64_t C, int64_t HW);
template <typename T>
void batchnorm_backward_ref(T* dx, T* dweight, T* dbias, const T* dy, const T* x, const T* mean, const T* invstd,
                            const T* weight, int64_t N, int64_t C, int64_t HW, bool training);

// The fast kernels' activations (x, y, dy, dx, relu_y) are T: float or bfloat16 (read as float,
// results rounded once); statistics, parameters and their gradients are float32 either way.
template <typename T> void batchnorm_stats(float* mean, float* var, const T* x, int64_t N, int64_t C, int64_t HW);
// relu: y = max(y, 0) in the same pass (batch_norm2d_relu; NaN passes, as relu_forward).
template <typename T>
void batchnorm_forward(T* y, const T* x, const float* mean, const float* invstd, const float* weight,
                       const float* bias, int64_t N, int64_t C, int64_t HW, bool relu = false);
// relu_y non-null: the backward of relu(batch_norm(x)) with y its output, dy taken as 0 where y <= 0
// (relu_backward's rule) in the same pass.
template <typename T>
void batchnorm_backward(T* dx, float* dweight, float* dbias, const T* dy, const T* x, const float* mean,
                        const float* invstd, const float* weight, const T* relu_y, int64_t N, int64_t C, int64_t HW,
                        bool training);

// invstd = 1 / sqrt(var + eps), per channel.
template <typename T> void batchnorm_invstd(T* invstd, const T* var, T eps, int64_t C);
// running = (1 - momentum) * running + momentum * batch, with the UNBIASED
// variance var * M / (M - 1) for running_var (M = values per channel, > 1).
template <typename T>
void batchnorm_update_running(T* running_mean, T* running_var, const T* mean, const T* var, T momentum, int64_t M,
                              int64_t C);

}  // namespace nimbus::cpu
