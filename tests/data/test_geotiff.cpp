// test_geotiff.cpp: the GeoTIFF reader against rasterio/tifffile on every
// fixture file (expected values in tests/fixtures/geotiff/expected.json, made by
// tests/torch/gen_expected_geotiff.py), window reads, write->read round trips
// for every type and layout, sparse files (blocks not stored), TiffReader's
// decoding of large compressed strips a row at a time, and clear errors for bad files.
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <tiffio.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "data/geotiff.h"
#include "engine/io/input_files.h"
#include "engine/io/temp_files.h"
#include "engine/io/json.h"
#include "tests/common/check.h"
#include "tests/common/child.h"
#include "tests/data/data_test_util.h"

// Whether AddressSanitizer is on (g++ says so one way, clang another).
#if defined(__SANITIZE_ADDRESS__)
#define NIMBUS_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NIMBUS_TEST_ASAN 1
#endif
#endif
#ifndef NIMBUS_TEST_ASAN
#define NIMBUS_TEST_ASAN 0
#endif

using namespace nimbus;
using namespace nimbus::data;
using namespace nimbus::test;

namespace {

const json::Value& expected_files() {
  static json::Value v = json::parse(slurp(fixture("geotiff/expected.json")));
  const json::Value* files = v.get("files");
  REQUIRE(files != nullptr);
  return *files;
}

std::vector<double> nums(const json::Value& a) {
  std::vector<double> out;
  for (auto& x : a.arr) out.push_back(x.num);
  return out;
}

// (key in expected.json, path on disk) for every .tif the tests must cover: each real file that
// expected.json describes and the repository carries (tests/fixtures/real/PROVENANCE.md says which
// are left out), and our own GDAL-written layouts.
std::vector<std::pair<std::string, std::string>> all_fixture_tifs() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [key, value] : expected_files().obj) {
    if (!key.starts_with("fixtures/")) continue;
    if (!key.starts_with("fixtures/real/") || !has_real_fixture(real_rel(key))) {
      MESSAGE("skipped: ", key, " is not carried by the repository");
      continue;
    }
    out.push_back({key, real_fixture(real_rel(key))});
  }
  for (auto& p : glob_files(fixture("geotiff"), ".tif"))
    out.push_back({"tests/fixtures/geotiff/" + fs::path(p).filename().string(), p});
  return out;
}

const char* real_s2 = "sen12ms_cr/xufangchn+GLF-CR/data/s2_cloudy/ROIs1970_fall_139_p839.tif";

}  // namespace

TEST_CASE("geotiff: every fixture file reads exactly what rasterio reads") {
  auto files = all_fixture_tifs();
  CHECK(files.size() >= 27 + 11);  // the 27 real files carried + our 11 GDAL-written layouts
  for (auto& [key, path] : files) {
    CAPTURE(key);
    const json::Value* e = expected_files().get(key);
    REQUIRE_MESSAGE(e != nullptr, "no expected values for ", key, ": rerun tests/torch/gen_expected_geotiff.py");
    TiffInfo info = read_tiff_info(path);
    CHECK(info.width == int(e->get("width")->num));
    CHECK(info.height == int(e->get("height")->num));
    CHECK(info.bands == int(e->get("bands")->num));
    CHECK(std::string(sample_type_name(info.type)) == e->get("dtype")->s);
    CHECK(info.tiled == e->get("tiled")->b);
    CHECK(info.planar_separate == e->get("planar_separate")->b);
    CHECK(info.compression == int(e->get("compression")->num));

    Raster r = read_geotiff(path);
    REQUIRE(r.bands == info.bands);
    const size_t hw = size_t(r.width) * r.height;
    std::vector<double> mn, mx, mean;
    for (int c = 0; c < r.bands; ++c) {
      const float* b = r.band(c);
      double lo = b[0], hi = b[0], sum = 0;
      for (size_t i = 0; i < hw; ++i) lo = std::min(lo, double(b[i])), hi = std::max(hi, double(b[i])), sum += b[i];
      mn.push_back(lo), mx.push_back(hi), mean.push_back(sum / double(hw));
    }
    check_close(mn, nums(*e->get("min")), 0, 0, key + " min");
    check_close(mx, nums(*e->get("max")), 0, 0, key + " max");
    check_close(mean, nums(*e->get("mean")), 1e-9, 1e-9, key + " mean");
    for (auto& px : e->get("pixels")->arr) {
      int row = int(px.get("row")->num), col = int(px.get("col")->num);
      std::vector<double> got;
      for (int c = 0; c < r.bands; ++c) got.push_back(r.band(c)[size_t(row) * r.width + col]);
      check_close(got, nums(*px.get("values")), 0, 0, str(key, " pixel (", row, ",", col, ")"));
    }

    // GeoTIFF tags, compared with tifffile's raw values.
    const json::Value* tags = e->get("tags");
    auto tag = [&](const char* k) { return tags->get(k) ? nums(*tags->get(k)) : std::vector<double>{}; };
    check_close(r.geo.pixel_scale, tag("pixel_scale"), 0, 0, key + " pixel scale");
    check_close(r.geo.tiepoints, tag("tiepoints"), 0, 0, key + " tiepoints");
    check_close(r.geo.transformation, tag("transformation"), 0, 0, key + " transformation");
    check_close(r.geo.geo_double_params, tag("geo_double_params"), 0, 0, key + " double params");
    check_close(std::vector<double>(r.geo.geokeys.begin(), r.geo.geokeys.end()), tag("geokeys"), 0, 0, key + " keys");
    CHECK(r.geo.geo_ascii_params == (tags->get("geo_ascii_params") ? tags->get("geo_ascii_params")->s : ""));
    CHECK(r.geo.present());

    // A window: its values and its shifted origin, against rasterio's window_transform.
    const json::Value* w = e->get("window");
    Window win{int(w->get("x0")->num), int(w->get("y0")->num), int(w->get("width")->num), int(w->get("height")->num)};
    Raster rw = read_geotiff(path, win);
    REQUIRE(rw.width == win.width);
    REQUIRE(rw.height == win.height);
    std::vector<double> wmean, first;
    for (int c = 0; c < rw.bands; ++c) {
      double sum = 0;
      for (size_t i = 0; i < size_t(win.width) * win.height; ++i) sum += rw.band(c)[i];
      wmean.push_back(sum / (double(win.width) * win.height));
      first.push_back(rw.band(c)[0]);
    }
    check_close(wmean, nums(*w->get("mean")), 1e-9, 1e-9, key + " window mean");
    check_close(first, nums(*w->get("first")), 0, 0, key + " window first pixel");
    REQUIRE(rw.geo.tiepoints.size() == 6);
    check_close(std::vector<double>{rw.geo.tiepoints[3], rw.geo.tiepoints[4]}, nums(*w->get("origin")), 1e-6, 0,
                key + " window origin");
  }
}

TEST_CASE("geotiff: a window reads only the strips it touches") {
  TempDir tmp;
  const std::string src = real_fixture(real_s2);  // 256 strips of one row each
  std::string bytes = slurp(src);
  const std::string cut = tmp / "half.tif";
  spit(cut, bytes.substr(0, bytes.size() / 2));  // rows >= ~128 are gone
  Window top{30, 10, 100, 60};
  Raster want = read_geotiff(src, top);
  Raster got = read_geotiff(cut, top);
  check_close(got.data, want.data, 0, 0, "window from the truncated file");
  Raster full = read_geotiff(src);
  for (int c = 0; c < 13; ++c)
    for (int y = 0; y < top.height; ++y)
      for (int x = 0; x < top.width; ++x)
        REQUIRE(got.band(c)[y * top.width + x] == full.band(c)[(y + top.y0) * 256 + x + top.x0]);
  // Reading rows that are gone fails, naming the file.
  CHECK_THROWS_WITH_AS(read_geotiff(cut), doctest::Contains(cut.c_str()), Error);
  CHECK_THROWS_WITH_AS(read_geotiff(cut, Window{0, 200, 10, 10}), doctest::Contains("strip"), Error);
}

TEST_CASE("geotiff: write -> read round trip for every type and layout") {
  TempDir tmp;
  struct TypeCase {
    SampleType type;
    double lo, hi;
  };
  const TypeCase types[] = {{SampleType::UInt8, 0, 255},
                            {SampleType::UInt16, 0, 65535},
                            {SampleType::Int16, -32768, 32767},
                            {SampleType::Float32, -35, 10000},
                            {SampleType::Int8, -128, 127},
                            {SampleType::UInt32, 0, 4294967295.0},  // values past 2^24: float32's, written exactly
                            {SampleType::Int32, -2147483648.0, 2147483647.0},
                            {SampleType::Float64, -35, 10000}};
  struct Layout {
    const char* name;
    bool deflate, tiled, separate;
  };
  const Layout layouts[] = {{"plain", false, false, false},     {"deflate", true, false, false},
                            {"tiled", false, true, false},      {"separate", false, false, true},
                            {"tiled+separate+deflate", true, true, true}};
  int n = 0;
  for (auto& tc : types)
    for (auto& lay : layouts) {
      CAPTURE(sample_type_name(tc.type));
      CAPTURE(lay.name);
      Raster r = random_raster(3, 37, 41, tc.lo, tc.hi, 7 + uint64_t(n), tc.type);  // odd sizes: partial tiles
      if (is_floating(tc.type))
        for (size_t i = 0; i < r.data.size(); ++i) r.data[i] = r.data[i] * 0.37f - 12.5f;  // non-integers
      r.data[0] = float(tc.lo);
      r.data[1] = float(tc.hi);
      WriteOptions o;
      o.type = tc.type;
      o.deflate = lay.deflate;
      o.tiled = lay.tiled;
      o.tile_size = 16;
      o.planar_separate = lay.separate;
      const std::string path = tmp / str("rt", n++, ".tif");
      write_geotiff(path, r, o);
      TiffInfo info = read_tiff_info(path);
      CHECK(info.type == tc.type);
      CHECK(info.tiled == lay.tiled);
      CHECK(info.planar_separate == lay.separate);
      CHECK(info.compression == (lay.deflate ? 8 : 1));
      CHECK(info.predictor == (!lay.deflate ? 1 : is_floating(tc.type) ? 3 : 2));
      Raster back = read_geotiff(path);
      CHECK(back.type == tc.type);
      REQUIRE(back.width == 41);
      REQUIRE(back.height == 37);
      check_close(back.data, r.data, 0, 0, "pixels");
      CHECK(back.geo == r.geo);  // georeferencing kept
      // A window of a tiled/separate file equals the same part of the full read.
      Raster w = read_geotiff(path, Window{17, 5, 20, 30});
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 30; ++y)
          for (int x = 0; x < 20; ++x)
            REQUIRE(w.band(c)[y * 20 + x] == r.band(c)[(y + 5) * 41 + x + 17]);
      CHECK(w.geo.tiepoints[3] == 399960 + 17 * 10);
      CHECK(w.geo.tiepoints[4] == 5800020 - 5 * 10);
    }
  // No temporary files are left behind.
  int left = 0;
  for (auto& e : fs::directory_iterator(tmp.path)) left += e.path().string().find(".tmp") != std::string::npos;
  CHECK(left == 0);
}

