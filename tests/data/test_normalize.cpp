// test_normalize.cpp: S2/S1 scaling and NaN filling (reference §4) against
// values worked out by hand from the formulas.
#include <doctest/doctest.h>

#include <cmath>

#include "data/normalize.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::data;
using namespace nimbus::test;

TEST_CASE("normalize: S2 clips to [0, 10000] and divides by 2000") {
  std::vector<float> x = {-5, 0, 1, 2000, 5000, 10000, 12000, 65535};
  normalize_s2(x.data(), x.size());
  check_close(x, std::vector<float>{0, 0, 0.0005f, 1, 2.5f, 5, 5, 5}, 0, 1e-7, "s2");
  denormalize_s2(x.data(), x.size());
  check_close(x, std::vector<float>{0, 0, 1, 2000, 5000, 10000, 10000, 10000}, 0, 1e-6, "s2 inverse");
}

TEST_CASE("normalize: S1 VV clips to [-25, 0], VH to [-32.5, 0], both onto [0, 2]") {
  // (2, 4): VV plane then VH plane.
  std::vector<float> x = {-30, -25, -12.5f, 3, /* VH */ -40, -32.5f, -16.25f, -6.5f};
  normalize_s1(x.data(), 4);
  check_close(x, std::vector<float>{0, 0, 1, 2, 0, 0, 1, 1.6f}, 1e-6, 0, "s1");
  denormalize_s1(x.data(), 4);
  check_close(x, std::vector<float>{-25, -25, -12.5f, 0, -32.5f, -32.5f, -16.25f, -6.5f}, 1e-5, 0, "s1 inverse");
}

TEST_CASE("normalize: NaN becomes the mean of the whole window, all bands together") {
  std::vector<float> x = {1, NAN, 3, /* band 2 */ NAN, 8, NAN};
  CHECK(fill_nan_with_mean(x.data(), x.size()) == 3);
  check_close(x, std::vector<float>{1, 4, 3, 4, 8, 4}, 0, 0, "filled");  // mean of 1, 3, 8
  std::vector<float> clean = {1, 2};
  CHECK(fill_nan_with_mean(clean.data(), 2) == 0);
  std::vector<float> all_nan = {NAN, NAN};
  CHECK(fill_nan_with_mean(all_nan.data(), 2) == 2);
  CHECK(all_nan == std::vector<float>{0, 0});
}

TEST_CASE("normalize: S1 NaN is the window's mean, and a window of nothing else is each band's floor, 0 normalised") {
  std::vector<float> x = {-10, NAN, /* VH */ NAN, -20};
  CHECK(fill_s1_nan(x.data(), 2) == 2);
  CHECK(x == std::vector<float>{-10, -15, -15, -20});  // DSen2-CR's: both bands' mean
  std::vector<float> none = {NAN, NAN, NAN, NAN};
  CHECK(fill_s1_nan(none.data(), 2) == 4);
  CHECK(none == std::vector<float>{kS1VVMin, kS1VVMin, kS1VHMin, kS1VHMin});
  normalize_s1(none.data(), 2);
  CHECK(none == std::vector<float>{0, 0, 0, 0});  // no backscatter, not 0 dB (normalised kS1Max)
}
