// classifier.cpp: input normalisation buffers + ResNet (see classifier.h).
#include "models/classifier.h"

#include <algorithm>
#include <cmath>

#include "engine/ops/loss.h"

namespace nimbus::models {

InputNorm::InputNorm(int64_t channels) {
  mean = register_buffer("mean", Tensor::zeros({channels}));
  std = register_buffer("std", Tensor::ones({channels}));
}

Tensor InputNorm::forward(const Tensor& dn) const {
  const int64_t C = mean.numel();
  NIMBUS_CHECK(dn.defined() && dn.ndim() == 4 && dn.size(1) == C, "classifier input: DN tensor ",
               dn.defined() ? dn.shape().str() : "undefined", " is not (N,", C, ",H,W)");
  // Small elementwise pass on the host: the DN comes from a file on the CPU anyway.
  std::vector<float> x = dn.to_vector(), m = mean.to_vector(), s = std.to_vector();
  const int64_t hw = dn.size(2) * dn.size(3);
  for (int64_t i = 0; i < int64_t(x.size()); ++i) {
    const int64_t c = (i / hw) % C;
    const float r = std::clamp(x[i], 0.f, kReflectanceScale) / kReflectanceScale;  // NaN stays NaN
    x[i] = (r - m[c]) / s[c];
  }
  return Tensor::from_vector(dn.shape(), x).to(dn.device());
}

Classifier::Classifier(const ResNetConfig& config, Rng& rng) : ResNet(config, rng) {
  norm_ = register_module("input_norm", std::make_shared<InputNorm>(config.in_channels));
}

void Classifier::set_input_norm(const std::vector<float>& mean, const std::vector<float>& std) {
  const size_t C = size_t(config().in_channels);
  NIMBUS_CHECK(mean.size() == C && std.size() == C, "Classifier::set_input_norm: got ", mean.size(), " means and ",
               std.size(), " stds for ", C, " input channels");
  for (float s : std)
    NIMBUS_CHECK(s > 0 && std::isfinite(s), "Classifier::set_input_norm: std ", s, " is not positive");
  norm_->mean.copy_(Tensor::from_vector({int64_t(C)}, mean));
  norm_->std.copy_(Tensor::from_vector({int64_t(C)}, std));
}

Tensor Classifier::probabilities(const Tensor& dn) { return softmax(logits(dn)); }

}  // namespace nimbus::models
