// test_distributed.cpp: the data-parallel pieces of engine/distributed driven through the thread group
// (ranks as threads of this process): the group's collectives, autograd's leaf hook, the gradient
// reducer's buckets and overlap, and the synchronised batch norm against batch norm over the whole
// batch. The same code runs between processes under mpirun (tests/apps, "data parallel").
//
// doctest's CHECK is not thread-safe: ranks store what they computed, the test thread checks it.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/distributed/data_parallel.h"
#include "engine/distributed/gradient_reducer.h"
#include "engine/distributed/sync_batchnorm.h"
#include "engine/distributed/thread_group.h"
#include "engine/nn/layers.h"
#include "engine/ops/activation.h"
#include "engine/ops/arith.h"
#include "engine/ops/batchnorm.h"
#include "engine/ops/linear.h"
#include "engine/ops/loss.h"
#include "engine/optim/adam.h"
#include "engine/optim/clip_grad.h"
#include "engine/optim/sgd.h"
#include "engine/random.h"
#include "tests/apps/app_runner.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {

std::vector<float> rand_floats(size_t n, uint64_t seed, double lo = -1, double hi = 1) {
  Rng rng(seed);
  return to_float(random_vec(n, rng, lo, hi));
}

Tensor leaf(const Shape& s, uint64_t seed) {
  Tensor t = Tensor::from_vector(s, rand_floats(size_t(s.numel()), seed));
  t.set_requires_grad(true);
  return t;
}

}  // namespace

TEST_CASE("thread group: all-reduce sums in rank order, broadcast from any root, a failing rank breaks the others") {
  const int R = 3;
  // Values whose float sum depends on the order: 1e8 + 1 - 1e8 is 0 left to right, 1 otherwise.
  const std::vector<std::vector<float>> in = {{1e8f, 0.5f, -3.f}, {1.f, 0.25f, 7.f}, {-1e8f, 0.125f, 2.f}};
  std::vector<std::vector<float>> out(R);
  std::vector<std::vector<double>> bcast(R);
  run_ranks(R, [&](ProcessGroup& g) {
    std::vector<float> v = in[size_t(g.rank())];
    g.all_reduce_sum(v.data(), v.size());
    out[size_t(g.rank())] = v;
    std::vector<double> b = {double(g.rank()) + 0.5, -double(g.rank())};
    g.broadcast(b.data(), b.size() * sizeof(double), 1);
    bcast[size_t(g.rank())] = b;
    g.barrier();
  });
  for (int r = 0; r < R; ++r) {
    CAPTURE(r);
    for (size_t i = 0; i < 3; ++i) CHECK(out[size_t(r)][i] == (in[0][i] + in[1][i]) + in[2][i]);
    CHECK(bcast[size_t(r)] == std::vector<double>{1.5, -1.0});
  }
  CHECK(out[0][0] == 0.f);  // rank order, not a sorted or pairwise one
  // Rank 1 fails before its collective: the others do not wait forever, and the error is rank 1's.
  std::atomic<int> broken{0};
  CHECK_THROWS_WITH_AS(run_ranks(R,
                                 [&](ProcessGroup& g) {
                                   if (g.rank() == 1) throw std::runtime_error("rank 1 cannot go on");
                                   float x = 1;
                                   try {
                                     g.all_reduce_sum(&x, 1);
                                   } catch (const Error&) {
                                     ++broken;
                                     throw;
                                   }
                                 }),
                       "rank 1 cannot go on", std::runtime_error);
  CHECK(broken == R - 1);
}

