// test_loss.cpp: cross_entropy, softmax, l1, mse and the fused CARL loss:
// kernels vs finite differences (double, away from |.| kinks), ops vs PyTorch
// fixtures (forward and backward, including |.| ties), and error cases.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops/loss.h"
#include "kernels/cpu/loss.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {
const SafetensorsFile& fixtures() { return fixture_file("ops_norm_loss.safetensors"); }
Tensor fx(const std::string& name) { return fixtures().at(name).clone(); }
float fxs(const std::string& name) { return fixtures().at(name).item(); }

// Move v away from a and b by at least `gap` so |v - a| and |v - b| are smooth near v.
void away_from_kinks(std::vector<double>& v, const std::vector<double>& a, const std::vector<double>& b, double gap) {
  for (size_t i = 0; i < v.size(); ++i)
    for (int k = 0; k < 4; ++k)
      if (std::fabs(v[i] - a[i]) < gap || (!b.empty() && std::fabs(v[i] - b[i]) < gap)) v[i] += 2.5 * gap;
}
}  // namespace

// ---------------------------------------------------------------- kernels in double

TEST_CASE("cross_entropy kernel: gradient matches finite differences - softmax rows sum to 1") {
  Rng rng(21);
  const int64_t N = 4, K = 5;
  auto x = random_vec(N * K, rng, -3, 3);
  std::vector<double> target{0, 4, 2, 2}, prob(N * K), dx(N * K);
  const double g = 1.7;  // an upstream gradient != 1
  auto loss = [&](const std::vector<double>& v) {
    std::vector<double> p(N * K);
    return g * cpu::cross_entropy_forward(p.data(), v.data(), target.data(), N, K);
  };
  double L = cpu::cross_entropy_forward(prob.data(), x.data(), target.data(), N, K);
  cpu::cross_entropy_backward(dx.data(), prob.data(), target.data(), g, N, K);
  check_close(dx, numeric_grad(loss, x), 1e-8, 1e-6, "dlogits");
  // Independent check of the value: -log(exp(x_t) / sum exp(x)), naively (small logits).
  double want = 0;
  for (int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (int64_t k = 0; k < K; ++k) s += std::exp(x[n * K + k]);
    want += -std::log(std::exp(x[n * K + int64_t(target[n])]) / s) / N;
  }
  CHECK(L == doctest::Approx(want).epsilon(1e-12));
  std::vector<double> sm(N * K);
  cpu::softmax_forward(sm.data(), x.data(), N, K);
  check_close(sm, prob, 1e-15, 0, "softmax == saved prob");
  for (int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (int64_t k = 0; k < K; ++k) s += sm[n * K + k];
    CHECK(s == doctest::Approx(1).epsilon(1e-12));
  }
}

TEST_CASE("l1 and mse kernels: gradients match finite differences") {
  Rng rng(22);
  const int64_t n = 30;
  auto p = random_vec(n, rng), t = random_vec(n, rng);
  away_from_kinks(p, t, {}, 1e-3);
  const double g = 0.6;
  std::vector<double> dp(n);
  cpu::l1_backward(dp.data(), p.data(), t.data(), g, n);
  check_close(dp,
              numeric_grad([&](const std::vector<double>& v) { return g * cpu::l1_forward(v.data(), t.data(), n); }, p),
              1e-8, 1e-6, "l1 dp");
  cpu::mse_backward(dp.data(), p.data(), t.data(), g, n);
  check_close(
      dp, numeric_grad([&](const std::vector<double>& v) { return g * cpu::mse_forward(v.data(), t.data(), n); }, p),
      1e-8, 1e-6, "mse dp");
}

TEST_CASE("carl kernel: value from the formula, gradient matches finite differences") {
  Rng rng(23);
  const int64_t N = 2, C = 3, HW = 6, n = N * C * HW;
  auto P = random_vec(n, rng, 0, 2), T = random_vec(n, rng, 0, 2), I = random_vec(n, rng, 0.5, 2.5);
  away_from_kinks(P, T, I, 1e-3);
  std::vector<double> M(N * HW);
  for (size_t i = 0; i < M.size(); ++i) M[i] = (i % 3 == 0) ? 1.0 : 0.0;
  for (double lambda : {1.0, 0.3}) {
    CAPTURE(lambda);
    // The formula written out term by term (two separate means), independent of the fused loop.
    double a = 0, b = 0;
    for (int64_t nn = 0; nn < N; ++nn)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < HW; ++i) {
          int64_t k = (nn * C + c) * HW + i;
          double m = M[nn * HW + i];
          a += m * std::fabs(P[k] - T[k]) + (1 - m) * std::fabs(P[k] - I[k]);
          b += std::fabs(P[k] - T[k]);
        }
    double want = a / double(n) + lambda * b / double(n);
    CHECK(cpu::carl_forward(P.data(), T.data(), I.data(), M.data(), lambda, N, C, HW) ==
          doctest::Approx(want).epsilon(1e-12));
    const double g = 1.3;
    std::vector<double> dP(n);
    cpu::carl_backward(dP.data(), P.data(), T.data(), I.data(), M.data(), lambda, g, N, C, HW);
    auto loss = [&](const std::vector<double>& v) {
      return g * cpu::carl_forward(v.data(), T.data(), I.data(), M.data(), lambda, N, C, HW);
    };
    check_close(dP, numeric_grad(loss, P), 1e-8, 1e-6, "carl dP");
  }
}