TEST_CASE("geotiff: real files keep their georeferencing through write and read") {
  TempDir tmp;
  Raster r = read_geotiff(real_fixture(real_s2));
  WriteOptions o;
  o.type = SampleType::UInt16;
  o.deflate = true;
  write_geotiff(tmp / "copy.tif", r, o);
  Raster back = read_geotiff(tmp / "copy.tif");
  check_close(back.data, r.data, 0, 0, "pixels");
  CHECK(back.geo == r.geo);  // georeferencing kept
  CHECK(back.geo.geo_ascii_params.find("UTM zone 50N") != std::string::npos);
}

TEST_CASE("geotiff: transformation matrix and double params are carried and shifted") {
  TempDir tmp;
  Raster r = random_raster(2, 20, 30, 0, 1000, 3);
  r.geo = GeoInfo{};
  r.geo.transformation = {10, 0.5, 0, 500000, 0.25, -10, 0, 4000000, 0, 0, 0, 0, 0, 0, 0, 1};
  r.geo.geokeys = {1, 1, 0, 2, 1024, 0, 1, 1, 2057, 34736, 1, 0};
  r.geo.geo_double_params = {6378137.0};
  r.geo.geo_ascii_params = "custom|";
  write_geotiff(tmp / "m.tif", r, WriteOptions{});
  Raster back = read_geotiff(tmp / "m.tif");
  CHECK(back.geo.transformation == r.geo.transformation);
  CHECK(back.geo.geo_double_params == r.geo.geo_double_params);
  CHECK(back.geo.geokeys == r.geo.geokeys);
  CHECK(back.geo.geo_ascii_params == "custom|");
  Raster w = read_geotiff(tmp / "m.tif", Window{4, 6, 10, 10});
  CHECK(w.geo.transformation[3] == doctest::Approx(500000 + 10 * 4 + 0.5 * 6).epsilon(1e-12));
  CHECK(w.geo.transformation[7] == doctest::Approx(4000000 + 0.25 * 4 - 10 * 6).epsilon(1e-12));
}

TEST_CASE("geotiff: integer writes round to nearest and clamp to the type") {
  TempDir tmp;
  Raster r;
  r.bands = 1, r.height = 1, r.width = 6;
  r.data = {-3.f, 2.4f, 2.5f, 254.6f, 300.f, 70000.f};
  WriteOptions o;
  o.type = SampleType::UInt8;
  write_geotiff(tmp / "u8.tif", r, o);
  CHECK(read_geotiff(tmp / "u8.tif").data == std::vector<float>{0, 2, 3, 255, 255, 255});
  o.type = SampleType::Int16;
  r.data = {-40000.f, -2.5f, -0.4f, 1.6f, 32767.4f, 40000.f};
  write_geotiff(tmp / "i16.tif", r, o);
  CHECK(read_geotiff(tmp / "i16.tif").data == std::vector<float>{-32768, -3, 0, 2, 32767, 32767});
  o.type = SampleType::UInt16;
  r.data[0] = NAN;
  CHECK_THROWS_WITH_AS(write_geotiff(tmp / "nan.tif", r, o), doctest::Contains("NaN"), Error);
  CHECK(!fs::exists(tmp / "nan.tif"));
}

namespace {
// A 4x4 single-band TIFF with an arbitrary sample layout, written by libtiff directly.
void write_raw_tiff(const std::string& path, uint16_t bps, uint16_t fmt) {
  TIFF* t = TIFFOpen(path.c_str(), "w");
  REQUIRE(t != nullptr);
  TIFFSetField(t, TIFFTAG_IMAGEWIDTH, 4u);
  TIFFSetField(t, TIFFTAG_IMAGELENGTH, 4u);
  TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, uint16_t(1));
  TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, bps);
  TIFFSetField(t, TIFFTAG_SAMPLEFORMAT, fmt);
  TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
  TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, 4u);
  std::vector<unsigned char> buf(size_t(4) * 4 * bps / 8, 1);
  TIFFWriteEncodedStrip(t, 0, buf.data(), tmsize_t(buf.size()));
  TIFFClose(t);
}
// A little-endian classic TIFF's first IFD entry for `tag` gets the value `v` (SHORT or LONG).
void patch_tag(std::string& bytes, uint16_t tag, uint32_t v) {
  const bool be = bytes.substr(0, 2) == "MM";  // either byte order, classic TIFF or BigTIFF
  REQUIRE((be || bytes.substr(0, 2) == "II"));
  auto get = [&](size_t at, int n) {
    uint64_t x = 0;
    for (int k = 0; k < n; ++k) x |= uint64_t(uint8_t(bytes[at + size_t(be ? n - 1 - k : k)])) << (8 * k);
    return x;
  };
  auto put = [&](size_t at, int n, uint64_t x) {
    for (int k = 0; k < n; ++k) bytes[at + size_t(be ? n - 1 - k : k)] = char((x >> (8 * k)) & 0xFF);
  };
  const bool big = get(2, 2) == 43;
  const size_t ifd = big ? get(8, 8) : get(4, 4), entries = big ? get(ifd, 8) : get(ifd, 2);
  const size_t first = ifd + (big ? 8 : 2), entry_bytes = big ? 20 : 12, value = big ? 12 : 8;
  for (size_t k = 0; k < entries; ++k) {
    const size_t e = first + entry_bytes * k;
    if (get(e, 2) != tag) continue;
    if (get(e + 2, 2) == TIFF_SHORT && v > 0xFFFF) put(e + 2, 2, TIFF_LONG);  // widened
    const uint64_t type = get(e + 2, 2);
    put(e + value, type == TIFF_SHORT ? 2 : type == TIFF_LONG8 ? 8 : 4, v);
    return;
  }
  FAIL("tag ", tag, " not found");
}

// `good`'s bytes with the tags in `patches` set, written to `bad`; reading `bad` must fail naming it,
// with the process's peak RSS growing by less than 64 MiB (far below what the header claims).
void check_claim_refused(const std::string& good, const std::string& bad,
                         const std::vector<std::pair<uint16_t, uint32_t>>& patches) {
  std::string bytes = slurp(good);
  for (const auto& [tag, v] : patches) patch_tag(bytes, tag, v);
  spit(bad, bytes);
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  CHECK_THROWS_WITH_AS(read_geotiff(bad), doctest::Contains(bad.c_str()), Error);
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  CHECK(after.ru_maxrss - before.ru_maxrss < 64 * 1024);  // KiB
}
}  // namespace

TEST_CASE("geotiff: a header's tile size beyond what the image can use is refused before allocating") {
  TempDir tmp;
  Raster r = random_raster(1, 64, 64, 0, 1000, 3);
  WriteOptions o;
  o.tiled = true;
  o.tile_size = 16;
  const std::string good = tmp / "tiled.tif";
  write_geotiff(good, r, o);
  CHECK(read_geotiff(good).data == r.data);
  // 65520 x 65520 uint16 tiles: an 8.5 GB block buffer, claimed by a 10 KB file.
  std::string bytes = slurp(good);
  patch_tag(bytes, TIFFTAG_TILEWIDTH, 65520);
  patch_tag(bytes, TIFFTAG_TILELENGTH, 65520);
  const std::string bad = tmp / "huge_tiles.tif";
  spit(bad, bytes);
  CHECK_THROWS_WITH_AS(read_geotiff(bad), doctest::Contains("tile size 65520x65520"), Error);
  CHECK_THROWS_WITH_AS(read_geotiff(bad), doctest::Contains(bad.c_str()), Error);
  // Tiles up to 1024 (or the image rounded up to 16) stay legal.
  o.tile_size = 256;
  write_geotiff(tmp / "big_tiles.tif", r, o);
  CHECK(read_geotiff(tmp / "big_tiles.tif").data == r.data);
}

// A compressed file's header claiming 2000x2000x13 (208 MB as floats; 1,700 times the file's bytes,
// under the 4096x that is refused outright): a clean Error, and the raster is never allocated (every
// block is decoded into the one block buffer first). 8000x8000 is refused by the size check.
TEST_CASE("geotiff: a compressed file claiming far more pixels than it holds fails without allocating them") {
  TempDir tmp;
  Raster r = random_raster(13, 64, 64, 0, 10000, 4);
  WriteOptions o;
  o.deflate = true;
  o.rows_per_strip = 16;
  const std::string good = tmp / "small.tif";
  write_geotiff(good, r, o);
  for (uint32_t side : {2000u, 8000u}) {
    CAPTURE(side);
    check_claim_refused(good, tmp / str("claims_", side, ".tif"),
                        {{TIFFTAG_IMAGEWIDTH, side}, {TIFFTAG_IMAGELENGTH, side}});
  }
}

// The same claim in a single-strip file (RowsPerStrip patched to the claimed height): there the one
// block is the whole image (104 MB as uint16), so the claim is checked a row at a time on a second
// handle before any image-sized buffer exists. A true image of that layout (1300x1300x13, one strip,
// 44 MB as uint16 and 88 MB as floats; constant, so it compresses ~1000x) still reads exactly.
TEST_CASE("geotiff: a single-strip compressed file claiming more than it holds is checked row by row") {
  TempDir tmp;
  Raster r = random_raster(13, 64, 64, 0, 10000, 5);
  WriteOptions o;
  o.deflate = true;
  o.rows_per_strip = 64;
  const std::string good = tmp / "one_strip.tif";
  write_geotiff(good, r, o);
  check_claim_refused(good, tmp / "claims_one_strip.tif",
                      {{TIFFTAG_IMAGEWIDTH, 2000}, {TIFFTAG_IMAGELENGTH, 2000}, {TIFFTAG_ROWSPERSTRIP, 2000}});
  // A window of it (decoded a row at a time: the strip is over 32 MiB) is checked before the 156 MB
  // window is allocated, and so is a TiffReader's stripe (which allocates only as rows decode).
  rusage before{}, after{};
  getrusage(RUSAGE_SELF, &before);
  CHECK_THROWS_WITH_AS(read_geotiff(tmp / "claims_one_strip.tif", Window{0, 0, 2000, 1500}),
                       doctest::Contains("cannot decode row"), Error);
  TiffReader reader(tmp / "claims_one_strip.tif");
  CHECK(reader.by_rows());
  CHECK_THROWS_WITH_AS(reader.read(Window{0, 0, 2000, 1500}), doctest::Contains("cannot decode row"), Error);
  getrusage(RUSAGE_SELF, &after);
  CHECK(after.ru_maxrss - before.ru_maxrss < 64 * 1024);  // KiB
  Raster big;
  big.bands = 13;
  big.width = big.height = 1300;
  big.data.assign(size_t(13) * 1300 * 1300, 417.f);
  o.rows_per_strip = 1300;
  write_geotiff(tmp / "big_one_strip.tif", big, o);
  CHECK(read_geotiff(tmp / "big_one_strip.tif").data == big.data);
}

