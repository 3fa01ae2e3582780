/* grad_clip.cu: gradient-norm clipping in three kinds of launch, none waited for by the host
 * (kernels/common/grad_clip.h).
 *
 * grad_sumsq: block (c, k) sums the squares of tensor k's elements c*256 + tid, stepping by
 * kGradChunks*256, in double, then the block's 256 sums by a shared-memory tree, and writes chunk c's
 * partial. grad_clip_coef: one block; thread i sums partials i, i + 256, ... in order, the tree sums
 * the 256, thread 0 writes the norm and the coefficient. Every sum has a fixed order, so the norm does
 * not depend on how blocks are scheduled. grad_scale: grid-stride over each tensor, as the optimiser
 * updates (optim.cu). Double precision: a ResNet-50's 2.4e7 squares summed in float would lose
 * digits, and the sums are a negligible part of a step.
 */
#include "kernels/cuda/grad_clip.h"

#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

namespace {

constexpr int kThreads = 256;

// The block's 256 values summed by a tree (fixed order); the total lands in thread 0. Every thread
// of the 256-thread block calls it.
__device__ double block_sum(double v, double* buf) {
  buf[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) buf[threadIdx.x] += buf[threadIdx.x + half];
    __syncthreads();
  }
  return buf[0];
}

__global__ void sumsq_kernel(GradBatch b, double* partial) {
  __shared__ double buf[kThreads];
  const GradTensor t = b.t[blockIdx.y];
  double s = 0;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < t.n; i += int64_t(kGradChunks) * kThreads)
    s += double(t.g[i]) * double(t.g[i]);
  s = block_sum(s, buf);
  if (threadIdx.x == 0) partial[t.slot * kGradChunks + blockIdx.x] = s;
}

__global__ void clip_coef_kernel(float* norm, float* coef, const double* partial, int64_t count, float max_norm) {
  __shared__ double buf[kThreads];
  double s = 0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) s += partial[i];
  s = block_sum(s, buf);
  if (threadIdx.x == 0) clip_coefficient(s, max_norm, norm, coef);
}

__global__ void scale_kernel(GradBatch b, const float* coef) {
  const float c = *coef;
  for (int k = 0; k < b.count; ++k) {
    const GradTensor t = b.t[k];
    for (int64_t i = grid_first(); i < t.n; i += grid_step()) t.g[i] *= c;
  }
}

}  // namespace

void grad_sumsq(const GradBatch& b, double* partial) {
  if (b.count <= 0) return;
  launch(sumsq_kernel, dim3(unsigned(kGradChunks), unsigned(b.count)), kThreads, 0, launch_stream(), b, partial);
  check_launch("cuda::grad_sumsq");
}

void grad_clip_coef(float* norm, float* coef, const double* partial, int64_t tensors, float max_norm) {
  launch(clip_coef_kernel, 1, kThreads, 0, launch_stream(), norm, coef, partial, tensors * kGradChunks, max_norm);
  check_launch("cuda::grad_clip_coef");
}

void grad_scale(const GradBatch& b, const float* coef) {
  int64_t n = 0;
  for (int k = 0; k < b.count; ++k) n = b.t[k].n > n ? b.t[k].n : n;
  if (b.count <= 0 || n <= 0) return;
  launch(scale_kernel, grid_for(n, kThreads), kThreads, 0, launch_stream(), b, coef);
  check_launch("cuda::grad_scale");
}

}  // namespace nimbus::cuda
