// test_module.cpp: Module naming (PyTorch state_dict order), load_state_dict
// errors, modes, gradients, the layers against a torch net, and initialisers.
// Fixture: tests/fixtures/module_names.safetensors (tests/torch/gen_fixtures_optim.py).
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "engine/autograd.h"
#include "engine/io/json.h"
#include "engine/io/safetensors.h"
#include "engine/nn/init.h"
#include "engine/nn/layers.h"
#include "engine/ops/arith.h"
#include "engine/ops/activation.h"
#include "engine/ops/loss.h"
#include "engine/optim/sgd.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {

// The torch script's Block and Net, module for module.
struct Block : UnaryModule {
  std::shared_ptr<Conv2d> conv1, conv2;
  std::shared_ptr<BatchNorm2d> bn1, bn2;
  std::shared_ptr<Sequential> downsample;
  Block(int64_t cin, int64_t cout, int stride) {
    conv1 = register_module("conv1", std::make_shared<Conv2d>(cin, cout, 3, stride, 1, false));
    bn1 = register_module("bn1", std::make_shared<BatchNorm2d>(cout));
    register_module("relu", std::make_shared<ReLU>());
    conv2 = register_module("conv2", std::make_shared<Conv2d>(cout, cout, 3, 1, 1, false));
    bn2 = register_module("bn2", std::make_shared<BatchNorm2d>(cout));
    if (stride != 1 || cin != cout)
      downsample =
          register_module("downsample", make_sequential(std::make_shared<Conv2d>(cin, cout, 1, stride, 0, false),
                                                        std::make_shared<BatchNorm2d>(cout)));
  }
  Tensor forward(const Tensor& x) override {
    Tensor y = relu(bn1->forward(conv1->forward(x)));
    y = bn2->forward(conv2->forward(y));
    return relu(add(y, downsample ? downsample->forward(x) : x));
  }
};

struct Net : Module {
  std::shared_ptr<Sequential> stem, layer1;
  std::shared_ptr<Linear> fc;
  Tensor scale, offset;
  Net() {
    stem = register_module("stem",
                           make_sequential(std::make_shared<Conv2d>(3, 4, 3, 1, 1), std::make_shared<BatchNorm2d>(4),
                                           std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(2)));
    blocks = {std::make_shared<Block>(4, 8, 2), std::make_shared<Block>(8, 8, 1)};
    layer1 = register_module("layer1", make_sequential(blocks[0], blocks[1]));
    fc = register_module("fc", std::make_shared<Linear>(8, 5));
    scale = register_parameter("scale", Tensor::full({5}, 0.5f));
    offset = register_buffer("offset", Tensor::from_vector({5}, {0, 1, 2, 3, 4}));
  }
  // y = fc(gap(layer1(stem(x)))) * scale + offset; the last line has no broadcasting op, so no autograd.
  std::vector<float> forward(const Tensor& x) {
    Tensor h = stem->forward(x);
    h = layer1->forward(h);
    std::vector<float> y = fc->forward(GlobalAvgPool().forward(h)).to_vector();
    std::vector<float> s = scale.to_vector(), o = offset.to_vector();
    for (size_t i = 0; i < y.size(); ++i) y[i] = y[i] * s[i % 5] + o[i % 5];
    return y;
  }
  std::vector<std::shared_ptr<Block>> blocks;
};

const SafetensorsFile& fx() { return fixture_file("module_names.safetensors"); }

std::vector<std::string> keys(const NamedTensors& nt) {
  std::vector<std::string> k;
  for (auto& [n, t] : nt) k.push_back(n);
  return k;
}

}  // namespace

