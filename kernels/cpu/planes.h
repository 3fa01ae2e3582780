// planes.h: zero-padded image planes, the layout the direct and Winograd 3x3 kernels read
// (conv2d_direct.cpp, conv2d_winograd.cpp): one copy of the input, so that a tap is an offset.
#pragma once
#include <algorithm>
#include <cstdint>

namespace nimbus::cpu {

// Zero-padded planes of C channels per image, Hp rows of Wp floats each, so
// tap (r, s) of output (p, q) of channel c is base + c*cs + (p+r)*rs + q+s.
// Two layouts of the same C*Hp*Wp floats per image:
//   planar (NCHW)       cs = Hp*Wp, rs = Wp
//   row-interleaved     cs = Wp, rs = C*Wp: row h of every channel side by side.
// The q-vectorised kernels use the second: a tile sweeps C channels of the same
// 3 rows, which then lie in one contiguous block read with a short stride that
// the hardware prefetchers follow. Planar planes 66 KiB apart (128x128) defeat
// them and cost a TLB entry per channel: 256 -> 256 at 128x128 ran at 77% of
// peak (forward) and 75% (dx) planar, 87% and 86% interleaved.
// Wp also leaves room for a row's last vector to run past Q (lanes computed,
// then dropped). min_wp: 0 when only scalars are read (the k-vectorised kernel).
// min_hp: rows past the padding that a kernel reads as zeros (Winograd's last tile row).
struct Planes {
  int64_t Hp, Wp, L, cs, rs;  // L = Hp*Wp floats per channel; an image is C*L floats
  Planes(int64_t H, int64_t W, int64_t pad, int64_t min_wp, int64_t C = 1, bool interleaved = false,
         int64_t min_hp = 0)
      : Hp(std::max(H + 2 * pad, min_hp)), Wp(std::max(W + 2 * pad, min_wp)), L(Hp * Wp),
        cs(interleaved ? Wp : L), rs(interleaved ? C * Wp : Wp) {}
  // Unpadded planar planes: the tensor can be used as is.
  bool is_identity(int64_t H, int64_t W) const { return Hp == H && Wp == W && cs == L; }
};
// N images of C planes of H x W at src -> padded planes at dst (zero outside the image).
void pad_planes(float* dst, const float* src, int64_t N, int64_t C, int64_t H, int64_t W, int64_t pad,
                const Planes& pl);

}  // namespace nimbus::cpu
