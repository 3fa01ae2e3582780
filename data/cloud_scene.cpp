// cloud_scene.cpp: the cloud / shadow detector over a scene in stripes (cloud_scene.h).
#include "data/cloud_scene.h"

#include <algorithm>

#include "data/sentinel2.h"
#include "kernels/common/error.h"

namespace nimbus::data {
namespace {

// Reads rows [y0, y0 + rows) and checks what the reader gave.
void read_rows(const SceneReader& in, int y0, int rows, std::vector<float>& dn, std::vector<uint8_t>& valid) {
  dn.clear();
  valid.clear();
  in.read(y0, rows, dn, valid);
  const size_t n = size_t(rows) * size_t(in.width);
  NIMBUS_CHECK(dn.size() == size_t(kS2Bands) * n && (valid.empty() || valid.size() == n),
               "cloud scene: the reader gave ", dn.size(), " values and ", valid.size(), " validity bytes for rows [",
               y0, ", ", y0 + rows, ") of width ", in.width, " (expected ", kS2Bands, " x ", n, ")");
}

void check_scene(const SceneReader& in, int stripe) {
  NIMBUS_CHECK(in.height > 0 && in.width > 0, "cloud scene: empty scene ", in.height, "x", in.width);
  NIMBUS_CHECK(stripe > 0, "cloud scene: stripe of ", stripe, " rows");
  NIMBUS_CHECK(bool(in.read), "cloud scene: no reader");
}

}  // namespace

SceneThresholds scene_shadow_thresholds(const SceneReader& in, int stripe, const std::function<void(int)>& progress) {
  check_scene(in, stripe);
  const int H = in.height;
  std::vector<float> dn;
  std::vector<uint8_t> valid;
  int rows = 0, rows_read = 0;
  auto read_stripe = [&](int y0) {
    rows = std::min(stripe, H - y0);
    read_rows(in, y0, rows, dn, valid);
    rows_read += rows;
    if (progress) progress(rows_read);
  };
  // How many pixels have data: numpy's pairwise tree depends on the count, so it comes first. Every
  // pixel when the reader gives no validity (it says so from the first stripe on, for the whole
  // scene); else counted in a first read of the scene.
  read_stripe(0);
  const bool all_valid = valid.empty();
  size_t n = all_valid ? size_t(H) * size_t(in.width) : 0;
  for (int y0 = 0; !all_valid;) {
    n += size_t(std::count(valid.begin(), valid.end(), uint8_t(1)));
    if ((y0 += rows) >= H) break;
    read_stripe(y0);
  }
  SceneThresholds t;
  if (n == 0) return t;  // no pixel has data: with_data 0, the caller says so
  // The indices of the pixels with data, in row-major order (what shadow_mask's thresholds see), one
  // stripe at a time: the stripe already read when every pixel has data, else the scene again.
  std::vector<float> csi, blue;
  size_t at = 0;
  int next = 0;
  auto take_stripe = [&] {
    const size_t m = size_t(rows) * size_t(in.width);
    csi.clear(), blue.clear(), at = 0;
    for (size_t q = 0; q < m; ++q) {
      if (!valid.empty() && !valid[q]) continue;
      float c, b;
      shadow_indices(dn.data(), m, q, c, b);
      csi.push_back(c), blue.push_back(b);
    }
    next += rows;
  };
  if (all_valid) take_stripe();
  shadow_thresholds_pulled(
      n,
      [&](float* c, float* b, size_t k) {
        while (k > 0) {
          if (at == csi.size()) {
            NIMBUS_CHECK(next < H, "cloud scene: the reader gave fewer pixels with data on the second read than ",
                         "the ", n, " of the first");
            read_stripe(next);
            take_stripe();
            continue;
          }
          const size_t take = std::min(k, csi.size() - at);
          std::copy_n(csi.data() + at, take, c);
          std::copy_n(blue.data() + at, take, b);
          at += take, c += take, b += take, k -= take;
        }
      },
      t.csi, t.blue);
  t.with_data = n;
  return t;
}

void scene_masks(const SceneReader& in, const SceneThresholds& thresholds, const CloudDetectorOptions& options,
                 int stripe, const std::function<void(const SceneStripe&)>& out) {
  check_scene(in, stripe);
  NIMBUS_CHECK(thresholds.with_data > 0, "cloud scene: no pixel of the scene has data: no thresholds");
  NIMBUS_CHECK(options.dihedral_code == 0 && !options.valid,
               "cloud scene: the scene is examined as stored, its validity from the reader");
  const int W = in.width;
  std::vector<float> dn;
  std::vector<uint8_t> valid, cloud;
  for (int y0 = 0; y0 < in.height; y0 += stripe) {
    const int y1 = std::min(in.height, y0 + stripe);
    const int a = std::max(0, y0 - kSceneHalo), b = std::min(in.height, y1 + kSceneHalo), h = b - a;
    read_rows(in, a, h, dn, valid);
    const std::vector<double> score = cloud_score(dn.data(), kS2Bands, h, W, options);
    const std::vector<uint8_t> shadow = shadow_mask_thresholded(dn.data(), kS2Bands, h, W, thresholds.csi,
                                                                thresholds.blue, 0, valid.empty() ? nullptr : valid.data());
    const size_t off = size_t(y0 - a) * size_t(W), n = size_t(y1 - y0) * size_t(W);
    cloud.resize(n);
    for (size_t i = 0; i < n; ++i) cloud[i] = score[off + i] >= options.cloud_threshold;
    out(SceneStripe{y0, y1 - y0, W, cloud.data(), shadow.data() + off, valid.empty() ? nullptr : valid.data() + off});
  }
}

}  // namespace nimbus::data
