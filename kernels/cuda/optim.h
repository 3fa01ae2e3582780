/* optim.h: launchers for the fused optimiser updates (optim.cu), callable from plain C++.
 *
 * One kernel per parameter tensor updates p and its state slots in place, element by element,
 * with exactly the float expressions of engine/optim/{adam,nadam,sgd}.cpp; the per-step scalars
 * (bias corrections, schedules) are computed on the host by the optimiser and passed in here.
 */
#pragma once
#include <cstdint>

#include "kernels/common/optim_scalars.h"  // AdamScalars, NadamScalars, SgdScalars

namespace nimbus::cuda {

void adam_update(float* p, float* m, float* v, const float* g, int64_t n, const AdamScalars& s, int block = 256);
void nadam_update(float* p, float* m, float* v, const float* g, int64_t n, const NadamScalars& s, int block = 256);
void sgd_update(float* p, float* buf, const float* g, int64_t n, const SgdScalars& s, int block = 256);

}  // namespace nimbus::cuda
