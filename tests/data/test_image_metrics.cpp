// test_image_metrics.cpp: cloud-removal metrics vs an independent numpy/skimage reference
// (tests/torch/gen_expected_metrics.py -> fixtures/metrics.safetensors), plus hand-computed cases.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "data/image_metrics.h"
#include "engine/io/safetensors.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {
ImageView view(const std::vector<float>& v, int c, int h, int w) { return {v.data(), c, h, w}; }
}  // namespace

TEST_CASE("image_metrics: every metric matches numpy/skimage on the fixture images") {
  SafetensorsFile f = load_safetensors(fixture("metrics.safetensors"));
  const Tensor &pred = f.at("pred"), &target = f.at("target"), &cloudy = f.at("cloudy"), &mask = f.at("mask");
  const Tensor& expected = f.at("expected");
  const int n = int(pred.shape()[0]), c = int(pred.shape()[1]), h = int(pred.shape()[2]), w = int(pred.shape()[3]);
  REQUIRE(expected.shape() == Shape{n, ImageMetrics::kCount});
  const int64_t img = int64_t(c) * h * w;
  MetricsMean mean;
  std::vector<std::vector<double>> rows;
  for (int i = 0; i < n; ++i) {
    ImageView p{pred.data() + i * img, c, h, w}, t{target.data() + i * img, c, h, w},
        cl{cloudy.data() + i * img, c, h, w};
    ImageMetrics m = image_metrics(p, t, cl, mask.data() + int64_t(i) * h * w);
    auto got = m.values();
    std::vector<double> want(expected.data() + i * ImageMetrics::kCount,
                             expected.data() + (i + 1) * ImageMetrics::kCount);
    for (int k = 0; k < ImageMetrics::kCount; ++k) {
      // Same float32 inputs, double sums on both sides: only the stored float32 expectation rounds. A
      // metric with no pixels to score (image 1's recon, image 2's reprod) is NaN on both sides.
      check_close_nan_ok(std::vector<double>{got[size_t(k)]}, std::vector<double>{want[size_t(k)]}, 1e-6, 1e-5,
                  str("image ", i, " ", kMetricNames[size_t(k)]));
    }
    mean.add(m);
    rows.push_back(want);
  }
  // Image 1 is cloud-free (recon NaN), image 2 fully covered (reprod NaN): the mean skips them.
  CHECK(std::isnan(rows[1][9]));
  CHECK(std::isnan(rows[2][5]));
  ImageMetrics avg = mean.mean();
  CHECK(mean.images() == 3);
  CHECK(mean.count(0) == 3);
  CHECK(mean.count(9) == 2);  // mae_recon
  CHECK(mean.count(5) == 2);  // mae_reprod
  CHECK(avg.mae == doctest::Approx((rows[0][0] + rows[1][0] + rows[2][0]) / 3).epsilon(1e-5).scale(0));
  CHECK(avg.mae_recon == doctest::Approx((rows[0][9] + rows[2][9]) / 2).epsilon(1e-5).scale(0));
  CHECK(avg.sam_reprod == doctest::Approx((rows[0][8] + rows[1][8]) / 2).epsilon(1e-5));
}

TEST_CASE("image_metrics: identical images score perfectly (PSNR capped)") {
  Rng rng(3);
  const int c = 13, h = 16, w = 12;
  std::vector<float> a = to_float(random_vec(size_t(c * h * w), rng, 0.01, 0.6));
  std::vector<float> mask(size_t(h * w), 0.f);
  for (int p = 0; p < h * w / 3; ++p) mask[size_t(p)] = 1.f;
  ImageMetrics m = image_metrics(view(a, c, h, w), view(a, c, h, w), view(a, c, h, w), mask.data());
  CHECK(m.mae == 0);
  CHECK(m.rmse == 0);
  CHECK(m.psnr == kPsnrCapDb);
  CHECK(m.ssim == doctest::Approx(1.0).epsilon(1e-12));
  CHECK(m.sam == 0);
  CHECK(m.mae_reprod == 0);
  CHECK(m.sam_recon == 0);
  CHECK(m.psnr_recon == kPsnrCapDb);
  CHECK(m.cloud_fraction == doctest::Approx(double(h * w / 3) / (h * w)));
}

