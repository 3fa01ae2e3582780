// test_dsen2cr.cpp: DSen2-CR against the reference (dsen2cr-sen12mscr.md section 1)
// and a PyTorch restatement of it: parameter counts and names, He-uniform init,
// cloud-removed output on real SEN12MS-CR crops (DN within 1), one training
// step's loss and gradients, and input errors.
// References: tests/torch/gen_fixtures_models.py (fixtures models_dsen2cr_*, models_train_dsen2cr*).
#include <cmath>

#include "backends/cuda/backend.h"
#include "data/normalize.h"
#include "engine/autograd.h"
#include "engine/ops/loss.h"
#include "models/model_io.h"
#include "tests/models/models_test_util.h"

using namespace nimbus;
using namespace nimbus::models;
using namespace nimbus::test;

TEST_CASE("dsen2cr: parameter counts of the paper's B=16 F=256 (18,947,341 with SAR, 18,942,733 without)") {
  CHECK(DSen2CR(DSen2CRConfig{16, 256, true}).num_parameters() == 18947341);
  CHECK(DSen2CR(DSen2CRConfig{16, 256, false}).num_parameters() == 18942733);
  for (int B : {0, 1, 4}) {
    for (int F : {8, 64}) {  // perf-baseline.md: 18 B F^2 + (2B + 253) F + 13
      CHECK(DSen2CR(DSen2CRConfig{B, F, true}).num_parameters() == 18 * B * F * F + (2 * B + 253) * F + 13);
    }
  }
}

TEST_CASE("dsen2cr: state_dict names and shapes") {
  DSen2CR net(DSen2CRConfig{2, 16, true});
  const std::vector<std::pair<std::string, std::string>> want = {
      {"head.weight", "(16,15,3,3)"},          {"head.bias", "(16)"},
      {"blocks.0.conv1.weight", "(16,16,3,3)"}, {"blocks.0.conv1.bias", "(16)"},
      {"blocks.0.conv2.weight", "(16,16,3,3)"}, {"blocks.0.conv2.bias", "(16)"},
      {"blocks.1.conv1.weight", "(16,16,3,3)"}, {"blocks.1.conv1.bias", "(16)"},
      {"blocks.1.conv2.weight", "(16,16,3,3)"}, {"blocks.1.conv2.bias", "(16)"},
      {"tail.weight", "(13,16,3,3)"},          {"tail.bias", "(13)"}};
  auto got = net.state_dict();
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    CHECK(got[i].first == want[i].first);
    CHECK(got[i].second.shape().str() == want[i].second);
  }
  CHECK(DSen2CR(DSen2CRConfig{1, 8, false}).state_dict()[0].second.shape().str() == "(8,13,3,3)");
}

TEST_CASE("dsen2cr: He-uniform weights (bound sqrt(6 / fan_in)) and zero biases") {
  Rng rng(11);
  DSen2CR net(DSen2CRConfig{2, 64, true}, rng);
  for (const auto& [name, t] : net.named_parameters()) {
    std::vector<float> v = t.to_vector();
    if (name.ends_with("bias")) {
      for (float x : v) REQUIRE_MESSAGE(x == 0.f, name);
      continue;
    }
    const double bound = std::sqrt(6.0 / double(t.size(1) * 9));
    double ss = 0, mx = 0;
    for (float x : v) ss += double(x) * x, mx = std::max(mx, std::fabs(double(x)));
    CHECK_MESSAGE(mx <= bound, name);
    CHECK_MESSAGE(mx > 0.95 * bound, name);  // uses the whole range
    CHECK_MESSAGE(std::fabs(std::sqrt(ss / double(v.size())) / (bound / std::sqrt(3.0)) - 1) < 0.08, name);
  }
}

TEST_CASE("dsen2cr vs torch on real SEN12MS-CR crops: cloud-removed DN within 1") {
  for (const char* tag : {"dsen2cr_sar", "dsen2cr_nosar"}) {
    CAPTURE(tag);
    LoadedModel lm = load_model(fixture(std::string("models_") + tag + ".safetensors"));
    REQUIRE(lm.model.dsen2cr);
    CHECK(lm.from_pytorch);
    const bool sar = std::string(tag) == "dsen2cr_sar";
    CHECK(lm.model.config.dsen2cr == (sar ? DSen2CRConfig{2, 16, true} : DSen2CRConfig{1, 8, false}));
    SafetensorsFile want = load_safetensors(fixture(std::string("models_") + tag + "_expected.safetensors"));
    Triplets in = sen12mscr_crops(meta_json(want, "triplets"), meta_json(want, "crop"));
    Tensor out = lm.model.dsen2cr->forward(in.s2, sar ? in.s1 : Tensor());
    check_close(out, want.at("out"), 2e-5, 1e-5, "normalised output");
    std::vector<float> dn = out.to_vector(), dn_want = want.at("out").to_vector();
    for (auto& v : dn) v *= data::kS2Scale;
    for (auto& v : dn_want) v *= data::kS2Scale;
    check_close(dn, dn_want, 1.0, 0, "DN");
  }
}

