// optim.h: the fused optimiser updates on the CPU: a batch of parameter tensors (up to
// kOptimBatch), each element by element, in place (p and its state slots). The per-step scalars
// are computed by the optimisers (engine/optim/{adam,nadam,sgd}.cpp); the element updates are
// kernels/common/optim_update.h's, which the CUDA twins (kernels/cuda/optim.cu) share, so both
// backends agree bit for bit under the emulator.
#pragma once
#include "kernels/common/optim_scalars.h"

namespace nimbus::cpu {

void adam_prepare(const AdamPrepare& p);  // the step's scalars (optim_scalars.h)
void nadam_prepare(const NadamPrepare& p);
void sgd_prepare(const SgdPrepare& p);
void optim_set_lr(OptimClock* clock, double lr);
void adam_update(const AdamBatch& b);
void nadam_update(const NadamBatch& b);
void sgd_update(const SgdBatch& b);  // a tensor's buf is used only with momentum (s.use_mom)

}  // namespace nimbus::cpu
