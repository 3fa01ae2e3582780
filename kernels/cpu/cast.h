// cast.h: dtype casts on the CPU, element by element (the rules: kernels/common/bfloat16.h).
//   y (n) bfloat16 <- x (n) float32, round to nearest even, NaN kept;  y (n) float32 <- x (n) bf16, exact.
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"

namespace nimbus::cpu {

void cast_f32_to_bf16(bfloat16* y, const float* x, int64_t n);
void cast_bf16_to_f32(float* y, const bfloat16* x, int64_t n);

}  // namespace nimbus::cpu
