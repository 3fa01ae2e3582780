// test_batchnorm.cpp: batch_norm2d: reference kernels vs finite differences (double),
// fast float kernels vs the reference, the op vs PyTorch fixtures, and error cases.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "backends/cuda/backend.h"
#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops/activation.h"
#include "engine/ops/arith.h"
#include "engine/nn/layers.h"
#include "engine/ops/batchnorm.h"
#include "engine/ops/cast.h"
#include "engine/ops/conv.h"
#include "engine/random.h"
#include "kernels/cpu/batchnorm.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {
const SafetensorsFile& fixtures() { return fixture_file("ops_norm_loss.safetensors"); }
Tensor fx(const std::string& name) { return fixtures().at(name).clone(); }

// The reference forward as a function of (x, w, b): training uses the batch
// statistics of x, eval the given running statistics.
struct RefBN {
  int64_t N, C, HW;
  bool training;
  std::vector<double> rmean, rvar;
  double eps = 1e-5;
  std::vector<double> y(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b,
                        std::vector<double>* mean_out = nullptr, std::vector<double>* invstd_out = nullptr) const {
    std::vector<double> mean(C), var(C), invstd(C), out(x.size());
    if (training)
      cpu::batchnorm_stats_ref(mean.data(), var.data(), x.data(), N, C, HW);
    else
      mean = rmean, var = rvar;
    cpu::batchnorm_invstd(invstd.data(), var.data(), eps, C);
    cpu::batchnorm_forward_ref(out.data(), x.data(), mean.data(), invstd.data(), w.data(), b.data(), N, C, HW);
    if (mean_out) *mean_out = mean;
    if (invstd_out) *invstd_out = invstd;
    return out;
  }
};

void check_ref_grads(bool training) {
  Rng rng(training ? 11 : 12);
  RefBN bn{2, 3, 5, training, {}, {}};
  const size_t n = size_t(bn.N * bn.C * bn.HW);
  auto x = random_vec(n, rng, -2, 3), w = random_vec(3, rng, 0.5, 1.5), b = random_vec(3, rng);
  auto r = random_vec(n, rng);  // dL/dy
  bn.rmean = random_vec(3, rng), bn.rvar = random_vec(3, rng, 0.5, 2);
  std::vector<double> mean, invstd, dx(n), dw(3), db(3);
  bn.y(x, w, b, &mean, &invstd);
  cpu::batchnorm_backward_ref(dx.data(), dw.data(), db.data(), r.data(), x.data(), mean.data(), invstd.data(), w.data(),
                              bn.N, bn.C, bn.HW, training);
  auto gx = numeric_grad([&](const std::vector<double>& v) { return dot(bn.y(v, w, b), r); }, x);
  auto gw = numeric_grad([&](const std::vector<double>& v) { return dot(bn.y(x, v, b), r); }, w);
  auto gb = numeric_grad([&](const std::vector<double>& v) { return dot(bn.y(x, w, v), r); }, b);
  check_close(dx, gx, 1e-7, 1e-6, "dx");
  check_close(dw, gw, 1e-7, 1e-6, "dweight");
  check_close(db, gb, 1e-7, 1e-6, "dbias");
}

