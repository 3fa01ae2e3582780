/* backend.h: registers the CUDA device with the engine (kernels/cuda/backend.cu).
 *
 * register_cuda_backend() checks cudaGetDeviceCount; if a device is usable it installs the CUDA
 * DeviceRuntime (caching allocator over cudaMalloc, cudaMemcpy copies, fill, synchronize) and the
 * op table of engine/cuda_ops.h, and returns true. Either way it records a sentence for
 * nimbus::cuda_status(). Idempotent and thread-safe. The same source is linked as nimbus_cuda_emu
 * (the emulated device, for tests) or, built by nvcc against cudart, as the real backend.
 */
#pragma once

namespace nimbus::cuda {

bool register_cuda_backend();

}  // namespace nimbus::cuda
