/* batchnorm.cu: batch norm statistics, forward and backward (training and eval).
 *
 * Reductions run one block per channel c over its M = N*HW values (j -> n = j / HW, i = j % HW by
 * multiply-shift division, FastDivmod), each thread striding by blockDim, then block_reduce_sum
 * (fixed tree, no atomics): results are independent of thread and block order. A layer with few
 * channels and many values each (ResNet-50's layer1 at batch 256: 64 channels of 65,536) would leave
 * most of the GPU idle, so there the channel's values are split over S blocks (batchnorm_splits):
 * each block reduces its chunk, and a second kernel combines the S partial results of a channel in
 * order (statistics: count, mean and sum of squared deviations per chunk, combined by Chan's
 * formula; backward: the two sums, then dx in a third, elementwise, pass). Still deterministic. The block total is broadcast through shared memory when
 * every thread needs it (the variance pass, dx). The training statistics (mean, invstd, running
 * update, batch count) are one launch; forward and invstd are one thread per element (per 16-byte
 * pack when the pointers are aligned and HW is a multiple of a pack, as in elementwise.cu). CPU twin: kernels/cpu/batchnorm.h (double accumulators
 * there, float tree sums here: equal within float tolerance). Activations (x, y, dy, dx) are T, float or
 * bfloat16 (read as float, results rounded once); statistics and parameters are float32.
 */
#include "kernels/cuda/batchnorm.h"

#include <algorithm>

#include "kernels/common/fast_divmod.h"
#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/bn_apply.cuh"
#include "kernels/cuda/bn_moments.cuh"  // clamp_m2
#include "kernels/cuda/compat.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/pack.cuh"
#include "kernels/cuda/tensor_core.h"  // load_vector, store_vector
#include "kernels/common/error.h"

