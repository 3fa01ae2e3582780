// dsen2cr.cpp: DSen2-CR from nimbus layers (see dsen2cr.h).
#include "models/dsen2cr.h"

#include <array>
#include <limits>
#include <vector>

#include "data/normalize.h"  // the scaling constants (header only)
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/nn/init.h"
#include "engine/ops/activation.h"
#include "engine/ops/arith.h"
#include "engine/ops/shape_ops.h"

namespace nimbus::models {

std::string DSen2CRConfig::str() const {
  return nimbus::str("dsen2cr(B=", blocks, ", F=", features, sar ? ", SAR)" : ", no SAR)");
}

namespace {
// Keras 'same' 3x3 conv with he_uniform kernel and zero bias.
std::shared_ptr<Conv2d> conv3x3(int64_t in, int64_t out, Rng& rng) {
  auto c = std::make_shared<Conv2d>(in, out, 3, 1, 1, /*bias=*/true, rng);
  init::he_uniform_(c->weight, rng);
  init::zeros_(c->bias);
  return c;
}

std::string shape_of(const Tensor& t) { return t.defined() ? t.shape().str() : "undefined"; }
}  // namespace

DSen2CRBlock::DSen2CRBlock(int64_t features, Rng& rng) {
  conv1 = register_module("conv1", conv3x3(features, features, rng));
  conv2 = register_module("conv2", conv3x3(features, features, rng));
}

Tensor DSen2CRBlock::forward(const Tensor& x) {
  return conv2->forward_residual(conv1->forward_relu(x), x, kResidualScale);  // x + 0.1 conv2(relu(conv1(x)))
}

DSen2CR::DSen2CR(const DSen2CRConfig& c, Rng& rng) : config_(c) {
  NIMBUS_CHECK(c.blocks >= 0 && c.features > 0, "DSen2CR: bad configuration ", c.str());
  head_ = register_module("head", conv3x3(c.in_channels(), c.features, rng));
  blocks_ = register_module("blocks", std::make_shared<Sequential>());
  for (int i = 0; i < c.blocks; ++i) blocks_->push_back(std::make_shared<DSen2CRBlock>(c.features, rng));
  tail_ = register_module("tail", conv3x3(c.features, kS2Bands, rng));
}

Tensor DSen2CR::forward(const Tensor& s2, const Tensor& s1) {
  NIMBUS_CHECK(s2.defined() && s2.ndim() == 4 && s2.size(1) == kS2Bands, "dsen2cr: S2 input ", shape_of(s2),
               " is not (N,", kS2Bands, ",H,W)");
  Tensor x = s2;
  if (config_.sar) {
    NIMBUS_CHECK(s1.defined(), "dsen2cr: ", config_.str(), " needs the S1 input (N,2,H,W), none given");
    NIMBUS_CHECK(s1.ndim() == 4 && s1.size(0) == s2.size(0) && s1.size(1) == kS1Bands && s1.size(2) == s2.size(2) &&
                     s1.size(3) == s2.size(3),
                 "dsen2cr: S1 input ", s1.shape().str(), " does not match S2 input ", s2.shape().str(),
                 " (expected (N,2,H,W) with the same N, H, W)");
    x = concat_channels({s2, s1});
  } else {
    NIMBUS_CHECK(!s1.defined(), "dsen2cr: ", config_.str(), " takes no S1 input, but got ", s1.shape().str());
  }
  Tensor h = head_->forward_relu(x);
  h = blocks_->forward(h);
  return add(tail_->forward(h), s2);
}

namespace {
// band_affine's parameters (lo, hi, sub, mul, div per band) for data/normalize.h's formulas.
std::vector<float> affine_params(const std::vector<std::array<float, 5>>& bands) {
  const size_t C = bands.size();
  std::vector<float> p(5 * C);
  for (size_t c = 0; c < C; ++c)
    for (size_t k = 0; k < 5; ++k) p[k * C + c] = bands[c][k];
  return p;
}

Tensor band_affine(const Tensor& x, const std::vector<float>& params) {
  NIMBUS_CHECK(x.dtype() == DType::F32, "dsen2cr: raw inputs must be float32, got ", describe(x));
  const Tensor p = Tensor::from_vector({int64_t(params.size())}, params, x.device());
  Tensor y = Tensor::empty(x.shape(), x.device());
  backend(x.device(), "band_affine").band_affine(y.data(), x.data(), p.data(), x.size(0), x.size(1), x.size(2) * x.size(3));
  return y;
}
}  // namespace

Tensor DSen2CR::forward_dn(const Tensor& s2_dn, const Tensor& s1_db) {
  NIMBUS_CHECK(s2_dn.defined() && s2_dn.ndim() == 4 && s2_dn.size(1) == kS2Bands, "dsen2cr: S2 input ",
               shape_of(s2_dn), " is not (N,", kS2Bands, ",H,W)");
  const float inf = std::numeric_limits<float>::infinity();
  using data::kS1Max, data::kS1VHMin, data::kS1VVMin, data::kS2ClipMax, data::kS2Scale;
  // normalize_s2: clamp(x, 0, 10000) / 2000, written as 1 (clamp - 0) / 2000 (exact: the same float).
  static const std::vector<float> s2_in = affine_params(std::vector<std::array<float, 5>>(
      kS2Bands, std::array<float, 5>{0.f, kS2ClipMax, 0.f, 1.f, kS2Scale}));
  // normalize_s1: kS1Max (clamp(x, lo, 0) - lo) / (0 - lo), lo per band.
  static const std::vector<float> s1_in = affine_params({{kS1VVMin, 0.f, kS1VVMin, kS1Max, 0.f - kS1VVMin},
                                                         {kS1VHMin, 0.f, kS1VHMin, kS1Max, 0.f - kS1VHMin}});
  // denormalize_s2: x * 2000, written as 2000 (x - 0) / 1 (exact: the same float).
  static const std::vector<float> s2_out = affine_params(std::vector<std::array<float, 5>>(
      kS2Bands, std::array<float, 5>{-inf, inf, 0.f, kS2Scale, 1.f}));
  NoGradGuard ng;
  const Tensor s1n = s1_db.defined() ? band_affine(s1_db, s1_in) : Tensor();
  return band_affine(forward(band_affine(s2_dn, s2_in), s1n), s2_out);
}

}  // namespace nimbus::models
