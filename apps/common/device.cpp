// device.cpp: --device / --threads / --seed for the apps (see device.h).
#include "apps/common/device.h"

#include <cblas.h>

#include <cstdio>

#include "engine/backend.h"
#ifdef NIMBUS_APPS_WITH_CUDA
#include "backends/cuda/backend.h"
#endif

namespace nimbus::apps {

cli::CommonOptions setup_device(const cli::Parser& p) {
  const std::string asked = p.get_string("device");
#ifdef NIMBUS_APPS_WITH_CUDA
  if (asked != "cpu") cuda::register_cuda_backend();  // records why not in cuda_status() when it cannot
#endif
  if (asked == "cuda" && !device_available(Device::CUDA))
    throw Error(str("--device cuda: no usable CUDA device/backend (", cuda_status(), "); use --device cpu or auto"));
  cli::CommonOptions c = cli::apply_common_options(p);
  if (asked == "auto" && c.device == Device::CPU)
    std::fprintf(stderr, "%s: no usable CUDA device/backend, running on the CPU (%d threads): %s\n",
                 p.program().c_str(), c.threads, cuda_status().c_str());
  openblas_set_num_threads(c.threads);
  return c;
}

}  // namespace nimbus::apps
