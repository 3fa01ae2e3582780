// test_tiling.cpp: tile plans and blend weights, band-order conversion, and
// tiled DSen2-CR inference equal to one untiled forward pass.
#include <doctest/doctest.h>

#include <numeric>

#include "apps/common/cloud_removal.h"
#include "apps/common/tiling.h"
#include "engine/autograd.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::apps;

TEST_CASE("tiling: corners cover the image with the last tile flush with the edge") {
  TilePlan p = plan_tiles(100, 70, 40, 10, 2);
  CHECK(p.tile_h == 40);
  CHECK(p.tile_w == 40);
  CHECK(p.ys == std::vector<int>{0, 30, 60});
  CHECK(p.xs == std::vector<int>{0, 30});
  TilePlan small = plan_tiles(20, 30, 64, 10, 2);  // smaller than a tile: one tile of the image's size
  CHECK(small.count() == 1);
  CHECK(small.tile_h == 20);
  CHECK(small.tile_w == 30);
}

TEST_CASE("tiling: weights are 0 in the margin and ramp linearly and sum to 1 across an exact overlap") {
  // Width 70, tile 40, overlap 10 -> x corners 0 and 30: overlap exactly 10 columns [30, 40).
  TilePlan p = plan_tiles(40, 70, 40, 10, 2);
  REQUIRE(p.xs == std::vector<int>{0, 30});
  std::vector<float> a = tile_weights(p, 0, 0), b = tile_weights(p, 0, 30);
  const int row = 5;
  for (int x = 0; x < 70; ++x) {
    const float wa = x < 40 ? a[size_t(row * 40 + x)] : 0.f;
    const float wb = x >= 30 ? b[size_t(row * 40 + x - 30)] : 0.f;
    if (x < 30 || x >= 40) CHECK(wa + wb == doctest::Approx(1.0));  // one tile only: weight 1
    if (x >= 30 && x < 40) CHECK(wa + wb == doctest::Approx(1.0).epsilon(1e-6));
  }
  // Margin of 2 at the shared edge: tile b's columns 0, 1 and tile a's columns 38, 39 get nothing.
  CHECK(b[size_t(row * 40 + 0)] == 0.f);
  CHECK(b[size_t(row * 40 + 1)] == 0.f);
  CHECK(b[size_t(row * 40 + 2)] > 0.f);
  CHECK(a[size_t(row * 40 + 39)] == 0.f);
  CHECK(a[size_t(row * 40 + 38)] == 0.f);
  // Ramp of R = 10 - 4 = 6: (d - 2 + 1) / 7.
  CHECK(b[size_t(row * 40 + 4)] == doctest::Approx(3.0 / 7.0));
  // Image borders get no ramp.
  CHECK(a[0] == 1.f);
}

TEST_CASE("tiling: bad plans are errors") {
  CHECK_THROWS_WITH_AS(plan_tiles(100, 100, 32, 32, 0), doctest::Contains("overlap 32"), Error);
  CHECK_THROWS_WITH_AS(plan_tiles(100, 100, 32, 8, 4), doctest::Contains("no blending ramp"), Error);
  CHECK_THROWS_AS(plan_tiles(0, 10, 32, 8, 1), Error);
  CHECK_NOTHROW(plan_tiles(20, 20, 32, 8, 4));  // one tile: no ramp needed
}

namespace {
std::vector<float> random_vec(size_t n, Rng& rng, float lo, float hi) {
  std::vector<float> v(n);
  for (float& x : v) x = rng.uniform(lo, hi);
  return v;
}
}  // namespace

