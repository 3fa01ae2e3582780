// simd.h: a 16-float vector for the hand-vectorised CPU kernels (conv2d_direct.cpp, conv2d_winograd.cpp).
//
// GCC vector extensions rather than intrinsics (__builtin_shuffle is GCC's):
// with -march=native on an AVX-512 machine a Vec16 is one zmm register and
// `a += b * c` is one FMA; on an AVX2 machine the same source becomes two ymm
// halves. Loads and stores accept any float address (the *U type has 4-byte
// alignment and may alias float).
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

// The lanes of the 32 floats a ++ b that 16 constant indices pick (0-15 from a, 16-31 from b).
template <int... I>
NIMBUS_SIMD_INLINE Vec16 pick(Vec16 a, Vec16 b) {
  static_assert(sizeof...(I) == kLanes);
#if defined(__clang__)
  return __builtin_shufflevector(a, b, I...);
#else
  typedef int Vec16i __attribute__((vector_size(64)));
  return __builtin_shuffle(a, b, Vec16i{I...});
#endif
}

// In place: v[c][r] <- v[r][c] for a 16 x 16 block held as 16 row vectors.
// Four rounds of the perfect shuffle: v'[2i] interleaves the low halves of
// v[i] and v[i+8], v'[2i+1] their high halves; each round rotates the bits of
// an element's (row, column) index by one, so four rounds swap row and column.
// 64 two-vector shuffles (one vpermt2ps each on AVX-512) instead of 256
// scalar loads and stores.
NIMBUS_SIMD_INLINE void transpose16(Vec16 v[kLanes]) {
  for (int round = 0; round < 4; ++round) {
    Vec16 t[kLanes];
#pragma GCC unroll 8
    for (int i = 0; i < kLanes / 2; ++i) {
      t[2 * i] = pick<0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23>(v[i], v[i + 8]);
      t[2 * i + 1] = pick<8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31>(v[i], v[i + 8]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < kLanes; ++i) v[i] = t[i];
  }
}

}  // namespace nimbus::cpu::simd
