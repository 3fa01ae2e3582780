/* optim.cu: fused Adam, Nadam and SGD updates of a batch of parameter tensors in one launch.
 *
 * The batch (up to kOptimBatch tensors: pointers and sizes) travels by value in the kernel's
 * arguments, so nothing is uploaded and the host never waits; each tensor's scalars are read from the
 * device array that the step's prepare kernel wrote just before (one block: thread 0 advances the
 * clock, then every thread prepares parameters strided by the block size). Every block walks the
 * tensors in order, and within each one its threads take elements grid-stride: each element is read
 * and written by one thread, independent of thread and block order. The element updates are
 * kernels/common/optim_update.h's, the same float expressions as the CPU loops (bit for bit).
 */
#include "kernels/cuda/optim.h"

#include "kernels/common/optim_update.h"
#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

namespace {

__global__ void adam_kernel(AdamBatch b) {
  for (int k = 0; k < b.count; ++k) {
    const AdamTensor t = b.t[k];
    const AdamScalars s = *t.s;
    for (int64_t i = grid_first(); i < t.n; i += grid_step()) adam_element(t.p, t.m, t.v, t.g, i, s);
  }
}

__global__ void nadam_kernel(NadamBatch b) {
  for (int k = 0; k < b.count; ++k) {
    const NadamTensor t = b.t[k];
    const NadamScalars s = *t.s;
    for (int64_t i = grid_first(); i < t.n; i += grid_step()) nadam_element(t.p, t.m, t.v, t.g, i, s);
  }
}

__global__ void sgd_kernel(SgdBatch b) {
  for (int k = 0; k < b.count; ++k) {
    const SgdTensor t = b.t[k];
    const SgdScalars s = *t.s;
    for (int64_t i = grid_first(); i < t.n; i += grid_step()) sgd_element(t.p, t.buf, t.g, i, s);
  }
}

template <typename Hyper, typename Scalars>
__global__ void prepare_kernel(OptimPrepare<Hyper, Scalars> p) {
  if (p.advance && threadIdx.x == 0) advance_clock(*p.clock, nadam_of(p.h));
  __syncthreads();
  const OptimClock c = *p.clock;
  for (int i = threadIdx.x; i < p.mask.count; i += blockDim.x) prepare_param(p, c, i);
}

__global__ void set_lr_kernel(OptimClock* clock, double lr) { clock->lr = lr; }

template <typename Hyper, typename Scalars>
void launch_prepare(const char* what, const OptimPrepare<Hyper, Scalars>& p) {
  launch(prepare_kernel<Hyper, Scalars>, 1, 256, 0, launch_stream(), p);
  check_launch(what);
}

// One grid for the whole batch, sized by its largest tensor: every tensor is covered grid-stride.
template <typename Batch>
int64_t largest(const Batch& b) {
  int64_t n = 0;
  for (int k = 0; k < b.count; ++k) n = b.t[k].n > n ? b.t[k].n : n;
  return n;
}

template <typename Batch>
void launch_batch(const char* what, void (*kernel)(Batch), const Batch& b, int block) {
  const int64_t n = largest(b);
  if (b.count <= 0 || n <= 0) return;
  launch(kernel, grid_for(n, block), block, 0, launch_stream(), b);
  check_launch(what);
}

}  // namespace

void adam_prepare(const AdamPrepare& p) { launch_prepare("cuda::adam_prepare", p); }
void nadam_prepare(const NadamPrepare& p) { launch_prepare("cuda::nadam_prepare", p); }
void sgd_prepare(const SgdPrepare& p) { launch_prepare("cuda::sgd_prepare", p); }
void optim_set_lr(OptimClock* clock, double lr) {
  launch(set_lr_kernel, 1, 1, 0, launch_stream(), clock, lr);
  check_launch("cuda::optim_set_lr");
}

void adam_update(const AdamBatch& b, int block) { launch_batch("cuda::adam_update", adam_kernel, b, block); }
void nadam_update(const NadamBatch& b, int block) { launch_batch("cuda::nadam_update", nadam_kernel, b, block); }
void sgd_update(const SgdBatch& b, int block) { launch_batch("cuda::sgd_update", sgd_kernel, b, block); }

}  // namespace nimbus::cuda
