/* optim.cu: fused Adam, Nadam and SGD updates, one thread per parameter element (grid-stride).
 * Each element is read and written by one thread: independent of thread and block order, and the
 * same float operations as the CPU loops in engine/optim/{adam,nadam,sgd}.cpp (sqrtf for std::sqrt).
 */
#include "kernels/cuda/optim.h"

#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

__global__ void adam_kernel(float* p, float* m, float* v, const float* g, int64_t n, AdamScalars s) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    const float gi = s.wd != 0.0f ? g[i] + s.wd * p[i] : g[i];
    m[i] = m[i] * s.b1 + s.one_m_b1 * gi;
    v[i] = v[i] * s.b2 + s.one_m_b2 * (gi * gi);
    const float denom = sqrtf(v[i]) / s.bc2_sqrt + s.eps;
    p[i] += -s.step_size * (m[i] / denom);
  }
}

__global__ void nadam_kernel(float* p, float* m, float* v, const float* g, int64_t n, NadamScalars s) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    m[i] = s.b1 * m[i] + s.one_m_b1 * g[i];
    v[i] = s.b2 * v[i] + s.one_m_b2 * (g[i] * g[i]);
    const float m_bar = s.c_g * (g[i] * s.g_scale) + s.c_m * (m[i] * s.m_scale);
    p[i] -= s.lr * m_bar / (sqrtf(v[i] * s.v_scale) + s.eps);
  }
}

__global__ void sgd_kernel(float* p, float* buf, const float* g, int64_t n, SgdScalars s) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    float d = s.wd != 0.0f ? g[i] + s.wd * p[i] : g[i];
    if (s.use_mom) {
      buf[i] = s.first ? d : buf[i] * s.mom + s.keep * d;
      d = s.nesterov ? d + s.mom * buf[i] : buf[i];
    }
    p[i] += -s.lr * d;
  }
}

void adam_update(float* p, float* m, float* v, const float* g, int64_t n, const AdamScalars& s, int block) {
  if (n <= 0) return;
  launch(adam_kernel, grid_for(n, block), block, 0, launch_stream(), p, m, v, g, n, s);
  check_launch("cuda::adam_update");
}

void nadam_update(float* p, float* m, float* v, const float* g, int64_t n, const NadamScalars& s, int block) {
  if (n <= 0) return;
  launch(nadam_kernel, grid_for(n, block), block, 0, launch_stream(), p, m, v, g, n, s);
  check_launch("cuda::nadam_update");
}

void sgd_update(float* p, float* buf, const float* g, int64_t n, const SgdScalars& s, int block) {
  if (n <= 0) return;
  launch(sgd_kernel, grid_for(n, block), block, 0, launch_stream(), p, buf, g, n, s);
  check_launch("cuda::sgd_update");
}

}  // namespace nimbus::cuda
