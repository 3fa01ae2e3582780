// optim.cpp: the optimisers' element loops (see optim.h), over both cores for large tensors. The
// element updates are kernels/common/optim_update.h's, shared with the CUDA kernels.
#include "kernels/cpu/optim.h"

#include "kernels/common/optim_update.h"
#include "kernels/common/parallel.h"

namespace nimbus::cpu {

void adam_update(const AdamBatch& b) {
  for (int k = 0; k < b.count; ++k) {
    const AdamTensor t = b.t[k];  // a local copy: stores through t.p cannot alias the scalars
    const auto s = t.s;
#pragma omp parallel for simd if (t.n > kParallelGrain)
    for (int64_t i = 0; i < t.n; ++i) adam_element(t.p, t.m, t.v, t.g, i, s);
  }
}

void nadam_update(const NadamBatch& b) {
  for (int k = 0; k < b.count; ++k) {
    const NadamTensor t = b.t[k];  // a local copy: stores through t.p cannot alias the scalars
    const auto s = t.s;
#pragma omp parallel for simd if (t.n > kParallelGrain)
    for (int64_t i = 0; i < t.n; ++i) nadam_element(t.p, t.m, t.v, t.g, i, s);
  }
}

void sgd_update(const SgdBatch& b) {
  for (int k = 0; k < b.count; ++k) {
    const SgdTensor t = b.t[k];  // a local copy: stores through t.p cannot alias the scalars
    const auto s = t.s;
#pragma omp parallel for simd if (t.n > kParallelGrain)
    for (int64_t i = 0; i < t.n; ++i) sgd_element(t.p, t.buf, t.g, i, s);
  }
}

}  // namespace nimbus::cpu
