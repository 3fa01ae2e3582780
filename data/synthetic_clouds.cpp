// synthetic_clouds.cpp: thick clouds, cirrus and shadows (see synthetic_clouds.h).
#include "data/synthetic_clouds.h"

#include <algorithm>
#include <cmath>

#include "data/synthetic_spectra.h"

namespace nimbus::data {
namespace {

// Thick-cloud top-of-atmosphere DN per band (B1..B8, B8A, B9..B12): bright and
// flat in the visible and NIR, lower in B9 (water vapour) and SWIR, B10 raised.
constexpr float kCloudDN[kS2Bands] = {6200, 6300, 6200, 6300, 6300, 6300, 6300, 6300, 6200, 2600, 260, 4300, 3000};
// Cirrus veil at full opacity: adds mostly in B10, a little haze elsewhere.
constexpr float kCirrusDN[kS2Bands] = {900, 900, 850, 800, 750, 700, 700, 700, 700, 300, 500, 500, 350};
// Shadow darkening at full strength: less in the visible (diffuse sky light), most in NIR/SWIR.
constexpr float kShadowDark[kS2Bands] = {0.35f, 0.45f, 0.5f, 0.55f, 0.6f, 0.65f, 0.7f, 0.7f, 0.7f, 0.6f, 0.3f,
                                         0.72f, 0.72f};
constexpr float kEdge = 0.25f;  // soft-edge half width in noise standard deviations
// The mask's cloud edge: pixels with a tenth of their signal from the cloud (~600 DN in the
// visible, more than half a clear pixel's reflectance) are
// cloud: their ground is no longer usable as is. The same for shadows.
constexpr float kMaskOpacity = 0.1f;

}  // namespace

CloudLayer make_clouds(int h, int w, double cover, Rng& rng) {
  CloudLayer c;
  c.height = h;
  c.width = w;
  const size_t n = size_t(h) * w;
  cover = std::clamp(cover, 0.0, 1.0);
  // Opacity kMaskOpacity exactly at the threshold q, rising to 1 over 2 kEdge.
  Field f = fractal_noise(h, w, float(std::max(h, w)) / 3.f, 5, rng);
  const float q = threshold_for_fraction(f, cover);
  c.opacity.resize(n);
  for (size_t i = 0; i < n; ++i)
    c.opacity[i] = std::isinf(q) ? 0.f : std::clamp(kMaskOpacity + (f[i] - q) / (2 * kEdge), 0.f, 1.f);
  // Cirrus: present in about half the scenes, faint.
  Field ci = fractal_noise(h, w, float(std::max(h, w)) / 2.f, 3, rng);
  const float cirrus_amount = rng.uniform() < 0.5 ? rng.uniform(0.05f, 0.3f) : 0.f;
  c.cirrus.resize(n);
  for (size_t i = 0; i < n; ++i) c.cirrus[i] = cirrus_amount * std::clamp(0.5f + 0.5f * ci[i], 0.f, 1.f);
  // Shadow: the opacity shifted along the sun direction, 8..30 px.
  const float angle = rng.uniform(0.f, 6.2831853f), dist = rng.uniform(8.f, 30.f);
  c.shadow_dx = int(std::lround(dist * std::cos(angle)));
  c.shadow_dy = int(std::lround(dist * std::sin(angle)));
  c.shadow.assign(n, 0.f);
  c.mask.assign(n, 0);
  size_t clouds = 0, shadows = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      size_t i = size_t(y) * w + x;
      int sx = x - c.shadow_dx, sy = y - c.shadow_dy;
      float s = (sx >= 0 && sx < w && sy >= 0 && sy < h) ? c.opacity[size_t(sy) * w + sx] : 0.f;
      if (c.opacity[i] >= kMaskOpacity) {
        c.mask[i] = 1;
        ++clouds;
      } else if (s >= kMaskOpacity) {
        c.mask[i] = 2;
        ++shadows;
      }
      c.shadow[i] = s * (1.f - c.opacity[i]);
    }
  c.cloud_fraction = double(clouds) / double(n);
  c.shadow_fraction = double(shadows) / double(n);
  return c;
}

void apply_clouds(const CloudLayer& c, float* s2, Rng& rng) {
  const size_t n = size_t(c.height) * c.width;
  // Thick clouds are not uniform: their brightness follows a fine noise.
  Field tex = value_noise(c.height, c.width, 6.f, rng);
  for (int b = 0; b < kS2Bands; ++b) {
    float* band = s2 + size_t(b) * n;
    for (size_t i = 0; i < n; ++i) {
      float v = band[i] * (1.f - kShadowDark[b] * c.shadow[i]);
      v += c.cirrus[i] * kCirrusDN[b] * (1.f - 0.3f * v / 10000.f);
      float top = kCloudDN[b] * (1.f + 0.06f * tex[i]);
      band[i] = v + c.opacity[i] * (top - v);
    }
  }
}

}  // namespace nimbus::data
