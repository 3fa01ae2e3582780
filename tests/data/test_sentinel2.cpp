// test_sentinel2.cpp: band lists (data/sentinel2.h): parsing names and the two orders, moving an
// image between orders, the band order a file says it holds, and the GDAL band descriptions the
// GeoTIFF layer reads and writes for it.
#include <doctest/doctest.h>

#include "data/geotiff.h"
#include "data/sentinel2.h"
#include "tests/common/check.h"
#include "tests/data/data_test_util.h"

using namespace nimbus;
using namespace nimbus::data;
using namespace nimbus::test;

TEST_CASE("sentinel2: band names parse into canonical indices, and the two orders have names") {
  CHECK(sen12ms_bands() == BandList{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  CHECK(eurosat_bands() == BandList{0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 8});  // B8A (canonical 8) last
  CHECK(bands_csv(eurosat_bands()) == "B1,B2,B3,B4,B5,B6,B7,B8,B9,B10,B11,B12,B8A");
  CHECK(parse_bands("B1,B2,B3,B4,B5,B6,B7,B8,B9,B10,B11,B12,B8A", "x") == eurosat_bands());
  CHECK(parse_bands(" sen12ms ", "x") == sen12ms_bands());
  CHECK(parse_bands("EuroSAT", "x") == eurosat_bands());
  // Sentinel-2 product names (B01, B08A) and lower case read the same.
  CHECK(parse_bands("b04, B03,B02 ,B08A", "x") == BandList{B4, B3, B2, B8A});
  CHECK(bands_name(sen12ms_bands()) == "sen12ms");
  CHECK(bands_name(BandList{B4, B3, B2}) == "B4,B3,B2");
  for (const BandList& b : {sen12ms_bands(), eurosat_bands(), BandList{B12, B1}})
    CHECK(parse_bands(bands_csv(b), "x") == b);
  CHECK_THROWS_WITH_AS(parse_bands("B1,B13", "--bands"), doctest::Contains("--bands: 'B13' is not a Sentinel-2 band"),
                       Error);
  CHECK_THROWS_WITH_AS(parse_bands("B1,B2,B1", "f.safetensors"), doctest::Contains("band B1 appears twice"), Error);
  CHECK_THROWS_WITH_AS(parse_bands("", "--bands"), doctest::Contains("is not a Sentinel-2 band"), Error);
  CHECK_THROWS_AS(parse_bands("B1,,B2", "--bands"), Error);
}

TEST_CASE("sentinel2: reorder_bands moves each band to the place the target order gives it") {
  const size_t hw = 3;
  std::vector<float> file(13 * hw);
  for (size_t i = 0; i < file.size(); ++i) file[i] = float(100 * (i / hw) + i % hw);  // 100 x file band + pixel
  // EuroSAT -> SEN12MS: B8A (file band 12) becomes band 8, B9..B12 (file 8..11) move up one.
  const std::vector<float> s = reorder_bands(file, hw, eurosat_bands(), sen12ms_bands(), "t.tif");
  const int from_file[13] = {0, 1, 2, 3, 4, 5, 6, 7, 12, 8, 9, 10, 11};
  for (size_t c = 0; c < 13; ++c)
    for (size_t p = 0; p < hw; ++p) CHECK(s[c * hw + p] == float(100 * from_file[c] + int(p)));
  // And back: the round trip is the identity; equal orders return the input.
  CHECK(reorder_bands(s, hw, sen12ms_bands(), eurosat_bands(), "t.tif") == file);
  CHECK(reorder_bands(file, hw, eurosat_bands(), eurosat_bands(), "t.tif") == file);
  // A model that takes three bands gets them from a 13-band file.
  const std::vector<float> rgb = reorder_bands(file, hw, eurosat_bands(), BandList{B4, B3, B2}, "t.tif");
  CHECK(rgb == std::vector<float>{300, 301, 302, 200, 201, 202, 100, 101, 102});
  // A band the target needs but the file lacks; a wrong value count.
  CHECK_THROWS_WITH_AS(reorder_bands(rgb, hw, BandList{B4, B3, B2}, BandList{B8}, "rgb.tif"),
                       doctest::Contains("rgb.tif: has no band B8 (it holds B4,B3,B2)"), Error);
  CHECK_THROWS_WITH_AS(reorder_bands(rgb, hw + 1, BandList{B4, B3, B2}, BandList{B4}, "rgb.tif"),
                       doctest::Contains("9 values for 3 bands"), Error);
}

TEST_CASE("sentinel2: a file's band order comes from its band descriptions or its dataset layout, never its size") {
  const std::vector<std::string> none;
  CHECK(s2_bands_of("EuroSAT/Forest/Forest_12.tif", none, 13) == eurosat_bands());
  CHECK(s2_bands_of("/d/SeaLake/SeaLake_1.tif", none, 13) == eurosat_bands());
  // EuroSAT's file name out of its class folder (tiles gathered in one folder); only that exact name.
  CHECK(s2_bands_of("gathered/Forest_12.tif", none, 13) == eurosat_bands());
  CHECK(s2_bands_of("HerbaceousVegetation_3.tiff", none, 13) == eurosat_bands());
  CHECK_FALSE(s2_bands_of("gathered/Forest_12b.tif", none, 13).has_value());
  CHECK_FALSE(s2_bands_of("gathered/Forest_.tif", none, 13).has_value());
  CHECK_FALSE(s2_bands_of("gathered/Forest_12.png", none, 13).has_value());
  CHECK_FALSE(s2_bands_of("gathered/Forests_12.tif", none, 13).has_value());
  CHECK(s2_bands_of("SEN12MS-CR/ROIs1158_spring_s2_cloudy/s2_cloudy_1/ROIs1158_spring_s2_cloudy_1_p30.tif", none, 13) ==
        sen12ms_bands());
  CHECK(s2_bands_of("x/ROIs1158_spring_s2_1_p30.tif", none, 13) == sen12ms_bands());
  CHECK(s2_bands_of("data/s2_cloudfree/ROIs1970_fall_139_p839.tif", none, 13) == sen12ms_bands());
  CHECK(s2_bands_of("mine/s2_cloudy/patch1.tif", none, 13) == sen12ms_bands());  // the folder alone says so
  // Neither: a 64x64 tile under another name says nothing (the old rule guessed EuroSAT from the size).
  CHECK_FALSE(s2_bands_of("tiles/tile_64x64.tif", none, 13).has_value());
  CHECK_FALSE(s2_bands_of("Forest/River_3.tif", none, 13).has_value());  // class folder and name disagree
  CHECK_FALSE(s2_bands_of("ROIs1158_spring_s1_1_p30.tif", none, 13).has_value());  // SAR, not S2
  // Descriptions win over the layout.
  std::vector<std::string> names;
  for (int b : sen12ms_bands()) names.emplace_back(kS2BandNames[size_t(b)]);
  CHECK(s2_bands_of("EuroSAT/Forest/Forest_12.tif", names, 13) == sen12ms_bands());
  CHECK(s2_bands_of("a.tif", {"B04", "B03", "B02"}, 3) == BandList{B4, B3, B2});
  // Descriptions that are not band names are ignored; broken Sentinel-2 ones are an error.
  CHECK_FALSE(s2_bands_of("a.tif", {"red", "green", "blue"}, 3).has_value());
  CHECK_THROWS_WITH_AS(s2_bands_of("a.tif", {"B4", "B4", "B2"}, 3), doctest::Contains("a.tif: its band descriptions"),
                       Error);
  CHECK_THROWS_WITH_AS(s2_bands_of("a.tif", {"B4", "B3"}, 3), doctest::Contains("2 band descriptions for 3 bands"),
                       Error);
}

TEST_CASE("sentinel2: a file read in a fixed order is refused when its band descriptions say another") {
  std::vector<std::string> sen12ms_names, eurosat_names;
  for (int b : sen12ms_bands()) sen12ms_names.emplace_back(kS2BandNames[size_t(b)]);
  for (int b : eurosat_bands()) eurosat_names.emplace_back(kS2BandNames[size_t(b)]);
  // Silent files, descriptions that are not band names, and agreeing ones pass.
  CHECK_NOTHROW(check_declared_bands("t.tif", {}, eurosat_bands(), "--bands eurosat"));
  CHECK_NOTHROW(check_declared_bands("t.tif", std::vector<std::string>(13, "band"), eurosat_bands(), "x"));
  CHECK_NOTHROW(check_declared_bands("t.tif", eurosat_names, eurosat_bands(), "--bands eurosat"));
  CHECK_NOTHROW(check_declared_bands("t.tif", sen12ms_names, sen12ms_bands(), "SEN12MS-CR's band order"));
  // Another order: named, with both lists.
  CHECK_THROWS_WITH_AS(check_declared_bands("Forest/Forest_1.tif", sen12ms_names, eurosat_bands(), "--bands eurosat"),
                       doctest::Contains("Forest/Forest_1.tif: its band descriptions say B1,B2,B3,B4,B5,B6,B7,B8,B8A,"
                                         "B9,B10,B11,B12, but it is read as --bands eurosat (B1,B2,B3,B4,B5,B6,B7,B8,"
                                         "B9,B10,B11,B12,B8A)"),
                       Error);
  CHECK_THROWS_AS(check_declared_bands("c.tif", eurosat_names, sen12ms_bands(), "SEN12MS-CR's band order"), Error);
}

TEST_CASE("geotiff: band descriptions round-trip through GDAL's metadata tag, window reads keep them") {
  TempDir d;
  Raster r = random_raster(4, 12, 10, 0, 4000, 5, SampleType::UInt16);
  r.band_names = {"B4", "B3", "", "a<b>&\"c\""};  // one band without, one needing XML escapes
  for (bool tiled : {false, true}) {
    CAPTURE(tiled);
    WriteOptions o;
    o.tiled = tiled;
    o.tile_size = 16;
    const std::string path = d / (tiled ? "t.tif" : "s.tif");
    write_geotiff(path, r, o);
    CHECK(read_tiff_info(path).band_names == r.band_names);
    Raster w = read_geotiff(path, Window{2, 3, 5, 4});
    CHECK(w.band_names == r.band_names);
    CHECK(w.data.size() == 4u * 5 * 4);
  }
  // A file with no descriptions reads none; one band name per band or none at all.
  Raster plain = r;
  plain.band_names.clear();
  write_geotiff(d / "p.tif", plain, WriteOptions{});
  CHECK(read_tiff_info(d / "p.tif").band_names.empty());
  plain.band_names = {"B1"};
  CHECK_THROWS_WITH_AS(write_geotiff(d / "q.tif", plain, WriteOptions{}),
                       doctest::Contains("1 band names for 4 bands"), Error);
  // EuroSAT MS files carry a GDAL metadata tag without descriptions (only "interleave").
  const std::string tile = real_fixture(
      "eurosat_ms/shrey160+EuroSAT_MS_Deep_Learning/data/Euro_MS_Test_red/test/Forest/Forest_32.tif");
  CHECK(read_file(tile).find("interleave") != std::string::npos);
  CHECK(read_tiff_info(tile).band_names.empty());
}
