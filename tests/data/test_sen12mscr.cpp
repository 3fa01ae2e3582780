// test_sen12mscr.cpp: SEN12MS-CR triplet discovery on tiny trees built here
// (nested layout and CSV list), the exact-ROI benchmark split (s1_1 vs s1_106),
// land-cover pairing, bad layouts, and triplet -> sample on the real files.
#include <doctest/doctest.h>

#include <set>

#include "data/augment.h"
#include "data/cloud_detector.h"
#include "data/normalize.h"
#include "data/sen12mscr.h"
#include "engine/ops/augment.h"
#include "tests/common/check.h"
#include "tests/data/data_test_util.h"

using namespace nimbus;
using namespace nimbus::data;
using namespace nimbus::test;

namespace {

const char* season_name(int seed) {
  return seed == 1158 ? "spring" : seed == 1868 ? "summer" : seed == 1970 ? "fall" : "winter";
}

// Writes <root>/ROIs<seed>_<season>_<mod>/<mod>_<roi>/ROIs<seed>_<season>_<mod>_<roi>_p<patch>.tif.
std::string write_member(const fs::path& root, int seed, const std::string& mod, int roi, int patch, int size = 8) {
  const std::string prefix = str("ROIs", seed, "_", season_name(seed), "_", mod);
  fs::path dir = root / prefix / str(mod, "_", roi);
  fs::create_directories(dir);
  const std::string path = (dir / str(prefix, "_", roi, "_p", patch, ".tif")).string();
  Raster r;
  WriteOptions o;
  if (mod == "s1") {
    r = random_raster(2, size, size, -30, 0, uint64_t(roi * 1000 + patch), SampleType::Float32);
    o.type = SampleType::Float32;
  } else if (mod == "lc") {
    r = random_raster(4, size, size, 1, 17, 7, SampleType::UInt8);
    o.type = SampleType::UInt8;
  } else {
    r = random_raster(13, size, size, 0, 12000, uint64_t(roi * 1000 + patch + (mod == "s2" ? 0 : 7)));
  }
  write_geotiff(path, r, o);
  return path;
}

void write_triplet(const fs::path& root, int seed, int roi, int patch) {
  for (const char* m : {"s1", "s2", "s2_cloudy"}) write_member(root, seed, m, roi, patch);
}

std::set<std::string> names(const std::vector<Sen12mscrTriplet>& v) {
  std::set<std::string> s;
  for (auto& t : v) s.insert(t.name());
  return s;
}

const std::string glf = "sen12ms_cr/xufangchn+GLF-CR/data/";

}  // namespace

TEST_CASE("sen12mscr: nested layout pairs by season, ROI and patch and counts incomplete triplets once") {
  TempDir tmp;
  write_triplet(tmp.path, 1158, 1, 1);
  write_triplet(tmp.path, 1158, 1, 2);
  write_triplet(tmp.path, 1158, 106, 1);
  write_triplet(tmp.path, 1868, 1, 1);  // same ROI and patch number, other season
  write_member(tmp.path, 1970, "s1", 139, 5);
  write_member(tmp.path, 1970, "s2", 139, 5);  // no cloudy twin
  write_member(tmp.path, 2017, "s2", 63, 7);
  write_member(tmp.path, 2017, "s2_cloudy", 63, 7);  // no s1
  spit(tmp / "ROIs1158_spring_s1/s1_1/ROIs1158_spring_s1_1_p1.tif.aux.xml", "<PAMDataset/>");  // ignored
  spit(tmp / "README.txt", "not a folder");                                                    // ignored

  Sen12mscrIndex idx = scan_sen12mscr(tmp.path.string());
  REQUIRE(idx.triplets.size() == 4);
  CHECK(idx.incomplete == 2);
  CHECK(idx.missing_s1 == 1);
  CHECK(idx.missing_s2 == 0);
  CHECK(idx.missing_s2_cloudy == 1);
  CHECK(idx.warning.find("skipped 2 incomplete triplets") != std::string::npos);
  CHECK(idx.warning.find('\n') == std::string::npos);  // one line
  CHECK(names(idx.triplets) == std::set<std::string>{"ROIs1158_spring_1_p1", "ROIs1158_spring_1_p2",
                                                      "ROIs1158_spring_106_p1", "ROIs1868_summer_1_p1"});
  for (auto& t : idx.triplets) {
    CAPTURE(t.name());
    const std::string tail = str("_", t.roi, "_p", t.patch, ".tif");
    CHECK(t.s1.ends_with(str("ROIs", t.seed, "_", t.season, "_s1", tail)));
    CHECK(t.s2.ends_with(str("ROIs", t.seed, "_", t.season, "_s2", tail)));
    CHECK(t.s2_cloudy.ends_with(str("ROIs", t.seed, "_", t.season, "_s2_cloudy", tail)));
    CHECK(t.s1.find(str("/s1_", t.roi, "/")) != std::string::npos);
    CHECK(t.lc.empty());
  }
  // Complete trees warn about nothing.
  TempDir clean;
  write_triplet(clean.path, 1158, 3, 4);
  Sen12mscrIndex c = scan_sen12mscr(clean.path.string());
  CHECK(c.triplets.size() == 1);
  CHECK(c.incomplete == 0);
  CHECK(c.warning.empty());
}

