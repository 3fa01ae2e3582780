// test_autocast.cpp: the recorded cast op and the bfloat16 autocast policy (engine/autocast.h), on
// the CPU backend and the emulated CUDA backend.
//
// Bounds. A bfloat16 value carries 8 significant bits: rounding moves it by at most 2^-8 of itself.
// An op under the policy sees its operands rounded once (2^-8 each) and rounds its result once, so
// a conv or linear output is within ~3 * 2^-8 of the float32 result, relative to the sum of |terms|.
// A whole training step chains a dozen such ops forward and back. Each tensor after a step is
// compared by its largest difference over its largest |value| and by the cosine of the two as
// vectors (the direction the step moves a parameter). Measured (CPU and emulated CUDA alike):
// DSen2-CR 8.7e-3 of scale, cosine >= 0.99998: bounds 3e-2 and 0.9999. The ResNet's gradients near
// the input are sums with heavy cancellation (a bias gradient summing +- terms ~100x its value,
// ReLU masks that bfloat16 flips), so they part by up to 0.41 of their scale (layer1.0.bn1.bias)
// while keeping cosine >= 0.951; its bound is the cosine alone, 0.9. A lost cast (a gradient never
// reaching its float32 parameter, an op in the wrong dtype) makes a gradient undefined, non-float32
// (both checked) or unrelated to float32's (cosine near 0).
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "backends/cuda/backend.h"
#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/ops/arith.h"
#include "engine/ops/cast.h"
#include "engine/ops/conv.h"
#include "engine/ops/linear.h"
#include "engine/ops/loss.h"
#include "engine/ops/shape_ops.h"
#include "engine/optim/sgd.h"
#include "engine/random.h"
#include "kernels/emu/runtime.h"  // all_launch_stats: the wgmma the emulator ran
#include "models/dsen2cr.h"
#include "models/resnet.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {

std::vector<Device> devices() {
  std::vector<Device> d{Device::CPU};
  if (cuda::register_cuda_backend()) d.push_back(Device::CUDA);
  return d;
}

// Largest |a - b| over the largest |b|.
double rel_diff(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  REQUIRE(x.size() == y.size());
  double worst = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    scale = std::max(scale, double(std::fabs(y[i])));
    const double d = std::fabs(double(x[i]) - y[i]);
    worst = std::isfinite(d) ? std::max(worst, d) : INFINITY;
  }
  return worst / (scale > 0 ? scale : 1);
}

}  // namespace

TEST_CASE("autocast: cast rounds to bfloat16 and back, is recorded, and its gradient returns in the source dtype") {
  for (Device d : devices()) {
    const std::string dev = device_name(d);
    CAPTURE(dev);
    const Tensor x = Tensor::from_vector({4}, {1.0f, 1.00390625f, 3.14159f, -2.5e-3f}, d).set_requires_grad(true);
    const Tensor y = cast(x, DType::BF16);
    CHECK(y.dtype() == DType::BF16);
    const std::vector<float> v = y.to_vector();
    CHECK(v[0] == 1.0f);
    CHECK(v[1] == 1.0f);                 // 1 + 2^-8 is a tie: to even
    CHECK(v[2] == 3.140625f);            // nearest bf16
    CHECK(std::fabs(v[3] + 2.5e-3f) <= 2.5e-3f / 256);
    CHECK(y.requires_grad());
    CHECK(cast(x, DType::F32).impl() == x.impl());  // same dtype: the same tensor, nothing recorded
    // d/dx sum(3 * cast(x)) = 3, delivered in float32.
    reshape(mse_loss(mul_scalar(cast(y, DType::F32), 1.0f), Tensor::zeros({4}, d)), Shape{}).backward();
    REQUIRE(x.grad().defined());
    CHECK(x.grad().dtype() == DType::F32);
    const std::vector<float> g = x.grad().to_vector();
    for (size_t i = 0; i < g.size(); ++i) CHECK(g[i] == doctest::Approx(2.0 * v[i] / 4).epsilon(1e-6).scale(0));
  }
}

