/* loss.cu: softmax, cross-entropy, L1, MSE and the fused CARL loss, forward and backward.
 *
 * Forward = a pointwise kernel writing each element's (or row's) loss term into scratch, then
 * cuda::mean (reduce.cu: two passes, fixed trees, no atomics), so the loss is bitwise the same in
 * any thread or block order. Softmax/cross-entropy rows: one thread per row (K is the number of
 * classes, small), max-subtracted as on the CPU. Backward kernels are pointwise and read
 * g = dL/dloss from device memory (no host round trip). A target that is not a class index gives
 * its row a NaN term and NaN gradients (kernels/common/class_index.h).
 * CPU twin: kernels/cpu/loss.h (which sums in double: equal within float tolerance).
 */
#include "kernels/cuda/loss.h"

#include "kernels/common/class_index.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/reduce.h"

namespace nimbus::cuda {

__device__ __forceinline__ float sign(float d) { return float((d > 0.0f) - (d < 0.0f)); }

// Softmax of one row into y; returns the row's logsumexp.
__device__ float softmax_row(float* y, const float* x, int64_t K) {
  float mx = x[0];
  for (int64_t k = 1; k < K; ++k) mx = fmaxf(mx, x[k]);
  float s = 0.0f;
  for (int64_t k = 0; k < K; ++k) s += (y[k] = expf(x[k] - mx));
  for (int64_t k = 0; k < K; ++k) y[k] /= s;
  return mx + logf(s);
}

__global__ void softmax_kernel(float* y, const float* x, int64_t N, int64_t K) {
  for (int64_t n = grid_first(); n < N; n += grid_step()) softmax_row(y + n * K, x + n * K, K);
}

__global__ void cross_entropy_terms_kernel(float* term, float* prob, const float* logits, const float* target,
                                           int64_t N, int64_t K) {
  for (int64_t n = grid_first(); n < N; n += grid_step()) {
    const float lse = softmax_row(prob + n * K, logits + n * K, K);
    term[n] = is_class_index(target[n], K) ? lse - logits[n * K + int64_t(target[n])] : NAN;
  }
}

// The backward kernels' factor g[0] / d (MSE: 2 g[0] / d), g = dL/dloss read on the device.
__device__ __forceinline__ float grad_scale(const float* g, float c, float d) { return c * g[0] / d; }

__global__ void cross_entropy_backward_kernel(float* dl, const float* prob, const float* target, const float* g,
                                              float N, int64_t K, int64_t n) {
  const float scale = grad_scale(g, 1.0f, N);
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const float t = target[i / K];
    dl[i] = is_class_index(t, K) ? scale * (prob[i] - float(i % K == int64_t(t))) : NAN;
  }
}

__global__ void l1_terms_kernel(float* term, const float* p, const float* t, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) term[i] = fabsf(p[i] - t[i]);
}

__global__ void l1_backward_kernel(float* dp, const float* p, const float* t, const float* g, int64_t n) {
  const float scale = grad_scale(g, 1.0f, float(n));
  for (int64_t i = grid_first(); i < n; i += grid_step()) dp[i] = scale * sign(p[i] - t[i]);
}

__global__ void mse_terms_kernel(float* term, const float* p, const float* t, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const float d = p[i] - t[i];
    term[i] = d * d;
  }
}

__global__ void mse_backward_kernel(float* dp, const float* p, const float* t, const float* g, int64_t n) {
  const float scale = grad_scale(g, 2.0f, float(n));
  for (int64_t i = grid_first(); i < n; i += grid_step()) dp[i] = scale * (p[i] - t[i]);
}

// Element i = (n, c, j): mask M[n*HW + j].
__global__ void carl_terms_kernel(float* term, const float* P, const float* Tg, const float* I, const float* M,
                                  float lambda, int64_t C, int64_t HW, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const float m = M[(i / (C * HW)) * HW + i % HW];
    term[i] = (m + lambda) * fabsf(P[i] - Tg[i]) + (1.0f - m) * fabsf(P[i] - I[i]);
  }
}

