/* fast_divmod.h: division by a divisor fixed at launch, as a multiply and a shift (Granlund and
 * Montgomery, "Division by invariant integers using multiplication", 1994), for kernels that
 * decode flat indices (the tensor-core convolution's gathers, kernels/cuda/conv2d_tc.cu). A GPU has
 * no integer divider: `n / d` by a run-time d compiles to ~20 instructions, this to ~4.
 *
 *   FastDivmod f(d);         host or device, d >= 1: l = ceil(log2 d), m = floor(2^32 (2^l - d) / d) + 1
 *   f.div(n)                 n / d for 0 <= n < 2^31: (mulhi(n, m) + n) >> l
 *   f.divmod(n, q, r)        q = n / d, r = n % d
 * Exact for every such n and d (tests/engine/test_fast_divmod.cpp checks edges and random pairs
 * against / and %).
 */
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define NIMBUS_DIVMOD_FN __host__ __device__ __forceinline__
#else
#define NIMBUS_DIVMOD_FN inline
#endif

namespace nimbus {

struct FastDivmod {
  uint32_t d = 1, m = 0, l = 0;

  FastDivmod() = default;
  NIMBUS_DIVMOD_FN explicit FastDivmod(int divisor) : d(uint32_t(divisor)) {
    while ((uint64_t(1) << l) < d) ++l;
    m = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << l) - d)) / d + 1);
  }
  NIMBUS_DIVMOD_FN int div(int n) const {
    const uint32_t hi = uint32_t((uint64_t(uint32_t(n)) * m) >> 32);  // mul.hi.u32 under nvcc
    return int((uint64_t(hi) + uint32_t(n)) >> l);
  }
  NIMBUS_DIVMOD_FN void divmod(int n, int& q, int& r) const {
    q = div(n);
    r = n - q * int(d);
  }
};

}  // namespace nimbus