TEST_CASE("autocast: conv2d and linear compute in bfloat16 inside the scope, and float32 parameters get float32 gradients") {
  for (Device d : devices()) {
    const std::string dev = device_name(d);
    CAPTURE(dev);
    const cuda::MathScope fp32(cuda::Math::Fp32);  // the float32 run in float32, not TF32, on CUDA
    Rng rng(3);
    const Tensor x = Tensor::randn({2, 3, 9, 8}, rng).to(d), w = Tensor::randn({5, 3, 3, 3}, rng).to(d);
    const Tensor b = Tensor::randn({5}, rng).to(d), fw = Tensor::randn({4, 5 * 9 * 8}, rng).to(d);
    auto run = [&](DType compute, Tensor& gw, Tensor& gfw) {
      const Tensor W = w.clone().set_requires_grad(true), FW = fw.clone().set_requires_grad(true);
      Tensor h, logits;
      {
        const AutocastScope scope(compute);
        h = conv2d_relu(x, W, b, 1, 1);
        logits = linear(flatten(h, 1), FW, Tensor());
        CHECK(h.dtype() == compute);
        CHECK(logits.dtype() == compute);
        cross_entropy(logits, Tensor::from_vector({2}, {1, 3}, d)).backward();
      }
      gw = W.grad(), gfw = FW.grad();
      return logits.to(DType::F32);
    };
    Tensor gw32, gfw32, gw16, gfw16;
    const Tensor y32 = run(DType::F32, gw32, gfw32), y16 = run(DType::BF16, gw16, gfw16);
    REQUIRE(gw16.defined());
    REQUIRE(gfw16.defined());
    CHECK(gw16.dtype() == DType::F32);
    CHECK(gfw16.dtype() == DType::F32);
    CHECK(rel_diff(y16, y32) <= 3.0 / 256);
    CHECK(rel_diff(gw16, gw32) <= 6.0 / 256);
    CHECK(rel_diff(gfw16, gfw32) <= 6.0 / 256);
    CHECK(rel_diff(y16, y32) > 0);  // really computed in bfloat16
  }
}

TEST_CASE("autocast: elementwise ops take a mixed pair as float32 inside the scope and refuse it outside") {
  const Tensor a = Tensor::full({3}, 1.5f), b16 = Tensor::full({3}, 0.25f).to(DType::BF16);
  CHECK_THROWS_WITH_AS(add(a, b16), doctest::Contains("add: dtypes differ"), Error);
  CHECK_THROWS_WITH_AS(add_scaled(a, b16, 0.1f), doctest::Contains("AutocastScope"), Error);
  const AutocastScope scope(DType::BF16);
  const Tensor y = add(a, b16);
  CHECK(y.dtype() == DType::F32);
  CHECK(y.to_vector() == std::vector<float>(3, 1.75f));
  const Tensor z = add_relu(b16, b16);  // one dtype: stays bfloat16
  CHECK(z.dtype() == DType::BF16);
  CHECK(z.to_vector() == std::vector<float>(3, 0.5f));
}

namespace {

// One SGD step of `Model` built from Rng(seed) on device d under compute dtype `compute`: the
// gradients, then the parameters and buffers after the step (float32, on the CPU), and their names.
template <typename Model, typename Config, typename Loss>
std::vector<std::pair<std::string, Tensor>> autocast_step(const Config& cfg, uint64_t seed, Device d, DType compute,
                                                          bool batch_stats, Loss loss_of) {
  Rng rng(seed);
  Model m(cfg, rng);
  m.to(d);
  if (batch_stats)
    m.train();
  else
    m.eval();
  SGD opt(m.named_parameters(), SGDOptions{0.1});
  {
    const AutocastScope scope(compute);
    loss_of(m, d).backward();
  }
  opt.step();
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, t] : m.named_parameters()) {
    REQUIRE_MESSAGE(t.grad().defined(), name, " got no gradient");
    CHECK_MESSAGE(t.grad().dtype() == DType::F32, name, "'s gradient is not float32");
    out.emplace_back("grad of " + name, t.grad().to(Device::CPU));
  }
  for (const auto& [name, t] : m.state_dict()) {
    CHECK_MESSAGE(t.dtype() == DType::F32, name, " is not float32 after the step");
    out.emplace_back(name + " after the step", t.to(Device::CPU));
  }
  return out;
}

// cos(a, b) of two tensors as flat vectors (1 when both are zero).
double cosine(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  double xy = 0, xx = 0, yy = 0;
  for (size_t i = 0; i < x.size(); ++i) xy += double(x[i]) * y[i], xx += double(x[i]) * x[i], yy += double(y[i]) * y[i];
  return xx == 0 && yy == 0 ? 1.0 : xy / std::sqrt(xx * yy);
}

void check_steps_close(const std::vector<std::pair<std::string, Tensor>>& got,
                       const std::vector<std::pair<std::string, Tensor>>& want, double bound, double min_cos,
                       const std::string& what) {
  REQUIRE(got.size() == want.size());
  double worst = 0, worst_cos = 1;
  std::string worst_name, worst_cos_name;
  for (size_t i = 0; i < got.size(); ++i) {
    const double r = rel_diff(got[i].second, want[i].second), c = cosine(got[i].second, want[i].second);
    CHECK_MESSAGE(r <= bound, what, ": ", want[i].first, " differs by ", r, " of its scale (bound ", bound, ")");
    CHECK_MESSAGE(c >= min_cos, what, ": ", want[i].first, " has cosine ", c, " with float32's (bound ", min_cos, ")");
    if (!(r <= worst)) worst = r, worst_name = want[i].first;
    if (!(c >= worst_cos)) worst_cos = c, worst_cos_name = want[i].first;
  }
  MESSAGE(what, ": worst ", worst, " of scale (", worst_name, "), lowest cosine ", worst_cos, " (", worst_cos_name, ")");
}

}  // namespace

