// init.h: weight initialisers (in place), each drawing from an explicit Rng so
// that a seeded run builds the same model every time.
//
// fan_in of a weight = shape[1] * prod(shape[2:]) (Conv (K,C,R,S): C*R*S;
// Linear (out,in): in); fan_out = shape[0] * prod(shape[2:]).
//   kaiming_uniform_(w, rng, a): U(-b, b), b = gain * sqrt(3 / fan), gain = sqrt(2 / (1 + a^2))
//     a = 0      -> He/Keras 'he_uniform': b = sqrt(6 / fan_in)   (DSen2-CR)
//     a = sqrt 5 -> PyTorch's default for Conv2d/Linear: b = 1 / sqrt(fan_in)
//   kaiming_normal_(w, rng, a, mode): N(0, gain / sqrt(fan))   (torchvision ResNet: fan_out, a = 0)
// Tensors on another device are filled on the CPU and copied over.
#pragma once
#include <cstdint>

#include "engine/random.h"
#include "engine/tensor.h"

namespace nimbus::init {

enum class FanMode { FanIn, FanOut };

int64_t fan_in(const Shape& s);
int64_t fan_out(const Shape& s);

void uniform_(Tensor& t, Rng& rng, float lo, float hi);
void normal_(Tensor& t, Rng& rng, float mean = 0.f, float std = 1.f);
void zeros_(Tensor& t);
void ones_(Tensor& t);
void constant_(Tensor& t, float value);
void kaiming_uniform_(Tensor& t, Rng& rng, double a = 0.0, FanMode mode = FanMode::FanIn);
void kaiming_normal_(Tensor& t, Rng& rng, double a = 0.0, FanMode mode = FanMode::FanIn);
inline void he_uniform_(Tensor& t, Rng& rng) { kaiming_uniform_(t, rng, 0.0); }

}  // namespace nimbus::init