// Fast float kernels vs the double reference on the same float data.
void check_fast_vs_ref(int64_t N, int64_t C, int64_t HW, double offset, bool training) {
  Rng rng(uint64_t(N * 1000 + C * 10 + HW));
  const size_t n = size_t(N * C * HW);
  auto x = random_vec(n, rng, offset - 2, offset + 2), dy = random_vec(n, rng);
  auto w = random_vec(size_t(C), rng, 0.5, 1.5), b = random_vec(size_t(C), rng);
  auto xf = to_float(x), dyf = to_float(dy), wf = to_float(w), bf = to_float(b);
  x = to_double(xf), dy = to_double(dyf), w = to_double(wf), b = to_double(bf);  // identical inputs

  std::vector<double> mean(C), var(C), invstd(C), y(n), dx(n), dw(C), db(C);
  std::vector<float> meanf(C), varf(C), invstdf(C), yf(n), dxf(n), dwf(C), dbf(C);
  if (training) {
    cpu::batchnorm_stats_ref(mean.data(), var.data(), x.data(), N, C, HW);
    cpu::batchnorm_stats(meanf.data(), varf.data(), xf.data(), N, C, HW);
    check_close(meanf, mean, 1e-6, 1e-6, "mean");
    check_close(varf, var, 1e-6, 1e-5, "var");
    // From here both get the same (float) statistics: a float mean of ~1000 is off by
    // up to 3e-5 by rounding alone, which is not what the remaining checks are about.
    mean = to_double(meanf), var = to_double(varf);
  } else {
    for (int64_t c = 0; c < C; ++c) mean[c] = meanf[c] = float(offset + 0.1 * double(c)), var[c] = varf[c] = 1.5f;
  }
  cpu::batchnorm_invstd(invstd.data(), var.data(), 1e-5, C);
  cpu::batchnorm_invstd(invstdf.data(), varf.data(), 1e-5f, C);
  cpu::batchnorm_forward_ref(y.data(), x.data(), mean.data(), invstd.data(), w.data(), b.data(), N, C, HW);
  cpu::batchnorm_forward(yf.data(), xf.data(), meanf.data(), invstdf.data(), wf.data(), bf.data(), N, C, HW);
  check_close(yf, y, 1e-5, 1e-4, "y");
  cpu::batchnorm_backward_ref(dx.data(), dw.data(), db.data(), dy.data(), x.data(), mean.data(), invstd.data(),
                              w.data(), N, C, HW, training);
  cpu::batchnorm_backward<float>(dxf.data(), dwf.data(), dbf.data(), dyf.data(), xf.data(), meanf.data(),
                                 invstdf.data(), wf.data(), nullptr, N, C, HW, training);
  check_close(dxf, dx, 1e-5, 1e-4, "dx");
  check_close(dwf, dw, 1e-4, 1e-4, "dweight");
  check_close(dbf, db, 1e-4, 1e-4, "dbias");
}
}  // namespace

TEST_CASE("batchnorm reference: training backward (through batch stats) matches finite differences") {
  check_ref_grads(true);
}

TEST_CASE("batchnorm reference: eval backward matches finite differences") { check_ref_grads(false); }

// Unnormalised data (a DN-like offset, a spread 1e6 times smaller): E[x^2] - E[x]^2 unshifted lost a few
// percent of the variance even in double; the shifted one-pass sums hold it to float's rounding.
TEST_CASE("batchnorm statistics: a mean far larger than the spread keeps its variance") {
  const int64_t N = 2, C = 2, HW = 32768;
  Rng rng(21);
  std::vector<float> xf(size_t(N * C * HW));
  for (float& v : xf) v = float(1e4 + 1e-2 * (2 * rng.uniform() - 1) * std::sqrt(3.0));  // std 1e-2
  const std::vector<double> x = to_double(xf);
  std::vector<double> mean(C), var(C);
  std::vector<float> meanf(C), varf(C);
  cpu::batchnorm_stats_ref(mean.data(), var.data(), x.data(), N, C, HW);
  cpu::batchnorm_stats(meanf.data(), varf.data(), xf.data(), N, C, HW);
  for (int64_t c = 0; c < C; ++c) {
    CAPTURE(c);
    // Relative bounds (doctest's Approx adds 1 to the scale, which a variance of 1e-4 would pass anyway).
    CHECK(std::fabs(var[size_t(c)] - 1e-4) <= 0.05 * 1e-4);  // the data is what it says
    CHECK(std::fabs(double(varf[size_t(c)]) - var[size_t(c)]) <= 1e-5 * var[size_t(c)]);
    CHECK(std::fabs(double(meanf[size_t(c)]) - mean[size_t(c)]) <= 1e-7 * mean[size_t(c)]);
  }
}

TEST_CASE("batchnorm fast float kernels match the reference") {
  for (bool training : {true, false}) {
    CAPTURE(training);
    check_fast_vs_ref(2, 3, 7, 0.0, training);        // serial path
    check_fast_vs_ref(4, 8, 40 * 40, 0.5, training);  // OpenMP path (> kParallelGrain elements)
    check_fast_vs_ref(3, 2, 50, 1000.0, training);    // |mean| >> std: one-pass variance must hold up
  }
}

namespace {
// batch_norm2d on fixture set `set` (PyTorch's x, weight, bias) with running stats rm, rv (updated
// in place in training): y, then after backward of the set's dy, dx, dweight and dbias.
void check_vs_pytorch(const std::string& set, Tensor& rm, Tensor& rv, bool training) {
  Tensor x = fx(set + ".x").set_requires_grad(true);
  Tensor w = fx(set + ".weight").set_requires_grad(true);
  Tensor b = fx(set + ".bias").set_requires_grad(true);
  Tensor y = batch_norm2d(x, w, b, rm, rv, training);
  check_close(y, fixtures().at(set + ".y"), 1e-5, 1e-4, "y");
  y.backward(fixtures().at(set + ".dy"));
  check_close(x.grad(), fixtures().at(set + ".dx"), 1e-5, 1e-4, "dx");
  check_close(w.grad(), fixtures().at(set + ".dweight"), 1e-5, 1e-4, "dweight");
  check_close(b.grad(), fixtures().at(set + ".dbias"), 1e-5, 1e-4, "dbias");
}
}  // namespace

