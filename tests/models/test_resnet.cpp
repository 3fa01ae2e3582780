// test_resnet.cpp: the ResNet family and the classifier against torchvision:
// names/shapes/parameter counts at full size, outputs on real EuroSAT tiles and
// one llm.c-style training step (loss, every gradient, BN buffers, Adam) on small
// members, torchvision's init, and input errors.
// References: tests/torch/gen_fixtures_models.py (fixtures models_*).
#include <cmath>
#include <fstream>
#include <sstream>

#include "engine/ops/loss.h"
#include "engine/optim/adam.h"
#include "models/model_io.h"
#include "tests/models/models_test_util.h"

using namespace nimbus;
using namespace nimbus::models;
using namespace nimbus::test;

namespace {
std::vector<std::pair<std::string, std::string>> torchvision_resnet50_names() {
  std::ifstream in(fixture("models_resnet50_names.txt"));
  REQUIRE(in.good());
  std::vector<std::pair<std::string, std::string>> out;
  std::string line;
  while (std::getline(in, line)) {  // "name d0,d1,..": 0-d tensors (num_batches_tracked) have nothing after the space
    size_t sp = line.find(' ');
    REQUIRE(sp != std::string::npos);
    out.emplace_back(line.substr(0, sp), line.substr(sp + 1));
  }
  return out;
}

std::string dims(const Shape& s) {  // "64,13,7,7" as in the names file ("" for 0-d)
  std::string d;
  for (int i = 0; i < s.ndim(); ++i) d += (i ? "," : "") + std::to_string(s[i]);
  return d;
}
}  // namespace

TEST_CASE("resnet50: state_dict names, order and shapes are torchvision's - 23,559,882 parameters") {
  ResNet net(resnet50_config(13, 10));
  auto want = torchvision_resnet50_names();
  auto got = net.state_dict();
  REQUIRE(want.size() == 320);  // 161 params + 159 BN buffers in torchvision 0.14
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    CHECK_MESSAGE(got[i].first == want[i].first, "entry ", i);
    CHECK_MESSAGE(dims(got[i].second.shape()) == want[i].second, got[i].first);
  }
  CHECK(net.num_parameters() == 23559882);  // perf-baseline.md
}

TEST_CASE("resnet18-like: parameter count equals torchvision resnet18 with 13 inputs and 10 classes") {
  // torchvision resnet18: 11,689,512 with 3 inputs / 1000 classes; conv1 +64*10*49, fc 512*(10-1000) + (10-1000).
  ResNet net(resnet18_config(13, 10));
  CHECK(net.num_parameters() == 11689512 + 64 * 10 * 49 - 512 * 990 - 990);
  CHECK(net.state_dict().front().first == "conv1.weight");
  CHECK(net.state_dict()[6].first == "layer1.0.conv1.weight");  // no downsample in a basic layer1
}

TEST_CASE("resnet: torchvision init (conv kaiming_normal fan_out, BN 1/0, fc default)") {
  Rng rng(3);
  ResNet net(resnet50_config(13, 10), rng);
  for (const auto& [name, t] : net.named_parameters()) {
    std::vector<float> v = t.to_vector();
    if (name.find("bn") != std::string::npos || name.find("downsample.1") != std::string::npos) {
      const float want = name.ends_with("weight") ? 1.f : 0.f;
      for (float x : v) REQUIRE_MESSAGE(x == want, name);
    } else if (t.ndim() == 4 && t.numel() > 20000) {  // big convs: the sample std is close to the target
      double ss = 0;
      for (float x : v) ss += double(x) * x;
      const double want = std::sqrt(2.0 / double(t.size(0) * t.size(2) * t.size(3)));
      CHECK_MESSAGE(std::fabs(std::sqrt(ss / double(v.size())) / want - 1) < 0.03, name);
    } else if (name == "fc.weight") {
      const double bound = 1 / std::sqrt(2048.0);
      for (float x : v) REQUIRE(std::fabs(x) <= bound);
    }
  }
}

