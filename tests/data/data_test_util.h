// data_test_util.h: helpers shared by the data-layer tests: a self-deleting
// temp directory, file globbing, cropping a raster, and small rasters with real
// georeferencing.
#pragma once
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/geotiff.h"
#include "engine/random.h"
#include "tests/common/check.h"

namespace nimbus::test {

namespace fs = std::filesystem;

// mkdtemp under $TMPDIR (or /tmp); removed with everything in it on scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "nimbus_data_XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& rel) const { return (path / rel).string(); }
};

// Every regular file under root whose name ends with ext, sorted.
inline std::vector<std::string> glob_files(const std::string& root, const std::string& ext) {
  std::vector<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file() && e.path().string().ends_with(ext)) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

inline std::string slurp(const std::string& path) {
  REQUIRE_MESSAGE(std::ifstream(path).good(), "cannot read ", path);
  return read_file(path);
}

inline void spit(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

// The size x size window of r whose top-left pixel is (x0, y0), every band; the rest of r (type,
// georeferencing) unchanged.
inline data::Raster crop_raster(const data::Raster& r, int x0, int y0, int size) {
  data::Raster c = r;
  c.width = c.height = size;
  c.data.clear();
  for (int b = 0; b < r.bands; ++b)
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x) c.data.push_back(r.band(b)[(y + y0) * r.width + x + x0]);
  return c;
}

// A UTM-like georeferencing (pixel scale + one tie point + GeoKeys + ASCII).
inline data::GeoInfo utm_geo() {
  data::GeoInfo g;
  g.pixel_scale = {10, 10, 0};
  g.tiepoints = {0, 0, 0, 399960, 5800020, 0};
  g.geokeys = {1, 1, 0, 4, 1024, 0, 1, 1, 1025, 0, 1, 1, 1026, 34737, 22, 0, 3072, 0, 1, 32631};
  g.geo_ascii_params = "WGS 84 / UTM zone 31N|";
  return g;
}

// (bands, h, w) raster of integers drawn uniformly in [lo, hi].
inline data::Raster random_raster(int bands, int h, int w, double lo, double hi, uint64_t seed,
                                  data::SampleType type = data::SampleType::UInt16) {
  data::Raster r;
  r.bands = bands;
  r.height = h;
  r.width = w;
  r.type = type;
  r.geo = utm_geo();
  Rng rng(seed);
  r.data.resize(size_t(bands) * h * w);
  for (auto& v : r.data) v = float(lo + double(rng.below(uint64_t(hi - lo + 1))));
  return r;
}

}  // namespace nimbus::test
