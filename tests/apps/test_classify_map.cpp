// test_classify_map.cpp: classify --map-dir, the land-cover map of an image's tiles: each pixel the
// class of the tile it stands for (computed here from the model's own forward, tile by tile), 255 for
// a tile without data, on the image's grid coarsened by the tile (data::coarsened_geo); and the
// refusals (another --classify mode, two images of one file stem).
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "apps/common/experiment.h"
#include "data/geotiff.h"
#include "data/sentinel2.h"
#include "engine/autograd.h"
#include "models/model_io.h"
#include "tests/apps/app_runner.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;
namespace fs = std::filesystem;

namespace {

// A 13-band image in SEN12MS order (its descriptions say so), each 64 x 64 tile at its own brightness so
// that a random classifier tells some of them apart; georeferenced (UTM 32N, 10 m pixels).
data::Raster tiled_image(int h, int w, Rng& rng) {
  data::Raster r;
  r.height = h, r.width = w, r.bands = 13;
  r.data.resize(size_t(13) * size_t(h) * size_t(w));
  for (int b = 0; b < 13; ++b)
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        r.data[(size_t(b) * size_t(h) + size_t(y)) * size_t(w) + size_t(x)] =
            float(200 + 900 * ((y / 64 + 2 * (x / 64) + b) % 7) + int(rng.below(300)));
  for (int b = 0; b < 13; ++b) r.band_names.emplace_back(data::kS2BandNames[size_t(b)]);
  r.geo.pixel_scale = {10, 10, 0};
  r.geo.tiepoints = {0, 0, 0, 500000, 6000000, 0};
  r.geo.geokeys = {1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32632};
  return r;
}

}  // namespace

