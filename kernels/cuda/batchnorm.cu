/* batchnorm.cu: batch norm statistics, forward and backward (training and eval).
 *
 * Reductions run one block per channel c over its M = N*HW values (j -> n = j / HW, i = j % HW),
 * each thread striding by blockDim, then block_reduce_sum (fixed tree, no atomics): results are
 * independent of thread and block order. The block total is broadcast through shared memory when
 * every thread needs it (the variance pass, dx). The training statistics (mean, invstd, running
 * update, batch count) are one launch; forward and invstd are one thread per element. CPU twin: kernels/cpu/batchnorm.h (double accumulators
 * there, float tree sums here: equal within float tolerance). Activations (x, y, dy, dx) are T, float or
 * bfloat16 (read as float, results rounded once); statistics and parameters are float32.
 */
#include "kernels/cuda/batchnorm.h"

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/common/error.h"

namespace nimbus::cuda {

// The block-wide sum of v, returned to every thread.
__device__ float block_sum_broadcast(float v) {
  __shared__ float total;
  v = block_reduce_sum(v);
  if (threadIdx.x == 0) total = v;
  __syncthreads();  // total written
  v = total;
  __syncthreads();  // total read by all before a next call overwrites it
  return v;
}

__device__ __forceinline__ int64_t channel_index(int64_t j, int64_t c, int64_t C, int64_t HW) {
  return ((j / HW) * C + c) * HW + j % HW;
}

// The training statistics of channel c in one block: mean and variance (two passes over the channel),
// then thread 0 writes mean and invstd, updates the running statistics (unbiased variance) and, in
// block 0, adds 1 to the batch counter: one launch instead of four.
template <typename T>
__global__ void batchnorm_train_stats_kernel(float* mean, float* invstd, float* rm, float* rv, float* count,
                                             const T* x, int64_t C, int64_t HW, int64_t M, float momentum, float eps,
                                             float unbias) {
  const int64_t c = blockIdx.x;
  float acc = 0.0f;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) acc += float(x[channel_index(j, c, C, HW)]);
  const float m = block_sum_broadcast(acc) / float(M);
  acc = 0.0f;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const float d = float(x[channel_index(j, c, C, HW)]) - m;
    acc += d * d;
  }
  acc = block_reduce_sum(acc);
  if (threadIdx.x == 0) {
    const float var = acc / float(M);
    mean[c] = m;
    invstd[c] = 1.0f / sqrtf(var + eps);
    rm[c] = (1.0f - momentum) * rm[c] + momentum * m;
    rv[c] = (1.0f - momentum) * rv[c] + momentum * var * unbias;
    if (c == 0 && count) count[0] += 1.0f;
  }
}

__global__ void batchnorm_invstd_kernel(float* invstd, const float* var, float eps, int64_t C) {
  for (int64_t c = grid_first(); c < C; c += grid_step()) invstd[c] = 1.0f / sqrtf(var[c] + eps);
}

// y = (x - mean) * (invstd * w) + b, per channel constants as in the CPU kernel.
template <typename T>
__global__ void batchnorm_forward_kernel(T* y, const T* x, const float* mean, const float* invstd,
                                         const float* weight, const float* bias, int64_t C, int64_t HW, int64_t n,
                                         bool relu) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const int64_t c = (i / HW) % C;
    const float scale = invstd[c] * (weight ? weight[c] : 1.0f), shift = bias ? bias[c] : 0.0f;
    const float v = (float(x[i]) - mean[c]) * scale + shift;
    y[i] = relu && v < 0.0f ? 0.0f : v;  // relu_forward's rule: a NaN passes through
  }
}

