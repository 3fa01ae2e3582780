// synthetic.h: synthetic EuroSAT-MS-like tiles and SEN12MS-CR-like triplets, in
// the real layouts and formats, as stand-ins for datasets we cannot download.
//
// Each item is a pure function of (seed, item index): the generator seeds one
// Rng per item, so output is identical whatever the thread count or order.
//   EuroSAT:    <root>/<Class>/<Class>_<n>.tif, 64x64x13 uint16, EuroSAT band
//               order (B8A last), UTM GeoTIFF, one class per tile.
//   SEN12MS-CR: <root>/ROIs1158_spring_s1/s1_<roi>/ROIs1158_spring_s1_<roi>_p<n>.tif
//               (2-band float32 dB, VV, VH) and its _s2 / _s2_cloudy twins
//               (13-band uint16, B1..B8, B8A, B9..B12), 256x256, 10 m UTM;
//               <root>/masks/ROIs1158_spring_mask_<roi>_p<n>.tif: the generator's
//               own uint8 mask (0 clear, 1 cloud, 2 shadow);
//               <root>/labels.csv: one row per triplet (columns: labels_header()).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/geotiff.h"
#include "data/synthetic_clouds.h"
#include "data/synthetic_texture.h"

namespace nimbus::data {

// A clear scene: (13, H, W) DN in SEN12MS-CR band order, with what made it.
struct OpticalScene {
  int height = 0, width = 0;
  std::vector<float> s2;
  SceneLayout layout;
  Field texture;               // (H, W) the class texture at each pixel (standardised per class)
  std::vector<uint8_t> water;  // (H, W) 1 on the water cluster of River / SeaLake
};
OpticalScene make_optical_scene(int h, int w, int dominant, double dominant_share, Rng& rng);

// One EuroSAT-like tile of class cls: the raster as it will be written (file band order).
Raster make_eurosat_tile(uint64_t seed, int cls, int index);

struct SyntheticTriplet {
  Raster s1, s2, s2_cloudy, mask;  // mask: uint8 0 clear / 1 cloud / 2 shadow
  SceneLayout layout;
  double requested_cover = 0, cloud_fraction = 0, shadow_fraction = 0, cirrus = 0;
};
// cover: the wanted cloud fraction for this patch. patches_per_roi places it:
// patches of one ROI share a UTM zone and sit side by side.
SyntheticTriplet make_triplet(uint64_t seed, int index, double cover, int size = 256, int patches_per_roi = 25);
// The cover make_sen12mscr draws for triplet `index` from [lo, hi].
double triplet_cover(uint64_t seed, int index, double lo, double hi);

// Where triplet `index` goes: season cycles over the four SEN12MS-CR seasons by ROI,
// ROIs hold `patches_per_roi` patches each.
struct TripletName {
  std::string season;  // "ROIs1158_spring", ...
  int roi = 0, patch = 0;
  std::string s1, s2, s2_cloudy, mask;  // paths relative to the dataset root
};
TripletName triplet_name(int index, int patches_per_roi);

struct SyntheticOptions {
  uint64_t seed = 42;
  double cover_lo = 0.0, cover_hi = 1.0;
  int patches_per_roi = 25;
  int size = 256;
};
// Write one item (creates its folders). Return what the labels file records.
void write_eurosat_tile(const std::string& root, uint64_t seed, int cls, int index);
std::string write_triplet(const std::string& root, const SyntheticOptions& options, int index);
std::string labels_header();
// <root>/labels.csv: labels_header(), then one row per triplet (what write_triplet returned),
// written atomically.
void write_labels(const std::string& root, const std::vector<std::string>& rows);

}  // namespace nimbus::data
