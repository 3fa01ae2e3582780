// test_shape_ops.cpp: reshape, flatten, concat_channels.
//
// These ops move data and do no arithmetic, so their gradients must be EXACT
// copies of dy (checked with ==), not close to a finite difference; the
// PyTorch fixtures pin down which element goes where.
#include <doctest/doctest.h>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops/shape_ops.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {
const SafetensorsFile& shape_fixtures() { return fixture_file("ops_conv.safetensors"); }
}  // namespace

TEST_CASE("reshape op: shares data, gradient is dy in the input's shape") {
  Tensor x = Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6});
  x.set_requires_grad(true);
  Tensor y = reshape(x, {3, 2});
  CHECK(y.shape() == Shape{3, 2});
  CHECK(y.to_vector() == x.to_vector());
  CHECK(y.data() == x.data());  // no copy
  Tensor dy = Tensor::from_vector({3, 2}, {6, 5, 4, 3, 2, 1});
  y.backward(dy);
  CHECK(x.grad().shape() == Shape{2, 3});
  CHECK(x.grad().to_vector() == dy.to_vector());
  CHECK_THROWS_WITH_AS(reshape(x, {4, 2}), "reshape: cannot reshape (2,3) (6 elements) to (4,2) (8 elements)", Error);
}

TEST_CASE("flatten op: matches PyTorch's flatten(1), and other start dims") {
  Tensor x = shape_fixtures().at("flatten.x").clone();
  x.set_requires_grad(true);
  Tensor y = flatten(x);
  CHECK(y.shape() == Shape{2, 60});
  CHECK(y.to_vector() == shape_fixtures().at("flatten.y").to_vector());
  y.backward(shape_fixtures().at("flatten.dy"));
  CHECK(x.grad().to_vector() == shape_fixtures().at("flatten.dx").to_vector());
  CHECK(flatten(x, 0).shape() == Shape{120});
  CHECK(flatten(x, 2).shape() == Shape{2, 3, 20});
  CHECK(flatten(x, 3).shape() == Shape{2, 3, 4, 5});
  CHECK_THROWS_WITH_AS(flatten(x, 4), doctest::Contains("flatten: start_dim 4 out of range for input (2,3,4,5)"),
                       Error);
}

TEST_CASE("concat_channels op: forward and per-input gradients match PyTorch exactly") {
  const SafetensorsFile& f = shape_fixtures();
  Tensor a = f.at("concat.a").clone(), b = f.at("concat.b").clone(), c = f.at("concat.c").clone();
  a.set_requires_grad(true);
  c.set_requires_grad(true);  // b needs no gradient: it must get none
  Tensor y = concat_channels({a, b, c});
  CHECK(y.shape() == Shape{2, 6, 4, 5});
  CHECK(y.to_vector() == f.at("concat.y").to_vector());
  y.backward(f.at("concat.dy"));
  CHECK(a.grad().to_vector() == f.at("concat.da").to_vector());
  CHECK(c.grad().to_vector() == f.at("concat.dc").to_vector());
  CHECK(!b.grad().defined());
}

TEST_CASE("concat_channels op: mismatched inputs raise errors naming the op and both shapes") {
  Tensor a = Tensor::zeros({2, 3, 4, 5});
  CHECK_THROWS_WITH_AS(concat_channels({a, Tensor::zeros({2, 1, 4, 6})}),
                       "concat_channels: input (2,1,4,6) does not match (2,3,4,5) outside dim 1", Error);
  CHECK_THROWS_WITH_AS(concat_channels({a, Tensor::zeros({2, 3, 4})}), doctest::Contains("concat_channels: input (2,3,4)"),
                       Error);
  CHECK_THROWS_WITH_AS(concat_channels({}), "concat_channels: no inputs", Error);
  CHECK(concat_channels({a}).shape() == a.shape());
}