TEST_CASE("image_metrics: hand-computed values") {
  // 2 bands, 1x2 pixels: pred = [[1,0],[0,0]] (band, pixel), ref = [[0,0],[1,0]].
  // Pixel 0: pred (1,0) vs ref (0,1): 90 deg, errors 1,1. Pixel 1: both zero: 0 deg, errors 0,0.
  std::vector<float> pred{1, 0, 0, 0}, ref{0, 0, 1, 0};
  ImageView p = view(pred, 2, 1, 2), r = view(ref, 2, 1, 2);
  CHECK(mae(p, r) == doctest::Approx(0.5));               // (1+1+0+0)/4
  CHECK(rmse(p, r) == doctest::Approx(std::sqrt(0.5)));   // sqrt(2/4)
  CHECK(psnr(p, r) == doctest::Approx(20 * std::log10(1 / std::sqrt(0.5))));
  CHECK(sam_degrees(p, r) == doctest::Approx(45));         // (90 + 0) / 2
  std::vector<float> mask{1, 0};                           // pixel 0 covered
  CHECK(mae(p, r, mask.data(), Region::Covered) == doctest::Approx(1.0));
  CHECK(mae(p, r, mask.data(), Region::Clear) == doctest::Approx(0.0));
  CHECK(sam_degrees(p, r, mask.data(), Region::Covered) == doctest::Approx(90));
  CHECK(sam_degrees(p, r, mask.data(), Region::Clear) == doctest::Approx(0));
  // One zero vector against a non-zero one: 90 deg by convention.
  std::vector<float> z{0, 0}, one{0.3f, 0.4f};
  CHECK(sam_degrees(view(z, 2, 1, 1), view(one, 2, 1, 1)) == 90);
  // Scaled spectra have no angle; 60 degrees by construction.
  std::vector<float> s1{0.1f, 0.2f}, s2{0.3f, 0.6f}, u{1, 0}, v{0.5f, float(std::sqrt(3.0) / 2)};
  CHECK(sam_degrees(view(s1, 2, 1, 1), view(s2, 2, 1, 1)) == doctest::Approx(0).epsilon(1e-6));
  CHECK(sam_degrees(view(u, 2, 1, 1), view(v, 2, 1, 1)) == doctest::Approx(60).epsilon(1e-6));
  // PSNR: 0.01 RMSE -> 40 dB; the cap applies below 1e-5.
  CHECK(psnr_from_rmse(0.01) == doctest::Approx(40));
  CHECK(psnr_from_rmse(1e-7) == kPsnrCapDb);
  CHECK(std::isnan(psnr_from_rmse(NAN)));
}

TEST_CASE("image_metrics: SSIM of a constant offset") {
  // Constant images a and b = a + d: the maps are constant, variance 0, so
  // SSIM = (2ab + c1) / (a^2 + b^2 + c1) exactly (the contrast term is c2/c2 = 1).
  const int c = 2, h = 11, w = 13;
  std::vector<float> a(size_t(c * h * w), 0.25f), b(size_t(c * h * w), 0.35f);
  double c1 = 1e-4, want = (2 * 0.25 * 0.35 + c1) / (0.25 * 0.25 + 0.35 * 0.35 + c1);
  CHECK(ssim(view(a, c, h, w), view(b, c, h, w)) == doctest::Approx(want).epsilon(1e-6));
}

TEST_CASE("image_metrics: empty regions give NaN, bad input gives a clear error") {
  std::vector<float> a(2 * 4 * 4, 0.2f), b(2 * 4 * 4, 0.3f), clear(16, 0.f);
  ImageView p = view(a, 2, 4, 4), r = view(b, 2, 4, 4);
  CHECK(std::isnan(mae(p, r, clear.data(), Region::Covered)));
  CHECK(std::isnan(sam_degrees(p, r, clear.data(), Region::Covered)));
  CHECK(std::isnan(psnr(p, r, clear.data(), Region::Covered)));
  CHECK(mae(p, r, nullptr, Region::Clear) == doctest::Approx(0.1));  // no mask: every pixel is clear
  CHECK_THROWS_WITH_AS(mae(p, r, nullptr, Region::Covered), doctest::Contains("needs a cloud mask"), Error);
  CHECK_THROWS_WITH_AS(mae(p, view(b, 2, 2, 8)), doctest::Contains("mae: prediction (2,4,4) and reference (2,2,8)"),
                       Error);
  CHECK_THROWS_WITH_AS(ssim(p, r), doctest::Contains("smaller than the 11x11 window"), Error);
  a[5] = NAN;
  CHECK_THROWS_WITH_AS(rmse(p, r), doctest::Contains("rmse: prediction has a non-finite value"), Error);
  // A cloud-free image with no mask: recon metrics are NaN, the rest exist.
  std::vector<float> big(size_t(13 * 12 * 12), 0.2f);
  ImageMetrics m = image_metrics(view(big, 13, 12, 12), view(big, 13, 12, 12), view(big, 13, 12, 12), nullptr);
  CHECK(std::isnan(m.mae_recon));
  CHECK(m.mae_reprod == 0);
  CHECK(m.cloud_fraction == 0);
  MetricsMean none;
  CHECK(std::isnan(none.mean().mae));
}
