// test_cloud_scene.cpp: the cloud / shadow detector over a scene in stripes (data/cloud_scene.h) is the
// whole-image detector bit for bit: on a real cloudy Sentinel-2 scene, with and without pixels that
// have no data, in stripes from one row to more than the scene, and on a scene smaller than the halo.
#include <algorithm>
#include <random>

#include "data/cloud_detector.h"
#include "data/cloud_scene.h"
#include "data/geotiff.h"
#include "data/sentinel2.h"
#include "kernels/common/error.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::data;

namespace {

const char* kCloudy = "sen12ms_cr/xufangchn+GLF-CR/data/s2_cloudy/ROIs1970_fall_139_p839.tif";

// A reader over an image in memory (13, H, W) and its validity (empty: every pixel has data).
SceneReader reader_of(const std::vector<float>& dn, int H, int W, const std::vector<uint8_t>& valid, int* reads) {
  SceneReader r;
  r.height = H, r.width = W;
  r.read = [&dn, &valid, H, W, reads](int y0, int rows, std::vector<float>& out, std::vector<uint8_t>& v) {
    REQUIRE((y0 >= 0 && rows > 0 && y0 + rows <= H));
    const size_t hw = size_t(H) * size_t(W), n = size_t(rows) * size_t(W);
    out.resize(size_t(kS2Bands) * n);
    for (int c = 0; c < kS2Bands; ++c)
      std::copy_n(dn.data() + size_t(c) * hw + size_t(y0) * size_t(W), n, out.data() + size_t(c) * n);
    if (!valid.empty()) v.assign(valid.begin() + ptrdiff_t(size_t(y0) * W), valid.begin() + ptrdiff_t(size_t(y0 + rows) * W));
    ++*reads;
  };
  return r;
}

// The scene in stripes of `stripe` rows against detect_clouds on the whole image; keep_bytes: pass 1's
// limit on kept indices (0: with nodata, count first and keep none).
void check_stripes(const std::vector<float>& dn, int H, int W, const std::vector<uint8_t>& valid, int stripe,
                   size_t keep_bytes = kSceneKeepBytes) {
  CAPTURE(stripe);
  CAPTURE(keep_bytes);
  CloudDetectorOptions o;
  o.valid = valid.empty() ? nullptr : valid.data();
  const CloudShadowMasks want = detect_clouds(dn.data(), kS2Bands, H, W, o);
  int reads = 0;
  int64_t progress = 0;
  const SceneReader r = reader_of(dn, H, W, valid, &reads);
  const SceneThresholds t = scene_shadow_thresholds(r, stripe, [&](int64_t rows) { progress = rows; }, keep_bytes);
  // Read once, or twice when the count of pixels with data must come before the sums.
  const int passes = scene_counts_first(H, W, !valid.empty(), keep_bytes) ? 2 : 1;
  CHECK(passes == (!valid.empty() && keep_bytes == 0 ? 2 : 1));
  CHECK(progress == passes * H);
  CHECK(reads == passes * ((H + stripe - 1) / stripe));
  CHECK(t.csi == want.shadow_csi_threshold);  // bit for bit: the same floats summed in the same order
  CHECK(t.blue == want.shadow_blue_threshold);
  CHECK(t.with_data == (valid.empty() ? size_t(H) * W : size_t(std::count(valid.begin(), valid.end(), 1))));
  std::vector<uint8_t> cloud(size_t(H) * W, 9), shadow(size_t(H) * W, 9);
  int next = 0;
  scene_masks(r, t, CloudDetectorOptions{}, stripe, [&](const SceneStripe& s) {
    REQUIRE(s.y0 == next);
    REQUIRE(s.width == W);
    CHECK((s.valid != nullptr) == !valid.empty());
    std::copy_n(s.cloud, size_t(s.rows) * W, cloud.begin() + ptrdiff_t(size_t(s.y0) * W));
    std::copy_n(s.shadow, size_t(s.rows) * W, shadow.begin() + ptrdiff_t(size_t(s.y0) * W));
    next += s.rows;
  });
  CHECK(next == H);
  size_t cloud_diff = 0, shadow_diff = 0;
  for (size_t p = 0; p < cloud.size(); ++p) cloud_diff += cloud[p] != want.cloud[p], shadow_diff += shadow[p] != want.shadow[p];
  CHECK(cloud_diff == 0);
  CHECK(shadow_diff == 0);
}

}  // namespace

TEST_CASE("cloud scene: stripes of a real cloudy scene give the whole-image masks and thresholds, bit for bit") {
  const Raster s2 = read_geotiff(test::real_fixture(kCloudy));
  REQUIRE(s2.bands == kS2Bands);
  const CloudShadowMasks whole = detect_clouds(s2);
  REQUIRE(whole.cloud_fraction() > 0.05);  // a scene with clouds and shadows: the masks have edges to cut
  REQUIRE(whole.shadow_fraction() > 0.001);
  for (int stripe : {1, 7, 8, 15, 64, 100, 256, 1000}) check_stripes(s2.data, s2.height, s2.width, {}, stripe);
  // The left 48 columns without data (zeroed): the thresholds are the other pixels'.
  std::vector<float> edge = s2.data;
  const size_t hw = size_t(s2.height) * size_t(s2.width);
  std::vector<uint8_t> valid(hw, 1);
  for (size_t q = 0; q < hw; ++q)
    if (int(q % size_t(s2.width)) < 48) {
      valid[q] = 0;
      for (int c = 0; c < kS2Bands; ++c) edge[size_t(c) * hw + q] = 0.f;
    }
  for (int stripe : {1, 9, 100})
    for (size_t keep : {kSceneKeepBytes, size_t(0)}) check_stripes(edge, s2.height, s2.width, valid, stripe, keep);
}

