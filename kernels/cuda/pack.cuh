/* pack.cuh: 16-byte packs of elements, for memory-bound kernels that move one pack per load or store
 * (4 floats or 8 bfloat16: one instruction instead of 4 or 8; the HBM wants few, wide accesses).
 *
 *   Pack<T>              alignas(16) { T v[K]; }, K = 16 / sizeof(T)
 *   aligned16(p)         host: p is null or 16-byte aligned (a kernel takes its pack path only then)
 *   aligned128(p)        host: p is null or 128-byte aligned (what a swizzled tensor map's base needs)
 * Packs go through load_vector / store_vector (tensor_core.h), which the emulator checks for alignment.
 */
#pragma once
#include <cstdint>

namespace nimbus::cuda {

template <typename T>
struct alignas(16) Pack {
  static constexpr int K = 16 / int(sizeof(T));
  T v[K];
};

inline bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }
inline bool aligned128(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 128 == 0; }

}  // namespace nimbus::cuda
