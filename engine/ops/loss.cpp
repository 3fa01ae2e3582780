// loss.cpp: the losses and softmax; each loss returns a 0-d tensor and records
// its backward right below the forward (maths in loss.h, kernels in kernels/cpu/loss.*).
#include "engine/ops/loss.h"

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/backend.h"
#include "kernels/common/class_index.h"

namespace nimbus {

namespace {
void check_defined(const char* op, const Tensor& t, const char* name) {
  NIMBUS_CHECK(t.defined(), op, ": ", name, " is undefined");
}

void check_same_device(const char* op, const Tensor& a, const char* an, const Tensor& b, const char* bn) {
  NIMBUS_CHECK(a.device() == b.device(), op, ": ", an, " ", describe(a), " and ", bn, " ", describe(b),
               " are on different devices");
}

// The 0-d loss on the device of `like`, written by `forward(backend, loss, scratch)` with scratch of
// loss_scratch_floats(n) floats.
template <typename Forward>
Tensor device_loss(const char* op, const Tensor& like, int64_t n, Forward forward) {
  const Kernels<float>& be = backend(like.device(), op);
  Tensor loss = Tensor::empty(Shape{}, like.device());
  Tensor scratch = Tensor::empty({be.loss_scratch_floats(n)}, like.device());
  forward(be, loss.data(), scratch.data());
  return loss;
}

void check_same_shape(const char* op, const Tensor& a, const char* an, const Tensor& b, const char* bn) {
  check_defined(op, a, an);
  check_defined(op, b, bn);
  check_same_device(op, a, an, b, bn);
  NIMBUS_CHECK(a.shape() == b.shape(), op, ": ", an, " ", a.shape().str(), " and ", bn, " ", b.shape().str(),
               " must have the same shape");
  NIMBUS_CHECK(a.numel() > 0, op, ": empty input ", a.shape().str());
}

void check_logits(const char* op, const Tensor& logits) {
  check_defined(op, logits, "logits");
  NIMBUS_CHECK(logits.ndim() == 2 && logits.size(0) > 0 && logits.size(1) > 0, op,
               ": logits must be (N,K) with N, K > 0, got ", logits.shape().str());
}

// Records a pointwise loss: dL/dpred = kernel(g), dL/dtarget = -dL/dpred.
// bwd picks the backend's kernel (l1_backward or mse_backward).
using PointwiseBackward = decltype(Kernels<float>::l1_backward);
void record_pointwise_loss(const char* op, const Tensor& pred, const Tensor& target, Tensor& loss,
                           PointwiseBackward Kernels<float>::*bwd) {
  if (!any_requires_grad({&pred, &target})) return;
  Tensor p = pred.detach(), t = target.detach();
  record(op, {pred, target}, loss, {p, t}, [op, p, t, bwd](const Tensor& dy, GradSink& sink) {
    const Kernels<float>& be = backend(p.device(), op);
    Tensor dp = Tensor::empty(p.shape(), p.device());
    (be.*bwd)(dp.data(), p.data(), t.data(), dy.data(), p.numel());  // dy stays on the device
    if (sink.needs(1)) {
      Tensor dt = Tensor::empty(p.shape(), p.device());
      be.scale(dt.data(), dp.data(), -1.f, dp.numel());
      sink.set(1, dt);
    }
    if (sink.needs(0)) sink.set(0, dp);
  });
}

// A pointwise loss (L1, MSE): the backend's forward gives the mean over all elements; its backward
// is recorded as above.
using PointwiseForward = decltype(Kernels<float>::l1_forward);
Tensor pointwise_loss(const char* op, const Tensor& pred, const Tensor& target, PointwiseForward Kernels<float>::*fwd,
                      PointwiseBackward Kernels<float>::*bwd) {
  check_same_shape(op, pred, "pred", target, "target");
  const int64_t n = pred.numel();
  Tensor loss = device_loss(op, pred, n, [&](const Kernels<float>& be, float* l, float* s) {
    (be.*fwd)(l, pred.data(), target.data(), n, s);
  });
  record_pointwise_loss(op, pred, target, loss, bwd);
  return loss;
}
}  // namespace

// Losses and softmax compute in float32: under a bfloat16 autocast scope their bfloat16 inputs are
// cast (recorded), so the gradient returns in bfloat16 to the layer that made them.
Tensor softmax(const Tensor& logits_in) {
  const Tensor logits = autocast_float(logits_in);
  check_logits("softmax", logits);
  Tensor y = Tensor::empty(logits.shape(), logits.device());
  backend(logits.device(), "softmax").softmax_forward(y.data(), logits.data(), logits.size(0), logits.size(1));
  return y;
}

Tensor cross_entropy(const Tensor& logits_in, const Tensor& target) {
  const Tensor logits = autocast_float(logits_in);
  check_logits("cross_entropy", logits);
  check_defined("cross_entropy", target, "target");
  check_same_device("cross_entropy", logits, "logits", target, "target");
  const int64_t N = logits.size(0), K = logits.size(1);
  NIMBUS_CHECK(target.shape() == Shape{N}, "cross_entropy: logits ", logits.shape().str(), " need target (", N,
               ") but target is ", target.shape().str());
  // Host-side targets are validated here, with the row in the message. A device-side target is not
  // read back (that would make the host wait for the whole forward): the kernels give a row whose
  // target is no class index a NaN loss term (kernels/common/class_index.h), so the loss is NaN.
  if (target.device() == Device::CPU) {
    const float* t = target.data();
    for (int64_t n = 0; n < N; ++n)
      NIMBUS_CHECK(is_class_index(t[n], K), "cross_entropy: target[", n, "] = ", t[n], " is not a class index in [0, ",
                   K, ")");
  }
  Tensor prob = Tensor::empty(logits.shape(), logits.device());
  Tensor loss = device_loss("cross_entropy", logits, N, [&](const Kernels<float>& be, float* l, float* s) {
    be.cross_entropy_forward(l, prob.data(), logits.data(), target.data(), N, K, s);
  });
  if (!any_requires_grad({&logits})) return loss;
  Tensor ts = target.detach();
  record("cross_entropy", {logits}, loss, {ts}, [prob, ts, N, K](const Tensor& dy, GradSink& sink) {
    Tensor dl = Tensor::empty(prob.shape(), prob.device());
    backend(prob.device(), "cross_entropy_backward")
        .cross_entropy_backward(dl.data(), prob.data(), ts.data(), dy.data(), N, K);
    sink.set(0, dl);
  });
  return loss;
}

Tensor l1_loss(const Tensor& pred, const Tensor& target) {
  return pointwise_loss("l1_loss", autocast_float(pred), autocast_float(target), &Kernels<float>::l1_forward, &Kernels<float>::l1_backward);
}

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  return pointwise_loss("mse_loss", autocast_float(pred), autocast_float(target), &Kernels<float>::mse_forward, &Kernels<float>::mse_backward);
}

