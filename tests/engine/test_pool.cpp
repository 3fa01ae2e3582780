// test_pool.cpp: max_pool2d and global_avg_pool: backward vs finite differences
// (double), the separable max-pool forward vs the window-by-window reference,
// the ops vs PyTorch fixtures (including tied maxima), error cases.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops/pool.h"
#include "kernels/cpu/pool.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;
using cpu::PoolGeom;

namespace {
const SafetensorsFile& pool_fixtures() { return fixture_file("ops_conv.safetensors"); }
}  // namespace

TEST_CASE("max_pool2d kernel: backward matches finite differences in double") {
  Rng rng(5);
  for (auto [k, s, p] : std::vector<std::array<int64_t, 3>>{{3, 2, 1}, {2, 2, 0}, {3, 1, 1}, {3, 3, 0}, {5, 2, 2}}) {
    const PoolGeom g{2, 3, 7, 5, k, s, p};
    CAPTURE(k);
    CAPTURE(s);
    CAPTURE(p);
    // Distinct values (a shuffled ramp) spaced far more than the FD step: no ties, no kinks.
    std::vector<double> x(size_t(g.N * g.C * g.H * g.W));
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.01 * double((i * 37) % x.size()) - 1;
    auto r = random_vec(size_t(g.N * g.C * g.P() * g.Q()), rng);
    auto loss = [&](const std::vector<double>& xs) {
      std::vector<double> y(r.size());
      cpu::max_pool2d_forward(y.data(), xs.data(), g);
      return dot(y, r);
    };
    std::vector<double> dx(x.size());
    cpu::max_pool2d_backward(dx.data(), r.data(), x.data(), g);
    check_close(dx, numeric_grad(loss, x), 1e-7, 1e-6, "dx");
  }
}

TEST_CASE("max_pool2d kernel: the separable forward and backward equal the window-by-window references bit for bit") {
  // Values from a tiny set, so windows hold ties (and -0 against +0, where
  // keeping the first maximum shows in the sign) and some NaNs.
  const float vals[] = {-1.f, -0.f, 0.f, 0.5f, 1.f, 2.f};
  Rng rng(8);
  for (auto [k, s, p] : std::vector<std::array<int64_t, 3>>{
           {3, 2, 1}, {2, 2, 0}, {3, 1, 1}, {3, 3, 0}, {5, 2, 2}, {1, 1, 0}, {4, 3, 2}, {5, 1, 2}, {2, 3, 0}}) {
    // Planes smaller than the kernel (windows hang over both edges), and a batch
    // large enough for the threaded path (N*C*P*Q*k*k above kParallelGrain).
    for (auto [N, H, W] : std::vector<std::array<int64_t, 3>>{
             {2, 7, 5}, {2, 5, 9}, {2, k, k}, {2, 13, 16}, {2, std::max<int64_t>(1, k - p), k + 1}, {24, 33, 31}}) {
      if (k > H + 2 * p || k > W + 2 * p) continue;  // the op rejects these
      const PoolGeom g{N, 3, H, W, k, s, p};
      CAPTURE(k);
      CAPTURE(s);
      CAPTURE(p);
      CAPTURE(N);
      CAPTURE(H);
      CAPTURE(W);
      std::vector<float> x(size_t(g.N * g.C * H * W));
      for (float& v : x) {
        const double u = rng.uniform();
        v = u < 0.03 ? NAN : vals[size_t(u * 6) % 6];
      }
      std::vector<float> y(size_t(g.N * g.C * g.P() * g.Q()), 7.f), y_ref(y.size(), -7.f);
      cpu::max_pool2d_forward(y.data(), x.data(), g);
      cpu::max_pool2d_forward_ref(y_ref.data(), x.data(), g);
      int mismatches = 0;
      for (size_t i = 0; i < y.size(); ++i) {
        const bool same = std::isnan(y_ref[i]) ? std::isnan(y[i])
                                               : (y[i] == y_ref[i] && std::signbit(y[i]) == std::signbit(y_ref[i]));
        mismatches += same ? 0 : 1;
      }
      CHECK(mismatches == 0);
      // Backward: the same argmax for every window (ties, NaNs) and the same sums.
      std::vector<float> dy(y.size()), dx(x.size(), 7.f), dx_ref(x.size(), -7.f);
      for (float& v : dy) v = rng.uniform(-1.f, 1.f);
      cpu::max_pool2d_backward(dx.data(), dy.data(), x.data(), g);
      cpu::max_pool2d_backward_ref(dx_ref.data(), dy.data(), x.data(), g);
      CHECK(dx == dx_ref);
    }
  }
}