namespace nimbus::cuda {

constexpr int64_t kMinSplitValues = 4096;  // values of a channel per block at least, when splitting

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

// Element j of channel c: image n = j / HW, position i = j % HW (by_hw divides by HW).
__device__ __forceinline__ int64_t channel_index(int j, int64_t c, int64_t C, int64_t HW, const FastDivmod& by_hw) {
  int n, i;
  by_hw.divmod(j, n, i);
  return (int64_t(n) * C + c) * HW + i;
}

// The training statistics of channel c in one block: mean and variance (two passes over the channel),
// then thread 0 writes mean and invstd, updates the running statistics (unbiased variance) and, in
// block 0, adds 1 to the batch counter: one launch instead of four.
// Mean and sum of squared deviations of channel c's values j in [j0, j1) (two passes), to every thread.
template <typename T>
__device__ void chunk_moments(const T* x, int64_t c, int64_t C, int64_t HW, const FastDivmod& by_hw, int j0, int j1,
                              float& mean, float& m2) {
  float acc = 0.0f;
  for (int j = j0 + int(threadIdx.x); j < j1; j += int(blockDim.x)) acc += float(x[channel_index(j, c, C, HW, by_hw)]);
  const float n = float(j1 - j0);
  mean = block_sum_broadcast(acc) / n;
  acc = 0.0f;
  float e = 0.0f;
  for (int j = j0 + int(threadIdx.x); j < j1; j += int(blockDim.x)) {
    const float d = float(x[channel_index(j, c, C, HW, by_hw)]) - mean;
    e += d;
    acc += d * d;
  }
  m2 = block_sum_broadcast(acc);
  // The corrected two-pass form (as bn_moments.cuh): the first pass's mean of values far from 0 is off
  // by its rounding, which the deviations' sum e (n times that error) measures; taken out of both.
  e = block_sum_broadcast(e);
  m2 = clamp_m2(m2 - e * e / n);
  mean += e / n;
}

// Thread 0's part of the statistics once mean and var of channel c are known.
__device__ __forceinline__ void write_stats(int64_t c, float m, float var, float* mean, float* invstd, float* rm,
                                            float* rv, float* count, float momentum, float eps, float unbias) {
  mean[c] = m;
  invstd[c] = 1.0f / sqrtf(var + eps);
  rm[c] = (1.0f - momentum) * rm[c] + momentum * m;
  rv[c] = (1.0f - momentum) * rv[c] + momentum * var * unbias;
  if (c == 0 && count) count[0] += 1.0f;
}

// One block per channel (S = 1): mean and variance (two passes over the channel), then thread 0
// writes mean and invstd, updates the running statistics (unbiased variance) and, in block 0, adds 1
// to the batch counter: one launch instead of four.
template <typename T>
__global__ void batchnorm_train_stats_kernel(float* mean, float* invstd, float* rm, float* rv, float* count,
                                             const T* x, int64_t C, int64_t HW, int M, FastDivmod by_hw,
                                             float momentum, float eps, float unbias) {
  const int64_t c = blockIdx.x;
  float m, m2;
  chunk_moments(x, c, C, HW, by_hw, 0, M, m, m2);
  if (threadIdx.x == 0) write_stats(c, m, m2 / float(M), mean, invstd, rm, rv, count, momentum, eps, unbias);
}

// S > 1, first kernel: block (c, s) writes its chunk's (count, mean, m2) to part[(c * S + s) * 3].
template <typename T>
__global__ void batchnorm_chunk_moments_kernel(float* part, const T* x, int64_t C, int64_t HW, int M, int chunk,
                                               FastDivmod by_hw) {
  const int64_t c = blockIdx.x;
  const int s = int(blockIdx.y), S = int(gridDim.y);
  const int j0 = s * chunk, j1 = min(M, j0 + chunk);
  float m = 0.0f, m2 = 0.0f;
  if (j0 < j1) chunk_moments(x, c, C, HW, by_hw, j0, j1, m, m2);  // uniform per block: the barriers inside are safe
  if (threadIdx.x == 0) {
    float* p = part + (c * S + s) * 3;
    p[0] = float(j1 > j0 ? j1 - j0 : 0), p[1] = m, p[2] = m2;
  }
}

// Moments (count n, mean m, sum of squared deviations m2) a merged with b (Chan et al.: n = na + nb,
// delta = mb - ma, mean = ma + delta nb / n, m2 = m2a + m2b + delta^2 na nb / n); an empty b changes
// nothing, and b into an empty a is b itself.
__device__ __forceinline__ void merge_moments(float& n, float& m, float& m2, float nb, float mb, float m2b) {
  if (nb == 0.0f) return;
  if (n == 0.0f) {
    n = nb, m = mb, m2 = m2b;
    return;
  }
  const float tot = n + nb, delta = mb - m;
  m += delta * nb / tot;
  m2 += m2b + delta * delta * n * nb / tot;
  n = tot;
}

// S > 1, second kernel: channel c's S chunks combined in order, then the statistics.
__global__ void batchnorm_combine_moments_kernel(float* mean, float* invstd, float* rm, float* rv, float* count,
                                                 const float* part, int64_t C, int S, float momentum, float eps,
                                                 float unbias) {
  for (int64_t c = grid_first(); c < C; c += grid_step()) {
    float n = 0.0f, m = 0.0f, m2 = 0.0f;
    for (int s = 0; s < S; ++s) {
      const float* p = part + (c * S + s) * 3;
      merge_moments(n, m, m2, p[0], p[1], p[2]);
    }
    write_stats(c, m, m2 / n, mean, invstd, rm, rv, count, momentum, eps, unbias);
  }
}

// batchnorm_stats_from_moments: the chunks a convolution's epilogue wrote (bn_moments.cuh), up to
// N*P*Q / 32 per channel (tens of thousands at ResNet-50's stem), so a block of T threads per channel
// (blocks stride over the channels; T a power of two, kMergeThreads or fewer when there are fewer
// chunks): thread t merges chunks t, t + T, ... in order, then thread t merges thread t + T/2, ..., 1
// through shared memory (a fixed tree whose result thread 0 holds): deterministic.
constexpr int kMergeThreads = 256;
__global__ void __launch_bounds__(kMergeThreads)
    batchnorm_merge_chunks_kernel(float* mean, float* invstd, float* rm, float* rv, float* count, const float* part,
                                  int64_t C, int S, float momentum, float eps, float unbias) {
  __shared__ float sn[kMergeThreads], sm[kMergeThreads], sm2[kMergeThreads];
  const int t = int(threadIdx.x), T = int(blockDim.x);
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    float n = 0.0f, m = 0.0f, m2 = 0.0f;
    for (int s = t; s < S; s += T) {
      const float* p = part + (c * S + s) * 3;
      merge_moments(n, m, m2, p[0], p[1], p[2]);
    }
    sn[t] = n, sm[t] = m, sm2[t] = m2;
    __syncthreads();
    for (int off = T / 2; off > 0; off /= 2) {
      if (t < off) {
        merge_moments(n, m, m2, sn[t + off], sm[t + off], sm2[t + off]);
        sn[t] = n, sm[t] = m, sm2[t] = m2;
      }
      __syncthreads();
    }
    if (t == 0) write_stats(c, m, m2 / n, mean, invstd, rm, rv, count, momentum, eps, unbias);
    __syncthreads();  // the shared arrays are read before the next channel overwrites them
  }
}

