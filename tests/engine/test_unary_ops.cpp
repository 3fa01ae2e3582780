// test_unary_ops.cpp: the formula-defined ops of kernels/common/unary_ops.def against PyTorch, as
// engine ops (forward and autograd backward), on the CPU and the emulated CUDA device, in float32
// and bfloat16. Every op of the list must have its fixture entries (tests/torch/gen_fixtures_unary.py);
// the kernels themselves are held to the float64 reference by tests/backend/test_backend_ops.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backends/cuda/backend.h"
#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops/activation.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {

struct UnaryOp {
  const char* name;
  Tensor (*op)(const Tensor&);
};
const std::vector<UnaryOp>& unary_ops() {
  static const std::vector<UnaryOp> ops = {
#define NIMBUS_UNARY(name, f, df) {#name, &name},
#include "kernels/common/unary_ops.def"
#undef NIMBUS_UNARY
  };
  return ops;
}

const SafetensorsFile& unary_fixtures() { return fixture_file("ops_unary.safetensors"); }

// y = op(x) and dx from y.backward(dy) on device d in dtype t, against PyTorch's values with the
// bounds (atol, rtol) given for y and for dx; every op, on the CPU and the emulated CUDA device.
struct Bounds {
  double atol, rtol;
};
void check_against_torch(DType t, Bounds by, Bounds bdx) {
  REQUIRE(cuda::register_cuda_backend());
  for (const UnaryOp& u : unary_ops())
    for (Device d : {Device::CPU, Device::CUDA}) {
      CAPTURE(u.name);
      CAPTURE(device_name(d));
      const std::string c = std::string(u.name) + ".";
      Tensor x = unary_fixtures().at(c + "x").to(d).to(t);
      x.set_requires_grad(true);
      Tensor y = u.op(x);
      CHECK(y.dtype() == t);
      CHECK(y.device() == d);
      y.backward(unary_fixtures().at(c + "dy").to(d).to(t));
      REQUIRE(x.grad().defined());
      CHECK(x.grad().dtype() == t);
      // The fixtures put NaN into x: NaN must come out where PyTorch's does, and only there.
      check_close_nan_ok(y.to(DType::F32).to_vector(), unary_fixtures().at(c + "y").to_vector(), by.atol, by.rtol, "y");
      check_close_nan_ok(x.grad().to(DType::F32).to_vector(), unary_fixtures().at(c + "dx").to_vector(), bdx.atol,
                         bdx.rtol, "dx");
    }
}

}  // namespace

TEST_CASE("unary ops: every op of unary_ops.def has PyTorch fixtures") {
  REQUIRE(!unary_ops().empty());
  for (const UnaryOp& u : unary_ops())
    for (const char* part : {".x", ".y", ".dy", ".dx"})
      CHECK_MESSAGE(unary_fixtures().find(std::string(u.name) + part),
                    "tests/fixtures/ops_unary.safetensors has no ", u.name, part,
                    ": add the op to tests/torch/gen_fixtures_unary.py and run it");
}

TEST_CASE("unary ops: float32 forward and backward match PyTorch on cpu and cuda") {
  // A few float roundings of the result, and of its terms where they cancel (dx near a zero of f'):
  // rtol 1e-6 is ~8 ulp; atol covers results far below the inputs' scale.
  check_against_torch(DType::F32, {1e-7, 1e-6}, {1e-6, 1e-6});
}

TEST_CASE("unary ops: bfloat16 forward and backward match PyTorch within bfloat16's rounding") {
  // Inputs rounded to bfloat16 (relative 2^-9), the result rounded once more: 2^-7 (y) and 2^-6 (dx,
  // whose dy is rounded too) relative, plus an absolute floor for results near 0, where the input's
  // rounding moves a small result by f'(x) x 2^-9.
  check_against_torch(DType::BF16, {1e-2, 1.0 / 128}, {2e-2, 1.0 / 64});
}

// relu in both dtypes (it is no formula op: the backward reads the output's sign). Under autocast a
// bfloat16 tensor reaches it (a synchronised batch norm's forward_relu, a ReLU after a convolution);
// it used to ask for float32 data and throw. Exact in either dtype: y = max(x, 0), dx = dy where y > 0.
TEST_CASE("relu: float32 and bfloat16, forward and backward, exact on cpu and cuda") {
  REQUIRE(cuda::register_cuda_backend());
  const std::vector<float> xs = {-2.5f, -0.f, 0.f, 0.375f, 3.f, -1e-3f, 96.f, 1.5f};
  const std::vector<float> dys = {1.f, 2.f, 3.f, 4.f, -5.f, 6.f, 0.25f, -0.5f};
  for (DType t : {DType::F32, DType::BF16})
    for (Device d : {Device::CPU, Device::CUDA}) {
      CAPTURE(dtype_name(t));
      CAPTURE(device_name(d));
      Tensor x = Tensor::from_vector({8}, xs).to(d).to(t);
      x.set_requires_grad(true);
      Tensor y = relu(x);
      CHECK(y.dtype() == t);
      y.backward(Tensor::from_vector({8}, dys).to(d).to(t));
      REQUIRE(x.grad().defined());
      CHECK(x.grad().dtype() == t);
      const std::vector<float> got_y = y.to(DType::F32).to_vector(), got_dx = x.grad().to(DType::F32).to_vector();
      for (size_t i = 0; i < xs.size(); ++i) {
        CAPTURE(i);
        CHECK(got_y[i] == std::max(xs[i], 0.f));
        CHECK(got_dx[i] == (xs[i] > 0 ? dys[i] : 0.f));
      }
    }
}
