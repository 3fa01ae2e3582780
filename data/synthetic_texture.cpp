// synthetic_texture.cpp: noise fields, class textures and scene layouts (see synthetic_texture.h).
#include "data/synthetic_texture.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "kernels/common/error.h"

namespace nimbus::data {
namespace {

constexpr float kPi = std::numbers::pi_v<float>;

inline float smoothstep(float t) { return t * t * (3.f - 2.f * t); }

// A line across the scene at a random angle through a random point, displaced
// sideways by amplitude * sin(2 pi s / wavelength + phase) (meanders).
struct WavyLine {
  float cx, cy, ux, uy, amplitude, k, phase;
  // Distance from (x, y), to first order: the offset from the curve across the
  // line, over sqrt(1 + slope^2). O(1) per pixel; exact for straight lines.
  float distance(float x, float y) const {
    float s = (x - cx) * ux + (y - cy) * uy, t = -(x - cx) * uy + (y - cy) * ux;
    float a = k * s + phase;
    float off = amplitude * std::sin(a), slope = amplitude * k * std::cos(a);
    return std::fabs(t - off) / std::sqrt(1.f + slope * slope);
  }
};

WavyLine wavy_line(int h, int w, float amplitude, float wavelength, Rng& rng) {
  float angle = rng.uniform(0.f, kPi), cx = rng.uniform(0.2f, 0.8f) * w, cy = rng.uniform(0.2f, 0.8f) * h;
  return {cx, cy, std::cos(angle), std::sin(angle), amplitude, 2 * kPi / wavelength, rng.uniform(0.f, 2 * kPi)};
}

// Rotated grid cells of size cell: returns the cell id and the position in the cell (0..1).
struct GridCell {
  int64_t id;
  float u, v;
};
inline GridCell grid_cell(float x, float y, float cos_a, float sin_a, float cell_u, float cell_v) {
  float ru = (x * cos_a + y * sin_a) / cell_u + 1000.f, rv = (-x * sin_a + y * cos_a) / cell_v + 1000.f;
  float fu = std::floor(ru), fv = std::floor(rv);
  return {int64_t(fu) * 100003 + int64_t(fv), ru - fu, rv - fv};
}

// Deterministic hash of a cell id and a salt to [0, 1).
inline float hash01(int64_t id, uint64_t salt) {
  uint64_t z = uint64_t(id) * 0x9E3779B97F4A7C15ull + salt;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return float(z >> 40) / float(1ull << 24);
}

}  // namespace

float fast_normal(Rng& rng) {
  static const std::vector<float> table = [] {
    Rng r(0x6e6f726dull);
    std::vector<float> t(1 << 16);
    for (float& v : t) v = float(r.normal());
    return t;
  }();
  return table[rng.next_u64() >> 48];
}

void standardise(Field& f, const std::vector<uint8_t>& mask) {
  // 8 independent partial sums: the compiler vectorises them (a single running
  // sum is a dependency chain it may not reorder).
  constexpr int L = 8;
  double s[L] = {}, s2[L] = {};
  const size_t n_all = f.size();
  size_t n = 0;
  if (mask.empty()) {
    size_t i = 0;
    for (; i + L <= n_all; i += L)
      for (int k = 0; k < L; ++k) s[k] += f[i + k], s2[k] += double(f[i + k]) * f[i + k];
    for (; i < n_all; ++i) s[0] += f[i], s2[0] += double(f[i]) * f[i];
    n = n_all;
  } else {
    for (size_t i = 0; i < n_all; ++i)
      if (mask[i]) s[i % L] += f[i], s2[i % L] += double(f[i]) * f[i], ++n;
  }
  if (n == 0) return;
  double sum = 0, sum2 = 0;
  for (int k = 0; k < L; ++k) sum += s[k], sum2 += s2[k];
  const double mean = sum / double(n), sd = std::sqrt(std::max(sum2 / double(n) - mean * mean, 1e-12));
  const float m = float(mean), inv = float(1.0 / sd);
  for (float& v : f) v = (v - m) * inv;
}

Field value_noise(int h, int w, float scale, Rng& rng) {
  scale = std::max(scale, 1.f);
  int gh = int(h / scale) + 2, gw = int(w / scale) + 2;
  std::vector<float> g(size_t(gh) * gw);
  for (float& v : g) v = fast_normal(rng);
  // Column positions and weights are the same for every row: compute them once.
  std::vector<int> ix(static_cast<size_t>(w));
  std::vector<float> tx(static_cast<size_t>(w));
  for (int x = 0; x < w; ++x) {
    float fx = x / scale;
    ix[size_t(x)] = int(fx);
    tx[size_t(x)] = smoothstep(fx - float(ix[size_t(x)]));
  }
  Field f(size_t(h) * w);
  for (int y = 0; y < h; ++y) {
    float fy = y / scale;
    int iy = int(fy);
    float ty = smoothstep(fy - iy);
    const float* r0 = &g[size_t(iy) * gw];
    const float* r1 = r0 + gw;
    float* out = f.data() + size_t(y) * w;
    for (int x = 0; x < w; ++x) {
      const int i = ix[size_t(x)];
      const float t = tx[size_t(x)];
      float a = r0[i] + t * (r0[i + 1] - r0[i]), b = r1[i] + t * (r1[i + 1] - r1[i]);
      out[x] = a + ty * (b - a);
    }
  }
  standardise(f);
  return f;
}

Field fractal_noise(int h, int w, float scale, int octaves, Rng& rng) {
  Field f(size_t(h) * w, 0.f);
  float amp = 1.f;
  for (int o = 0; o < octaves; ++o, scale /= 2, amp /= 2) {
    Field n = value_noise(h, w, scale, rng);
    for (size_t i = 0; i < f.size(); ++i) f[i] += amp * n[i];
  }
  standardise(f);
  return f;
}

float threshold_for_fraction(const Field& f, double fraction, const std::vector<uint8_t>& mask) {
  if (fraction <= 0) return std::numeric_limits<float>::infinity();
  std::vector<float> v;
  v.reserve(f.size());
  for (size_t i = 0; i < f.size(); ++i)
    if (mask.empty() || mask[i]) v.push_back(f[i]);
  if (v.empty()) return std::numeric_limits<float>::infinity();
  size_t k = size_t(std::llround(fraction * double(v.size())));
  if (k >= v.size()) return *std::min_element(v.begin(), v.end());
  if (k == 0) return std::numeric_limits<float>::infinity();
  // The k-th largest: exactly k values are >= it (up to ties).
  std::nth_element(v.begin(), v.begin() + (k - 1), v.end(), std::greater<float>());
  return v[k - 1];
}

Field class_texture(int cls, int h, int w, Rng& rng) {
  Field f(size_t(h) * w);
  const float ca = std::cos(rng.uniform(0.f, kPi)), sa = std::sqrt(1.f - ca * ca);
  auto each = [&](auto&& fn) {
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) f[size_t(y) * w + x] = fn(float(x), float(y));
  };
  const uint64_t salt = rng.next_u64();
  Field fine = value_noise(h, w, 2.5f, rng);
  switch (cls) {
    case 0:    // AnnualCrop: large parcels, each bare or green
    case 6: {  // PermanentCrop: smaller parcels with planting rows
      bool perm = cls == 6;
      float cu = perm ? rng.uniform(10, 18) : rng.uniform(14, 30), cv = cu * rng.uniform(0.6f, 1.4f);
      each([&](float x, float y) {
        GridCell c = grid_cell(x, y, ca, sa, cu, cv);
        float v = 2.f * hash01(c.id, salt) - 1.f;
        if (perm) v += 0.3f * std::sin(2 * kPi * c.u * cu / 6.f);  // rows every 6 px
        return v + 0.05f * fine[size_t(y) * w + size_t(x)];
      });
      break;
    }
    case 1: {  // Forest: canopy blobs, gaps between crowns
      Field blobs = value_noise(h, w, 3.f, rng), stands = value_noise(h, w, 20.f, rng);
      for (size_t i = 0; i < f.size(); ++i) f[i] = blobs[i] + 0.5f * stands[i];
      break;
    }
    case 2: {  // HerbaceousVegetation: patchy at a medium scale
      Field a = value_noise(h, w, 9.f, rng);
      for (size_t i = 0; i < f.size(); ++i) f[i] = a[i] + 0.4f * fine[i];
      break;
    }
    case 3: {  // Highway: one or two roads (straight or gently curving) on a field background
      auto road = wavy_line(h, w, rng.uniform(0, 6), rng.uniform(80, 200), rng);
      auto road2 = wavy_line(h, w, 0, 100, rng);
      bool two = rng.uniform() < 0.35;
      Field bg = value_noise(h, w, 12.f, rng);
      each([&](float x, float y) {
        float d = road.distance(x, y);
        if (two) d = std::min(d, road2.distance(x, y));
        return 2.5f * std::exp(-d * d / 18.f) + 0.5f * bg[size_t(y) * w + size_t(x)];
      });
      break;
    }
    case 4:    // Industrial: big halls on a street grid
    case 7: {  // Residential: small houses in blocks with gardens
      bool ind = cls == 4;
      float cu = ind ? rng.uniform(14, 24) : rng.uniform(6, 9), cv = cu * rng.uniform(0.7f, 1.3f);
      each([&](float x, float y) {
        GridCell c = grid_cell(x, y, ca, sa, cu, cv);
        bool street = c.u < 0.18f || c.v < 0.18f;
        float roof = 0.6f + 0.8f * hash01(c.id, salt);
        return (street ? 0.4f : roof) + 0.2f * fine[size_t(y) * w + size_t(x)];
      });
      break;
    }
    case 8: {  // River: a meandering channel
      auto river = wavy_line(h, w, rng.uniform(4, 14), rng.uniform(40, 120), rng);
      Field bank = value_noise(h, w, 6.f, rng);
      each([&](float x, float y) {
        float d = river.distance(x, y);
        return -d / 8.f + 0.3f * bank[size_t(y) * w + size_t(x)];
      });
      break;
    }
    case 9: {  // SeaLake: open water with a shore line
      Field shore = fractal_noise(h, w, 40.f, 3, rng);
      float gx = rng.uniform(-1, 1), gy = rng.uniform(-1, 1);
      each([&](float x, float y) {
        return shore[size_t(y) * w + size_t(x)] + 1.5f * (gx * (x / w - 0.5f) + gy * (y / h - 0.5f));
      });
      break;
    }
    default: {  // 5 Pasture: smooth, large-scale
      Field a = value_noise(h, w, 24.f, rng);
      for (size_t i = 0; i < f.size(); ++i) f[i] = a[i] + 0.15f * fine[i];
      break;
    }
  }
  standardise(f);
  return f;
}

