/* copy.h: strided row copies on the device (copy.cu): concat_channels and its backward.
 *
 * dst[r*dst_stride + i] = src[r*src_stride + i] for r < rows, i < len. Device pointers; T: float or
 * bfloat16.
 */
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"

namespace nimbus::cuda {

template <typename T>
void copy_rows(T* dst, int64_t dst_stride, const T* src, int64_t src_stride, int64_t rows, int64_t len,
               int block = 256);

}  // namespace nimbus::cuda