TEST_CASE("module: state_dict names and order are PyTorch's") {
  Net net;
  // What torch prints for the same structure (own tensors first, then children in order).
  std::vector<std::string> want = {"scale",
                                   "offset",
                                   "stem.0.weight",
                                   "stem.0.bias",
                                   "stem.1.weight",
                                   "stem.1.bias",
                                   "stem.1.running_mean",
                                   "stem.1.running_var",
                                   "stem.1.num_batches_tracked"};
  for (std::string b : {"layer1.0.", "layer1.1."}) {
    for (std::string m : {"conv1", "bn1", "conv2", "bn2"}) {
      if (m[0] == 'c')
        want.push_back(b + m + ".weight");
      else
        for (std::string s : {".weight", ".bias", ".running_mean", ".running_var", ".num_batches_tracked"})
          want.push_back(b + m + s);
    }
    if (b == "layer1.0.")
      for (std::string s :
           {"downsample.0.weight", "downsample.1.weight", "downsample.1.bias", "downsample.1.running_mean",
            "downsample.1.running_var", "downsample.1.num_batches_tracked"})
        want.push_back(b + s);
  }
  want.push_back("fc.weight");
  want.push_back("fc.bias");
  CHECK(keys(net.state_dict()) == want);

  // The same list as torch saved it, and the same shapes.
  json::Value saved = json::parse(fx().metadata.at("keys"));
  std::vector<std::string> torch_keys;
  for (auto& v : saved.arr) torch_keys.push_back(v.s);
  CHECK(torch_keys == want);
  for (auto& [n, t] : net.state_dict()) {
    CAPTURE(n);
    CHECK(t.shape() == fx().at(n).shape());
  }

  // Parameters are the trainable subset, buffers the rest.
  auto params = net.named_parameters(), bufs = net.named_buffers();
  CHECK(params.size() + bufs.size() == want.size());
  CHECK(keys(params).front() == "scale");
  CHECK(keys(bufs).front() == "offset");
  for (auto& [n, t] : params) CHECK(t.requires_grad());
  for (auto& [n, t] : bufs) CHECK_FALSE(t.requires_grad());
  int64_t count = 0;
  for (auto& [n, t] : params) count += t.numel();
  // conv 4*3*9+4, bn 8, blocks: 8*4*9 + 16 + 8*8*9 + 16 + 8*4 + 16, 8*8*9 + 16 + 8*8*9 + 16, fc 45, scale 5
  CHECK(count == 112 + 8 + (288 + 16 + 576 + 16 + 32 + 16) + (576 + 16 + 576 + 16) + 45 + 5);
  CHECK(net.num_parameters() == count);
  CHECK(net.parameters().size() == params.size());
}

TEST_CASE("module: torch weights load and the layers reproduce torch's outputs") {
  Net net;
  NamedTensors torch_sd;
  for (auto& [n, t] : fx().tensors)
    if (n.rfind("test.", 0) != 0) torch_sd.emplace_back(n, t);
  LoadResult r = net.load_state_dict(torch_sd);  // includes I64 num_batches_tracked, shape ()
  CHECK(r.missing.empty());
  CHECK(r.unexpected.empty());
  for (auto& [n, t] : net.state_dict()) check_close(t, fx().at(n), 0, 0, n);

  net.eval();
  CHECK_FALSE(net.blocks[1]->bn2->is_training());
  const Tensor& x = fx().at("test.x");
  {
    NoGradGuard ng;
    check_close(net.forward(x), fx().at("test.y_eval").to_vector(), 1e-5, 1e-4, "eval output");
  }
  CHECK(net.blocks[0]->bn1->num_batches_tracked.item() == 0);  // eval does not count
  net.train();
  CHECK(net.blocks[1]->bn2->is_training());
  check_close(net.forward(x), fx().at("test.y_train").to_vector(), 1e-5, 1e-4, "train output");
  for (auto& [n, t] : net.named_buffers()) {
    if (n == "offset") continue;
    CAPTURE(n);
    check_close(t, fx().at("test.after_train." + n), 1e-6, 1e-5, n);
  }
  CHECK(net.blocks[0]->bn1->num_batches_tracked.item() == 1);
}

