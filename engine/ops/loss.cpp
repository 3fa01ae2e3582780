// loss.cpp: the losses and softmax; each loss returns a 0-d tensor and records
// its backward right below the forward (maths in loss.h, kernels in kernels/cpu/loss.*).
#include "engine/ops/loss.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/cuda_ops.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/loss.h"

namespace nimbus {

namespace {
void check_defined(const char* op, const Tensor& t, const char* name) {
  NIMBUS_CHECK(t.defined(), op, ": ", name, " is undefined");
}

void check_same_device(const char* op, const Tensor& a, const char* an, const Tensor& b, const char* bn) {
  NIMBUS_CHECK(a.device() == b.device(), op, ": ", an, " ", describe(a), " and ", bn, " ", describe(b),
               " are on different devices");
}

// The 0-d loss on `dev`: a CPU scalar, or on CUDA a device float written by `forward(loss, scratch)`
// with scratch of loss_scratch_floats(n) floats.
template <typename Forward>
Tensor cuda_loss(const char* op, const Tensor& like, int64_t n, Forward forward) {
  const CudaOps& cu = cuda_ops(op);
  Tensor loss = Tensor::empty(Shape{}, like.device());
  Tensor scratch = Tensor::empty({cu.loss_scratch_floats(n)}, like.device());
  forward(cu, loss.data(), scratch.data());
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
// bwd is the CPU or the CUDA kernel, matching pred's device.
using PointwiseBackward = void (*)(float* dp, const float* p, const float* t, float g, int64_t n);
void record_pointwise_loss(const char* op, const Tensor& pred, const Tensor& target, Tensor& loss,
                           PointwiseBackward bwd) {
  if (!any_requires_grad({&pred, &target})) return;
  Tensor p = pred.detach(), t = target.detach();
  record(op, {pred, target}, loss, [op, p, t, bwd](const Tensor& dy, GradSink& sink) {
    Tensor dp = Tensor::empty(p.shape(), p.device());
    bwd(dp.data(), p.data(), t.data(), dy.item(), p.numel());
    if (sink.needs(1)) {
      Tensor dt = Tensor::empty(p.shape(), p.device());
      (p.is_cpu() ? cpu::scale<float> : cuda_ops(op).scale)(dt.data(), dp.data(), -1.f, dp.numel());
      sink.set(1, dt);
    }
    if (sink.needs(0)) sink.set(0, dp);
  });
}
}  // namespace

Tensor softmax(const Tensor& logits) {
  check_logits("softmax", logits);
  Tensor y = Tensor::empty(logits.shape(), logits.device());
  (logits.is_cpu() ? cpu::softmax_forward<float> : cuda_ops("softmax").softmax_forward)(
      y.data(), logits.data(), logits.size(0), logits.size(1));
  return y;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target) {
  check_logits("cross_entropy", logits);
  check_defined("cross_entropy", target, "target");
  check_same_device("cross_entropy", logits, "logits", target, "target");
  const int64_t N = logits.size(0), K = logits.size(1);
  NIMBUS_CHECK(target.shape() == Shape{N}, "cross_entropy: logits ", logits.shape().str(), " need target (", N,
               ") but target is ", target.shape().str());
  const bool on_cpu = logits.is_cpu();
  const std::vector<float> t_host = on_cpu ? std::vector<float>() : target.to_vector();  // validated on the host
  const float* t = on_cpu ? target.data() : t_host.data();
  for (int64_t n = 0; n < N; ++n)  // written so that NaN fails too
    NIMBUS_CHECK(t[n] >= 0 && t[n] < float(K) && t[n] == std::floor(t[n]), "cross_entropy: target[", n, "] = ", t[n],
                 " is not a class index in [0, ", K, ")");
  Tensor prob = Tensor::empty(logits.shape(), logits.device());
  Tensor loss = on_cpu ? Tensor::scalar(cpu::cross_entropy_forward(prob.data(), logits.data(), t, N, K))
                       : cuda_loss("cross_entropy", logits, N, [&](const CudaOps& cu, float* l, float* s) {
                           cu.cross_entropy_forward(l, prob.data(), logits.data(), target.data(), N, K, s);
                         });
  if (!any_requires_grad({&logits})) return loss;
  Tensor ts = target.detach();
  record("cross_entropy", {logits}, loss, [prob, ts, N, K](const Tensor& dy, GradSink& sink) {
    Tensor dl = Tensor::empty(prob.shape(), prob.device());
    (prob.is_cpu() ? cpu::cross_entropy_backward<float> : cuda_ops("cross_entropy").cross_entropy_backward)(
        dl.data(), prob.data(), ts.data(), dy.item(), N, K);
    sink.set(0, dl);
  });
  return loss;
}

Tensor l1_loss(const Tensor& pred, const Tensor& target) {
  check_same_shape("l1_loss", pred, "pred", target, "target");
  const int64_t n = pred.numel();
  if (!pred.is_cpu()) {
    Tensor loss = cuda_loss("l1_loss", pred, n, [&](const CudaOps& cu, float* l, float* s) {
      cu.l1_forward(l, pred.data(), target.data(), n, s);
    });
    record_pointwise_loss("l1_loss", pred, target, loss, cuda_ops("l1_loss").l1_backward);
    return loss;
  }
  Tensor loss = Tensor::scalar(cpu::l1_forward(pred.data(), target.data(), pred.numel()));
  record_pointwise_loss("l1_loss", pred, target, loss, cpu::l1_backward<float>);
  return loss;
}

Tensor mse_loss(const Tensor& pred, const Tensor& target) {
  check_same_shape("mse_loss", pred, "pred", target, "target");
  const int64_t n = pred.numel();
  if (!pred.is_cpu()) {
    Tensor loss = cuda_loss("mse_loss", pred, n, [&](const CudaOps& cu, float* l, float* s) {
      cu.mse_forward(l, pred.data(), target.data(), n, s);
    });
    record_pointwise_loss("mse_loss", pred, target, loss, cuda_ops("mse_loss").mse_backward);
    return loss;
  }
  Tensor loss = Tensor::scalar(cpu::mse_forward(pred.data(), target.data(), pred.numel()));
  record_pointwise_loss("mse_loss", pred, target, loss, cpu::mse_backward<float>);
  return loss;
}

Tensor carl_loss(const Tensor& pred, const Tensor& target, const Tensor& cloudy_input, const Tensor& mask,
                 float lambda) {
  check_same_shape("carl_loss", pred, "pred", target, "target");
  check_same_shape("carl_loss", pred, "pred", cloudy_input, "cloudy_input");
  check_defined("carl_loss", mask, "mask");
  check_same_device("carl_loss", pred, "pred", mask, "mask");
  NIMBUS_CHECK(pred.ndim() == 4, "carl_loss: pred must be (N,C,H,W), got ", pred.shape().str());
  const int64_t N = pred.size(0), C = pred.size(1), HW = pred.size(2) * pred.size(3);
  NIMBUS_CHECK(mask.shape() == (Shape{N, 1, pred.size(2), pred.size(3)}), "carl_loss: mask ", mask.shape().str(),
               " must be (N,1,H,W) = (", N, ",1,", pred.size(2), ",", pred.size(3), ") for pred ", pred.shape().str());
  Tensor loss =
      pred.is_cpu()
          ? Tensor::scalar(
                cpu::carl_forward(pred.data(), target.data(), cloudy_input.data(), mask.data(), lambda, N, C, HW))
          : cuda_loss("carl_loss", pred, N * C * HW, [&](const CudaOps& cu, float* l, float* s) {
              cu.carl_forward(l, pred.data(), target.data(), cloudy_input.data(), mask.data(), lambda, N, C, HW, s);
            });
  if (!any_requires_grad({&pred})) return loss;  // the gradient flows to pred only
  Tensor p = pred.detach(), t = target.detach(), ci = cloudy_input.detach(), m = mask.detach();
  record("carl_loss", {pred}, loss, [=](const Tensor& dy, GradSink& sink) {
    Tensor dp = Tensor::empty(p.shape(), p.device());
    (p.is_cpu() ? cpu::carl_backward<float> : cuda_ops("carl_loss").carl_backward)(
        dp.data(), p.data(), t.data(), ci.data(), m.data(), lambda, dy.item(), N, C, HW);
    sink.set(0, dp);
  });
  return loss;
}

}  // namespace nimbus
