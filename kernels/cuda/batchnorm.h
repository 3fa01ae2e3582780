/* batchnorm.h: launchers for the CUDA batch-norm kernels (batchnorm.cu), callable from plain C++.
 *
 * Same layout and maths as kernels/cpu/batchnorm.h: x, y, dy, dx are (N, C, HW); mean, var,
 * invstd, weight, bias, dweight, dbias, running_* are (C); weight/bias may be null. Activations
 * are T (float or bfloat16), everything per channel float32. Device
 * pointers. `block`: threads per channel for the reductions (multiple of 32, <= 1024); a channel of
 * fewer values runs on as many warps as cover them (a thread with no value would still take part in
 * every reduction, and in the CUDA emulator those idle threads were most of a tiny model's step).
 */
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"

namespace nimbus::cuda {

// Training, one launch (splits 1): mean_c = sum x / M, var_c = sum (x - mean)^2 / M (biased, two passes),
// M = N*HW; writes mean and invstd = 1/sqrt(var + eps); running = (1 - momentum) running +
// momentum batch (unbiased var * M / (M - 1)); count[0] += 1 unless count is null.
// `splits` > 1 spreads each channel's values over that many blocks (two more launches, a combine in
// fixed order); it needs `scratch` of batchnorm_scratch_floats(C, splits) floats.
template <typename T>
void batchnorm_train_stats(float* mean, float* invstd, float* running_mean, float* running_var, float* count,
                           const T* x, int64_t N, int64_t C, int64_t HW, float momentum, float eps,
                           float* scratch = nullptr, int splits = 1, int block = 256);
// The split count for (N, C, HW): enough blocks for two per SM of an H200, at least 4096 values a
// block, at most 64; 1 when the channels alone fill the GPU.
int batchnorm_splits(int64_t N, int64_t C, int64_t HW);
int64_t batchnorm_scratch_floats(int64_t C, int splits);
// The same statistics (and running update, count) from per-chunk moments: `moments` holds, for each
// channel c and chunk s < chunks, (count, mean, sum of squared deviations) at (c * chunks + s) * 3, as
// a tensor-core convolution's epilogue writes them (bn_moments.cuh); M = the channel's total count.
void batchnorm_stats_from_moments(float* mean, float* invstd, float* running_mean, float* running_var, float* count,
                                  const float* moments, int64_t C, int chunks, int64_t M, float momentum, float eps);
// Eval: invstd from the running variance.
void batchnorm_invstd(float* invstd, const float* var, float eps, int64_t C);
// relu: y = max(y, 0) in the same pass (batch_norm2d_relu).
template <typename T>
void batchnorm_forward(T* y, const T* x, const float* mean, const float* invstd, const float* weight,
                       const float* bias, int64_t N, int64_t C, int64_t HW, bool relu, int block = 256);
// Writes dweight, dbias and (if non-null) dx; training: through the batch statistics. relu_y
// non-null: dy taken as 0 where relu_y <= 0 (the backward of batch_norm2d_relu, one pass).
template <typename T>
void batchnorm_backward(T* dx, float* dweight, float* dbias, const T* dy, const T* x, const float* mean,
                        const float* invstd, const float* weight, const T* relu_y, int64_t N, int64_t C, int64_t HW,
                        bool training, float* scratch = nullptr, int splits = 1, int block = 256);

}  // namespace nimbus::cuda
