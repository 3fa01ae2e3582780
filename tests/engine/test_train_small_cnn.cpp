// test_train_small_cnn.cpp: end to end. A small CNN with batch norm
// (conv-bn-relu-maxpool-conv-bn-relu-gap-linear) must overfit one fixed batch
// (8 images 3x16x16, 4 classes) with Adam: the loss falls at least 100-fold.
// Then a checkpoint loaded into a fresh model gives the identical eval loss.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>

#include "engine/autograd.h"
#include "engine/io/checkpoint.h"
#include "engine/nn/layers.h"
#include "engine/ops/loss.h"
#include "engine/optim/adam.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {
std::shared_ptr<Sequential> small_cnn(Rng& rng) {
  return make_sequential(
      std::make_shared<Conv2d>(3, 8, 3, 1, 1, false, rng), std::make_shared<BatchNorm2d>(8), std::make_shared<ReLU>(),
      std::make_shared<MaxPool2d>(2),  // (8,8,8,8)
      std::make_shared<Conv2d>(8, 16, 3, 1, 1, false, rng), std::make_shared<BatchNorm2d>(16), std::make_shared<ReLU>(),
      std::make_shared<GlobalAvgPool>(),            // (8,16)
      std::make_shared<Linear>(16, 4, true, rng));  // (8,4)
}

float eval_loss(Sequential& m, const Tensor& x, const Tensor& y) {
  NoGradGuard ng;
  m.eval();
  float l = cross_entropy(m.forward(x), y).item();
  m.train();
  return l;
}
}  // namespace

TEST_CASE("train: a small CNN overfits one batch with Adam, and a checkpoint reproduces its eval loss") {
  Rng rng(2024);
  auto model = small_cnn(rng);
  Tensor x = Tensor::randn({8, 3, 16, 16}, rng);
  Tensor y = Tensor::from_vector({8}, {0, 1, 2, 3, 3, 2, 1, 0});
  Adam opt(model->named_parameters(), {.lr = 0.02});

  float first = 0, last = 0;
  int steps = 0;
  for (; steps < 300; ++steps) {
    opt.zero_grad();
    Tensor loss = cross_entropy(model->forward(x), y);
    loss.backward();
    opt.step();
    last = loss.item();
    if (steps == 0) first = last;
    if (last < first / 200) break;
  }
  MESSAGE("loss ", first, " -> ", last, " after ", steps + 1, " steps");
  CHECK(first > 1.0f);  // ~log(4) at the start
  CHECK(last < first / 100);

  char tmpl[] = "/tmp/nimbus_train_XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  std::string path = std::string(tmpl) + "/small_cnn.safetensors";
  save_checkpoint(path, *model, &opt, {{"steps", std::to_string(steps + 1)}});

  Rng other(7);
  auto fresh = small_cnn(other);
  Adam fresh_opt(fresh->named_parameters(), {.lr = 0.02});
  float before = eval_loss(*fresh, x, y);
  Metadata meta = load_checkpoint(path, *fresh, &fresh_opt);
  float want = eval_loss(*model, x, y), got = eval_loss(*fresh, x, y);
  CHECK(got == want);  // bit-identical: same weights, same running statistics
  CHECK(before != want);
  CHECK(meta.at("steps") == std::to_string(steps + 1));
  CHECK(fresh_opt.steps() == opt.steps());
  std::remove(path.c_str());
  ::rmdir(tmpl);
}
