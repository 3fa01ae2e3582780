// optim_scalars.h: what the fused optimiser updates take (a neutral header). A step is two kinds of
// call on the parameters' device:
//  - one *prepare* per step (per kStepMaskParams parameters): advances the optimiser's clock (step
//    count, Nadam's schedule) and each stepping parameter's count, all in device memory, and writes
//    each parameter's per-step scalars (bias corrections, learning rate) into a device array;
//  - one *update* per kOptimBatch tensors: element by element, the float expressions of
//    kernels/common/optim_update.h, reading the scalars through a pointer.
// Nothing per step travels in a kernel's arguments, so a captured CUDA graph replays correct steps:
// the learning rate is written into the clock when the schedule changes it (optim_set_lr), and
// everything else is advanced by the step itself.
#pragma once
#include <cstdint>

namespace nimbus {

struct AdamScalars {
  float b1, b2, one_m_b1, one_m_b2, wd, eps, step_size, bc2_sqrt;
  float keep;  // AdamW: 1 - lr * weight_decay, the parameter's share kept before the step (else 1)
};
struct NadamScalars {
  float b1, b2, one_m_b1, one_m_b2, g_scale, m_scale, v_scale, c_g, c_m, lr, eps;
};
struct SgdScalars {
  float lr, wd, mom, keep;
  bool first, use_mom, nesterov;
};

// The optimiser-wide state on the device.
struct OptimClock {
  double lr = 0;           // the learning rate (set_lr)
  double step = 0;         // step() calls so far, t (Nadam's schedule runs on it)
  double s_t = 1, s_next = 1, mu_t = 0, mu_next = 0;  // Nadam: this step's schedule values (nadam.h)
  float m_schedule = 1.f;  // Nadam: S_t rounded to float32 as Keras keeps it (the checkpoint's value)
};
// Hyper-parameters: constant for an optimiser.
struct AdamHyper {
  double beta1, beta2, eps, weight_decay;
  bool decoupled;  // AdamW: weight decay applied to the parameter, not added to the gradient
};
struct NadamHyper {
  double beta1, beta2, eps, schedule_decay;
};
struct SgdHyper {
  double momentum, dampening, weight_decay;
  bool nesterov;
};
// Which parameters step now: bit i of `bits` is parameter first + i, for i < count.
constexpr int kStepMaskParams = 2048;
struct StepMask {
  int first = 0, count = 0;
  uint32_t bits[kStepMaskParams / 32] = {};
};
// One prepare call. `advance`: this call advances the clock (the step's first call).
template <typename Hyper, typename Scalars>
struct OptimPrepare {
  OptimClock* clock;
  double* steps;      // per parameter: updates so far
  Scalars* scalars;   // per parameter: this step's scalars
  Hyper h;
  bool advance;
  StepMask mask;
};

// One launch updates up to kOptimBatch parameter tensors, described by value in the kernel's
// arguments (no upload, so no host wait). 32 entries of 48 bytes stay below the 4 KiB that CUDA
// allows for a kernel's parameters on every architecture we build for.
constexpr int kOptimBatch = 32;
template <typename Entry>
struct TensorBatch {
  int count = 0;
  Entry t[kOptimBatch];
};
struct AdamTensor {
  float *p, *m, *v;  // parameter and its two moments, updated in place
  const float* g;
  int64_t n;
  const AdamScalars* s;  // in device memory (the prepare's output)
};
struct NadamTensor {
  float *p, *m, *v;
  const float* g;
  int64_t n;
  const NadamScalars* s;
};
struct SgdTensor {
  float *p, *buf;  // buf: the momentum buffer (read and written only with s.use_mom)
  const float* g;
  int64_t n;
  const SgdScalars* s;
};
using AdamBatch = TensorBatch<AdamTensor>;
using NadamBatch = TensorBatch<NadamTensor>;
using SgdBatch = TensorBatch<SgdTensor>;
using AdamPrepare = OptimPrepare<AdamHyper, AdamScalars>;
using NadamPrepare = OptimPrepare<NadamHyper, NadamScalars>;
using SgdPrepare = OptimPrepare<SgdHyper, SgdScalars>;
static_assert(sizeof(AdamBatch) <= 4096 && sizeof(NadamBatch) <= 4096 && sizeof(SgdBatch) <= 4096 &&
                  sizeof(AdamPrepare) <= 4096 && sizeof(NadamPrepare) <= 4096,
              "a batch or prepare must fit in a CUDA kernel's 4 KiB of parameters");

namespace cuda {
using nimbus::AdamScalars;
using nimbus::NadamScalars;
using nimbus::SgdScalars;
using nimbus::AdamBatch;
using nimbus::NadamBatch;
using nimbus::SgdBatch;
using nimbus::AdamPrepare;
using nimbus::NadamPrepare;
using nimbus::SgdPrepare;
using nimbus::OptimClock;
}  // namespace cuda

}  // namespace nimbus