TEST_CASE("sen12mscr: benchmark split matches the exact ROI folder, never a substring") {
  CHECK(benchmark_split("spring", 106) == Split::Test);
  CHECK(benchmark_split("spring", 1) == Split::Train);
  CHECK(benchmark_split("spring", 10) == Split::Train);
  CHECK(benchmark_split("spring", 14) == Split::Train);   // prefix of test ROI 140
  CHECK(benchmark_split("spring", 1400) == Split::Train); // extension of test ROI 140
  CHECK(benchmark_split("spring", 17) == Split::Val);
  CHECK(benchmark_split("summer", 17) == Split::Val);
  CHECK(benchmark_split("fall", 17) == Split::Train);  // ROI 17 is val only in spring and summer
  CHECK(benchmark_split("fall", 139) == Split::Test);
  CHECK(benchmark_split("fall", 13) == Split::Train);
  CHECK(benchmark_split("winter", 63) == Split::Test);
  CHECK(benchmark_split("winter", 6) == Split::Train);
  int test = 0, val = 0;
  for (const char* s : {"spring", "summer", "fall", "winter"})
    for (int roi = 0; roi < 2000; ++roi) {
      test += benchmark_split(s, roi) == Split::Test;
      val += benchmark_split(s, roi) == Split::Val;
    }
  CHECK(test == 10);
  CHECK(val == 10);

  // The leak case on disk: s1_1 (train) next to s1_106 and s1_140 (test) and s1_17 (val).
  TempDir tmp;
  for (int roi : {1, 106, 14, 140, 17})
    for (int p : {1, 2}) write_triplet(tmp.path, 1158, roi, p);
  Sen12mscrIndex idx = scan_sen12mscr(tmp.path.string());
  auto train = names(idx.split(Split::Train)), val_s = names(idx.split(Split::Val)),
       test_s = names(idx.split(Split::Test));
  CHECK(train == std::set<std::string>{"ROIs1158_spring_1_p1", "ROIs1158_spring_1_p2", "ROIs1158_spring_14_p1",
                                       "ROIs1158_spring_14_p2"});
  CHECK(test_s == std::set<std::string>{"ROIs1158_spring_106_p1", "ROIs1158_spring_106_p2",
                                        "ROIs1158_spring_140_p1", "ROIs1158_spring_140_p2"});
  CHECK(val_s == std::set<std::string>{"ROIs1158_spring_17_p1", "ROIs1158_spring_17_p2"});
  CHECK(split_name(Split::Val) == std::string("val"));
}