TEST_CASE("module: load_state_dict reports every problem at once and changes nothing") {
  Net net;
  NamedTensors sd;
  for (auto& [n, t] : net.state_dict()) sd.emplace_back(n, t.clone());
  NamedTensors bad;
  for (auto& [n, t] : sd) {
    if (n == "fc.bias" || n == "stem.1.running_var") continue;  // 2 missing
    if (n == "layer1.1.conv2.weight")
      bad.emplace_back(n, Tensor::zeros({8, 8, 1, 1}));  // wrong shape
    else if (n == "stem.0.weight")
      bad.emplace_back(n, Tensor::zeros({3, 3, 3, 3}));  // wrong shape
    else
      bad.emplace_back(n, Tensor::full(t.shape(), 7.f));
  }
  bad.emplace_back("fc.extra", Tensor::zeros({1}));
  bad.emplace_back("layer2.0.conv1.weight", Tensor::zeros({1}));
  try {
    net.load_state_dict(bad);
    FAIL("no error");
  } catch (const Error& e) {
    std::string m = e.what();
    INFO(m);
    CHECK(m.find("2 missing: [stem.1.running_var, fc.bias]") != std::string::npos);
    CHECK(m.find("2 unexpected: [fc.extra, layer2.0.conv1.weight]") != std::string::npos);
    CHECK(m.find("2 wrongly shaped: [stem.0.weight: checkpoint (3,3,3,3) vs model (4,3,3,3), "
                 "layer1.1.conv2.weight: checkpoint (8,8,1,1) vs model (8,8,3,3)]") != std::string::npos);
  }
  std::map<std::string, Tensor> orig(sd.begin(), sd.end());
  for (auto& [n, t] : net.state_dict()) check_close(t, orig.at(n), 0, 0, n + " unchanged");

  // Not strict: missing and unexpected are reported, not fatal; wrong shapes still are.
  NamedTensors partial = {{"fc.bias", Tensor::full({5}, 3.f)}, {"nonsense", Tensor::zeros({2})}};
  LoadResult r = net.load_state_dict(partial, false);
  CHECK(r.unexpected == std::vector<std::string>{"nonsense"});
  CHECK(r.missing.size() == net.state_dict().size() - 1);
  CHECK(net.fc->bias.to_vector() == std::vector<float>(5, 3.f));
  CHECK_THROWS_WITH_AS(net.load_state_dict(NamedTensors{{"fc.bias", Tensor::zeros({4})}}, false),
                       doctest::Contains("fc.bias: checkpoint (4) vs model (5)"), Error);

  // An entry in another dtype (bfloat16, after float32 ones) is converted, as PyTorch converts: every
  // entry loads (it used to throw half-way, the entries before it already copied).
  NamedTensors mixed;
  for (auto& [n, t] : sd) mixed.emplace_back(n, Tensor::full(t.shape(), 1.5f));
  auto& [mid_name, mid] = mixed[mixed.size() / 2];
  mid = Tensor::full(mid.shape(), 0.3f).to(DType::BF16);  // 0.30078125 in bfloat16
  mixed.back().second = mixed.back().second.to(DType::BF16);
  net.load_state_dict(mixed);
  for (auto& [n, t] : net.state_dict()) {
    CAPTURE(n);
    CHECK(t.dtype() == DType::F32);
    const float want = n == mid_name ? 0.30078125f : 1.5f;
    for (float v : t.to_vector()) REQUIRE(v == want);
  }
}

