// device.cpp: --device / --threads / --seed for the apps (see device.h).
#include "apps/common/device.h"

#include <cstdio>

#include "engine/autocast.h"
#include "engine/backend.h"
#include "engine/distributed/process_group.h"
#ifdef NIMBUS_APPS_WITH_CUDA
#include "backends/cuda/backend.h"
#endif

namespace nimbus::apps {

void add_precision_option(cli::Parser& p) {
  p.add_choice("precision", "auto", {"auto", "fp32", "tf32", "bf16"},
               "arithmetic: fp32, tf32 (CUDA tensor cores), bf16 (autocast: bf16 convolutions, fp32 weights); "
               "auto = tf32 on CUDA, fp32 on the CPU");
}

cli::CommonOptions setup_device(const cli::Parser& p) {
  const std::string asked = p.get_string("device");
#ifdef NIMBUS_APPS_WITH_CUDA
  if (asked != "cpu") cuda::register_cuda_backend();  // records why not in cuda_status() when it cannot
#endif
  if (asked == "cuda" && !device_available(Device::CUDA))
    throw Error(str("--device cuda: no usable CUDA device/backend (", cuda_status(), "); use --device cpu or auto"));
  cli::CommonOptions c = cli::apply_common_options(p);
  if (asked == "auto" && c.device == Device::CPU && launched_rank() == 0)  // said once, not per rank
    std::fprintf(stderr, "%s: running on the CPU with %d thread%s (no usable CUDA device/backend: %s)\n",
                 p.program().c_str(), c.threads, c.threads == 1 ? "" : "s", cuda_status().c_str());
  // (OpenBLAS is not given the thread count: gemm<float> keeps it serial and shares out its tiles over
  // OpenMP's threads, so that results do not depend on --threads; kernels/cpu/gemm.h.)
  if (p.declared("precision")) {
    const std::string asked_p = p.get_string("precision");
    c.precision = asked_p == "auto" ? (c.device == Device::CUDA ? "tf32" : "fp32") : asked_p;
    if (c.precision == "tf32" && c.device == Device::CPU) {
      if (launched_rank() == 0)
        std::fprintf(stderr, "%s: --precision tf32: the CPU has no TF32, running fp32\n", p.program().c_str());
      c.precision = "fp32";
    }
    set_autocast_dtype(c.precision == "bf16" ? DType::BF16 : DType::F32);  // this (the main) thread, whole run
#ifdef NIMBUS_APPS_WITH_CUDA
    if (c.device == Device::CUDA) cuda::set_math(c.precision == "fp32" ? cuda::Math::Fp32 : cuda::Math::Tf32);
#endif
  }
  return c;
}

}  // namespace nimbus::apps
