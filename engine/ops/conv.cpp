// conv.cpp: the conv2d autograd op (and conv2d_relu, the same with a fused
// ReLU): shape checks, the forward kernels, and right below it the backward
// (dx, dw, db, each only when asked for).
#include "engine/ops/conv.h"

#include <algorithm>
#include <tuple>
#include <type_traits>

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/ops/batchnorm.h"
#include "engine/ops/cast.h"
#include "engine/backend.h"

namespace nimbus {

namespace {
ConvGeom check_conv(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int padding) {
  NIMBUS_CHECK(x.defined() && w.defined(), "conv2d: input and weight must be defined");
  NIMBUS_CHECK(x.ndim() == 4, "conv2d: input ", x.shape().str(), " must be 4-D (N,C,H,W)");
  NIMBUS_CHECK(w.ndim() == 4, "conv2d: weight ", w.shape().str(), " must be 4-D (K,C,R,S)");
  NIMBUS_CHECK(stride >= 1 && padding >= 0, "conv2d: stride ", stride, " must be >= 1 and padding ", padding,
               " >= 0");
  NIMBUS_CHECK(x.size(1) == w.size(1), "conv2d: input ", x.shape().str(), " has ", x.size(1),
               " channels but weight ", w.shape().str(), " expects ", w.size(1));
  NIMBUS_CHECK(w.size(2) <= x.size(2) + 2 * padding && w.size(3) <= x.size(3) + 2 * padding, "conv2d: kernel ",
               w.size(2), "x", w.size(3), " of weight ", w.shape().str(), " is larger than input ", x.shape().str(),
               " with padding ", padding);
  NIMBUS_CHECK(w.size(0) > 0 && w.size(2) > 0 && w.size(3) > 0, "conv2d: empty weight ", w.shape().str());
  NIMBUS_CHECK(x.device() == w.device(), "conv2d: input ", describe(x), " and weight ", describe(w),
               " are on different devices");
  if (b.defined()) {
    NIMBUS_CHECK(b.ndim() == 1 && b.size(0) == w.size(0), "conv2d: bias ", b.shape().str(), " does not match weight ",
                 w.shape().str(), " (expected (", w.size(0), "))");
    NIMBUS_CHECK(b.device() == x.device(), "conv2d: bias ", describe(b), " and input ", describe(x),
                 " are on different devices");
  }
  return {x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), w.size(2), w.size(3), stride, padding};
}
}  // namespace

namespace {
// The convolution's gradients into sink slots 0, 1, 2 (dx, dw, db; each only when needed) from dy,
// in dtype dt, on `bop`'s kernels (one op boundary for the profiler). `pre(kernels, dy)` may first
// replace dy (the ReLU's mask, the residual's scale), with the typed kernels of dt.
template <typename Pre>
void conv_grads(const char* bop, const Tensor& dy_in, const Tensor& x_saved, const Tensor& w_saved, const ConvGeom& g,
                bool has_bias, DType dt, GradSink& sink, Pre pre) {
  if (!sink.needs(0) && !sink.needs(1) && !(has_bias && sink.needs(2))) return;
  const Device dev = dy_in.device();
  Tensor dy = dy_in.to(dt);
  Tensor dx, dw, db;
  if (sink.needs(0)) dx = Tensor::empty({g.N, g.C, g.H, g.W}, dev, dt);
  if (sink.needs(1)) dw = Tensor::empty({g.K, g.C, g.R, g.S}, dev, dt);
  if (has_bias && sink.needs(2)) db = Tensor::empty({g.K}, dev, dt);
  const Backend& be = backend_tables(dev, bop);
  Tensor ws = Tensor::empty({std::max<int64_t>(be.f32.conv2d_workspace(g), 1)}, dev);
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const Kernels<T>& bb = be.of<T>();
    pre(bb, dy);
    bb.conv2d_backward(dx.defined() ? dx.data_as<T>() : nullptr, dw.defined() ? dw.data_as<T>() : nullptr,
                       db.defined() ? db.data_as<T>() : nullptr, dy.data_as<T>(),
                       dw.defined() ? x_saved.data_as<T>() : nullptr, dx.defined() ? w_saved.data_as<T>() : nullptr, g,
                       ws.data());
  });
  if (dx.defined()) sink.set(0, dx);
  if (dw.defined()) sink.set(1, dw);
  if (db.defined()) sink.set(2, db);
}