// Blocks a file does not store: GDAL with SPARSE_OK=TRUE leaves out a block that is all nodata (or
// all 0 without a nodata value), with offset and byte count 0, and reads it as nodata, or 0.
namespace {

int count_sparse_blocks(const std::string& path) {
  TIFF* t = TIFFOpen(path.c_str(), "r");
  REQUIRE(t != nullptr);
  const uint32_t n = TIFFIsTiled(t) ? TIFFNumberOfTiles(t) : TIFFNumberOfStrips(t);
  int sparse = 0;
  for (uint32_t k = 0; k < n; ++k) sparse += TIFFGetStrileByteCount(t, k) == 0;
  TIFFClose(t);
  return sparse;
}

int sample_bytes(SampleType t) {
  switch (t) {
    case SampleType::UInt8:
    case SampleType::Int8: return 1;
    case SampleType::UInt16:
    case SampleType::Int16: return 2;
    case SampleType::UInt32:
    case SampleType::Int32:
    case SampleType::Float32: return 4;
    case SampleType::Float64: return 8;
  }
  return 0;
}

// The layout of a file written with libtiff directly (tests/data/test_geotiff.cpp's sparse and
// single-strip files: layouts write_geotiff does not make).
struct TiffLayout {
  int width = 0, height = 0, bands = 1;
  SampleType type = SampleType::UInt16;
  bool separate = false;                          // band-interleaved
  uint16_t compression = COMPRESSION_ADOBE_DEFLATE;
  uint32_t rows_per_strip = 0;                    // strips of this many rows, or (0)
  uint32_t tile = 0;                              // square tiles of this side
  const char* nodata = nullptr;                   // GDAL's nodata tag, when not null
  const char* mode = "w";                         // libtiff's: "wb" big-endian, "w8" BigTIFF
};
// A new file with `l`'s tags set, for the caller to write blocks into and close.
TIFF* new_tiff(const std::string& path, const TiffLayout& l) {
  TIFF* t = TIFFOpen(path.c_str(), l.mode);
  REQUIRE(t != nullptr);
  static const TIFFFieldInfo nodata_tag = {TIFFTAG_GDAL_NODATA, TIFF_VARIABLE, TIFF_VARIABLE, TIFF_ASCII,
                                           FIELD_CUSTOM,        1,             0,             const_cast<char*>("GDALNoDataValue")};
  TIFFMergeFieldInfo(t, &nodata_tag, 1);
  const int bytes = sample_bytes(l.type);
  const uint16_t format = is_floating(l.type)                                               ? SAMPLEFORMAT_IEEEFP
                          : l.type == SampleType::Int8 || l.type == SampleType::Int16 || l.type == SampleType::Int32 ? SAMPLEFORMAT_INT
                                                                                          : SAMPLEFORMAT_UINT;
  TIFFSetField(t, TIFFTAG_IMAGEWIDTH, uint32_t(l.width));
  TIFFSetField(t, TIFFTAG_IMAGELENGTH, uint32_t(l.height));
  TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, uint16_t(l.bands));
  TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, uint16_t(8 * bytes));
  TIFFSetField(t, TIFFTAG_SAMPLEFORMAT, format);
  TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
  TIFFSetField(t, TIFFTAG_PLANARCONFIG, l.separate ? PLANARCONFIG_SEPARATE : PLANARCONFIG_CONTIG);
  TIFFSetField(t, TIFFTAG_COMPRESSION, l.compression);
  if (l.tile) {
    TIFFSetField(t, TIFFTAG_TILEWIDTH, l.tile);
    TIFFSetField(t, TIFFTAG_TILELENGTH, l.tile);
  } else {
    TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, l.rows_per_strip);
  }
  if (l.nodata) TIFFSetField(t, TIFFTAG_GDAL_NODATA, l.nodata);
  return t;
}

// A 16x16-tiled image (deflate, or uncompressed with `deflate` false) of `bands` bands of `type` in
// which only tile 0 is stored (every sample 7; band-interleaved when `separate`, where each band's
// tile 0 is stored), or every tile with `all_tiles`; with GDAL's nodata tag when `nodata` is not null.
// The other tiles are never written: libtiff leaves their offsets and byte counts 0, as GDAL does.
// `mode` is libtiff's: "w" little-endian, "wb" big-endian, "w8" BigTIFF.
void write_sparse_tiled(const std::string& path, int width, int height, int bands, SampleType type,
                        const char* nodata, bool separate, bool deflate = true, const char* mode = "w",
                        bool all_tiles = false) {
  TIFF* t = new_tiff(path, {.width = width, .height = height, .bands = bands, .type = type, .separate = separate,
                            .compression = uint16_t(deflate ? COMPRESSION_ADOBE_DEFLATE : COMPRESSION_NONE), .tile = 16,
                            .nodata = nodata, .mode = mode});
  const int bytes = sample_bytes(type);
  const int per_tile = 16 * 16 * (separate ? 1 : bands);
  std::vector<unsigned char> sevens(size_t(per_tile) * bytes), tile;
  for (int k = 0; k < per_tile; ++k) {
    unsigned char* d = sevens.data() + size_t(k) * bytes;
    if (type == SampleType::Float32) {
      const float v = 7.f;
      std::memcpy(d, &v, 4);
    } else if (type == SampleType::Float64) {
      const double v = 7.0;
      std::memcpy(d, &v, 8);
    } else {
      d[0] = 7;  // little-endian 7 in every integer width (the file is written in this machine's order)
    }
  }
  for (int p = 0; p < (separate ? bands : 1); ++p)
    for (int y = 0; y < (all_tiles ? height : 1); y += 16)
      for (int x = 0; x < (all_tiles ? width : 1); x += 16) {
        tile = sevens;  // (libtiff byte-swaps the buffer it is given in place for a big-endian file)
        REQUIRE(TIFFWriteEncodedTile(t, TIFFComputeTile(t, uint32_t(x), uint32_t(y), 0, uint16_t(p)), tile.data(),
                                     tmsize_t(tile.size())) == tmsize_t(tile.size()));
      }
  TIFFClose(t);
}

}  // namespace

