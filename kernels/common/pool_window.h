/* pool_window.h: which cell of a max-pooling window holds its max, the one rule that the CPU
 * reference (kernels/cpu/pool.cpp) and the CUDA kernels (kernels/cuda/pool.cu, nvcc and the emulator
 * alike) both follow, so that their outputs and gradients pick the same cell.
 *
 *   window_argmax(plane, p, q, g)   index into the H x W plane of window (p, q)'s max: strictly
 *                                   greater keeps the first of equal maxima (row-major order), a NaN
 *                                   always wins (PyTorch's rule); -1 if the window is all padding,
 *                                   which the op rules out (pad <= kernel / 2)
 *
 * Geom is any struct with the fields H, W, kernel, stride, pad (PoolGeom, the CUDA kernels' PoolDims).
 */
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define NIMBUS_POOL_FN __host__ __device__ __forceinline__
#else
#define NIMBUS_POOL_FN inline
#endif

namespace nimbus {

template <typename T, typename Geom>
NIMBUS_POOL_FN int64_t window_argmax(const T* plane, int64_t p, int64_t q, const Geom& g) {
  int64_t best = -1;
  T best_v = T(0);
  // The window clipped to the plane, walked in row-major order.
  const int64_t h0 = p * g.stride - g.pad, w0 = q * g.stride - g.pad;  // top-left, maybe in the padding
  const int64_t h_end = h0 + g.kernel < g.H ? h0 + g.kernel : g.H, w_end = w0 + g.kernel < g.W ? w0 + g.kernel : g.W;
  for (int64_t ih = h0 < 0 ? 0 : h0; ih < h_end; ++ih)
    for (int64_t iw = w0 < 0 ? 0 : w0; iw < w_end; ++iw) {
      const T v = plane[ih * g.W + iw];
      if (best < 0 || v > best_v || v != v) {  // v != v: v is a NaN
        best = ih * g.W + iw;
        best_v = v;
      }
    }
  return best;
}

}  // namespace nimbus

#undef NIMBUS_POOL_FN
