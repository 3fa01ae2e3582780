// test_sentinel_scripts.cpp: the scripts that prepare a user's own scene, on small inputs made here.
// scripts/sentinel2_safe.sh on a small product laid out as ESA's Level-1C
// .SAFE folders are (GRANULE/<id>/IMG_DATA/<tile>_<time>_B01.jp2 ... at 10, 20 and 60 m, and
// MTD_MSIL1C.xml with baseline 04.00's RADIO_ADD_OFFSET), made here: nimbus's own GeoTIFFs turned into
// JPEG 2000 by GDAL. The stacked GeoTIFF is read back with nimbus's reader and every pixel of every band
// compared with the source pixel it covers (nearest), less the offset; the refusals (Level-2A, a band
// missing, the output inside the product) too. scripts/sentinel1_to_grid.sh on an S1 image of its own
// grid: each output pixel checked against the input pixel it lies in. GDAL (gdal-bin) comes with
// scripts/install_deps.sh --tests (scripts/test.sh).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/geotiff.h"
#include "data/sentinel2.h"
#include "tests/apps/app_runner.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;
namespace fs = std::filesystem;

namespace {

const std::string kScript = (fs::path(NIMBUS_FIXTURES).parent_path().parent_path() / "scripts/sentinel2_safe.sh").string();
const char* kBands[13] = {"B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"};
const int kMetres[13] = {60, 10, 10, 10, 20, 20, 20, 10, 20, 60, 60, 20, 20};
constexpr int kSide = 1200;  // metres: 120 pixels of 10 m, 60 of 20 m, 20 of 60 m

// Band b's source value at its own pixel (x, y): distinct per band and pixel; 0 (nodata) at the top-left
// pixel, below the offset (a dark pixel) at (1, 0), saturated (65535) at (2, 0).
float source_value(int b, int x, int y) {
  if (x == 0 && y == 0) return 0.f;
  if (x == 1 && y == 0) return 400.f;
  if (x == 2 && y == 0) return 65535.f;
  return float(1100 + 100 * b + (7 * x + 3 * y) % 97);
}
// Band b's RADIO_ADD_OFFSET (band_id b: ESA's order is SEN12MS's); another for each band, so that a band
// given another's is seen.
int offset_of(int b) { return -1000 - 10 * b; }
// What the stack holds for a source value of band b: nodata and saturation kept, dark pixels 1.
float stacked(int b, float src) {
  if (src == 0.f || src == 65535.f) return src;
  return std::max(1.f, src + float(offset_of(b)));
}

// The product: each band written by nimbus as a GeoTIFF (UTM 32N), then made JPEG 2000 (lossless) by GDAL.
std::string make_product(const fs::path& root, const std::string& gdal_translate) {
  const fs::path safe = root / "S2A_MSIL1C_20220301T101401_N0400_R022_T32TQM_20220301T120000.SAFE";
  const fs::path img = safe / "GRANULE/L1C_T32TQM_A034000_20220301T101401/IMG_DATA";
  fs::create_directories(img);
  for (int b = 0; b < 13; ++b) {
    const int n = kSide / kMetres[b];
    data::Raster r;
    r.width = r.height = n, r.bands = 1;
    r.type = data::SampleType::UInt16;
    r.data.resize(size_t(n) * size_t(n));
    for (int y = 0; y < n; ++y)
      for (int x = 0; x < n; ++x) r.data[size_t(y) * size_t(n) + size_t(x)] = source_value(b, x, y);
    r.geo.pixel_scale = {double(kMetres[b]), double(kMetres[b]), 0};
    r.geo.tiepoints = {0, 0, 0, 600000, 5000040, 0};
    r.geo.geokeys = {1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32632};
    const std::string tif = (root / (std::string(kBands[b]) + ".tif")).string();
    data::write_geotiff(tif, r, data::WriteOptions{});
    const AppResult jp2 = run_program(gdal_translate, {"-q", "-of", "JP2OpenJPEG", "-co", "QUALITY=100", "-co",
                                                       "REVERSIBLE=YES", tif,
                                                       (img / ("T32TQM_20220301T101401_" + std::string(kBands[b]) +
                                                               ".jp2")).string()});
    REQUIRE_MESSAGE(jp2.exit_code == 0, jp2.output);
  }
  // On one line, in a namespace, as a re-serialised file may be (ESA writes one element a line).
  std::ofstream mtd(safe / "MTD_MSIL1C.xml");
  mtd << "<?xml version=\"1.0\"?><n1:Level-1C_User_Product xmlns:n1=\"https://psd-14.sentinel2.eo.esa.int\">"
      << "<Radiometric_Offset_List>";
  for (int b = 0; b < 13; ++b)
    mtd << "<RADIO_ADD_OFFSET band_id=\"" << b << "\">" << offset_of(b) << "</RADIO_ADD_OFFSET>";
  mtd << "</Radiometric_Offset_List></n1:Level-1C_User_Product>\n";
  return safe.string();
}

}  // namespace

