// test_clip_grad.cpp: clip_grad_norm (engine/optim/clip_grad.h) on the CPU: against PyTorch
// (tests/common/clip_grad_fixture.h), inside an Adam run, and what it refuses. The kernels themselves
// are in tests/backend/test_backend_ops.cpp; the CUDA backend's run in tests/emu/test_cuda_ops.cpp.
#include <doctest/doctest.h>

#include "engine/optim/clip_grad.h"
#include "tests/common/check.h"
#include "tests/common/clip_grad_fixture.h"

using namespace nimbus;
using namespace nimbus::test;

TEST_CASE("clip_grad_norm: matches torch.nn.utils.clip_grad_norm_ (clipping, not, large values, NaN, inf)") {
  check_clip_cases_against_torch(Device::CPU);
}

TEST_CASE("clip_grad_norm: six clipped Adam steps match PyTorch's") { check_clipped_adam_against_torch(Device::CPU); }

TEST_CASE("clip_grad_norm: the fixture's cases differ (the comparison can fail)") {
  const std::vector<float> clipped = clip_fx().at("clip.out1").to_vector(), kept = clip_fx().at("keep.out1").to_vector();
  CHECK(all_finite(clipped));
  CHECK(worst_violation(clipped, kept, 1e-6, 1e-3) > 0);
  CHECK(clip_fx().at("clip.norm").item() > clip_fx().at("clip.max_norm").item());
}

TEST_CASE("clip_grad_norm: refused arguments change nothing, and no gradient at all gives 0") {
  Tensor a = Tensor::ones({3}).set_requires_grad(true), b = Tensor::ones({2}).set_requires_grad(true);
  a.set_grad(Tensor::full({3}, 2.f));
  for (const double bad : {0.0, -1.0, double(NAN), double(INFINITY)})
    CHECK_THROWS_WITH_AS(clip_grad_norm({a, b}, bad), doctest::Contains("max_norm must be finite and > 0"), Error);
  CHECK_THROWS_WITH_AS(clip_grad_norm({a, b, a}, 1.0), doctest::Contains("given twice"), Error);
  CHECK_THROWS_WITH_AS(clip_grad_norm({a, Tensor()}, 1.0), doctest::Contains("undefined"), Error);
  Tensor h = Tensor::ones({2}).to(DType::BF16).set_requires_grad(true);  // a bfloat16 parameter and gradient
  h.set_grad(Tensor::ones({2}).to(DType::BF16));
  CHECK_THROWS_WITH_AS(clip_grad_norm(NamedTensors{{"a", a}, {"h", h}}, 1.0),
                       doctest::Contains("parameter h's gradient is"), Error);
  CHECK(a.grad().to_vector() == std::vector<float>{2, 2, 2});  // nothing was scaled
  // sqrt(12) = 3.46 > 1: clipped to norm 1 (to float32 rounding)
  CHECK(clip_grad_norm({a, b}, 1.0).item() == doctest::Approx(std::sqrt(12.0)).epsilon(1e-7));
  double sq = 0;
  for (float v : a.grad().to_vector()) sq += double(v) * v;
  CHECK(std::sqrt(sq) == doctest::Approx(1.0).epsilon(1e-6));
  a.zero_grad();
  const Tensor none = clip_grad_norm({a, b}, 1.0);
  CHECK(none.shape() == Shape{});
  CHECK(none.item() == 0.f);
  CHECK(clip_grad_norm(std::vector<Tensor>{}, 1.0).item() == 0.f);
}