TEST_CASE("geotiff: blocks a file does not store (GDAL's SPARSE_OK) read as the nodata value, or 0") {
  SUBCASE("GDAL's sparse files: every pixel of a missing block is the fill, and windows agree") {
    // (The values of these files against rasterio's are checked with every fixture above.)
    for (auto [name, fill] : {std::pair{"sparse_deflate_tiled_uint16.tif", 65535.f},
                              std::pair{"sparse_stripped_separate_int16.tif", 0.f}}) {
      CAPTURE(name);
      const std::string path = fixture(str("geotiff/", name));
      const int sparse = count_sparse_blocks(path);
      CHECK(sparse == int(expected_files().get(str("tests/fixtures/geotiff/", name))->get("sparse_blocks")->num));
      REQUIRE(sparse >= 2);  // the fixture does leave blocks out
      const Raster r = read_geotiff(path);
      // Every block's pixels: the fill where the block is missing, never the fill elsewhere (the data
      // avoids it), so a reader that misplaced a missing block would fail here.
      TIFF* t = TIFFOpen(path.c_str(), "r");
      REQUIRE(t != nullptr);
      const TiffInfo info = read_tiff_info(path);
      uint32_t bw = uint32_t(info.width), bh = uint32_t(info.block_rows);
      if (info.tiled) TIFFGetField(t, TIFFTAG_TILEWIDTH, &bw);
      int checked_sparse = 0;
      for (int p = 0; p < (info.planar_separate ? info.bands : 1); ++p)
        for (uint32_t y0 = 0; y0 < uint32_t(info.height); y0 += bh)
          for (uint32_t x0 = 0; x0 < uint32_t(info.width); x0 += bw) {
            const uint32_t id = info.tiled ? TIFFComputeTile(t, x0, y0, 0, uint16_t(p)) : TIFFComputeStrip(t, y0, uint16_t(p));
            const bool missing = TIFFGetStrileByteCount(t, id) == 0;
            checked_sparse += missing;
            for (int c = (info.planar_separate ? p : 0); c < (info.planar_separate ? p + 1 : info.bands); ++c)
              for (uint32_t y = y0; y < std::min(y0 + bh, uint32_t(info.height)); ++y)
                for (uint32_t x = x0; x < std::min(x0 + bw, uint32_t(info.width)); ++x) {
                  const float v = r.band(c)[size_t(y) * r.width + x];
                  if (missing) REQUIRE(v == fill);
                  else REQUIRE(v != fill);
                }
          }
      TIFFClose(t);
      CHECK(checked_sparse == sparse);
      // Windows crossing missing and stored blocks read what the whole read holds there.
      for (Window w : {Window{3, 2, 30, 20}, Window{0, 0, 16, 16}, Window{17, 11, 23, 19}, Window{1, 14, 1, 3}}) {
        CAPTURE(w.x0);
        CAPTURE(w.y0);
        const Raster rw = read_geotiff(path, w);
        for (int c = 0; c < r.bands; ++c)
          for (int y = 0; y < w.height; ++y)
            for (int x = 0; x < w.width; ++x)
              REQUIRE(rw.band(c)[size_t(y) * w.width + x] == r.band(c)[size_t(w.y0 + y) * r.width + (w.x0 + x)]);
      }
    }
  }
  SUBCASE("the nodata value in the file's type: rounded and clamped for integers, NaN kept for float32") {
    TempDir tmp;
    struct Case {
      SampleType type;
      const char* nodata;
      float fill;
      bool separate;
      const char* mode = "w";  // byte order and BigTIFF, for the reader's own read of the byte-count list
    };
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (const Case& k : {Case{SampleType::UInt16, nullptr, 0.f, false}, Case{SampleType::UInt16, "-9999.7", 0.f, true, "wb"}, Case{SampleType::UInt16, "70000", 65535.f, true, "wb"},
                          Case{SampleType::UInt16, "4000.4", 4000.f, false}, Case{SampleType::UInt8, "300.6", 255.f, true, "w8"},
                          Case{SampleType::Int16, "-40000", -32768.f, false}, Case{SampleType::Int16, "nan", 0.f, false},
                          Case{SampleType::Float32, "nan", nan, true, "w8b"}, Case{SampleType::Float32, "-9999.5", -9999.5f, false},
                          Case{SampleType::Float32, nullptr, 0.f, false}, Case{SampleType::Int8, "300", 127.f, false},
                          Case{SampleType::Int8, "-128.2", -128.f, true, "wb"},
                          Case{SampleType::UInt32, "4294967295", 4294967296.f, false, "w8"},
                          Case{SampleType::Int32, "-70000.5", -70001.f, true}, Case{SampleType::Float64, "1e300", INFINITY, false},
                          Case{SampleType::Float64, "-2.5", -2.5f, true, "wb"}}) {
      CAPTURE(sample_type_name(k.type));
      CAPTURE(k.nodata ? k.nodata : "none");
      CAPTURE(k.separate);
      CAPTURE(k.mode);
      const std::string path = tmp / "sparse.tif";
      write_sparse_tiled(path, 40, 24, 3, k.type, k.nodata, k.separate, true, k.mode);
      REQUIRE(count_sparse_blocks(path) == (k.separate ? 3 : 1) * 5);  // 3 x 2 tiles, one stored
      const Raster r = read_geotiff(path);
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 24; ++y)
          for (int x = 0; x < 40; ++x) {
            const float v = r.band(c)[size_t(y) * 40 + x];
            if (x < 16 && y < 16) REQUIRE(v == 7.f);
            else if (std::isnan(k.fill)) REQUIRE(std::isnan(v));
            else REQUIRE(v == k.fill);
          }
    }
  }
  SUBCASE("a small uncompressed file may claim a large image it leaves out, and reads as nodata") {
    // Refused before sparse files were read: an uncompressed file must hold its pixels' bytes, but
    // missing blocks need none. 2000x2000x2 uint16 (16 MB) in the ~130 KB of its tile tables.
    TempDir tmp;
    const std::string path = tmp / "mostly_empty.tif";
    write_sparse_tiled(path, 2000, 2000, 2, SampleType::UInt16, "1234", false, false);
    CHECK(fs::file_size(path) < 200000);
    const Raster r = read_geotiff(path);
    size_t stored = 0, fill = 0;
    for (int c = 0; c < 2; ++c)
      for (int y = 0; y < 2000; ++y)
        for (int x = 0; x < 2000; ++x) {
          const float v = r.band(c)[size_t(y) * 2000 + x];
          stored += x < 16 && y < 16 && v == 7.f;
          fill += !(x < 16 && y < 16) && v == 1234.f;
        }
    CHECK(stored == 2 * 16 * 16);
    CHECK(fill == 2 * (size_t(2000) * 2000 - 16 * 16));
    const Raster w = read_geotiff(path, Window{1990, 7, 10, 20});
    CHECK(std::count(w.data.begin(), w.data.end(), 1234.f) == 2 * 10 * 20);
  }
  SUBCASE("a header whose size was damaged is refused, not read as sparse, in either byte order and BigTIFF") {
    // libtiff pads a byte-count list shorter than the blocks with zeros; the reader counts the list in
    // the directory itself. A 32x32 image with its 4 tiles stored, its size patched to 2000x2000.
    TempDir tmp;
    for (const char* mode : {"w", "wb", "w8", "w8b"}) {
      CAPTURE(mode);
      const std::string good = tmp / str("good_", mode, ".tif"), bad = tmp / str("bad_", mode, ".tif");
      write_sparse_tiled(good, 32, 32, 2, SampleType::UInt16, nullptr, false, true, mode, true);
      REQUIRE(count_sparse_blocks(good) == 0);
      const Raster r = read_geotiff(good);
      CHECK(std::count(r.data.begin(), r.data.end(), 7.f) == 2 * 32 * 32);
      std::string bytes = slurp(good);
      patch_tag(bytes, TIFFTAG_IMAGEWIDTH, 2000);
      patch_tag(bytes, TIFFTAG_IMAGELENGTH, 2000);
      spit(bad, bytes);
      CHECK_THROWS_WITH_AS(read_geotiff(bad), doctest::Contains("needs 15625 tiles but the file lists the byte counts of 4"),
                           Error);
    }
    // Strips, band-interleaved: 2 bands of 4 strips of 16 rows, the height patched to 2000 (125 strips a band).
    Raster r = random_raster(2, 64, 64, 0, 1000, 9);
    WriteOptions o;
    o.deflate = true;
    o.rows_per_strip = 16;
    o.planar_separate = true;
    write_geotiff(tmp / "strips.tif", r, o);
    REQUIRE(read_geotiff(tmp / "strips.tif").data == r.data);
    std::string bytes = slurp(tmp / "strips.tif");
    patch_tag(bytes, TIFFTAG_IMAGELENGTH, 2000);
    spit(tmp / "strips_bad.tif", bytes);
    CHECK_THROWS_WITH_AS(read_geotiff(tmp / "strips_bad.tif"),
                         doctest::Contains("needs 250 strips but the file lists the byte counts of 8"), Error);
  }
  SUBCASE("an uncompressed image in one strip, which libtiff cuts into strips of a few rows, is not sparse") {
    // libtiff's count of strips is then of its own cutting, not the directory's one; a byte count cut
    // short leaves libtiff's later strips a count of 0 at an offset, which is a truncated file.
    TempDir tmp;
    for (bool separate : {false, true}) {
      CAPTURE(separate);
      Raster r = random_raster(13, 64, 64, 0, 10000, 8);
      WriteOptions o;
      o.rows_per_strip = 64;
      o.planar_separate = separate;
      const std::string path = tmp / "one_strip_raw.tif";
      write_geotiff(path, r, o);
      CHECK(read_geotiff(path).data == r.data);
      const Raster w = read_geotiff(path, Window{7, 30, 50, 34});
      size_t same = 0;
      for (int c = 0; c < 13; ++c)
        for (int y = 0; y < 34; ++y)
          for (int x = 0; x < 50; ++x) same += w.band(c)[size_t(y) * 50 + size_t(x)] == r.band(c)[size_t(30 + y) * 64 + size_t(7 + x)];
      CHECK(same == size_t(13) * 34 * 50);
      if (separate) continue;
      CHECK(read_tiff_info(path).block_rows < 64);  // libtiff did cut it
      // Its strip moved to end half-way past the file's end (a truncated file): libtiff clamps the byte
      // count to the file and gives the strips it cut past the end a byte count and an offset of 0,
      // which must not read as sparse blocks.
      std::string bytes = slurp(path);
      patch_tag(bytes, TIFFTAG_STRIPOFFSETS, uint32_t(bytes.size() - 64 * 64 * 13));
      spit(tmp / "cut_short.tif", bytes);
      CHECK_THROWS_WITH_AS(read_geotiff(tmp / "cut_short.tif"), doctest::Contains("cut_short.tif"), Error);
    }
  }
  SUBCASE("a window in blocks left out needs no block buffer") {
    // 20000 x 20000 uint8 in four 16384 x 16384 tiles, only the last stored (one byte, never decoded:
    // libtiff writes no tile table without a tile): a block would take 268 MB. In a child, so that its
    // peak RSS is its own.
    TempDir tmp;
    const std::string path = tmp / "huge_tiles.tif";
    TIFF* t = new_tiff(path, {.width = 20000, .height = 20000, .type = SampleType::UInt8, .tile = 16384});
    unsigned char byte = 0;
    REQUIRE(TIFFWriteRawTile(t, 3, &byte, 1) == 1);
    TIFFClose(t);
    REQUIRE(count_sparse_blocks(path) == 3);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      rusage before{}, after{};
      getrusage(RUSAGE_SELF, &before);
      const Raster r = read_geotiff(path, Window{14000, 14000, 2000, 2000});  // in tile 0
      getrusage(RUSAGE_SELF, &after);
      const bool zeros = std::count(r.data.begin(), r.data.end(), 0.f) == 2000 * 2000;
      std::fprintf(stderr, "a window of empty tiles: %s, peak RSS rose %ld KiB\n", zeros ? "zeros" : "NOT ZEROS",
                   after.ru_maxrss - before.ru_maxrss);
#if NIMBUS_TEST_ASAN  // AddressSanitizer holds freed memory back (its quarantine): no bound there
      ::_exit(zeros ? 0 : 1);
#else
      ::_exit(zeros && after.ru_maxrss - before.ru_maxrss < 64 * 1024 ? 0 : 1);
#endif
    }
    const int status = wait_child(child, 120);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  SUBCASE("a single-strip band left out is skipped by the row-by-row check of a very compressible file") {
    // Two bands, each one 3000x3000 float32 strip (36 MB, above the 32 MiB a block buffer gets before a
    // very compressible file is verified): band 1 stored (constant, ~35 KB deflated), band 2 left out.
    TempDir tmp;
    const std::string path = tmp / "one_strip_sparse.tif";
    TIFF* t = new_tiff(path, {.width = 3000, .height = 3000, .bands = 2, .type = SampleType::Float32, .separate = true,
                              .rows_per_strip = 3000});
    std::vector<float> band(size_t(3000) * 3000, 2.5f);
    REQUIRE(TIFFWriteEncodedStrip(t, 0, band.data(), tmsize_t(band.size() * 4)) == tmsize_t(band.size() * 4));
    TIFFClose(t);
    REQUIRE(count_sparse_blocks(path) == 1);
    int64_t last_total = 0;
    const ReadProgress progress = [&](int64_t, int64_t total) { last_total = total; };
    const Raster r = read_geotiff(path, progress);
    CHECK(last_total == 2 * 3000);  // the file was verified before the raster was allocated
    CHECK(std::count(r.band(0), r.band(0) + band.size(), 2.5f) == std::ptrdiff_t(band.size()));
    CHECK(std::count(r.band(1), r.band(1) + band.size(), 0.f) == std::ptrdiff_t(band.size()));
  }
}

