// learn_detector.cpp: the numbers and images of docs/learn/07-cloud-detector.md. DSen2-CR's rule-based
// cloud and shadow detector, step by step, on one real SEN12MS-CR patch (the GLF-CR sample in
// tests/fixtures/real): the five band tests, their minimum, the closing, the box mean and the
// threshold; then the shadow index, its window thresholds, the candidates and the median. The steps
// are recomputed here in the open and checked against data::cloud_score / shadow_mask, bit for bit.
// Images go to $LEARN_IMAGES (docs/learn/build.py keeps them in docs/learn/images/).
// docs/learn/build.py pastes this output into the page; ctest checks the page still matches.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "apps/common/image.h"
#include "data/cloud_detector.h"
#include "data/geotiff.h"
#include "data/sentinel2.h"

using namespace nimbus;
using plot::Image;
using plot::Rgb;

namespace {

const std::string kPatch = "ROIs1970_fall_139_p839.tif";
const std::string kData = std::string(NIMBUS_LEARN_REAL) + "/sen12ms_cr/xufangchn+GLF-CR/data/";

// A value in [lo, hi] as grey, clipped.
Image grey_of(const std::vector<double>& v, int h, int w, double lo, double hi) {
  Image im(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const double t = std::clamp((v[size_t(y) * size_t(w) + size_t(x)] - lo) / (hi - lo), 0.0, 1.0);
      const uint8_t g = uint8_t(std::lround(t * 255));
      im.set(x, y, {g, g, g});
    }
  return im;
}

// Images side by side, 6 white pixels apart.
Image strip(const std::vector<Image>& parts) {
  int w = -6, h = 0;
  for (const Image& p : parts) w += p.width() + 6, h = std::max(h, p.height());
  Image out(w, h);
  int x0 = 0;
  for (const Image& p : parts) {
    for (int y = 0; y < p.height(); ++y)
      for (int x = 0; x < p.width(); ++x) out.set(x0 + x, y, p.get(x, y));
    x0 += p.width() + 6;
  }
  return out;
}

void save(const Image& im, const std::string& name) {
  const char* dir = std::getenv("LEARN_IMAGES");
  if (dir) plot::write_png(std::string(dir) + "/" + name, im);
}

double share(const std::vector<uint8_t>& m) {
  return double(std::count(m.begin(), m.end(), 1)) / double(m.size());
}

}  // namespace

