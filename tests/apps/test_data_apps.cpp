// test_data_apps.cpp: the data layer's two programs run as a user runs them.
//
//   make_synthetic: deterministic for a seed (byte-identical files), the real
//                   layouts, usage errors exit 2.
//   cloud_mask:     the written mask equals the detector run in-process, keeps
//                   the input's size and georeferencing, and bad input exits 1
//                   with a message naming the file.
//   raster_diff:    finds the largest difference and where it is, passes within
//                   --max and fails beyond it, on a lone NaN or another size.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <tiffio.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>

#include "data/cloud_detector.h"
#include "data/geotiff.h"
#include "data/sentinel2.h"
#include "tests/apps/app_runner.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;
namespace fs = std::filesystem;

namespace {
const char* kCloudyFixture = "sen12ms_cr/xufangchn+GLF-CR/data/s2_cloudy/ROIs1970_fall_139_p839.tif";
const char* kSarFixture = "sen12ms_cr/xufangchn+GLF-CR/data/s1/ROIs1970_fall_139_p839.tif";
}  // namespace

TEST_CASE("make_synthetic: the same seed writes the same bytes in the real layouts") {
  TempDir a("synth_a"), b("synth_b");
  const std::vector<std::string> args = {"--eurosat-per-class", "1", "--sen12mscr", "2", "--seed", "11"};
  auto with_out = [&](const std::string& out) {
    std::vector<std::string> v = {"--out", out};
    v.insert(v.end(), args.begin(), args.end());
    return v;
  };
  AppResult ra = run_app("make_synthetic", with_out(a.path.string()));
  REQUIRE_MESSAGE(ra.exit_code == 0, ra.output);
  REQUIRE(run_app("make_synthetic", with_out(b.path.string())).exit_code == 0);

  const std::vector<std::string> files = {
      "eurosat/AnnualCrop/AnnualCrop_1.tif", "eurosat/SeaLake/SeaLake_1.tif",
      "sen12mscr/ROIs1158_spring_s1/s1_1/ROIs1158_spring_s1_1_p1.tif",
      "sen12mscr/ROIs1158_spring_s2/s2_1/ROIs1158_spring_s2_1_p1.tif",
      "sen12mscr/ROIs1158_spring_s2_cloudy/s2_cloudy_1/ROIs1158_spring_s2_cloudy_1_p2.tif"};
  for (const std::string& f : files) {
    REQUIRE_MESSAGE(fs::exists(a / f), f);
    CHECK_MESSAGE(read_file(a / f) == read_file(b / f), f, " differs between two runs with the same seed");
  }
  data::TiffInfo s2 = data::read_tiff_info(a / files[3]);
  CHECK(s2.bands == 13);
  CHECK(s2.type == data::SampleType::UInt16);
  CHECK(s2.width == 256);
  data::TiffInfo s1 = data::read_tiff_info(a / files[2]);
  CHECK(s1.bands == 2);
  CHECK(s1.type == data::SampleType::Float32);
  data::TiffInfo tile = data::read_tiff_info(a / files[0]);
  CHECK((tile.width == 64 && tile.height == 64 && tile.bands == 13));

  TempDir c("synth_c");
  std::vector<std::string> other = with_out(c.path.string());
  other.back() = "12";  // another seed
  REQUIRE(run_app("make_synthetic", other).exit_code == 0);
  CHECK(read_file(a / files[3]) != read_file(c / files[3]));
  // Into a folder that already holds a set: refused (the two would mix), the set left as it was.
  const std::string before = read_file(a / files[3]);
  AppResult again = run_app("make_synthetic", other = with_out(a.path.string()));
  CHECK(again.exit_code == 2);
  CHECK_MESSAGE(again.output.find("already holds a data set") != std::string::npos, again.output);
  CHECK(read_file(a / files[3]) == before);

  CHECK(run_app("make_synthetic", {"--help"}).exit_code == 0);
  CHECK(run_app("make_synthetic", {"--out", c.path.string(), "--no-such-option"}).exit_code == 2);
  // --out naming a file: refused before any data is made (it used to fail only after generating it).
  const std::string file = c / files[3];
  AppResult onto = run_app("make_synthetic", {"--out", file, "--eurosat-per-class", "1"});
  CHECK(onto.exit_code == 2);
  CHECK_MESSAGE(onto.output.find("--out " + file + " is not a folder") != std::string::npos, onto.output);
  AppResult under = run_app("make_synthetic", {"--out", file + "/sub", "--eurosat-per-class", "1"});
  CHECK(under.exit_code == 1);
  CHECK_MESSAGE(under.output.find("cannot create the folder") != std::string::npos, under.output);
}

