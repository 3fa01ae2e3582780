// simd.h: a 16-float vector for the hand-vectorised CPU kernels (conv2d_direct.cpp).
//
// GCC/Clang vector extensions rather than intrinsics: with -march=native on an
// AVX-512 machine a Vec16 is one zmm register and `a += b * c` is one FMA; on
// an AVX2 machine the same source becomes two ymm halves. Loads and stores
// accept any float address (the *U type has 4-byte alignment and may alias float).
#pragma once

namespace nimbus::cpu::simd {

constexpr int kLanes = 16;
typedef float Vec16 __attribute__((vector_size(64)));
typedef float Vec16U __attribute__((vector_size(64), aligned(4), may_alias));

#define NIMBUS_SIMD_INLINE inline __attribute__((always_inline))

NIMBUS_SIMD_INLINE Vec16 load(const float* p) { return *reinterpret_cast<const Vec16U*>(p); }
NIMBUS_SIMD_INLINE void store(float* p, Vec16 v) { *reinterpret_cast<Vec16U*>(p) = v; }
// x - 0 is x for every float (x + 0 is not: -0 + 0 = +0), so this folds to a broadcast.
NIMBUS_SIMD_INLINE Vec16 splat(float x) { return x - Vec16{}; }
// The first n lanes only (a row's last, partial vector).
NIMBUS_SIMD_INLINE void store_first(float* p, Vec16 v, int n) {
  for (int i = 0; i < n; ++i) p[i] = v[i];
}

}  // namespace nimbus::cpu::simd
