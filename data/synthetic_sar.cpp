// synthetic_sar.cpp: land-cover driven S1 backscatter with gamma speckle (see synthetic_sar.h).
#include "data/synthetic_sar.h"

#include <algorithm>
#include <cmath>

#include "data/synthetic_texture.h"
#include "kernels/common/error.h"

namespace nimbus::data {
namespace {

constexpr double kLooks = 4.4;

// Gamma(L, 1/L) speckle in dB, as a 64k-entry table of draws (Marsaglia-Tsang),
// so a pixel costs one table lookup.
float speckle_db(Rng& rng) {
  static const std::vector<float> table = [] {
    Rng r(0x53415231ull);
    std::vector<float> t(1 << 16);
    const double d = kLooks - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (float& v : t) {
      double g;
      for (;;) {
        double x = r.normal(), u = r.uniform();
        double vv = 1.0 + c * x;
        if (vv <= 0) continue;
        vv = vv * vv * vv;
        if (std::log(std::max(u, 1e-300)) < 0.5 * x * x + d - d * vv + d * std::log(vv)) {
          g = d * vv;
          break;
        }
      }
      v = float(10.0 * std::log10(g / kLooks));
    }
    return t;
  }();
  return table[rng.next_u64() >> 48];
}

}  // namespace

void sar_class_db(int cls, bool water, float* vv, float* vh) {
  //                                Annual Forest Herb  Highway Indus Past  Perm  Resid River SeaLake
  static const float kVV[10] = {-11.5f, -7.5f, -10.5f, -9.0f, -3.0f, -12.0f, -9.5f, -4.5f, -11.0f, -19.0f};
  static const float kGap[10] = {7.0f, 5.5f, 6.5f, 7.0f, 7.5f, 7.0f, 6.5f, 7.0f, 7.0f, 8.0f};
  NIMBUS_CHECK(cls >= 0 && cls < 10, "make_sar: class ", cls, " is outside 0..9");
  if (water) {
    *vv = -20.5f;
    *vh = -28.0f;
  } else {
    *vv = kVV[cls];
    *vh = kVV[cls] - kGap[cls];
  }
}

std::vector<float> make_sar(const std::vector<uint8_t>& label, const std::vector<uint8_t>& water,
                            const std::vector<float>& texture, int h, int w, Rng& rng) {
  const size_t n = size_t(h) * w;
  NIMBUS_CHECK(label.size() == n, "make_sar: label map has ", label.size(), " pixels, expected ", h, "x", w);
  std::vector<float> out(2 * n);
  for (size_t i = 0; i < n; ++i) {
    float vv, vh;
    sar_class_db(label[i], !water.empty() && water[i], &vv, &vh);
    float t = texture.empty() ? 0.f : 1.2f * texture[i];
    out[i] = std::min(0.f, vv + t + speckle_db(rng));
    out[n + i] = std::min(0.f, vh + t + speckle_db(rng));
  }
  return out;
}

}  // namespace nimbus::data