TEST_CASE("batch_norm2d training: output, gradients and running stats match PyTorch") {
  Tensor rm = fx("bn_train.running_mean0"), rv = fx("bn_train.running_var0");
  check_vs_pytorch("bn_train", rm, rv, /*training=*/true);
  check_close(rm, fixtures().at("bn_train.running_mean1"), 1e-6, 1e-5, "running_mean");
  check_close(rv, fixtures().at("bn_train.running_var1"), 1e-6, 1e-5, "running_var (unbiased)");
}

TEST_CASE("batch_norm2d eval: uses running stats, updates nothing, gradients match PyTorch") {
  Tensor rm = fx("bn_eval.running_mean"), rv = fx("bn_eval.running_var");
  check_vs_pytorch("bn_eval", rm, rv, /*training=*/false);
  CHECK(rm.to_vector() == fixtures().at("bn_eval.running_mean").to_vector());
  CHECK(rv.to_vector() == fixtures().at("bn_eval.running_var").to_vector());
}

TEST_CASE("batch_norm2d_relu equals relu(batch_norm2d): output, running stats, all gradients, NaN") {
  // The fused op runs the same arithmetic in one pass: results must be identical,
  // in training (gradient through the batch statistics) and in eval.
  for (bool training : {true, false}) {
    CAPTURE(training);
    auto make = [](const char* name) { return fx(name).clone().set_requires_grad(true); };
    Tensor x1 = make("bn_train.x"), w1 = make("bn_train.weight"), b1 = make("bn_train.bias");
    Tensor x2 = make("bn_train.x"), w2 = make("bn_train.weight"), b2 = make("bn_train.bias");
    Tensor rm1 = fx("bn_train.running_mean0").clone(), rv1 = fx("bn_train.running_var0").clone();
    Tensor rm2 = rm1.clone(), rv2 = rv1.clone();
    Tensor y1 = batch_norm2d_relu(x1, w1, b1, rm1, rv1, training);
    Tensor y2 = relu(batch_norm2d(x2, w2, b2, rm2, rv2, training));
    const std::vector<float> v1 = y1.to_vector();
    CHECK(v1 == y2.to_vector());
    CHECK(std::count(v1.begin(), v1.end(), 0.f) > int64_t(v1.size() / 4));  // the ReLU really cuts
    CHECK(rm1.to_vector() == rm2.to_vector());
    CHECK(rv1.to_vector() == rv2.to_vector());
    y1.backward(fixtures().at("bn_train.dy"));
    y2.backward(fixtures().at("bn_train.dy"));
    check_close(x1.grad(), x2.grad(), 0, 0, "dx");
    check_close(w1.grad(), w2.grad(), 0, 0, "dweight");
    check_close(b1.grad(), b2.grad(), 0, 0, "dbias");
  }
  // A NaN input passes through the fused ReLU, as through relu().
  Tensor x = Tensor::from_vector({1, 1, 1, 3}, {1.f, NAN, -1.f});
  Tensor rm = Tensor::zeros({1}), rv = Tensor::ones({1});
  const std::vector<float> y = batch_norm2d_relu(x, Tensor(), Tensor(), rm, rv, false).to_vector();
  CHECK(y[0] > 0.f);
  CHECK(std::isnan(y[1]));
  CHECK(y[2] == 0.f);
}

TEST_CASE("batch_norm2d: only the inputs that require grad get one - no-grad records nothing") {
  Tensor x = fx("bn_train.x").set_requires_grad(true);
  Tensor w = fx("bn_train.weight"), b = fx("bn_train.bias");
  Tensor rm = Tensor::zeros({4}), rv = Tensor::ones({4});
  batch_norm2d(x, w, b, rm, rv, true).backward(fixtures().at("bn_train.dy"));
  check_close(x.grad(), fixtures().at("bn_train.dx"), 1e-5, 1e-4, "dx");
  CHECK(!w.grad().defined());
  NoGradGuard ng;
  Tensor y = batch_norm2d(x, w, b, rm, rv, true);
  CHECK(!y.grad_fn());
}