// SEN12MS itself unpacks a season's land cover (and its own s1, s2) into ROIs<seed>_<season>/<mod>_<roi>/
// (torchgeo and the SEN12MS toolbox read that path). Next to SEN12MS-CR's folders that folder stopped
// every scan ("unknown folder"); its land cover is now paired, its s1/s2 left out.
TEST_CASE("sen12mscr: SEN12MS's own season folder gives its land cover, its s1/s2 are left out") {
  TempDir tmp;
  write_triplet(tmp.path, 1158, 1, 1);
  write_triplet(tmp.path, 1158, 1, 2);
  const fs::path season = tmp.path / "ROIs1158_spring";
  fs::create_directories(season / "lc_1");
  fs::create_directories(season / "s2_1");
  Raster lc = random_raster(4, 8, 8, 1, 17, 7, SampleType::UInt8);
  WriteOptions o;
  o.type = SampleType::UInt8;
  const std::string lc_path = (season / "lc_1" / "ROIs1158_spring_lc_1_p2.tif").string();
  write_geotiff(lc_path, lc, o);
  write_geotiff((season / "s2_1" / "ROIs1158_spring_s2_1_p1.tif").string(), random_raster(13, 8, 8, 0, 9, 3), {});
  Sen12mscrIndex idx = scan_sen12mscr(tmp.path.string());
  REQUIRE(idx.triplets.size() == 2);
  CHECK(idx.with_lc == 1);
  for (auto& t : idx.triplets) CHECK(t.lc == (t.patch == 2 ? lc_path : ""));
  CHECK(idx.triplets[0].s2 != (season / "s2_1" / "ROIs1158_spring_s2_1_p1.tif").string());  // CR's own s2
  // Inside it, a folder that is neither, or SEN12MS-CR's cloudy images put there: named, not dropped.
  fs::create_directories(season / "s2_cloudy_1");
  CHECK_THROWS_WITH_AS(scan_sen12mscr(tmp.path.string()), doctest::Contains("s2_cloudy_1: folder should be named"),
                       Error);
  fs::remove_all(season / "s2_cloudy_1");
  fs::create_directories(season / "other");
  CHECK_THROWS_WITH_AS(scan_sen12mscr(tmp.path.string()), doctest::Contains("should be named lc_<roi>"), Error);
}

// S1 is read as (VV, VH): a file whose descriptions say the other order (a re-export that swapped the
// bands) gave DSen2-CR swapped SAR in silence (outputs off by up to 1989 DN in a review's run).
TEST_CASE("sen12mscr: an S1 file whose band descriptions say VH, VV is refused naming it") {
  TempDir tmp;
  write_triplet(tmp.path, 1158, 1, 1);
  const Sen12mscrTriplet t = scan_sen12mscr(tmp.path.string()).triplets.at(0);
  Raster s1 = read_geotiff(t.s1);
  WriteOptions o;
  o.type = SampleType::Float32;
  for (auto [names, refused] : std::vector<std::pair<std::vector<std::string>, bool>>{
           {{"VV", "VH"}, false}, {{"vv", "vh"}, false}, {{"Band 1", "Band 2"}, false}, {{"VH", "VV"}, true},
           {{"vh", "vv"}, true}}) {
    CAPTURE(names[0]);
    s1.band_names = names;
    write_geotiff(t.s1, s1, o);
    const std::string says = t.s1 + ": its band descriptions say VH,VV";
    if (refused)
      CHECK_THROWS_WITH_AS(check_triplet_files(t), doctest::Contains(says.c_str()), Error);
    else
      CHECK_NOTHROW(check_triplet_files(t));
  }
}