__global__ void batchnorm_invstd_kernel(float* invstd, const float* var, float eps, int64_t C) {
  for (int64_t c = grid_first(); c < C; c += grid_step()) invstd[c] = 1.0f / sqrtf(var[c] + eps);
}

// The channel of flat element i of an (N, C, HW) tensor.
__device__ __forceinline__ int channel_of(int i, const FastDivmod& by_hw, const FastDivmod& by_c) {
  int nc, hw, nn, c;
  by_hw.divmod(i, nc, hw);
  by_c.divmod(nc, nn, c);
  return c;
}

// y = bn_apply(x) (bn_apply.cuh: the convolutions' prologue shares the formula), then the ReLU.
// vec (every pointer 16-byte aligned and HW a multiple of a pack, so a pack lies in one channel): a
// thread moves a 16-byte pack of x and y per step; otherwise element by element. The same formula
// per element either way, so the results are bitwise the same.
template <typename T>
__global__ void batchnorm_forward_kernel(T* y, const T* x, const float* mean, const float* invstd,
                                         const float* weight, const float* bias, FastDivmod by_hw, FastDivmod by_c,
                                         int n, bool relu, bool vec) {
  int done = 0;
  if (vec) {
    constexpr int K = Pack<T>::K;
    for (int64_t p = grid_first(); p < n / K; p += grid_step()) {  // 64-bit: p + step may pass 2^31
      const int c = channel_of(int(p * K), by_hw, by_c);
      const float scale = invstd[c] * (weight ? weight[c] : 1.0f), shift = bias ? bias[c] : 0.0f, m = mean[c];
      const Pack<T> xs = load_vector<Pack<T>>(x + p * K);
      Pack<T> ys;
#pragma unroll
      for (int k = 0; k < K; ++k) ys.v[k] = bn_apply(float(xs.v[k]), m, scale, shift, relu);
      store_vector(y + p * K, ys);
    }
    done = n / K * K;
  }
  for (int64_t i = done + grid_first(); i < n; i += grid_step()) {
    const int c = channel_of(int(i), by_hw, by_c);
    const float scale = invstd[c] * (weight ? weight[c] : 1.0f), shift = bias ? bias[c] : 0.0f;
    y[i] = bn_apply(float(x[i]), mean[c], scale, shift, relu);
  }
}

// dbias = sum dy, dweight = invstd * sum dy (x - mean); dx = g dy + a (x - mean) + b with
// g = w invstd, and in training a = -g invstd dweight / M, b = -g dbias / M (else a = b = 0).
// relu_y non-null: dy is read through the ReLU of the forward (0 where y <= 0).
template <typename T>
__device__ __forceinline__ float dy_through_relu(const T* dy, const T* relu_y, int64_t i) {
  return relu_y && !(float(relu_y[i]) > 0.0f) ? 0.0f : float(dy[i]);
}

// Sums of dy and dy (x - mean) over channel c's values j in [j0, j1), to every thread.
template <typename T>
__device__ void chunk_grad_sums(const T* dy, const T* x, const T* relu_y, float m, int64_t c, int64_t C, int64_t HW,
                                const FastDivmod& by_hw, int j0, int j1, float& sdy, float& sdyx) {
  sdy = 0.0f, sdyx = 0.0f;
  for (int j = j0 + int(threadIdx.x); j < j1; j += int(blockDim.x)) {
    const int64_t i = channel_index(j, c, C, HW, by_hw);
    const float d = dy_through_relu(dy, relu_y, i);
    sdy += d;
    sdyx += d * (float(x[i]) - m);
  }
  sdy = block_sum_broadcast(sdy);
  sdyx = block_sum_broadcast(sdyx);
}