TEST_CASE("batch_norm2d: bad shapes give errors naming the op and the shapes") {
  Tensor x = Tensor::zeros({2, 3, 4, 4}), w = Tensor::ones({3}), b = Tensor::zeros({3});
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3}), bad = Tensor::ones({5});
  CHECK_THROWS_WITH_AS(batch_norm2d(x, bad, b, rm, rv, true),
                       doctest::Contains("batch_norm2d: input (2,3,4,4) has 3 channels but weight has shape (5)"),
                       Error);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, w, b, rm, bad, false), doctest::Contains("running_var has shape (5)"), Error);
  Tensor x3 = Tensor::zeros({2, 3, 4});
  CHECK_THROWS_WITH_AS(batch_norm2d(x3, w, b, rm, rv, true),
                       doctest::Contains("batch_norm2d: input must be (N,C,H,W), got (2,3,4)"), Error);
  Tensor one = Tensor::zeros({1, 3, 1, 1});
  CHECK_THROWS_WITH_AS(batch_norm2d(one, w, b, rm, rv, true), doctest::Contains("more than 1 value per channel"),
                       Error);
  CHECK_NOTHROW(batch_norm2d(one, w, b, rm, rv, false));
  Tensor undef;
  CHECK_THROWS_WITH_AS(batch_norm2d(x, w, b, undef, rv, true), doctest::Contains("running_mean is undefined"), Error);
}

TEST_CASE("batch_norm2d(_relu) in bfloat16: the float32 op on the same rounded inputs, rounded once") {
  // x and dy rounded to bfloat16; statistics, parameters and their gradients stay float32. The
  // float32 op run on the same rounded values is the yardstick (it is held to PyTorch above): the
  // bfloat16 op may differ by its results' rounding only (2^-9 relative; 2^-8 allowed), and its
  // float32 outputs (running stats, dweight, dbias) by float rounding.
  for (bool relu : {false, true})
    for (bool training : {true, false}) {
      CAPTURE(relu);
      CAPTURE(training);
      const Tensor x16 = fx("bn_train.x").to(DType::BF16), dy16 = fixtures().at("bn_train.dy").to(DType::BF16);
      auto run = [&](const Tensor& x_in, const Tensor& dy, Tensor& rm, Tensor& rv) {
        Tensor x = x_in.clone().set_requires_grad(true);
        Tensor w = fx("bn_train.weight").clone().set_requires_grad(true);
        Tensor b = fx("bn_train.bias").clone().set_requires_grad(true);
        Tensor y = relu ? batch_norm2d_relu(x, w, b, rm, rv, training) : batch_norm2d(x, w, b, rm, rv, training);
        y.backward(dy);
        return std::vector<Tensor>{y, x.grad(), w.grad(), b.grad()};
      };
      Tensor rm16 = fx("bn_train.running_mean0").clone(), rv16 = fx("bn_train.running_var0").clone();
      Tensor rm32 = rm16.clone(), rv32 = rv16.clone();
      const std::vector<Tensor> got = run(x16, dy16, rm16, rv16);
      const std::vector<Tensor> want = run(x16.to(DType::F32), dy16.to(DType::F32), rm32, rv32);
      CHECK(got[0].dtype() == DType::BF16);
      CHECK(got[1].dtype() == DType::BF16);
      CHECK(got[2].dtype() == DType::F32);
      check_close(got[0].to(DType::F32), want[0], 1e-6, 1.0 / 256, "y");
      check_close(got[1].to(DType::F32), want[1], 1e-6, 1.0 / 256, "dx");
      check_close(got[2], want[2], 1e-5, 1e-5, "dweight");
      check_close(got[3], want[3], 1e-5, 1e-5, "dbias");
      check_close(rm16, rm32, 1e-6, 1e-6, "running_mean");
      check_close(rv16, rv32, 1e-6, 1e-6, "running_var");
    }
}

