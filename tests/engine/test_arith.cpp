// test_arith.cpp: add, mul_scalar and the fused add_relu / add_scaled: kernels vs finite differences (double),
// the ops vs PyTorch fixtures, shared-gradient accumulation, and shape errors.
#include <doctest/doctest.h>

#include <algorithm>

#include "engine/io/safetensors.h"
#include "engine/ops/activation.h"
#include "engine/ops/arith.h"
#include "kernels/cpu/elementwise.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {
const SafetensorsFile& fixtures() { return fixture_file("ops_norm_loss.safetensors"); }
Tensor fx(const std::string& name) { return fixtures().at(name).clone(); }
}  // namespace

TEST_CASE("add and scale kernels: gradients match finite differences in double") {
  Rng rng(3);
  const int n = 23;
  auto a = random_vec(n, rng), b = random_vec(n, rng), r = random_vec(n, rng);
  auto add_loss = [&](const std::vector<double>& x, const std::vector<double>& y) {
    std::vector<double> out(n);
    cpu::add(out.data(), x.data(), y.data(), n);
    return dot(out, r);
  };
  // add's backward is the identity: dL/da = dL/db = r.
  check_close(r, numeric_grad([&](const std::vector<double>& v) { return add_loss(v, b); }, a), 1e-8, 1e-7, "add da");
  check_close(r, numeric_grad([&](const std::vector<double>& v) { return add_loss(a, v); }, b), 1e-8, 1e-7, "add db");
  const double s = -0.37;
  std::vector<double> dx(n);
  cpu::scale(dx.data(), r.data(), s, n);  // scale is its own backward
  auto scale_loss = [&](const std::vector<double>& x) {
    std::vector<double> out(n);
    cpu::scale(out.data(), x.data(), s, n);
    return dot(out, r);
  };
  check_close(dx, numeric_grad(scale_loss, a), 1e-8, 1e-7, "scale dx");
}

TEST_CASE("add: forward and backward match PyTorch") {
  Tensor a = fx("add.a").set_requires_grad(true), b = fx("add.b").set_requires_grad(true);
  Tensor y = add(a, b);
  check_close(y, fixtures().at("add.y"), 1e-6, 1e-6, "y");
  y.backward(fixtures().at("add.dy"));
  check_close(a.grad(), fixtures().at("add.da"), 1e-6, 1e-6, "da");
  check_close(b.grad(), fixtures().at("add.db"), 1e-6, 1e-6, "db");
}

TEST_CASE("mul_scalar: forward and backward match PyTorch") {
  Tensor x = fx("mul_scalar.x").set_requires_grad(true);
  Tensor y = mul_scalar(x, 0.1f);
  check_close(y, fixtures().at("mul_scalar.y"), 1e-6, 1e-6, "y");
  y.backward(fixtures().at("mul_scalar.dy"));
  check_close(x.grad(), fixtures().at("mul_scalar.dx"), 1e-6, 1e-6, "dx");
}

TEST_CASE("add: a residual y = x + 0.1 x sums both paths' gradients") {
  Tensor x = Tensor::from_vector({2, 2}, {1, -2, 3, 4}).set_requires_grad(true);
  Tensor dy = Tensor::from_vector({2, 2}, {1, 2, 3, 4});
  add(x, mul_scalar(x, 0.1f)).backward(dy);
  check_close(x.grad().to_vector(), std::vector<float>{1.1f, 2.2f, 3.3f, 4.4f}, 1e-6, 1e-6, "dx");
  Tensor z = Tensor::from_vector({2}, {1, 2}).set_requires_grad(true);
  add(z, z).backward(Tensor::ones({2}));  // the same tensor as both inputs
  CHECK(z.grad().to_vector() == std::vector<float>{2, 2});
}

