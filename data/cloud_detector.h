// cloud_detector.h: the rule-based cloud / cloud-shadow detector of DSen2-CR
// (reference/dsen2cr-sen12mscr.md §3), reproduced to the float.
//
// Input: one raw Sentinel-2 window, 13 bands (B1..B8, B8A, B9..B12), DN on the
// x10000 reflectance scale, float32, band-major (13, H, W), exactly as read from
// the GeoTIFF (not clipped, not normalised), NaN-free (DSen2-CR fills NaN with
// the window mean when it reads). The shadow thresholds use the window's min
// and mean, so run the detector on the final crop. The reference runs it after
// the flip and quarter turn; `dihedral_code` lets it see the window turned
// without the window being moved (the loader leaves the pixels to the GPU).
//
// Output per pixel: +1 cloud, -1 shadow, 0 clear (cloud wins over shadow); for
// the CARL loss any non-zero is 1. The arithmetic follows the numpy dtypes of
// the original code (float32 band tests, float64 box mean), so masks agree with
// scipy bit for bit except at ties.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "data/geotiff.h"

namespace nimbus::data {

struct CloudDetectorOptions {
  double cloud_threshold = 0.2;  // cloud where the smoothed score >= this (DSen2-CR main)
  // B1 + B10 test range: DSen2-CR uses (0.15, 0.20); UnCRtainTS / SEN12MS-CR-TS use (0.40, 0.90).
  double b1_b10_lo = 0.15, b1_b10_hi = 0.20;
  // Examine the window as data/augment.h's flip_rotate would leave it (code = 4 flip + rot,
  // kernels/common/dihedral.h): every output is in that turned frame (W x H when rot is odd) and
  // equals, bit for bit, the detector run on the turned copy. Each pass reads the same values in the
  // same order as it would there; only the first gathers through the permutation.
  int dihedral_code = 0;
  // (H, W) in the input's frame, 0 where a pixel has no data (its file's nodata value in every band), or
  // null (every pixel has). The shadow thresholds are then statistics of the pixels with data, and a
  // pixel without data is no shadow candidate (its zeros would spread shadow from a swath's edge through
  // the median); the masks still cover every pixel (the caller decides what a nodata pixel's mask says).
  const uint8_t* valid = nullptr;
};

struct CloudShadowMasks {
  int height = 0, width = 0;  // of the examined frame (swapped from the input's by an odd quarter turn)
  std::vector<double> cloud_score;  // (H, W) after closing, box mean and clip to [1e-5, 1]
  std::vector<uint8_t> cloud;       // (H, W) 1 where cloud_score >= threshold
  std::vector<uint8_t> shadow;      // (H, W) 1 where the median-filtered shadow test holds
  float shadow_csi_threshold = 0, shadow_blue_threshold = 0;  // T3, T4 of §3 (this window's)

  // +1 cloud, -1 shadow, 0 clear: cloud wins.
  std::vector<int8_t> map() const;
  // 0/1 float mask for the loss: cloud or shadow.
  std::vector<float> binary() const;
  double cloud_fraction() const;   // fraction of pixels that are cloud
  double shadow_fraction() const;  // fraction of pixels that are shadow and not cloud
};

// dn: 13 * height * width floats, band-major. Throws nimbus::Error on a wrong
// band count or an empty window.
CloudShadowMasks detect_clouds(const float* dn, int bands, int height, int width,
                               const CloudDetectorOptions& options = {});
CloudShadowMasks detect_clouds(const Raster& s2, const CloudDetectorOptions& options = {});

// The pieces, exposed for tests and for callers that need only one of them.
std::vector<double> cloud_score(const float* dn, int bands, int height, int width,
                                const CloudDetectorOptions& options = {});
std::vector<uint8_t> shadow_mask(const float* dn, int bands, int height, int width, float* t3 = nullptr,
                                 float* t4 = nullptr, int dihedral_code = 0, const uint8_t* valid = nullptr);

// The shadow test by its parts, for a scene read in stripes (data/cloud_scene.h), where the thresholds
// are the whole scene's. shadow_mask is shadow_indices for every pixel, shadow_thresholds over those
// with data, then shadow_mask_thresholded.
//   shadow_indices: pixel q of a (13, n) window's cloud-shadow index (B8 + B11) / 2 and blue reflectance;
//   shadow_thresholds: T3, T4 from the indices of the pixels with data, in frame order (numpy's float32
//     min and pairwise mean); Error when there are none;
//   shadow_thresholds_pulled: the same from n pixels' indices delivered in order by pull(csi, blue, k),
//     k <= 128 at a time, holding no more than that (numpy's pairwise tree depends on n alone, so n
//     must be known first); bit for bit shadow_thresholds over the whole arrays;
//   shadow_mask_thresholded: the median-filtered test with given thresholds (frame of dihedral_code).
void shadow_indices(const float* dn, size_t n, size_t q, float& csi, float& blue);
void shadow_thresholds(const std::vector<float>& csi, const std::vector<float>& blue, float& t3, float& t4);
using ShadowIndexPull = std::function<void(float* csi, float* blue, size_t k)>;
void shadow_thresholds_pulled(size_t n, const ShadowIndexPull& pull, float& t3, float& t4);
std::vector<uint8_t> shadow_mask_thresholded(const float* dn, int bands, int height, int width, float t3, float t4,
                                             int dihedral_code = 0, const uint8_t* valid = nullptr);

// 0/1 mask (cloud or shadow) for the CARL loss, (H, W) floats.
std::vector<float> cloud_shadow_mask(const float* dn, int bands, int height, int width,
                                     const CloudDetectorOptions& options = {});
// Fraction of the window's pixels that the detector calls cloud (shadow not counted).
double cloud_cover_fraction(const float* dn, int bands, int height, int width,
                            const CloudDetectorOptions& options = {});
double cloud_cover_fraction(const Raster& s2, const CloudDetectorOptions& options = {});

}  // namespace nimbus::data