// dx's per-channel coefficients: dx = g dy + a (x - mean) + b.
struct DxCoef {
  float g, a, b;
};
__device__ __forceinline__ DxCoef dx_coef(const float* weight, int64_t c, float is, float sdy, float sdyx_is, int M,
                                         bool training) {
  const float g = (weight ? weight[c] : 1.0f) * is;
  return {g, training ? -g * is * sdyx_is / float(M) : 0.0f, training ? -g * sdy / float(M) : 0.0f};
}

// One block per channel (S = 1): both sums, then dx over the channel, in one launch.
template <typename T>
__global__ void batchnorm_backward_kernel(T* dx, float* dweight, float* dbias, const T* dy, const T* x,
                                          const float* mean, const float* invstd, const float* weight,
                                          const T* relu_y, int64_t C, int64_t HW, int M, FastDivmod by_hw,
                                          bool training) {
  const int64_t c = blockIdx.x;
  const float m = mean[c], is = invstd[c];
  float sdy, sdyx;
  chunk_grad_sums(dy, x, relu_y, m, c, C, HW, by_hw, 0, M, sdy, sdyx);
  sdyx *= is;
  if (threadIdx.x == 0) {
    dbias[c] = sdy;
    dweight[c] = sdyx;
  }
  if (!dx) return;  // after the last barrier: every thread has passed both reductions
  const DxCoef k = dx_coef(weight, c, is, sdy, sdyx, M, training);
  for (int j = int(threadIdx.x); j < M; j += int(blockDim.x)) {
    const int64_t i = channel_index(j, c, C, HW, by_hw);
    dx[i] = k.g * dy_through_relu(dy, relu_y, i) + k.a * (float(x[i]) - m) + k.b;
  }
}

// S > 1, first kernel: block (c, s) writes its chunk's two sums to part[(c * S + s) * 2].
template <typename T>
__global__ void batchnorm_chunk_grad_kernel(float* part, const T* dy, const T* x, const float* mean,
                                            const T* relu_y, int64_t C, int64_t HW, int M, int chunk,
                                            FastDivmod by_hw) {
  const int64_t c = blockIdx.x;
  const int s = int(blockIdx.y), S = int(gridDim.y);
  const int j0 = s * chunk, j1 = min(M, j0 + chunk);
  float sdy = 0.0f, sdyx = 0.0f;
  if (j0 < j1) chunk_grad_sums(dy, x, relu_y, mean[c], c, C, HW, by_hw, j0, j1, sdy, sdyx);
  if (threadIdx.x == 0) part[(c * S + s) * 2] = sdy, part[(c * S + s) * 2 + 1] = sdyx;
}

// S > 1, second kernel: channel c's sums added in order -> dbias, dweight, and dx's coefficients
// (coef[c * 3 ..]) for the third.
__global__ void batchnorm_combine_grad_kernel(float* dweight, float* dbias, float* coef, const float* part,
                                              const float* invstd, const float* weight, int64_t C, int S, int M,
                                              bool training) {
  for (int64_t c = grid_first(); c < C; c += grid_step()) {
    float sdy = 0.0f, sdyx = 0.0f;
    for (int s = 0; s < S; ++s) sdy += part[(c * S + s) * 2], sdyx += part[(c * S + s) * 2 + 1];
    const float is = invstd[c];
    sdyx *= is;
    dbias[c] = sdy;
    dweight[c] = sdyx;
    const DxCoef k = dx_coef(weight, c, is, sdy, sdyx, M, training);
    coef[c * 3] = k.g, coef[c * 3 + 1] = k.a, coef[c * 3 + 2] = k.b;
  }
}

// S > 1, third kernel: dx elementwise from the coefficients; vec as batchnorm_forward_kernel's.
__device__ __forceinline__ float bn_dx(const float* k, float dy, float x, float m) {
  return k[0] * dy + k[1] * (x - m) + k[2];
}
template <typename T>
__global__ void batchnorm_dx_kernel(T* dx, const T* dy, const T* x, const float* mean, const float* coef,
                                    const T* relu_y, FastDivmod by_hw, FastDivmod by_c, int n, bool vec) {
  int done = 0;
  if (vec) {
    constexpr int K = Pack<T>::K;
    for (int64_t p = grid_first(); p < n / K; p += grid_step()) {  // 64-bit: p + step may pass 2^31
      const int c = channel_of(int(p * K), by_hw, by_c);
      const float* k = coef + int64_t(c) * 3;
      const float m = mean[c];
      const Pack<T> ds = load_vector<Pack<T>>(dy + p * K), xs = load_vector<Pack<T>>(x + p * K);
      Pack<T> rs{}, out;
      if (relu_y) rs = load_vector<Pack<T>>(relu_y + p * K);
#pragma unroll
      for (int e = 0; e < K; ++e) {
        const float d = relu_y && !(float(rs.v[e]) > 0.0f) ? 0.0f : float(ds.v[e]);  // dy_through_relu's rule
        out.v[e] = bn_dx(k, d, float(xs.v[e]), m);
      }
      store_vector(dx + p * K, out);
    }
    done = n / K * K;
  }
  for (int64_t i = done + grid_first(); i < n; i += grid_step()) {
    const int c = channel_of(int(i), by_hw, by_c);
    dx[i] = bn_dx(coef + int64_t(c) * 3, dy_through_relu(dy, relu_y, i), float(x[i]), mean[c]);
  }
}

