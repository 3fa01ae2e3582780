// classifier.h: the land-cover classifier every app uses: DN in, logits or
// class probabilities out.
//
//   reflectance x = clip(DN, 0, 10000) / 10000
//   input         z = (x - mean[c]) / std[c]     per band c, training-set statistics
//   logits        = ResNet(z)                    (N, classes)
//
// Classifier IS a ResNet with one more child, "input_norm", holding the
// buffers "input_norm.mean" and "input_norm.std" (in_channels values each).
// Its state_dict is torchvision's names followed by those two, so a checkpoint
// carries the statistics with the weights. For PyTorch, drop the two keys
// before load_state_dict(strict=True) and apply the same normalisation by
// hand (tests/torch/gen_fixtures_models.py shows both). Defaults: mean 0,
// std 1 (plain reflectance) until set_input_norm() or a checkpoint sets them.
#pragma once
#include <vector>

#include "data/sentinel2.h"
#include "models/resnet.h"

namespace nimbus::models {

constexpr float kReflectanceScale = data::kS2DnPerReflectance;  // EuroSAT / SEN12MS-CR S2 DN per unit reflectance

class InputNorm : public Module {
 public:
  explicit InputNorm(int64_t channels);
  // DN (N, C, H, W) on any device -> normalised input on the same device (never recorded).
  Tensor forward(const Tensor& dn) const;
  Tensor mean, std;  // (C) buffers
};

class Classifier : public ResNet {
 public:
  explicit Classifier(const ResNetConfig& config, Rng& rng = global_rng());
  // std must be positive; both hold in_channels values.
  void set_input_norm(const std::vector<float>& mean, const std::vector<float>& std);
  Tensor normalize(const Tensor& dn) const { return norm_->forward(dn); }
  Tensor logits(const Tensor& dn) { return forward(normalize(dn)); }  // (N, classes), recorded
  Tensor probabilities(const Tensor& dn);                              // softmax of the logits, (N, classes)
  InputNorm& input_norm() { return *norm_; }

 private:
  std::shared_ptr<InputNorm> norm_;
};

}  // namespace nimbus::models