TEST_CASE("scripts: sentinel2_safe.sh stacks a Level-1C product's 13 bands on the 10 m grid, SEN12MS order") {
  const std::string gdal_translate = on_path("gdal_translate");
  REQUIRE_MESSAGE(!gdal_translate.empty(), "gdal_translate is missing: scripts/install_deps.sh --tests installs gdal-bin");
  TempDir d("sentinel2_safe");
  const std::string safe = make_product(d.path, gdal_translate);
  const AppResult r = run_program("/bin/bash", {kScript, safe, d / "out/scene.tif"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);

  const data::Raster out = data::read_geotiff(d / "out/scene.tif");
  REQUIRE(out.bands == 13);
  REQUIRE(out.width == 120);
  REQUIRE(out.height == 120);
  CHECK(out.type == data::SampleType::UInt16);
  CHECK(out.nodata == 0.0);
  std::vector<std::string> sen12ms;
  for (const auto& n : data::kS2BandNames) sen12ms.emplace_back(n);
  CHECK(out.band_names == sen12ms);  // B8A in 9th place, as read by classify and remove_clouds
  CHECK(out.geo.pixel_scale.at(0) == 10);
  CHECK(out.geo.tiepoints.at(3) == 600000);
  CHECK(out.geo.tiepoints.at(4) == 5000040);
  CHECK(out.geo.crs_code() == 32632);
  // Every pixel: the source pixel it lies in (nearest), less its band's offset, dark pixels 1, the
  // source's nodata 0 and saturated 65535 kept.
  size_t wrong = 0;
  for (int b = 0; b < 13; ++b) {
    const int f = kMetres[b] / 10;  // SEN12MS band b is the product's kBands[b]
    for (int y = 0; y < 120; ++y)
      for (int x = 0; x < 120; ++x)
        wrong += out.data[(size_t(b) * 120 + size_t(y)) * 120 + size_t(x)] != stacked(b, source_value(b, x / f, y / f));
  }
  CHECK(wrong == 0);
  CHECK(out.data[12] == 65535.f);  // B1's saturated pixel (60 m: its 6 x 6 from column 12)
  CHECK(out.data[size_t(1) * 120 * 120 + 1] == 1.f);  // B2's dark pixel
  for (const auto& e : fs::directory_iterator(d / "out")) CHECK(e.path().filename() == "scene.tif");  // no temporary

  // Through a symbolic link to the product: the same stack.
  fs::create_directory_symlink(safe, d / "link.SAFE");
  const AppResult linked = run_program("/bin/bash", {kScript, d / "link.SAFE", d / "out/linked.tif"});
  REQUIRE_MESSAGE(linked.exit_code == 0, linked.output);
  CHECK(data::read_geotiff(d / "out/linked.tif").data == out.data);
  fs::remove(d / "out/linked.tif");
  // A product of two granules (before December 2016): refused without --tile, one granule with it.
  const fs::path img0 = fs::path(safe) / "GRANULE/L1C_T32TQM_A034000_20220301T101401/IMG_DATA";
  const fs::path img1 = fs::path(safe) / "GRANULE/L1C_T32TQN_A034000_20220301T101401/IMG_DATA";
  fs::create_directories(img1);
  for (const auto& e : fs::directory_iterator(img0)) {
    std::string name = e.path().filename().string();
    name.replace(name.find("T32TQM"), 6, "T32TQN");
    fs::copy_file(e.path(), img1 / name);
  }
  const AppResult two = run_program("/bin/bash", {kScript, safe, d / "out/two.tif"});
  CHECK(two.exit_code == 1);
  CHECK_MESSAGE(two.output.find("holds 2 granules") != std::string::npos, two.output);
  CHECK_MESSAGE(two.output.find("--tile T32TQ") != std::string::npos, two.output);
  const AppResult one = run_program("/bin/bash", {kScript, safe, d / "out/one.tif", "--tile", "T32TQN"});
  REQUIRE_MESSAGE(one.exit_code == 0, one.output);
  CHECK(data::read_geotiff(d / "out/one.tif").data == out.data);
  fs::remove(d / "out/one.tif");
  fs::remove_all(fs::path(safe) / "GRANULE/L1C_T32TQN_A034000_20220301T101401");
  // Refused, naming why, with nothing written: the output inside the product, a band missing, Level-2A.
  const AppResult inside = run_program("/bin/bash", {kScript, safe, safe + "/stack.tif"});
  CHECK(inside.exit_code == 1);
  CHECK_MESSAGE(inside.output.find("may not be inside the product") != std::string::npos, inside.output);
  const fs::path img = fs::path(safe) / "GRANULE/L1C_T32TQM_A034000_20220301T101401/IMG_DATA";
  fs::rename(img / "T32TQM_20220301T101401_B10.jp2", d / "B10.jp2");
  const AppResult missing = run_program("/bin/bash", {kScript, safe, d / "out/missing.tif"});
  CHECK(missing.exit_code == 1);
  CHECK_MESSAGE(missing.output.find("0 files *_B10.jp2") != std::string::npos, missing.output);
  CHECK_FALSE(fs::exists(d / "out/missing.tif"));
  fs::rename(d / "B10.jp2", img / "T32TQM_20220301T101401_B02_10m.jp2");  // a Level-2A name
  const AppResult l2a = run_program("/bin/bash", {kScript, safe, d / "out/l2a.tif"});
  CHECK(l2a.exit_code == 1);
  CHECK_MESSAGE(l2a.output.find("Level-2A") != std::string::npos, l2a.output);
}

// scripts/sentinel1_to_grid.sh: S1 in linear power on a 20 m grid of its own -> dB on the Sentinel-2
// image's 10 m grid. Nearest resampling here, so that each output pixel is one input pixel's 10 log10.
TEST_CASE("scripts: sentinel1_to_grid.sh puts S1 on a Sentinel-2 image's grid, in dB, VV then VH") {
  REQUIRE_MESSAGE(!on_path("gdalwarp").empty(), "gdalwarp is missing: scripts/install_deps.sh --tests installs gdal-bin");
  TempDir d("sentinel1_grid");
  const std::vector<uint16_t> utm32 = {1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32632};
  data::Raster s2;
  s2.width = 60, s2.height = 40, s2.bands = 13;
  s2.type = data::SampleType::UInt16;
  s2.data.assign(size_t(13) * 60 * 40, 1500.f);
  s2.geo.pixel_scale = {10, 10, 0};
  s2.geo.tiepoints = {0, 0, 0, 600000, 5000040, 0};
  s2.geo.geokeys = utm32;
  data::write_geotiff(d / "scene.tif", s2, data::WriteOptions{});
  // S1: 40 x 30 pixels of 20 m from (599980, 5000060), covering the scene; one pixel 0 (no backscatter).
  data::Raster s1;
  s1.width = 40, s1.height = 30, s1.bands = 2;
  s1.type = data::SampleType::Float32;
  s1.data.resize(size_t(2) * 40 * 30);
  for (size_t i = 0; i < s1.data.size(); ++i) s1.data[i] = std::pow(10.f, (-25.f + float(i % 211) * 0.1f) / 10.f);
  s1.data[size_t(3) * 40 + 5] = 0.f;  // VV at row 3, column 5: the exports' fill, no data
  s1.geo.pixel_scale = {20, 20, 0};
  s1.geo.tiepoints = {0, 0, 0, 599980, 5000060, 0};
  s1.geo.geokeys = utm32;
  data::WriteOptions f32;
  f32.type = data::SampleType::Float32;
  data::write_geotiff(d / "s1_power.tif", s1, f32);
  const std::string script = (fs::path(kScript).parent_path() / "sentinel1_to_grid.sh").string();
  const AppResult r =
      run_program("/bin/bash", {script, d / "s1_power.tif", d / "scene.tif", d / "s1_db.tif", "--resampling", "nearest"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  const data::Raster out = data::read_geotiff(d / "s1_db.tif");
  REQUIRE(out.bands == 2);
  REQUIRE(out.width == 60);
  REQUIRE(out.height == 40);
  CHECK(out.band_names == std::vector<std::string>{"VV", "VH"});
  CHECK(data::grid_mismatch(s2.geo, out.geo).empty());
  CHECK(out.geo.pixel_scale.at(0) == 10);
  // Output pixel (x, y), centre (600005 + 10x, 5000035 - 10y), lies in S1 pixel ((25 + 10x) / 20, (25 + 10y) / 20).
  size_t wrong = 0, nan = 0;
  for (int b = 0; b < 2; ++b)
    for (int y = 0; y < 40; ++y)
      for (int x = 0; x < 60; ++x) {
        const float p = s1.data[(size_t(b) * 30 + size_t((25 + 10 * y) / 20)) * 40 + size_t((25 + 10 * x) / 20)];
        const float got = out.data[(size_t(b) * 40 + size_t(y)) * 60 + size_t(x)];
        if (p == 0.f) {
          nan += std::isnan(got);
          continue;
        }
        wrong += !(std::abs(got - 10.f * std::log10(p)) <= 1e-4f);
      }
  CHECK(wrong == 0);
  CHECK(nan == 4);  // the S1 pixel without data covers 2 x 2 output pixels: NaN, not -inf
  // --db moves without converting; an input with other than 2 bands, or the output over an input: refused.
  const AppResult again = run_program("/bin/bash", {script, d / "s1_db.tif", d / "scene.tif", d / "moved.tif", "--db",
                                                    "--resampling", "nearest"});
  REQUIRE_MESSAGE(again.exit_code == 0, again.output);
  const data::Raster moved = data::read_geotiff(d / "moved.tif");
  size_t differ = 0;
  for (size_t i = 0; i < out.data.size(); ++i)
    differ += !(moved.data[i] == out.data[i] || (std::isnan(moved.data[i]) && std::isnan(out.data[i])));
  CHECK(differ == 0);
  const AppResult three = run_program("/bin/bash", {script, d / "scene.tif", d / "scene.tif", d / "x.tif"});
  CHECK(three.exit_code == 1);
  CHECK_MESSAGE(three.output.find("13 bands; Sentinel-1 for DSen2-CR is 2") != std::string::npos, three.output);
  const AppResult over = run_program("/bin/bash", {script, d / "s1_power.tif", d / "scene.tif", d / "s1_power.tif"});
  CHECK(over.exit_code == 1);
  CHECK_MESSAGE(over.output.find("may not be an input") != std::string::npos, over.output);
  // Bilinear (the default) over a constant image with a fill hole: the hole's 0 is not blended into its
  // neighbours (they stay the constant's dB), and the hole is NaN.
  std::fill(s1.data.begin(), s1.data.end(), 0.05f);
  for (int b = 0; b < 2; ++b)
    for (int y = 10; y < 14; ++y)
      for (int x = 10; x < 14; ++x) s1.data[(size_t(b) * 30 + size_t(y)) * 40 + size_t(x)] = 0.f;
  data::write_geotiff(d / "s1_hole.tif", s1, f32);
  const AppResult hole = run_program("/bin/bash", {script, d / "s1_hole.tif", d / "scene.tif", d / "hole_db.tif"});
  REQUIRE_MESSAGE(hole.exit_code == 0, hole.output);
  size_t blended = 0, holes = 0;
  for (float v : data::read_geotiff(d / "hole_db.tif").data) {
    if (std::isnan(v)) ++holes;
    else blended += std::abs(v - 10.f * std::log10(0.05f)) > 1e-4f;
  }
  CHECK(blended == 0);
  CHECK(holes > 0);
  // A Sentinel-2 image that is not north up: said, not a silent exit.
  data::Raster rotated = s2;
  rotated.geo.pixel_scale.clear();
  rotated.geo.tiepoints.clear();
  rotated.geo.transformation = {8, 6, 0, 600000, 6, -8, 0, 5000040, 0, 0, 0, 0, 0, 0, 0, 1};
  data::write_geotiff(d / "rotated.tif", rotated, data::WriteOptions{});
  const AppResult rot = run_program("/bin/bash", {script, d / "s1_power.tif", d / "rotated.tif", d / "r.tif"});
  CHECK(rot.exit_code == 1);
  CHECK_MESSAGE(rot.output.find("no north-up georeferencing") != std::string::npos, rot.output);
}