static void check_block(int block, const char* what) {
  NIMBUS_CHECK(block >= 32 && block <= 1024 && block % 32 == 0, what, ": block of ", block,
               " threads; the reductions need a multiple of 32 in [32, 1024]");
}

// A block for one channel of M values: `block` threads, or fewer when fewer warps cover the channel (a
// thread with no value still takes part in every reduction: on a GPU idle warps cost little, in the
// emulator they were most of a tiny test model's step).
static int channel_block(int block, int64_t M) {
  return int(std::clamp<int64_t>((M + 31) / 32 * 32, 32, block));
}

// Index arithmetic in int (FastDivmod): every tensor below 2^31 elements.
static void check_size(int64_t n, const char* what) {
  NIMBUS_CHECK(n < (int64_t(1) << 31), what, ": ", n, " elements (the kernels index in 32 bits)");
}

int batchnorm_splits(int64_t N, int64_t C, int64_t HW) {
  const int64_t M = N * HW;
  if (C <= 0 || M <= 0) return 1;
  const int64_t want = (264 + C - 1) / C;  // two blocks per SM of an H200 over all channels
  return int(std::clamp<int64_t>(std::min(want, M / kMinSplitValues), 1, 64));
}

// The statistics keep 3 floats a chunk (count, mean, M2); the backward 2 a chunk (sums of dy and dy x)
// and then 3 a channel (dx's coefficients): C * (2 splits + 3), more than 3 C splits when splits is 2.
int64_t batchnorm_scratch_floats(int64_t C, int splits) {
  return splits > 1 ? C * std::max<int64_t>(3 * int64_t(splits), 2 * int64_t(splits) + 3) : 0;
}

template <typename T>
void batchnorm_train_stats(float* mean, float* invstd, float* running_mean, float* running_var, float* count,
                           const T* x, int64_t N, int64_t C, int64_t HW, float momentum, float eps, float* scratch,
                           int splits, int block) {
  if (C <= 0) return;
  check_block(block, "cuda::batchnorm_train_stats");
  check_size(N * C * HW, "cuda::batchnorm_train_stats");
  const int M = int(N * HW);
  const float unbias = float(M) / float(M - 1);
  const FastDivmod by_hw{int(HW)};
  if (splits <= 1) {
    launch(batchnorm_train_stats_kernel<T>, unsigned(C), channel_block(block, M), 0, launch_stream(), mean, invstd,
           running_mean, running_var, count, x, C, HW, M, by_hw, momentum, eps, unbias);
    check_launch("cuda::batchnorm_train_stats");
    return;
  }
  NIMBUS_CHECK(scratch, "cuda::batchnorm_train_stats: ", splits, " splits need scratch");
  const int chunk = (M + splits - 1) / splits;
  launch(batchnorm_chunk_moments_kernel<T>, dim3(unsigned(C), unsigned(splits)), block, 0, launch_stream(), scratch, x,
         C, HW, M, chunk, by_hw);
  check_launch("cuda::batchnorm_train_stats (chunks)");
  launch(batchnorm_combine_moments_kernel, grid_for(C, kBlock), kBlock, 0, launch_stream(), mean, invstd, running_mean,
         running_var, count, static_cast<const float*>(scratch), C, splits, momentum, eps, unbias);
  check_launch("cuda::batchnorm_train_stats (combine)");
}

