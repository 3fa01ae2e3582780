// test_cloud_detector.cpp: the DSen2-CR cloud/shadow detector (§3) against the
// independent numpy/scipy reference (tests/torch/gen_expected_masks.py, run on
// the real Sentinel-2 fixtures) and on hand-made scenes whose answer follows
// from the rules themselves.
#include <filesystem>
#include <sstream>

#include "data/augment.h"
#include "data/cloud_detector.h"
#include "kernels/common/error.h"
#include "engine/io/safetensors.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::data;

namespace {

// Bits packed 16 per float by gen_expected_masks.py (bit k of value i = pixel 16 i + k).
std::vector<uint8_t> unpack16(const Tensor& t, size_t n) {
  std::vector<float> v = t.to_vector();
  std::vector<uint8_t> out(n);
  for (size_t p = 0; p < n; ++p) out[p] = (int64_t(v[p / 16]) >> (p % 16)) & 1;
  return out;
}

size_t count_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  size_t d = 0;
  for (size_t i = 0; i < a.size(); ++i) d += a[i] != b[i];
  return d;
}

// A 13-band (13, H, W) scene filled with one spectrum (DN).
struct Scene {
  int h, w;
  std::vector<float> dn;
  Scene(int h_, int w_, const std::vector<float>& spectrum) : h(h_), w(w_), dn(size_t(13) * h_ * w_) {
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) set(y, x, spectrum);
  }
  void set(int y, int x, const std::vector<float>& s) {
    for (int c = 0; c < 13; ++c) dn[(size_t(c) * h + y) * w + x] = s[c];
  }
  void block(int y0, int x0, int size, const std::vector<float>& s) {
    for (int y = y0; y < y0 + size; ++y)
      for (int x = x0; x < x0 + size; ++x) set(y, x, s);
  }
};

//                                   B1   B2   B3   B4   B5    B6    B7    B8    B8A   B9   B10 B11   B12
const std::vector<float> kGrass = {1300, 1000, 900, 700, 1200, 2400, 2900, 2800, 3100, 900, 15, 1900, 1000};
const std::vector<float> kCloud = {5000, 5200, 5100, 5300, 5400, 5500, 5500, 5600, 5600, 2500, 90, 4000, 3000};
const std::vector<float> kDark = {1100, 700, 500, 350, 400, 600, 700, 600, 700, 300, 10, 450, 250};
const std::vector<float> kSnow = {6000, 7000, 7000, 7000, 7000, 7000, 7000, 7000, 7000, 3000, 60, 700, 600};

}  // namespace

TEST_CASE("cloud detector: agrees with the scipy reference on the real Sentinel-2 fixtures") {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(test::fixture("masks"))) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 8);
  int checked = 0;  // cases whose source file the repository carries
  for (const auto& path : files) {
    SafetensorsFile ref = load_safetensors(path.string());
    const std::string source = ref.metadata.at("source");
    Window win;
    char comma;
    std::istringstream(ref.metadata.at("window")) >> win.x0 >> comma >> win.y0 >> comma >> win.width >> comma >>
        win.height;
    if (!test::has_real_fixture(test::real_rel(source))) {
      MESSAGE("skipped ", path.filename().string(), ": ", source, " is not carried by the repository");
      continue;
    }
    ++checked;
    Raster s2 = read_geotiff(test::real_fixture(test::real_rel(source)), win);
    REQUIRE(s2.width == win.width);
    REQUIRE(s2.height == win.height);
    CloudShadowMasks m = detect_clouds(s2);
    const size_t n = size_t(s2.width) * s2.height;
    std::vector<uint8_t> cloud = unpack16(ref.at("cloud_bits"), n), shadow = unpack16(ref.at("shadow_bits"), n);
    size_t dc = count_diff(m.cloud, cloud), ds = count_diff(m.shadow, shadow);
    // The combined 3-valued map, the thing the loss sees.
    size_t dmap = 0;
    std::vector<int8_t> map = m.map();
    for (size_t p = 0; p < n; ++p) dmap += map[p] != (cloud[p] ? 1 : (shadow[p] ? -1 : 0));
    double agree = 1.0 - double(dmap) / double(n);
    MESSAGE(path.filename().string(), ": cloud ", m.cloud_fraction(), " shadow ", m.shadow_fraction(),
            " | differing pixels: cloud ", dc, ", shadow ", ds, ", map ", dmap, " of ", n, " (agreement ", agree, ")");
    CHECK(agree >= 0.999);
    CHECK(dc == 0);  // exact agreement is expected: only ties could differ
    CHECK(ds == 0);
    std::vector<float> t = ref.at("thresholds").to_vector();
    CHECK(m.shadow_csi_threshold == doctest::Approx(t[0]).epsilon(1e-6).scale(0));
    CHECK(m.shadow_blue_threshold == doctest::Approx(t[1]).epsilon(1e-6).scale(0));
    if (const Tensor* score = ref.find("score")) {
      test::check_close(m.cloud_score, score->to_vector(), 1e-6, 1e-6, path.filename().string() + " score");
    }
  }
  CHECK(checked >= 6);  // EuroSAT and GLF-CR cases: 2 clear tiles, 4 patches (cloudy, clear, a crop)
}

