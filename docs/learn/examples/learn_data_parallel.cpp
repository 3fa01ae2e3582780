// learn_data_parallel.cpp: the numbers of docs/learn/09-data-parallel.md. Ranks are threads of this
// process (engine/distributed/thread_group.h), which run the same code as MPI and NCCL ranks:
//   1. two ranks of batch 4 averaging their gradients take the step of one process with batch 8, and
//      what breaks that (a sum instead of a mean, ranks of unequal batches);
//   2. batch norm, whose statistics are per rank unless synchronised;
//   3. ResNet-50's gradients on two ranks: how many, in what order backward finishes them, and how
//      many of the bucketed all-reduces start before backward ends.
// Differences at the level of float rounding are printed as such, not as digits: the page must read
// the same from every build (ctest checks it in the sanitizer build too).
// docs/learn/build.py pastes this output into the page; ctest checks the page still matches.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/autograd.h"
#include "engine/distributed/gradient_reducer.h"
#include "engine/distributed/sync_batchnorm.h"
#include "engine/distributed/thread_group.h"
#include "engine/ops/activation.h"
#include "engine/ops/batchnorm.h"
#include "engine/ops/linear.h"
#include "engine/ops/loss.h"
#include "engine/random.h"
#include "models/resnet.h"

using namespace nimbus;

namespace {

std::vector<float> uniform(size_t n, uint64_t seed, float lo = -1, float hi = 1) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = rng.uniform(lo, hi);
  return v;
}

double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float x : a) m = std::max(m, double(std::fabs(x)));
  return m;
}
double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}
// "equal to float rounding" when the difference is within a few float epsilons of the scale, else its size.
std::string compare(double diff, double scale) {
  char buf[96];
  if (diff <= 1e-5 * scale) return "equal to float rounding (within 1e-5 of the largest)";
  std::snprintf(buf, sizeof buf, "differ by up to %.3g (%.0f%% of the largest)", diff, 100 * diff / scale);
  return buf;
}

// ---- 1. a small network: 6 inputs, 4 hidden (ReLU), 3 classes, softmax cross-entropy ----
struct Net {
  NamedTensors params;
  Net() {
    const std::vector<std::pair<const char*, Shape>> shapes = {{"w1", {4, 6}}, {"b1", {4}}, {"w2", {3, 4}}, {"b2", {3}}};
    uint64_t seed = 1;
    for (const auto& [name, shape] : shapes) {
      Tensor t = Tensor::from_vector(shape, uniform(size_t(shape.numel()), seed++));
      t.set_requires_grad(true);
      params.emplace_back(name, t);
    }
  }
  Tensor loss(const std::vector<float>& x, const std::vector<float>& labels) const {
    const int64_t n = int64_t(labels.size());
    const Tensor h = relu(linear(Tensor::from_vector({n, 6}, x), params[0].second, params[1].second));
    return cross_entropy(linear(h, params[2].second, params[3].second), Tensor::from_vector({n}, labels));
  }
  std::vector<float> grads() const {  // every gradient, one after the other
    std::vector<float> g;
    for (const auto& [name, p] : params) {
      const std::vector<float> v = p.grad().to_vector();
      g.insert(g.end(), v.begin(), v.end());
    }
    return g;
  }
};

// The whole batch: 8 samples of 6 features, labels 0..2.
const std::vector<float> kX = uniform(8 * 6, 100);
const std::vector<float> kLabels = {0, 2, 1, 1, 0, 2, 2, 1};

// Samples [first, first + n) of the batch.
std::vector<float> rows(const std::vector<float>& v, size_t width, size_t first, size_t n) {
  return {v.begin() + long(first * width), v.begin() + long((first + n) * width)};
}

// Each rank takes its share of the batch (`sizes`), backward through a GradientReducer; returns rank
// 0's averaged gradients (every rank holds the same: checked) or, with `sum`, the ranks' sum.
std::vector<float> on_ranks(const std::vector<size_t>& sizes, bool sum = false) {
  std::vector<std::vector<float>> got(sizes.size());
  run_ranks(int(sizes.size()), [&](ProcessGroup& g) {
    const size_t r = size_t(g.rank());
    size_t first = 0;
    for (size_t k = 0; k < r; ++k) first += sizes[k];
    Net net;
    const Tensor loss = net.loss(rows(kX, 6, first, sizes[r]), rows(kLabels, 1, first, sizes[r]));
    if (sum) {  // what a reducer with ReduceOp::Sum would leave
      loss.backward();
      std::vector<float> v = net.grads();
      g.all_reduce_sum(v.data(), v.size());
      got[r] = v;
    } else {
      GradientReducer reducer(net.params, g);
      reducer.backward(loss);
      got[r] = net.grads();
    }
  });
  for (const auto& v : got)
    if (v != got[0]) std::printf("  (the ranks disagree: a bug)\n");
  return got[0];
}

void part1() {
  std::printf("1. A 6-4-3 network with a cross-entropy loss (a mean over the batch), batch of 8:\n");
  Net whole;
  whole.loss(kX, kLabels).backward();
  const std::vector<float> want = whole.grads();
  const double scale = max_abs(want);
  std::printf("  %zu gradient values; the largest, from one process with the whole batch: %.3f\n", want.size(), scale);
  std::printf("  2 ranks of 4, gradients averaged (mean):  %s\n", compare(max_diff(on_ranks({4, 4}), want), scale).c_str());
  std::printf("  2 ranks of 4, gradients summed instead:   %s\n",
              compare(max_diff(on_ranks({4, 4}, true), want), scale).c_str());
  std::printf("  ranks of 6 and 2, averaged:               %s\n", compare(max_diff(on_ranks({6, 2}), want), scale).c_str());
  std::printf("  4 ranks of 2, averaged:                   %s\n",
              compare(max_diff(on_ranks({2, 2, 2, 2}), want), scale).c_str());
}