TEST_CASE("module: registration rules, train/eval, zero_grad, Sequential") {
  Module m;
  m.register_parameter("w", Tensor::zeros({2}));
  CHECK_THROWS_WITH_AS(m.register_buffer("w", Tensor::zeros({2})), doctest::Contains("already used"), Error);
  CHECK_THROWS_WITH_AS(m.register_parameter("a.b", Tensor::zeros({2})), doctest::Contains("'a.b'"), Error);
  CHECK_THROWS_AS(m.register_module("c", std::shared_ptr<Module>()), Error);
  CHECK_THROWS_AS(m.register_parameter("u", Tensor()), Error);

  // A child added to a module in eval mode starts in eval mode; train() recurses.
  Sequential seq{std::make_shared<Linear>(3, 4), std::make_shared<ReLU>(), std::make_shared<Linear>(4, 2)};
  CHECK(keys(seq.state_dict()) == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  seq.eval();
  CHECK_FALSE(seq[2].is_training());
  seq.push_back(std::make_shared<ReLU>());
  CHECK_FALSE(seq[3].is_training());
  seq.train();
  CHECK(seq[0].is_training());
  CHECK_THROWS_AS(seq[4], Error);

  // Sequential = the layers applied in order; gradients reach every parameter; zero_grad drops them.
  Rng rng(1);
  Tensor x = Tensor::randn({5, 3}, rng);
  Tensor y = seq.forward(x);
  auto& l0 = dynamic_cast<Linear&>(seq[0]);
  auto& l2 = dynamic_cast<Linear&>(seq[2]);
  std::vector<float> manual = relu(l2.forward(relu(l0.forward(x)))).to_vector();
  CHECK(y.to_vector() == manual);
  Tensor loss = cross_entropy(y, Tensor::from_vector({5}, {0, 1, 1, 0, 1}));
  loss.backward();
  for (auto& p : seq.parameters()) CHECK(p.grad().defined());
  seq.zero_grad();
  for (auto& p : seq.parameters()) CHECK_FALSE(p.grad().defined());

  const float* storage = l0.weight.data();
  seq.to(Device::CPU);  // already there: a no-op that keeps the handles and their storage
  CHECK(l0.weight.same(seq.named_parameters()[0].second));
  CHECK(l0.weight.data() == storage);
}

TEST_CASE("init: PyTorch default bounds, kaiming/he uniform and normal, constants") {
  Rng rng(11);
  auto stats = [](const Tensor& t) {
    std::vector<float> v = t.to_vector();
    double lo = 1e9, hi = -1e9, m = 0, m2 = 0;
    for (float f : v) lo = std::min(lo, double(f)), hi = std::max(hi, double(f)), m += f, m2 += double(f) * f;
    m /= v.size();
    return std::array<double, 4>{lo, hi, m, m2 / v.size() - m * m};
  };
  // Conv2d(16, 32, 3): fan_in 144, bound 1/12 for weight and bias; U(-b,b) has variance b^2/3.
  Conv2d conv(16, 32, 3, 1, 1, true, rng);
  auto [lo, hi, mean, var] = stats(conv.weight);
  double b = 1.0 / 12;
  CHECK(lo >= -b);
  CHECK(hi <= b);
  CHECK(hi > 0.98 * b);  // 4608 draws reach close to the bound
  CHECK(lo < -0.98 * b);
  CHECK(std::fabs(mean) < 0.05 * b);
  CHECK(var == doctest::Approx(b * b / 3).epsilon(0.05).scale(0));
  auto sb = stats(conv.bias);
  CHECK(sb[0] >= -b);
  CHECK(sb[1] <= b);
  // Linear(50, 10): bound 1/sqrt(50).
  Linear lin(50, 10, true, rng);
  CHECK(stats(lin.weight)[1] <= 1 / std::sqrt(50.0));
  CHECK(stats(lin.weight)[1] > 0.9 / std::sqrt(50.0));
  // he_uniform (DSen2-CR): sqrt(6 / fan_in), fan_in = 9 * 64.
  Tensor w = Tensor::empty({64, 64, 3, 3});
  init::he_uniform_(w, rng);
  auto sh = stats(w);
  double hb = std::sqrt(6.0 / 576);
  CHECK(sh[1] <= hb);
  CHECK(sh[1] > 0.99 * hb);
  CHECK(sh[3] == doctest::Approx(hb * hb / 3).epsilon(0.03).scale(0));
  // kaiming_normal fan_out (torchvision ResNet convs): std sqrt(2 / (64 * 9)).
  init::kaiming_normal_(w, rng, 0.0, init::FanMode::FanOut);
  CHECK(std::sqrt(stats(w)[3]) == doctest::Approx(std::sqrt(2.0 / 576)).epsilon(0.03).scale(0));
  CHECK(init::fan_in(Shape{8, 4, 3, 3}) == 36);
  CHECK(init::fan_out(Shape{8, 4, 3, 3}) == 72);
  init::ones_(w);
  CHECK(stats(w)[0] == 1);
  init::zeros_(w);
  CHECK(stats(w)[1] == 0);
  Tensor v = Tensor::zeros({3});
  CHECK_THROWS_WITH_AS(init::kaiming_uniform_(v, rng), doctest::Contains("at least 2 dims"), Error);
  // Same seed, same model.
  Rng r1(5), r2(5);
  CHECK(Conv2d(3, 4, 3, 1, 1, true, r1).weight.to_vector() == Conv2d(3, 4, 3, 1, 1, true, r2).weight.to_vector());
}

// A weight tied between two layers (or one layer registered twice) is one parameter, as in PyTorch:
// listed once, under its first name, counted once, stepped once with the gradients of both uses summed;
// state_dict keeps every name (PyTorch's checkpoints of tied models hold both).
TEST_CASE("module: a tied weight is one parameter: listed, counted and stepped once, saved under each name") {
  Rng rng(4);
  auto shared = std::make_shared<Linear>(3, 3, false, rng);
  Module net;
  net.register_module("first", shared);
  auto second = net.register_module("second", std::make_shared<Linear>(3, 3, false, rng));
  net.register_module("again", shared);               // the same layer under another name
  Module tied;
  tied.register_parameter("w", second->weight);       // a weight tied into another module
  net.register_module("tied", std::shared_ptr<Module>(&tied, [](Module*) {}));
  CHECK(keys(net.named_parameters()) == std::vector<std::string>{"first.weight", "second.weight"});
  CHECK(keys(net.state_dict()) ==
        std::vector<std::string>{"first.weight", "second.weight", "again.weight", "tied.w"});
  CHECK(net.num_parameters() == 18);
  // y = second(shared(shared(x))): the shared weight is used twice, its gradient is both uses' sum.
  const Tensor x = Tensor::randn({2, 3}, rng);
  const Tensor target = Tensor::randn({2, 3}, rng);
  const std::vector<float> w0 = shared->weight.to_vector();
  Tensor loss = mse_loss(second->forward(shared->forward(shared->forward(x))), target);
  loss.backward();
  const std::vector<float> g = shared->weight.grad().to_vector();
  SGD opt(net.named_parameters(), SGDOptions{0.5});  // given every name, an optimiser refuses the second
  opt.step();
  const std::vector<float> w1 = shared->weight.to_vector();
  for (size_t i = 0; i < w0.size(); ++i) CHECK(w1[i] == doctest::Approx(w0[i] - 0.5 * g[i]).epsilon(1e-6));
  CHECK_THROWS_WITH_AS(SGD(net.state_dict(), SGDOptions{0.5}), doctest::Contains("same tensor as another"), Error);
}
