// cast.cpp: the casts of cast.h, over both cores for large tensors.
#include "kernels/cpu/cast.h"

#include "kernels/common/bfloat16.h"
#include "kernels/common/parallel.h"

namespace nimbus::cpu {

void cast_f32_to_bf16(bfloat16* y, const float* x, int64_t n) {
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = bfloat16(x[i]);
}

void cast_bf16_to_f32(float* y, const bfloat16* x, int64_t n) {
#pragma omp parallel for if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] = float(x[i]);
}

}  // namespace nimbus::cpu