TEST_CASE("cloud scene: a scene smaller than the halo, and one row, in stripes of 1 and 2") {
  const Raster s2 = read_geotiff(test::real_fixture(kCloudy));
  for (int H : {1, 2, 3, 5, 16}) {
    CAPTURE(H);
    const int W = 11;
    std::vector<float> dn(size_t(kS2Bands) * size_t(H) * W);
    const size_t hw = size_t(s2.height) * size_t(s2.width);
    for (int c = 0; c < kS2Bands; ++c)
      for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x)  // a corner of the real scene (cloud edges in it)
          dn[(size_t(c) * H + size_t(y)) * W + size_t(x)] = s2.data[size_t(c) * hw + size_t(100 + y) * s2.width + 40 + x];
    for (int stripe : {1, 2, 100}) check_stripes(dn, H, W, {}, stripe);
  }
}

namespace {

// numpy's float32 pairwise sum as the recursion over a whole array (numpy's pairwise_sum), and the
// threshold formula, written out here as the reference for the pulled sums, which hold one leaf.
float numpy_pairwise(const float* a, size_t n) {
  if (n < 8) {
    float s = 0.f;
    for (size_t i = 0; i < n; ++i) s += a[i];
    return s;
  }
  if (n <= 128) {
    float r[8];
    for (int k = 0; k < 8; ++k) r[k] = a[k];
    size_t i = 8;
    for (; i < n - n % 8; i += 8)
      for (int k = 0; k < 8; ++k) r[k] += a[i + k];
    float s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) s += a[i];
    return s;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return numpy_pairwise(a, n2) + numpy_pairwise(a + n2, n - n2);
}
float numpy_threshold(const std::vector<float>& v, double frac) {
  const float mn = *std::min_element(v.begin(), v.end());
  const float mean = float(double(numpy_pairwise(v.data(), v.size())) / double(v.size()));
  return float(double(mn) + frac * double(mean - mn));
}

}  // namespace

TEST_CASE("cloud scene: the pulled shadow thresholds are numpy's over the whole arrays, taking at most 128 values at a time, in order") {
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> u(0.01f, 0.6f);
  for (size_t n : {size_t(1), size_t(7), size_t(8), size_t(127), size_t(128), size_t(129), size_t(1000), size_t(4099),
                   size_t(100003)}) {
    CAPTURE(n);
    std::vector<float> csi(n), blue(n);
    for (size_t i = 0; i < n; ++i) csi[i] = u(gen), blue[i] = u(gen) * 0.5f;
    size_t at = 0, largest = 0;
    float t3 = 0, t4 = 0;
    shadow_thresholds_pulled(
        n,
        [&](float* c, float* b, size_t k) {
          largest = std::max(largest, k);
          std::copy_n(csi.data() + at, k, c);
          std::copy_n(blue.data() + at, k, b);
          at += k;
        },
        t3, t4);
    CHECK(at == n);  // every value once, in order
    CHECK(largest <= 128);
    CHECK(t3 == numpy_threshold(csi, 3.0 / 4.0));
    CHECK(t4 == numpy_threshold(blue, 5.0 / 6.0));
  }
  float t3 = 0, t4 = 0;
  CHECK_THROWS_WITH_AS(shadow_thresholds_pulled(0, [](float*, float*, size_t) {}, t3, t4),
                       doctest::Contains("no pixel of the window has data"), Error);
}

TEST_CASE("cloud scene: no pixel with data, a reader of the wrong size and bad stripes are errors") {
  std::vector<float> dn(size_t(kS2Bands) * 4 * 5, 1000.f);
  std::vector<uint8_t> none(20, 0);
  int reads = 0;
  const SceneReader r = reader_of(dn, 4, 5, none, &reads);
  const SceneThresholds t = scene_shadow_thresholds(r, 2, nullptr);
  CHECK(t.with_data == 0);
  CHECK(scene_shadow_thresholds(r, 2, nullptr, 0).with_data == 0);  // counted first: the same answer
  CHECK_THROWS_WITH_AS(scene_masks(r, t, CloudDetectorOptions{}, 2, [](const SceneStripe&) {}),
                       doctest::Contains("no pixel of the scene has data"), Error);
  SceneReader shortr = r;
  shortr.read = [](int, int, std::vector<float>& out, std::vector<uint8_t>&) { out.assign(7, 0.f); };
  CHECK_THROWS_WITH_AS(scene_shadow_thresholds(shortr, 2, nullptr), doctest::Contains("the reader gave 7 values"), Error);
  CHECK_THROWS_WITH_AS(scene_shadow_thresholds(r, 0, nullptr), doctest::Contains("stripe of 0 rows"), Error);
  CloudDetectorOptions turned;
  turned.dihedral_code = 1;
  SceneThresholds some;
  some.with_data = 1;
  CHECK_THROWS_WITH_AS(scene_masks(r, some, turned, 2, [](const SceneStripe&) {}),
                       doctest::Contains("examined as stored"), Error);
}
