// classifier.cpp: input normalisation buffers + ResNet (see classifier.h).
#include "models/classifier.h"

#include <algorithm>
#include <cmath>

#include "engine/backend.h"
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
  NIMBUS_CHECK(dn.dtype() == DType::F32, "classifier input: DN tensor must be float32");
  // On the input's device (one kernel: no copy back to the host, so a training step never waits here).
  const Tensor m = mean.to(dn.device()), s = std.to(dn.device());
  Tensor y = Tensor::empty(dn.shape(), dn.device());
  backend(dn.device(), "input_norm")
      .input_norm(y.data(), dn.data(), m.data(), s.data(), kReflectanceScale, dn.size(0), C, dn.size(2) * dn.size(3));
  return y;
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
