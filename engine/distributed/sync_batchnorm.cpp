// sync_batchnorm.cpp: synchronised batch norm (see sync_batchnorm.h), forward and backward side by
// side, built from the backend's batch-norm kernels and two host collectives.
#include "engine/distributed/sync_batchnorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/nn/layers.h"
#include "engine/ops/accumulate.h"
#include "engine/ops/batchnorm.h"

namespace nimbus {

namespace {

std::vector<double> to_doubles(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  return {v.begin(), v.end()};
}

Tensor channel_tensor(const std::vector<double>& v, Device d) {
  return Tensor::from_vector({int64_t(v.size())}, std::vector<float>(v.begin(), v.end()), d);
}

// The global batch's per-channel count, mean and biased variance from every rank's own.
struct GlobalStats {
  double count = 0;
  std::vector<double> mean, var;
};
GlobalStats combine_ranks(double count, const std::vector<double>& mean, const std::vector<double>& var,
                          ProcessGroup& pg) {
  const size_t C = mean.size(), row = 1 + 2 * C, R = size_t(pg.size());
  std::vector<double> all(R * row, 0.0);  // row r: M_r, mean_r (C), var_r (C); the others' rows zero
  double* mine = all.data() + size_t(pg.rank()) * row;
  mine[0] = count;
  std::copy(mean.begin(), mean.end(), mine + 1);
  std::copy(var.begin(), var.end(), mine + 1 + C);
  pg.all_reduce_sum(all.data(), all.size());  // an all-gather: each element has one non-zero term
  GlobalStats g;
  g.mean.assign(C, 0.0);
  std::vector<double> m2(C, 0.0);  // sum of squared deviations from the running mean
  for (size_t r = 0; r < R; ++r) {  // rank order: the same arithmetic on every rank
    const double* in = all.data() + r * row;
    const double nb = in[0];
    if (nb == 0) continue;
    const double n = g.count + nb;
    for (size_t c = 0; c < C; ++c) {
      const double delta = in[1 + c] - g.mean[c];
      g.mean[c] += delta * nb / n;
      m2[c] += in[1 + C + c] * nb + delta * delta * g.count * nb / n;
    }
    g.count = n;
  }
  g.var.resize(C);
  for (size_t c = 0; c < C; ++c) g.var[c] = m2[c] / g.count;
  return g;
}

}  // namespace

Tensor sync_batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                         Tensor& running_var, bool training, float momentum, float eps, Tensor* num_batches_tracked,
                         ProcessGroup& pg) {
  if (!training) return batch_norm2d(x, weight, bias, running_mean, running_var, false, momentum, eps);
  NIMBUS_CHECK(x.ndim() == 4, "sync_batch_norm2d: input must be (N,C,H,W), got ", x.shape().str());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  NIMBUS_CHECK(N * HW > 1, "sync_batch_norm2d: each rank needs more than 1 value per channel, input ",
               x.shape().str());
  for (const Tensor* t : {&running_mean, &running_var})
    NIMBUS_CHECK(t->defined() && t->shape() == Shape{C} && t->device() == x.device(), "sync_batch_norm2d: input ",
                 describe(x), " with running statistics ", t->defined() ? describe(*t) : std::string("undefined"));
  for (const Tensor* t : {&weight, &bias})
    NIMBUS_CHECK(!t->defined() || (t->shape() == Shape{C} && t->device() == x.device()), "sync_batch_norm2d: input ",
                 describe(x), " with a per-channel parameter ", describe(*t));
  const Device dev = x.device();
  const DType dt = x.dtype();
  const Backend& tables = backend_tables(dev, "sync_batch_norm2d");

  // This rank's statistics (running buffers of its own, untouched at momentum 0; the module's counter +1).
  Tensor mean_r = Tensor::empty({C}, dev), invstd_r = Tensor::empty({C}, dev);
  Tensor scratch_mean = Tensor::zeros({C}, dev), scratch_var = Tensor::ones({C}, dev);
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    tables.of<T>().batchnorm_train_stats(mean_r.data(), invstd_r.data(), scratch_mean.data(), scratch_var.data(),
                                         num_batches_tracked ? num_batches_tracked->data() : nullptr,
                                         x.data_as<T>(), N, C, HW, 0.f, eps);
  });
  std::vector<double> var_r = to_doubles(invstd_r);
  for (double& v : var_r) v = std::max(0.0, 1.0 / (v * v) - double(eps));
  const GlobalStats g = combine_ranks(double(N * HW), to_doubles(mean_r), var_r, pg);

  // The running statistics, from the global batch, identical on every rank.
  std::vector<double> rm = to_doubles(running_mean), rv = to_doubles(running_var), invstd(static_cast<size_t>(C));
  for (size_t c = 0; c < size_t(C); ++c) {
    rm[c] = (1 - double(momentum)) * rm[c] + double(momentum) * g.mean[c];
    rv[c] = (1 - double(momentum)) * rv[c] + double(momentum) * g.var[c] * g.count / (g.count - 1);
    invstd[c] = 1.0 / std::sqrt(g.var[c] + double(eps));
  }
  running_mean.copy_(channel_tensor(rm, dev));
  running_var.copy_(channel_tensor(rv, dev));
  const Tensor mean = channel_tensor(g.mean, dev), inv = channel_tensor(invstd, dev);

  Tensor y = Tensor::empty(x.shape(), dev, dt);
  const float* w = weight.defined() ? weight.data() : nullptr;
  const float* b = bias.defined() ? bias.data() : nullptr;
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    tables.of<T>().batchnorm_forward(y.data_as<T>(), x.data_as<T>(), mean.data(), inv.data(), w, b, N, C, HW, false);
  });
  if (!any_requires_grad({&x, &weight, &bias})) return y;

  const Tensor xs = x.detach(), ws = weight.defined() ? weight.detach() : Tensor();
  const double M = g.count;
  ProcessGroup* group = &pg;
  record("sync_batch_norm2d", {x, weight, bias}, y, {xs, ws}, [=](const Tensor& dy_in, GradSink& sink) {
    const Tensor dy = dy_in.to(dt);
    const Backend& be = backend_tables(dev, "sync_batch_norm2d_backward");
    // This rank's sums (the weight's and bias's own gradients), then the global ones.
    Tensor dw = Tensor::empty({C}, dev), db = Tensor::empty({C}, dev);
    visit_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      be.of<T>().batchnorm_backward(nullptr, dw.data(), db.data(), dy.data_as<T>(), xs.data_as<T>(), mean.data(),
                                    inv.data(), ws.defined() ? ws.data() : nullptr, nullptr, N, C, HW, true);
    });
    if (sink.needs(0)) {
      std::vector<double> sums = to_doubles(dw);  // sum dy * xhat (C), then sum dy (C)
      const std::vector<double> dbv = to_doubles(db);
      sums.insert(sums.end(), dbv.begin(), dbv.end());
      group->all_reduce_sum(sums.data(), sums.size());
      std::vector<double> k_xhat(static_cast<size_t>(C)), k_one(static_cast<size_t>(C));
      for (size_t c = 0; c < size_t(C); ++c) k_xhat[c] = -sums[c] / M, k_one[c] = -sums[size_t(C) + c] / M;
      const Tensor kx = channel_tensor(k_xhat, dev), k1 = channel_tensor(k_one, dev);
      Tensor shifted = Tensor::empty(xs.shape(), dev, dt), dx = Tensor::empty(xs.shape(), dev, dt);
      Tensor unused_w = Tensor::empty({C}, dev), unused_b = Tensor::empty({C}, dev);
      visit_dtype(dt, [&](auto tag) {
        using T = decltype(tag);
        const Kernels<T>& k = be.of<T>();
        // shifted = -xhat * sum dweight / M - sum dbias / M, then dy + shifted, then w * invstd * that.
        k.batchnorm_forward(shifted.data_as<T>(), xs.data_as<T>(), mean.data(), inv.data(), kx.data(), k1.data(), N,
                            C, HW, false);
        k.add_inplace(shifted.data_as<T>(), dy.data_as<T>(), shifted.numel());
        k.batchnorm_backward(dx.data_as<T>(), unused_w.data(), unused_b.data(), shifted.data_as<T>(), xs.data_as<T>(),
                             mean.data(), inv.data(), ws.defined() ? ws.data() : nullptr, nullptr, N, C, HW, false);
      });
      sink.set(0, dx);
    }
    if (sink.needs(1)) sink.set(1, dw);
    if (sink.needs(2)) sink.set(2, db);
  });
  return y;
}

int convert_sync_batchnorm(Module& m, ProcessGroup& pg) {
  int changed = 0;
  if (auto* bn = dynamic_cast<BatchNorm2d*>(&m)) {
    bn->sync = pg.size() > 1 ? &pg : nullptr;
    changed += pg.size() > 1;
  }
  for (const auto& [name, child] : m.children()) changed += convert_sync_batchnorm(*child, pg);
  return changed;
}

}  // namespace nimbus
