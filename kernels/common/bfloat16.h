/* bfloat16.h: bf16 <-> fp32 conversions as bit patterns, for the host and for kernels (nvcc and the
 * CUDA emulator alike). Plain C++, no CUDA types: a bf16 is its uint16_t bit pattern.
 *
 *   bf16_from_float_rne(x)   fp32 -> bf16, round to nearest, ties to even (like __float2bfloat16_rn);
 *                            overflow rounds to +-inf, subnormals round like any other value,
 *                            a NaN stays a NaN: sign and top payload bits kept, quiet bit set
 *   bf16_to_float(h)         exact (bf16 is the top half of an fp32)
 *   bf16x2_pack(lo, hi)      two bf16 in one 32-bit word, `lo` in bits 0-15: the layout of an
 *                            mma .bf16 operand register, lo = the lower k (or column) index
 *   bf16x2_lo / bf16x2_hi    the halves back
 *   bfloat16                 the element type of a DType::BF16 tensor (its bit pattern in a struct,
 *                            so templates cannot mistake it for an integer): converts to float
 *                            exactly and from float with bf16_from_float_rne, implicitly both ways,
 *                            so a kernel templated on T computes in float and rounds on store:
 *                              y[i] = a[i] + b[i];   // float(a) + float(b), rounded once to bf16
 */
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define NIMBUS_BF16_FN __host__ __device__ __forceinline__
#else
#define NIMBUS_BF16_FN inline
#endif

namespace nimbus {

NIMBUS_BF16_FN uint16_t bf16_from_float_rne(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // NaN: quiet, never inf
  u += 0x7fffu + ((u >> 16) & 1u);  // half an ulp, minus one when the kept lsb is even: ties to even
  return uint16_t(u >> 16);
}

NIMBUS_BF16_FN float bf16_to_float(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

NIMBUS_BF16_FN uint32_t bf16x2_pack(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }
NIMBUS_BF16_FN uint16_t bf16x2_lo(uint32_t v) { return uint16_t(v & 0xffffu); }
NIMBUS_BF16_FN uint16_t bf16x2_hi(uint32_t v) { return uint16_t(v >> 16); }

struct bfloat16 {
  uint16_t bits;
  bfloat16() = default;
  NIMBUS_BF16_FN bfloat16(float x) : bits(bf16_from_float_rne(x)) {}  // NOLINT: implicit on purpose
  NIMBUS_BF16_FN operator float() const { return bf16_to_float(bits); }
  NIMBUS_BF16_FN static bfloat16 from_bits(uint16_t b) {
    bfloat16 h;
    h.bits = b;
    return h;
  }
};
static_assert(sizeof(bfloat16) == 2, "bfloat16 is its 16-bit pattern");

// The type a kernel on T computes in: float for float and bfloat16, double for the references.
template <typename T> struct compute_type { using type = T; };
template <> struct compute_type<bfloat16> { using type = float; };
template <typename T> using compute_t = typename compute_type<T>::type;

}  // namespace nimbus

#undef NIMBUS_BF16_FN
