// learn_autograd.cpp: the numbers of docs/learn/01-autograd.md. A tiny network through nimbus'
// autograd: its forward values, the order backward visits the graph, every gradient next to a
// central finite difference of the same function written in plain double, gradient accumulation
// across two backward calls, and the error after the saved tensors are freed.
// docs/learn/build.py pastes this output into the page; ctest checks the page still matches.
//
//   x (1, 3)  W (2, 3)  b (2)  t (1, 2)
//   h = linear(x, W, b) = x W^T + b     (1, 2)
//   r = relu(h)                         (1, 2)
//   s = add(r, mul_scalar(r, 0.5))      (1, 2)   r is used twice: its gradient is a sum
//   L = mse_loss(s, t) = mean((s - t)^2)
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <unordered_set>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops/activation.h"
#include "engine/ops/arith.h"
#include "engine/ops/linear.h"
#include "engine/ops/loss.h"
#include "engine/tensor.h"
#include "kernels/common/error.h"

using namespace nimbus;

namespace {

// Values with few binary digits: every float operation below is exact, so the printed numbers are
// the same on every machine (and the page's check cannot fail on a rounding difference).
const std::vector<float> kX = {0.5f, -1.0f, 2.0f}, kW = {0.25f, -0.25f, 0.5f, -0.5f, 0.125f, -0.25f},
                         kB = {0.125f, 0.25f}, kT = {1.0f, 0.0f};

// The same function in plain double: the reference the finite differences use.
double loss_double(const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b) {
  double l = 0;
  for (int o = 0; o < 2; ++o) {
    double h = b[size_t(o)];
    for (int i = 0; i < 3; ++i) h += x[size_t(i)] * w[size_t(o * 3 + i)];
    const double r = h > 0 ? h : 0, s = r + 0.5 * r, d = s - double(kT[size_t(o)]);
    l += d * d / 2;
  }
  return l;
}

// Central differences of loss_double with respect to one of its arguments (which = 0 x, 1 W, 2 b).
std::vector<double> numeric(int which, double eps = 1e-6) {
  std::vector<double> x(kX.begin(), kX.end()), w(kW.begin(), kW.end()), b(kB.begin(), kB.end());
  std::vector<double>& v = which == 0 ? x : which == 1 ? w : b;
  std::vector<double> g(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const double keep = v[i];
    v[i] = keep + eps;
    const double up = loss_double(x, w, b);
    v[i] = keep - eps;
    const double down = loss_double(x, w, b);
    v[i] = keep;
    g[i] = (up - down) / (2 * eps);
  }
  return g;
}

std::string row(const std::vector<float>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s%.6f", i ? ", " : "", double(v[i]));
    s += buf;
  }
  return s + "]";
}

// The nodes reachable from `root`, in the order run_backward visits them (engine/autograd.cpp:
// a depth-first post-order, reversed).
std::vector<Node*> visit_order(Node* root) {
  std::vector<Node*> post;
  std::unordered_set<Node*> seen{root};
  std::function<void(Node*)> dfs = [&](Node* n) {
    for (const Edge& e : n->edges)
      if (e.fn && seen.insert(e.fn.get()).second) dfs(e.fn.get());
    post.push_back(n);
  };
  dfs(root);
  return {post.rbegin(), post.rend()};
}

}  // namespace

int main() {
  Tensor x = Tensor::from_vector({1, 3}, kX).set_requires_grad(true);
  Tensor W = Tensor::from_vector({2, 3}, kW).set_requires_grad(true);
  Tensor b = Tensor::from_vector({2}, kB).set_requires_grad(true);
  const Tensor t = Tensor::from_vector({1, 2}, kT);

  Tensor h = linear(x, W, b);
  Tensor r = relu(h);
  Tensor s = add(r, mul_scalar(r, 0.5f));
  Tensor L = mse_loss(s, t);
  std::printf("forward\n");
  std::printf("  h = %s\n  r = %s\n  s = %s\n  L = %.6f\n", row(h.to_vector()).c_str(), row(r.to_vector()).c_str(),
              row(s.to_vector()).c_str(), double(L.item()));

  std::printf("backward visits\n ");
  for (Node* n : visit_order(L.grad_fn().get())) std::printf(" %s", n->op.c_str());
  std::printf("\n");

  L.backward();
  std::printf("gradients: backward (float) | central differences (double)\n");
  const char* names[3] = {"dL/dx", "dL/dW", "dL/db"};
  const Tensor* leaves[3] = {&x, &W, &b};
  double worst = 0;
  for (int k = 0; k < 3; ++k) {
    const std::vector<float> g = leaves[k]->grad().to_vector();
    const std::vector<double> n = numeric(k);
    std::vector<float> nf(n.begin(), n.end());
    for (size_t i = 0; i < g.size(); ++i) worst = std::max(worst, std::fabs(double(g[i]) - n[i]));
    std::printf("  %s = %s\n  %*s   %s\n", names[k], row(g).c_str(), 5, "", row(nf).c_str());
  }
  std::printf("  largest difference: %s\n", worst < 1e-6 ? "below 1e-6" : "ABOVE 1e-6 (a bug)");

  // Gradients accumulate: a second graph and backward add to .grad until zero_grad().
  const float db0 = b.grad().to_vector()[0];
  mse_loss(add(relu(linear(x, W, b)), mul_scalar(relu(linear(x, W, b)), 0.5f)), t).backward();
  std::printf("accumulation: dL/db[0] after one backward %.6f, after two %.6f\n", double(db0),
              double(b.grad().to_vector()[0]));
  b.zero_grad();
  std::printf("  after zero_grad: %s\n", b.grad().defined() ? "defined" : "undefined");

  // The first backward freed what the graph saved: walking it again is an error, not garbage.
  try {
    L.backward();
    std::printf("second backward through the same graph: no error (a bug)\n");
  } catch (const Error& e) {
    std::printf("second backward through the same graph:\n  %s\n", e.what());
  }
  return 0;
}