Tensor carl_loss(const Tensor& pred_in, const Tensor& target_in, const Tensor& cloudy_in, const Tensor& mask_in,
                 float lambda) {
  const Tensor pred = autocast_float(pred_in), target = autocast_float(target_in);
  const Tensor cloudy_input = autocast_float(cloudy_in), mask = autocast_float(mask_in);
  check_same_shape("carl_loss", pred, "pred", target, "target");
  check_same_shape("carl_loss", pred, "pred", cloudy_input, "cloudy_input");
  check_defined("carl_loss", mask, "mask");
  check_same_device("carl_loss", pred, "pred", mask, "mask");
  NIMBUS_CHECK(pred.ndim() == 4, "carl_loss: pred must be (N,C,H,W), got ", pred.shape().str());
  const int64_t N = pred.size(0), C = pred.size(1), HW = pred.size(2) * pred.size(3);
  NIMBUS_CHECK(mask.shape() == (Shape{N, 1, pred.size(2), pred.size(3)}), "carl_loss: mask ", mask.shape().str(),
               " must be (N,1,H,W) = (", N, ",1,", pred.size(2), ",", pred.size(3), ") for pred ", pred.shape().str());
  Tensor loss = device_loss("carl_loss", pred, N * C * HW, [&](const Kernels<float>& be, float* l, float* s) {
    be.carl_forward(l, pred.data(), target.data(), cloudy_input.data(), mask.data(), lambda, N, C, HW, s);
  });
  if (!any_requires_grad({&pred})) return loss;  // the gradient flows to pred only
  Tensor p = pred.detach(), t = target.detach(), ci = cloudy_input.detach(), m = mask.detach();
  record("carl_loss", {pred}, loss, {p, t, ci, m}, [=](const Tensor& dy, GradSink& sink) {
    Tensor dp = Tensor::empty(p.shape(), p.device());
    backend(p.device(), "carl_loss_backward")
        .carl_backward(dp.data(), p.data(), t.data(), ci.data(), m.data(), lambda, dy.data(), N, C, HW);
    sink.set(0, dp);
  });
  return loss;
}

}  // namespace nimbus
