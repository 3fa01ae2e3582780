// test_augment.cpp: flips and rot90 against hand-computed small arrays (numpy
// semantics), the crop draw range, one draw shared by all of a sample's rasters, and the batch op
// that applies the draw on the tensor's device (engine/ops/augment.h) equal to the host's.
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "backends/cuda/backend.h"
#include "data/augment.h"
#include "engine/ops/augment.h"
#include "tests/common/check.h"
#include "tests/data/data_test_util.h"

using namespace nimbus;
using namespace nimbus::data;
using namespace nimbus::test;

namespace {
std::vector<float> fr(const std::vector<float>& in, int c, int h, int w, int flip, int rot) {
  std::vector<float> out(in.size());
  flip_rotate(in.data(), out.data(), c, h, w, flip, rot);
  return out;
}
}  // namespace

TEST_CASE("augment: flips and counter-clockwise rot90 like numpy on a 2x3 array") {
  const std::vector<float> m = {1, 2, 3, 4, 5, 6};  // [[1,2,3],[4,5,6]]
  CHECK(fr(m, 1, 2, 3, 0, 0) == m);
  CHECK(fr(m, 1, 2, 3, 0, 1) == std::vector<float>{3, 6, 2, 5, 1, 4});  // np.rot90: [[3,6],[2,5],[1,4]]
  CHECK(fr(m, 1, 2, 3, 0, 2) == std::vector<float>{6, 5, 4, 3, 2, 1});
  CHECK(fr(m, 1, 2, 3, 0, 3) == std::vector<float>{4, 1, 5, 2, 6, 3});  // [[4,1],[5,2],[6,3]]
  CHECK(fr(m, 1, 2, 3, 1, 0) == std::vector<float>{4, 5, 6, 1, 2, 3});  // flipud
  CHECK(fr(m, 1, 2, 3, 2, 0) == std::vector<float>{3, 2, 1, 6, 5, 4});  // fliplr
  CHECK(fr(m, 1, 2, 3, 1, 1) == std::vector<float>{6, 3, 5, 2, 4, 1});  // rot90(flipud): flip first
  CHECK(fr(m, 1, 2, 3, 2, 3) == std::vector<float>{6, 3, 5, 2, 4, 1});  // rot90(fliplr, 3)
  // Channels move together; the raster form swaps width and height for odd k.
  Raster r;
  r.bands = 2, r.height = 2, r.width = 3;
  r.data = {1, 2, 3, 4, 5, 6, 10, 20, 30, 40, 50, 60};
  flip_rotate(r, 0, 1);
  CHECK(r.height == 3);
  CHECK(r.width == 2);
  CHECK(r.data == std::vector<float>{3, 6, 2, 5, 1, 4, 30, 60, 20, 50, 10, 40});
  CHECK_THROWS_AS(fr(m, 1, 2, 3, 3, 0), Error);
}

TEST_CASE("augment: draws cover offsets 0..127, every flip and rotation, deterministically") {
  AugmentConfig cfg;  // 128 of 256
  Rng rng(1);
  std::set<int> ys, xs, flips, rots;
  for (int i = 0; i < 4000; ++i) {
    AugmentDraw d = draw_augment(rng, 256, 256, cfg);
    ys.insert(d.y0), xs.insert(d.x0), flips.insert(d.flip), rots.insert(d.rot);
  }
  CHECK(*ys.begin() == 0);
  CHECK(*ys.rbegin() == 127);
  CHECK(ys.size() == 128);
  CHECK(xs.size() == 128);
  CHECK(flips == std::set<int>{0, 1, 2});
  CHECK(rots == std::set<int>{0, 1, 2, 3});
  Rng a(9), b(9);
  for (int i = 0; i < 10; ++i) {
    AugmentDraw da = draw_augment(a, 256, 256, cfg), db = draw_augment(b, 256, 256, cfg);
    CHECK((da.y0 == db.y0 && da.x0 == db.x0 && da.flip == db.flip && da.rot == db.rot));
  }
  // Off switches, other crop sizes, and a crop bigger than the image.
  AugmentConfig fixed{128, false, false};
  AugmentDraw d = draw_augment(rng, 256, 256, fixed);
  CHECK((d.y0 == 0 && d.x0 == 0 && d.flip == 0 && d.rot == 0));
  Window w = crop_window(d, 256, 256, fixed);
  CHECK((w.x0 == 0 && w.y0 == 0 && w.width == 128 && w.height == 128));
  AugmentConfig small{32, true, true};
  for (int i = 0; i < 100; ++i) {
    AugmentDraw s = draw_augment(rng, 40, 50, small);
    CHECK((s.y0 >= 0 && s.y0 < 8 && s.x0 >= 0 && s.x0 < 18));
  }
  CHECK(crop_window(d, 64, 64, AugmentConfig{0, true, true}).width == 64);
  CHECK(draw_augment(rng, 64, 64, AugmentConfig{64, true, true}).y0 == 0);
  CHECK_THROWS_WITH_AS(draw_augment(rng, 64, 64, cfg), doctest::Contains("crop 128"), Error);
}

