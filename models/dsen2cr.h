// dsen2cr.h: DSen2-CR (Meraner et al. 2020), exactly as reference
// dsen2cr-sen12mscr.md section 1 describes it.
//
//   x   = concat(s2, s1) (N, 13+2, H, W)   or s2 alone when the model has no SAR
//   h   = relu(head(x))                     head: conv 3x3 pad 1, (13+2 | 13) -> F
//   B x h = h + 0.1 * conv2(relu(conv1(h))) blocks.<i>.conv1/conv2: conv 3x3 pad 1, F -> F
//   out = tail(h) + s2                      tail: conv 3x3 pad 1, F -> 13; long skip on the
//                                           normalised cloudy S2 only
// All convs have a bias; init He-uniform (U(+-sqrt(6 / fan_in))), bias 0.
// Inputs and output are in the normalised domain (data/normalize.h: S2 = clip(DN) / 2000).
// Parameters: 18 B F^2 + (2B + 253) F + 13 with SAR (B=16, F=256: 18,947,341).
#pragma once
#include <memory>
#include <string>

#include "data/sentinel2.h"
#include "engine/nn/layers.h"
#include "engine/random.h"

namespace nimbus::models {

using data::kS1Bands;  // Sentinel-2/1 constants: data/sentinel2.h (header-only here)
using data::kS2Bands;
constexpr float kResidualScale = 0.1f;

struct DSen2CRConfig {
  int blocks = 16;     // B
  int features = 256;  // F
  bool sar = true;     // head takes 13 + 2 channels
  int in_channels() const { return kS2Bands + (sar ? kS1Bands : 0); }
  std::string str() const;  // "dsen2cr(B=16, F=256, SAR)"
  bool operator==(const DSen2CRConfig&) const = default;
};

class DSen2CRBlock : public UnaryModule {
 public:
  DSen2CRBlock(int64_t features, Rng& rng);
  Tensor forward(const Tensor& x) override;  // x + 0.1 * conv2(relu(conv1(x)))
  std::shared_ptr<Conv2d> conv1, conv2;
};

class DSen2CR : public Module {
 public:
  explicit DSen2CR(const DSen2CRConfig& config, Rng& rng = global_rng());
  // s2_norm (N,13,H,W); s1_norm (N,2,H,W), required with SAR and must be undefined without.
  // Returns the cloud-free estimate (N,13,H,W), normalised.
  Tensor forward(const Tensor& s2_norm, const Tensor& s1_norm = Tensor());
  // The same from raw values, on the inputs' device: s2_dn (N,13,H,W) Sentinel-2 DN, s1_db (N,2,H,W)
  // VV and VH in dB (or undefined); scaled as data/normalize.h does (one band_affine kernel each, the
  // same float operations: bitwise data::normalize_s2 / _s1), the model, then the output back to DN.
  // Inputs must be free of NaN (the apps fill or refuse them first). Not recorded (inference).
  Tensor forward_dn(const Tensor& s2_dn, const Tensor& s1_db = Tensor());
  const DSen2CRConfig& config() const { return config_; }

 private:
  DSen2CRConfig config_;
  std::shared_ptr<Conv2d> head_, tail_;
  std::shared_ptr<Sequential> blocks_;
};

}  // namespace nimbus::models
