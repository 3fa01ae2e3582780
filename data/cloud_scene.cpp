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
  // The indices of the pixels with data, in row-major order: what shadow_mask's thresholds see.
  std::vector<float> csi, blue, dn;
  std::vector<uint8_t> valid;
  csi.reserve(size_t(in.height) * size_t(in.width));  // at most every pixel: no growth past it
  blue.reserve(size_t(in.height) * size_t(in.width));
  for (int y0 = 0; y0 < in.height; y0 += stripe) {
    const int rows = std::min(stripe, in.height - y0);
    read_rows(in, y0, rows, dn, valid);
    const size_t n = size_t(rows) * size_t(in.width);
    for (size_t q = 0; q < n; ++q) {
      if (!valid.empty() && !valid[q]) continue;
      float c, b;
      shadow_indices(dn.data(), n, q, c, b);
      csi.push_back(c), blue.push_back(b);
    }
    if (progress) progress(y0 + rows);
  }
  SceneThresholds t;
  if (csi.empty()) return t;  // no pixel has data: with_data 0, the caller says so
  shadow_thresholds(csi, blue, t.csi, t.blue);
  t.with_data = csi.size();
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