TEST_CASE("cloud removal: tiled inference equals one untiled forward pass (SAR and no SAR), in any stripes") {
  for (bool sar : {true, false}) {
    Rng rng(7);
    models::DSen2CRConfig c;
    c.blocks = 2;
    c.features = 8;
    c.sar = sar;
    models::DSen2CR net(c, rng);
    const int H = 70, W = 90;
    // Raw values (S2 DN past both clip edges, S1 dB), as the apps pass them.
    std::vector<float> s2 = random_vec(size_t(13 * H * W), rng, -500.f, 11000.f);
    std::vector<float> s1 = random_vec(size_t(2 * H * W), rng, -40.f, 3.f);
    std::vector<float> want;
    {
      NoGradGuard ng;
      net.eval();
      want = net.forward_dn(Tensor::from_vector({1, 13, H, W}, s2),
                            sar ? Tensor::from_vector({1, 2, H, W}, s1) : Tensor())
                 .to_vector();
    }
    TileOptions o;
    o.tile = 40;
    o.overlap = 20;  // radius 6 -> margin 6, ramp 8; corners y 0,20,30 and x 0,20,40,50: 12 tiles
    o.batch = 5;     // a last batch of 2
    std::vector<float> got = remove_clouds_tiled(net, s2.data(), sar ? s1.data() : nullptr, H, W, o);
    test::check_close(got, want, 1e-2, 1e-5, sar ? "tiled vs untiled (SAR)" : "tiled vs untiled (no SAR)");
    // A margin smaller than the receptive field is not exact: the test would see it.
    o.overlap = 9;  // margin 4 < radius 6
    std::vector<float> rough = remove_clouds_tiled(net, s2.data(), sar ? s1.data() : nullptr, H, W, o);
    CHECK(test::all_finite(rough));  // it differs by its values, not by NaN
    CHECK(test::worst_violation(rough, want, 1e-2, 1e-5) > 0);
    // Streaming in stripes gives the same bits as the whole width, whatever the stripe width and
    // batch (a stripe narrower than the tile stride, one that cuts tiles anywhere, the whole width).
    o.overlap = 20;
    for (int stripe : {1, 13, 37, 64, 90}) {
      for (int batch : {1, 3}) {
        CAPTURE(stripe);
        CAPTURE(batch);
        TileOptions so = o;
        so.stripe = stripe;
        so.batch = batch;
        size_t calls = 0, last_total = 0;
        so.on_tiles = [&](size_t done, size_t total) { ++calls, last_total = total; CHECK(done <= total); };
        std::vector<float> striped = remove_clouds_tiled(net, s2.data(), sar ? s1.data() : nullptr, H, W, so);
        CHECK(striped == got);
        CHECK(calls > 0);
        CHECK(last_total >= 12);  // every tile at least once; tiles on a stripe edge are run for both stripes
      }
    }
  }
  models::DSen2CRConfig c;
  c.blocks = 1;
  c.features = 4;
  Rng rng(1);
  models::DSen2CR net(c, rng);
  std::vector<float> s2(13 * 8 * 8, 1.f);
  CHECK_THROWS_WITH_AS(remove_clouds_tiled(net, s2.data(), nullptr, 8, 8, {}), doctest::Contains("needs S1 SAR"),
                       Error);
}

// remove_clouds' default overlap is 2 x the receptive radius + 32, at most half a tile: capped at
// tile - 1 instead, a tile at or below 2r + 32 stepped by one pixel (37,249 tiles for a 256 x 256 image
// at --tile 64 with 16 blocks). The margin is the radius (exact tiling) when the overlap has room.
TEST_CASE("tiling: remove_clouds' default overlap leaves a step of at least half a tile") {
  models::DSen2CRConfig c;
  c.blocks = 16;  // receptive radius 34
  REQUIRE(apps::receptive_radius(c) == 34);
  CHECK(apps::default_overlap(c, 256) == 100);
  CHECK(apps::default_overlap(c, 128) == 64);
  CHECK(apps::default_overlap(c, 64) == 32);
  CHECK(apps::default_overlap(c, 16) == 8);
  CHECK(apps::tile_margin(c, 100) == 34);  // exact
  CHECK(apps::tile_margin(c, 69) == 34);   // 2r + 1: still exact
  CHECK(apps::tile_margin(c, 64) == 31);   // blended
  const apps::TilePlan plan = apps::plan_tiles(256, 256, 64, apps::default_overlap(c, 64), apps::tile_margin(c, 32));
  CHECK(plan.count() <= 49);  // steps of 32: 7 x 7 tiles, not 193 x 193
}
