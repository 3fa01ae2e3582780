// cloud_detector.cpp: DSen2-CR's cloud / shadow detector (§3), see cloud_detector.h.
//
// Float semantics mirror the numpy original: DN / 10000 and every band test in
// float32, numpy.minimum (NaN wins), the 5x5 grey closing in float32, the 7x7
// box mean in float64, the shadow thresholds from a float32 pairwise-summed
// mean. All 2-D filters are separable (max, min, sums and counts are exactly
// separable), so each costs O(H*W*k) instead of O(H*W*k*k).
#include "data/cloud_detector.h"
#include "data/sentinel2.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "kernels/common/dihedral.h"
#include "kernels/common/error.h"
#include "kernels/common/parallel.h"

namespace nimbus::data {
namespace {

constexpr int kBands = kS2Bands;
constexpr int kB1 = 0, kB2 = 1, kB3 = 2, kB4 = 3, kB8 = 7, kB10 = 10, kB11 = 11;

void check_input(const float* dn, int bands, int height, int width, int code) {
  NIMBUS_CHECK(bands == kBands, "cloud detector: Sentinel-2 input has ", bands, " bands, expected ", kBands, " (B1..B12)");
  NIMBUS_CHECK(height > 0 && width > 0, "cloud detector: empty window ", height, "x", width);
  NIMBUS_CHECK(dn != nullptr, "cloud detector: null input");
  NIMBUS_CHECK(code >= 0 && code < kDihedralCodes, "cloud detector: dihedral code ", code, " (must be 0..",
               kDihedralCodes - 1, ")");
}

// The examined frame: the input (h x w) turned by `code`. source(p) is the input pixel that lands on
// the frame's pixel p (row-major), so frame-order loops read what they would read in a turned copy.
struct Frame {
  int code, in_h, in_w, h, w;
  Frame(int c, int height, int width)
      : code(c), in_h(height), in_w(width), h(c % 2 ? width : height), w(c % 2 ? height : width) {}
  size_t source(size_t p) const {
    if (code == 0) return p;
    int64_t y, x;
    dihedral_source(code, in_h, in_w, int64_t(p) / w, int64_t(p) % w, y, x);
    return size_t(y) * size_t(in_w) + size_t(x);
  }
};

// numpy.minimum: NaN in either argument gives NaN.
inline float np_min(float a, float b) { return (a < b || std::isnan(a)) ? a : b; }

// r(x; lo, hi) as numpy evaluates it on a float32 array: float32(lo) subtracted,
// then divided by float32(hi - lo) with hi - lo computed in double.
inline float rescale(float x, double lo, double hi) { return (x - float(lo)) / float(hi - lo); }

inline float norm_diff(float a, float b) {
  float sum = a + b;
  if (sum == 0.f) sum = 0.001f;
  return (a - b) / sum;
}

// scipy.ndimage mode 'reflect' (d c b a | a b c d | d c b a), for any offset.
inline int reflect(int i, int n) {
  const int64_t p = 2 * int64_t(n);  // 64 bits: n may be an image's width, up to kMaxTiffSide
  int64_t j = i % p;
  if (j < 0) j += p;
  return int(j < n ? j : p - 1 - j);
}

bool parallel(int h, int w) { return int64_t(h) * w > cpu::kParallelGrain; }

// 5x5 flat max (take_max) or min filter with reflect borders, separable.
void minmax_filter5(const std::vector<float>& in, std::vector<float>& out, int h, int w, bool take_max) {
  constexpr int r = 2;
  std::vector<float> tmp(in.size());
  auto pick = [take_max](float a, float b) { return take_max ? (a > b ? a : b) : (a < b ? a : b); };
#pragma omp parallel for if (parallel(h, w))
  for (int y = 0; y < h; ++y) {
    const float* row = in.data() + size_t(y) * w;
    for (int x = 0; x < w; ++x) {
      float v = row[reflect(x - r, w)];
      for (int d = -r + 1; d <= r; ++d) v = pick(v, row[reflect(x + d, w)]);
      tmp[size_t(y) * w + x] = v;
    }
  }
  out.resize(in.size());
#pragma omp parallel for if (parallel(h, w))
  for (int y = 0; y < h; ++y) {
    float* o = out.data() + size_t(y) * w;
    const float* first = tmp.data() + size_t(reflect(y - r, h)) * w;
    for (int x = 0; x < w; ++x) o[x] = first[x];
    for (int d = -r + 1; d <= r; ++d) {
      const float* src = tmp.data() + size_t(reflect(y + d, h)) * w;
      for (int x = 0; x < w; ++x) o[x] = pick(o[x], src[x]);
    }
  }
}

// Sum over a (2r+1)^2 window with zero fill outside the image, separable.
template <typename In, typename Acc>
std::vector<Acc> box_sum(const std::vector<In>& in, int h, int w, int r) {
  std::vector<Acc> tmp(in.size()), out(in.size());
#pragma omp parallel for if (parallel(h, w))
  for (int y = 0; y < h; ++y) {
    const In* row = in.data() + size_t(y) * w;
    for (int x = 0; x < w; ++x) {
      Acc s = 0;
      for (int xx = std::max(0, x - r); xx <= std::min(w - 1, x + r); ++xx) s += Acc(row[xx]);
      tmp[size_t(y) * w + x] = s;
    }
  }
#pragma omp parallel for if (parallel(h, w))
  for (int y = 0; y < h; ++y) {
    Acc* o = out.data() + size_t(y) * w;
    for (int yy = std::max(0, y - r); yy <= std::min(h - 1, y + r); ++yy) {
      const Acc* src = tmp.data() + size_t(yy) * w;
      for (int x = 0; x < w; ++x) o[x] += src[x];
    }
  }
  return out;
}

// numpy's float32 sum of one leaf of its pairwise tree (n <= 128 values): a plain loop below 8, else
// 8 accumulators.
float leaf_sum(const float* a, size_t n) {
  if (n < 8) {
    float s = 0.f;
    for (size_t i = 0; i < n; ++i) s += a[i];
    return s;
  }
  float r[8];
  for (int k = 0; k < 8; ++k) r[k] = a[k];
  size_t i = 8;
  for (; i < n - n % 8; i += 8)
    for (int k = 0; k < 8; ++k) r[k] += a[i + k];
  float s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
  for (; i < n; ++i) s += a[i];
  return s;
}

// numpy's float32 pairwise sums of two sequences of n values, and their minima (std::min_element's:
// the first value, then any smaller one), pulling the values leaf by leaf, in order. The tree depends
// on n alone (above 128 values, the first half rounded down to a multiple of 8, then the rest), so the
// values need not be held: one leaf of each is.
struct PulledSums {
  const ShadowIndexPull& pull;
  bool any = false;
  float min_a = 0.f, min_b = 0.f;
  std::pair<float, float> sum(size_t n) {
    if (n <= 128) {
      float a[128], b[128];
      pull(a, b, n);
      for (size_t i = 0; i < n; ++i) {
        if (!any || a[i] < min_a) min_a = a[i];
        if (!any || b[i] < min_b) min_b = b[i];
        any = true;
      }
      return {leaf_sum(a, n), leaf_sum(b, n)};
    }
    size_t n2 = n / 2;
    n2 -= n2 % 8;
    const std::pair<float, float> left = sum(n2);  // first: the pulls follow the sequence
    const std::pair<float, float> right = sum(n - n2);
    return {left.first + right.first, left.second + right.second};
  }
};

// T = min + frac * (mean - min) as numpy computes it: min and mean are float32
// scalars, their difference float32, the rest float64; comparing a float32
// array with it rounds it to float32.
float window_threshold(float mn, float sum, size_t n, double frac) {
  float mean = float(double(sum) / double(n));
  float diff = mean - mn;
  return float(double(mn) + frac * double(diff));
}

}  // namespace

std::vector<double> cloud_score(const float* dn, int bands, int height, int width,
                                const CloudDetectorOptions& options) {
  check_input(dn, bands, height, width, options.dihedral_code);
  const Frame f(options.dihedral_code, height, width);
  const size_t n = size_t(height) * width;
  auto band = [&](int c, size_t q) { return dn[size_t(c) * n + q] / kS2DnPerReflectance; };
  std::vector<float> s(n);
#pragma omp parallel for if (parallel(height, width))
  for (int64_t ip = 0; ip < int64_t(n); ++ip) {
    const size_t p = size_t(ip), q = f.source(p);
    float b1 = band(kB1, q), b2 = band(kB2, q), b3 = band(kB3, q), b4 = band(kB4, q);
    float b10 = band(kB10, q), b11 = band(kB11, q);
    float v = 1.f;
    v = np_min(v, rescale(b2, 0.1, 0.5));  // bright in blue
    v = np_min(v, rescale(b1, 0.1, 0.3));  // bright in aerosol
    v = np_min(v, rescale(b1 + b10, options.b1_b10_lo, options.b1_b10_hi));
    v = np_min(v, rescale(b4 + b3 + b2, 0.2, 0.8));           // bright in all visible bands
    v = np_min(v, rescale(norm_diff(b3, b11), 0.8, 0.6));     // but not snow (NDSI)
    s[p] = v;
  }
  // Grey closing: dilation then erosion, 5x5 flat, reflect borders.
  std::vector<float> dilated, closed;
  minmax_filter5(s, dilated, f.h, f.w, true);
  minmax_filter5(dilated, closed, f.h, f.w, false);
  // 7x7 box mean with zero fill (convolve2d 'same'), float64, then clip.
  std::vector<double> score = box_sum<float, double>(closed, f.h, f.w, 3);
  for (double& v : score) v = std::clamp(v * (1.0 / 49.0), 1e-5, 1.0);
  return score;
}

void shadow_indices(const float* dn, size_t n, size_t q, float& csi, float& blue) {
  const float nir = dn[kB8 * n + q] / kS2DnPerReflectance, swir = dn[kB11 * n + q] / kS2DnPerReflectance;
  csi = (nir + swir) / 2.f;
  blue = dn[kB2 * n + q] / kS2DnPerReflectance;
}

void shadow_thresholds(const std::vector<float>& csi, const std::vector<float>& blue, float& t3, float& t4) {
  NIMBUS_CHECK(csi.size() == blue.size(), "cloud detector: ", csi.size(), " shadow indices but ", blue.size(),
               " blue reflectances");
  size_t at = 0;
  shadow_thresholds_pulled(
      csi.size(),
      [&](float* c, float* b, size_t k) {
        std::copy_n(csi.data() + at, k, c);
        std::copy_n(blue.data() + at, k, b);
        at += k;
      },
      t3, t4);
}

void shadow_thresholds_pulled(size_t n, const ShadowIndexPull& pull, float& t3, float& t4) {
  NIMBUS_CHECK(n > 0, "cloud detector: no pixel of the window has data");
  PulledSums s{pull};
  const std::pair<float, float> sums = s.sum(n);
  t3 = window_threshold(s.min_a, sums.first, n, 3.0 / 4.0);
  t4 = window_threshold(s.min_b, sums.second, n, 5.0 / 6.0);
}

namespace {

// The frame's indices (frame order), and the shadow mask from them and the thresholds.
void frame_indices(const float* dn, const Frame& f, std::vector<float>& csi, std::vector<float>& blue) {
  const size_t n = size_t(f.in_h) * size_t(f.in_w);
  csi.resize(n), blue.resize(n);
  for (size_t p = 0; p < n; ++p) shadow_indices(dn, n, f.source(p), csi[p], blue[p]);
}

std::vector<uint8_t> shadow_from(const std::vector<float>& csi, const std::vector<float>& blue, float T3, float T4,
                                 const Frame& f, const uint8_t* valid) {
  const size_t n = csi.size();
  std::vector<uint8_t> candidate(n);
  for (size_t p = 0; p < n; ++p) candidate[p] = (!valid || valid[f.source(p)]) && csi[p] < T3 && blue[p] < T4;
  // 5x5 median of {-1, 0} with zero padding: -1 when at least 13 of the 25 are -1.
  std::vector<int> count = box_sum<uint8_t, int>(candidate, f.h, f.w, 2);
  std::vector<uint8_t> out(n);
  for (size_t p = 0; p < n; ++p) out[p] = count[p] >= 13;
  return out;
}

}  // namespace

std::vector<uint8_t> shadow_mask(const float* dn, int bands, int height, int width, float* t3, float* t4,
                                 int dihedral_code, const uint8_t* valid) {
  check_input(dn, bands, height, width, dihedral_code);
  const Frame f(dihedral_code, height, width);
  std::vector<float> csi, blue;  // in frame order: the thresholds' sums add in the turned copy's order
  frame_indices(dn, f, csi, blue);
  float T3, T4;
  if (!valid) {
    shadow_thresholds(csi, blue, T3, T4);
  } else {  // statistics of the pixels with data only (a swath's nodata edge is not dark ground)
    std::vector<float> csi_data, blue_data;
    for (size_t p = 0; p < csi.size(); ++p)
      if (valid[f.source(p)]) csi_data.push_back(csi[p]), blue_data.push_back(blue[p]);
    shadow_thresholds(csi_data, blue_data, T3, T4);
  }
  if (t3) *t3 = T3;
  if (t4) *t4 = T4;
  return shadow_from(csi, blue, T3, T4, f, valid);
}

std::vector<uint8_t> shadow_mask_thresholded(const float* dn, int bands, int height, int width, float t3, float t4,
                                             int dihedral_code, const uint8_t* valid) {
  check_input(dn, bands, height, width, dihedral_code);
  const Frame f(dihedral_code, height, width);
  std::vector<float> csi, blue;
  frame_indices(dn, f, csi, blue);
  return shadow_from(csi, blue, t3, t4, f, valid);
}

CloudShadowMasks detect_clouds(const float* dn, int bands, int height, int width,
                               const CloudDetectorOptions& options) {
  CloudShadowMasks m;
  const Frame f(options.dihedral_code, height, width);
  m.height = f.h;
  m.width = f.w;
  m.cloud_score = cloud_score(dn, bands, height, width, options);
  m.cloud.resize(m.cloud_score.size());
  for (size_t p = 0; p < m.cloud.size(); ++p) m.cloud[p] = m.cloud_score[p] >= options.cloud_threshold;
  m.shadow = shadow_mask(dn, bands, height, width, &m.shadow_csi_threshold, &m.shadow_blue_threshold,
                         options.dihedral_code, options.valid);
  return m;
}

CloudShadowMasks detect_clouds(const Raster& s2, const CloudDetectorOptions& options) {
  NIMBUS_CHECK(s2.data.size() == size_t(s2.bands) * s2.height * s2.width, "cloud detector: raster holds ",
               s2.data.size(), " values, expected ", s2.bands, "x", s2.height, "x", s2.width);
  return detect_clouds(s2.data.data(), s2.bands, s2.height, s2.width, options);
}

std::vector<int8_t> CloudShadowMasks::map() const {
  std::vector<int8_t> out(cloud.size());
  for (size_t p = 0; p < out.size(); ++p) out[p] = cloud[p] ? 1 : (shadow[p] ? -1 : 0);
  return out;
}

std::vector<float> CloudShadowMasks::binary() const {
  std::vector<float> out(cloud.size());
  for (size_t p = 0; p < out.size(); ++p) out[p] = (cloud[p] || shadow[p]) ? 1.f : 0.f;
  return out;
}

double CloudShadowMasks::cloud_fraction() const {
  if (cloud.empty()) return 0;
  return double(std::count(cloud.begin(), cloud.end(), 1)) / double(cloud.size());
}

double CloudShadowMasks::shadow_fraction() const {
  if (cloud.empty()) return 0;
  size_t k = 0;
  for (size_t p = 0; p < cloud.size(); ++p) k += !cloud[p] && shadow[p];
  return double(k) / double(cloud.size());
}

std::vector<float> cloud_shadow_mask(const float* dn, int bands, int height, int width,
                                     const CloudDetectorOptions& options) {
  return detect_clouds(dn, bands, height, width, options).binary();
}

double cloud_cover_fraction(const float* dn, int bands, int height, int width, const CloudDetectorOptions& options) {
  std::vector<double> score = cloud_score(dn, bands, height, width, options);
  size_t k = 0;
  for (double v : score) k += v >= options.cloud_threshold;
  return double(k) / double(score.size());
}

double cloud_cover_fraction(const Raster& s2, const CloudDetectorOptions& options) {
  NIMBUS_CHECK(s2.data.size() == size_t(s2.bands) * s2.height * s2.width, "cloud_cover_fraction: raster holds ",
               s2.data.size(), " values, expected ", s2.bands, "x", s2.height, "x", s2.width);
  return cloud_cover_fraction(s2.data.data(), s2.bands, s2.height, s2.width, options);
}

}  // namespace nimbus::data