TEST_CASE("max_pool2d kernel: ties go to the first maximum, padding never wins") {
  // One 2x2 plane of equal values, kernel 2: the gradient lands on the top-left cell only.
  const PoolGeom g{1, 1, 2, 2, 2, 1, 0};
  std::vector<float> x{3, 3, 3, 3}, y(1), dx(4);
  std::vector<float> dy{1.5f};
  cpu::max_pool2d_forward(y.data(), x.data(), g);
  cpu::max_pool2d_backward(dx.data(), dy.data(), x.data(), g);
  CHECK(y[0] == 3);
  CHECK(dx == std::vector<float>{1.5f, 0, 0, 0});
  // All-negative input with padding 1: the max is a real cell (-1), not the zero padding.
  const PoolGeom gp{1, 1, 2, 2, 3, 1, 1};
  std::vector<float> xn{-4, -1, -3, -2}, yn(4);
  cpu::max_pool2d_forward(yn.data(), xn.data(), gp);
  CHECK(yn == std::vector<float>{-1, -1, -1, -1});
}

TEST_CASE("max_pool2d kernel: a NaN wins its windows, inside the plane and at its border") {
  // 4x4 plane, NaN at (1,2). Kernel 2 stride 2: only the window of output (0,1) holds it.
  std::vector<float> x(16);
  for (int i = 0; i < 16; ++i) x[size_t(i)] = float(i % 5) - 2.f;
  x[1 * 4 + 2] = NAN;
  std::vector<float> y(4);
  cpu::max_pool2d_forward(y.data(), x.data(), PoolGeom{1, 1, 4, 4, 2, 2, 0});
  for (int i = 0; i < 4; ++i) CHECK(std::isnan(y[size_t(i)]) == (i == 1));
  // Kernel 3 stride 1 pad 1: outputs (p,q) with |p-1| <= 1 and |q-2| <= 1 see it,
  // border windows (checked path) and interior ones (unchecked path) alike.
  std::vector<float> y3(16);
  cpu::max_pool2d_forward(y3.data(), x.data(), PoolGeom{1, 1, 4, 4, 3, 1, 1});
  for (int p = 0; p < 4; ++p)
    for (int q = 0; q < 4; ++q) CHECK(std::isnan(y3[size_t(p * 4 + q)]) == (std::abs(p - 1) <= 1 && std::abs(q - 2) <= 1));
}

TEST_CASE("global_avg_pool kernel: backward matches finite differences in double") {
  Rng rng(6);
  const int64_t planes = 6, hw = 35;
  auto x = random_vec(size_t(planes * hw), rng), r = random_vec(size_t(planes), rng);
  auto loss = [&](const std::vector<double>& xs) {
    std::vector<double> y(static_cast<size_t>(planes));
    cpu::global_avg_pool_forward(y.data(), xs.data(), planes, hw);
    return dot(y, r);
  };
  std::vector<double> dx(x.size());
  cpu::global_avg_pool_backward(dx.data(), r.data(), planes, hw);
  check_close(dx, numeric_grad(loss, x), 1e-8, 1e-6, "dx");
}

TEST_CASE("max_pool2d op: forward and gradient match PyTorch (incl. ties)") {
  int cases = 0;
  for (int i = 0; pool_fixtures().find(str("maxpool", i, ".x")); ++i, ++cases) {
    const std::string c = str("maxpool", i, ".");
    CAPTURE(c);
    Tensor x = pool_fixtures().at(c + "x").clone();
    x.set_requires_grad(true);
    auto cfg = pool_fixtures().at(c + "cfg").to_vector();
    Tensor y = max_pool2d(x, int(cfg[0]), int(cfg[1]), int(cfg[2]));
    check_close(y, pool_fixtures().at(c + "y"), 0, 0, "y");  // a max is exact
    y.backward(pool_fixtures().at(c + "dy"));
    check_close(x.grad(), pool_fixtures().at(c + "dx"), 1e-6, 1e-6, "dx");
  }
  CHECK(cases == 4);
}

TEST_CASE("global_avg_pool op: forward and gradient match PyTorch") {
  Tensor x = pool_fixtures().at("gap.x").clone();
  x.set_requires_grad(true);
  Tensor y = global_avg_pool(x);
  CHECK(y.shape() == Shape{2, 3});
  check_close(y, pool_fixtures().at("gap.y"), 1e-6, 1e-5, "y");
  y.backward(pool_fixtures().at("gap.dy"));
  check_close(x.grad(), pool_fixtures().at("gap.dx"), 1e-7, 1e-5, "dx");
}

