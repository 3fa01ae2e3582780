// device.cpp: --device / --threads / --seed for the apps (see device.h).
#include "apps/common/device.h"

#include <cblas.h>

#include <cstdio>

namespace nimbus::apps {

cli::CommonOptions setup_device(const cli::Parser& p) {
  const std::string asked = p.get_string("device");
  if (asked == "cuda" && !device_available(Device::CUDA))
    throw Error(str("--device cuda: no usable CUDA device/backend (this build has no CUDA runtime "
                                 "registered); use --device cpu or auto"));
  cli::CommonOptions c = cli::apply_common_options(p);
  if (asked == "auto" && c.device == Device::CPU)
    std::fprintf(stderr, "%s: no usable CUDA device/backend, running on the CPU (%d threads)\n",
                 p.program().c_str(), c.threads);
  openblas_set_num_threads(c.threads);
  return c;
}

}  // namespace nimbus::apps