SceneLayout make_layout(int h, int w, int dominant, double dominant_share, Rng& rng) {
  NIMBUS_CHECK(dominant >= 0 && dominant < 10, "make_layout: class ", dominant, " is outside 0..9");
  SceneLayout s;
  s.height = h;
  s.width = w;
  s.label.assign(size_t(h) * w, uint8_t(dominant));
  if (dominant_share < 1.0) {
    // Voronoi cells with warped coordinates; cells handed to the dominant class
    // in random order until it has its share.
    const int cells = 8 + int(rng.below(8));
    std::vector<std::array<float, 2>> seeds(static_cast<size_t>(cells));
    for (auto& p : seeds) p = {rng.uniform(0.f, float(w)), rng.uniform(0.f, float(h))};
    Field wx = value_noise(h, w, 48.f, rng), wy = value_noise(h, w, 48.f, rng);
    std::vector<int> cell(size_t(h) * w);
    std::vector<size_t> area(static_cast<size_t>(cells), 0);
    const float warp = 0.08f * float(std::max(h, w));
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        size_t i = size_t(y) * w + x;
        float px = x + warp * wx[i], py = y + warp * wy[i];
        int best = 0;
        float bd = std::numeric_limits<float>::max();
        for (int c = 0; c < cells; ++c) {
          float d = (seeds[c][0] - px) * (seeds[c][0] - px) + (seeds[c][1] - py) * (seeds[c][1] - py);
          if (d < bd) bd = d, best = c;
        }
        cell[i] = best;
        ++area[size_t(best)];
      }
    std::vector<int> order(static_cast<size_t>(cells));
    for (int c = 0; c < cells; ++c) order[size_t(c)] = c;
    for (int c = cells - 1; c > 0; --c) std::swap(order[size_t(c)], order[rng.below(uint64_t(c) + 1)]);
    std::vector<int> cls(static_cast<size_t>(cells), -1);
    size_t have = 0, want = size_t(dominant_share * double(h) * w);
    int others[3];
    int n_others = 1 + int(rng.below(3));
    for (int k = 0; k < n_others; ++k) {
      others[k] = int(rng.below(9));
      if (others[k] >= dominant) ++others[k];
    }
    for (int c : order) {
      if (have < want) {
        cls[size_t(c)] = dominant;
        have += area[size_t(c)];
      } else {
        cls[size_t(c)] = others[rng.below(uint64_t(n_others))];
      }
    }
    for (size_t i = 0; i < s.label.size(); ++i) s.label[i] = uint8_t(cls[size_t(cell[i])]);
  }
  for (uint8_t l : s.label) s.fractions[l] += 1.0;
  for (double& f : s.fractions) f /= double(s.label.size());
  s.dominant = int(std::max_element(s.fractions.begin(), s.fractions.end()) - s.fractions.begin());
  return s;
}

}  // namespace nimbus::data