void batchnorm_stats_from_moments(float* mean, float* invstd, float* running_mean, float* running_var, float* count,
                                  const float* moments, int64_t C, int chunks, int64_t M, float momentum, float eps) {
  if (C <= 0) return;
  NIMBUS_CHECK(M > 1 && chunks > 0, "cuda::batchnorm_stats_from_moments: ", M, " values in ", chunks,
               " chunks per channel");
  const float unbias = float(M) / float(M - 1);
  int threads = 32;  // a power of two, at least the chunks up to kMergeThreads (see the kernel)
  while (threads < chunks && threads < kMergeThreads) threads *= 2;
  launch(batchnorm_merge_chunks_kernel, unsigned(std::min<int64_t>(C, 65535)), threads, 0, launch_stream(),
         mean, invstd, running_mean, running_var, count, moments, C, chunks, momentum, eps, unbias);
  check_launch("cuda::batchnorm_stats_from_moments");
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
  check_size(n, "cuda::batchnorm_forward");
  const bool vec = HW % Pack<T>::K == 0 && aligned16(y) && aligned16(x);
  launch(batchnorm_forward_kernel<T>, grid_for(n, block), block, 0, launch_stream(), y, x, mean, invstd, weight, bias,
         FastDivmod(int(HW)), FastDivmod(int(C)), int(n), relu, vec);
  check_launch("cuda::batchnorm_forward");
}

template <typename T>
void batchnorm_backward(T* dx, float* dweight, float* dbias, const T* dy, const T* x, const float* mean,
                        const float* invstd, const float* weight, const T* relu_y, int64_t N, int64_t C, int64_t HW,
                        bool training, float* scratch, int splits, int block) {
  if (C <= 0) return;
  check_block(block, "cuda::batchnorm_backward");
  check_size(N * C * HW, "cuda::batchnorm_backward");
  const int M = int(N * HW);
  const FastDivmod by_hw{int(HW)};
  if (splits <= 1) {
    launch(batchnorm_backward_kernel<T>, unsigned(C), channel_block(block, M), 0, launch_stream(), dx, dweight,
           dbias, dy, x, mean, invstd, weight, relu_y, C, HW, M, by_hw, training);
    check_launch("cuda::batchnorm_backward");
    return;
  }
  NIMBUS_CHECK(scratch, "cuda::batchnorm_backward: ", splits, " splits need scratch");
  const int chunk = (M + splits - 1) / splits;
  float* part = scratch;                   // C * splits * 2
  float* coef = scratch + C * splits * 2;  // C * 3 (batchnorm_scratch_floats counts them)
  launch(batchnorm_chunk_grad_kernel<T>, dim3(unsigned(C), unsigned(splits)), block, 0, launch_stream(), part, dy, x,
         mean, relu_y, C, HW, M, chunk, by_hw);
  check_launch("cuda::batchnorm_backward (chunks)");
  launch(batchnorm_combine_grad_kernel, grid_for(C, kBlock), kBlock, 0, launch_stream(), dweight, dbias, coef,
         static_cast<const float*>(part), invstd, weight, C, splits, M, training);
  check_launch("cuda::batchnorm_backward (combine)");
  if (dx) {
    const int64_t n = N * C * HW;
    const bool vec = HW % Pack<T>::K == 0 && aligned16(dx) && aligned16(dy) && aligned16(x) && aligned16(relu_y);
    launch(batchnorm_dx_kernel<T>, grid_for(n, block), block, 0, launch_stream(), dx, dy, x, mean,
           static_cast<const float*>(coef), relu_y, by_hw, FastDivmod(int(C)), int(n), vec);
    check_launch("cuda::batchnorm_backward (dx)");
  }
}

#define NIMBUS_INSTANTIATE(T)                                                                                   \
  template void batchnorm_train_stats<T>(float*, float*, float*, float*, float*, const T*, int64_t, int64_t, int64_t, \
                                         float, float, float*, int, int);                                         \
  template void batchnorm_forward<T>(T*, const T*, const float*, const float*, const float*, const float*, int64_t, \
                                     int64_t, int64_t, bool, int);                                               \
  template void batchnorm_backward<T>(T*, float*, float*, const T*, const T*, const float*, const float*,         \
                                      const float*, const T*, int64_t, int64_t, int64_t, bool, float*, int, int);
NIMBUS_INSTANTIATE(float)
NIMBUS_INSTANTIATE(bfloat16)
#undef NIMBUS_INSTANTIATE

}  // namespace nimbus::cuda