TEST_CASE("add_relu and add_scaled kernels: gradients match finite differences in double") {
  Rng rng(5);
  const int n = 31;
  auto a = random_vec(n, rng), b = random_vec(n, rng), r = random_vec(n, rng);
  auto fused_loss = [&](bool relu, const std::vector<double>& x, const std::vector<double>& y) {
    std::vector<double> out(n);
    if (relu) cpu::add_relu(out.data(), x.data(), y.data(), n);
    else cpu::add_scaled(out.data(), x.data(), y.data(), -0.37, n);
    return dot(out, r);
  };
  // add_relu: both inputs get relu_backward(r, y); add_scaled: r and s * r.
  std::vector<double> y(n), d(n), sr(n);
  cpu::add_relu(y.data(), a.data(), b.data(), n);
  cpu::relu_backward(d.data(), r.data(), y.data(), n);
  CHECK(std::count(d.begin(), d.end(), 0.0) > 5);  // some sums are negative: the mask matters
  cpu::scale(sr.data(), r.data(), -0.37, n);
  for (bool relu : {true, false}) {
    CAPTURE(relu);
    check_close(relu ? d : r, numeric_grad([&](const std::vector<double>& v) { return fused_loss(relu, v, b); }, a),
                1e-8, 1e-7, "da");
    check_close(relu ? d : sr, numeric_grad([&](const std::vector<double>& v) { return fused_loss(relu, a, v); }, b),
                1e-8, 1e-7, "db");
  }
}

TEST_CASE("relu, add_relu and add_scaled: forward and gradients match PyTorch") {
  // relu: exact zeros among the inputs, where torch's gradient is 0 as ours is.
  Tensor x = fx("relu.x").set_requires_grad(true);
  Tensor r = relu(x);
  check_close(r, fixtures().at("relu.y"), 0, 0, "relu y");
  r.backward(fixtures().at("relu.dy"));
  check_close(x.grad(), fixtures().at("relu.dx"), 0, 0, "relu dx");
  // relu(a + b): the sum rounds as torch's does, then the same mask.
  Tensor a = fx("add_relu.a").set_requires_grad(true), b = fx("add_relu.b").set_requires_grad(true);
  Tensor y = add_relu(a, b);
  check_close(y, fixtures().at("add_relu.y"), 0, 0, "add_relu y");
  y.backward(fixtures().at("add_relu.dy"));
  check_close(a.grad(), fixtures().at("add_relu.da"), 0, 0, "add_relu da");
  check_close(b.grad(), fixtures().at("add_relu.db"), 0, 0, "add_relu db");
  // a + s b in float32: torch rounds s b, then the sum; ours may fuse them (one rounding less).
  const float s = fixtures().at("add_scaled.s").item();
  REQUIRE(s == 0.1f);
  Tensor a2 = fx("add_scaled.a").set_requires_grad(true), b2 = fx("add_scaled.b").set_requires_grad(true);
  Tensor y2 = add_scaled(a2, b2, s);
  check_close(y2, fixtures().at("add_scaled.y"), 1e-6, 1e-6, "add_scaled y");
  y2.backward(fixtures().at("add_scaled.dy"));
  check_close(a2.grad(), fixtures().at("add_scaled.da"), 0, 0, "add_scaled da");
  check_close(b2.grad(), fixtures().at("add_scaled.db"), 1e-7, 1e-6, "add_scaled db");
  // The shape check names the fused op.
  CHECK_THROWS_WITH_AS(add_relu(Tensor::zeros({2}), Tensor::zeros({3})), doctest::Contains("add_relu: shapes differ"),
                       Error);
  CHECK_THROWS_WITH_AS(add_scaled(Tensor::zeros({2}), Tensor::zeros({3}), 1.f),
                       doctest::Contains("add_scaled: shapes differ"), Error);
}

TEST_CASE("add: shape mismatch names the op and both shapes") {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2});
  CHECK_THROWS_WITH_AS(add(a, b), doctest::Contains("add: shapes differ: a (2,3) vs b (3,2)"), Error);
  CHECK_THROWS_WITH_AS(add(a, Tensor::zeros({2, 3, 1})), doctest::Contains("(2,3,1)"), Error);
}
