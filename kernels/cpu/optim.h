// optim.h: the fused optimiser updates on the CPU: one parameter tensor, element by element, in
// place (p and its state slots). The per-step scalars are computed by the optimisers
// (engine/optim/{adam,nadam,sgd}.cpp); the CUDA twins (kernels/cuda/optim.cu) apply the same float
// expressions, so both backends agree bit for bit under the emulator.
#pragma once
#include <cstdint>

#include "kernels/common/optim_scalars.h"

namespace nimbus::cpu {

void adam_update(float* p, float* m, float* v, const float* g, int64_t n, const AdamScalars& s);
void nadam_update(float* p, float* m, float* v, const float* g, int64_t n, const NadamScalars& s);
// buf is used only with momentum (s.use_mom).
void sgd_update(float* p, float* buf, const float* g, int64_t n, const SgdScalars& s);

}  // namespace nimbus::cpu
