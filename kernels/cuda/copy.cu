/* copy.cu: the strided row copy behind concat_channels (each input's channel block lands at an
 * offset of every image) and its backward (each block copied back out). One thread per element,
 * each element written once: independent of thread and block order. T: float or bfloat16. CPU twin: the memcpy loops
 * of engine/ops/shape_ops.cpp.
 */
#include "kernels/cuda/copy.h"

#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

template <typename T>
__global__ void copy_rows_kernel(T* dst, int64_t dst_stride, const T* src, int64_t src_stride, int64_t len,
                                 int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) dst[(i / len) * dst_stride + i % len] =
      src[(i / len) * src_stride + i % len];
}

template <typename T>
void copy_rows(T* dst, int64_t dst_stride, const T* src, int64_t src_stride, int64_t rows, int64_t len, int block) {
  const int64_t n = rows * len;
  if (n <= 0) return;
  launch(copy_rows_kernel<T>, grid_for(n, block), block, 0, launch_stream(), dst, dst_stride, src, src_stride, len, n);
  check_launch("cuda::copy_rows");
}

template void copy_rows<float>(float*, int64_t, const float*, int64_t, int64_t, int64_t, int);
template void copy_rows<bfloat16>(bfloat16*, int64_t, const bfloat16*, int64_t, int64_t, int64_t, int);

}  // namespace nimbus::cuda
