// sen12mscr.h: the SEN12MS-CR dataset (reference §5.2, §6): finding its
// (S1, cloud-free S2, cloudy S2) triplets on disk, the benchmark split, and
// turning one triplet into a training sample for the loader.
//
// Nested layout, exactly as distributed (season seed 1158 spring, 1868 summer,
// 1970 fall, 2017 winter):
//   <root>/ROIs1158_spring_s1/s1_<roi>/ROIs1158_spring_s1_<roi>_p<n>.tif
//   <root>/ROIs1158_spring_s2/s2_<roi>/ROIs1158_spring_s2_<roi>_p<n>.tif
//   <root>/ROIs1158_spring_s2_cloudy/s2_cloudy_<roi>/ROIs1158_spring_s2_cloudy_<roi>_p<n>.tif
//   and, when SEN12MS land cover is present (under root or lc_root), as SEN12MS unpacks it
//   <lc_root>/ROIs1158_spring/lc_<roi>/ROIs1158_spring_lc_<roi>_p<n>.tif   (its s1_/s2_ folders left out)
//   or in a folder of its own like the others
//   <lc_root>/ROIs1158_spring_lc/lc_<roi>/ROIs1158_spring_lc_<roi>_p<n>.tif
// Flat list form: a CSV, one triplet per line, "s1,s2,s2_cloudy[,lc]" paths
// (relative to the CSV's folder or absolute); '#' comments and an "s1,..." header
// are skipped. Season, ROI and patch come from the file names (original names,
// or the DSen2-CR flattened ROIs1158_spring_<roi>_p<n>.tif).
//
// Triplets pair by (season, ROI, patch). Incomplete ones are skipped and
// reported in ONE warning line on stderr (also kept in the index).
#pragma once
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "data/augment.h"
#include "data/geotiff.h"
#include "data/loader.h"
#include "data/raster_pack.h"

namespace nimbus::data {

struct Sen12mscrTriplet {
  std::string s1, s2, s2_cloudy;  // paths
  std::string lc;                 // SEN12MS land cover, empty when absent
  int seed = 0;                   // 1158, 1868, 1970, 2017
  std::string season;             // spring, summer, fall, winter
  int roi = 0, patch = 0;
  std::string name() const;  // "ROIs1158_spring_106_p30"
};

enum class Split { Train, Val, Test };
const char* split_name(Split s);

// The UnCRtainTS benchmark split (§5.2): 10 test and 10 val ROI folders by
// season, everything else train. Matched on the exact (season, ROI) pair, so
// s1_1 is never confused with s1_106.
Split benchmark_split(const std::string& season, int roi);

struct Sen12mscrIndex {
  std::vector<Sen12mscrTriplet> triplets;  // complete triplets, sorted by (seed, roi, patch)
  size_t incomplete = 0;                   // skipped: some member missing
  size_t missing_s1 = 0, missing_s2 = 0, missing_s2_cloudy = 0;
  size_t with_lc = 0;
  std::string warning;  // the warning line printed (empty when nothing was skipped)
  std::vector<Sen12mscrTriplet> split(Split s) const;
};

// Walks the nested layout. lc_root: where the land cover lives (default: root).
Sen12mscrIndex scan_sen12mscr(const std::string& root, const std::string& lc_root = "");
// Reads the flat CSV form. kTripletListHelp: how the apps' --help names it.
inline constexpr const char* kTripletListHelp =
    "a triplet list CSV (one triplet a line: s1,s2,s2_cloudy[,lc] paths, relative to the CSV)";
Sen12mscrIndex read_sen12mscr_list(const std::string& csv_path);

// ---- one triplet -> one training sample ----
struct TripletSampleOptions {
  AugmentConfig augment;         // default: random 128 crop + flip/rot90 (training)
  bool keep_raw_cloudy = false;  // also "cloudy_raw": the cloudy DN after flip/rot, before clipping
  bool with_lc = false;          // also "lc" (4, h, w): SEN12MS land cover, same window/flip/rot; required then
  // Optional cloud/shadow mask, as "mask" (1, h, w): mask_fn(cloudy_raw, code) examines the raw cloudy
  // crop (13 bands of DN) turned by the dihedral code (kernels/common/dihedral.h; the detector's
  // CloudDetectorOptions::dihedral_code) and returns h*w values in that turned frame.
  std::function<std::vector<float>(const Raster& cloudy_raw, int dihedral_code)> mask_fn;
  // The flips and quarter turns drawn but not applied: every image field is left as read, the mask
  // moved back to match, and "augment" () holds the code 4 flip + rot for engine/ops/augment.h's
  // flip_rotate to apply on the model's device. After it the batch is the host path's bit for bit
  // (the mask was computed on the turned crop, as the reference does). Square crops only.
  bool flip_rotate_on_device = false;
  // Optional raster pack (raster_pack.h): the files it holds are read from it, the rest from disk.
  std::shared_ptr<const RasterPack> pack;
};

// S1 is read as (VV, VH). A file whose band descriptions name the two the other way round (a re-export
// that swapped them) is an Error naming it; no descriptions, or others, are taken as SEN12MS-CR's order.
void check_s1_band_order(const std::string& path, const std::vector<std::string>& band_descriptions);

// SEN12MS-CR's S1 is backscatter in dB (10 log10 of the linear power): mostly -30..0, above 0 only on
// bright targets, and VH hardly ever. A re-export in linear power or amplitude is all positive, and the
// model's clip to [-25, 0] / [-32.5, 0] dB (normalize.h) would turn it into a flat SAR input in silence.
// Error naming the file when, of at least kS1ScaleMinValues finite non-zero values (both bands
// together), more than kS1MaxPositiveShare are above 0. The readers of S1 run it on what they read.
inline constexpr size_t kS1ScaleMinValues = 64;
inline constexpr double kS1MaxPositiveShare = 0.9;
void check_s1_in_db(const std::string& path, const float* values, size_t n);

// The triplet's three files as load_triplet needs them (S1 2-band float32, both S2 13-band uint16 in
// SEN12MS-CR's band order, one size), read from `pack` when it holds them: their (height, width), or an
// Error naming the file. load_triplet runs it on every triplet; train_dsen2cr on the first before any work.
std::pair<int, int> check_triplet_files(const Sen12mscrTriplet& t, const RasterPack* pack = nullptr);

// Reads the same window of all three files, fills NaNs (window mean), applies
// the same flip and rotation, computes the mask on raw DN, then normalises (§4).
// Fields: "cloudy" (13,h,w), "target" (13,h,w), "sar" (2,h,w) [, "cloudy_raw", "mask", "lc", "augment"].
Sample load_triplet(const Sen12mscrTriplet& t, Rng& rng, const TripletSampleOptions& options);
SampleFn sen12mscr_sample_fn(std::vector<Sen12mscrTriplet> triplets, TripletSampleOptions options);

}  // namespace nimbus::data
