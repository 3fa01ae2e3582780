/* batchnorm.h: launchers for the CUDA batch-norm kernels (batchnorm.cu), callable from plain C++.
 *
 * Same layout and maths as kernels/cpu/batchnorm.h: x, y, dy, dx are (N, C, HW); mean, var,
 * invstd, weight, bias, dweight, dbias, running_* are (C); weight/bias may be null. Device
 * pointers. `block`: threads per channel for the reductions (multiple of 32, <= 1024).
 */
#pragma once
#include <cstdint>

namespace nimbus::cuda {

// mean_c = sum x / M, var_c = sum (x - mean)^2 / M (biased, two passes), M = N*HW.
void batchnorm_stats(float* mean, float* var, const float* x, int64_t N, int64_t C, int64_t HW, int block = 256);
void batchnorm_invstd(float* invstd, const float* var, float eps, int64_t C);
void batchnorm_update_running(float* running_mean, float* running_var, const float* mean, const float* var,
                              float momentum, int64_t M, int64_t C);
// relu: y = max(y, 0) in the same pass (batch_norm2d_relu).
void batchnorm_forward(float* y, const float* x, const float* mean, const float* invstd, const float* weight,
                       const float* bias, int64_t N, int64_t C, int64_t HW, bool relu, int block = 256);
// Writes dweight, dbias and (if non-null) dx; training: through the batch statistics.
void batchnorm_backward(float* dx, float* dweight, float* dbias, const float* dy, const float* x, const float* mean,
                        const float* invstd, const float* weight, int64_t N, int64_t C, int64_t HW, bool training,
                        int block = 256);

}  // namespace nimbus::cuda