// conv_bn (engine/nn/layers.h): in training conv2d_bn_stats then batch_norm2d_from_stats, which on the
// CPU runs the very kernels of the two modules' forwards in the same order: the same bits for y, the
// running statistics, the counter and every gradient, with and without the ReLU and the conv's bias.
// In eval it is the two modules. (The CUDA fold is tested against these in tests/emu/test_cuda_ops.cpp.)
TEST_CASE("conv_bn is the two modules' forward and backward bit for bit on the CPU, in training and eval") {
  for (const bool training : {true, false})
    for (const bool relu : {false, true})
      for (const bool bias : {false, true}) {
        CAPTURE(training);
        CAPTURE(relu);
        CAPTURE(bias);
        Rng r1(7), r2(7);
        Conv2d c1(3, 5, 3, 2, 1, bias, r1), c2(3, 5, 3, 2, 1, bias, r2);
        BatchNorm2d b1(5), b2(5);
        Rng data(11);
        std::vector<float> wb(5), bb(5), xv(2 * 3 * 9 * 8), dyv(2 * 5 * 5 * 4);
        for (float& v : wb) v = float(0.5 + data.uniform());
        for (float& v : bb) v = float(data.uniform() - 0.5);
        for (float& v : xv) v = float(2 * data.uniform() - 1);
        for (float& v : dyv) v = float(2 * data.uniform() - 1);
        for (BatchNorm2d* b : {&b1, &b2}) {
          b->weight.copy_(Tensor::from_vector({5}, wb));
          b->bias.copy_(Tensor::from_vector({5}, bb));
          b->train(training);
        }
        c1.train(training), c2.train(training);
        Tensor x1 = Tensor::from_vector({2, 3, 9, 8}, xv).set_requires_grad(true);
        Tensor x2 = Tensor::from_vector({2, 3, 9, 8}, xv).set_requires_grad(true);
        Tensor y1 = conv_bn(c1, b1, x1, relu);
        Tensor y2 = relu ? b2.forward_relu(c2.forward(x2)) : b2.forward(c2.forward(x2));
        REQUIRE(y1.shape() == Shape({2, 5, 5, 4}));
        CHECK(y1.to_vector() == y2.to_vector());
        CHECK(b1.running_mean.to_vector() == b2.running_mean.to_vector());
        CHECK(b1.running_var.to_vector() == b2.running_var.to_vector());
        CHECK(b1.num_batches_tracked.to_vector() == b2.num_batches_tracked.to_vector());
        CHECK(b1.num_batches_tracked.to_vector() == std::vector<float>{training ? 1.f : 0.f});
        const Tensor dy = Tensor::from_vector({2, 5, 5, 4}, dyv);
        y1.backward(dy);
        y2.backward(dy);
        CHECK(x1.grad().to_vector() == x2.grad().to_vector());
        CHECK(c1.weight.grad().to_vector() == c2.weight.grad().to_vector());
        if (bias) CHECK(c1.bias.grad().to_vector() == c2.bias.grad().to_vector());
        CHECK(b1.weight.grad().to_vector() == b2.weight.grad().to_vector());
        CHECK(b1.bias.grad().to_vector() == b2.bias.grad().to_vector());
        const std::vector<float> gx = x1.grad().to_vector();
        CHECK(std::any_of(gx.begin(), gx.end(), [](float v) { return v != 0.f; }));  // the gradient reached x
      }
}

// A convolution that overrides forward (here: its output doubled) keeps its forward inside conv_bn, in
// training too; the fused path would silently drop it. Batch norm's statistics then see the doubled values.
namespace {
struct DoublingConv2d : Conv2d {
  using Conv2d::Conv2d;
  Tensor forward(const Tensor& x) override { return mul_scalar(Conv2d::forward(x), 2.f); }
};
}  // namespace

TEST_CASE("conv_bn keeps a subclass's own forward") {
  Rng r1(5), r2(5);
  DoublingConv2d c1(2, 3, 3, 1, 1, true, r1);
  Conv2d c2(2, 3, 3, 1, 1, true, r2);
  BatchNorm2d b1(3), b2(3);
  Rng data(3);
  std::vector<float> xv(2 * 2 * 5 * 5);
  for (float& v : xv) v = float(2 * data.uniform() - 1);
  const Tensor x = Tensor::from_vector({2, 2, 5, 5}, xv);
  const Tensor y1 = conv_bn(c1, b1, x, true);
  const Tensor y2 = relu(b2.forward(mul_scalar(c2.forward(x), 2.f)));
  CHECK(y1.to_vector() == y2.to_vector());
  CHECK(b1.running_mean.to_vector() == b2.running_mean.to_vector());
  // the doubled conv's mean, not the plain one's: the override ran
  Rng r3(5);
  Conv2d c3(2, 3, 3, 1, 1, true, r3);
  BatchNorm2d b3(3);
  (void)conv_bn(c3, b3, x, true);
  const std::vector<float> m1 = b1.running_mean.to_vector(), m3 = b3.running_mean.to_vector();
  for (size_t k = 0; k < m1.size(); ++k) {
    CHECK(std::fabs(m3[k]) > 1e-4);  // the bias keeps the means away from 0, so doubling shows
    CHECK(std::fabs(m1[k] - 2 * m3[k]) <= 1e-5 * std::fabs(m1[k]));
  }
}

