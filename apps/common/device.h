// device.h: what every nimbus app does with --device, --threads and --seed.
//
// setup_device() wraps cli::apply_common_options() (OpenMP threads, global
// seed) and adds what the apps need on top:
//   --device cuda  with no usable CUDA backend -> Error "no usable CUDA device/backend ..."
//                  (the app prints it and exits 1);
//   --device auto  without CUDA -> one line on stderr "<app>: no usable CUDA device/backend, running on the CPU";
//   --threads N    also sets OpenBLAS's thread count (the GEMMs of conv/linear).
// When the apps are linked with the real CUDA backend (target nimbus_cuda,
// NIMBUS_APPS_WITH_CUDA), it is registered here first; the messages quote
// nimbus::cuda_status() for why CUDA is not usable.
#pragma once
#include "apps/common/cli.h"

namespace nimbus::apps {

cli::CommonOptions setup_device(const cli::Parser& p);

}  // namespace nimbus::apps