__global__ void carl_backward_kernel(float* dP, const float* P, const float* Tg, const float* I, const float* M,
                                     float lambda, const float* g, int64_t C, int64_t HW, int64_t n) {
  const float scale = grad_scale(g, 1.0f, float(n));
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const float m = M[(i / (C * HW)) * HW + i % HW];
    dP[i] = scale * ((m + lambda) * sign(P[i] - Tg[i]) + (1.0f - m) * sign(P[i] - I[i]));
  }
}

// ---------------------------------------------------------------------------------------------
// Launchers. scratch = [terms (n) | mean's partial sums]; the partials of the smallest block (32)
// bound those of every block size.
int64_t loss_scratch_floats(int64_t n) { return n + reduce_scratch_floats(n, 32); }

void softmax_forward(float* y, const float* x, int64_t N, int64_t K, int block) {
  if (N <= 0 || K <= 0) return;
  launch(softmax_kernel, grid_for(N, block), block, 0, launch_stream(), y, x, N, K);
  check_launch("cuda::softmax_forward");
}

void cross_entropy_forward(float* loss, float* prob, const float* logits, const float* target, int64_t N, int64_t K,
                           float* scratch, int block) {
  launch(cross_entropy_terms_kernel, grid_for(N, block), block, 0, launch_stream(), scratch, prob, logits, target, N, K);
  check_launch("cuda::cross_entropy_forward");
  mean(loss, scratch, N, scratch + N, block);
}

void cross_entropy_backward(float* dlogits, const float* prob, const float* target, const float* g, int64_t N,
                            int64_t K, int block) {
  const int64_t n = N * K;
  launch(cross_entropy_backward_kernel, grid_for(n, block), block, 0, launch_stream(), dlogits, prob, target, g,
         float(N), K, n);
  check_launch("cuda::cross_entropy_backward");
}

// L1 and MSE forward: the per-element terms into scratch, then their mean into loss[0].
static void pointwise_loss_forward(const char* what, void (*terms)(float*, const float*, const float*, int64_t),
                                   float* loss, const float* p, const float* t, int64_t n, float* scratch, int block) {
  launch_n(what, terms, n, block, scratch, p, t, n);
  mean(loss, scratch, n, scratch + n, block);
}

void l1_forward(float* loss, const float* p, const float* t, int64_t n, float* scratch, int block) {
  pointwise_loss_forward("cuda::l1_forward", l1_terms_kernel, loss, p, t, n, scratch, block);
}

void l1_backward(float* dp, const float* p, const float* t, const float* g, int64_t n, int block) {
  launch_n("cuda::l1_backward", l1_backward_kernel, n, block, dp, p, t, g, n);
}

void mse_forward(float* loss, const float* p, const float* t, int64_t n, float* scratch, int block) {
  pointwise_loss_forward("cuda::mse_forward", mse_terms_kernel, loss, p, t, n, scratch, block);
}

void mse_backward(float* dp, const float* p, const float* t, const float* g, int64_t n, int block) {
  launch_n("cuda::mse_backward", mse_backward_kernel, n, block, dp, p, t, g, n);
}

void carl_forward(float* loss, const float* P, const float* Tg, const float* I, const float* M, float lambda,
                  int64_t N, int64_t C, int64_t HW, float* scratch, int block) {
  const int64_t n = N * C * HW;
  launch(carl_terms_kernel, grid_for(n, block), block, 0, launch_stream(), scratch, P, Tg, I, M, lambda, C, HW, n);
  check_launch("cuda::carl_forward");
  mean(loss, scratch, n, scratch + n, block);
}

void carl_backward(float* dP, const float* P, const float* Tg, const float* I, const float* M, float lambda,
                   const float* g, int64_t N, int64_t C, int64_t HW, int block) {
  const int64_t n = N * C * HW;
  launch(carl_backward_kernel, grid_for(n, block), block, 0, launch_stream(), dP, P, Tg, I, M, lambda, g, C, HW, n);
  check_launch("cuda::carl_backward");
}

}  // namespace nimbus::cuda