TEST_CASE("classify --map-dir: one pixel per tile holds that tile's class, on the image's grid coarsened") {
  TempDir d("classify_map");
  Rng rng(11);
  models::ResNetConfig rc;
  rc.block = models::BlockType::Basic;
  rc.blocks = {1, 1, 1, 1};
  rc.width = 4;
  models::Model m = models::build_model(models::ModelConfig::of(rc), rng);
  // Standardised around the tiles' middle brightness with a small spread, so that the tiles' levels
  // (200 to 5,600 DN) reach the classifier as large differences.
  m.classifier->set_input_norm(std::vector<float>(13, 0.3f), std::vector<float>(13, 0.02f));
  const std::string ckpt = d / "clf.safetensors";
  models::save_model(ckpt, m);
  // 130 x 200: tiles at rows 0, 64, 66 and columns 0, 64, 128, 136 (the last flush with the edge).
  data::Raster img = tiled_image(130, 200, rng);
  // The tile at row 64, column 128 without data (nodata 0 in every band): 255 in the map.
  img.nodata = 0.0;
  for (int b = 0; b < 13; ++b)
    for (int y = 64; y < 128; ++y)
      for (int x = 128; x < 192; ++x) img.data[(size_t(b) * 130 + size_t(y)) * 200 + size_t(x)] = 0.f;
  data::write_geotiff(d / "scene.tif", img, data::WriteOptions{});
  data::Raster small = tiled_image(64, 64, rng);
  data::write_geotiff(d / "tile.tif", small, data::WriteOptions{});
  AppResult r = run_app("classify", {"--weights", ckpt, "--out", d / "p.csv", "--map-dir", d / "maps", "--threads",
                                     "1", "--batch-size", "5", d / "scene.tif", d / "tile.tif"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  CHECK_MESSAGE(r.output.find("1 maps of tile classes") != std::string::npos, r.output);
  CHECK_FALSE(fs::exists(d / "maps/tile_classes.tif"));  // one tile: the CSV says it all

  const data::Raster map = data::read_geotiff(d / "maps/scene_classes.tif");
  REQUIRE(map.width == 4);
  REQUIRE(map.height == 3);
  CHECK(map.type == data::SampleType::UInt8);
  CHECK(map.nodata == 255.0);
  // Each tile's class from the model's forward on that tile alone (the file's DN, SEN12MS order).
  const std::vector<std::pair<int, int>> corners = apps::classify_crops(130, 200, apps::ClassifyMode::Tiles, 64);
  REQUIRE(corners.size() == 12);
  NoGradGuard ng;
  m.classifier->eval();
  std::set<float> seen;
  for (size_t k = 0; k < corners.size(); ++k) {
    const auto [y0, x0] = corners[k];
    CAPTURE(y0);
    CAPTURE(x0);
    const float got = map.data[k];  // row-major: the corners' order
    if (y0 == 64 && x0 == 128) {
      CHECK(got == 255.f);
      continue;
    }
    std::vector<float> tile(size_t(13) * 64 * 64);
    for (int b = 0; b < 13; ++b)
      for (int y = 0; y < 64; ++y)
        std::copy_n(img.data.begin() + ptrdiff_t((size_t(b) * 130 + size_t(y0 + y)) * 200 + size_t(x0)), 64,
                    tile.begin() + ptrdiff_t((size_t(b) * 64 + size_t(y)) * 64));
    const std::vector<float> p = m.classifier->probabilities(Tensor::from_vector({1, 13, 64, 64}, tile)).to_vector();
    CHECK(got == float(std::max_element(p.begin(), p.end()) - p.begin()));
    seen.insert(got);
  }
  REQUIRE_MESSAGE(seen.size() >= 2, "the tiles' classes must differ for the map's order to be tested");
  // The grid: 64 x 64 source pixels a map pixel, from the same corner.
  CHECK(map.geo.pixel_scale == std::vector<double>{640, 640, 0});
  CHECK(map.geo.tiepoints == img.geo.tiepoints);
  CHECK(map.geo.geokeys == img.geo.geokeys);
  CHECK(map.band_names == std::vector<std::string>{"class"});
  // --compress deflate: the same map, compressed.
  AppResult packed = run_app("classify", {"--weights", ckpt, "--out", d / "p2.csv", "--map-dir", d / "packed",
                                          "--threads", "1", "--compress", "deflate", d / "scene.tif"});
  REQUIRE_MESSAGE(packed.exit_code == 0, packed.output);
  CHECK(data::read_tiff_info(d / "packed/scene_classes.tif").compression == 8);
  CHECK(data::read_tiff_info(d / "packed/scene_classes.tif").predictor == 2);
  CHECK(data::read_geotiff(d / "packed/scene_classes.tif").data == map.data);
  AppResult no_maps = run_app("classify", {"--weights", ckpt, "--out", d / "p3.csv", "--compress", "deflate",
                                           d / "scene.tif"});
  CHECK(no_maps.exit_code == 2);
  CHECK_MESSAGE(no_maps.output.find("--compress applies to --map-dir's maps") != std::string::npos, no_maps.output);

  // Refused before any work: another mode, two images that would share a map.
  AppResult center = run_app("classify", {"--weights", ckpt, "--out", d / "c.csv", "--map-dir", d / "maps2",
                                          "--classify", "center", d / "scene.tif"});
  CHECK(center.exit_code == 2);
  CHECK_MESSAGE(center.output.find("--map-dir maps the tiles of --classify tiles") != std::string::npos,
                center.output);
  fs::create_directories(d / "other");
  fs::copy_file(d / "scene.tif", d / "other/scene.tif");
  AppResult twice = run_app("classify", {"--weights", ckpt, "--out", d / "t.csv", "--map-dir", d / "maps3",
                                         d / "scene.tif", d / "other/scene.tif"});
  CHECK(twice.exit_code == 2);
  CHECK_MESSAGE(twice.output.find("would both be mapped to") != std::string::npos, twice.output);
  CHECK_FALSE(fs::exists(d / "maps3"));
  CHECK_FALSE(fs::exists(d / "t.csv"));
  // The CSV over a map; the maps in the folder of the images (the next run would read them as images);
  // a file as the folder.
  AppResult csv_over_map = run_app("classify", {"--weights", ckpt, "--out", d / "maps4/scene_classes.tif",
                                                "--map-dir", d / "maps4", d / "scene.tif"});
  CHECK(csv_over_map.exit_code == 2);
  CHECK_MESSAGE(csv_over_map.output.find("--map-dir") != std::string::npos, csv_over_map.output);
  AppResult inside = run_app("classify", {"--weights", ckpt, "--out", d / "i.csv", "--map-dir", d / "other/maps",
                                          d / "other"});
  CHECK(inside.exit_code == 2);
  CHECK_MESSAGE(inside.output.find("lies in the input folder") != std::string::npos, inside.output);
  AppResult file = run_app("classify", {"--weights", ckpt, "--out", d / "f.csv", "--map-dir", d / "scene.tif",
                                        d / "other/scene.tif"});
  CHECK(file.exit_code == 2);
  CHECK_MESSAGE(file.output.find("is a file, not a folder") != std::string::npos, file.output);
}