// TiffReader: a file in large compressed strips (forced here with rows_above 0) is decoded a row at a
// time; every window, in the orders the streaming tools use and at random, is what read_geotiff gives
// (which decodes whole strips for files this small).
TEST_CASE("geotiff: TiffReader decodes large compressed strips a row at a time, reading what read_geotiff reads") {
  TempDir tmp;
  struct Layout {
    const char* name;
    SampleType type;
    int bands;
    bool separate;
    int rows_per_strip;  // 0: one strip for the whole image; -1: that, uncompressed
  };
  for (const Layout& l : {Layout{"one strip, pixel-interleaved uint16", SampleType::UInt16, 13, false, 0},
                          Layout{"one strip a band, float32", SampleType::Float32, 3, true, 0},
                          Layout{"strips of 23 rows, int16", SampleType::Int16, 2, false, 23},
                          Layout{"strips of 23 rows a band, uint8", SampleType::UInt8, 3, true, 23},
                          Layout{"uncompressed, one strip a band", SampleType::UInt16, 2, true, -1}}) {
    CAPTURE(l.name);
    const int H = 70, W = 53;
    Raster r = random_raster(l.bands, H, W, l.type == SampleType::Int16 ? -3000 : 0, 9000, 11, l.type);
    if (l.type == SampleType::Float32)
      for (float& v : r.data) v = v / 7.f - 300.f;
    WriteOptions o;
    o.type = l.type;
    o.deflate = l.rows_per_strip >= 0;
    o.planar_separate = l.separate;
    o.rows_per_strip = l.rows_per_strip > 0 ? l.rows_per_strip : H;
    const std::string path = tmp / "strips.tif";
    write_geotiff(path, r, o);
    TiffReader rows(path, 0);
    REQUIRE(rows.by_rows());
    CHECK(rows.stripe_rows() == 1);
    TiffReader blocks(path);  // the default bound: these strips are small, read as read_geotiff reads
    CHECK_FALSE(blocks.by_rows());
    CHECK(blocks.stripe_rows() == (l.rows_per_strip > 0 ? l.rows_per_strip : H));
    std::vector<Window> windows;
    for (int y0 = 0; y0 < H; y0 += 16) windows.push_back({0, y0, W, std::min(16, H - y0)});  // stripes
    for (int y0 = 0; y0 + 20 <= H; y0 += 12) windows.push_back({5, y0, 30, 20});  // overlapping, moving down
    windows.push_back({0, 3, W, 4});                                               // back above the kept rows
    windows.push_back({40, 60, 13, 10});                                           // past them
    Rng rng(5);
    for (int k = 0; k < 12; ++k) {
      const int x0 = int(rng.below(W)), y0 = int(rng.below(H));
      windows.push_back({x0, y0, 1 + int(rng.below(uint64_t(W - x0))), 1 + int(rng.below(uint64_t(H - y0)))});
    }
    for (const Window& w : windows) {
      CAPTURE(w.x0);
      CAPTURE(w.y0);
      CAPTURE(w.width);
      CAPTURE(w.height);
      const Raster want = read_geotiff(path, w), got = rows.read(w), plain = blocks.read(w);
      REQUIRE(got.width == w.width);
      REQUIRE(got.height == w.height);
      CHECK(got.data == want.data);
      CHECK(plain.data == want.data);
      CHECK(got.geo == want.geo);
      CHECK(got.type == want.type);
    }
    CHECK_THROWS_WITH_AS(rows.read(Window{0, H - 1, W, 2}), doctest::Contains("is outside the"), Error);
  }
  // Strips left out (sparse) between stored ones, band-interleaved in strips of 10 rows: band 1 keeps
  // its strips 0 and 2, band 2 only its strip 1. They read as the nodata value through the rows too.
  const std::string path = tmp / "sparse_strips.tif";
  {
    TIFF* t = new_tiff(path, {.width = 40, .height = 30, .bands = 2, .separate = true, .rows_per_strip = 10,
                              .nodata = "321"});
    std::vector<uint16_t> strip(40 * 10);
    for (uint32_t id : {0u, 2u, 4u}) {
      for (size_t i = 0; i < strip.size(); ++i) strip[i] = uint16_t(1000 * id + i);
      REQUIRE(TIFFWriteEncodedStrip(t, id, strip.data(), tmsize_t(strip.size() * 2)) == tmsize_t(strip.size() * 2));
    }
    TIFFClose(t);
  }
  REQUIRE(count_sparse_blocks(path) == 3);
  TiffReader rows(path, 0);
  REQUIRE(rows.by_rows());
  for (Window w : {Window{3, 4, 30, 20}, Window{0, 8, 40, 15}, Window{0, 0, 40, 30}, Window{5, 12, 3, 3}}) {
    CAPTURE(w.y0);
    const Raster got = rows.read(w), want = read_geotiff(path, w);
    CHECK(got.data == want.data);
  }
  const Raster all = rows.read(Window{0, 0, 40, 30});
  CHECK(all.band(0)[size_t(5) * 40 + 7] == float(5 * 40 + 7));           // band 1, strip 0
  CHECK(all.band(0)[size_t(15) * 40 + 7] == 321.f);                      // band 1, strip 1: left out
  CHECK(all.band(0)[size_t(25) * 40 + 7] == float(2000 + 5 * 40 + 7));   // band 1, strip 2
  CHECK(all.band(1)[size_t(5) * 40 + 7] == 321.f);                       // band 2, strip 0 (id 3): left out
  CHECK(all.band(1)[size_t(15) * 40 + 7] == float(4000 + 5 * 40 + 7));   // band 2, strip 1 (id 4)
  CHECK(all.band(1)[size_t(25) * 40 + 7] == 321.f);                      // band 2, strip 2 (id 5): left out
}

// A strip that cannot be decoded part-way: the error names the row, and a TiffReader keeps no half row
// and reads on afterwards: a window above the bad rows reads right, the bad one fails again.
TEST_CASE("geotiff: TiffReader after a strip fails to decode part-way") {
  TempDir tmp;
  Raster r = random_raster(2, 200, 150, 0, 60000, 13);
  WriteOptions o;
  o.deflate = true;
  o.rows_per_strip = 200;
  const std::string path = tmp / "one_strip.tif";
  write_geotiff(path, r, o);
  TIFF* t = TIFFOpen(path.c_str(), "r");
  REQUIRE(t != nullptr);
  const uint64_t count = TIFFGetStrileByteCount(t, 0);
  TIFFClose(t);
  // The strip's byte count halved: zlib runs out of input about half-way down (random data does not
  // compress, so rows and bytes go in step).
  std::string bytes = slurp(path);
  patch_tag(bytes, TIFFTAG_STRIPBYTECOUNTS, uint32_t(count / 2));
  spit(tmp / "broken.tif", bytes);
  TiffReader rows(tmp / "broken.tif", 0);
  REQUIRE(rows.by_rows());
  int failed_at = -1, bad_row = -1;
  for (int y0 = 0; y0 < 200 && failed_at < 0; y0 += 20) {
    try {
      const Raster got = rows.read(Window{0, y0, 150, 20});
      CHECK(got.band(1)[size_t(19) * 150 + 149] == r.band(1)[size_t(y0 + 19) * 150 + 149]);
    } catch (const Error& e) {
      const std::string what = e.what();
      const size_t at = what.find("cannot decode row ");
      REQUIRE_MESSAGE(at != std::string::npos, what);
      failed_at = y0;
      bad_row = std::stoi(what.substr(at + 18));
    }
  }
  REQUIRE(failed_at > 0);
  CHECK(bad_row < 190);  // part-way down the strip
  REQUIRE(bad_row >= failed_at);
  REQUIRE(bad_row < failed_at + 20);
  // The rows kept before the bad one still read right; the bad one fails again (no zeros kept for it).
  if (bad_row > failed_at) {
    const Raster kept = rows.read(Window{0, failed_at, 150, bad_row - failed_at});
    CHECK(kept.band(0)[size_t(bad_row - failed_at - 1) * 150 + 9] == r.band(0)[size_t(bad_row - 1) * 150 + 9]);
  }
  const std::string again = str("cannot decode row ", bad_row);
  CHECK_THROWS_WITH_AS(rows.read(Window{0, failed_at, 150, bad_row - failed_at + 1}), doctest::Contains(again.c_str()),
                       Error);
  // And a window above them restarts the strip and reads right.
  const Raster first = rows.read(Window{0, 0, 150, 20});
  CHECK(first.band(0)[size_t(7) * 150 + 3] == r.band(0)[size_t(7) * 150 + 3]);
}

// A whole image stored as one deflated strip (2000 x 2000 x 13 uint16, 104 MB decoded): read_geotiff's
// windows and a TiffReader's stripes take memory of a window, not of the image (before, every window
// decoded the whole strip into a 104 MB buffer). In a child process, so that its peak RSS is its own.
TEST_CASE("geotiff: a whole image in one compressed strip is read in windows in bounded memory") {
  TempDir tmp;
  const std::string path = tmp / "one_strip.tif";
  const int W = 2000, H = 2000, C = 13;
  auto value = [](int b, int y, int x) { return uint16_t(b * 1000 + (y % 97) + (x % 5)); };
  {
    TIFF* t = new_tiff(path, {.width = W, .height = H, .bands = C, .rows_per_strip = uint32_t(H)});
    std::vector<uint16_t> line(size_t(W) * C);
    for (int y = 0; y < H; ++y) {
      for (int x = 0; x < W; ++x)
        for (int b = 0; b < C; ++b) line[size_t(x) * C + size_t(b)] = value(b, y, x);
      REQUIRE(TIFFWriteScanline(t, line.data(), uint32_t(y), 0) == 1);
    }
    TIFFClose(t);
  }
  REQUIRE(read_tiff_info(path).block_rows == H);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    rusage before{}, after{};
    getrusage(RUSAGE_SELF, &before);
    bool ok = true;
    TiffReader reader(path);
    ok &= reader.by_rows() && reader.stripe_rows() == 1;
    for (int y0 = 0; y0 < H; y0 += 100) {
      const Raster r = reader.read(Window{0, y0, W, 100});
      ok &= r.band(12)[size_t(57) * W + 1234] == float(value(12, y0 + 57, 1234));
    }
    const Raster last = read_geotiff(path, Window{1500, 1900, 500, 100});
    ok &= last.band(3)[size_t(99) * 500 + 499] == float(value(3, 1999, 1999));
    getrusage(RUSAGE_SELF, &after);
    // A stripe is 10.4 MB as floats, kept and returned; the whole strip would be 104 MB.
    std::fprintf(stderr, "one strip, read in windows: values %s, peak RSS rose %ld KiB\n", ok ? "right" : "WRONG",
                 after.ru_maxrss - before.ru_maxrss);
#if !NIMBUS_TEST_ASAN  // AddressSanitizer holds freed memory back (its quarantine): no bound there
    ok &= after.ru_maxrss - before.ru_maxrss < 48 * 1024;  // KiB
#endif
    ::_exit(ok ? 0 : 1);
  }
  const int status = wait_child(child, 300);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