// Well-conditioned steps (as test_cuda_ops.cpp's TF32 cases): batch norm on running statistics, MSE
// and plain SGD, so that the comparison measures rounding, not the amplification of ill-conditioned
// batch statistics or of sign() in L1 losses. The ResNet's step is the worse conditioned one (cross
// entropy; max pooling, where a bfloat16 rounding may change which value is largest): its worst
// tensor is 0.41 of its scale (layer1's first batch-norm bias gradient, a sum of terms that cancel),
// lowest cosine 0.951, the same on every backend; the bounds 0.6 and 0.93 leave 1.5x. DSen2-CR's worst
// is 0.0087 (bound 3e-2). Each op's bfloat16 bound (2^-8) is held op by op elsewhere.
TEST_CASE("autocast: a bfloat16 training step of a tiny ResNet and a tiny DSen2-CR is within the bf16 bound of float32") {
  const models::ResNetConfig rcfg{
      .block = models::BlockType::Basic, .blocks = {1, 1, 1, 1}, .width = 4, .in_channels = 3, .classes = 5};
  Rng data(5);
  const Tensor x = Tensor::randn({3, 3, 32, 32}, data), y = Tensor::from_vector({3}, {4, 1, 0});
  auto resnet_loss = [&](models::ResNet& m, Device d) { return cross_entropy(m.forward(x.to(d)), y.to(d)); };
  models::DSen2CRConfig dcfg;
  dcfg.blocks = 2;
  dcfg.features = 8;
  const Tensor s2 = Tensor::randn({2, 13, 6, 5}, data), s1 = Tensor::randn({2, 2, 6, 5}, data);
  const Tensor target = Tensor::randn({2, 13, 6, 5}, data);
  auto dsen2cr_loss = [&](models::DSen2CR& m, Device d) { return mse_loss(m.forward(s2.to(d), s1.to(d)), target.to(d)); };
  const auto r32 = autocast_step<models::ResNet>(rcfg, 11, Device::CPU, DType::F32, false, resnet_loss);
  const auto d32 = autocast_step<models::DSen2CR>(dcfg, 12, Device::CPU, DType::F32, false, dsen2cr_loss);
  for (Device d : devices()) {
    const std::string dev = device_name(d);
    CAPTURE(dev);
    const cuda::MathScope fp32(cuda::Math::Fp32);  // the float32 layers on CUDA: plain fp32 kernels
    const std::string tag = std::string(" on ") + device_name(d);
    check_steps_close(autocast_step<models::ResNet>(rcfg, 11, d, DType::BF16, false, resnet_loss), r32, 0.6, 0.93,
                      "tiny ResNet, bf16 vs fp32" + tag);
    check_steps_close(autocast_step<models::DSen2CR>(dcfg, 12, d, DType::BF16, false, dsen2cr_loss), d32, 3e-2,
                      0.9999, "tiny DSen2-CR, bf16 vs fp32" + tag);
  }
  // The same steps with the bfloat16 convolutions on Hopper's kernels (conv2d_wgmma.cu: the stem, 1x1
  // and strided convs, DSen2-CR's residual epilogue), which the emulator runs when asked; its wgmma
  // count shows they ran.
  if (cuda::register_cuda_backend()) {
    const cuda::MathScope fp32(cuda::Math::Fp32);
    const cuda::ConvKernelsScope hopper(cuda::ConvKernels::Wgmma);
    REQUIRE(cuda::convs_on_wgmma());
    const int64_t before = emu::all_launch_stats().wgmma;
    check_steps_close(autocast_step<models::ResNet>(rcfg, 11, Device::CUDA, DType::BF16, false, resnet_loss), r32, 0.6,
                      0.93, "tiny ResNet, bf16 on wgmma vs fp32");
    const int64_t resnet = emu::all_launch_stats().wgmma;
    CHECK(resnet > before);
    check_steps_close(autocast_step<models::DSen2CR>(dcfg, 12, Device::CUDA, DType::BF16, false, dsen2cr_loss), d32,
                      3e-2, 0.9999, "tiny DSen2-CR, bf16 on wgmma vs fp32");
    CHECK(emu::all_launch_stats().wgmma > resnet);
  }
}
