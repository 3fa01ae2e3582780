// normalize.cpp: DSen2-CR's S1/S2 input scaling (reference §4); see normalize.h.
#include "data/normalize.h"

#include <algorithm>
#include <cmath>

namespace nimbus::data {

size_t fill_nan_with_mean(float* x, size_t n) {
  double sum = 0;
  size_t good = 0;
  for (size_t i = 0; i < n; ++i)
    if (!std::isnan(x[i])) sum += x[i], ++good;
  if (good == n) return 0;
  const float mean = good ? float(sum / double(good)) : 0.f;
  for (size_t i = 0; i < n; ++i)
    if (std::isnan(x[i])) x[i] = mean;
  return n - good;
}

size_t fill_s1_nan(float* x, size_t hw) {
  const size_t n = 2 * hw;
  if (std::any_of(x, x + n, [](float v) { return !std::isnan(v); })) return fill_nan_with_mean(x, n);
  std::fill(x, x + hw, kS1VVMin);
  std::fill(x + hw, x + n, kS1VHMin);
  return n;
}

void normalize_s2(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = std::clamp(x[i], 0.f, kS2ClipMax) / kS2Scale;
}

void denormalize_s2(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] *= kS2Scale;
}

namespace {
// One S1 band: clip to [lo, 0], then map linearly onto [0, kS1Max].
void scale_band(float* x, size_t n, float lo) {
  for (size_t i = 0; i < n; ++i) x[i] = kS1Max * (std::clamp(x[i], lo, 0.f) - lo) / (0.f - lo);
}
void unscale_band(float* x, size_t n, float lo) {
  for (size_t i = 0; i < n; ++i) x[i] = x[i] * (0.f - lo) / kS1Max + lo;
}
}  // namespace

void normalize_s1(float* x, size_t hw) {
  scale_band(x, hw, kS1VVMin);
  scale_band(x + hw, hw, kS1VHMin);
}

void denormalize_s1(float* x, size_t hw) {
  unscale_band(x, hw, kS1VVMin);
  unscale_band(x + hw, hw, kS1VHMin);
}

}  // namespace nimbus::data