// What conv2d_bn_stats asks of the forward besides y: batch-norm statistics of y.
struct BnStatsOut {
  Tensor &mean, &invstd, &running_mean, &running_var;
  Tensor* num_batches_tracked;
  float momentum, eps;
};

// conv2d, then ReLU when `relu` (each backend fuses it where its kernel allows: the CPU's direct
// path applies it as the output is stored); with `bn`, no ReLU and y's batch-norm statistics too.
Tensor conv2d_impl(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, int stride, int padding, bool relu,
                   const BnStatsOut* bn = nullptr) {
  const ConvGeom g = check_conv(x_in, w_in, b_in, stride, padding);
  // Under a bfloat16 autocast scope the operands are cast (recorded: gradients return in float32).
  const Tensor x = autocast_matmul(x_in), w = autocast_matmul(w_in), b = autocast_matmul(b_in);
  NIMBUS_CHECK(w.dtype() == x.dtype() && (!b.defined() || b.dtype() == x.dtype()), "conv2d: input ", describe(x),
               ", weight ", describe(w), b.defined() ? str(" and bias ", describe(b)) : std::string(),
               " must have one dtype");
  const DType dt = x.dtype();
  const char* op = bn ? "conv2d_bn_stats" : relu ? "conv2d_relu" : "conv2d";
  Tensor y = Tensor::empty({g.N, g.K, g.P(), g.Q()}, x.device(), dt);
  const Backend& be = backend_tables(x.device(), op);  // once: one op boundary for the profiler
  // The workspace is float32 in every dtype (the float kernels' im2col columns).
  const int64_t ws_floats = bn ? be.f32.conv2d_bn_workspace(g) : be.f32.conv2d_workspace(g);
  Tensor ws = Tensor::empty({std::max<int64_t>(ws_floats, 1)}, x.device());
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* bias = b.defined() ? b.data_as<T>() : nullptr;
    if (!bn)
      return be.of<T>().conv2d_forward(y.data_as<T>(), x.data_as<T>(), w.data_as<T>(), bias, g, ws.data(), relu);
    be.of<T>().conv2d_forward_bn_stats(y.data_as<T>(), x.data_as<T>(), w.data_as<T>(), bias, g, ws.data(),
                                       bn->mean.data(), bn->invstd.data(), bn->running_mean.data(),
                                       bn->running_var.data(),
                                       bn->num_batches_tracked ? bn->num_batches_tracked->data() : nullptr,
                                       bn->momentum, bn->eps);
  });

  // Save only what backward can use: x for dw, w for dx, y for the ReLU's mask.
  Tensor x_saved = w.requires_grad() ? x.detach() : Tensor();
  Tensor w_saved = x.requires_grad() ? w.detach() : Tensor();
  Tensor y_saved = relu ? y.detach() : Tensor();
  const bool has_bias = b.defined();
  record(op, {x, w, b}, y, {x_saved, w_saved, y_saved},
         [x_saved, w_saved, y_saved, g, has_bias, relu, dt](const Tensor& dy_in, GradSink& sink) {
    conv_grads(relu ? "conv2d_relu_backward" : "conv2d_backward", dy_in, x_saved, w_saved, g, has_bias, dt, sink,
               [&](const auto& bb, Tensor& dy) {
                 if (!relu) return;  // through the ReLU first: dy * (y > 0)
                 using T = typename std::decay_t<decltype(bb)>::T;
                 Tensor masked = Tensor::empty(dy.shape(), dy.device(), dt);
                 bb.relu_backward(masked.data_as<T>(), dy.data_as<T>(), y_saved.data_as<T>(), dy.numel());
                 dy = masked;
               });
  });
  return y;
}
}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int padding) {
  return conv2d_impl(x, w, b, stride, padding, false);
}