TEST_CASE("loss kernels: float (OpenMP path) agrees with double on a large input") {
  Rng rng(24);
  const int64_t N = 2, C = 13, HW = 48 * 48, n = N * C * HW;  // > kParallelGrain
  auto P = random_vec(n, rng, 0, 2), T = random_vec(n, rng, 0, 2), I = random_vec(n, rng, 0, 2);
  auto M = random_vec(N * HW, rng, 0, 1);
  for (auto& m : M) m = m > 0.5 ? 1 : 0;
  auto Pf = to_float(P), Tf = to_float(T), If = to_float(I), Mf = to_float(M);
  P = to_double(Pf), T = to_double(Tf), I = to_double(If);
  CHECK(cpu::carl_forward(Pf.data(), Tf.data(), If.data(), Mf.data(), 1.f, N, C, HW) ==
        doctest::Approx(cpu::carl_forward(P.data(), T.data(), I.data(), M.data(), 1.0, N, C, HW)).epsilon(1e-6));
  CHECK(cpu::l1_forward(Pf.data(), Tf.data(), n) ==
        doctest::Approx(cpu::l1_forward(P.data(), T.data(), n)).epsilon(1e-6));
  CHECK(cpu::mse_forward(Pf.data(), Tf.data(), n) ==
        doctest::Approx(cpu::mse_forward(P.data(), T.data(), n)).epsilon(1e-6));
  std::vector<float> dPf(n);
  std::vector<double> dP(n);
  cpu::carl_backward(dPf.data(), Pf.data(), Tf.data(), If.data(), Mf.data(), 1.f, 1.f, N, C, HW);
  cpu::carl_backward(dP.data(), P.data(), T.data(), I.data(), M.data(), 1.0, 1.0, N, C, HW);
  check_close(dPf, dP, 1e-12, 1e-6, "carl dP float vs double");
}

// ---------------------------------------------------------------- ops vs PyTorch

TEST_CASE("cross_entropy and softmax: match PyTorch, including huge logits") {
  Tensor logits = fx("ce.logits").set_requires_grad(true);
  Tensor loss = cross_entropy(logits, fixtures().at("ce.target"));
  CHECK(loss.shape() == Shape{});
  CHECK(loss.item() == doctest::Approx(fxs("ce.loss")).epsilon(1e-5));
  loss.backward();
  check_close(logits.grad(), fixtures().at("ce.dlogits"), 1e-6, 1e-4, "dlogits");
  check_close(softmax(logits), fixtures().at("softmax.y"), 1e-6, 1e-4, "softmax");
  CHECK(!softmax(logits).grad_fn());  // softmax is not recorded
  Tensor big = fx("ce_big.logits");
  Tensor lb = cross_entropy(big, fixtures().at("ce_big.target"));
  CHECK(std::isfinite(lb.item()));
  CHECK(lb.item() == doctest::Approx(fxs("ce_big.loss")).epsilon(1e-5));
  check_close(softmax(big), fixtures().at("softmax_big.y"), 1e-6, 1e-4, "softmax of huge logits");
}

TEST_CASE("l1_loss and mse_loss: match PyTorch (gradients to both arguments, sign(0) = 0)") {
  for (const char* name : {"l1", "mse"}) {
    CAPTURE(name);
    std::string k = name;
    Tensor p = fx(k + ".pred").set_requires_grad(true), t = fx(k + ".target").set_requires_grad(true);
    Tensor loss = k == "l1" ? l1_loss(p, t) : mse_loss(p, t);
    CHECK(loss.shape() == Shape{});
    CHECK(loss.item() == doctest::Approx(fxs(k + ".loss")).epsilon(1e-5));
    loss.backward();
    check_close(p.grad(), fixtures().at(k + ".dpred"), 1e-7, 1e-4, "dpred");
    check_close(t.grad(), fixtures().at(k + ".dtarget"), 1e-7, 1e-4, "dtarget");
  }
  CHECK(fixtures().at("l1.dpred").to_vector()[0] == 0.f);  // the fixture really contains a tie
}

