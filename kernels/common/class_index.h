/* class_index.h: the cross-entropy rule for a target stored as a float, shared by the CPU and CUDA
 * kernels (nvcc and the emulator alike).
 *
 *   is_class_index(t, K)   t is an integer in [0, K); NaN and +-inf are not
 *
 * A row whose target fails it gets a NaN loss term and a NaN gradient row on every backend: the
 * check costs the device nothing and never makes the host wait (the engine validates host-side
 * targets before the call with a message naming the row; a device-side one shows as a NaN loss).
 */
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define NIMBUS_CLASS_INDEX_FN __host__ __device__ __forceinline__
#else
#define NIMBUS_CLASS_INDEX_FN inline
#endif

namespace nimbus {

template <typename T>
NIMBUS_CLASS_INDEX_FN bool is_class_index(T t, int64_t K) {
  // In range first (NaN fails every comparison), so the conversion to an integer is defined.
  return t >= T(0) && t < T(K) && T(int64_t(t)) == t;
}

}  // namespace nimbus

#undef NIMBUS_CLASS_INDEX_FN