Tensor conv2d_residual(const Tensor& x_in, const Tensor& w_in, const Tensor& b_in, const Tensor& r_in, float s,
                       int stride, int padding) {
  const ConvGeom g = check_conv(x_in, w_in, b_in, stride, padding);
  NIMBUS_CHECK(r_in.defined() && r_in.shape() == Shape({g.N, g.K, g.P(), g.Q()}), "conv2d_residual: residual ",
               r_in.defined() ? describe(r_in) : std::string("(undefined)"), " must have the output's shape (", g.N,
               ",", g.K, ",", g.P(), ",", g.Q(), ")");
  NIMBUS_CHECK(r_in.device() == x_in.device(), "conv2d_residual: residual ", describe(r_in), " and input ",
               describe(x_in), " are on different devices");
  const Tensor x = autocast_matmul(x_in), w = autocast_matmul(w_in), b = autocast_matmul(b_in);
  NIMBUS_CHECK(w.dtype() == x.dtype() && (!b.defined() || b.dtype() == x.dtype()), "conv2d_residual: input ",
               describe(x), ", weight ", describe(w), " must have one dtype");
  const DType dt = x.dtype();
  // The residual in the convolution's dtype: a recorded cast under autocast, else it must match.
  NIMBUS_CHECK(r_in.dtype() == dt || autocast_dtype() == DType::BF16, "conv2d_residual: residual ", describe(r_in),
               " and input ", describe(x), " must have one dtype");
  const Tensor r = cast(r_in, dt);
  Tensor y = Tensor::empty({g.N, g.K, g.P(), g.Q()}, x.device(), dt);
  const Backend& be = backend_tables(x.device(), "conv2d_residual");
  Tensor ws = Tensor::empty({std::max<int64_t>(be.f32.conv2d_workspace(g), 1)}, x.device());
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    be.of<T>().conv2d_residual_forward(y.data_as<T>(), x.data_as<T>(), w.data_as<T>(),
                                       b.defined() ? b.data_as<T>() : nullptr, r.data_as<T>(), s, g, ws.data());
  });
  Tensor x_saved = w.requires_grad() ? x.detach() : Tensor();
  Tensor w_saved = x.requires_grad() ? w.detach() : Tensor();
  const bool has_bias = b.defined();
  record("conv2d_residual", {x, w, b, r}, y, {x_saved, w_saved},
         [x_saved, w_saved, g, has_bias, s, dt](const Tensor& dy_in, GradSink& sink) {
           if (sink.needs(3)) sink.set(3, dy_in.to(dt));  // dL/dr = dL/dy
           conv_grads("conv2d_residual_backward", dy_in, x_saved, w_saved, g, has_bias, dt, sink,
                      [&](const auto& bb, Tensor& dy) {  // s dy, through the convolution
                        using T = typename std::decay_t<decltype(bb)>::T;
                        Tensor scaled = Tensor::empty(dy.shape(), dy.device(), dt);
                        bb.scale(scaled.data_as<T>(), dy.data_as<T>(), s, dy.numel());
                        dy = scaled;
                      });
         });
  return y;
}

Tensor conv2d_relu(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int padding) {
  return conv2d_impl(x, w, b, stride, padding, true);
}

namespace {
// What conv2d_bn_stats and bn_relu_conv2d_bn_stats check of their batch norm, named as `op`, before
// anything is updated; then mean and invstd are made (K) float32 on x's device.
void check_bn_out(const char* op, const ConvGeom& g, const Tensor& x, Tensor& mean, Tensor& invstd,
                  const Tensor& running_mean, const Tensor& running_var, const Tensor* num_batches_tracked) {
  NIMBUS_CHECK(g.N * g.P() * g.Q() > 1, op, ": batch_norm2d training needs more than 1 value per channel, conv2d ",
               "output (", g.N, ",", g.K, ",", g.P(), ",", g.Q(), ")");
  const int64_t K = g.K;
  for (const Tensor* t : {&running_mean, &running_var})
    NIMBUS_CHECK(t->defined() && t->shape() == Shape{K} && t->dtype() == DType::F32 && t->device() == x.device(),
                 op, ": running statistics ", t->defined() ? describe(*t) : std::string("(undefined)"),
                 " must be float32 (", K, ") on the input's device ", describe(x));
  NIMBUS_CHECK(!num_batches_tracked || (num_batches_tracked->defined() && num_batches_tracked->numel() == 1 &&
                                        num_batches_tracked->device() == x.device()),
               op, ": num_batches_tracked must be a one-element tensor on the input's device");
  mean = Tensor::empty({K}, x.device());
  invstd = Tensor::empty({K}, x.device());
}
}  // namespace

