// learn_losses.cpp: the numbers of docs/learn/05-losses.md. Softmax cross-entropy on one row of
// logits (probabilities, loss, the gradient p - onehot next to nimbus' backward and finite
// differences, and why the max is subtracted first); L1 and its sign gradient; and DSen2-CR's
// cloud-adaptive CARL loss on four pixels, two under cloud and two clear, term by term.
// docs/learn/build.py pastes this output into the page; ctest checks the page still matches.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops/loss.h"
#include "engine/tensor.h"

using namespace nimbus;

namespace {

void row(const char* name, const std::vector<double>& v) {
  std::printf("  %-38s [", name);
  for (size_t i = 0; i < v.size(); ++i) std::printf("%s%9.5f", i ? "," : "", v[i]);
  std::printf("]\n");
}
std::vector<double> d(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// Central differences of a loss written in double, one input at a time.
std::vector<double> finite_differences(const std::function<double(const std::vector<double>&)>& loss,
                                       std::vector<double> x, double e = 1e-4) {
  std::vector<double> g;
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + e;
    const double up = loss(x);
    x[i] = keep - e;
    const double down = loss(x);
    x[i] = keep;
    g.push_back((up - down) / (2 * e));
  }
  return g;
}

double worst(const std::vector<double>& a, const std::vector<double>& b) {
  double w = 0;
  for (size_t i = 0; i < a.size(); ++i) w = std::max(w, std::fabs(a[i] - b[i]));
  return w;
}
const char* agree(double w) { return w < 1e-5 ? "below 1e-5" : "ABOVE 1e-5 (a bug)"; }

// ---- cross-entropy: one row of K = 4 logits, the target class 2
const std::vector<float> kLogits = {2, 1, 0.5f, -1};
constexpr int kTarget = 2;

double cross_entropy_double(const std::vector<double>& z) {
  const double mx = *std::max_element(z.begin(), z.end());
  double s = 0;
  for (double v : z) s += std::exp(v - mx);
  return mx + std::log(s) - z[kTarget];
}

// ---- CARL: (N=1, C=1, H=1, W=4): pixels 0, 1 under cloud (mask 1), 2, 3 clear (mask 0)
const std::vector<float> kP = {0.25f, 0.5f, 0.5f, 0.375f}, kT = {0.5f, 0.25f, 0.25f, 0.25f},
                         kI = {1.0f, 1.0f, 0.25f, 0.5f}, kM = {1, 1, 0, 0};
constexpr double kLambda = 1.0;

double carl_double(const std::vector<double>& p) {
  double s = 0;
  for (size_t i = 0; i < p.size(); ++i)
    s += kM[i] * std::fabs(p[i] - kT[i]) + (1 - kM[i]) * std::fabs(p[i] - kI[i]) + kLambda * std::fabs(p[i] - kT[i]);
  return s / double(p.size());
}

}  // namespace

