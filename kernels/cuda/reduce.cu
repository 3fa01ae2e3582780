/* reduce.cu: sum and mean of a whole buffer, in two deterministic passes.
 *
 * Pass 1: G blocks (G <= kMaxPartials); thread t of block b adds x[b*B + t], x[b*B + t + G*B], ...
 *         in index order, then block_reduce_sum (warp shuffles + shared memory + 2 barriers)
 *         gives partials[b].
 * Pass 2: one block reduces the G partials the same way and writes scale * total to *out.
 * When G == 1, pass 1 writes *out directly. CPU reference: a plain loop (the tests use double).
 */
#include "kernels/cuda/reduce.h"

#include <limits>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/compat.h"
#include "kernels/common/error.h"

namespace nimbus::cuda {

constexpr int64_t kMaxPartials = 1024;

// out[blockIdx.x] = scale * (sum of this block's grid-stride share of x)
__global__ void sum_kernel(float* out, const float* x, int64_t n, float scale) {
  float acc = 0.0f;
  for (int64_t i = grid_first(); i < n; i += grid_step()) acc += x[i];
  acc = block_reduce_sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = scale * acc;
}

int64_t reduce_scratch_floats(int64_t n, int block) { return grid_for(n, block, unsigned(kMaxPartials)); }

static void reduce(float* out, const float* x, int64_t n, float* scratch, int block, float scale, const char* what) {
  NIMBUS_CHECK(block >= 32 && block <= 1024 && block % 32 == 0, what, ": block of ", block,
               " threads; block_reduce_sum needs a multiple of 32 in [32, 1024]");
  unsigned grid = grid_for(n, block, unsigned(kMaxPartials));
  if (grid == 1) {
    launch(sum_kernel, 1, block, 0, launch_stream(), out, x, n, scale);
    check_launch(what);
    return;
  }
  launch(sum_kernel, grid, block, 0, launch_stream(), scratch, x, n, 1.0f);
  check_launch(what);
  launch(sum_kernel, 1, block, 0, launch_stream(), out, static_cast<const float*>(scratch), int64_t(grid), scale);
  check_launch(what);
}

void sum(float* out, const float* x, int64_t n, float* scratch, int block) {
  reduce(out, x, n, scratch, block, 1.0f, "cuda::sum");
}

void mean(float* out, const float* x, int64_t n, float* scratch, int block) {
  reduce(out, x, n, scratch, block, n > 0 ? 1.0f / float(n) : std::numeric_limits<float>::quiet_NaN(), "cuda::mean");
}

}  // namespace nimbus::cuda
