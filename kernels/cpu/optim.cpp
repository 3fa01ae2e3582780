// optim.cpp: the optimisers' element loops (see optim.h), over both cores for large tensors. The
// element updates are kernels/common/optim_update.h's, shared with the CUDA kernels.
#include "kernels/cpu/optim.h"

#include "kernels/common/optim_update.h"
#include "kernels/common/parallel.h"

namespace nimbus::cpu {

namespace {
// Every tensor of the batch, element by element: update(t, i, s) with t and its scalars s copied to
// locals, so that stores through t's pointers cannot alias the scalars (the loop stays a vector loop).
template <typename Batch, typename Update>
void for_each_element(const Batch& b, Update update) {
  for (int k = 0; k < b.count; ++k) {
    const auto t = b.t[k];
    const auto s = *t.s;
#pragma omp parallel for simd if (t.n > kParallelGrain)
    for (int64_t i = 0; i < t.n; ++i) update(t, i, s);
  }
}
// The prepare of optim_scalars.h: the clock advances first, then each parameter of the mask.
template <typename Hyper, typename Scalars>
void prepare(const OptimPrepare<Hyper, Scalars>& p) {
  if (p.advance) advance_clock(*p.clock, nadam_of(p.h));
  const OptimClock c = *p.clock;
  for (int i = 0; i < p.mask.count; ++i) prepare_param(p, c, i);
}
}  // namespace

void adam_prepare(const AdamPrepare& p) { prepare(p); }
void nadam_prepare(const NadamPrepare& p) { prepare(p); }
void sgd_prepare(const SgdPrepare& p) { prepare(p); }
void optim_set_lr(OptimClock* clock, double lr) { clock->lr = lr; }

void adam_update(const AdamBatch& b) {
  for_each_element(b, [](const AdamTensor& t, int64_t i, const AdamScalars& s) { adam_element(t.p, t.m, t.v, t.g, i, s); });
}

void nadam_update(const NadamBatch& b) {
  for_each_element(
      b, [](const NadamTensor& t, int64_t i, const NadamScalars& s) { nadam_element(t.p, t.m, t.v, t.g, i, s); });
}

void sgd_update(const SgdBatch& b) {
  for_each_element(b, [](const SgdTensor& t, int64_t i, const SgdScalars& s) { sgd_element(t.p, t.buf, t.g, i, s); });
}

}  // namespace nimbus::cpu