TEST_CASE("autograd: the leaf hook announces each gradient once, complete, in the order backward finishes them") {
  // y = w2 relu(w1 relu(w1 x + b1)) + b2: w1 is used twice, so it is complete only after its first use's
  // node (the last to run), not at its second use's; b2's node runs first. An early announcement shows
  // as a gradient that differs from the final one, or as a second announcement.
  Tensor x = Tensor::from_vector({3, 4}, rand_floats(12, 1));
  Tensor w1 = leaf({4, 4}, 2), b1 = leaf({4}, 3), w2 = leaf({2, 4}, 4), b2 = leaf({2}, 5);
  Tensor target = Tensor::from_vector({3, 2}, rand_floats(6, 6));
  const Tensor unused_by_graph = leaf({5}, 7);
  Tensor loss = mse_loss(linear(relu(linear(relu(linear(x, w1, b1)), w1, Tensor())), w2, b2), target);
  std::vector<std::pair<std::string, std::vector<float>>> seen;  // name, gradient when announced
  const std::vector<std::pair<std::string, Tensor>> named = {{"w1", w1}, {"b1", b1}, {"w2", w2}, {"b2", b2},
                                                             {"unused", unused_by_graph}};
  {
    LeafGradHook hook([&](TensorImpl& l) {
      for (const auto& [name, t] : named)
        if (t.impl() == &l) seen.emplace_back(name, t.grad().to_vector());
    });
    loss.backward();
  }
  REQUIRE(seen.size() == 4);  // each parameter once; `unused` never (no gradient reached it)
  std::vector<std::string> order;
  for (const auto& [name, g] : seen) order.push_back(name);
  const auto pos = [&](const std::string& n) { return std::find(order.begin(), order.end(), n) - order.begin(); };
  CHECK(pos("w2") < pos("w1"));
  CHECK(pos("b2") < pos("b1"));
  CHECK(pos("w1") + 1 == pos("b1"));  // both complete at the graph's last node (w1's first use)
  for (const auto& [name, g] : seen) {  // complete when announced: equal to the gradient after backward
    CAPTURE(name);
    for (const auto& [n, t] : named)
      if (n == name) CHECK(g == t.grad().to_vector());
  }
  // Without a hook nothing changes, and the hook is gone after its scope.
  Tensor w3 = leaf({2}, 8);
  size_t calls = 0;
  { LeafGradHook outer([&](TensorImpl&) { ++calls; }); }
  mse_loss(w3, Tensor::zeros({2})).backward();
  CHECK(calls == 0);
}

namespace {

// A two-layer net whose parameters are the same on every rank (seeded) and whose input is the rank's.
struct Net {
  NamedTensors params;
  Net() {
    params = {{"w1", leaf({16, 6}, 11)}, {"b1", leaf({16}, 12)}, {"w2", leaf({5, 16}, 13)},
              {"b2", leaf({5}, 14)},     {"unused", leaf({7}, 15)}};
  }
  Tensor loss(int rank) const {
    Tensor x = Tensor::from_vector({4, 6}, rand_floats(24, 100 + uint64_t(rank)));
    Tensor t = Tensor::from_vector({4, 5}, rand_floats(20, 200 + uint64_t(rank)));
    return mse_loss(linear(relu(linear(x, params[0].second, params[1].second)), params[2].second, params[3].second),
                    t);
  }
};

}  // namespace

TEST_CASE("gradient reducer: every rank gets the ranks' mean gradient, bucket by bucket while backward runs") {
  // The reference: each rank's gradient computed alone, then (g0 + g1) * 0.5 in float, as the group does.
  std::vector<std::vector<std::vector<float>>> alone(2);
  for (int r = 0; r < 2; ++r) {
    Net n;
    n.loss(r).backward();
    for (size_t i = 0; i < 4; ++i) alone[size_t(r)].push_back(n.params[i].second.grad().to_vector());
  }
  for (size_t bucket : {size_t(1) << 22, size_t(100), size_t(1)}) {
    CAPTURE(bucket);
    std::vector<std::vector<std::vector<float>>> got(2);
    std::vector<GradientReducer::StepStats> stats(2);
    std::vector<int> unused_grad(2, -1);
    run_ranks(2, [&](ProcessGroup& g) {
      Net n;
      GradientReducer reducer(n.params, g, bucket);
      for (int step = 0; step < 2; ++step) {  // buckets and staging are reused step after step
        for (auto& [name, p] : n.params) p.zero_grad();
        reducer.backward(n.loss(g.rank()));
      }
      auto& mine = got[size_t(g.rank())];
      for (size_t i = 0; i < 4; ++i) mine.push_back(n.params[i].second.grad().to_vector());
      stats[size_t(g.rank())] = reducer.last_step();
      unused_grad[size_t(g.rank())] = n.params[4].second.grad().defined();
    });
    for (int r = 0; r < 2; ++r) {
      CAPTURE(r);
      for (size_t i = 0; i < 4; ++i) {
        std::vector<float> want(alone[0][i].size());
        for (size_t k = 0; k < want.size(); ++k) want[k] = (alone[0][i][k] + alone[1][i][k]) * 0.5f;
        CHECK(got[size_t(r)][i] == want);  // bit for bit
      }
      CHECK(unused_grad[size_t(r)] == 0);  // a parameter without gradient stays without
      CHECK(stats[size_t(r)].floats == 16 * 6 + 16 + 5 * 16 + 5);
    }
    const GradientReducer::StepStats& s = stats[0];
    // Backward completes w2 and b2 (80 + 5 floats), then w1 and b1 (96 + 16).
    if (bucket == size_t(1) << 22) {
      CHECK(s.collectives == 1);  // one bucket (as large as the model), full with the last gradient
    } else if (bucket == 100) {
      CHECK(s.collectives == 3);  // w2 b2 | w1 | b1
      CHECK(s.before_backward_end == 2);  // the overlap: two buckets left while backward still ran
    } else {
      CHECK(s.collectives == 4);  // one per parameter, each as soon as it is complete
      CHECK(s.before_backward_end == 4);
    }
  }
  // One rank: backward alone, no collective, the gradients untouched.
  Net n;
  run_ranks(1, [&](ProcessGroup& g) {
    GradientReducer reducer(n.params, g);
    reducer.backward(n.loss(0));
    CHECK(reducer.last_step().collectives == 0);
  });
  CHECK(n.params[0].second.grad().to_vector() == alone[0][0]);
}