// An image with more than 2^32 pixels in its one band (65536 x 65536 uint8, a BigTIFF): windows read
// exactly wherever they lie, at offsets past what 32 bits index. The file takes 4 MB: 4096 deflated
// 1024 x 1024 tiles, copied raw from a small file written by write_geotiff (zeros, or a pattern in
// two of them), so that nothing of its 4 GiB of pixels is ever encoded.
TEST_CASE("geotiff: windows of an image of more than 2^32 pixels a band read exactly (BigTIFF)") {
  TempDir tmp;
  constexpr int kTile = 1024, kSide = 65536, kTiles = kSide / kTile;
  const auto pattern = [](int x, int y) { return float((x * 7 + y * 13) % 251); };  // in a patterned tile
  Raster two;  // tile 0: zeros; tile 1: the pattern
  two.bands = 1, two.width = 2 * kTile, two.height = kTile;
  two.data.assign(size_t(2) * kTile * kTile, 0.f);
  for (int y = 0; y < kTile; ++y)
    for (int x = 0; x < kTile; ++x) two.data[size_t(y) * 2 * kTile + kTile + size_t(x)] = pattern(x, y);
  WriteOptions o;
  o.type = SampleType::UInt8;
  o.deflate = true;
  o.tiled = true;
  o.tile_size = kTile;
  write_geotiff(tmp / "two_tiles.tif", two, o);
  std::vector<std::vector<unsigned char>> raw(2);
  {
    TIFF* t = TIFFOpen((tmp / "two_tiles.tif").c_str(), "r");
    REQUIRE(t != nullptr);
    for (uint32_t k = 0; k < 2; ++k) {
      raw[k].resize(size_t(TIFFGetStrileByteCount(t, k)));  // tile k's bytes as stored
      REQUIRE(TIFFReadRawTile(t, k, raw[k].data(), tmsize_t(raw[k].size())) == tmsize_t(raw[k].size()));
    }
    TIFFClose(t);
  }
  // Patterned tiles: the last one, and one whose first pixel lies past 2^31 in row-major order.
  const auto patterned = [&](int tx, int ty) { return (tx == kTiles - 1 && ty == kTiles - 1) || (tx == 40 && ty == 33); };
  const std::string big = tmp / "big.tif";
  {
    TIFF* t = TIFFOpen(big.c_str(), "w8");
    REQUIRE(t != nullptr);
    TIFFSetField(t, TIFFTAG_IMAGEWIDTH, uint32_t(kSide));
    TIFFSetField(t, TIFFTAG_IMAGELENGTH, uint32_t(kSide));
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, uint16_t(1));
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, uint16_t(8));
    TIFFSetField(t, TIFFTAG_SAMPLEFORMAT, uint16_t(SAMPLEFORMAT_UINT));
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
    TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_ADOBE_DEFLATE);
    TIFFSetField(t, TIFFTAG_PREDICTOR, uint16_t(PREDICTOR_HORIZONTAL));  // as write_geotiff's tiles
    TIFFSetField(t, TIFFTAG_TILEWIDTH, uint32_t(kTile));
    TIFFSetField(t, TIFFTAG_TILELENGTH, uint32_t(kTile));
    for (int ty = 0; ty < kTiles; ++ty)
      for (int tx = 0; tx < kTiles; ++tx) {
        std::vector<unsigned char>& b = raw[patterned(tx, ty) ? 1 : 0];
        REQUIRE(TIFFWriteRawTile(t, uint32_t(ty * kTiles + tx), b.data(), tmsize_t(b.size())) ==
                tmsize_t(b.size()));
      }
    TIFFClose(t);
  }
  CHECK(slurp(big).substr(0, 4) == std::string("II+\0", 4));  // BigTIFF
  const TiffInfo info = read_tiff_info(big);
  CHECK(info.width == kSide);
  CHECK(info.height == kSide);
  CHECK(info.bands == 1);
  CHECK(info.tiled);
  const auto expected = [&](int x, int y) {
    return patterned(x / kTile, y / kTile) ? pattern(x % kTile, y % kTile) : 0.f;
  };
  // Across four tiles at the far corner, inside the middle patterned tile, and across its edges.
  for (Window w : {Window{kSide - 1500, kSide - 1100, 1500, 1100}, Window{40 * kTile, 33 * kTile, kTile, kTile},
                   Window{40 * kTile - 3, 33 * kTile - 5, 9, kTile + 10}, Window{0, kSide - 1, kSide, 1}}) {
    CAPTURE(w.x0);
    CAPTURE(w.y0);
    const Raster r = read_geotiff(big, w);
    REQUIRE(r.data.size() == size_t(w.width) * size_t(w.height));
    size_t wrong = 0, nonzero = 0;
    for (int y = 0; y < w.height; ++y)
      for (int x = 0; x < w.width; ++x) {
        const float v = r.data[size_t(y) * size_t(w.width) + size_t(x)];
        wrong += v != expected(w.x0 + x, w.y0 + y);
        nonzero += v != 0.f;
      }
    CHECK(wrong == 0);
    CHECK(nonzero > 0);  // every window meets a patterned tile
  }
}

// What replaced the old cap of 2^31 values an image: a side past kMaxTiffSide is refused with the
// header, and a read larger than this machine's memory (a 1,000,000 x 1,000,000 claim: 3.6 TiB as
// float32) fails before allocating, naming the file, even when the file's size allows the claim (a
// sparse 1 GiB file: compressed pixels may inflate 4096x).
TEST_CASE("geotiff: a side past the limit, or a read larger than memory, is refused before allocating") {
  TempDir tmp;
  Raster r = random_raster(1, 64, 64, 0, 200, 6);
  WriteOptions o;
  o.type = SampleType::UInt8;
  o.deflate = true;
  o.rows_per_strip = 16;
  const std::string good = tmp / "small.tif";
  write_geotiff(good, r, o);
  std::string bytes = slurp(good);
  patch_tag(bytes, TIFFTAG_IMAGEWIDTH, uint32_t(kMaxTiffSide) + 1);
  const std::string wide = tmp / "too_wide.tif";
  spit(wide, bytes);
  CHECK_THROWS_WITH_AS(read_tiff_info(wide), doctest::Contains("sides up to 1073739776"), Error);
  CHECK_THROWS_WITH_AS(read_geotiff(wide), doctest::Contains(wide.c_str()), Error);

  bytes = slurp(good);
  patch_tag(bytes, TIFFTAG_IMAGEWIDTH, 1000000);
  patch_tag(bytes, TIFFTAG_IMAGELENGTH, 1000000);
  const std::string huge = tmp / "huge.tif";
  spit(huge, bytes);
  std::filesystem::resize_file(huge, uint64_t(1) << 30);  // sparse: no disk used
  CHECK(read_tiff_info(huge).width == 1000000);
  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  CHECK_THROWS_WITH_AS(read_geotiff(huge), doctest::Contains("the whole image of 1000000x1000000x1 needs 3725.3 GiB as float32 and "),
                       Error);
  CHECK_THROWS_WITH_AS(read_geotiff(huge), doctest::Contains("of memory this process may use"), Error);
  CHECK_THROWS_WITH_AS(read_geotiff(huge), doctest::Contains(huge.c_str()), Error);
  rusage after{};
  getrusage(RUSAGE_SELF, &after);
  CHECK(after.ru_maxrss - before.ru_maxrss < 64 * 1024);  // KiB
  // The writers refuse such a side too, and more tiles than libtiff's 32-bit tile numbers.
  CHECK_THROWS_WITH_AS(TiledGeoTiffWriter(tmp / "w.tif", kMaxTiffSide + 1, 1, 1, o, GeoInfo{}, {}),
                       doctest::Contains("cannot write"), Error);
  o.tile_size = 16;
  CHECK_THROWS_WITH_AS(TiledGeoTiffWriter(tmp / "w.tif", kMaxTiffSide, kMaxTiffSide, 1, o, GeoInfo{}, {}),
                       doctest::Contains("tiles of 16 pixels: more than a TIFF numbers"), Error);
  Raster wide_raster;
  wide_raster.width = kMaxTiffSide + 1, wide_raster.height = 1, wide_raster.bands = 1;
  CHECK_THROWS_WITH_AS(write_geotiff(tmp / "w.tif", wide_raster, o), doctest::Contains("cannot write"), Error);
  CHECK(!fs::exists(tmp / "w.tif"));
}

// Classic TIFF addresses 4 GiB: a file whose whole tiles take more than 3.75 GiB (padding included) is
// opened as a BigTIFF, one at the limit as a classic TIFF (the header, written when the file is opened,
// says which; no tile is written, and the unfinished writer removes its temporary file).
TEST_CASE("geotiff: the writers open a BigTIFF past 3.75 GiB of whole tiles") {
  TempDir tmp;
  WriteOptions o;
  o.type = SampleType::UInt8;
  o.tile_size = 1024;
  const auto magic = [&](int width, int height) {
    const std::string out = tmp / str("w", width, "x", height, ".tif");
    TiledGeoTiffWriter w(out, width, height, 1, o, GeoInfo{}, {});
    std::vector<std::string> temporaries = glob_files(tmp.path.string(), "");
    std::erase_if(temporaries, [&](const std::string& f) { return f.find(out + ".tmp") != 0; });
    REQUIRE(temporaries.size() == 1);
    return slurp(temporaries[0]).substr(0, 4);
  };
  CHECK(magic(65536, 61440) == std::string("II*\0", 4));  // exactly 3.75 GiB
  CHECK(magic(65536, 61441) == std::string("II+\0", 4));  // one more row of tiles
  CHECK(magic(61441, 65536) == std::string("II+\0", 4));  // one more column
  CHECK(glob_files(tmp.path.string(), "").empty());
}

// The progress callback: rows after each row of blocks, ending at the total, the same pixels as a plain
// read; twice the height when a very compressible file is decoded once before the raster is allocated.
TEST_CASE("geotiff: a whole read reports its rows as it decodes them") {
  TempDir tmp;
  const Raster r = random_raster(3, 37, 40, 0, 1000, 6, SampleType::UInt16);  // 37 rows of 40
  auto calls_of = [](const std::string& path, Raster* got) {
    std::vector<std::pair<int64_t, int64_t>> calls;
    *got = read_geotiff(path, [&](int64_t done, int64_t total) { calls.emplace_back(done, total); });
    return calls;
  };
  WriteOptions strips;
  strips.rows_per_strip = 7;  // 37 rows: 7, 14, ..., 35, 37
  write_geotiff(tmp / "strips.tif", r, strips);
  Raster got;
  auto calls = calls_of(tmp / "strips.tif", &got);
  REQUIRE(calls.size() == 6);
  for (size_t i = 0; i + 1 < calls.size(); ++i) CHECK(calls[i] == std::pair<int64_t, int64_t>{7 * int64_t(i + 1), 37});
  CHECK(calls.back() == std::pair<int64_t, int64_t>{37, 37});
  CHECK(got.data == read_geotiff(tmp / "strips.tif").data);
  WriteOptions tiles;
  tiles.tiled = true;
  tiles.tile_size = 16;  // rows of tiles end at 16, 32, 37
  write_geotiff(tmp / "tiles.tif", r, tiles);
  calls = calls_of(tmp / "tiles.tif", &got);
  CHECK(calls == std::vector<std::pair<int64_t, int64_t>>{{16, 37}, {32, 37}, {37, 37}});
  CHECK(got.data == r.data);
  // A constant image compresses far past 64x: decoded twice, counted twice.
  Raster flat;
  flat.bands = 13;
  flat.width = flat.height = 256;
  flat.data.assign(size_t(13) * 256 * 256, 417.f);
  WriteOptions deflate;
  deflate.deflate = true;
  deflate.rows_per_strip = 64;
  write_geotiff(tmp / "flat.tif", flat, deflate);
  calls = calls_of(tmp / "flat.tif", &got);
  CHECK(calls == std::vector<std::pair<int64_t, int64_t>>{
                     {64, 512}, {128, 512}, {192, 512}, {256, 512}, {320, 512}, {384, 512}, {448, 512}, {512, 512}});
  CHECK(got.data == flat.data);
  // An empty callback reads as the plain overload.
  CHECK(read_geotiff(tmp / "flat.tif", ReadProgress{}).data == flat.data);
}

