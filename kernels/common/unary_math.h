/* unary_math.h: scalar helpers for the formulas of kernels/common/unary_ops.def, for the host (the
 * CPU kernels, the float64 references) and for CUDA kernels (nvcc and the emulator alike).
 *
 *   normal_cdf(x)   Phi(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal CDF
 *   normal_pdf(x)   phi(x) = exp(-x^2 / 2) / sqrt(2 pi), its density
 *
 * Overloaded for float and double: float calls erff/expf, so a float kernel never computes in double.
 */
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define NIMBUS_UNARY_FN __host__ __device__ __forceinline__
#else
#define NIMBUS_UNARY_FN inline
#endif

namespace nimbus {

NIMBUS_UNARY_FN float normal_cdf(float x) { return 0.5f * (1.0f + erff(x * 0.70710678118654752f)); }
NIMBUS_UNARY_FN double normal_cdf(double x) { return 0.5 * (1.0 + erf(x * 0.70710678118654752440)); }
NIMBUS_UNARY_FN float normal_pdf(float x) { return 0.39894228040143268f * expf(-0.5f * x * x); }
NIMBUS_UNARY_FN double normal_pdf(double x) { return 0.39894228040143267794 * exp(-0.5 * x * x); }

}  // namespace nimbus

#undef NIMBUS_UNARY_FN