// SEN12MS-CR's S1 is in dB; the same backscatter in linear power (or amplitude) is all positive, and the
// model's clip to [-25, 0] dB flattened it into a constant SAR input without a word.
TEST_CASE("sen12mscr: S1 in linear power or amplitude is refused naming the file, while dB passes, the real file too") {
  const std::string real_path = real_fixture(glf + "s1/ROIs1970_fall_139_p839.tif");
  const Raster real = read_geotiff(real_path);
  size_t positive = 0;
  for (float v : real.data) positive += v > 0;
  MESSAGE("the real S1's share of values above 0 dB: ", double(positive) / double(real.data.size()));
  CHECK(double(positive) < 0.05 * double(real.data.size()));  // the rule's margin on real data
  CHECK_NOTHROW(check_s1_in_db(real_path, real.data.data(), real.data.size()));
  std::vector<float> power = real.data, amplitude = real.data;
  for (float& v : power) v = std::pow(10.f, v / 10.f);
  for (float& v : amplitude) v = 1000.f * std::sqrt(std::pow(10.f, v / 10.f));
  CHECK_THROWS_WITH_AS(check_s1_in_db("power.tif", power.data(), power.size()),
                       doctest::Contains("power.tif: 100.0% of its S1 values are above 0"), Error);
  CHECK_THROWS_WITH_AS(check_s1_in_db("amplitude.tif", amplitude.data(), amplitude.size()),
                       doctest::Contains("amplitude.tif: 100.0%"), Error);
  // At the share's edge: 90% positive passes, 91% does not; NaN holes and zero fill are not counted, and
  // fewer than 64 counted values decide nothing.
  std::vector<float> v(100, -12.f);
  std::fill(v.begin(), v.begin() + 90, 0.5f);
  CHECK_NOTHROW(check_s1_in_db("edge.tif", v.data(), v.size()));
  v[90] = 0.5f;
  CHECK_THROWS_WITH_AS(check_s1_in_db("edge.tif", v.data(), v.size()), doctest::Contains("edge.tif: 91.0% of"),
                       Error);
  std::vector<float> holes(1000, std::nanf(""));
  std::fill(holes.begin(), holes.begin() + 400, 0.f);
  std::fill(holes.begin() + 400, holes.begin() + 463, 0.3f);  // 63 values, all positive
  CHECK_NOTHROW(check_s1_in_db("holes.tif", holes.data(), holes.size()));
  holes[463] = 0.3f;
  CHECK_THROWS_AS(check_s1_in_db("holes.tif", holes.data(), holes.size()), Error);
  // A triplet whose S1 was re-exported in linear power: refused when loaded, naming it.
  TempDir tmp;
  write_triplet(tmp.path, 1158, 1, 1);
  const Sen12mscrTriplet t = scan_sen12mscr(tmp.path.string()).triplets.at(0);
  Raster s1 = read_geotiff(t.s1);
  for (float& x : s1.data) x = std::pow(10.f, x / 10.f);
  WriteOptions o;
  o.type = SampleType::Float32;
  write_geotiff(t.s1, s1, o);
  Rng rng(1);
  TripletSampleOptions whole;
  whole.augment = AugmentConfig{0, false, false};
  CHECK_THROWS_WITH_AS(load_triplet(t, rng, whole), doctest::Contains((t.s1 + ": 100.0%").c_str()), Error);
}

TEST_CASE("sen12mscr: SEN12MS land cover is paired when present, here or under lc_root") {
  TempDir tmp, lcroot;
  write_triplet(tmp.path, 1158, 1, 1);
  write_triplet(tmp.path, 1158, 1, 2);
  write_triplet(tmp.path, 1868, 5, 3);
  const std::string lc1 = write_member(tmp.path, 1158, "lc", 1, 1);
  const std::string lc2 = write_member(lcroot.path, 1868, "lc", 5, 3);
  write_member(lcroot.path, 1868, "lc", 5, 99);  // land cover without a triplet: ignored
  Sen12mscrIndex a = scan_sen12mscr(tmp.path.string());
  CHECK(a.with_lc == 1);
  CHECK(a.incomplete == 0);
  Sen12mscrIndex b = scan_sen12mscr(tmp.path.string(), lcroot.path.string());
  REQUIRE(b.triplets.size() == 3);
  CHECK(b.with_lc == 2);  // root's own land cover plus lc_root's
  for (auto& t : b.triplets)
    if (t.name() == "ROIs1868_summer_5_p3") CHECK(t.lc == lc2);
  for (auto& t : a.triplets) CHECK(t.lc == (t.name() == "ROIs1158_spring_1_p1" ? lc1 : ""));
  CHECK(b.incomplete == 0);
  // Loaded with the triplet: same window, flip and rotation as the rest.
  TripletSampleOptions o;
  o.augment = AugmentConfig{4, true, true};
  o.with_lc = true;
  for (auto& t : b.triplets) {
    Rng rng(3), again(3);
    if (t.lc.empty()) {
      CHECK_THROWS_WITH_AS(load_triplet(t, rng, o), doctest::Contains("no land-cover file"), Error);
      continue;
    }
    Sample s = load_triplet(t, rng, o);
    AugmentDraw d = draw_augment(again, 8, 8, o.augment);
    Raster want = read_geotiff(t.lc, Window{d.x0, d.y0, 4, 4});
    flip_rotate(want, d.flip, d.rot);
    REQUIRE(s.names.back() == "lc");
    CHECK(s.shapes.back() == Shape{4, 4, 4});
    CHECK(s.values.back() == want.data);
  }
  // The real lc file is 4-band uint8 tagged RGB + alpha and reads as such.
  TiffInfo info = read_tiff_info(real_fixture(
      "sen12ms/AnupamaRajkumar+PolSARFeatureExtraction/features/data/ROIs1158_spring_lc_1_p30.tif"));
  CHECK(info.bands == 4);
  CHECK(info.type == SampleType::UInt8);
}