TEST_CASE("dsen2cr training step vs torch: L1 loss and every gradient") {
  LoadedModel lm = load_model(fixture("models_train_dsen2cr.safetensors"));
  SafetensorsFile want = load_safetensors(fixture("models_train_dsen2cr_expected.safetensors"));
  Triplets in = sen12mscr_crops(meta_json(want, "triplets"), meta_json(want, "crop"));
  DSen2CR& net = *lm.model.dsen2cr;
  net.train();
  Tensor loss = l1_loss(net.forward(in.s2, in.s1), in.target);
  CHECK(loss.item() == doctest::Approx(want.at("loss").item()).epsilon(1e-5));
  loss.backward();
  CHECK(check_grads(net.named_parameters(), want, 1e-5, 1e-3) == 8);
}

TEST_CASE("dsen2cr: input errors (missing SAR, unexpected SAR, band counts, sizes)") {
  DSen2CR sar(DSen2CRConfig{1, 4, true});
  DSen2CR nosar(DSen2CRConfig{1, 4, false});
  Tensor s2 = Tensor::zeros({1, 13, 8, 8}), s1 = Tensor::zeros({1, 2, 8, 8});
  CHECK_THROWS_WITH_AS(sar.forward(s2), doctest::Contains("needs the S1 input"), Error);
  CHECK_THROWS_WITH_AS(nosar.forward(s2, s1), doctest::Contains("takes no S1 input"), Error);
  CHECK_THROWS_WITH_AS(sar.forward(Tensor::zeros({1, 12, 8, 8}), s1),
                       doctest::Contains("S2 input (1,12,8,8) is not (N,13,H,W)"), Error);
  CHECK_THROWS_WITH_AS(sar.forward(s2, Tensor::zeros({1, 2, 8, 7})),
                       doctest::Contains("S1 input (1,2,8,7) does not match S2 input (1,13,8,8)"), Error);
  CHECK(sar.forward(s2, s1).shape() == s2.shape());
  CHECK(nosar.forward(s2).shape() == s2.shape());
}

// forward_dn scales on the inputs' device with band_affine, whose operations are data/normalize.h's
// term for term: on the CPU it equals normalize -> forward -> denormalize bitwise; on the emulated
// CUDA device (fp32 math) within the float32 bound of the convolutions.
TEST_CASE("dsen2cr: forward_dn equals normalize_s2/_s1, forward, denormalize_s2 (CPU bitwise, CUDA close)") {
  Rng rng(17);
  DSen2CR net(DSen2CRConfig{2, 8, true}, rng);
  net.eval();
  const int64_t N = 2, H = 9, W = 7, hw = H * W;
  std::vector<float> s2 = test::to_float(test::random_vec(size_t(N * 13 * hw), rng, -300, 11000));
  std::vector<float> s1 = test::to_float(test::random_vec(size_t(N * 2 * hw), rng, -40, 2));
  std::vector<float> s2n = s2, s1n = s1;
  data::normalize_s2(s2n.data(), s2n.size());
  for (int64_t n = 0; n < N; ++n) data::normalize_s1(s1n.data() + n * 2 * hw, size_t(hw));
  NoGradGuard ng;
  std::vector<float> want = net.forward(Tensor::from_vector({N, 13, H, W}, s2n), Tensor::from_vector({N, 2, H, W}, s1n))
                                .to_vector();
  data::denormalize_s2(want.data(), want.size());
  const Tensor S2 = Tensor::from_vector({N, 13, H, W}, s2), S1 = Tensor::from_vector({N, 2, H, W}, s1);
  CHECK(net.forward_dn(S2, S1).to_vector() == want);
  if (cuda::register_cuda_backend()) {
    const cuda::MathScope fp32(cuda::Math::Fp32);
    net.to(Device::CUDA);
    check_close(net.forward_dn(S2.to(Device::CUDA), S1.to(Device::CUDA)).to_vector(), want, 1e-2, 1e-5, "CUDA");
    net.to(Device::CPU);
  }
}
