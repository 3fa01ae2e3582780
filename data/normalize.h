// normalize.h: DSen2-CR's input scaling (reference §4) and its inverse.
//
//   S2 (13 bands, DN):  clip to [0, 10000], divide by 2000      -> [0, 5]
//   S1 (VV, VH in dB):  clip VV to [-25, 0], VH to [-32.5, 0],
//                       x' = 2 (x - min) / (0 - min)            -> [0, 2]
//   NaN: replaced by the mean of the whole window over all bands, before scaling; an S1 window
//        without any value gets each band's clip floor instead (fill_s1_nan).
// Clipping loses what lay outside the range, so the inverse is exact only inside it.
// The classifier's own input scaling is elsewhere (not this file).
#pragma once
#include <cstddef>

#include "data/sentinel2.h"

namespace nimbus::data {

constexpr float kS2ClipMax = kS2DnPerReflectance;  // clip at reflectance 1
constexpr float kS2Scale = 2000.f;
constexpr float kS1VVMin = -25.f;
constexpr float kS1VHMin = -32.5f;
constexpr float kS1Max = 2.f;  // S1 maps onto [0, kS1Max]

// Replaces every NaN in x[0, n) with the mean of the non-NaN values (computed in
// double). Returns how many were replaced. An all-NaN window becomes all 0.
size_t fill_nan_with_mean(float* x, size_t n);

void normalize_s2(float* x, size_t n);    // any number of bands: n = bands * h * w
void denormalize_s2(float* x, size_t n);  // back to DN: x * 2000 (not clipped)

// S1 (VV, VH; hw pixels each): NaN filled as fill_nan_with_mean does (DSen2-CR's patch mean, both bands
// together), except that a window with no value at all gets each band's clip floor (kS1VVMin,
// kS1VHMin): normalised, 0, no backscatter, as the zero padding past an image's edge, where the mean's
// fallback 0 dB is the brightest SAR the model is shown. Returns how many were replaced.
size_t fill_s1_nan(float* x, size_t hw);
// x holds (2, hw): VV plane then VH plane.
void normalize_s1(float* x, size_t hw);
void denormalize_s1(float* x, size_t hw);  // back to dB

}  // namespace nimbus::data
