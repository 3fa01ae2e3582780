/* elementwise.cu: pointwise kernels (one grid-stride loop each) and their launchers.
 *
 * Shapes: every buffer is n contiguous floats. One thread per element, grid-stride so a capped
 * grid covers any n. No shared memory, no barriers: each element is written by one thread, so
 * the result does not depend on thread or block order. CPU twins: kernels/cpu/elementwise.h.
 */
#include "kernels/cuda/elementwise.h"

#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

// ---------------------------------------------------------------------------------------------
// Kernels.
__global__ void fill_kernel(float* y, float value, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = value;
}

__global__ void add_inplace_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] += x[i];
}

__global__ void relu_forward_kernel(float* y, const float* x, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = x[i] < 0.0f ? 0.0f : x[i];  // NaN passes through (see kernels/cpu)
}

__global__ void relu_backward_kernel(float* dx, const float* dy, const float* y, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

__global__ void add_kernel(float* y, const float* a, const float* b, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = a[i] + b[i];
}

__global__ void scale_kernel(float* y, const float* x, float s, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = s * x[i];
}

__global__ void add_relu_kernel(float* y, const float* a, const float* b, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const float v = a[i] + b[i];
    y[i] = v < 0.0f ? 0.0f : v;  // relu_forward's rule: a NaN passes through
  }
}

__global__ void add_scaled_kernel(float* y, const float* a, const float* b, float s, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = a[i] + s * b[i];
}

// ---------------------------------------------------------------------------------------------
// Launchers.
void fill(float* y, float value, int64_t n, int block) {
  launch_n("cuda::fill", fill_kernel, n, block, y, value, n);
}

void add_inplace(float* y, const float* x, int64_t n, int block) {
  launch_n("cuda::add_inplace", add_inplace_kernel, n, block, y, x, n);
}

void relu_forward(float* y, const float* x, int64_t n, int block) {
  launch_n("cuda::relu_forward", relu_forward_kernel, n, block, y, x, n);
}

void relu_backward(float* dx, const float* dy, const float* y, int64_t n, int block) {
  launch_n("cuda::relu_backward", relu_backward_kernel, n, block, dx, dy, y, n);
}

void add(float* y, const float* a, const float* b, int64_t n, int block) {
  launch_n("cuda::add", add_kernel, n, block, y, a, b, n);
}

void scale(float* y, const float* x, float s, int64_t n, int block) {
  launch_n("cuda::scale", scale_kernel, n, block, y, x, s, n);
}

void add_relu(float* y, const float* a, const float* b, int64_t n, int block) {
  launch_n("cuda::add_relu", add_relu_kernel, n, block, y, a, b, n);
}

void add_scaled(float* y, const float* a, const float* b, float s, int64_t n, int block) {
  launch_n("cuda::add_scaled", add_scaled_kernel, n, block, y, a, b, s, n);
}

}  // namespace nimbus::cuda