int main() {
  // ---- softmax cross-entropy
  {
    const int K = int(kLogits.size());
    Tensor z = Tensor::from_vector({1, K}, kLogits).set_requires_grad(true);
    Tensor loss = cross_entropy(z, Tensor::from_vector({1}, {float(kTarget)}));
    loss.backward();
    const std::vector<float> p = softmax(z.detach()).to_vector();
    std::vector<double> formula;
    for (int k = 0; k < K; ++k) formula.push_back(double(p[size_t(k)]) - (k == kTarget ? 1.0 : 0.0));
    std::printf("cross-entropy, one image, K = %d classes, target class %d:\n", K, kTarget);
    row("logits z", d(kLogits));
    row("softmax p = exp(z) / sum exp(z)", d(p));
    std::printf("  loss = -log p[target] = -log(%.5f) = %.5f (nimbus: %.5f)\n", double(p[kTarget]),
                -std::log(double(p[kTarget])), double(loss.item()));
    row("p - onehot(target)", formula);
    row("nimbus backward", d(z.grad().to_vector()));
    const std::vector<double> fd = finite_differences(cross_entropy_double, d(kLogits));
    row("finite differences", fd);
    std::printf("  largest difference between the three: %s\n",
                agree(std::max(worst(formula, d(z.grad().to_vector())), worst(formula, fd))));

    // The same row shifted by 1000: exp overflows float without the max subtracted first.
    std::vector<float> big = kLogits;
    for (float& v : big) v += 1000;
    float naive_sum = 0;
    for (float v : big) naive_sum += std::exp(v);
    Tensor zb = Tensor::from_vector({1, K}, big);
    std::printf("logits + 1000: sum exp(z) in float = %s, so exp(z)/sum is %s; nimbus (max subtracted first): "
                "loss %.5f\n",
                std::isinf(naive_sum) ? "inf" : "finite", std::isinf(naive_sum) ? "inf/inf = NaN" : "fine",
                double(cross_entropy(zb, Tensor::from_vector({1}, {float(kTarget)})).item()));
  }

  // ---- L1
  {
    const std::vector<float> p = {0.5f, -1, 2, 0.25f}, t = {0, -1, 1, 1};
    Tensor pt = Tensor::from_vector({4}, p).set_requires_grad(true);
    Tensor loss = l1_loss(pt, Tensor::from_vector({4}, t));
    loss.backward();
    std::printf("L1 over n = 4 values: loss = mean |p - t| = %.5f\n", double(loss.item()));
    row("p - t", {0.5, 0, 1, -0.75});
    row("nimbus backward = sign(p - t) / n", d(pt.grad().to_vector()));
  }

  // ---- CARL
  {
    const int64_t n = int64_t(kP.size());
    Tensor p = Tensor::from_vector({1, 1, 1, 4}, kP).set_requires_grad(true);
    Tensor loss = carl_loss(p, Tensor::from_vector({1, 1, 1, 4}, kT), Tensor::from_vector({1, 1, 1, 4}, kI),
                            Tensor::from_vector({1, 1, 1, 4}, kM), float(kLambda));
    loss.backward();
    std::printf("CARL, lambda = %.0f, four pixels: two under cloud (mask 1), two clear (mask 0):\n", kLambda);
    row("mask M", d(kM));
    row("prediction P", d(kP));
    row("target T (cloud-free)", d(kT));
    row("cloudy input I", d(kI));
    std::vector<double> cloud, clear, whole, total, formula;
    for (int64_t i = 0; i < n; ++i) {
      const double m = kM[size_t(i)], dt = kP[size_t(i)] - kT[size_t(i)], di = kP[size_t(i)] - kI[size_t(i)];
      cloud.push_back(m * std::fabs(dt));
      clear.push_back((1 - m) * std::fabs(di));
      whole.push_back(kLambda * std::fabs(dt));
      total.push_back(cloud.back() + clear.back() + whole.back());
      auto sign = [](double v) { return double((v > 0) - (v < 0)); };
      formula.push_back(((m + kLambda) * sign(dt) + (1 - m) * sign(di)) / double(n));
    }
    row("M |P - T|        (cloud: target)", cloud);
    row("(1 - M) |P - I|  (clear: input)", clear);
    row("lambda |P - T|   (everywhere)", whole);
    row("per-pixel sum", total);
    double mean = 0;
    for (double v : total) mean += v / double(n);
    std::printf("  loss = mean of the per-pixel sums = %.5f (nimbus: %.5f)\n", mean, double(loss.item()));
    row("((M+l) sign(P-T) + (1-M) sign(P-I))/n", formula);
    row("nimbus backward", d(p.grad().to_vector()));
    const std::vector<double> fd = finite_differences(carl_double, d(kP));
    row("finite differences", fd);
    std::printf("  largest difference between the three: %s\n",
                agree(std::max(worst(formula, d(p.grad().to_vector())), worst(formula, fd))));
  }
  return 0;
}