// dbias = sum dy, dweight = invstd * sum dy (x - mean); dx = g dy + a (x - mean) + b with
// g = w invstd, and in training a = -g invstd dweight / M, b = -g dbias / M (else a = b = 0).
// relu_y non-null: dy is read through the ReLU of the forward (0 where y <= 0).
template <typename T>
__global__ void batchnorm_backward_kernel(T* dx, float* dweight, float* dbias, const T* dy, const T* x,
                                          const float* mean, const float* invstd, const float* weight,
                                          const T* relu_y, int64_t C, int64_t HW, int64_t M, bool training) {
  const int64_t c = blockIdx.x;
  const float m = mean[c], is = invstd[c];
  auto dy_at = [dy, relu_y](int64_t i) -> float {
    return relu_y && !(float(relu_y[i]) > 0.0f) ? 0.0f : float(dy[i]);
  };
  float sdy = 0.0f, sdyx = 0.0f;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int64_t i = channel_index(j, c, C, HW);
    const float d = dy_at(i);
    sdy += d;
    sdyx += d * (float(x[i]) - m);
  }
  sdy = block_sum_broadcast(sdy);
  sdyx = block_sum_broadcast(sdyx) * is;
  if (threadIdx.x == 0) {
    dbias[c] = sdy;
    dweight[c] = sdyx;
  }
  if (!dx) return;  // after the last barrier: every thread has passed both reductions
  const float g = (weight ? weight[c] : 1.0f) * is;
  const float a = training ? -g * is * sdyx / float(M) : 0.0f, b = training ? -g * sdy / float(M) : 0.0f;
  for (int64_t j = threadIdx.x; j < M; j += blockDim.x) {
    const int64_t i = channel_index(j, c, C, HW);
    dx[i] = g * dy_at(i) + a * (float(x[i]) - m) + b;
  }
}

static void check_block(int block, const char* what) {
  NIMBUS_CHECK(block >= 32 && block <= 1024 && block % 32 == 0, what, ": block of ", block,
               " threads; the reductions need a multiple of 32 in [32, 1024]");
}

template <typename T>
void batchnorm_train_stats(float* mean, float* invstd, float* running_mean, float* running_var, float* count,
                           const T* x, int64_t N, int64_t C, int64_t HW, float momentum, float eps, int block) {
  if (C <= 0) return;
  check_block(block, "cuda::batchnorm_train_stats");
  const int64_t M = N * HW;
  const float unbias = float(M) / float(M - 1);
  launch(batchnorm_train_stats_kernel<T>, unsigned(C), block, 0, launch_stream(), mean, invstd, running_mean, running_var,
         count, x, C, HW, M, momentum, eps, unbias);
  check_launch("cuda::batchnorm_train_stats");
}

void batchnorm_invstd(float* invstd, const float* var, float eps, int64_t C) {
  if (C <= 0) return;
  launch(batchnorm_invstd_kernel, grid_for(C, kBlock), kBlock, 0, launch_stream(), invstd, var, eps, C);
  check_launch("cuda::batchnorm_invstd");
}

template <typename T>
void batchnorm_forward(T* y, const T* x, const float* mean, const float* invstd, const float* weight,
                       const float* bias, int64_t N, int64_t C, int64_t HW, bool relu, int block) {
  const int64_t n = N * C * HW;
  if (n <= 0) return;
  launch(batchnorm_forward_kernel<T>, grid_for(n, block), block, 0, launch_stream(), y, x, mean, invstd, weight, bias, C, HW, n,
         relu);
  check_launch("cuda::batchnorm_forward");
}

template <typename T>
void batchnorm_backward(T* dx, float* dweight, float* dbias, const T* dy, const T* x, const float* mean,
                        const float* invstd, const float* weight, const T* relu_y, int64_t N, int64_t C, int64_t HW,
                        bool training, int block) {
  if (C <= 0) return;
  check_block(block, "cuda::batchnorm_backward");
  launch(batchnorm_backward_kernel<T>, unsigned(C), block, 0, launch_stream(), dx, dweight, dbias, dy, x, mean, invstd, weight,
         relu_y, C, HW, N * HW, training);
  check_launch("cuda::batchnorm_backward");
}

#define NIMBUS_INSTANTIATE(T)                                                                                   \
  template void batchnorm_train_stats<T>(float*, float*, float*, float*, float*, const T*, int64_t, int64_t, int64_t, \
                                         float, float, int);                                                      \
  template void batchnorm_forward<T>(T*, const T*, const float*, const float*, const float*, const float*, int64_t, \
                                     int64_t, int64_t, bool, int);                                               \
  template void batchnorm_backward<T>(T*, float*, float*, const T*, const T*, const float*, const float*,         \
                                      const float*, const T*, int64_t, int64_t, int64_t, bool, int);
NIMBUS_INSTANTIATE(float)
NIMBUS_INSTANTIATE(bfloat16)
#undef NIMBUS_INSTANTIATE

}  // namespace nimbus::cuda
