/* cast.h: launchers for the dtype casts (cast.cu), callable from plain C++; the rules are
 * kernels/common/bfloat16.h's, the same functions the CPU casts call. Device pointers. */
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"

namespace nimbus::cuda {

void cast_f32_to_bf16(bfloat16* y, const float* x, int64_t n, int block = 256);
void cast_bf16_to_f32(float* y, const bfloat16* x, int64_t n, int block = 256);

}  // namespace nimbus::cuda