TEST_CASE("sen12mscr: flat CSV list form") {
  TempDir tmp;
  write_triplet(tmp.path, 1158, 1, 1);
  write_triplet(tmp.path, 1158, 106, 2);
  write_member(tmp.path, 2017, "s1", 63, 1);  // listed below with its S2 files missing
  // DSen2-CR's flattened names: s1/ROIs1970_fall_139_p839.tif etc., here the real files.
  const std::string real = real_fixture(glf);
  const std::string list = tmp / "list.csv";
  spit(list,
       "s1,s2,s2_cloudy\n"
       "# comment\n"
       "ROIs1158_spring_s1/s1_1/ROIs1158_spring_s1_1_p1.tif, ROIs1158_spring_s2/s2_1/ROIs1158_spring_s2_1_p1.tif,"
       "ROIs1158_spring_s2_cloudy/s2_cloudy_1/ROIs1158_spring_s2_cloudy_1_p1.tif\n"
       "\n"
       "ROIs1158_spring_s1/s1_106/ROIs1158_spring_s1_106_p2.tif,ROIs1158_spring_s2/s2_106/"
       "ROIs1158_spring_s2_106_p2.tif,ROIs1158_spring_s2_cloudy/s2_cloudy_106/ROIs1158_spring_s2_cloudy_106_p2.tif\n" +
           real + "s1/ROIs1970_fall_139_p839.tif," + real + "s2_cloudfree/ROIs1970_fall_139_p839.tif," + real +
           "s2_cloudy/ROIs1970_fall_139_p839.tif\n"
           "ROIs2017_winter_s1/s1_63/ROIs2017_winter_s1_63_p1.tif,missing_s2.tif,missing_cloudy.tif\n");
  Sen12mscrIndex idx = read_sen12mscr_list(list);
  CHECK(idx.triplets.size() == 3);
  CHECK(idx.incomplete == 1);
  CHECK(idx.missing_s1 == 0);
  CHECK(idx.missing_s2 == 1);
  CHECK(idx.missing_s2_cloudy == 1);
  CHECK(names(idx.triplets) ==
        std::set<std::string>{"ROIs1158_spring_1_p1", "ROIs1158_spring_106_p2", "ROIs1970_fall_139_p839"});
  CHECK(names(idx.split(Split::Test)) == std::set<std::string>{"ROIs1158_spring_106_p2", "ROIs1970_fall_139_p839"});

  auto bad = [&](const std::string& body, const char* want) {
    const std::string p = tmp / "bad.csv";
    spit(p, body);
    CHECK_THROWS_WITH_AS(read_sen12mscr_list(p), doctest::Contains(want), Error);
  };
  bad("a.tif,b.tif\n", "line 1");
  bad("s1,s2,s2_cloudy\nfoo.tif,ROIs1158_spring_s2_1_p1.tif,ROIs1158_spring_s2_cloudy_1_p1.tif\n", "line 2");
  bad("ROIs1158_spring_s1_1_p1.tif,ROIs1158_spring_s2_1_p2.tif,ROIs1158_spring_s2_cloudy_1_p1.tif\n",
      "not the same season/ROI/patch");
  bad("ROIs1158_spring_s1_1_p1.tif,ROIs1158_spring_s2_cloudy_1_p1.tif,ROIs1158_spring_s2_1_p1.tif\n",
      "column s2 holds a s2_cloudy file");
  bad("ROIs1158_spring_s1_1_p1.tif,x,y\nROIs1158_spring_s1_1_p1.tif,x,y\n", "listed twice");
  bad(",,\n", "line 1: names no file");  // once a null dereference (a crash in every SEN12MS-CR app)
  bad("s1,s2,s2_cloudy\n , ,\n", "line 2: names no file");
  CHECK_THROWS_WITH_AS(read_sen12mscr_list(tmp / "nope.csv"), doctest::Contains("nope.csv"), Error);
}