// ---- 2. batch norm: (4, 2, 3, 3), rank 0 holds images 0-1, rank 1 images 2-3 (shifted by +3) ----
void part2() {
  const int64_t N = 4, C = 2, H = 3, W = 3, per = C * H * W;
  std::vector<float> x = uniform(size_t(N * per), 7);
  for (size_t i = size_t(2 * per); i < x.size(); ++i) x[i] += 3.f;  // rank 1's images are brighter
  auto bn = [&](const std::vector<float>& xs, int64_t n, ProcessGroup* g) {
    Tensor w = Tensor::from_vector({C}, {1.f, 1.f}), b = Tensor::zeros({C});
    Tensor rm = Tensor::zeros({C}), rv = Tensor::from_vector({C}, {1.f, 1.f});
    const Tensor in = Tensor::from_vector({n, C, H, W}, xs);
    return (g ? sync_batch_norm2d(in, w, b, rm, rv, true, 0.1f, 1e-5f, nullptr, *g)
              : batch_norm2d(in, w, b, rm, rv, true, 0.1f, 1e-5f))
        .to_vector();
  };
  auto channel0_mean = [&](size_t first, size_t n) {
    double s = 0;
    for (size_t i = first; i < first + n; ++i)
      for (int64_t k = 0; k < H * W; ++k) s += x[i * size_t(per) + size_t(k)];
    return s / double(n * size_t(H * W));
  };
  const std::vector<float> want = bn(x, N, nullptr);
  std::vector<float> per_rank, synced(x.size());
  for (int r = 0; r < 2; ++r) {  // each rank normalising its own two images
    const std::vector<float> y = bn(rows(x, size_t(per), size_t(2 * r), 2), 2, nullptr);
    per_rank.insert(per_rank.end(), y.begin(), y.end());
  }
  run_ranks(2, [&](ProcessGroup& g) {
    const std::vector<float> y = bn(rows(x, size_t(per), size_t(2 * g.rank()), 2), 2, &g);
    std::copy(y.begin(), y.end(), synced.begin() + long(2 * g.rank() * per));
  });
  std::printf("2. Batch norm of 4 images (2 channels, 3 x 3) on 2 ranks of 2, rank 1's images brighter by 3:\n");
  std::printf("  channel 0's mean: rank 0 %.2f, rank 1 %.2f, the whole batch %.2f\n", channel0_mean(0, 2),
              channel0_mean(2, 2), channel0_mean(0, 4));
  const double scale = max_abs(want);
  std::printf("  each rank's own statistics vs the whole batch:  %s\n", compare(max_diff(per_rank, want), scale).c_str());
  std::printf("  synchronised statistics vs the whole batch:     %s\n", compare(max_diff(synced, want), scale).c_str());
}

// ---- 3. ResNet-50's gradients on two ranks ----
void part3() {
  const models::ResNetConfig cfg = models::resnet50_config();
  std::printf("3. ResNet-50 (%d bands, %d classes), one 64 x 64 tile per rank, buckets of 4194304 floats (16 MiB):\n",
              cfg.in_channels, cfg.classes);
  // The order backward finishes the gradients in, seen by a leaf hook on one process.
  std::vector<std::string> order;
  size_t tensors = 0, floats = 0;
  {
    Rng rng(3);
    models::ResNet net(cfg, rng);
    net.train();
    std::unordered_map<TensorImpl*, std::string> name_of;
    for (const auto& [name, p] : net.named_parameters()) {
      name_of[p.impl()] = name;
      ++tensors;
      floats += size_t(p.numel());
    }
    const Tensor x = Tensor::from_vector({1, cfg.in_channels, 64, 64}, uniform(size_t(cfg.in_channels) * 64 * 64, 5));
    LeafGradHook hook([&](TensorImpl& leaf) { order.push_back(name_of.at(&leaf)); });
    cross_entropy(net.forward(x), Tensor::from_vector({1}, {3.f})).backward();
  }
  std::printf("  %zu parameter tensors, %zu floats: %.1f MB of gradients all-reduced per step\n", tensors, floats,
              double(floats) * 4 / 1e6);
  std::printf("  backward finishes them last layer first: %s, %s, %s, %s, ..., %s\n", order[0].c_str(),
              order[1].c_str(), order[2].c_str(), order[3].c_str(), order.back().c_str());
  GradientReducer::StepStats stats[2];
  bool same = true;
  std::vector<float> fc_grad[2];
  run_ranks(2, [&](ProcessGroup& g) {
    Rng rng(3);  // the same initial weights on every rank, as a broadcast from rank 0 would give
    models::ResNet net(cfg, rng);
    net.train();
    GradientReducer reducer(net.named_parameters(), g);
    const Tensor x =
        Tensor::from_vector({1, cfg.in_channels, 64, 64}, uniform(size_t(cfg.in_channels) * 64 * 64, 5 + uint64_t(g.rank())));
    reducer.backward(cross_entropy(net.forward(x), Tensor::from_vector({1}, {float(3 + g.rank())})));
    stats[g.rank()] = reducer.last_step();
    for (const auto& [name, p] : net.named_parameters())
      if (name == "conv1.weight") fc_grad[g.rank()] = p.grad().to_vector();
  });
  same = fc_grad[0] == fc_grad[1] && !fc_grad[0].empty();
  std::printf("  all-reduces per step: %zu, of which started while backward was still running: %zu\n",
              stats[0].collectives, stats[0].before_backward_end);
  std::printf("  both ranks then hold the same averaged gradients (conv1.weight, bit for bit): %s\n",
              same ? "yes" : "NO");
}

}  // namespace

int main() {
  part1();
  part2();
  part3();
  return 0;
}