TEST_CASE("augment: one draw keeps a sample's rasters aligned") {
  // Three rasters of one scene: pixel (y, x) of each encodes the same location.
  auto scene = [](int bands, float scale) {
    Raster r;
    r.bands = bands, r.height = 16, r.width = 16;
    for (int c = 0; c < bands; ++c)
      for (int y = 0; y < 16; ++y)
        for (int x = 0; x < 16; ++x) r.data.push_back(scale * float(y * 16 + x) + float(c) * 1000);
    return r;
  };
  Rng rng(5);
  AugmentConfig cfg{8, true, true};
  for (int t = 0; t < 20; ++t) {
    AugmentDraw d = draw_augment(rng, 16, 16, cfg);
    Raster s1 = scene(2, 1), s2 = scene(13, 1), cloudy = scene(13, 2);
    Window w = crop_window(d, 16, 16, cfg);
    auto crop = [&](const Raster& r) { return crop_raster(r, w.x0, w.y0, 8); };
    Raster a = crop(s1), b = crop(s2), c = crop(cloudy);
    flip_rotate(a, d.flip, d.rot), flip_rotate(b, d.flip, d.rot), flip_rotate(c, d.flip, d.rot);
    for (int i = 0; i < 64; ++i) {
      REQUIRE(a.data[i] == b.data[i]);                     // same location in S1 and S2
      REQUIRE(c.data[i] == 2 * b.data[i]);                 // and in the cloudy twin
      REQUIRE(b.band(12)[i] == b.data[i] + 12000);         // all bands moved together
    }
  }
}

TEST_CASE("augment: flip_rotate on a batch equals the host augmentation for every code, bad codes give NaN") {
  const int N = 14, C = 2, S = 4;
  Rng rng(3);
  std::vector<float> x(size_t(N * C * S * S));
  for (float& v : x) v = float(rng.uniform());
  std::vector<float> codes(N);
  for (int k = 0; k < 12; ++k) codes[size_t(k)] = float(k);
  codes[12] = -1, codes[13] = std::nanf("");
  const Tensor y = flip_rotate(Tensor::from_vector({N, C, S, S}, x), Tensor::from_vector({N}, codes));
  const std::vector<float> got = y.to_vector();
  const size_t per = size_t(C * S * S);
  for (int k = 0; k < 12; ++k) {  // the host's function, held to numpy's by the cases above
    CAPTURE(k);
    const std::vector<float> one(x.begin() + long(size_t(k) * per), x.begin() + long(size_t(k + 1) * per));
    const std::vector<float> want = fr(one, C, S, S, k / 4, k % 4);
    CHECK(std::vector<float>(got.begin() + long(size_t(k) * per), got.begin() + long(size_t(k + 1) * per)) == want);
  }
  size_t nan = 0;
  for (size_t i = 12 * per; i < got.size(); ++i) nan += std::isnan(got[i]);
  CHECK(nan == 2 * per);
  // Refused: not square, codes of another length, a tensor that wants a gradient.
  CHECK_THROWS_WITH(flip_rotate(Tensor::zeros({1, 1, 2, 3}), Tensor::zeros({1})), doctest::Contains("square"));
  CHECK_THROWS_WITH(flip_rotate(Tensor::zeros({2, 1, 2, 2}), Tensor::zeros({3})), doctest::Contains("codes"));
  Tensor w = Tensor::zeros({1, 1, 2, 2});
  w.set_requires_grad(true);
  CHECK_THROWS_WITH(flip_rotate(w, Tensor::zeros({1})), doctest::Contains("gradient"));
}

// torch.flip then torch.rot90(dims=(2, 3)) for every code (tests/torch/gen_fixtures_norm_loss.py), on the
// CPU and the emulated CUDA backend: the device augmentation is the framework's flips and turns.
TEST_CASE("augment: flip_rotate equals torch's flip then rot90 for every code, on every backend") {
  const SafetensorsFile& f = fixture_file("ops_norm_loss.safetensors");
  std::vector<Device> devices{Device::CPU};
  if (cuda::register_cuda_backend()) devices.push_back(Device::CUDA);
  for (const Device d : devices) {
    const std::string dev = device_name(d);
    CAPTURE(dev);
    const Tensor y = flip_rotate(f.at("flip_rotate.x").to(d), f.at("flip_rotate.codes").to(d));
    check_close(y.to(Device::CPU), f.at("flip_rotate.y"), 0, 0, "flip_rotate vs torch");
  }
}

TEST_CASE("augment: undo_flip_rotate gives back the input of every flip and turn, on a non-square image") {
  const int C = 3, h = 5, w = 7;
  std::vector<float> x(size_t(C * h * w));
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i);  // every value distinct: a wrong place shows
  for (int code = 0; code < 12; ++code) {
    CAPTURE(code);
    const std::vector<float> turned = fr(x, C, h, w, code / 4, code % 4);
    if (code % 4 != 0 || code / 4 != 0) CHECK(turned != x);  // the control: it did move something
    std::vector<float> back(x.size(), -1.f);
    undo_flip_rotate(turned.data(), back.data(), C, h, w, code / 4, code % 4);
    CHECK(back == x);
  }
  std::vector<float> out(x.size());
  CHECK_THROWS_WITH(undo_flip_rotate(x.data(), out.data(), C, h, w, 3, 0), doctest::Contains("flip 3"));
}
