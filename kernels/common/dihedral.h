/* dihedral.h: where a flipped and rotated square image takes each pixel from: the one rule that
 * data/augment.h's host augmentation (flip, then rot quarter turns counter-clockwise, numpy's flipud /
 * fliplr and rot90(k, axes=(1, 2))) and the flip_rotate kernels (kernels/cpu/elementwise.cpp,
 * kernels/cuda/elementwise.cu) share, so that augmenting on the device gives the host's batch bit for
 * bit (a permutation moves values, it computes nothing).
 *
 *   code = 4 flip + rot, flip 0 none, 1 rows, 2 columns; rot 0..3      (0 <= code < 12)
 *   dihedral_source(code, h, w, i, j, y, x): output pixel (i, j) of the transformed h x w image (w x h
 *   when rot is odd) is input (y, x). The kernels use square images (h = w = S). The hand-computed
 *   numpy cases of tests/data/test_augment.cpp hold this rule.
 *
 * The twelve codes name the eight symmetries of the square more than once (flipping rows then turning
 * twice is flipping columns); data/augment.h draws them this way, so they are kept as drawn.
 */
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define NIMBUS_DIHEDRAL_FN __host__ __device__ __forceinline__
#else
#define NIMBUS_DIHEDRAL_FN inline
#endif

namespace nimbus {

constexpr int kDihedralCodes = 12;

NIMBUS_DIHEDRAL_FN void dihedral_source(int code, int64_t h, int64_t w, int64_t i, int64_t j, int64_t& y,
                                        int64_t& x) {
  const int flip = code / 4, rot = code % 4;
  switch (rot) {  // (y, x) in the flipped image that lands on (i, j) after rot quarter turns
    case 0: y = i, x = j; break;
    case 1: y = j, x = w - 1 - i; break;
    case 2: y = h - 1 - i, x = w - 1 - j; break;
    default: y = h - 1 - j, x = i; break;
  }
  if (flip == 1) y = h - 1 - y;
  if (flip == 2) x = w - 1 - x;
}

}  // namespace nimbus
