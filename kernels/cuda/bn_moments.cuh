/* bn_moments.cuh: batch-norm statistics from a convolution's epilogue, so that a conv -> batch norm
 * pair in training needs no pass over the convolution's output for its statistics
 * (conv2d_forward_bn_stats in engine/kernel_list.def).
 *
 * In both tensor-core forwards (conv2d_tc.cu on mma.sync, conv2d_wgmma.cu) an accumulator row is an
 * output channel k and its columns are output positions (n, p, q); a quad of lanes (lane % 4 = 0..3)
 * holds one row's values over a column chunk: a warp's WN columns (mma.sync) or the tile's 128
 * (wgmma). Each quad reduces its row segment to (count, mean, m2) with the values as stored (after
 * bias, rounded to the output's type), m2 the sum of squared deviations from the chunk's own mean
 * (two passes over registers, so no cancellation), and lane 0 of the quad writes them to
 *   part[(k * chunks + chunk) * 3 + {0, 1, 2}]
 * batchnorm.cu's split layout. batchnorm_stats_from_moments (batchnorm.h) combines a channel's chunks
 * in a fixed order: the statistics are deterministic, equal to batchnorm_train_stats' within float
 * rounding (a different summation tree).
 */
#pragma once
#include <cstdint>

#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

// The sum of v over the quad (lanes 4g .. 4g + 3), the same bits in all four lanes (xor 1, then 2).
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v;
}

// m2 after its correction, never below 0 (rounding), but NaN kept: fmaxf(NaN, 0) would be 0, and a
// diverged activation's statistics must stay NaN.
__device__ __forceinline__ float clamp_m2(float m2) { return m2 < 0.0f ? 0.0f : m2; }

// One row's chunk moments from this thread's V values (bit i of `valid`: v[i] is a real column) and
// its quad's; lane 0 of the quad writes (count, mean, m2) to dst unless dst is null (a row past the
// last channel). Every lane of the warp calls it: the shuffles need the whole warp.
template <int V>
__device__ __forceinline__ void quad_row_moments(const float (&v)[V], uint32_t valid, float* dst) {
  static_assert(V <= 32, "a valid bit per value");
  float n = 0.0f, s = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i)
    if (valid >> i & 1u) n += 1.0f, s += v[i];
  n = quad_sum(n);
  s = quad_sum(s);
  const float mean = n > 0.0f ? s / n : 0.0f;
  float m2 = 0.0f, e = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i)
    if (valid >> i & 1u) {
      const float d = v[i] - mean;
      e += d;
      m2 += d * d;
    }
  m2 = quad_sum(m2);
  e = quad_sum(e);
  // The corrected two-pass form: s / n of values far from 0 is off by its rounding (values near 1e4:
  // ~1e-3), which moves every deviation alike and adds n x that squared to m2 (1% of a spread of 1e-2).
  // e, the deviations' sum, is n times that error: taken out of the mean and of m2.
  if (n > 0.0f) m2 = clamp_m2(m2 - e * e / n);
  if (dst && (threadIdx.x & 3u) == 0) dst[0] = n, dst[1] = n > 0.0f ? mean + e / n : 0.0f, dst[2] = m2;
}

}  // namespace nimbus::cuda
