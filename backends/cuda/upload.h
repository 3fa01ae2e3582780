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
 * is kUploadSlots pieces ahead of the device: back-pressure, never in a step that keeps up. A copy
 * goes in pieces of at most kStagePieceBytes, each through the next slot, so a slot never grows past
 * that: the staging memory stays under kUploadSlots x kStagePieceBytes on each side (256 MiB), whatever
 * the inputs' size (a batch of 64 SEN12MS-CR scenes is 218 MB). A copy of up to kUploadSlots pieces
 * (256 MiB) queued behind a device that keeps up needs no host wait; a larger one comes round to its
 * own first pieces' slots and waits for their copies (the same back-pressure), piece by piece.
 * staging_bytes() says how much device memory the slots hold (the benchmarks add it to the caching
 * allocator's peak: it is ours too).
 */
#pragma once
#include <cstddef>

namespace nimbus::cuda {

constexpr int kUploadSlots = 8;
constexpr size_t kStagePieceBytes = size_t(32) << 20;

// Queues the copy of `bytes` from host `src` to device `dst` on the current stream (as above).
// Throws nimbus::Error during a graph capture (a capture cannot hold a copy from host memory that the
// host rewrites) or if the CUDA runtime refuses.
void upload(void* dst, const void* src, size_t bytes);

// Device memory the staging slots hold now (each slot's buffer, a power of two up to kStagePieceBytes).
size_t staging_bytes();

}  // namespace nimbus::cuda