TEST_CASE("cloud detector: a bright block is cloud, a dark block is shadow, the rest is clear") {
  Scene s(48, 64, kGrass);
  s.block(8, 8, 16, kCloud);
  s.block(26, 40, 14, kDark);
  CloudShadowMasks m = detect_clouds(s.dn.data(), 13, s.h, s.w);
  std::vector<int8_t> map = m.map();
  auto at = [&](int y, int x) { return int(map[size_t(y) * s.w + x]); };
  CHECK(at(16, 16) == 1);   // block centre
  // Grass scores r(B1 + B10; 0.15, 0.20) = (0.1315 - 0.15) / 0.05 = -0.37 (no clamp
  // before the box mean), so a block corner averages 16 ones with 33 x -0.37: 0.08.
  CHECK(at(8, 8) == 0);
  CHECK(at(9, 9) == 1);  // (25 - 24 x 0.37) / 49 = 0.33
  CHECK(at(33, 47) == -1);  // dark block centre
  CHECK(at(45, 5) == 0);    // grass far from both
  CHECK(at(5, 60) == 0);
  // The 7x7 box mean spreads the cloud: 1 px outside the block 3 of 7 columns are
  // cloud, (3 - 4 x 0.37) / 7 = 0.217 >= 0.2; 2 px outside (2 - 5 x 0.37) / 7 = 0.02.
  CHECK(at(16, 8 + 16) == 1);
  CHECK(at(16, 8 + 16 + 1) == 0);
  CHECK(m.cloud_fraction() > 16.0 * 16 / (48 * 64));
  CHECK(m.cloud_fraction() < 24.0 * 24 / (48 * 64));
  // Non-zero = 1 for the loss, and cloud_cover_fraction agrees with the masks.
  std::vector<float> bin = m.binary();
  CHECK(bin[size_t(16) * s.w + 16] == 1.f);
  CHECK(bin[size_t(33) * s.w + 47] == 1.f);
  CHECK(bin[size_t(45) * s.w + 5] == 0.f);
  CHECK(cloud_cover_fraction(s.dn.data(), 13, s.h, s.w) == m.cloud_fraction());
}

