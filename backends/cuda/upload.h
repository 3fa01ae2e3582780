/* upload.h: host -> device copies that never make the host wait in steady state (upload.cu).
 *
 * The engine's host-to-device copies (Tensor::to, copy_ from a host tensor: DeviceRuntime::copy)
 * come here. A copy goes through one of kUploadSlots staging slots, each a page-locked host buffer
 * and a device buffer of the same size:
 *   host         copies the source into the slot's page-locked buffer (the caller may reuse the
 *                source as soon as upload() returns, as with a pageable cudaMemcpyAsync);
 *   copy stream  waits until the current stream is done with the slot's device buffer, then copies
 *                page-locked -> device (so it overlaps the kernels queued before it);
 *   current      waits for that copy, then copies the slot's device buffer to the destination.
 * The host waits only when it comes back to a slot whose previous copy has not run yet, i.e. when it
 * is kUploadSlots uploads ahead of the device: back-pressure, never in a step that keeps up. Copies
 * larger than kMaxStagedBytes take the plain path (a pageable copy and a wait): they are start-up
 * transfers (weights), and staging them would pin that much host memory for good.
 */
#pragma once
#include <cstddef>

namespace nimbus::cuda {

constexpr int kUploadSlots = 8;
constexpr size_t kMaxStagedBytes = size_t(128) << 20;

// Queues the copy of `bytes` from host `src` to device `dst` on the current stream (as above).
// Throws nimbus::Error during a graph capture (a capture cannot hold a copy from host memory that the
// host rewrites) or if the CUDA runtime refuses.
void upload(void* dst, const void* src, size_t bytes);

}  // namespace nimbus::cuda
