// clip_grad.cpp: clip_grad_norm (see clip_grad.h): checks on the host, then the kernels of
// kernels/common/grad_clip.h, kOptimBatch gradients per launch: ceil(P / 32) sums, one coefficient,
// ceil(P / 32) scalings for P gradients (13 launches for a ResNet-50's 161).
#include "engine/optim/clip_grad.h"

#include <cmath>
#include <set>
#include <string>

#include "engine/backend.h"
#include "kernels/common/grad_clip.h"  // the kernels' batches and clip_coefficient

namespace nimbus {

Tensor clip_grad_norm(const NamedTensors& params, double max_norm) {
  NIMBUS_CHECK(std::isfinite(max_norm) && max_norm > 0, "clip_grad_norm: max_norm must be finite and > 0, got ",
               max_norm);
  std::vector<Tensor> grads;
  std::set<TensorImpl*> seen;
  for (const auto& [name, p] : params) {
    NIMBUS_CHECK(p.defined(), "clip_grad_norm: parameter ", name, " is undefined");
    NIMBUS_CHECK(seen.insert(p.impl()).second, "clip_grad_norm: parameter ", name,
                 " is given twice (its gradient would be counted and scaled twice)");
    Tensor g = p.grad();
    if (!g.defined()) continue;
    NIMBUS_CHECK(g.dtype() == DType::F32, "clip_grad_norm: parameter ", name, "'s gradient is ", describe(g),
                 ", not float32");
    NIMBUS_CHECK(grads.empty() || g.device() == grads[0].device(), "clip_grad_norm: parameter ", name,
                 "'s gradient is on ", device_name(g.device()), ", another's on ", device_name(grads[0].device()));
    grads.push_back(g);
  }
  if (grads.empty()) return Tensor::zeros(Shape{}, params.empty() ? Device::CPU : params[0].second.device());

  const Device d = grads[0].device();
  const Kernels<float>& be = backend(d, "clip_grad_norm");
  const int64_t count = int64_t(grads.size());
  // The partial sums are doubles: a float32 tensor of twice as many elements holds them (the caching
  // allocator aligns every block to far more than 8 bytes).
  Tensor partial = Tensor::empty(Shape{2 * count * kGradChunks}, d);
  double* sums = reinterpret_cast<double*>(partial.data());
  Tensor norm = Tensor::empty(Shape{}, d), coef = Tensor::empty(Shape{}, d);

  // Every gradient, kOptimBatch per call of `kernel`.
  auto batches = [&](auto kernel) {
    GradBatch b;
    for (int64_t i = 0; i < count; ++i) {
      b.t[b.count++] = {grads[size_t(i)].data(), grads[size_t(i)].numel(), i};
      if (b.count == kOptimBatch || i == count - 1) kernel(b), b.count = 0;
    }
  };
  batches([&](const GradBatch& b) { be.grad_sumsq(b, sums); });
  be.grad_clip_coef(norm.data(), coef.data(), sums, count, float(max_norm));
  batches([&](const GradBatch& b) { be.grad_scale(b, coef.data()); });
  for (Tensor& g : grads) g.mark_written();
  return norm;
}

bool clip_scales(float norm, double max_norm) {
  float total = 0, coef = 1;
  clip_coefficient(double(norm) * double(norm), float(max_norm), &total, &coef);  // a float's square: exact
  return coef < 1.f;
}

Tensor clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  NamedTensors named;
  for (size_t i = 0; i < params.size(); ++i) named.emplace_back(std::to_string(i), params[i]);
  return clip_grad_norm(named, max_norm);
}

}  // namespace nimbus
