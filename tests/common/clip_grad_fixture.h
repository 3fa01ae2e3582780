// clip_grad_fixture.h: clip_grad_norm (engine/optim/clip_grad.h) against
// torch.nn.utils.clip_grad_norm_ on one device: the CPU tests (tests/engine/test_clip_grad.cpp) and
// the emulated CUDA backend's (tests/emu/test_cuda_ops.cpp) run the same checks.
// Fixture: tests/fixtures/clip_grad.safetensors from tests/torch/gen_fixtures_clip.py.
//
// Bounds. Our sum of squares is in double and PyTorch's in float32, so the two norms are the same
// float or one float32 rounding apart: 2^-22 relative. A norm one rounding apart moves the coefficient
// by about as much, so a clipped gradient is within 2^-21 of PyTorch's relative to itself. NaN only
// where PyTorch has NaN. Where the coefficient is 1 the gradients must come back bit for bit; and the
// coefficient kernels/common/grad_clip.h computes from PyTorch's norm must give PyTorch's gradients to
// the bit.
#pragma once
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine/optim/adam.h"
#include "engine/optim/clip_grad.h"
#include "kernels/common/grad_clip.h"  // clip_coefficient
#include "tests/common/check.h"

namespace nimbus::test {

inline const SafetensorsFile& clip_fx() { return fixture_file("clip_grad.safetensors"); }

// Each case of the fixture on `d`: four parameters (the fourth without a gradient).
inline void check_clip_cases_against_torch(Device d) {
  for (const char* name : {"clip", "keep", "one", "large", "nan", "inf"}) {
    const std::string c = name;
    CAPTURE(c);
    std::vector<Tensor> params;
    for (int j = 0; j < 4; ++j) {
      const Tensor* g = clip_fx().find(c + ".g" + std::to_string(j));
      Tensor p = Tensor::zeros(g ? g->shape() : Shape{5}, d).set_requires_grad(true);
      if (g) p.set_grad(g->to(d).clone());
      params.push_back(p);
    }
    const double max_norm = clip_fx().at(c + ".max_norm").item();
    const Tensor norm = clip_grad_norm(params, max_norm);
    REQUIRE(norm.device() == d);
    REQUIRE(norm.shape() == Shape{});
    const double want = clip_fx().at(c + ".norm").item();
    if (std::isfinite(want)) CHECK_MESSAGE(std::fabs(norm.item() - want) <= std::ldexp(want, -22), norm.item(), " vs ", want);
    else CHECK_MESSAGE((std::isnan(want) ? std::isnan(norm.item()) : norm.item() == want), norm.item(), " vs ", want);
    for (int j = 0; j < 3; ++j) {
      const std::string out = c + ".out" + std::to_string(j);
      const Tensor got = params[size_t(j)].grad().to(Device::CPU);
      if (c == "keep") {  // coefficient 1: untouched
        CHECK(got.to_vector() == clip_fx().at(c + ".g" + std::to_string(j)).to_vector());
        continue;
      }
      check_close_nan_ok(got.to_vector(), clip_fx().at(out).to_vector(), 0, std::ldexp(1.0, -21), out);
      // From PyTorch's own norm, grad_clip.h's coefficient scales PyTorch's gradients to PyTorch's bits: it
      // is the same float32 arithmetic (a plain max_norm / (norm + 1e-6) misses in "clip").
      float n = 0, coef = 0;
      clip_coefficient(want * want, float(max_norm), &n, &coef);  // a float's square is exact in double
      const std::vector<float> in = clip_fx().at(c + ".g" + std::to_string(j)).to_vector();
      std::vector<float> scaled(in.size());
      for (size_t i = 0; i < in.size(); ++i) scaled[i] = in[i] * coef;
      check_close(scaled, clip_fx().at(out).to_vector(), 0, 0, out + " (PyTorch's bits from PyTorch's norm)",
                  std::isfinite(want) ? NanOnBoth::Fails : NanOnBoth::Agrees);
    }
    CHECK(!params[3].grad().defined());
  }
}

// Six Adam steps (lr 0.05) with the gradients clipped to 0.5 before each, as PyTorch ran them: the
// weights within the Adam tests' bounds (3e-7 + 1e-6 relative), the returned norms as above.
inline void check_clipped_adam_against_torch(Device d) {
  const SafetensorsFile& f = clip_fx();
  Tensor w = f.at("traj.w0").to(d).clone().set_requires_grad(true);
  Tensor b = f.at("traj.b0").to(d).clone().set_requires_grad(true);
  Adam opt({{"w", w}, {"b", b}}, AdamOptions{.lr = 0.05});
  auto grad_of = [&](const Tensor& p, const std::string& which) {
    const std::vector<float> pv = p.to_vector(), a = f.at("traj.a_" + which).to_vector(),
                             c = f.at("traj.c_" + which).to_vector();
    std::vector<float> g(pv.size());
    for (size_t i = 0; i < g.size(); ++i) g[i] = a[i] * (pv[i] - c[i]) + 0.1f * (pv[i] * pv[i] * pv[i]);
    return Tensor::from_vector(p.shape(), g).to(d);
  };
  for (int k = 1; k <= 6; ++k) {
    const std::string at = "traj.step" + std::to_string(k);
    w.set_grad(grad_of(w, "w"));
    b.set_grad(grad_of(b, "b"));
    const double norm = clip_grad_norm(NamedTensors{{"w", w}, {"b", b}}, 0.5).item();
    const double want = f.at("traj.norm" + std::to_string(k)).item();
    CHECK_MESSAGE(std::fabs(norm - want) <= std::ldexp(want, -22), "step ", k, ": norm ", norm, " vs ", want);
    CHECK(want > 0.5);  // every step clips: the test sees the clipping
    opt.step();
    check_close(w.to(Device::CPU), f.at(at + ".w"), 3e-7, 1e-6, at + ".w");
    check_close(b.to(Device::CPU), f.at(at + ".b"), 3e-7, 1e-6, at + ".b");
  }
}

}  // namespace nimbus::test