// A gradient from an earlier backward of the step (gradient accumulation) on a parameter the last backward
// does not reach is never staged, so never all-reduced: finish() refuses it on every rank, naming it,
// rather than let each rank keep its own gradient and the weights drift apart.
TEST_CASE("gradient reducer: a gradient the step's last backward did not reach is refused, not left unreduced") {
  std::vector<std::string> errors(2);
  run_ranks(2, [&](ProcessGroup& g) {
    Net n;
    GradientReducer reducer(n.params, g, 100);
    mul_scalar(n.params[4].second, 2.f).backward(Tensor::ones({7}));  // an earlier batch's backward reached "unused"
    try {
      reducer.backward(n.loss(g.rank()));
    } catch (const Error& e) {
      errors[size_t(g.rank())] = e.what();
    }
    // The step after it, without that gradient, goes through.
    for (auto& [name, p] : n.params) p.zero_grad();
    reducer.backward(n.loss(g.rank()));
  });
  for (const std::string& e : errors)
    CHECK_MESSAGE(e.find("GradientReducer: unused has a gradient that was not all-reduced") != std::string::npos, e);
}

TEST_CASE("gradient reducer: 2 ranks of half a batch take the steps of one process with the whole batch, SGD, Adam, clipped, accumulated") {
  // Net's input for the whole batch: rank 0's 4 samples then rank 1's. mse_loss is a mean, so the
  // whole batch's gradient is the mean of the two halves' gradients.
  const auto batch_of = [](int rank) {
    return std::pair{Tensor::from_vector({4, 6}, rand_floats(24, 100 + uint64_t(rank))),
                     Tensor::from_vector({4, 5}, rand_floats(20, 200 + uint64_t(rank)))};
  };
  auto loss_of = [](const Net& n, const Tensor& x, const Tensor& t) {
    return mse_loss(linear(relu(linear(x, n.params[0].second, n.params[1].second)), n.params[2].second,
                           n.params[3].second),
                    t);
  };
  // "sgd clipped": the gradients clipped to norm 0.05 after the all-reduce (as the trainers do), so every
  // rank clips the whole batch's mean gradient and takes the whole batch's step (SGD's step scales with
  // the gradient: the clipped run must differ from "sgd").
  // "adam accumulated": each rank's 4 samples as 2 batches of 2, each loss halved, their gradients added
  // up before the all-reduce (the trainers' --accumulate 2): the same mean gradient again.
  std::vector<std::vector<float>> sgd_whole;  // the unclipped SGD run's weights
  for (const std::string kind : {"sgd", "adam", "sgd clipped", "adam accumulated"}) {
    CAPTURE(kind);
    const double clip = kind == "sgd clipped" ? 0.05 : 0;
    const bool accumulate = kind == "adam accumulated";
    std::vector<float> norms_whole, norms_rank0;
    auto make = [&](const NamedTensors& p) -> std::unique_ptr<Optimizer> {
      if (kind.rfind("sgd", 0) == 0) return std::make_unique<SGD>(p, SGDOptions{0.1, 0.9});
      AdamOptions o;
      o.lr = 1e-2;
      return std::make_unique<Adam>(p, o);
    };
    // One process, the whole batch of 8.
    Net whole;
    {
      const auto [x0, t0] = batch_of(0);
      const auto [x1, t1] = batch_of(1);
      std::vector<float> xv = x0.to_vector(), tv = t0.to_vector(), x1v = x1.to_vector(), t1v = t1.to_vector();
      xv.insert(xv.end(), x1v.begin(), x1v.end());
      tv.insert(tv.end(), t1v.begin(), t1v.end());
      const Tensor x = Tensor::from_vector({8, 6}, xv), t = Tensor::from_vector({8, 5}, tv);
      auto opt = make(whole.params);
      for (int step = 0; step < 4; ++step) {
        opt->zero_grad();
        loss_of(whole, x, t).backward();
        if (clip > 0) norms_whole.push_back(clip_grad_norm(whole.params, clip).item());
        opt->step();
      }
    }
    // Two ranks of 4.
    std::vector<std::vector<std::vector<float>>> ranks(2);
    run_ranks(2, [&](ProcessGroup& g) {
      Net n;
      GradientReducer reducer(n.params, g, 50);
      auto opt = make(n.params);
      const auto [x, t] = batch_of(g.rank());
      const std::vector<float> xv = x.to_vector(), tv = t.to_vector();
      auto rows = [](const std::vector<float>& v, int64_t first, int64_t count, int64_t width) {
        return Tensor::from_vector({count, width}, std::vector<float>(v.begin() + first * width,
                                                                      v.begin() + (first + count) * width));
      };
      for (int step = 0; step < 4; ++step) {
        opt->zero_grad();
        if (accumulate) {
          mul_scalar(loss_of(n, rows(xv, 0, 2, 6), rows(tv, 0, 2, 5)), 0.5f).backward();
          reducer.backward(mul_scalar(loss_of(n, rows(xv, 2, 2, 6), rows(tv, 2, 2, 5)), 0.5f));
        } else {
          reducer.backward(loss_of(n, x, t));
        }
        if (clip > 0) {
          const float norm = clip_grad_norm(n.params, clip).item();
          if (g.rank() == 0) norms_rank0.push_back(norm);
        }
        opt->step();
      }
      for (size_t i = 0; i < 4; ++i) ranks[size_t(g.rank())].push_back(n.params[i].second.to_vector());
    });
    double moved = 0;
    Net start;
    for (size_t i = 0; i < 4; ++i) {
      CHECK(ranks[0][i] == ranks[1][i]);  // every rank took the same steps, bit for bit
      const std::vector<float> w = whole.params[i].second.to_vector(), s0 = start.params[i].second.to_vector();
      check_close(ranks[0][i], w, 1e-6, 1e-5, whole.params[i].first);  // the sums differ in order only
      for (size_t k = 0; k < w.size(); ++k) moved = std::max(moved, double(std::fabs(w[k] - s0[k])));
    }
    CHECK(moved > 1e-3);  // the comparison is not between two unmoved models
    if (kind == "sgd")
      for (size_t i = 0; i < 4; ++i) sgd_whole.push_back(whole.params[i].second.to_vector());
    if (clip > 0) {
      double from_unclipped = 0;
      for (size_t i = 0; i < 4; ++i)
        from_unclipped = std::max(from_unclipped, worst_violation(whole.params[i].second.to_vector(), sgd_whole[i], 1e-4, 0));
      CHECK(from_unclipped > 0);  // clipping changed the steps
    }
    REQUIRE(norms_whole.size() == norms_rank0.size());
    for (size_t k = 0; k < norms_whole.size(); ++k) {
      CHECK(norms_whole[k] > clip);  // every step clipped
      CHECK(norms_rank0[k] == doctest::Approx(norms_whole[k]).epsilon(1e-5));
    }
  }
}

