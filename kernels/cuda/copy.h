/* copy.h: strided row copies on the device (copy.cu): concat_channels and its backward.
 *
 * dst[r*dst_stride + i] = src[r*src_stride + i] for r < rows, i < len. Device pointers.
 */
#pragma once
#include <cstdint>

namespace nimbus::cuda {

void copy_rows(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t len,
               int block = 256);

}  // namespace nimbus::cuda
