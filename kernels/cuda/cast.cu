/* cast.cu: float32 <-> bfloat16 casts, one grid-stride loop each (kernels/common/bfloat16.h holds
 * the conversion, shared with the CPU, so both backends give the same bits). */
#include "kernels/cuda/cast.h"

#include "kernels/common/bfloat16.h"
#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

namespace {
__global__ void cast_f32_to_bf16_kernel(bfloat16* y, const float* x, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = bfloat16(x[i]);
}
__global__ void cast_bf16_to_f32_kernel(float* y, const bfloat16* x, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = float(x[i]);
}
}  // namespace

void cast_f32_to_bf16(bfloat16* y, const float* x, int64_t n, int block) {
  launch_n("cuda::cast_f32_to_bf16", cast_f32_to_bf16_kernel, n, block, y, x, n);
}

void cast_bf16_to_f32(float* y, const bfloat16* x, int64_t n, int block) {
  launch_n("cuda::cast_bf16_to_f32", cast_bf16_to_f32_kernel, n, block, y, x, n);
}

}  // namespace nimbus::cuda
