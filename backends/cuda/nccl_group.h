/* nccl_group.h: registers the "nccl" process group (nccl_group.cu) with the engine; the CUDA backend
 * calls it when it registers. Under the emulator it registers nothing. */
#pragma once

namespace nimbus::cuda {

void register_nccl_group();

}  // namespace nimbus::cuda
