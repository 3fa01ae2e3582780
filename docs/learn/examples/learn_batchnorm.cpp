// learn_batchnorm.cpp: the numbers of docs/learn/03-batchnorm.md. One channel of batch norm in
// training and in evaluation: the statistics, the running averages, the three terms of the input
// gradient next to nimbus' backward and central finite differences, and the fused BN + ReLU.
// docs/learn/build.py pastes this output into the page; ctest checks the page still matches.
//
//   x (N=2, C=1, H=1, W=4)   weight (gamma) 2, bias (beta) 0.5, eps 1e-5, momentum 0.1
// Small integers and dyadic fractions: every sum below is exact in float, so the printed numbers do
// not depend on the order a machine adds them in.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops/activation.h"
#include "engine/ops/batchnorm.h"
#include "engine/tensor.h"

using namespace nimbus;

namespace {

const std::vector<float> kX = {1, 3, 5, 7, 1, 3, 5, 7}, kDy = {1, -1, 0.5f, 2, 0, 1, -2, 0.25f};
constexpr double kGamma = 2, kBeta = 0.5, kEps = 1e-5;

void row(const char* name, const std::vector<double>& v) {
  std::printf("  %-32s [", name);
  for (size_t i = 0; i < v.size(); ++i) std::printf("%s%9.5f", i ? "," : "", v[i]);
  std::printf("]\n");
}
std::vector<double> d(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// Training-mode batch norm of one channel in double, and L = sum(dy * y): the reference for the
// finite differences.
double loss_double(const std::vector<double>& x) {
  double mean = 0, var = 0, l = 0;
  for (double v : x) mean += v / double(x.size());
  for (double v : x) var += (v - mean) * (v - mean) / double(x.size());
  for (size_t i = 0; i < x.size(); ++i) l += double(kDy[i]) * (kGamma * (x[i] - mean) / std::sqrt(var + kEps) + kBeta);
  return l;
}

}  // namespace

int main() {
  const int64_t M = int64_t(kX.size());
  Tensor x = Tensor::from_vector({2, 1, 1, 4}, kX).set_requires_grad(true);
  Tensor w = Tensor::from_vector({1}, {float(kGamma)}), b = Tensor::from_vector({1}, {float(kBeta)});
  Tensor rm = Tensor::from_vector({1}, {0.f}), rv = Tensor::from_vector({1}, {1.f});  // fresh: mean 0, var 1

  // ---- training: the batch's own statistics
  Tensor y = batch_norm2d(x, w, b, rm, rv, /*training=*/true);
  double mean = 0, var = 0;
  for (float v : kX) mean += v / double(M);
  for (float v : kX) var += (v - mean) * (v - mean) / double(M);
  const double invstd = 1 / std::sqrt(var + kEps);
  std::vector<double> xhat;
  for (float v : kX) xhat.push_back((v - mean) * invstd);
  std::printf("one channel: x of shape (N=2, C=1, H=1, W=4), gamma %g, beta %g, eps %g\n", kGamma, kBeta, kEps);
  std::printf("training: batch mean %.5f, biased variance %.5f, 1/sqrt(var + eps) %.5f\n", mean, var, invstd);
  row("x", d(kX));
  row("x_hat = (x - mean) invstd", xhat);
  row("y = gamma x_hat + beta", d(y.to_vector()));
  std::printf("  running_mean 0 -> %.5f, running_var 1 -> %.5f (momentum 0.1, unbiased variance %.5f)\n",
              double(rm.to_vector()[0]), double(rv.to_vector()[0]), var * double(M) / double(M - 1));

  // ---- evaluation: the running statistics, nothing updated
  {
    Tensor rm2 = rm.clone(), rv2 = rv.clone();
    NoGradGuard ng;
    row("eval y (running stats)", d(batch_norm2d(x.detach(), w, b, rm2, rv2, /*training=*/false).to_vector()));
  }

  // ---- the input gradient: nimbus' backward, the three terms, finite differences
  y.backward(Tensor::from_vector({2, 1, 1, 4}, kDy));
  double mean_dy = 0, mean_dy_xhat = 0;
  for (int64_t i = 0; i < M; ++i) mean_dy += kDy[size_t(i)] / double(M), mean_dy_xhat += kDy[size_t(i)] * xhat[size_t(i)] / double(M);
  std::vector<double> t1, t2, t3, sum, fd;
  std::vector<double> xd = d(kX);
  for (int64_t i = 0; i < M; ++i) {
    const double g = kGamma * invstd;
    t1.push_back(g * kDy[size_t(i)]);
    t2.push_back(-g * mean_dy);
    t3.push_back(-g * xhat[size_t(i)] * mean_dy_xhat);
    sum.push_back(t1.back() + t2.back() + t3.back());
    const double keep = xd[size_t(i)], e = 1e-4;
    xd[size_t(i)] = keep + e;
    const double up = loss_double(xd);
    xd[size_t(i)] = keep - e;
    const double down = loss_double(xd);
    xd[size_t(i)] = keep;
    fd.push_back((up - down) / (2 * e));
  }
  std::printf("input gradient for dy, mean(dy) = %.5f, mean(dy x_hat) = %.5f:\n", mean_dy, mean_dy_xhat);
  row("dy", d(kDy));
  row("1: gamma invstd dy", t1);
  row("2: - gamma invstd mean(dy)", t2);
  row("3: - ... x_hat mean(dy x_hat)", t3);
  row("1 + 2 + 3", sum);
  row("nimbus backward", d(x.grad().to_vector()));
  row("finite differences", fd);
  double worst = 0;
  const std::vector<float> g = x.grad().to_vector();
  for (int64_t i = 0; i < M; ++i) worst = std::max({worst, std::fabs(g[size_t(i)] - sum[size_t(i)]), std::fabs(fd[size_t(i)] - sum[size_t(i)])});
  std::printf("  largest difference between the three: %s\n", worst < 1e-5 ? "below 1e-5" : "ABOVE 1e-5 (a bug)");
  double sdx = 0, sdx_xhat = 0;
  for (int64_t i = 0; i < M; ++i) sdx += sum[size_t(i)], sdx_xhat += sum[size_t(i)] * xhat[size_t(i)];
  std::printf("  sum(dx) = %.5f and sum(dx x_hat) = %.5f: moving x along dx changes neither the batch mean nor"
              " the spread\n", std::fabs(sdx) < 5e-6 ? 0.0 : sdx, std::fabs(sdx_xhat) < 5e-6 ? 0.0 : sdx_xhat);

  // ---- evaluation mode: statistics are constants, only term 1 is left
  {
    Tensor xe = Tensor::from_vector({2, 1, 1, 4}, kX).set_requires_grad(true);
    Tensor rm2 = rm.clone(), rv2 = rv.clone();
    batch_norm2d(xe, w, b, rm2, rv2, /*training=*/false).backward(Tensor::from_vector({2, 1, 1, 4}, kDy));
    std::vector<double> want;
    const double ginv = kGamma / std::sqrt(double(rv.to_vector()[0]) + kEps);
    for (float v : kDy) want.push_back(ginv * v);
    row("eval: nimbus backward", d(xe.grad().to_vector()));
    row("eval: gamma dy / sqrt(rv+eps)", want);
  }

  // ---- the fused BN + ReLU against relu(batch_norm2d): outputs and input gradients
  {
    Tensor xa = Tensor::from_vector({2, 1, 1, 4}, kX).set_requires_grad(true), xb = xa.detach().set_requires_grad(true);
    Tensor rma = Tensor::from_vector({1}, {0.f}), rva = Tensor::from_vector({1}, {1.f});
    Tensor rmb = rma.clone(), rvb = rva.clone();
    Tensor fused = batch_norm2d_relu(xa, w, b, rma, rva, true);
    Tensor apart = relu(batch_norm2d(xb, w, b, rmb, rvb, true));
    fused.backward(Tensor::from_vector({2, 1, 1, 4}, kDy));
    apart.backward(Tensor::from_vector({2, 1, 1, 4}, kDy));
    const bool same_y = fused.to_vector() == apart.to_vector(), same_dx = xa.grad().to_vector() == xb.grad().to_vector();
    row("batch_norm2d_relu y", d(fused.to_vector()));
    row("batch_norm2d_relu dx", d(xa.grad().to_vector()));
    std::printf("  equal to relu(batch_norm2d(x)) and its gradient, bit for bit: %s, %s\n", same_y ? "yes" : "NO",
                same_dx ? "yes" : "NO");
  }
  return 0;
}
