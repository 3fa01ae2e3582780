/* block_reduce.cuh: warp- and block-wide float sums, the building block of every reduction kernel
 * (sum/mean here; batch-norm statistics and losses later).
 *
 * warp_reduce_sum: a shuffle-down tree over the 32 lanes; the total lands in lane 0.
 * block_reduce_sum: each warp reduces, lane 0 of each warp parks its sum in shared memory,
 * warp 0 reduces those. The total lands in thread 0. Requirements (kernel contract): a 1-D block,
 * blockDim.x a multiple of 32 and at most 1024, and EVERY thread of the block calls it (it has
 * two barriers). The summation order is fixed by the lane layout, so the result does not depend
 * on the order threads run in.
 */
#pragma once
#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

__device__ __forceinline__ float warp_reduce_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float block_reduce_sum(float v) {
  __shared__ float warp_sums[32];
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32, nwarps = int(blockDim.x) / 32;
  v = warp_reduce_sum(v);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();  // all warp sums written before warp 0 reads them
  v = 0.0f;
  if (warp == 0) v = warp_reduce_sum(lane < nwarps ? warp_sums[lane] : 0.0f);  // whole warp 0: full mask is right
  __syncthreads();  // warp 0 has read warp_sums before a next call may overwrite it
  return v;
}

}  // namespace nimbus::cuda