// conv_bn_chain (engine/nn/layers.h) with each batch norm + ReLU in the next convolution's prologue
// (bn_relu_conv2d_bn_stats) against conv_bn after conv_bn: on the CPU the prologue op runs batchnorm_forward
// into scratch and then the same pair of kernels, and its backward makes that activation again, so every
// output, running statistic, counter and gradient must be the same bits. Three pairs as in a bottleneck
// (a strided 3x3 in the middle, biases on two of the convolutions), with and without the final ReLU, in
// float32 and under bfloat16 autocast. The graph shows the prologue op ran; in eval the chain is conv_bn's.
namespace {
struct Chain {
  Rng rng;
  Conv2d c1, c2, c3;
  BatchNorm2d b1, b2, b3;
  explicit Chain(uint64_t seed)
      : rng(seed), c1(4, 6, 1, 1, 0, false, rng), c2(6, 6, 3, 2, 1, true, rng), c3(6, 8, 1, 1, 0, true, rng),
        b1(6), b2(6), b3(8) {
    Rng p(seed + 1);
    for (BatchNorm2d* b : {&b1, &b2, &b3}) {
      std::vector<float> w(size_t(b->weight.numel())), v(w.size());
      for (size_t i = 0; i < w.size(); ++i) w[i] = float(0.5 + p.uniform()), v[i] = float(p.uniform() - 0.5);
      b->weight.copy_(Tensor::from_vector(b->weight.shape(), w));
      b->bias.copy_(Tensor::from_vector(b->bias.shape(), v));
    }
  }
  std::vector<Tensor*> tensors() {
    return {&c1.weight, &c2.weight, &c2.bias, &c3.weight, &c3.bias, &b1.weight, &b1.bias, &b2.weight,
            &b2.bias,   &b3.weight, &b3.bias, &b1.running_mean, &b1.running_var, &b2.running_mean,
            &b2.running_var, &b3.running_mean, &b3.running_var, &b3.num_batches_tracked};
  }
  Tensor forward(const Tensor& x, bool relu) { return conv_bn_chain({{&c1, &b1}, {&c2, &b2}, {&c3, &b3}}, x, relu); }
};
}  // namespace

TEST_CASE("conv_bn_chain with the batch norm + ReLU prologue is conv_bn after conv_bn bit for bit on the CPU") {
  Rng data(21);
  const Tensor xv = Tensor::randn({2, 4, 9, 10}, data), dyv = Tensor::randn({2, 8, 5, 5}, data);
  for (const bool bf16 : {false, true})
    for (const bool relu : {false, true}) {
      CAPTURE(bf16);
      CAPTURE(relu);
      std::vector<std::vector<float>> got[2];
      for (const bool prologue : {true, false}) {
        const BnReluPrologueScope scope(prologue);
        Chain m(31);
        Tensor x = xv.clone().set_requires_grad(true);
        Tensor y;
        {
          const AutocastScope autocast(bf16 ? DType::BF16 : DType::F32);
          y = m.forward(x, relu);
        }
        REQUIRE(y.grad_fn());
        const Node& bn3 = *y.grad_fn();
        REQUIRE(bn3.edges.size() > 0);
        REQUIRE(bn3.edges[0].fn);
        CHECK(bn3.edges[0].fn->op == (prologue ? "bn_relu_conv2d_bn_stats" : "conv2d_bn_stats"));
        cast(y, DType::F32).backward(dyv);
        std::vector<std::vector<float>>& g = got[prologue ? 0 : 1];
        g.push_back(y.to(DType::F32).to_vector());
        g.push_back(x.grad().to_vector());
        for (Tensor* t : m.tensors()) {
          g.push_back(t->to_vector());
          if (t->requires_grad()) g.push_back(t->grad().to_vector());
        }
      }
      REQUIRE(got[0].size() == got[1].size());
      for (size_t i = 0; i < got[0].size(); ++i) {
        CAPTURE(i);
        CHECK(got[0][i] == got[1][i]);
      }
      const std::vector<float>& gx = got[0][1];
      CHECK(std::any_of(gx.begin(), gx.end(), [](float v) { return v != 0.f; }));  // the gradient reached x
    }
  // Eval: no batch statistics to carry, so the modules' own forwards.
  const BnReluPrologueScope scope(true);
  Chain m(31);
  for (Module* mod : std::initializer_list<Module*>{&m.c1, &m.c2, &m.c3, &m.b1, &m.b2, &m.b3}) mod->train(false);
  const Tensor y = m.forward(xv, true);
  const Tensor want = relu(m.b3.forward(m.c3.forward(m.b2.forward_relu(m.c2.forward(m.b1.forward_relu(m.c1.forward(xv)))))));
  CHECK(y.to_vector() == want.to_vector());
}