TEST_CASE("sen12mscr: mislabelled or unknown folders and files are errors naming them") {
  {
    TempDir tmp;
    write_triplet(tmp.path, 1158, 5, 1);
    fs::copy_file(tmp / "ROIs1158_spring_s1/s1_5/ROIs1158_spring_s1_5_p1.tif",
                  tmp / "ROIs1158_spring_s1/s1_5/ROIs1158_spring_s1_6_p1.tif");
    CHECK_THROWS_WITH_AS(scan_sen12mscr(tmp.path.string()), doctest::Contains("ROIs1158_spring_s1_6_p1.tif"), Error);
  }
  {
    TempDir tmp;
    write_triplet(tmp.path, 1158, 5, 1);
    fs::create_directories(tmp / "ROIs1158_spring_s1/s2_5");
    CHECK_THROWS_WITH_AS(scan_sen12mscr(tmp.path.string()), doctest::Contains("s2_5"), Error);
  }
  {
    TempDir tmp;
    fs::create_directories(tmp / "ROIs1158_summer_s1/s1_5");  // 1158 is spring
    CHECK_THROWS_WITH_AS(scan_sen12mscr(tmp.path.string()), doctest::Contains("ROIs1158_summer_s1"), Error);
  }
  {
    TempDir tmp;
    fs::create_directories(tmp / "ROIs1158_spring_s3");
    CHECK_THROWS_WITH_AS(scan_sen12mscr(tmp.path.string()), doctest::Contains("unknown folder"), Error);
  }
  {
    TempDir tmp;
    CHECK_THROWS_WITH_AS(scan_sen12mscr(tmp.path.string()), doctest::Contains("no SEN12MS-CR patches"), Error);
    CHECK_THROWS_WITH_AS(scan_sen12mscr(tmp / "missing"), doctest::Contains("not a directory"), Error);
  }
}