namespace {

// x (N, C, H, W) for the ranks' slices; dy likewise.
struct BnCase {
  int64_t C = 3, H = 3, W = 2;
  std::vector<int64_t> per_rank;  // N of each rank
  int64_t total() const {
    int64_t n = 0;
    for (int64_t v : per_rank) n += v;
    return n;
  }
  size_t per_sample() const { return size_t(C * H * W); }
};

struct BnResult {
  std::vector<float> y, dx, dw, db, rm, rv, count;
};

// Batch norm (training) over the whole batch, and its gradients for upstream dy: the reference.
BnResult whole_batch(const BnCase& c, const std::vector<float>& x, const std::vector<float>& dy, DType dt) {
  const int64_t N = c.total();
  Tensor xt = Tensor::from_vector({N, c.C, c.H, c.W}, x).to(dt);
  xt.set_requires_grad(true);
  Tensor w = Tensor::from_vector({c.C}, {1.5f, -0.5f, 0.75f}), b = Tensor::from_vector({c.C}, {0.1f, 0.2f, -0.3f});
  w.set_requires_grad(true), b.set_requires_grad(true);
  Tensor rm = Tensor::from_vector({c.C}, {0.5f, -1.f, 2.f}), rv = Tensor::from_vector({c.C}, {1.f, 2.f, 0.5f});
  Tensor count = Tensor::zeros({});
  Tensor y = batch_norm2d(xt, w, b, rm, rv, true, 0.1f, 1e-5f, &count);
  y.backward(Tensor::from_vector(y.shape(), dy).to(dt));
  return {y.to_vector(), xt.grad().to_vector(), w.grad().to_vector(), b.grad().to_vector(),
          rm.to_vector(),  rv.to_vector(),        count.to_vector()};
}

// The same through sync_batch_norm2d, rank r on its slice of the batch; the slices put back together,
// the parameters' gradients summed over the ranks (each rank's own sums: the reducer averages them).
BnResult synced(const BnCase& c, const std::vector<float>& x, const std::vector<float>& dy, DType dt) {
  const int R = int(c.per_rank.size());
  std::vector<BnResult> per(static_cast<size_t>(R));
  run_ranks(R, [&](ProcessGroup& g) {
    const size_t r = size_t(g.rank());
    int64_t first = 0;
    for (size_t k = 0; k < r; ++k) first += c.per_rank[k];
    const int64_t N = c.per_rank[r];
    const size_t at = size_t(first) * c.per_sample(), n = size_t(N) * c.per_sample();
    Tensor xt = Tensor::from_vector({N, c.C, c.H, c.W}, std::vector<float>(x.begin() + long(at), x.begin() + long(at + n))).to(dt);
    xt.set_requires_grad(true);
    Tensor w = Tensor::from_vector({c.C}, {1.5f, -0.5f, 0.75f}), b = Tensor::from_vector({c.C}, {0.1f, 0.2f, -0.3f});
    w.set_requires_grad(true), b.set_requires_grad(true);
    Tensor rm = Tensor::from_vector({c.C}, {0.5f, -1.f, 2.f}), rv = Tensor::from_vector({c.C}, {1.f, 2.f, 0.5f});
    Tensor count = Tensor::zeros({});
    Tensor y = sync_batch_norm2d(xt, w, b, rm, rv, true, 0.1f, 1e-5f, &count, g);
    y.backward(Tensor::from_vector(y.shape(), std::vector<float>(dy.begin() + long(at), dy.begin() + long(at + n))).to(dt));
    per[r] = {y.to_vector(), xt.grad().to_vector(), w.grad().to_vector(), b.grad().to_vector(),
              rm.to_vector(), rv.to_vector(),        count.to_vector()};
  });
  BnResult all = per[0];
  for (size_t r = 1; r < per.size(); ++r) {
    all.y.insert(all.y.end(), per[r].y.begin(), per[r].y.end());
    all.dx.insert(all.dx.end(), per[r].dx.begin(), per[r].dx.end());
    for (size_t k = 0; k < all.dw.size(); ++k) all.dw[k] += per[r].dw[k], all.db[k] += per[r].db[k];
    // Every rank holds the same running statistics and counted the batch once.
    CHECK(per[r].rm == per[0].rm);
    CHECK(per[r].rv == per[0].rv);
    CHECK(per[r].count == per[0].count);
  }
  return all;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

}  // namespace

TEST_CASE("sync batch norm: ranks' slices normalised as the whole batch, forward, running statistics and gradients") {
  // float32: a few roundings of the largest value (the statistics are combined in double, dx goes
  // through three kernels instead of one). bfloat16: activations and gradients in bfloat16 (8
  // significant bits), so 4 of its roundings of the largest value.
  struct Precision {
    DType dt;
    double rel;
  };
  for (const Precision p : {Precision{DType::F32, 4e-6}, Precision{DType::BF16, 4 * 0.00390625}}) {
    for (const std::vector<int64_t>& split : {std::vector<int64_t>{2, 2}, std::vector<int64_t>{3, 1},
                                              std::vector<int64_t>{1, 2, 2}, std::vector<int64_t>{5}}) {
      CAPTURE(dtype_name(p.dt));
      CAPTURE(split.size());
      CAPTURE(split[0]);
      BnCase c;
      c.per_rank = split;
      const size_t n = size_t(c.total()) * c.per_sample();
      std::vector<float> x = rand_floats(n, 31, -2, 3), dy = rand_floats(n, 32);
      for (size_t i = 0; i < n; i += 7) x[i] += 4.f;  // a skewed distribution: unequal rank means
      const BnResult want = whole_batch(c, x, dy, p.dt), got = synced(c, x, dy, p.dt);
      check_close(got.y, want.y, p.rel * max_abs(want.y), 0, "y");
      check_close(got.dx, want.dx, p.rel * max_abs(want.dx), 0, "dx");
      check_close(got.dw, want.dw, p.rel * max_abs(want.dw) * 4, 0, "dweight (summed over ranks)");
      check_close(got.db, want.db, p.rel * max_abs(want.db) * 4, 0, "dbias (summed over ranks)");
      check_close(got.rm, want.rm, 1e-6, 1e-6, "running_mean");
      check_close(got.rv, want.rv, 1e-6, 1e-5, "running_var");
      CHECK(got.count == want.count);
    }
  }
}

TEST_CASE("sync batch norm: eval mode is batch norm with the running statistics, and convert_sync_batchnorm") {
  BatchNorm2d bn(3);
  Tensor x = Tensor::from_vector({2, 3, 2, 2}, rand_floats(24, 41));
  run_ranks(2, [&](ProcessGroup& g) {
    if (g.rank() != 0) return;  // rank 0 alone: no collective happens in eval mode
    BatchNorm2d local(3);
    local.eval();
    Tensor rm = local.running_mean, rv = local.running_var;
    const Tensor a = sync_batch_norm2d(x, local.weight, local.bias, rm, rv, false, 0.1f, 1e-5f, nullptr, g);
    const Tensor b = batch_norm2d(x, local.weight, local.bias, rm, rv, false, 0.1f, 1e-5f);
    if (a.to_vector() != b.to_vector()) throw Error("eval mode differs");
  });
  struct Two : Module {
    Two() {
      a = register_module("a", std::make_shared<BatchNorm2d>(3));
      b = register_module("b", std::make_shared<BatchNorm2d>(3));
    }
    std::shared_ptr<BatchNorm2d> a, b;
  } m;
  std::vector<int> changed(2);
  std::vector<bool> linked(2);
  run_ranks(2, [&](ProcessGroup& g) {
    Two mine;
    changed[size_t(g.rank())] = convert_sync_batchnorm(mine, g);
    linked[size_t(g.rank())] = mine.a->sync == &g && mine.b->sync == &g;
  });
  CHECK(changed == std::vector<int>{2, 2});
  CHECK(linked == std::vector<bool>{true, true});
  run_ranks(1, [&](ProcessGroup& g) { CHECK(convert_sync_batchnorm(m, g) == 0); });  // one rank: plain
  CHECK(m.a->sync == nullptr);
}

#ifdef NIMBUS_MPIEXEC
TEST_CASE("process group: a group that fails to start on one rank after MPI is up stops every rank with its message") {
  namespace fs = std::filesystem;
  const std::string program = (fs::read_symlink("/proc/self/exe").parent_path() / "mpi_group_start_failure").string();
  REQUIRE_MESSAGE(fs::exists(program), program, " is not built");
  const test::AppResult r = test::run_program_mpi(2, program, {});
  CHECK(r.exit_code != 0);
  CHECK_MESSAGE(r.output.find("mpi_group_start_failure (rank 0 of 2 (no process group yet)): the group could not "
                              "start on rank 0") != std::string::npos,
                r.output);
  CHECK_MESSAGE(r.output.find("passed the broadcast") == std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("time limit") == std::string::npos, r.output);  // mpirun's --timeout: a hang
}
#endif