// A float32 input under bfloat16 autocast: autocast would round x before the batch norm, where the two ops
// round the batch norm's output, so the op is those two ops (the same bits, the plain ops in the graph).
TEST_CASE("bn_relu_conv2d_bn_stats under bf16 autocast with a float32 input is the two ops") {
  Rng data(41);
  const Tensor x = Tensor::randn({2, 3, 6, 5}, data), w = Tensor::randn({4, 3, 3, 3}, data);
  const Tensor gw = Tensor::from_vector({3}, {0.9f, 1.1f, 1.3f}), gb = Tensor::from_vector({3}, {0.2f, -0.1f, 0.3f});
  const Tensor im = Tensor::from_vector({3}, {0.1f, -0.2f, 0.05f}), is = Tensor::from_vector({3}, {1.5f, 0.8f, 1.2f});
  std::vector<float> got[2];
  for (const bool fused : {true, false}) {
    Tensor mean, invstd, rm = Tensor::zeros({4}), rv = Tensor::ones({4});
    Tensor wr = w.clone().set_requires_grad(true);
    const AutocastScope autocast(DType::BF16);
    const Tensor y = fused ? bn_relu_conv2d_bn_stats(x, gw, gb, im, is, wr, Tensor(), 1, 1, mean, invstd, rm, rv, 0.1f,
                                                     1e-5f, nullptr)
                           : conv2d_bn_stats(batch_norm2d_from_stats(x, gw, gb, im, is, true), wr, Tensor(), 1, 1, mean,
                                             invstd, rm, rv, 0.1f, 1e-5f, nullptr);
    REQUIRE(y.grad_fn());
    CHECK(y.grad_fn()->op == "conv2d_bn_stats");
    got[fused ? 0 : 1] = y.to(DType::F32).to_vector();
    for (float v : rm.to_vector()) got[fused ? 0 : 1].push_back(v);
  }
  CHECK(got[0] == got[1]);
  // What the op avoids: x rounded to bfloat16 before the batch norm (the fused kernel on a bfloat16
  // input) gives other values, so the check above tells the two roundings apart.
  Tensor mean, invstd, rm = Tensor::zeros({4}), rv = Tensor::ones({4});
  const AutocastScope autocast(DType::BF16);
  const Tensor early = bn_relu_conv2d_bn_stats(cast(x, DType::BF16), gw, gb, im, is, w, Tensor(), 1, 1, mean, invstd, rm,
                                               rv, 0.1f, 1e-5f, nullptr);
  REQUIRE(early.grad_fn() == nullptr);  // no input wants a gradient here
  const std::vector<float> e = early.to(DType::F32).to_vector();
  CHECK(std::vector<float>(got[0].begin(), got[0].begin() + ptrdiff_t(e.size())) != e);
}

// The models' batch norms are affine, so their prologue always has in_weight and in_bias; the op also
// takes them undefined (weight 1, bias 0). That case is the two ops it replaces, bit for bit, on each
// backend: output, batch statistics, running statistics and the gradients of x, the weight and the bias.
// (The incoming statistics are x's: the training backward differentiates through them, as batch_norm2d's.)
TEST_CASE("bn_relu_conv2d_bn_stats without in_weight and in_bias is the two ops: output, statistics, gradients") {
  std::vector<Device> devices{Device::CPU};
  if (cuda::register_cuda_backend()) devices.push_back(Device::CUDA);
  for (const Device d : devices) {
    const std::string dev = device_name(d);
    CAPTURE(dev);
    Rng data(43);
    const Tensor xv = Tensor::randn({2, 3, 7, 6}, data), wv = Tensor::randn({5, 3, 3, 3}, data);
    const Tensor bv = Tensor::randn({5}, data), dyv = Tensor::randn({2, 5, 4, 3}, data);
    const Tensor imv = Tensor::from_vector({3}, {0.1f, -0.2f, 0.05f}), isv = Tensor::from_vector({3}, {1.5f, 0.8f, 1.2f});
    std::vector<std::vector<float>> got[2];
    for (const bool fused : {true, false}) {
      auto leaf = [&](const Tensor& v) { return v.to(d).clone().set_requires_grad(true); };  // fresh gradients
      const Tensor x = leaf(xv), w = leaf(wv), b = leaf(bv), im = imv.to(d), is = isv.to(d);
      Tensor mean, invstd, rm = Tensor::zeros({5}).to(d), rv = Tensor::ones({5}).to(d);
      const Tensor y = fused ? bn_relu_conv2d_bn_stats(x, Tensor(), Tensor(), im, is, w, b, 2, 1, mean, invstd, rm, rv,
                                                       0.1f, 1e-5f, nullptr)
                             : conv2d_bn_stats(batch_norm2d_from_stats(x, Tensor(), Tensor(), im, is, true), w, b, 2,
                                               1, mean, invstd, rm, rv, 0.1f, 1e-5f, nullptr);
      REQUIRE(y.grad_fn());
      CHECK(y.grad_fn()->op == (fused ? "bn_relu_conv2d_bn_stats" : "conv2d_bn_stats"));
      y.backward(dyv.to(d));
      for (const Tensor& t : {y, mean, invstd, rm, rv, x.grad(), w.grad(), b.grad()})
        got[fused ? 0 : 1].push_back(t.to_vector());
    }
    for (size_t i = 0; i < got[0].size(); ++i) {
      CAPTURE(i);
      CHECK(got[0][i] == got[1][i]);
      CHECK(std::none_of(got[0][i].begin(), got[0][i].end(), [](float v) { return std::isnan(v); }));
    }
    CHECK(std::any_of(got[0][5].begin(), got[0][5].end(), [](float v) { return v != 0.f; }));  // x's gradient
  }
}

