/* cast.cu: float32 <-> bfloat16 casts, one grid-stride loop each (kernels/common/bfloat16.h holds
 * the conversion, shared with the CPU, so both backends give the same bits).
 *
 * When both pointers are 16-byte aligned (the caching allocator's blocks are), a thread converts 8
 * elements per step: two 16-byte float loads or stores and one 16-byte bfloat16 access, instead of
 * 8 and 8 (the casts are pure memory traffic, and under bf16 autocast every weight is cast each
 * step); element by element otherwise and in the tail. The same conversion either way. */
#include "kernels/cuda/cast.h"

#include <cstdint>

#include "kernels/common/bfloat16.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/pack.cuh"
#include "kernels/cuda/tensor_core.h"  // load_vector, store_vector

namespace nimbus::cuda {

namespace {
using Bf16x8 = Pack<bfloat16>;

__global__ void cast_f32_to_bf16_kernel(bfloat16* y, const float* x, int64_t n, bool vec) {
  int64_t done = 0;
  if (vec) {
    for (int64_t p = grid_first(); p < n / 8; p += grid_step()) {
      const float4 a = load_vector<float4>(x + 8 * p), b = load_vector<float4>(x + 8 * p + 4);
      const Bf16x8 o{{bfloat16(a.x), bfloat16(a.y), bfloat16(a.z), bfloat16(a.w), bfloat16(b.x), bfloat16(b.y),
                      bfloat16(b.z), bfloat16(b.w)}};
      store_vector(y + 8 * p, o);
    }
    done = n / 8 * 8;
  }
  for (int64_t i = done + grid_first(); i < n; i += grid_step()) y[i] = bfloat16(x[i]);
}

__global__ void cast_bf16_to_f32_kernel(float* y, const bfloat16* x, int64_t n, bool vec) {
  int64_t done = 0;
  if (vec) {
    for (int64_t p = grid_first(); p < n / 8; p += grid_step()) {
      const Bf16x8 a = load_vector<Bf16x8>(x + 8 * p);
      store_vector(y + 8 * p, make_float4(float(a.v[0]), float(a.v[1]), float(a.v[2]), float(a.v[3])));
      store_vector(y + 8 * p + 4, make_float4(float(a.v[4]), float(a.v[5]), float(a.v[6]), float(a.v[7])));
    }
    done = n / 8 * 8;
  }
  for (int64_t i = done + grid_first(); i < n; i += grid_step()) y[i] = float(x[i]);
}

}  // namespace

void cast_f32_to_bf16(bfloat16* y, const float* x, int64_t n, int block) {
  launch_n("cuda::cast_f32_to_bf16", cast_f32_to_bf16_kernel, n, block, y, x, n, aligned16(y) && aligned16(x));
}

void cast_bf16_to_f32(float* y, const bfloat16* x, int64_t n, int block) {
  launch_n("cuda::cast_bf16_to_f32", cast_bf16_to_f32_kernel, n, block, y, x, n, aligned16(y) && aligned16(x));
}

}  // namespace nimbus::cuda
