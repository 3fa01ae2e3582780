// test_fast_divmod.cpp: FastDivmod (kernels/common/fast_divmod.h), the multiply-and-shift division
// the tensor-core convolution decodes its indices with, against / and % for divisors 1..4096 (every
// one, at the numerators where an error would show first: around multiples of d and at the top of
// the range) and for random divisor-numerator pairs over the whole int range.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>

#include "kernels/common/fast_divmod.h"

using namespace nimbus;

namespace {

// Counts the numerators n where f gives another quotient or remainder than / and %.
int64_t mismatches(int d, const std::initializer_list<int64_t>& around) {
  const FastDivmod f(d);
  int64_t bad = 0;
  auto check = [&](int64_t n) {
    if (n < 0 || n > INT32_MAX) return;
    int q = 0, r = 0;
    f.divmod(int(n), q, r);
    bad += (q != int(n / d) || r != int(n % d)) ? 1 : 0;
  };
  for (int64_t c : around)
    for (int64_t n = c - 3; n <= c + 3; ++n) check(n);
  for (int64_t k = 1; k < 64; ++k) check(k * d - 1), check(k * d), check(int64_t(INT32_MAX) / d * d - k);
  return bad;
}

}  // namespace

TEST_CASE("fast divmod: every divisor up to 4096 at small, multiple-adjacent and top-of-range numerators") {
  int64_t bad = 0;
  for (int d = 1; d <= 4096; ++d) bad += mismatches(d, {0, 3, int64_t(d), int64_t(d) * d, INT32_MAX - 3});
  CHECK(bad == 0);
}

TEST_CASE("fast divmod: random divisors and numerators over the whole int range, and the largest divisor") {
  std::mt19937_64 rng(12345);
  int64_t bad = 0;
  for (int i = 0; i < 200000; ++i) {
    const int d = int(rng() % uint64_t(INT32_MAX)) + 1, n = int(rng() % (uint64_t(INT32_MAX) + 1));
    const FastDivmod f(d);
    int q = 0, r = 0;
    f.divmod(n, q, r);
    bad += (q != n / d || r != n % d) ? 1 : 0;
  }
  CHECK(bad == 0);
  CHECK(mismatches(INT32_MAX, {0, 1, INT32_MAX - 1}) == 0);
  const FastDivmod one(1);
  CHECK(one.div(INT32_MAX) == INT32_MAX);
}
