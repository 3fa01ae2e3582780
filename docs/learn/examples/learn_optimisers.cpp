// learn_optimisers.cpp: the numbers of docs/learn/06-optimisers.md. SGD with momentum, Adam and
// Keras-2 Nadam minimising (p - 3)^2 from p = 0, nimbus' optimisers next to the update rules
// written out in double; Adam's first step, which moves lr whatever the gradient's size; the step
// schedule of train_resnet; and what keeping the weights in bfloat16 instead of a float32 master
// copy would do to small updates.
// docs/learn/build.py pastes this output into the page; ctest checks the page still matches.
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops/loss.h"
#include "engine/optim/adam.h"
#include "engine/optim/lr_schedule.h"
#include "engine/optim/nadam.h"
#include "engine/optim/sgd.h"
#include "engine/tensor.h"
#include "kernels/common/bfloat16.h"
#include "kernels/common/optim_scalars.h"
#include "kernels/common/optim_update.h"
#include "models/resnet.h"

using namespace nimbus;

namespace {

constexpr double kTarget = 3, kLr = 0.1, kB1 = 0.9, kB2 = 0.999, kEps = 1e-8, kDecay = 0.004;
constexpr int kSteps = 5;

// Runs `steps` updates of one parameter p (starting at 0) on loss (p - 3)^2, gradient 2 (p - 3).
template <typename Make>
std::vector<double> run_nimbus(Make make, int steps) {
  Tensor p = Tensor::from_vector({1}, {0.f}).set_requires_grad(true);
  std::unique_ptr<Optimizer> opt = make(NamedTensors{{"p", p}});
  std::vector<double> out;
  for (int s = 0; s < steps; ++s) {
    opt->zero_grad();
    mse_loss(p, Tensor::from_vector({1}, {float(kTarget)})).backward();
    opt->step();
    out.push_back(double(p.to_vector()[0]));
  }
  return out;
}

// The same three rules in double, straight from engine/optim/{sgd,adam,nadam}.h.
std::vector<double> sgd_double(int steps, double momentum) {
  double p = 0, buf = 0;
  std::vector<double> out;
  for (int t = 1; t <= steps; ++t) {
    const double g = 2 * (p - kTarget);
    buf = t == 1 ? g : momentum * buf + g;
    p -= kLr * buf;
    out.push_back(p);
  }
  return out;
}
std::vector<double> adam_double(int steps) {
  double p = 0, m = 0, v = 0;
  std::vector<double> out;
  for (int t = 1; t <= steps; ++t) {
    const double g = 2 * (p - kTarget);
    m = kB1 * m + (1 - kB1) * g;
    v = kB2 * v + (1 - kB2) * g * g;
    p -= kLr / (1 - std::pow(kB1, t)) * m / (std::sqrt(v) / std::sqrt(1 - std::pow(kB2, t)) + kEps);
    out.push_back(p);
  }
  return out;
}
std::vector<double> nadam_double(int steps) {
  double p = 0, m = 0, v = 0, S = 1;
  std::vector<double> out;
  for (int t = 1; t <= steps; ++t) {
    const double g = 2 * (p - kTarget);
    const double mu_t = kB1 * (1 - 0.5 * std::pow(0.96, t * kDecay));
    const double mu_next = kB1 * (1 - 0.5 * std::pow(0.96, (t + 1) * kDecay));
    S *= mu_t;
    m = kB1 * m + (1 - kB1) * g;
    v = kB2 * v + (1 - kB2) * g * g;
    const double m_bar = (1 - mu_t) * g / (1 - S) + mu_next * m / (1 - S * mu_next);
    p -= kLr * m_bar / (std::sqrt(v / (1 - std::pow(kB2, t))) + kEps);
    out.push_back(p);
  }
  return out;
}

void row(const char* name, const std::vector<double>& v) {
  std::printf("  %-28s", name);
  for (double x : v) std::printf(" %9.5f", x);
  std::printf("\n");
}
double worst(const std::vector<double>& a, const std::vector<double>& b) {
  double w = 0;
  for (size_t i = 0; i < a.size(); ++i) w = std::max(w, std::fabs(a[i] - b[i]));
  return w;
}

}  // namespace