TEST_CASE("classifier vs torchvision on 20 real EuroSAT tiles: probabilities to 1e-4") {
  for (const char* tag : {"resnet_bottleneck", "resnet_basic"}) {
    CAPTURE(tag);
    LoadedModel lm = load_model(fixture(std::string("models_") + tag + ".safetensors"));
    CHECK(lm.from_pytorch);
    CHECK(lm.has_input_norm);
    REQUIRE(lm.model.classifier);
    const ResNetConfig& c = lm.model.config.resnet;  // inferred from names and shapes
    if (std::string(tag) == "resnet_bottleneck") {
      CHECK(c == ResNetConfig{BlockType::Bottleneck, {1, 1, 1, 1}, 8, 13, 10});
    } else {
      CHECK(c == ResNetConfig{BlockType::Basic, {2, 1, 1, 2}, 8, 13, 10});
    }
    SafetensorsFile want = load_safetensors(fixture(std::string("models_") + tag + "_expected.safetensors"));
    Tensor dn = eurosat_dn(meta_json(want, "tiles"));
    check_close(lm.model.classifier->probabilities(dn), want.at("probs"), 1e-4, 0, "probs");
    check_close(lm.model.classifier->logits(dn), want.at("logits"), 1e-4, 1e-4, "logits");
  }
}

TEST_CASE("classifier training step vs torch: loss, every gradient, BN buffers, Adam update") {
  LoadedModel lm = load_model(fixture("models_train_resnet.safetensors"));
  SafetensorsFile want = load_safetensors(fixture("models_train_resnet_expected.safetensors"));
  Classifier& net = *lm.model.classifier;
  Tensor dn = eurosat_dn(meta_json(want, "tiles"));
  net.train();
  Adam adam(net.named_parameters(), AdamOptions{});
  Tensor loss = cross_entropy(net.logits(dn), want.at("labels"));
  CHECK(loss.item() == doctest::Approx(want.at("loss").item()).epsilon(1e-5));
  loss.backward();
  // conv1, bn1 (3) + 4 blocks x 6 + 3 downsamples x 3 + fc (2)
  CHECK(check_grads(net.named_parameters(), want, 2e-5, 1e-3) == 38);
  adam.step();
  // Adam's first step moves each weight by about lr * sign(g): where |g| is at rounding level the
  // sign is arbitrary, so parameters are compared where torch's |g| > 1e-4 (Adam itself: test_optim).
  int compared = 0;
  for (const auto& [name, t] : net.state_dict()) {
    if (name.starts_with("input_norm.")) continue;
    const Tensor* g = want.find("grad." + name);
    std::vector<float> got = t.to_vector(), exp = want.at("after." + name).to_vector(), gv;
    if (g) gv = g->to_vector();
    for (size_t i = 0; i < exp.size(); ++i) {
      if (g && std::fabs(gv[i]) <= 1e-4f) got[i] = exp[i];  // excluded
      else ++compared;
    }
    check_close(got, exp, 1e-6, 1e-5, "after." + name);
  }
  CHECK(compared > 10000);
}

TEST_CASE("classifier: input normalisation is clip(DN, 0, 10000) / 10000 then (x - mean) / std per band") {
  Classifier net(ResNetConfig{BlockType::Basic, {1, 1, 1, 1}, 4, 2, 3});
  net.set_input_norm({0.1f, 0.2f}, {0.5f, 2.f});
  Tensor dn = Tensor::from_vector({1, 2, 1, 3}, {-5.f, 1000.f, 20000.f, 0.f, 5000.f, 10000.f});
  std::vector<float> z = net.normalize(dn).to_vector();
  std::vector<float> want = {(0 - 0.1f) / 0.5f, (0.1f - 0.1f) / 0.5f, (1 - 0.1f) / 0.5f,
                             (0 - 0.2f) / 2.f,  (0.5f - 0.2f) / 2.f,  (1 - 0.2f) / 2.f};
  check_close(z, want, 1e-7, 1e-6, "normalised");
  CHECK_THROWS_WITH_AS(net.set_input_norm({0.f, 0.f}, {1.f, 0.f}), doctest::Contains("not positive"), Error);
  CHECK_THROWS_WITH_AS(net.set_input_norm({0.f}, {1.f}), doctest::Contains("1 means"), Error);
  CHECK(net.state_dict().back().first == "input_norm.std");
}

TEST_CASE("resnet: wrong input shapes are errors naming the model") {
  Classifier net(ResNetConfig{BlockType::Basic, {1, 1, 1, 1}, 4, 13, 10});
  CHECK_THROWS_WITH_AS(net.forward(Tensor::zeros({1, 3, 32, 32})),
                       doctest::Contains("resnet: input (1,3,32,32) is not (N,13,H,W)"), Error);
  CHECK_THROWS_WITH_AS(net.logits(Tensor::zeros({1, 12, 32, 32})),
                       doctest::Contains("DN tensor (1,12,32,32) is not (N,13,H,W)"), Error);
  CHECK_THROWS_AS(ResNet(ResNetConfig{BlockType::Basic, {1, 0, 1, 1}, 4, 13, 10}), Error);
}
