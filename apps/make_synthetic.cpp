// make_synthetic: write synthetic EuroSAT-MS-like tiles and SEN12MS-CR-like
// triplets in the real layouts and formats (see data/synthetic.h), for
// end-to-end runs and the demo where the real datasets cannot be downloaded.
//
//   make_synthetic --out DIR --eurosat-per-class N --sen12mscr N [--seed S]
//                  [--cloud-cover lo,hi] [--patches-per-roi K] [--threads T]
// writes DIR/eurosat/<Class>/<Class>_<n>.tif and DIR/sen12mscr/ROIs.../...,
// DIR/sen12mscr/masks/..., DIR/sen12mscr/labels.csv. Every item depends only on
// (seed, index): the same seed gives identical bytes with any thread count.
// --granule N also writes DIR/granule/s2_cloudy.tif and s1.tif, one N x N scene
// (10980 = a Sentinel-2 granule) tiled from 256x256 synthetic triplets side by
// side, written by tiles in bounded memory: the input for remove_clouds at scale.
// --granule-nodata W gives its S2 scene a swath edge: no data left of a diagonal from W pixels wide
// at the top to none at the bottom, 0 in every band with GDAL nodata 0, as an L1C granule at the
// edge of a satellite's swath (the S1 scene keeps its data).
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <vector>

#include "apps/common/cli.h"
#include "apps/common/progress.h"
#include "data/geotiff.h"
#include "data/synthetic.h"
#include "data/synthetic_spectra.h"

using namespace nimbus;

namespace {

std::pair<double, double> parse_range(const std::string& s) {
  size_t comma = s.find(',');
  if (comma == std::string::npos)
    throw cli::UsageError("--cloud-cover: expected lo,hi (fractions 0..1), got '" + s + "'");
  double lo = cli::parse_double(s.substr(0, comma), "--cloud-cover lo");
  double hi = cli::parse_double(s.substr(comma + 1), "--cloud-cover hi");
  if (!(0 <= lo && lo <= hi && hi <= 1))
    throw cli::UsageError("--cloud-cover: need 0 <= lo <= hi <= 1 (fractions), got '" + s + "'");
  return {lo, hi};
}

// A (size x size) cloudy S2 + S1 pair made of synthetic triplets placed side by side (256x256
// each, the last row and column cropped), written tile by tile: only a row of triplets is in memory.
// nodata_edge > 0: the S2 pixels left of column nodata_edge * (1 - row / size) have no data.
void write_granule(const std::string& dir, const data::SyntheticOptions& o, int size, int nodata_edge) {
  constexpr int T = 256;
  const int n = (size + T - 1) / T;
  std::filesystem::create_directories(dir);
  // Georeferencing: the first triplet's corner, 10 m pixels, over the whole granule.
  const data::SyntheticTriplet first = data::make_triplet(o.seed, 0, 0.5);
  std::vector<std::string> names;
  for (int b = 0; b < data::kS2Bands; ++b) names.emplace_back(data::kS2BandNames[size_t(b)]);
  data::WriteOptions w2, w1;
  w2.type = data::SampleType::UInt16;
  w1.type = data::SampleType::Float32;
  w2.tile_size = w1.tile_size = T;
  std::optional<double> nodata;
  if (nodata_edge > 0) nodata = 0.0;  // Sentinel-2's own nodata DN
  data::TiledGeoTiffWriter s2(dir + "/s2_cloudy.tif", size, size, data::kS2Bands, w2, first.s2_cloudy.geo, names,
                              nodata);
  data::TiledGeoTiffWriter s1(dir + "/s1.tif", size, size, data::kS1Bands, w1, first.s1.geo, {"VV", "VH"});
  Progress bar("make_synthetic granule", int64_t(n) * n, stderr, Progress::Mode::Auto, "tile");
  std::vector<data::SyntheticTriplet> row(static_cast<size_t>(n));
  for (int ty = 0; ty < n; ++ty) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int tx = 0; tx < n; ++tx) {
      const int index = ty * n + tx;
      row[size_t(tx)] = data::make_triplet(o.seed, index, data::triplet_cover(o.seed, index, o.cover_lo, o.cover_hi));
    }
    const int h = std::min(T, size - ty * T);
    for (int tx = 0; tx < n; ++tx) {
      const int w = std::min(T, size - tx * T);
      auto crop = [&](const data::Raster& r) {  // the (bands, h, w) top-left corner of a 256x256 raster
        std::vector<float> v(size_t(r.bands) * size_t(h) * size_t(w));
        for (int c = 0; c < r.bands; ++c)
          for (int y = 0; y < h; ++y)
            std::copy_n(r.band(c) + size_t(y) * size_t(r.width), size_t(w),
                        v.data() + (size_t(c) * size_t(h) + size_t(y)) * size_t(w));
        return v;
      };
      std::vector<float> s2_tile = crop(row[size_t(tx)].s2_cloudy);
      for (int y = 0; nodata_edge > 0 && y < h; ++y) {
        const int64_t gy = int64_t(ty) * T + y, edge = nodata_edge - int64_t(nodata_edge) * gy / size;
        for (int x = 0; x < w && int64_t(tx) * T + x < edge; ++x)
          for (int c = 0; c < data::kS2Bands; ++c) s2_tile[(size_t(c) * size_t(h) + size_t(y)) * size_t(w) + size_t(x)] = 0.f;
      }
      s2.write_tile(tx, ty, s2_tile.data());
      s1.write_tile(tx, ty, crop(row[size_t(tx)].s1).data());
      bar.update(int64_t(ty) * n + tx + 1);
    }
  }
  bar.finish();
  s2.finish();
  s1.finish();
}

