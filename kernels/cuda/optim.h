/* optim.h: launchers for the fused optimiser updates (optim.cu), callable from plain C++.
 *
 * One launch updates a batch of up to kOptimBatch parameter tensors (kernels/common/optim_scalars.h)
 * and their state slots in place, element by element, with exactly the float expressions of
 * kernels/common/optim_update.h; the per-step scalars (bias corrections, schedules) are computed on
 * the device by the step's prepare launch (one block) into an array the batch points to.
 */
#pragma once
#include "kernels/common/optim_scalars.h"  // AdamBatch, NadamBatch, SgdBatch

namespace nimbus::cuda {

void adam_prepare(const AdamPrepare& p);
void nadam_prepare(const NadamPrepare& p);
void sgd_prepare(const SgdPrepare& p);
void optim_set_lr(OptimClock* clock, double lr);  // a one-thread kernel: in order with the steps
void adam_update(const AdamBatch& b, int block = 256);
void nadam_update(const NadamBatch& b, int block = 256);
void sgd_update(const SgdBatch& b, int block = 256);

}  // namespace nimbus::cuda