TEST_CASE("geotiff: bad input gives an Error naming the file and the problem") {
  TempDir tmp;
  const std::string missing = tmp / "nope.tif";
  CHECK_THROWS_WITH_AS(read_geotiff(missing), doctest::Contains(missing.c_str()), Error);

  const std::string text = tmp / "text.tif";
  spit(text, "this is not a tiff at all, just text\n");
  CHECK_THROWS_WITH_AS(read_geotiff(text), doctest::Contains(text.c_str()), Error);
  CHECK_THROWS_AS(read_tiff_info(text), Error);

  const std::string empty = tmp / "empty.tif";
  spit(empty, "");
  CHECK_THROWS_WITH_AS(read_geotiff(empty), doctest::Contains(empty.c_str()), Error);

  // Truncated at several points: in the header, in the IFD, in the pixels.
  std::string bytes = slurp(real_fixture(real_s2));
  for (size_t cut : {size_t(6), size_t(100), size_t(1000), size_t(2500), bytes.size() - 7}) {
    CAPTURE(cut);
    const std::string p = tmp / str("cut", cut, ".tif");
    spit(p, bytes.substr(0, cut));
    CHECK_THROWS_WITH_AS(read_geotiff(p), doctest::Contains(p.c_str()), Error);
  }

  struct Bad {
    uint16_t bps, fmt;
    const char* what;
  };
  for (Bad b : {Bad{16, SAMPLEFORMAT_IEEEFP, "16-bit float"}, Bad{32, SAMPLEFORMAT_COMPLEXINT, "complex integer"},
                Bad{64, SAMPLEFORMAT_COMPLEXIEEEFP, "complex float"}, Bad{64, SAMPLEFORMAT_UINT, "64-bit unsigned"},
                Bad{64, SAMPLEFORMAT_INT, "64-bit signed"}, Bad{12, SAMPLEFORMAT_UINT, "12-bit unsigned"}}) {
    const std::string p = tmp / str("bad", b.bps, "_", b.fmt, ".tif");
    write_raw_tiff(p, b.bps, b.fmt);
    CHECK_THROWS_WITH_AS(read_geotiff(p), doctest::Contains("unsupported sample type"), Error);
    CHECK_THROWS_WITH_AS(read_tiff_info(p), doctest::Contains(b.what), Error);
    CHECK_THROWS_WITH_AS(read_geotiff(p), doctest::Contains(p.c_str()), Error);
  }

  // Windows outside the image, and rasters that do not match their size.
  CHECK_THROWS_WITH_AS(read_geotiff(real_fixture(real_s2), Window{200, 0, 100, 10}), doctest::Contains("outside"),
                       Error);
  CHECK_THROWS_AS(read_geotiff(real_fixture(real_s2), Window{0, 0, 0, 10}), Error);
  Raster r = random_raster(2, 4, 4, 0, 9, 1);
  r.data.pop_back();
  CHECK_THROWS_WITH_AS(write_geotiff(tmp / "short.tif", r, WriteOptions{}), doctest::Contains("31 values"), Error);
  Raster ok = random_raster(2, 4, 4, 0, 9, 1);
  // The error names the file asked for (x.tif:), not only the temporary beside it (x.tif.tmp<pid>_<n>).
  const std::string nowhere = tmp / "no/such/dir/x.tif";
  CHECK_THROWS_WITH_AS(write_geotiff(nowhere, ok, WriteOptions{}), doctest::Contains((nowhere + ":").c_str()), Error);
}

TEST_CASE("geotiff: corrupted bytes give an Error or a read, never a crash") {
  // Random damage to the header, the IFD and the strip tables of a real
  // EuroSAT tile (IFD at the start, pixels from byte 748). Run under ASan.
  TempDir tmp;
  const std::string bytes = slurp(real_fixture(
      "eurosat_ms/shrey160+EuroSAT_MS_Deep_Learning/data/Euro_MS_Test_red/test/Forest/Forest_32.tif"));
  Rng rng(2026);
  int errors = 0, reads = 0;
  for (int trial = 0; trial < 200; ++trial) {
    std::string b = bytes;
    for (int k = 0; k < 4; ++k) b[rng.below(900)] = char(rng.below(256));
    const std::string p = tmp / "fuzz.tif";
    spit(p, b);
    try {
      Raster r = read_geotiff(p);
      REQUIRE(r.data.size() == size_t(r.bands) * r.width * r.height);
      ++reads;
    } catch (const Error& e) {
      REQUIRE_MESSAGE(std::string(e.what()).find(p) != std::string::npos, e.what());
      ++errors;
    }
  }
  CHECK(errors + reads == 200);
  CHECK(errors > 0);
  MESSAGE("corrupted files: ", errors, " errors, ", reads, " reads");
}

TEST_CASE("geotiff: the tiled writer takes tiles in any order and writes what write_geotiff would") {
  TempDir d;
  Raster r = random_raster(3, 40, 37, -5, 70000, 9, SampleType::UInt16);  // past both uint16 edges
  r.geo.pixel_scale = {10, 10, 0};
  r.geo.tiepoints = {0, 0, 0, 500000, 4000000, 0};
  r.band_names = {"B4", "B3", "B2"};
  WriteOptions o;
  o.tile_size = 16;
  {
    TiledGeoTiffWriter w(d / "t.tif", r.width, r.height, r.bands, o, r.geo, r.band_names);
    REQUIRE((w.tiles_x() == 3 && w.tiles_y() == 3));
    // Bottom-right first, then the rest backwards.
    for (int k = 8; k >= 0; --k) {
      const int tx = k % 3, ty = k / 3, x0 = tx * 16, y0 = ty * 16;
      const int tw = std::min(16, r.width - x0), th = std::min(16, r.height - y0);
      std::vector<float> chw;
      for (int c = 0; c < r.bands; ++c)
        for (int y = 0; y < th; ++y)
          for (int x = 0; x < tw; ++x) chw.push_back(r.band(c)[size_t(y0 + y) * size_t(r.width) + size_t(x0 + x)]);
      w.write_tile(tx, ty, chw.data());
    }
    CHECK_THROWS_WITH_AS(w.write_tile(0, 0, r.data.data()), doctest::Contains("written twice"), Error);
    CHECK_THROWS_WITH_AS(w.write_tile(3, 0, r.data.data()), doctest::Contains("outside the 3x3 tile grid"), Error);
    CHECK_FALSE(fs::exists(d / "t.tif"));  // nothing in place before finish()
    w.finish();
  }
  o.tiled = true;
  write_geotiff(d / "w.tif", r, o);
  const Raster a = read_geotiff(d / "t.tif"), b = read_geotiff(d / "w.tif");
  CHECK(a.data == b.data);
  CHECK(a.geo == r.geo);
  CHECK(a.band_names == r.band_names);
  CHECK(read_tiff_info(d / "t.tif").tiled);
  // A writer that is not finished leaves nothing behind, not even its temporary file.
  {
    TiledGeoTiffWriter w(d / "u.tif", r.width, r.height, r.bands, o, r.geo, {});
    w.write_tile(0, 0, std::vector<float>(size_t(3 * 16 * 16), 1.f).data());
    CHECK_THROWS_WITH_AS(w.finish(), doctest::Contains("8 of 9 tiles never written"), Error);
  }
  size_t left = 0;
  for (const auto& e : fs::directory_iterator(d.path)) left += e.path().filename().string().starts_with("u.tif");
  CHECK(left == 0);
  CHECK_THROWS_WITH_AS(TiledGeoTiffWriter(d / "v.tif", 10, 10, 2, o, r.geo, {"B1"}),
                       doctest::Contains("1 band names for 2 bands"), Error);
}

// The programs' rule (engine/io/input_files.h, on in every program): a GeoTIFF read as an input is
// never replaced, whichever path names it, by the one-shot writer or the tiled one (refused when it is
// made, before the long work that fills it); other files are written as before.
TEST_CASE("geotiff: with input protection on, neither writer replaces a file that was read") {
  TempDir tmp;
  const Raster r = random_raster(2, 8, 9, 0, 100, 3, SampleType::UInt16);
  WriteOptions o;
  o.type = SampleType::UInt16;
  const std::string in = tmp / "in.tif", link = tmp / "link.tif", out = tmp / "out.tif";
  write_geotiff(in, r, o);
  fs::create_symlink(in, link);
  const ProtectInputsScope protect;
  (void)read_tiff_info(link);  // through the link: the file is the same
  for (const std::string& target : {in, link, tmp / "sub/../in.tif"}) {
    CAPTURE(target);
    fs::create_directories(tmp / "sub");
    CHECK_THROWS_WITH_AS(write_geotiff(target, r, o), doctest::Contains("input files"), Error);
    CHECK_THROWS_WITH_AS(TiledGeoTiffWriter(target, 9, 8, 2, o, r.geo, {}), doctest::Contains("input files"), Error);
  }
  check_close(read_geotiff(in).data, r.data, 0, 0, "the input, unchanged");
  write_geotiff(out, r, o);  // not an input
  CHECK(fs::exists(out));
  // A folder as the output: refused when the writer is made, not after the work that fills it.
  CHECK_THROWS_WITH_AS(TiledGeoTiffWriter(tmp / "sub", 9, 8, 2, o, r.geo, {}), doctest::Contains("is a folder"), Error);
  CHECK_THROWS_WITH_AS(write_geotiff(tmp / "sub", r, o), doctest::Contains("is a folder"), Error);
}

// Both writers rename a temporary into place (engine/io/output_path.h): through a symbolic link they
// replace the file it names and keep the link; a pipe (or a device: as root, --out /dev/null was
// replaced by a plain file) is refused before anything is written, and stays what it was.
TEST_CASE("geotiff: both writers write through a symbolic link and refuse a pipe") {
  TempDir tmp;
  const Raster r = random_raster(2, 8, 9, 0, 100, 3, SampleType::UInt16);
  WriteOptions o;
  o.type = SampleType::UInt16;
  const std::string file = tmp / "file.tif", link = tmp / "link.tif", fifo = tmp / "fifo.tif";
  write_geotiff(file, random_raster(1, 4, 4, 0, 100, 5, SampleType::UInt16), o);
  fs::create_symlink("file.tif", link);
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  write_geotiff(link, r, o);
  CHECK(fs::is_symlink(link));
  check_close(read_geotiff(file).data, r.data, 0, 0, "the linked file, rewritten");
  fs::remove(file);
  {
    TiledGeoTiffWriter w(link, 9, 8, 2, o, r.geo, {});  // one tile holds the whole 9x8 image
    w.write_tile(0, 0, r.data.data());
    w.finish();
  }
  CHECK(fs::is_symlink(link));
  check_close(read_geotiff(file).data, r.data, 0, 0, "the tiled writer's file");
  CHECK_THROWS_WITH_AS(write_geotiff(fifo, r, o), doctest::Contains("fifo.tif: is a pipe"), Error);
  CHECK_THROWS_WITH_AS(TiledGeoTiffWriter(fifo, 9, 8, 2, o, r.geo, {}), doctest::Contains("fifo.tif: is a pipe"), Error);
  CHECK(fs::is_fifo(fifo));
  size_t left = 0;  // no temporary left behind
  for (const auto& e : fs::directory_iterator(tmp.path)) left += e.path().string().find(".tmp") != std::string::npos;
  CHECK(left == 0);
}