Tensor conv2d_bn_stats(const Tensor& x, const Tensor& w, const Tensor& b, int stride, int padding, Tensor& mean,
                       Tensor& invstd, Tensor& running_mean, Tensor& running_var, float momentum, float eps,
                       Tensor* num_batches_tracked) {
  const ConvGeom g = check_conv(x, w, b, stride, padding);
  check_bn_out("conv2d_bn_stats", g, x, mean, invstd, running_mean, running_var, num_batches_tracked);
  const BnStatsOut bn{mean, invstd, running_mean, running_var, num_batches_tracked, momentum, eps};
  return conv2d_impl(x, w, b, stride, padding, false, &bn);
}

// The forward reads relu(batch_norm(x)) through the kernel's prologue and keeps x, not that activation;
// the backward makes the activation again (batchnorm_forward: the bits the forward read), then runs
// conv2d's backward on it and batch_norm2d_relu's training backward: the same kernels, on the same
// values, as the three ops this one replaces (conv_bn_chain's test compares every bit).
Tensor bn_relu_conv2d_bn_stats(const Tensor& x_in, const Tensor& in_weight, const Tensor& in_bias,
                               const Tensor& in_mean, const Tensor& in_invstd, const Tensor& w_in, const Tensor& b_in,
                               int stride, int padding, Tensor& mean, Tensor& invstd, Tensor& running_mean,
                               Tensor& running_var, float momentum, float eps, Tensor* num_batches_tracked) {
  const char* op = "bn_relu_conv2d_bn_stats";
  const ConvGeom g = check_conv(x_in, w_in, b_in, stride, padding);
  for (const auto& [t, name, optional] : {std::tuple{&in_weight, "in_weight", true}, {&in_bias, "in_bias", true},
                                          {&in_mean, "in_mean", false}, {&in_invstd, "in_invstd", false}}) {
    if (!t->defined() && optional) continue;
    NIMBUS_CHECK(t->defined() && t->shape() == Shape{g.C} && t->dtype() == DType::F32 && t->device() == x_in.device(),
                 op, ": ", name, " ", t->defined() ? describe(*t) : std::string("(undefined)"), " must be float32 (",
                 g.C, ") on the input's device ", describe(x_in));
  }
  NIMBUS_CHECK(g.N * g.H * g.W > 1, op, ": the input's batch norm needs more than 1 value per channel, input ",
               x_in.shape().str());
  check_bn_out(op, g, x_in, mean, invstd, running_mean, running_var, num_batches_tracked);
  const Tensor x = autocast_matmul(x_in), w = autocast_matmul(w_in), b = autocast_matmul(b_in);
  if (x.dtype() != x_in.dtype()) {
    // Autocast would round x before the batch norm, where the two ops round its output: keep theirs.
    const Tensor a = batch_norm2d_from_stats(x_in, in_weight, in_bias, in_mean, in_invstd, true);
    return conv2d_bn_stats(a, w_in, b_in, stride, padding, mean, invstd, running_mean, running_var, momentum, eps,
                           num_batches_tracked);
  }
  NIMBUS_CHECK(w.dtype() == x.dtype() && (!b.defined() || b.dtype() == x.dtype()), op, ": input ", describe(x),
               ", weight ", describe(w), b.defined() ? str(" and bias ", describe(b)) : std::string(),
               " must have one dtype");
  const DType dt = x.dtype();
  const Device dev = x.device();
  Tensor y = Tensor::empty({g.N, g.K, g.P(), g.Q()}, dev, dt);
  const Backend& be = backend_tables(dev, op);
  Tensor ws = Tensor::empty({std::max<int64_t>(be.f32.conv2d_bn_workspace(g), 1)}, dev);
  const float* iw = in_weight.defined() ? in_weight.data() : nullptr;
  const float* ib = in_bias.defined() ? in_bias.data() : nullptr;
  visit_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    be.of<T>().bnrelu_conv2d_forward_bn_stats(y.data_as<T>(), x.data_as<T>(), in_mean.data(), in_invstd.data(), iw, ib,
                                              w.data_as<T>(), b.defined() ? b.data_as<T>() : nullptr, g, ws.data(),
                                              mean.data(), invstd.data(), running_mean.data(), running_var.data(),
                                              num_batches_tracked ? num_batches_tracked->data() : nullptr, momentum,
                                              eps);
  });

  if (!any_requires_grad({&x, &in_weight, &in_bias, &w, &b})) return y;
  const Tensor xs = x.detach(), ws_saved = w.detach(), m = in_mean.detach(), is = in_invstd.detach();
  const Tensor iws = in_weight.defined() ? in_weight.detach() : Tensor();
  const Tensor ibs = in_bias.defined() ? in_bias.detach() : Tensor();
  const bool has_bias = b.defined();
  record(op, {x, in_weight, in_bias, w, b}, y, {xs, ws_saved, m, is, iws, ibs},
         [=](const Tensor& dy_in, GradSink& sink) {
    const bool through_bn = sink.needs(0) || sink.needs(1) || sink.needs(2);
    const bool need_dw = sink.needs(3), need_db = has_bias && sink.needs(4);
    if (!through_bn && !need_dw && !need_db) return;
    const Tensor dy = dy_in.to(dt);
    const int64_t N = g.N, C = g.C, HW = g.H * g.W;
    const bool remake = through_bn || need_dw;  // the bias gradient alone needs only dy
    Tensor a = remake ? Tensor::empty(xs.shape(), dev, dt) : Tensor();
    Tensor da = through_bn ? Tensor::empty(xs.shape(), dev, dt) : Tensor();
    Tensor dw = need_dw ? Tensor::empty(ws_saved.shape(), dev, dt) : Tensor();
    Tensor db = need_db ? Tensor::empty({g.K}, dev, dt) : Tensor();
    Tensor dx = sink.needs(0) ? Tensor::empty(xs.shape(), dev, dt) : Tensor();
    Tensor dgw = Tensor::empty({C}, dev), dgb = Tensor::empty({C}, dev);
    const float* gw = iws.defined() ? iws.data() : nullptr;
    const Backend& bb = backend_tables(dev, "bn_relu_conv2d_bn_stats_backward");
    Tensor cws = Tensor::empty({std::max<int64_t>(bb.f32.conv2d_workspace(g), 1)}, dev);
    visit_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      const Kernels<T>& k = bb.of<T>();
      if (remake)
        k.batchnorm_forward(a.data_as<T>(), xs.data_as<T>(), m.data(), is.data(), gw,
                            ibs.defined() ? ibs.data() : nullptr, N, C, HW, true);
      k.conv2d_backward(through_bn ? da.data_as<T>() : nullptr, need_dw ? dw.data_as<T>() : nullptr,
                        need_db ? db.data_as<T>() : nullptr, dy.data_as<T>(), need_dw ? a.data_as<T>() : nullptr,
                        through_bn ? ws_saved.data_as<T>() : nullptr, g, cws.data());
      if (through_bn)
        k.batchnorm_backward(dx.defined() ? dx.data_as<T>() : nullptr, dgw.data(), dgb.data(), da.data_as<T>(),
                             xs.data_as<T>(), m.data(), is.data(), gw, a.data_as<T>(), N, C, HW, true);
    });
    if (sink.needs(0)) sink.set(0, dx);
    if (sink.needs(1)) sink.set(1, dgw);
    if (sink.needs(2)) sink.set(2, dgb);
    if (need_dw) sink.set(3, dw);
    if (need_db) sink.set(4, db);
  });
  return y;
}

}  // namespace nimbus