TEST_CASE("sen12mscr: a real triplet becomes a normalised, consistently augmented sample") {
  Sen12mscrTriplet t;
  t.s1 = real_fixture(glf + "s1/ROIs1970_fall_139_p839.tif");
  t.s2 = real_fixture(glf + "s2_cloudfree/ROIs1970_fall_139_p839.tif");
  t.s2_cloudy = real_fixture(glf + "s2_cloudy/ROIs1970_fall_139_p839.tif");
  Raster s1 = read_geotiff(t.s1), s2 = read_geotiff(t.s2), cl = read_geotiff(t.s2_cloudy);

  TripletSampleOptions o;  // 128 crop of 256, flip + rot
  o.keep_raw_cloudy = true;
  o.mask_fn = [](const Raster& raw, int code) {  // a stand-in detector: bright B2 (band index 1) is "cloud"
    REQUIRE(code == 0);  // the loader turned the crop itself
    std::vector<float> m(size_t(raw.width) * raw.height);
    for (size_t i = 0; i < m.size(); ++i) m[i] = raw.band(1)[i] > 2500 ? 1.f : 0.f;
    return m;
  };
  for (uint64_t seed : {1, 2, 3, 4, 5, 6}) {
    CAPTURE(seed);
    Rng rng(seed), again(seed);
    Sample s = load_triplet(t, rng, o);
    const AugmentDraw d = draw_augment(again, 256, 256, o.augment);  // the draw load_triplet made
    REQUIRE(s.names == std::vector<std::string>{"cloudy", "target", "sar", "cloudy_raw", "mask"});
    CHECK(s.shapes[0] == Shape{13, 128, 128});
    CHECK(s.shapes[2] == Shape{2, 128, 128});
    CHECK(s.shapes[4] == Shape{1, 128, 128});
    // Expected: crop the full rasters at the draw, flip/rotate, normalise.
    auto expect = [&](const Raster& full, bool is_s1) {
      Raster c = crop_raster(full, d.x0, d.y0, 128);
      flip_rotate(c, d.flip, d.rot);
      std::vector<float> raw = c.data;
      if (is_s1)
        normalize_s1(c.data.data(), 128 * 128);
      else
        normalize_s2(c.data.data(), c.data.size());
      return std::make_pair(c.data, raw);
    };
    auto [cloudy, cloudy_raw] = expect(cl, false);
    check_close(s.values[0], cloudy, 0, 0, "cloudy");
    check_close(s.values[1], expect(s2, false).first, 0, 0, "target");
    check_close(s.values[2], expect(s1, true).first, 0, 0, "sar");
    check_close(s.values[3], cloudy_raw, 0, 0, "cloudy_raw");
    for (size_t i = 0; i < 128 * 128; ++i) REQUIRE(s.values[4][i] == (cloudy_raw[128 * 128 + i] > 2500 ? 1.f : 0.f));
    for (float v : s.values[2]) REQUIRE((v >= 0 && v <= 2));
    for (float v : s.values[0]) REQUIRE((v >= 0 && v <= 5));
  }
  // No augmentation: the top-left 128x128, as the reference validates.
  TripletSampleOptions val;
  val.augment = AugmentConfig{128, false, false};
  Rng rng(1);
  Sample v = load_triplet(t, rng, val);
  CHECK(v.values[1][0] == s2.band(0)[0] / 2000.f);
  CHECK(v.values[1][127] == s2.band(0)[127] / 2000.f);
  CHECK(v.values[1][128] == s2.band(0)[256] / 2000.f);
  // A crop larger than the image: an error naming the cloudy file and both sizes.
  val.augment = AugmentConfig{257, false, false};
  const std::string too_big = t.s2_cloudy + ": a 257x257 crop does not fit its 256x256 pixels";
  CHECK_THROWS_WITH_AS(load_triplet(t, rng, val), doctest::Contains(too_big.c_str()), Error);
}

TEST_CASE("sen12mscr: with the flips left to the device, flip_rotate of the sample is the host's sample bit for bit") {
  Sen12mscrTriplet t;
  t.s1 = real_fixture(glf + "s1/ROIs1970_fall_139_p839.tif");
  t.s2 = real_fixture(glf + "s2_cloudfree/ROIs1970_fall_139_p839.tif");
  t.s2_cloudy = real_fixture(glf + "s2_cloudy/ROIs1970_fall_139_p839.tif");
  TripletSampleOptions host;  // 128 crop of 256, flip + rot, the real detector (cloud and shadow here)
  host.keep_raw_cloudy = true;
  host.mask_fn = [](const Raster& raw, int code) {
    CloudDetectorOptions d;
    d.dihedral_code = code;
    return cloud_shadow_mask(raw.data.data(), raw.bands, raw.height, raw.width, d);
  };
  TripletSampleOptions device = host;
  device.flip_rotate_on_device = true;
  std::set<int> codes;
  size_t masked = 0;
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    CAPTURE(seed);
    Rng a(seed), b(seed), again(seed);
    const Sample want = load_triplet(t, a, host);
    const Sample got = load_triplet(t, b, device);
    const AugmentDraw d = draw_augment(again, 256, 256, host.augment);
    REQUIRE(got.names == std::vector<std::string>{"cloudy", "target", "sar", "cloudy_raw", "mask", "augment"});
    REQUIRE(got.values[5] == std::vector<float>{float(4 * d.flip + d.rot)});
    codes.insert(4 * d.flip + d.rot);
    const Tensor code = Tensor::from_vector({1}, got.values[5]);
    for (size_t f = 0; f < 5; ++f) {  // cloudy, target, sar, cloudy_raw, mask: each turned on "the device"
      CAPTURE(got.names[f]);
      REQUIRE(got.shapes[f] == want.shapes[f]);
      std::vector<int64_t> batch = got.shapes[f].vec();
      batch.insert(batch.begin(), 1);
      const Tensor turned = flip_rotate(Tensor::from_vector(Shape(batch), got.values[f]), code);
      CHECK(turned.to_vector() == want.values[f]);
      if (d.flip != 0 || d.rot != 0) CHECK(got.values[f] != want.values[f]);  // the control: left as read
    }
    for (float m : want.values[4]) masked += m != 0;
  }
  CHECK(codes.size() >= 6);  // the seeds reach both quarter-turn parities and every flip
  CHECK(masked > 12 * 128 * 128 / 50);  // the masks have cloud or shadow to move
  // A quarter turn of a non-square image would change the batch's shape (the loader would copy it in
  // as the first sample's layout): refused up front, on the host as on the device.
  TempDir tmp;
  Sen12mscrTriplet wide;
  WriteOptions f32, u16;
  f32.type = SampleType::Float32;
  wide.s1 = tmp / "s1.tif", wide.s2 = tmp / "s2.tif", wide.s2_cloudy = tmp / "cl.tif";
  write_geotiff(wide.s1, random_raster(2, 12, 16, -30, 0, 1, SampleType::Float32), f32);
  write_geotiff(wide.s2, random_raster(13, 12, 16, 0, 9000, 2), u16);
  write_geotiff(wide.s2_cloudy, random_raster(13, 12, 16, 0, 9000, 3), u16);
  TripletSampleOptions whole;
  whole.augment = AugmentConfig{0, false, true};
  whole.flip_rotate_on_device = true;
  Rng rng(1);
  CHECK_THROWS_WITH_AS(load_triplet(wide, rng, whole), doctest::Contains("a 16x12 image cannot be turned a quarter"),
                       Error);
  whole.flip_rotate_on_device = false;
  CHECK_THROWS_WITH_AS(load_triplet(wide, rng, whole), doctest::Contains("a 16x12 image cannot be turned a quarter"),
                       Error);
  whole.augment.flip_rotate = false;  // no turns: read as it is
  CHECK(load_triplet(wide, rng, whole).shapes[0] == Shape{13, 12, 16});
}