int main() {
  const data::Raster s2 = data::read_geotiff(kData + "s2_cloudy/" + kPatch);
  const data::Raster clear = data::read_geotiff(kData + "s2_cloudfree/" + kPatch);
  const int H = s2.height, W = s2.width;
  const size_t n = size_t(H) * size_t(W);
  std::printf("patch %s: %d bands, %d x %d pixels, DN (reflectance x %.0f)\n", kPatch.c_str(), s2.bands, H, W,
              double(data::kS2DnPerReflectance));

  // ---- the five band tests, each a score in which 1 means "looks like cloud", then their minimum
  const float* dn = s2.data.data();
  auto band = [&](int b, size_t p) { return dn[size_t(b) * n + p] / data::kS2DnPerReflectance; };
  auto r = [](float x, double lo, double hi) { return (x - float(lo)) / float(hi - lo); };
  const char* names[5] = {"B2 blue, r(0.1, 0.5)", "B1 aerosol, r(0.1, 0.3)", "B1 + B10 cirrus, r(0.15, 0.2)",
                          "B4 + B3 + B2, r(0.2, 0.8)", "NDSI(B3, B11), r(0.8, 0.6)"};
  std::vector<std::vector<double>> tests(5, std::vector<double>(n));
  std::vector<float> raw(n);
  std::vector<size_t> decides(6, 0);  // which test set the minimum (5: none, the score stayed 1)
  for (size_t p = 0; p < n; ++p) {
    const float b1 = band(0, p), b2 = band(1, p), b3 = band(2, p), b4 = band(3, p), b10 = band(10, p), b11 = band(11, p);
    float sum = b3 + b11;
    if (sum == 0.f) sum = 0.001f;
    const float t[5] = {r(b2, 0.1, 0.5), r(b1, 0.1, 0.3), r(b1 + b10, 0.15, 0.20), r(b4 + b3 + b2, 0.2, 0.8),
                        r((b3 - b11) / sum, 0.8, 0.6)};
    float v = 1.f;
    int who = 5;
    for (int k = 0; k < 5; ++k) {
      tests[size_t(k)][p] = t[k];
      if (t[k] < v) v = t[k], who = k;
    }
    raw[p] = v;
    ++decides[size_t(who)];
  }
  std::printf("cloud score, step by step (share of pixels):\n");
  for (int k = 0; k < 5; ++k) {
    size_t pass = 0;
    for (double v : tests[size_t(k)]) pass += v >= 0.2;
    std::printf("  test %d %-30s >= 0.2 on %5.1f%%, the lowest of the five on %5.1f%%\n", k + 1, names[k],
                100.0 * double(pass) / double(n), 100.0 * double(decides[size_t(k)]) / double(n));
  }

  // ---- grey closing (5x5 max, then 5x5 min, reflected borders) and the 7x7 box mean (zero fill)
  auto reflect = [](int i, int m) {
    const int period = 2 * m;
    i %= period;
    if (i < 0) i += period;
    return i < m ? i : period - 1 - i;
  };
  auto filter5 = [&](const std::vector<float>& in, bool take_max) {
    std::vector<float> out(n);
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        float v = in[size_t(reflect(y - 2, H)) * size_t(W) + size_t(reflect(x - 2, W))];
        for (int dy = -2; dy <= 2; ++dy)
          for (int dx = -2; dx <= 2; ++dx) {
            const float u = in[size_t(reflect(y + dy, H)) * size_t(W) + size_t(reflect(x + dx, W))];
            v = take_max ? std::max(v, u) : std::min(v, u);
          }
        out[size_t(y) * size_t(W) + size_t(x)] = v;
      }
    return out;
  };
  const std::vector<float> closed = filter5(filter5(raw, true), false);
  std::vector<double> score(n);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      // Rows first, then columns, in double: the order data::cloud_score sums in.
      double s = 0;
      for (int yy = std::max(0, y - 3); yy <= std::min(H - 1, y + 3); ++yy) {
        double row = 0;
        for (int xx = std::max(0, x - 3); xx <= std::min(W - 1, x + 3); ++xx) row += double(closed[size_t(yy) * size_t(W) + size_t(xx)]);
        s += row;
      }
      score[size_t(y) * size_t(W) + size_t(x)] = std::clamp(s * (1.0 / 49.0), 1e-5, 1.0);
    }
  std::vector<uint8_t> cloud(n);
  std::vector<double> raw_d(raw.begin(), raw.end()), closed_d(closed.begin(), closed.end());
  size_t raw_cloud = 0, closed_cloud = 0;
  for (size_t p = 0; p < n; ++p) {
    cloud[p] = score[p] >= 0.2;
    raw_cloud += raw[p] >= 0.2f;
    closed_cloud += closed[p] >= 0.2f;
  }
  std::printf("  minimum of the five >= 0.2 on %5.1f%%; after the closing %5.1f%%; after the 7x7 mean (the score) %5.1f%%\n",
              100.0 * double(raw_cloud) / double(n), 100.0 * double(closed_cloud) / double(n), 100.0 * share(cloud));
  const data::CloudShadowMasks lib = data::detect_clouds(s2);
  std::printf("  these steps give data::cloud_score bit for bit: %s\n", score == lib.cloud_score ? "yes" : "NO");

  // ---- shadow: dark in NIR + SWIR (CSI) and in blue, relative to this window
  std::vector<float> csi(n), blue(n);
  for (size_t p = 0; p < n; ++p) csi[p] = (band(7, p) + band(11, p)) / 2.f, blue[p] = band(1, p);
  const float csi_min = *std::min_element(csi.begin(), csi.end()), blue_min = *std::min_element(blue.begin(), blue.end());
  double csi_mean = 0, blue_mean = 0;
  for (size_t p = 0; p < n; ++p) csi_mean += csi[p] / double(n), blue_mean += blue[p] / double(n);
  std::printf("shadow: CSI = (B8 + B11) / 2 from %.4f (min), mean %.4f; blue B2 from %.4f, mean %.4f\n", double(csi_min),
              csi_mean, double(blue_min), blue_mean);
  std::printf("  T3 = min + 3/4 (mean - min) = %.4f, T4 = min + 5/6 (mean - min) = %.4f (data::shadow_mask: %.4f, %.4f)\n",
              double(csi_min) + 0.75 * (csi_mean - double(csi_min)), double(blue_min) + 5.0 / 6.0 * (blue_mean - double(blue_min)),
              double(lib.shadow_csi_threshold), double(lib.shadow_blue_threshold));
  std::vector<uint8_t> candidate(n), shadow(n);
  for (size_t p = 0; p < n; ++p) candidate[p] = csi[p] < lib.shadow_csi_threshold && blue[p] < lib.shadow_blue_threshold;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      int k = 0;  // the 5x5 median of {0, 1} with zeros outside: 1 when 13 or more of the 25 are 1
      for (int yy = y - 2; yy <= y + 2; ++yy)
        for (int xx = x - 2; xx <= x + 2; ++xx)
          k += yy >= 0 && yy < H && xx >= 0 && xx < W && candidate[size_t(yy) * size_t(W) + size_t(xx)];
      shadow[size_t(y) * size_t(W) + size_t(x)] = k >= 13;
    }
  std::printf("  candidates (CSI < T3 and B2 < T4) %5.1f%%, after the 5x5 median %5.1f%%; data::shadow_mask bit for bit: %s\n",
              100.0 * share(candidate), 100.0 * share(shadow), shadow == lib.shadow ? "yes" : "NO");
  std::printf("final map: cloud %.1f%%, shadow (not cloud) %.1f%%, clear %.1f%%; the CARL mask is cloud or shadow\n",
              100.0 * lib.cloud_fraction(), 100.0 * lib.shadow_fraction(),
              100.0 * (1.0 - lib.cloud_fraction() - lib.shadow_fraction()));

  // ---- images
  const Image rgb = plot::s2_rgb(s2.data.data(), s2.bands, H, W), target = plot::s2_rgb(clear.data.data(), clear.bands, H, W);
  std::vector<Image> row1 = {rgb};
  for (const auto& t : tests) row1.push_back(grey_of(t, H, W, 0, 1));
  save(strip(row1), "detector_tests.png");
  std::vector<double> mask_d(cloud.begin(), cloud.end());
  save(strip({grey_of(raw_d, H, W, 0, 1), grey_of(closed_d, H, W, 0, 1), grey_of(score, H, W, 0, 1),
              grey_of(mask_d, H, W, 0, 1)}),
       "detector_score.png");
  std::vector<double> csi_d(csi.begin(), csi.end()), cand_d(candidate.begin(), candidate.end());
  Image map(W, H);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const size_t p = size_t(y) * size_t(W) + size_t(x);
      const Rgb c = rgb.get(x, y);
      map.set(x, y, lib.cloud[p] ? Rgb{255, 255, 255}
                    : lib.shadow[p] ? Rgb{230, 120, 0}
                                    : Rgb{uint8_t(c.r / 2), uint8_t(c.g / 2), uint8_t(c.b / 2)});
    }
  save(strip({grey_of(csi_d, H, W, double(csi_min), 2 * csi_mean), grey_of(cand_d, H, W, 0, 1),
              grey_of(std::vector<double>(shadow.begin(), shadow.end()), H, W, 0, 1), map, target}),
       "detector_shadow.png");
  return 0;
}