// --granule-nodata: a swath edge on the S2 scene (no data left of a diagonal, 0 DN with GDAL nodata
// 0), which cloud_mask then leaves out and marks 255, pixel for pixel.
TEST_CASE("make_synthetic: --granule-nodata gives the granule a swath edge that cloud_mask marks as nodata") {
  TempDir d("synth_swath");
  AppResult r = run_app("make_synthetic", {"--out", d.path.string(), "--granule", "300", "--granule-nodata", "120",
                                           "--threads", "1"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  const std::string s2_path = d / "granule/s2_cloudy.tif";
  const data::Raster s2 = data::read_geotiff(s2_path);
  CHECK(s2.nodata == std::optional<double>(0.0));
  CHECK_FALSE(data::read_tiff_info(d / "granule/s1.tif").nodata.has_value());  // SAR keeps its data
  const size_t hw = size_t(300) * 300;
  auto no_data = [&](int y, int x) {
    for (int c = 0; c < 13; ++c)
      if (s2.data[size_t(c) * hw + size_t(y) * 300 + size_t(x)] != 0.f) return false;
    return true;
  };
  size_t edge_pixels = 0, wrong = 0;
  for (int y = 0; y < 300; ++y) {
    const int edge = 120 - 120 * y / 300;  // 120 columns at the top, 1 at the bottom row
    for (int x = 0; x < 300; ++x) {
      wrong += no_data(y, x) != (x < edge);
      edge_pixels += x < edge;
    }
  }
  CHECK(wrong == 0);
  CHECK(edge_pixels > 0);
  AppResult m = run_app("cloud_mask", {"--s2", s2_path, "--out", d / "mask.tif"});
  REQUIRE_MESSAGE(m.exit_code == 0, m.output);
  const data::Raster mask = data::read_geotiff(d / "mask.tif");
  size_t marked = 0, marked_wrong = 0;
  for (int y = 0; y < 300; ++y)
    for (int x = 0; x < 300; ++x) {
      const bool nodata = mask.data[size_t(y) * 300 + size_t(x)] == 255.f;
      marked += nodata;
      marked_wrong += nodata != (x < 120 - 120 * y / 300);
    }
  CHECK(marked == edge_pixels);
  CHECK(marked_wrong == 0);
  CHECK(run_app("make_synthetic", {"--out", d / "other", "--granule-nodata", "5"}).exit_code == 2);
}

TEST_CASE("cloud_mask: writes the detector's 0/1 mask with the input's georeferencing") {
  const std::string input = real_fixture(kCloudyFixture);
  TempDir d("cloud_mask");
  const std::string out = d / "mask.tif";
  AppResult r = run_app("cloud_mask", {"--s2", input, "--out", out});
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  // Progress on stderr (lines, not a terminal here): the rows of each pass.
  CHECK_MESSAGE(r.output.find("cloud_mask statistics: 256/256 in ") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("cloud_mask detect: 256/256 in ") != std::string::npos, r.output);

  data::Raster s2 = data::read_geotiff(input);
  data::Raster mask = data::read_geotiff(out);
  CHECK(data::read_tiff_info(out).type == data::SampleType::UInt8);
  REQUIRE(mask.bands == 1);
  REQUIRE((mask.width == s2.width && mask.height == s2.height));
  const std::vector<float> want = data::cloud_shadow_mask(s2.data.data(), s2.bands, s2.height, s2.width);
  check_close(mask.data, want, 0, 0, "mask vs in-process detector");
  double ones = 0;
  for (float v : mask.data) ones += v;
  CHECK(ones > 0);  // this fixture is cloudy: an all-zero mask would mean nothing was written
  CHECK(mask.geo == s2.geo);  // georeferencing kept
  // In stripes of 40 rows (7 stripes, the last of 16; one row of 256 x 256 tiles): the same mask and file.
  AppResult striped = run_app("cloud_mask", {"--s2", input, "--out", d / "mask40.tif", "--stripe", "40"});
  REQUIRE_MESSAGE(striped.exit_code == 0, striped.output);
  CHECK(read_file(d / "mask40.tif") == read_file(out));
  // --compress deflate: the same mask, compressed (Deflate, GDAL's integer predictor).
  AppResult packed = run_app("cloud_mask", {"--s2", input, "--out", d / "deflate.tif", "--compress", "deflate"});
  REQUIRE_MESSAGE(packed.exit_code == 0, packed.output);
  CHECK(data::read_tiff_info(d / "deflate.tif").compression == 8);
  CHECK(data::read_tiff_info(d / "deflate.tif").predictor == 2);
  CHECK(fs::file_size(d / "deflate.tif") < fs::file_size(out) / 4);  // a mask is mostly runs
  check_close(data::read_geotiff(d / "deflate.tif").data, want, 0, 0, "the deflated mask");
  AppResult bad = run_app("cloud_mask", {"--s2", input, "--out", d / "x.tif", "--compress", "zstd"});
  CHECK(bad.exit_code == 2);
  // A file stored in strips of 100 rows: stripes of whole strips (none decoded for every stripe), said.
  data::WriteOptions strips;
  strips.type = data::read_tiff_info(input).type;
  strips.rows_per_strip = 100;
  data::write_geotiff(d / "strips100.tif", s2, strips);
  REQUIRE(data::read_tiff_info(d / "strips100.tif").block_rows == 100);
  AppResult tall = run_app("cloud_mask", {"--s2", d / "strips100.tif", "--out", d / "mask100.tif", "--stripe", "40"});
  REQUIRE_MESSAGE(tall.exit_code == 0, tall.output);
  CHECK_MESSAGE(tall.output.find("--stripe 40 raised to 100 rows") != std::string::npos, tall.output);
  CHECK(read_file(d / "mask100.tif") == read_file(out));
  // The scene tiled 4 x 4 (1024 x 1024) and stored as float32 in one deflated strip (54.5 MB decoded, so
  // decoded a row at a time): stripes of 40 rows as asked, not the whole image, and the mask of the
  // same pixels stored in ordinary strips.
  data::Raster big = s2;
  big.width = big.height = 4 * s2.width;
  big.data.assign(size_t(big.bands) * size_t(big.width) * size_t(big.height), 0.f);
  for (int b = 0; b < big.bands; ++b)
    for (int y = 0; y < big.height; ++y)
      for (int x = 0; x < big.width; ++x)
        big.band(b)[size_t(y) * size_t(big.width) + size_t(x)] =
            s2.band(b)[size_t(y % s2.height) * size_t(s2.width) + size_t(x % s2.width)];
  data::WriteOptions one;
  one.type = data::SampleType::Float32;
  one.deflate = true;
  one.rows_per_strip = big.height;
  data::write_geotiff(d / "one_strip.tif", big, one);
  REQUIRE(data::TiffReader(d / "one_strip.tif").by_rows());
  data::WriteOptions plain_strips;
  plain_strips.type = data::SampleType::Float32;
  data::write_geotiff(d / "plain.tif", big, plain_strips);
  AppResult by_rows = run_app("cloud_mask", {"--s2", d / "one_strip.tif", "--out", d / "mask_rows.tif", "--stripe", "40"});
  REQUIRE_MESSAGE(by_rows.exit_code == 0, by_rows.output);
  CHECK_MESSAGE(by_rows.output.find("raised to") == std::string::npos, by_rows.output);
  AppResult plain = run_app("cloud_mask", {"--s2", d / "plain.tif", "--out", d / "mask_plain.tif"});
  REQUIRE_MESSAGE(plain.exit_code == 0, plain.output);
  CHECK(read_file(d / "mask_rows.tif") == read_file(d / "mask_plain.tif"));
  // The same scene stored in EuroSAT's order (B8A last), saying so in its band descriptions: the same
  // mask. (The detector reads B10 and B11 by position; it used to take them from B9 and B10 here.)
  data::Raster eu = s2;
  eu.data = data::reorder_bands(s2.data, size_t(s2.width) * size_t(s2.height), data::sen12ms_bands(),
                                data::eurosat_bands(), input);
  eu.band_names.clear();
  for (int b : data::eurosat_bands()) eu.band_names.emplace_back(data::kS2BandNames[size_t(b)]);
  data::WriteOptions wo;
  wo.type = data::read_tiff_info(input).type;
  data::write_geotiff(d / "eurosat_order.tif", eu, wo);
  AppResult reordered = run_app("cloud_mask", {"--s2", d / "eurosat_order.tif", "--out", d / "mask_eu.tif"});
  REQUIRE_MESSAGE(reordered.exit_code == 0, reordered.output);
  check_close(data::read_geotiff(d / "mask_eu.tif").data, want, 0, 0, "the EuroSAT-order file's mask");
  // A pipe as --out: a usage error before any work (renaming the mask over a device replaced it with a
  // plain file), the pipe left as it was.
  const std::string fifo = d / "fifo.tif";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  AppResult pipe = run_app("cloud_mask", {"--s2", input, "--out", fifo});
  CHECK(pipe.exit_code == 2);
  CHECK_MESSAGE(pipe.output.find("--out " + fifo + " is a device or a pipe") != std::string::npos, pipe.output);
  CHECK(fs::is_fifo(fifo));
}

// A scene whose left 48 columns are the file's nodata value (0 in every band, a swath's edge): those
// pixels are 255 in the mask, which says 255 is its nodata value; the rest is the detector's mask with
// the shadow thresholds taken over the pixels with data only (they move: the zeros were the minimum).
TEST_CASE("cloud_mask: nodata pixels are left out of the thresholds and marked 255") {
  const std::string input = real_fixture(kCloudyFixture);
  TempDir d("cloud_mask_nodata");
  data::Raster s2 = data::read_geotiff(input);
  const int H = s2.height, W = s2.width;
  const size_t hw = size_t(H) * size_t(W);
  std::vector<uint8_t> valid(hw, 1);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < 48; ++x) {
      valid[size_t(y * W + x)] = 0;
      for (int c = 0; c < s2.bands; ++c) s2.data[size_t(c) * hw + size_t(y * W + x)] = 0.f;
    }
  s2.nodata = 0.0;
  data::WriteOptions wo;
  wo.type = data::read_tiff_info(input).type;
  data::write_geotiff(d / "edge.tif", s2, wo);
  AppResult r = run_app("cloud_mask", {"--s2", d / "edge.tif", "--out", d / "mask.tif"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  CHECK_MESSAGE(r.output.find("(of the " + std::to_string(hw - size_t(48 * H)) + " pixels with data; nodata: " +
                              std::to_string(48 * H) + ")") != std::string::npos,
                r.output);
  const data::Raster mask = data::read_geotiff(d / "mask.tif");
  CHECK(mask.nodata == std::optional<double>(255.0));
  data::CloudDetectorOptions o;
  o.valid = valid.data();
  const data::CloudShadowMasks with = data::detect_clouds(s2, o), without = data::detect_clouds(s2);
  CHECK(with.shadow_csi_threshold != without.shadow_csi_threshold);  // the zeros no longer count
  const std::vector<float> bin = with.binary();
  size_t wrong = 0;
  for (size_t q = 0; q < hw; ++q) wrong += mask.data[q] != (valid[q] ? bin[q] : 255.f);
  CHECK(wrong == 0);
  // In stripes of 16 rows (the thresholds still the whole scene's): the same mask.
  AppResult striped = run_app("cloud_mask", {"--s2", d / "edge.tif", "--out", d / "mask16.tif", "--stripe", "16"});
  REQUIRE_MESSAGE(striped.exit_code == 0, striped.output);
  CHECK(data::read_geotiff(d / "mask16.tif").data == mask.data);
  // A NaN nodata value: a pixel NaN in any band has no data (a swath's edge differs a little per band).
  data::Raster f = s2;
  for (size_t q = 0; q < hw; ++q)
    if (!valid[q])
      for (int c = 0; c < f.bands; ++c) f.data[size_t(c) * hw + q] = NAN;
  f.data[size_t(3) * hw + size_t(10 * W + 48)] = NAN;  // one more pixel, NaN in band 3 only
  valid[size_t(10 * W + 48)] = 0;
  f.nodata = std::nan("");
  data::WriteOptions f32;
  f32.type = data::SampleType::Float32;
  data::write_geotiff(d / "nan_edge.tif", f, f32);
  AppResult nan_run = run_app("cloud_mask", {"--s2", d / "nan_edge.tif", "--out", d / "mask_nan.tif"});
  REQUIRE_MESSAGE(nan_run.exit_code == 0, nan_run.output);
  const data::Raster mask_nan = data::read_geotiff(d / "mask_nan.tif");
  CHECK(mask_nan.data[size_t(10 * W + 48)] == 255.f);
  size_t nan_marked = 0;
  for (size_t q = 0; q < hw; ++q) nan_marked += (mask_nan.data[q] == 255.f) == !valid[q];
  CHECK(nan_marked == hw);
  // Nodata everywhere: nothing to detect, an error naming the file.
  std::fill(s2.data.begin(), s2.data.end(), 0.f);
  data::write_geotiff(d / "empty.tif", s2, wo);
  AppResult empty = run_app("cloud_mask", {"--s2", d / "empty.tif", "--out", d / "m2.tif"});
  CHECK(empty.exit_code == 1);
  CHECK_MESSAGE(empty.output.find("empty.tif: every pixel is the nodata value 0") != std::string::npos, empty.output);
  CHECK_FALSE(fs::exists(d / "m2.tif"));
}

TEST_CASE("cloud_mask: missing file, wrong band count and usage errors") {
  TempDir d("cloud_mask_err");
  AppResult missing = run_app("cloud_mask", {"--s2", d / "nope.tif", "--out", d / "m.tif"});
  CHECK(missing.exit_code == 1);
  CHECK(missing.output.find("nope.tif") != std::string::npos);
  AppResult sar = run_app("cloud_mask", {"--s2", real_fixture(kSarFixture), "--out", d / "m.tif"});
  CHECK(sar.exit_code == 1);
  CHECK(sar.output.find("ROIs1970_fall_139_p839.tif") != std::string::npos);
  CHECK(!fs::exists(d / "m.tif"));  // nothing half-written
  CHECK(run_app("cloud_mask", {"--help"}).exit_code == 0);
  CHECK(run_app("cloud_mask", {"--s2"}).exit_code == 2);
  // --cloud-threshold (the other apps' name) and --threshold (this app's first) are one option.
  const std::string input = real_fixture(kCloudyFixture);
  AppResult a = run_app("cloud_mask", {"--s2", input, "--out", d / "a.tif", "--cloud-threshold", "0.3"});
  AppResult b = run_app("cloud_mask", {"--s2", input, "--out", d / "b.tif", "--threshold", "0.3"});
  AppResult c = run_app("cloud_mask", {"--s2", input, "--out", d / "c.tif"});
  REQUIRE((a.exit_code == 0 && b.exit_code == 0 && c.exit_code == 0));
  CHECK(read_file(d / "a.tif") == read_file(d / "b.tif"));
  CHECK(read_file(d / "a.tif") != read_file(d / "c.tif"));  // 0.3 is not the default 0.2
  AppResult both = run_app("cloud_mask", {"--s2", input, "--out", d / "x.tif", "--threshold", "0.3",
                                          "--cloud-threshold", "0.4"});
  CHECK(both.exit_code == 2);
  CHECK_MESSAGE(both.output.find("are one option") != std::string::npos, both.output);
}

TEST_CASE("cloud_mask and classify: a NaN pixel in the input is an error naming the file, not a silent result") {
  // One NaN once changed cloud_mask's shadow fraction from 0.26 to 0 and made classify write NaN
  // probabilities, both with exit 0. A float32 13-band tile with one NaN: both refuse it, name the
  // file and where the value is, and write nothing.
  TempDir d("nan_input");
  data::Raster r;
  r.width = 16, r.height = 16, r.bands = 13;
  r.type = data::SampleType::Float32;
  r.data.assign(size_t(13 * 16 * 16), 1200.f);
  r.data[size_t(2 * 256 + 5 * 16 + 7)] = NAN;  // band 3, row 5, column 7
  const std::string tif = d / "nan.tif";
  data::WriteOptions wo;
  wo.type = data::SampleType::Float32;
  data::write_geotiff(tif, r, wo);
  AppResult mask = run_app("cloud_mask", {"--s2", tif, "--out", d / "m.tif"});
  CHECK(mask.exit_code == 1);
  CHECK(mask.output.find("nan.tif: 1 of 3328 values are NaN or infinite (the first in band 3, row 5, column 7)") !=
        std::string::npos);
  CHECK(!fs::exists(d / "m.tif"));
  AppResult cls = run_app("classify", {"--weights", fixture("models_resnet_basic.safetensors"), "--out",
                                       d / "p.csv", tif});
  CHECK(cls.exit_code == 1);
  CHECK(cls.output.find("nan.tif: 1 of 3328 values are NaN or infinite") != std::string::npos);
  CHECK(!fs::exists(d / "p.csv"));
}

TEST_CASE("cloud_mask, classify and remove_clouds refuse an output that names one of their inputs") {
  // `cloud_mask --s2 a.tif --out a.tif` once replaced the image by its mask with exit 0; classify's
  // --out could replace an image or its own --weights, remove_clouds' its --s2 or --s1. Now a usage
  // error (exit 2) naming both options, and the input is unchanged, also through another spelling.
  TempDir d("out_over_in");
  data::Raster r;
  r.width = 16, r.height = 16, r.bands = 13;
  r.data.assign(size_t(13 * 16 * 16), 1200.f);
  const std::string tif = d / "a.tif", alias = (d.path / "sub" / ".." / "a.tif").string();
  fs::create_directories(d.path / "sub");
  data::write_geotiff(tif, r, data::WriteOptions{});
  const std::string before = read_file(tif);
  AppResult mask = run_app("cloud_mask", {"--s2", tif, "--out", alias});
  CHECK(mask.exit_code == 2);
  CHECK(mask.output.find("is also --s2 (an input): refusing to overwrite it") != std::string::npos);
  const std::string weights = d / "w.safetensors";
  fs::copy_file(fixture("models_resnet_basic.safetensors"), weights);
  AppResult cls = run_app("classify", {"--weights", weights, "--out", tif, tif});
  CHECK(cls.exit_code == 2);
  CHECK(cls.output.find("is also an input image") != std::string::npos);
  AppResult cls_w = run_app("classify", {"--weights", weights, "--out", weights, tif});
  CHECK(cls_w.exit_code == 2);
  CHECK(cls_w.output.find("is also --weights") != std::string::npos);
  AppResult rc = run_app("remove_clouds",
                         {"--weights", fixture("models_dsen2cr_nosar.safetensors"), "--s2", tif, "--out", tif});
  CHECK(rc.exit_code == 2);
  CHECK(rc.output.find("is also --s2") != std::string::npos);
  CHECK(read_file(tif) == before);
  CHECK(read_file(weights) == read_file(fixture("models_resnet_basic.safetensors")));
}

// raster_diff reads both files in stripes (whole strips of both: here 2 and 3 rows, so stripes of 6,
// 12, ... rows): whatever --stripe says, the same answer as one pass over the whole images, computed
// here. The largest difference is tied between bands 3 and 2 (band 2's first, in a later stripe than
// band 3's), and band 1 has a larger-looking value that is NaN in both files.
TEST_CASE("raster_diff: stripes of any height give the whole images' answer") {
  TempDir d("raster_diff_stripes");
  data::Raster a;
  a.bands = 3, a.height = 23, a.width = 37;
  for (size_t i = 0; i < size_t(3 * 23 * 37); ++i) a.data.push_back(float(i * 7919 % 1000) / 8.f);
  data::Raster b = a;
  const auto at = [&](int c, int y, int x) { return size_t(c) * 23 * 37 + size_t(y) * 37 + size_t(x); };
  b.data[at(2, 1, 5)] += 4.5f;   // band 3, first stripe
  b.data[at(1, 20, 30)] += 4.5f;  // band 2, last stripe: the same difference, first in band-major order
  b.data[at(1, 9, 2)] -= 2.f;
  b.data[at(0, 7, 7)] += 1.f;
  a.data[at(0, 12, 12)] = b.data[at(0, 12, 12)] = NAN;  // equal
  b.data[at(0, 3, 4)] = NAN;                              // a mismatch
  data::WriteOptions sa, sb;
  sa.type = sb.type = data::SampleType::Float32;
  sa.rows_per_strip = 2, sb.rows_per_strip = 3;
  data::write_geotiff(d / "a.tif", a, sa);
  data::write_geotiff(d / "b.tif", b, sb);
  // The whole-image answer, band-major, the first largest difference kept.
  double worst = 0;
  size_t where = 0, differ = 0, nan_mismatch = 0;
  for (size_t i = 0; i < a.data.size(); ++i) {
    const float x = a.data[i], y = b.data[i];
    if (std::isnan(x) || std::isnan(y)) {
      nan_mismatch += std::isnan(x) != std::isnan(y);
      continue;
    }
    const double diff = std::fabs(double(x) - double(y));
    differ += diff != 0;
    if (diff > worst) worst = diff, where = i;
  }
  REQUIRE(where == at(1, 20, 30));
  const std::string want = str("\"max_abs_diff\":4.5,\"bound_max\":5,\"at_band\":2,\"at_row\":20,\"at_col\":30,",
                               "\"values_differing\":", differ, ",\"values\":2553,\"nan_mismatches\":", nan_mismatch,
                               ",\"width\":37,\"height\":23,\"bands\":3}");
  CHECK(differ == 4);
  CHECK(nan_mismatch == 1);
  for (const char* stripe : {"1", "5", "6", "7", "13", "23", "1000"}) {
    CAPTURE(stripe);
    AppResult r = run_app("raster_diff", {d / "a.tif", d / "b.tif", "--max", "5", "--stripe", stripe});
    CHECK(r.exit_code == 1);  // the NaN mismatch
    CHECK_MESSAGE(r.output.find(want) != std::string::npos, r.output);
  }
  CHECK(run_app("raster_diff", {d / "a.tif", d / "b.tif", "--stripe", "0"}).exit_code == 2);
  // A stripe that cannot be read after others were compared: exit 3 ("could not look"), naming the file.
  sb.deflate = true;
  data::write_geotiff(d / "broken.tif", b, sb);
  {
    TIFF* t = TIFFOpen((d / "broken.tif").c_str(), "r+");
    REQUIRE(t != nullptr);
    const uint32_t last = TIFFNumberOfStrips(t) - 1;
    const uint64_t offset = TIFFGetStrileOffset(t, last), count = TIFFGetStrileByteCount(t, last);
    TIFFClose(t);
    std::fstream f(d / "broken.tif", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(offset));
    for (uint64_t k = 0; k < count; ++k) f.put(char(0xA5));  // no longer a zlib stream
  }
  AppResult broken = run_app("raster_diff", {d / "a.tif", d / "broken.tif", "--stripe", "1"});
  CHECK(broken.exit_code == 3);
  CHECK(broken.output.find("raster_diff: stopped at 18/23") != std::string::npos);  // three stripes compared
  CHECK_MESSAGE(broken.output.find("cannot compare: geotiff: " + d / "broken.tif: cannot decode strip 7") != std::string::npos, broken.output);
}

TEST_CASE("raster_diff: the largest difference and where it is, within --max or not, NaN and size mismatches") {
  TempDir d("raster_diff");
  data::Raster r;
  r.bands = 2, r.height = 4, r.width = 5;
  for (int i = 0; i < 40; ++i) r.data.push_back(float(i * 7 % 11));
  data::WriteOptions f32;
  f32.type = data::SampleType::Float32;
  data::write_geotiff(d / "a.tif", r, f32);
  data::write_geotiff(d / "same.tif", r, f32);
  data::Raster moved = r;
  moved.data[20 + 2 * 5 + 3] += 3;  // band 2, row 2, column 3
  moved.data[4] -= 1;
  data::write_geotiff(d / "moved.tif", moved, f32);
  AppResult same = run_app("raster_diff", {d / "a.tif", d / "same.tif", "--case", "t"});
  CHECK_MESSAGE(same.exit_code == 0, same.output);
  CHECK(same.output.find("\"case\":\"t\",\"impl\":\"nimbus\",\"ok\":true,\"max_abs_diff\":0,") != std::string::npos);
  AppResult over = run_app("raster_diff", {d / "a.tif", d / "moved.tif", "--max", "2"});
  CHECK(over.exit_code == 1);
  CHECK_MESSAGE(over.output.find("\"ok\":false,\"max_abs_diff\":3,\"bound_max\":2,\"at_band\":2,\"at_row\":2,"
                                 "\"at_col\":3,\"values_differing\":2,\"values\":40,") != std::string::npos,
                over.output);
  CHECK(run_app("raster_diff", {d / "a.tif", d / "moved.tif", "--max", "3"}).exit_code == 0);
  data::Raster nan = r;
  nan.data[7] = NAN;
  data::write_geotiff(d / "nan.tif", nan, f32);
  AppResult lone = run_app("raster_diff", {d / "a.tif", d / "nan.tif", "--max", "100"});
  CHECK(lone.exit_code == 1);
  CHECK(lone.output.find("\"nan_mismatches\":1,") != std::string::npos);
  CHECK(run_app("raster_diff", {d / "nan.tif", d / "nan.tif"}).exit_code == 0);  // NaN in both places: equal
  data::Raster wide = r;
  wide.width = 10, wide.bands = 1;
  data::write_geotiff(d / "wide.tif", wide, f32);
  // Files that cannot be compared exit 3, not 1: a script tells "differ" from "could not look".
  AppResult size = run_app("raster_diff", {d / "a.tif", d / "wide.tif"});
  CHECK(size.exit_code == 3);
  CHECK_MESSAGE(size.output.find("cannot compare: " + d / "wide.tif is 10x4 with 1 bands, but") != std::string::npos,
                size.output);
  CHECK(run_app("raster_diff", {d / "a.tif"}).exit_code == 2);
  AppResult missing = run_app("raster_diff", {d / "a.tif", d / "missing.tif"});
  CHECK(missing.exit_code == 3);
  CHECK_MESSAGE(missing.output.find("missing.tif") != std::string::npos, missing.output);
}