TEST_CASE("bn_relu_conv2d_bn_stats: bad batch-norm inputs give errors naming the op and the tensor") {
  Tensor x = Tensor::zeros({2, 3, 4, 4}), w = Tensor::zeros({5, 3, 1, 1});
  Tensor mean, invstd, rm = Tensor::zeros({5}), rv = Tensor::ones({5});
  const Tensor m3 = Tensor::zeros({3}), s3 = Tensor::ones({3}), m4 = Tensor::zeros({4});
  CHECK_THROWS_WITH_AS(bn_relu_conv2d_bn_stats(x, Tensor(), Tensor(), m4, s3, w, Tensor(), 1, 0, mean, invstd, rm, rv,
                                               0.1f, 1e-5f, nullptr),
                       doctest::Contains("bn_relu_conv2d_bn_stats: in_mean"), Error);
  CHECK_THROWS_WITH_AS(bn_relu_conv2d_bn_stats(x, m4, Tensor(), m3, s3, w, Tensor(), 1, 0, mean, invstd, rm, rv, 0.1f,
                                               1e-5f, nullptr),
                       doctest::Contains("bn_relu_conv2d_bn_stats: in_weight"), Error);
  CHECK_THROWS_WITH_AS(bn_relu_conv2d_bn_stats(x, Tensor(), Tensor(), m3, Tensor(), w, Tensor(), 1, 0, mean, invstd, rm,
                                               rv, 0.1f, 1e-5f, nullptr),
                       doctest::Contains("bn_relu_conv2d_bn_stats: in_invstd"), Error);
  Tensor rm4 = Tensor::zeros({4});
  CHECK_THROWS_WITH_AS(bn_relu_conv2d_bn_stats(x, Tensor(), Tensor(), m3, s3, w, Tensor(), 1, 0, mean, invstd, rm4, rv,
                                               0.1f, 1e-5f, nullptr),
                       doctest::Contains("bn_relu_conv2d_bn_stats: running statistics"), Error);
  CHECK(!mean.defined());  // refused before anything was made or updated
  CHECK(rv.to_vector() == std::vector<float>(5, 1.f));
}

TEST_CASE("conv2d_bn_stats and batch_norm2d_from_stats: bad statistics give errors naming the op") {
  Tensor x = Tensor::zeros({2, 3, 4, 4}), w = Tensor::zeros({5, 3, 1, 1});
  Tensor mean, invstd, rm = Tensor::zeros({4}), rv = Tensor::ones({5});
  CHECK_THROWS_WITH_AS(conv2d_bn_stats(x, w, Tensor(), 1, 0, mean, invstd, rm, rv, 0.1f, 1e-5f, nullptr),
                       doctest::Contains("conv2d_bn_stats: running statistics"), Error);
  // One value per channel: refused before anything is computed or updated (no NaN in running_var).
  Tensor rm5 = Tensor::zeros({5}), rv5 = Tensor::ones({5}), nbt = Tensor::zeros({});
  CHECK_THROWS_WITH_AS(conv2d_bn_stats(Tensor::zeros({1, 3, 1, 1}), w, Tensor(), 1, 0, mean, invstd, rm5, rv5, 0.1f,
                                       1e-5f, &nbt),
                       doctest::Contains("training needs more than 1 value per channel"), Error);
  CHECK(rv5.to_vector() == std::vector<float>(5, 1.f));
  CHECK(nbt.to_vector() == std::vector<float>{0.f});
  Tensor y = Tensor::zeros({2, 5, 4, 4});
  CHECK_THROWS_WITH_AS(batch_norm2d_from_stats(y, Tensor(), Tensor(), Tensor::zeros({4}), Tensor::ones({5}), false),
                       doctest::Contains("has 5 channels but mean has shape (4)"), Error);
}
