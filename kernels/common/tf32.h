/* tf32.h: what cvt.rna.tf32.f32 makes of a float, on the host: the value a tensor core multiplies
 * when a kernel rounds its fp32 operand to TF32 (kernels/cuda/tensor_core.h). References for the
 * TF32 kernels (tests, bench/cuda) round their operands with it.
 *
 *   tf32_round(x)   keep the sign, the 8 exponent bits and the top 10 mantissa bits, rounding to
 *                   nearest with ties away from zero (half an ulp added to the magnitude bits);
 *                   for finite x (NaN and inf pass through unchanged).
 */
#pragma once
#include <cstdint>
#include <cstring>

namespace nimbus {

inline float tf32_round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0x7F800000u) return x;  // inf, NaN
  u = (u + 0x1000u) & 0xFFFFE000u;
  std::memcpy(&x, &u, 4);
  return x;
}

}  // namespace nimbus