int main() {
  std::printf("minimising (p - 3)^2 from p = 0, lr %.1f; p after each of %d steps:\n", kLr, kSteps);
  const std::vector<double> sgd = run_nimbus(
      [](const NamedTensors& ps) {
        SGDOptions o;
        o.lr = kLr;
        return std::make_unique<SGD>(ps, o);
      },
      kSteps);
  const std::vector<double> mom = run_nimbus(
      [](const NamedTensors& ps) {
        SGDOptions o;
        o.lr = kLr;
        o.momentum = 0.9;
        return std::make_unique<SGD>(ps, o);
      },
      kSteps);
  const std::vector<double> adam = run_nimbus(
      [](const NamedTensors& ps) {
        AdamOptions o;
        o.lr = kLr;
        return std::make_unique<Adam>(ps, o);
      },
      kSteps);
  const std::vector<double> nadam = run_nimbus(
      [](const NamedTensors& ps) {
        NadamOptions o;
        o.lr = kLr;
        o.eps = kEps;
        return std::make_unique<Nadam>(ps, o);
      },
      kSteps);
  row("SGD", sgd);
  row("SGD, momentum 0.9", mom);
  row("Adam", adam);
  row("Nadam (Keras 2)", nadam);
  const double w = std::max({worst(sgd, sgd_double(kSteps, 0)), worst(mom, sgd_double(kSteps, 0.9)),
                             worst(adam, adam_double(kSteps)), worst(nadam, nadam_double(kSteps))});
  std::printf("  the update rules in double give the same to %s\n", w < 1e-5 ? "below 1e-5" : "MORE than 1e-5 (a bug)");

  // Each step's size in units of lr, from the trajectories above.
  auto steps_over_lr = [](const std::vector<double>& p) {
    std::vector<double> out;
    for (size_t i = 0; i < p.size(); ++i) out.push_back((p[i] - (i ? p[i - 1] : 0.0)) / kLr);
    return out;
  };
  std::printf("step size / lr:\n");
  row("Adam", steps_over_lr(adam));
  row("Nadam (Keras 2)", steps_over_lr(nadam));
  // Why Nadam's early steps are short: m' = m / (1 - S_t mu_{t+1}) against Adam's m / (1 - beta1^t).
  {
    OptimClock c;
    const NadamHyper h{kB1, kB2, kEps, kDecay};
    std::printf("  de-biasing m at step t: Adam divides by 1 - beta1^t, Keras-2 Nadam by 1 - S_t mu_(t+1):\n");
    for (int t = 1; t <= kSteps; ++t) {
      advance_clock(c, &h);
      std::printf("    t = %d: %.5f and %.5f\n", t, 1 - std::pow(kB1, t), 1 - c.s_next);
    }
  }
  // The momentum schedule mu_t over a long run (advance_clock, as the optimiser runs it).
  {
    OptimClock c;
    const NadamHyper h{kB1, kB2, kEps, kDecay};
    std::printf("Nadam's momentum mu_t (beta1 = %.1f):", kB1);
    for (int t = 1; t <= 100000; ++t) {
      advance_clock(c, &h);
      if (t == 1 || t == 1000 || t == 10000 || t == 100000) std::printf(" t = %d: %.4f%s", t, c.mu_t, t == 100000 ? "\n" : ",");
    }
  }

  // Adam's first step: m / sqrt(v) after bias correction is g / |g|, so the step is lr whatever |g|.
  std::printf("Adam's first step from p = 0 at lr %.1f, for gradients of three sizes:\n", kLr);
  for (double scale : {1e-3, 1.0, 1e3}) {
    Tensor p = Tensor::from_vector({1}, {0.f}).set_requires_grad(true);
    AdamOptions o;
    o.lr = kLr;
    Adam opt(NamedTensors{{"p", p}}, o);
    // mse_loss(p, t) over one value has gradient 2 (p - t): -scale at p = 0 for t = scale / 2.
    Tensor loss = mse_loss(p, Tensor::from_vector({1}, {float(scale / 2)}));
    loss.backward();
    const double g = double(p.grad().to_vector()[0]);
    opt.step();
    std::printf("  gradient %10.3g -> step %.5f\n", g, double(p.to_vector()[0]));
  }
  std::printf("SGD's first step is lr x gradient: %.5f, %.5f and %.1f for the same three gradients\n", kLr * 1e-3,
              kLr * 1.0, kLr * 1e3);

  // One update launch per kOptimBatch parameter tensors (optim_scalars.h).
  {
    Rng rng(1);
    const models::ResNet net(models::resnet50_config(), rng);
    const int64_t tensors = int64_t(net.named_parameters().size());
    std::printf("ResNet-50 (13 bands, 10 classes): %lld parameter tensors, %lld update launches of up to %d per step\n",
                (long long)tensors, (long long)((tensors + kOptimBatch - 1) / kOptimBatch), kOptimBatch);
  }

  // The step schedule of train_resnet: Adam 1e-3, divided by 5 at epochs 50, 100, 200, 250.
  const StepLr schedule(1e-3, {50, 100, 200, 250}, 5);
  std::printf("train_resnet's schedule (StepLr(1e-3, {50, 100, 200, 250}, 5)), lr at the start of epoch:\n ");
  for (int e : {0, 49, 50, 99, 100, 199, 200, 249, 250, 299}) std::printf(" %d: %.3g%s", e, schedule.lr_at(e), e == 299 ? "\n" : ",");

  // bfloat16 weights: 8 bits of mantissa. Near 1 the spacing is 2^-7 = 0.0078125, so an update of
  // 1e-4 rounds away; a float32 master copy keeps it (autocast.h: the optimiser's weights stay fp32).
  const float update = 1e-4f;
  float master = 1.f;
  uint16_t bf16_weight = bf16_from_float_rne(1.f);
  for (int s = 0; s < 100; ++s) {
    master -= update;
    bf16_weight = bf16_from_float_rne(bf16_to_float(bf16_weight) - update);
  }
  std::printf("100 updates of -1e-4 to a weight of 1: bfloat16 spacing at 1 is %.7f\n",
              double(bf16_to_float(bf16_from_float_rne(1.f + 0.0078125f)) - 1.f));
  std::printf("  float32 master weight: %.5f (its bfloat16 copy for the next forward: %.5f)\n", double(master),
              double(bf16_to_float(bf16_from_float_rne(master))));
  std::printf("  weight kept in bfloat16: %.5f, every update rounded away\n", double(bf16_to_float(bf16_weight)));
  return 0;
}
