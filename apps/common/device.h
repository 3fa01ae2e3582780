// device.h: what every nimbus app does with --device, --threads and --seed.
//
// setup_device() wraps cli::apply_common_options() (OpenMP threads, global
// seed) and adds what the apps need on top:
//   --device cuda  with no usable CUDA backend -> Error "no usable CUDA device/backend ..."
//                  (the app prints it and exits 1);
//   --device auto  without CUDA -> one line on stderr "<app>: running on the CPU with N threads (no usable CUDA
//                  device/backend: ...)";
//   --threads N    OpenMP's thread count (OpenBLAS itself runs serial: kernels/cpu/gemm.h).
// When the apps are linked with the real CUDA backend (target nimbus_cuda,
// NIMBUS_APPS_WITH_CUDA), it is registered here first; the messages quote
// nimbus::cuda_status() for why CUDA is not usable.
//
// --precision (add_precision_option; the apps that run a model), resolved into CommonOptions::precision:
//   fp32   float32 everywhere; on CUDA the plain fp32 kernels (backends/cuda/backend.h math Fp32)
//   tf32   float32 tensors, convolutions and linear layers on the tensor cores in TF32 (CUDA only:
//          the CPU has no TF32 and runs fp32, saying so on stderr)
//   bf16   bfloat16 autocast for the whole run (engine/autocast.h): convolutions and linear layers
//          in bfloat16 with fp32 accumulation, batch-norm statistics, losses, the optimiser and the
//          weights (checkpoints) in float32; on CUDA the remaining float32 layers in TF32
//   auto   (default) tf32 on CUDA, fp32 on the CPU
#pragma once
#include "apps/common/cli.h"

namespace nimbus::apps {

void add_precision_option(cli::Parser& p);
cli::CommonOptions setup_device(const cli::Parser& p);

}  // namespace nimbus::apps