TEST_CASE("sen12mscr: wrong band count or type, and NaN in S1") {
  TempDir tmp;
  Sen12mscrTriplet t;
  t.s1 = real_fixture(glf + "s2_cloudfree/ROIs1970_fall_139_p839.tif");  // an S2 file where S1 belongs
  t.s2 = real_fixture(glf + "s2_cloudfree/ROIs1970_fall_139_p839.tif");
  t.s2_cloudy = real_fixture(glf + "s2_cloudy/ROIs1970_fall_139_p839.tif");
  Rng rng(1);
  CHECK_THROWS_WITH_AS(load_triplet(t, rng, {}), doctest::Contains("must be 2-band float32 but is 13-band uint16"),
                       Error);
  t.s1 = real_fixture(glf + "s1/ROIs1970_fall_139_p839.tif");
  t.s2 = t.s1;
  CHECK_THROWS_WITH_AS(load_triplet(t, rng, {}), doctest::Contains("cloud-free S2 must be 13-band uint16"), Error);

  // A 16x16 triplet whose S1 has NaNs: they become the window mean (in dB) before scaling.
  t.s1 = write_member(tmp.path, 1158, "s1", 1, 1, 16);
  t.s2 = write_member(tmp.path, 1158, "s2", 1, 1, 16);
  t.s2_cloudy = write_member(tmp.path, 1158, "s2_cloudy", 1, 1, 16);
  Raster s1 = read_geotiff(t.s1);
  s1.data[5] = NAN;
  s1.data[300] = NAN;
  WriteOptions o;
  o.type = SampleType::Float32;
  write_geotiff(t.s1, s1, o);
  double sum = 0;
  for (float v : s1.data)
    if (!std::isnan(v)) sum += v;
  const float mean = float(sum / (s1.data.size() - 2));
  TripletSampleOptions whole;
  whole.augment = AugmentConfig{0, false, false};
  Sample s = load_triplet(t, rng, whole);
  CHECK(s.values[2][5] == doctest::Approx(2 * (std::clamp(mean, -25.f, 0.f) + 25) / 25).epsilon(1e-6));
  CHECK(s.values[2][300] == doctest::Approx(2 * (std::clamp(mean, -32.5f, 0.f) + 32.5) / 32.5).epsilon(1e-6));
  CHECK(s.shapes[0] == Shape{13, 16, 16});
}