int run(int argc, char** argv) {
  cli::Parser p("make_synthetic",
                "Write synthetic EuroSAT-MS-like tiles and SEN12MS-CR-like triplets (cloud-free S2, cloudy S2, "
                "S1) in the real folder layouts and GeoTIFF formats, with a labels.csv of true classes and cloud "
                "fractions and the generator's own cloud masks.");
  p.add_string("out", "", "output folder (eurosat/ and sen12mscr/ are created in it)", "DIR");
  p.add_int("eurosat-per-class", 0, "EuroSAT-like tiles per class (10 classes)").range(0, 1e6);
  p.add_int("sen12mscr", 0, "SEN12MS-CR-like triplets (256x256)").range(0, 1e6);
  p.add_string("cloud-cover", "0,1", "per-patch cloud cover drawn uniformly from this range (fractions)", "LO,HI");
  p.add_int("patches-per-roi", 25, "patches per ROI folder (seasons cycle over ROIs)").range(1, 1e6);
  p.add_int("granule", 0,
            "also write granule/s2_cloudy.tif and granule/s1.tif, one N x N scene tiled from synthetic triplets "
            "(10980 = a Sentinel-2 granule; 0 = none)")
      .range(0, 40000);
  p.add_int("granule-nodata", 0,
            "with --granule: the S2 scene's swath edge, no data (0 in every band, GDAL nodata 0) left of a diagonal "
            "from W pixels wide at the top to none at the bottom (0 = every pixel has data)", "W")
      .range(0, 40000);
  cli::add_common_options(p, /*with_device=*/false);
  p.parse_or_exit(argc, argv);
  const std::string out = p.get_string("out");
  const int64_t n_eurosat = p.get_int("eurosat-per-class"), n_cr = p.get_int("sen12mscr");
  data::SyntheticOptions o;
  if (out.empty()) throw cli::UsageError("--out DIR is required");
  {  // before any data is made: a folder there, or one we can make
    std::error_code ec;
    if (std::filesystem::exists(out, ec) && !std::filesystem::is_directory(out, ec))
      throw cli::UsageError("--out " + out + " is not a folder");
    std::filesystem::create_directories(out, ec);
    NIMBUS_CHECK(!ec, "--out ", out, ": cannot create the folder: ", ec.message());
  }
  const int64_t nodata_edge = p.get_int("granule-nodata");
  if (nodata_edge > 0 && p.get_int("granule") == 0)
    throw cli::UsageError("--granule-nodata " + std::to_string(nodata_edge) + " needs --granule N");
  if (n_eurosat < 0 || n_cr < 0) throw cli::UsageError("counts must be >= 0");
  std::tie(o.cover_lo, o.cover_hi) = parse_range(p.get_string("cloud-cover"));
  cli::CommonOptions common = cli::apply_common_options(p);
  o.seed = common.seed;
  o.patches_per_roi = int(p.get_int("patches-per-roi"));

  const std::string eurosat_root = out + "/eurosat", cr_root = out + "/sen12mscr";
  // A set is written whole into an empty folder: over an earlier one (another seed, other counts) the
  // files would mix, and labels.csv would describe only the new ones.
  for (const auto& [root, n] : {std::pair{eurosat_root, n_eurosat}, std::pair{cr_root, n_cr}}) {
    std::error_code ec;
    if (n > 0 && std::filesystem::exists(root) && !std::filesystem::is_empty(root, ec))
      throw cli::UsageError(str(root, " already holds a data set: writing another into it would mix the two; give "
                                "an --out without it (or remove it)"));
  }
  const int64_t total = n_eurosat * data::kNumClasses + n_cr;
  std::vector<std::string> rows(static_cast<size_t>(n_cr));
  std::string first_error;
  Progress bar("make_synthetic", total, stderr, Progress::Mode::Auto, "items");
  int64_t done = 0;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < total; ++i) {
    try {
      if (i < n_eurosat * data::kNumClasses)
        data::write_eurosat_tile(eurosat_root, o.seed, int(i / n_eurosat), int(i % n_eurosat));
      else
        rows[size_t(i - n_eurosat * data::kNumClasses)] =
            data::write_triplet(cr_root, o, int(i - n_eurosat * data::kNumClasses));
    } catch (const std::exception& e) {
#pragma omp critical(make_synthetic_error)
      if (first_error.empty()) first_error = e.what();
    }
#pragma omp critical(make_synthetic_progress)
    bar.update(++done);
  }
  bar.finish();
  if (!first_error.empty()) {
    std::fprintf(stderr, "make_synthetic: %s\n", first_error.c_str());
    return 1;
  }
  if (n_cr > 0) data::write_labels(cr_root, rows);
  if (const int64_t g = p.get_int("granule"); g > 0) {
    write_granule(out + "/granule", o, int(g), int(nodata_edge));
    std::printf("make_synthetic: a %lld x %lld granule in %s/granule\n", (long long)g, (long long)g, out.c_str());
  }
  std::printf("make_synthetic: %lld EuroSAT-like tiles in %s, %lld SEN12MS-CR-like triplets in %s (seed %llu, "
              "%d threads)\n",
              (long long)(n_eurosat * data::kNumClasses), eurosat_root.c_str(), (long long)n_cr, cr_root.c_str(),
              (unsigned long long)o.seed, common.threads);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return nimbus::cli::guarded_main("make_synthetic", run, argc, argv); }