TEST_CASE("pool ops: bad input raises errors naming the op") {
  CHECK_THROWS_WITH_AS(max_pool2d(Tensor::zeros({3, 8, 8}), 3, 2, 1), doctest::Contains("max_pool2d: input (3,8,8)"),
                       Error);
  CHECK_THROWS_WITH_AS(max_pool2d(Tensor::zeros({1, 1, 2, 2}), 5, 1, 1),
                       doctest::Contains("max_pool2d: kernel 5x5 is larger than input (1,1,2,2)"), Error);
  CHECK_THROWS_WITH_AS(max_pool2d(Tensor::zeros({1, 1, 8, 8}), 3, 1, 2), doctest::Contains("max_pool2d: padding 2"),
                       Error);
  CHECK_THROWS_WITH_AS(max_pool2d(Tensor::zeros({1, 1, 8, 8}), 3, 0, 1), doctest::Contains("max_pool2d: kernel 3"),
                       Error);
  CHECK_THROWS_WITH_AS(global_avg_pool(Tensor::zeros({2, 3})), doctest::Contains("global_avg_pool: input (2,3)"),
                       Error);
  CHECK_THROWS_WITH_AS(global_avg_pool(Tensor::zeros({2, 3, 0, 4})), doctest::Contains("global_avg_pool"), Error);
}

TEST_CASE("pool ops in bfloat16: forward and gradient match PyTorch within bfloat16's rounding") {
  // The inputs rounded to bfloat16 (relative 2^-9): a max is exact on the rounded values, so y is
  // within 2^-8 of PyTorch's. The gradient is compared where the inputs are exact in bfloat16 (the
  // small-integer cases with ties): rounding random inputs can make two cells of a window equal,
  // and then the first wins where PyTorch's float max was the other.
  int exact_cases = 0;
  for (int i = 0; pool_fixtures().find(str("maxpool", i, ".x")); ++i) {
    const std::string c = str("maxpool", i, ".");
    CAPTURE(c);
    const Tensor x32 = pool_fixtures().at(c + "x");
    Tensor x = x32.to(DType::BF16);
    x.set_requires_grad(true);
    auto cfg = pool_fixtures().at(c + "cfg").to_vector();
    Tensor y = max_pool2d(x, int(cfg[0]), int(cfg[1]), int(cfg[2]));
    CHECK(y.dtype() == DType::BF16);
    check_close(y.to(DType::F32), pool_fixtures().at(c + "y"), 1e-6, 1.0 / 256, "y");
    if (x.to(DType::F32).to_vector() != x32.to_vector()) continue;
    ++exact_cases;
    const Tensor dy16 = pool_fixtures().at(c + "dy").to(DType::BF16);
    y.backward(dy16);
    CHECK(x.grad().dtype() == DType::BF16);
    // The float32 op (held to PyTorch above) on the same rounded dy: sums with cancellation make
    // PyTorch's own dx a poor yardstick for dy's rounding, but the bfloat16 op must only add one
    // rounding of its result to what float32 computes from the same inputs.
    Tensor x32g = x32.clone();
    x32g.set_requires_grad(true);
    max_pool2d(x32g, int(cfg[0]), int(cfg[1]), int(cfg[2])).backward(dy16.to(DType::F32));
    check_close(x.grad().to(DType::F32), x32g.grad(), 1e-6, 1.0 / 256, "dx");
  }
  CHECK(exact_cases == 2);
  Tensor x = pool_fixtures().at("gap.x").to(DType::BF16);
  x.set_requires_grad(true);
  Tensor y = global_avg_pool(x);
  CHECK(y.dtype() == DType::BF16);
  // A mean of 35 rounded inputs, rounded: 2^-8 of the mean of |x| (about 0.8 here) bounds it.
  check_close(y.to(DType::F32), pool_fixtures().at("gap.y"), 4e-3, 1.0 / 256, "gap y");
  // dx = dy / hw: dy rounded, the quotient rounded (2^-9 each): 2^-8 relative.
  y.backward(pool_fixtures().at("gap.dy").to(DType::BF16));
  check_close(x.grad().to(DType::F32), pool_fixtures().at("gap.dx"), 1e-6, 1.0 / 256, "gap dx");
}