// S1 and S2 of a triplet must share a grid. The real GLF-CR triplet does; moving the tie point by a
// pixel, changing the pixel scale or the EPSG code is named; a raster without georeferencing has
// nothing to compare.
// GDAL's nodata tag (42113): written from Raster::nodata, read into TiffInfo/Raster, NaN included; a
// tag that is not a number is an error naming the file; a file without it has none.
TEST_CASE("geotiff: the nodata value is read and written as GDAL keeps it") {
  TempDir tmp;
  Raster r = random_raster(2, 8, 9, 0, 100, 3, SampleType::UInt16);
  write_geotiff(tmp / "none.tif", r, WriteOptions{});
  CHECK_FALSE(read_tiff_info(tmp / "none.tif").nodata.has_value());
  for (double v : {0.0, -9999.0, 65535.0, 1e-3}) {
    CAPTURE(v);
    r.nodata = v;
    WriteOptions o;
    o.type = v < 0 ? SampleType::Int16 : v == 1e-3 ? SampleType::Float32 : SampleType::UInt16;
    write_geotiff(tmp / "nd.tif", r, o);
    const TiffInfo info = read_tiff_info(tmp / "nd.tif");
    REQUIRE(info.nodata.has_value());
    CHECK(*info.nodata == v);
    CHECK(read_geotiff(tmp / "nd.tif").nodata == info.nodata);
    CHECK(is_nodata(float(v), info.nodata));
    CHECK_FALSE(is_nodata(float(v) + 1.f, info.nodata));
  }
  r.nodata = std::nan("");
  WriteOptions f32;
  f32.type = SampleType::Float32;
  write_geotiff(tmp / "nan.tif", r, f32);
  const std::optional<double> nan_nodata = read_tiff_info(tmp / "nan.tif").nodata;
  REQUIRE(nan_nodata.has_value());
  CHECK(std::isnan(*nan_nodata));
  CHECK(is_nodata(NAN, nan_nodata));
  CHECK_FALSE(is_nodata(0.f, nan_nodata));
  CHECK_FALSE(is_nodata(NAN, std::nullopt));
  // The tiled writer carries it too.
  {
    TiledGeoTiffWriter w(tmp / "tiled.tif", 9, 8, 2, WriteOptions{}, r.geo, {}, 0.0);
    std::vector<float> tile(size_t(2) * 8 * 9, 1.f);
    w.write_tile(0, 0, tile.data());
    w.finish();
  }
  CHECK(read_tiff_info(tmp / "tiled.tif").nodata == std::optional<double>(0.0));
  // A tag that is not a number: "-9999" made "-99x9" in the file's bytes.
  r.nodata = -9999.0;
  WriteOptions i16;
  i16.type = SampleType::Int16;
  write_geotiff(tmp / "bad.tif", r, i16);
  std::string bytes = slurp(tmp / "bad.tif");
  const size_t at = bytes.find("-9999");
  REQUIRE(at != std::string::npos);
  bytes[at + 3] = 'x';
  spit(tmp / "bad.tif", bytes);
  CHECK_THROWS_WITH_AS(read_tiff_info(tmp / "bad.tif"), doctest::Contains("GDAL nodata tag '-99x9' is not a number"),
                       Error);
}

// A process stopped by SIGINT or SIGTERM while a writer holds its temporary (remove_clouds writing a
// granule, Ctrl-C) leaves no temporary behind and dies of that signal; files it did not guard stay.
TEST_CASE("geotiff: a signal mid-write removes the writers' temporaries, and the process dies of it") {
  TempDir tmp;
  const Raster r = random_raster(2, 40, 40, 0, 100, 3, SampleType::UInt16);
  for (int sig : {SIGINT, SIGTERM}) {
    CAPTURE(sig);
    const std::string keep = tmp / "unguarded.txt";
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {  // the child: no doctest from here on, only _exit codes
      // doctest's crash handlers came with the fork: a program starts with the default ones.
      for (int s2 : {SIGINT, SIGTERM, SIGHUP}) ::signal(s2, SIG_DFL);
      remove_temp_files_on_signals();
      spit(keep, "not a temporary");
      WriteOptions o;
      TiledGeoTiffWriter w(tmp / "out.tif", 40, 40, 2, o, r.geo, {});
      const TempFile other(tmp / "other.tmp");  // a guarded file of another writer
      spit(tmp / "other.tmp", "half");
      if (std::distance(fs::directory_iterator(tmp.path), fs::directory_iterator()) != 3) ::_exit(3);
      ::raise(sig);
      ::_exit(4);  // not reached: the signal ends the process
    }
    const int status = wait_child(child);
    CHECK(WIFSIGNALED(status));
    if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == sig);
    if (WIFEXITED(status)) FAIL("the child exited with ", WEXITSTATUS(status));
    std::vector<std::string> left;
    for (const auto& e : fs::directory_iterator(tmp.path)) left.push_back(e.path().filename().string());
    CHECK(left == std::vector<std::string>{"unguarded.txt"});
    fs::remove(keep);
  }
}

TEST_CASE("geotiff: grid_mismatch holds a real triplet's S1 and S2 equal and names what differs") {
  const std::string s1 = real_fixture("sen12ms_cr/xufangchn+GLF-CR/data/s1/ROIs1970_fall_139_p839.tif");
  const GeoInfo a = read_tiff_info(real_fixture(real_s2)).geo, b = read_tiff_info(s1).geo;
  REQUIRE(a.present());
  CHECK(a.crs_code() > 32600);  // a UTM zone (WGS 84 / UTM north: 326xx)
  CHECK(grid_mismatch(a, b) == "");
  GeoInfo moved = a;
  moved.tiepoints[3] += a.pixel_scale[0];
  CHECK(grid_mismatch(a, moved).find("tie points differ") == 0);
  GeoInfo coarse = a;
  coarse.pixel_scale[0] *= 2;
  CHECK(grid_mismatch(a, coarse) == "pixel scales differ");
  GeoInfo zone = a;
  for (size_t i = 4; i + 3 < zone.geokeys.size(); i += 4)
    if (zone.geokeys[i] == 3072) zone.geokeys[i + 3] = uint16_t(zone.geokeys[i + 3] + 1);
  CHECK(grid_mismatch(a, zone).find("CRS EPSG:") == 0);
  CHECK(grid_mismatch(a, GeoInfo{}) == "");
}

// check_finite over windows of rows (cloud_mask's stripes): the count is the whole image's, the first
// bad value the first in band-major order (a later window's band 1 before an earlier window's band 2),
// its row the image's.
TEST_CASE("geotiff: FiniteCount over windows of rows reports what check_finite reports for the whole image") {
  Raster whole;
  whole.width = 5, whole.height = 8, whole.bands = 2;
  whole.data.assign(size_t(2 * 8 * 5), 1.f);
  whole.data[size_t(1 * 40 + 1 * 5 + 2)] = NAN;       // band 2, row 1, column 2: in the first window
  whole.data[size_t(0 * 40 + 6 * 5 + 4)] = INFINITY;  // band 1, row 6, column 4: in the second
  std::string want;
  try {
    check_finite(whole, "x.tif");
  } catch (const Error& e) {
    want = e.what();
  }
  CHECK(want.find("x.tif: 2 of 80 values are NaN or infinite (the first in band 1, row 6, column 4)") !=
        std::string::npos);
  FiniteCount c;
  for (int y0 : {0, 3, 6}) {  // windows of 3, 3 and 2 rows
    Raster w;
    w.width = 5, w.bands = 2, w.height = std::min(3, 8 - y0);
    for (int b = 0; b < 2; ++b)
      for (int y = 0; y < w.height; ++y)
        for (int x = 0; x < 5; ++x) w.data.push_back(whole.data[size_t(b * 40 + (y0 + y) * 5 + x)]);
    c.add(w, y0);
  }
  CHECK(c.bad == 2);
  CHECK(c.values == 80);
  CHECK_THROWS_WITH_AS(c.check("x.tif"), want.c_str(), Error);
  FiniteCount clean;
  clean.add(Raster{}, 0);
  CHECK_NOTHROW(clean.check("y.tif"));
}

// Where a raster position lands in model space: the transformation when there is one, else the first
// tie point and the pixel scale (rows go south). `point`: positions of pixel centres (PixelIsPoint).
namespace {
std::pair<double, double> model_at(const GeoInfo& g, double i, double j) {
  if (g.transformation.size() == 16) {
    const auto& m = g.transformation;
    return {m[0] * i + m[1] * j + m[3], m[4] * i + m[5] * j + m[7]};
  }
  return {g.tiepoints[3] + (i - g.tiepoints[0]) * g.pixel_scale[0],
          g.tiepoints[4] - (j - g.tiepoints[1]) * g.pixel_scale[1]};
}
}  // namespace

TEST_CASE("geotiff: coarsened_geo puts a coarse pixel where its block of fine pixels lies") {
  const std::vector<uint16_t> area_keys = {1, 1, 0, 2, 1025, 0, 1, 1, 3072, 0, 1, 32632};
  std::vector<uint16_t> point_keys = area_keys;
  point_keys[7] = 2;  // GTRasterTypeGeoKey = PixelIsPoint
  GeoInfo tie, moved, affine;
  tie.pixel_scale = {10, 20, 0};
  tie.tiepoints = {0, 0, 0, 500000, 6000000, 0};
  moved = tie;
  moved.tiepoints = {37, 11, 0, 500370, 5999780, 0};  // the same grid, tied at another pixel
  affine.transformation = {10, 2, 0, 500000, -1, -20, 0, 6000000, 0, 0, 0, 0, 0, 0, 0, 1};
  for (const GeoInfo* g0 : {&tie, &moved, &affine})
    for (bool point : {false, true}) {
      CAPTURE(point);
      GeoInfo fine = *g0;
      fine.geokeys = point ? point_keys : area_keys;
      const GeoInfo coarse = coarsened_geo(fine, 64);
      CHECK(coarse.geokeys == fine.geokeys);
      for (auto [u, v] : {std::pair{0, 0}, {1, 0}, {3, 2}, {5, 7}}) {
        // Area: coarse corner (u, v) is fine corner (64u, 64v). Point: coarse centre (u, v) is the centre
        // of the fine block, fine position 64u + 31.5.
        const double fu = point ? 64.0 * u + 31.5 : 64.0 * u, fv = point ? 64.0 * v + 31.5 : 64.0 * v;
        const auto [cx, cy] = model_at(coarse, u, v);
        const auto [fx, fy] = model_at(fine, fu, fv);
        CHECK(cx == doctest::Approx(fx).epsilon(1e-12));
        CHECK(cy == doctest::Approx(fy).epsilon(1e-12));
      }
    }
  CHECK(coarsened_geo(tie, 1) == tie);
  CHECK_FALSE(coarsened_geo(GeoInfo{}, 64).present());
  CHECK_THROWS_AS(coarsened_geo(tie, 0), Error);
}
