// init.cpp: the initialisers of init.h (serial loops: init runs once per model).
#include "engine/nn/init.h"

#include <cmath>

namespace nimbus::init {

namespace {
int64_t receptive(const Shape& s) {
  int64_t r = 1;
  for (int i = 2; i < s.ndim(); ++i) r *= s[i];
  return r;
}

int64_t fan(const Shape& s, FanMode mode) {
  NIMBUS_CHECK(s.ndim() >= 2, "init: fan_in/fan_out need a weight with at least 2 dims, got ", s.str());
  int64_t f = mode == FanMode::FanIn ? fan_in(s) : fan_out(s);
  NIMBUS_CHECK(f > 0, "init: weight ", s.str(), " has zero fan");
  return f;
}

// Fill on the CPU with f(), then move to t's device.
template <typename F>
void fill_with(Tensor& t, F f) {
  Tensor host = t.is_cpu() ? t : Tensor::empty(t.shape());
  float* p = host.data();
  for (int64_t i = 0; i < host.numel(); ++i) p[i] = f();
  if (!t.is_cpu()) t.copy_(host);
}
}  // namespace

int64_t fan_in(const Shape& s) { return s.ndim() < 2 ? 0 : s[1] * receptive(s); }
int64_t fan_out(const Shape& s) { return s.ndim() < 2 ? 0 : s[0] * receptive(s); }

void uniform_(Tensor& t, Rng& rng, float lo, float hi) {
  fill_with(t, [&] { return rng.uniform(lo, hi); });
}

void normal_(Tensor& t, Rng& rng, float mean, float std) {
  fill_with(t, [&] { return mean + std * float(rng.normal()); });
}

void zeros_(Tensor& t) { t.fill_(0.f); }
void ones_(Tensor& t) { t.fill_(1.f); }
void constant_(Tensor& t, float value) { t.fill_(value); }

void kaiming_uniform_(Tensor& t, Rng& rng, double a, FanMode mode) {
  double gain = std::sqrt(2.0 / (1.0 + a * a));
  float bound = float(gain * std::sqrt(3.0 / double(fan(t.shape(), mode))));
  uniform_(t, rng, -bound, bound);
}

void kaiming_normal_(Tensor& t, Rng& rng, double a, FanMode mode) {
  double gain = std::sqrt(2.0 / (1.0 + a * a));
  normal_(t, rng, 0.f, float(gain / std::sqrt(double(fan(t.shape(), mode)))));
}

}  // namespace nimbus::init
