// optim_scalars.h: what the fused optimiser updates take (a neutral header): the per-step scalars,
// computed on the host by the optimiser (engine/optim), and the batches of tensors one launch
// updates. Each update applies, element by element, the float expressions of
// kernels/common/optim_update.h.
#pragma once
#include <cstdint>

namespace nimbus {

struct AdamScalars {
  float b1, b2, one_m_b1, one_m_b2, wd, eps, step_size, bc2_sqrt;
};
struct NadamScalars {
  float b1, b2, one_m_b1, one_m_b2, g_scale, m_scale, v_scale, c_g, c_m, lr, eps;
};
struct SgdScalars {
  float lr, wd, mom, keep;
  bool first, use_mom, nesterov;
};

// One launch updates up to kOptimBatch parameter tensors, described by value in the kernel's
// arguments (no upload, so no host wait). 32 entries of at most 88 bytes stay below the 4 KiB that
// CUDA allows for a kernel's parameters on every architecture we build for.
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
  AdamScalars s;
};
struct NadamTensor {
  float *p, *m, *v;
  const float* g;
  int64_t n;
  NadamScalars s;
};
struct SgdTensor {
  float *p, *buf;  // buf: the momentum buffer (read and written only with s.use_mom)
  const float* g;
  int64_t n;
  SgdScalars s;
};
using AdamBatch = TensorBatch<AdamTensor>;
using NadamBatch = TensorBatch<NadamTensor>;
using SgdBatch = TensorBatch<SgdTensor>;
static_assert(sizeof(AdamBatch) <= 4096 && sizeof(NadamBatch) <= 4096 && sizeof(SgdBatch) <= 4096,
              "an update batch must fit in a CUDA kernel's 4 KiB of parameters");

namespace cuda {
using nimbus::AdamScalars;
using nimbus::NadamScalars;
using nimbus::SgdScalars;
using nimbus::AdamBatch;
using nimbus::NadamBatch;
using nimbus::SgdBatch;
}  // namespace cuda

}  // namespace nimbus
