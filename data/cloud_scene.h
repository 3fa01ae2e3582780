// cloud_scene.h: the DSen2-CR cloud / shadow detector (cloud_detector.h) over a scene read in stripes
// of rows, for scenes too large to hold: a Sentinel-2 granule (10980 x 10980, 13 bands) is 6.3 GB of
// floats, and the detector's working arrays as much again. Two passes over a SceneReader:
//   1. scene_shadow_thresholds: the shadow thresholds T3, T4, the only whole-scene quantities the
//      detector has (the min and numpy's float32 mean of two indices over the pixels with data). The
//      sums take the indices as they come, holding a stripe: their pairwise tree depends only on how
//      many pixels have data, which is every pixel in a scene without nodata (one read). A scene with
//      nodata keeps its indices (8 bytes a pixel, one read) up to keep_bytes; above, it is read twice,
//      first to count, so that a mosaic larger than memory still fits.
//   2. scene_masks: the masks stripe by stripe, each stripe read with kSceneHalo rows above and below:
//      the 5x5 closing (a dilation and an erosion, 2 rows each) and the 7x7 box mean reach 7 rows, the
//      shadow's 5x5 median 2, so a stripe's rows see exactly what they see in the whole image.
// Together they give what detect_clouds gives on the whole image, bit for bit (dihedral code 0, the
// scene as stored).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "data/cloud_detector.h"

namespace nimbus::data {

constexpr int kSceneHalo = 7;  // rows a stripe reads above and below its own (see above)

struct SceneReader {
  int height = 0, width = 0;
  // Fills rows [y0, y0 + rows) of the scene: dn with 13 x rows x width floats, band-major, in the
  // detector's band order (B1..B8, B8A, B9..B12), finite; valid with rows x width bytes, 0 where a pixel
  // has no data (its values zeroed in dn), or left empty when the scene has no nodata.
  std::function<void(int y0, int rows, std::vector<float>& dn, std::vector<uint8_t>& valid)> read;
};

struct SceneThresholds {
  float csi = 0, blue = 0;  // T3, T4 of §3 (CloudShadowMasks::shadow_csi_threshold, shadow_blue_threshold)
  size_t with_data = 0;     // pixels with data
};

// One stripe of the masks: rows [y0, y0 + rows), each `width` bytes; valid null when the scene has no
// nodata.
struct SceneStripe {
  int y0 = 0, rows = 0, width = 0;
  const uint8_t* cloud = nullptr;   // 1 where the cloud score >= the threshold
  const uint8_t* shadow = nullptr;  // 1 where the median-filtered shadow test holds
  const uint8_t* valid = nullptr;
};

// Pass 1, reading `stripe` rows at a time; progress(rows read) after each read: up to the height, or
// twice it when scene_counts_first. When no pixel of the scene has data, with_data is 0 (and
// scene_masks refuses the thresholds).
constexpr size_t kSceneKeepBytes = size_t(2) << 30;  // a granule with nodata keeps its indices (0.96 GB)
SceneThresholds scene_shadow_thresholds(const SceneReader& in, int stripe, const std::function<void(int64_t)>& progress,
                                        size_t keep_bytes = kSceneKeepBytes);
// Does pass 1 read the scene twice (a count first)? Only with nodata, above keep_bytes of indices.
bool scene_counts_first(int height, int width, bool has_nodata, size_t keep_bytes = kSceneKeepBytes);
// Pass 2: out(stripe) for each stripe of `stripe` rows, top to bottom. options: the cloud threshold and
// the B1 + B10 range (dihedral_code 0 and valid null: the reader gives the validity).
void scene_masks(const SceneReader& in, const SceneThresholds& thresholds, const CloudDetectorOptions& options,
                 int stripe, const std::function<void(const SceneStripe&)>& out);

}  // namespace nimbus::data
