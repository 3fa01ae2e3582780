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

bool scene_counts_first(int height, int width, bool has_nodata, size_t keep_bytes) {
  return has_nodata && 8 * size_t(height) * size_t(width) > keep_bytes;
}

SceneThresholds scene_shadow_thresholds(const SceneReader& in, int stripe, const std::function<void(int64_t)>& progress,
                                        size_t keep_bytes) {
  check_scene(in, stripe);
  const int H = in.height;
  std::vector<float> dn;
  std::vector<uint8_t> valid;
  int rows = 0, next = 0;
  int64_t rows_read = 0;  // up to twice the height
  auto read_stripe = [&] {
    rows = std::min(stripe, H - next);
    read_rows(in, next, rows, dn, valid);
    next += rows, rows_read += rows;
    if (progress) progress(rows_read);
  };
  // The indices of the stripe's pixels with data, in row-major order (what shadow_mask's thresholds
  // see), after those already in csi and blue.
  std::vector<float> csi, blue;
  auto add_indices = [&] {
    const size_t m = size_t(rows) * size_t(in.width);
    for (size_t q = 0; q < m; ++q) {
      if (!valid.empty() && !valid[q]) continue;
      float c, b;
      shadow_indices(dn.data(), m, q, c, b);
      csi.push_back(c), blue.push_back(b);
    }
  };
  SceneThresholds t;
  read_stripe();
  const bool has_nodata = !valid.empty();  // the reader says so from its first stripe on
  if (has_nodata && !scene_counts_first(H, in.width, true, keep_bytes)) {
    // Small enough: every index kept, one read.
    add_indices();
    while (next < H) read_stripe(), add_indices();
    if (csi.empty()) return t;  // no pixel has data: with_data 0, the caller says so
    shadow_thresholds(csi, blue, t.csi, t.blue);
    t.with_data = csi.size();
    return t;
  }
  // Else the sums take the indices as they come, one stripe at a time. numpy's pairwise tree depends
  // on their count, so it comes first: every pixel without nodata, else counted in a first read.
  size_t n = size_t(H) * size_t(in.width);
  if (has_nodata) {
    n = 0;
    for (;;) {
      n += size_t(std::count_if(valid.begin(), valid.end(), [](uint8_t v) { return v != 0; }));
      if (next >= H) break;
      read_stripe();
    }
    if (n == 0) return t;
    next = 0;
    read_stripe();
  }
  size_t at = 0;
  add_indices();
  shadow_thresholds_pulled(
      n,
      [&](float* c, float* b, size_t k) {
        while (k > 0) {
          if (at == csi.size()) {
            NIMBUS_CHECK(next < H, "cloud scene: the reader gave fewer pixels with data than the ", n, " counted");
            read_stripe();
            csi.clear(), blue.clear(), at = 0;
            add_indices();
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