TEST_CASE("carl_loss: matches the PyTorch formula (lambda 1 and 0.25), gradient to pred only") {
  for (const char* tag : {"carl", "carl_lam"}) {
    CAPTURE(tag);
    std::string k = tag;
    Tensor P = fx("carl.P").set_requires_grad(true);
    Tensor T = fx("carl.T").set_requires_grad(true);  // must get no gradient
    Tensor loss = carl_loss(P, T, fixtures().at("carl.I"), fixtures().at("carl.M"), fxs(k + ".lambda"));
    CHECK(loss.shape() == Shape{});
    CHECK(loss.item() == doctest::Approx(fxs(k + ".loss")).epsilon(1e-5));
    loss.backward();
    check_close(P.grad(), fixtures().at(k + ".dP"), 1e-7, 1e-4, "dP");
    CHECK(!T.grad().defined());
  }
  // The mask really differs from all-ones/all-zeros, so both branches were exercised.
  auto m = fixtures().at("carl.M").to_vector();
  CHECK(std::count(m.begin(), m.end(), 1.f) > 0);
  CHECK(std::count(m.begin(), m.end(), 0.f) > 0);
}

TEST_CASE("losses: a non-unit upstream gradient scales the input gradient") {
  Tensor p = fx("carl.P").set_requires_grad(true);
  Tensor loss = carl_loss(p, fixtures().at("carl.T"), fixtures().at("carl.I"), fixtures().at("carl.M"), 1.f);
  loss.backward(Tensor::scalar(-2.f));
  auto want = fixtures().at("carl.dP").to_vector();
  for (auto& v : want) v *= -2.f;
  check_close(p.grad().to_vector(), want, 1e-7, 1e-4, "dP * -2");
}

// ---------------------------------------------------------------- errors

TEST_CASE("cross_entropy: bad class indices and shapes give clear errors") {
  Tensor logits = Tensor::zeros({3, 4});
  CHECK_NOTHROW(cross_entropy(logits, Tensor::from_vector({3}, {0, 3, 1})));
  CHECK_THROWS_WITH_AS(cross_entropy(logits, Tensor::from_vector({3}, {0, 4, 1})),
                       doctest::Contains("cross_entropy: target[1] = 4 is not a class index in [0, 4)"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, Tensor::from_vector({3}, {0, 1, -1})), doctest::Contains("target[2] = -1"),
                       Error);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, Tensor::from_vector({3}, {2.5f, 1, 1})),
                       doctest::Contains("target[0] = 2.5"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, Tensor::from_vector({3}, {0, NAN, 1})), doctest::Contains("target[1]"),
                       Error);
  CHECK_THROWS_WITH_AS(cross_entropy(logits, Tensor::zeros({4})),
                       doctest::Contains("cross_entropy: logits (3,4) need target (3) but target is (4)"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(Tensor::zeros({3, 4, 1}), Tensor::zeros({3})),
                       doctest::Contains("logits must be (N,K)"), Error);
  CHECK_THROWS_WITH_AS(softmax(Tensor::zeros({4})), doctest::Contains("softmax: logits must be (N,K)"), Error);
}

TEST_CASE("l1/mse/carl: shape mismatches name the op and both shapes") {
  Tensor a = Tensor::zeros({2, 3, 4, 4}), b = Tensor::zeros({2, 3, 4, 5});
  CHECK_THROWS_WITH_AS(l1_loss(a, b), doctest::Contains("l1_loss: pred (2,3,4,4) and target (2,3,4,5)"), Error);
  CHECK_THROWS_WITH_AS(mse_loss(a, b), doctest::Contains("mse_loss: pred (2,3,4,4) and target (2,3,4,5)"), Error);
  Tensor m = Tensor::zeros({2, 1, 4, 4});
  CHECK_NOTHROW(carl_loss(a, a, a, m));
  CHECK_THROWS_WITH_AS(carl_loss(a, a, b, m), doctest::Contains("carl_loss: pred (2,3,4,4) and cloudy_input (2,3,4,5)"),
                       Error);
  CHECK_THROWS_WITH_AS(carl_loss(a, a, a, Tensor::zeros({2, 3, 4, 4})),
                       doctest::Contains("carl_loss: mask (2,3,4,4) must be (N,1,H,W) = (2,1,4,4) for pred (2,3,4,4)"),
                       Error);
  Tensor a3 = Tensor::zeros({2, 3, 4});
  CHECK_THROWS_WITH_AS(carl_loss(a3, a3, a3, m), doctest::Contains("carl_loss: pred must be (N,C,H,W)"), Error);
}