TEST_CASE("cloud detector: score of an all-cloud image is the zero-filled 7x7 box mean") {
  // Every band test saturates at 1, closing keeps 1, so the score is (pixels of
  // the 7x7 window inside the image) / 49: 16/49 in a corner, 28/49 on an edge.
  Scene s(20, 20, kCloud);
  std::vector<double> score = cloud_score(s.dn.data(), 13, s.h, s.w);
  CHECK(score[0] == doctest::Approx(16.0 / 49).epsilon(1e-12));
  CHECK(score[10] == doctest::Approx(28.0 / 49).epsilon(1e-12));
  CHECK(score[size_t(1) * 20 + 1] == doctest::Approx(25.0 / 49).epsilon(1e-12));
  CHECK(score[size_t(10) * 20 + 10] == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(cloud_cover_fraction(s.dn.data(), 13, s.h, s.w) == 1.0);
}

TEST_CASE("cloud detector: snow (bright visible, dark SWIR) is not cloud") {
  Scene s(24, 24, kSnow);
  CloudShadowMasks m = detect_clouds(s.dn.data(), 13, s.h, s.w);
  CHECK(m.cloud_fraction() == 0.0);
  for (double v : m.cloud_score) CHECK(v == 1e-5);  // NDSI test drives the score to the clip floor
}

TEST_CASE("cloud detector: a clear uniform scene has no cloud and no shadow") {
  Scene s(32, 32, kGrass);
  CloudShadowMasks m = detect_clouds(s.dn.data(), 13, s.h, s.w);
  CHECK(m.cloud_fraction() == 0.0);
  CHECK(m.shadow_fraction() == 0.0);  // CSI < T3 is strict and T3 = CSI everywhere
}

TEST_CASE("cloud detector: the B1+B10 range is the DSen2-CR one, the UnCRtainTS one is an option") {
  // B1 + B10 = 0.17 + 0.0: inside DSen2-CR's (0.15, 0.20) ramp, below UnCRtainTS's (0.40, 0.90).
  std::vector<float> haze = kCloud;
  haze[0] = 1700;
  haze[10] = 0;
  Scene s(20, 20, haze);
  CHECK(cloud_cover_fraction(s.dn.data(), 13, s.h, s.w) > 0.5);
  CloudDetectorOptions uc;
  uc.b1_b10_lo = 0.40;
  uc.b1_b10_hi = 0.90;
  CHECK(cloud_cover_fraction(s.dn.data(), 13, s.h, s.w, uc) == 0.0);
}

TEST_CASE("cloud detector: bad input raises an error naming the problem") {
  std::vector<float> dn(size_t(12) * 8 * 8, 100.f);
  CHECK_THROWS_WITH_AS(detect_clouds(dn.data(), 12, 8, 8), doctest::Contains("12 bands"), Error);
  CHECK_THROWS_AS(detect_clouds(dn.data(), 13, 0, 8), Error);
  Raster r;
  r.bands = 13;
  r.height = 8;
  r.width = 8;  // data left empty: size mismatch
  CHECK_THROWS_AS(detect_clouds(r), Error);
}

TEST_CASE("cloud detector: a dihedral code examines the turned window bit for bit, without moving it") {
  // A real cloudy SEN12MS-CR patch with cloud and shadow in it; a non-square window, so a quarter
  // turn that mixed up height and width would show.
  const std::string rel = "sen12ms_cr/xufangchn+GLF-CR/data/s2_cloudy/ROIs1970_fall_139_p839.tif";
  REQUIRE_MESSAGE(test::has_real_fixture(rel), rel, " is one of the carried fixtures");
  const Raster s2 = read_geotiff(test::real_fixture(rel), Window{40, 24, 120, 104});
  const int h = s2.height, w = s2.width;
  const CloudShadowMasks plain = detect_clouds(s2);
  CHECK(plain.cloud_fraction() > 0.02);  // both parts of the detector have something to find
  CHECK(plain.shadow_fraction() > 0.002);
  for (int code = 0; code < 12; ++code) {
    CAPTURE(code);
    const int flip = code / 4, rot = code % 4;
    std::vector<float> turned(s2.data.size());
    flip_rotate(s2.data.data(), turned.data(), 13, h, w, flip, rot);
    const int th = rot % 2 ? w : h, tw = rot % 2 ? h : w;
    const CloudShadowMasks want = detect_clouds(turned.data(), 13, th, tw);
    CloudDetectorOptions o;
    o.dihedral_code = code;
    const CloudShadowMasks got = detect_clouds(s2.data.data(), 13, h, w, o);
    CHECK(got.height == th);
    CHECK(got.width == tw);
    CHECK(got.cloud_score == want.cloud_score);  // doubles, compared exactly
    CHECK(got.cloud == want.cloud);
    CHECK(got.shadow == want.shadow);
    CHECK(got.shadow_csi_threshold == want.shadow_csi_threshold);
    CHECK(got.shadow_blue_threshold == want.shadow_blue_threshold);
    if (code != 0) CHECK(got.map() != plain.map());  // the control: no other code is the identity
    std::vector<float> back(got.cloud.size());
    const std::vector<float> bin = got.binary();
    undo_flip_rotate(bin.data(), back.data(), 1, h, w, flip, rot);
    CHECK(back == plain.binary());  // and the detector commutes with the flips here (reference §3)
  }
  CloudDetectorOptions bad;
  bad.dihedral_code = 12;
  CHECK_THROWS_WITH_AS(detect_clouds(s2, bad), doctest::Contains("dihedral code 12"), Error);
}
