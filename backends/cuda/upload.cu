/* upload.cu: staged, wait-free host -> device copies (see upload.h). Host code (nvcc or g++ +
 * emulator). The slots are process-wide and never freed (like the compute stream): copies queued by
 * the last upload may run until the process ends.
 */
#include "backends/cuda/upload.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>

#include "kernels/common/error.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/stream.h"

namespace nimbus::cuda {

namespace {

struct Slot {
  void* host = nullptr;  // page-locked
  void* dev = nullptr;
  size_t capacity = 0;
  bool used = false;                 // the events below have been recorded
  cudaEvent_t copied = nullptr;      // page-locked -> device done (the host buffer is free again)
  cudaEvent_t consumed = nullptr;    // device -> destination done (the device buffer is free again)
};

std::mutex mu;
Slot slots[kUploadSlots];
int next_slot = 0;
cudaStream_t copy_stream = nullptr;

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();
#ifdef __CUDACC__
  const std::string detail;
#else
  const std::string detail = emu::last_error_detail();
#endif
  throw Error(str("cuda upload: ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")",
                  detail.empty() ? "" : " (" + detail + ")"));
}

// The host waits for `e` only if it has not happened yet (counted as a host wait then).
void wait_if_pending(cudaEvent_t e, const char* what) {
  const cudaError_t q = cudaEventQuery(e);
  if (q == cudaSuccess) return;
  if (q != cudaErrorNotReady) check(q, what);
  (void)cudaGetLastError();  // cudaErrorNotReady is not an error; do not leave it pending
  count_host_wait();
  check(cudaEventSynchronize(e), what);
}

void grow(Slot& s, size_t bytes) {
  if (s.used) wait_if_pending(s.consumed, "waiting for a staging buffer to be free");
  if (s.host) check(cudaFreeHost(s.host), "cudaFreeHost");
  if (s.dev) check(cudaFree(s.dev), "cudaFree");
  s.host = s.dev = nullptr;
  size_t cap = size_t(1) << 20;
  while (cap < bytes) cap <<= 1;
  check(cudaMallocHost(&s.host, cap), "cudaMallocHost (page-locked staging)");
  check(cudaMalloc(&s.dev, cap), "cudaMalloc (device staging)");
  s.capacity = cap;
  if (!s.copied) {
    check(cudaEventCreateWithFlags(&s.copied, cudaEventDisableTiming), "cudaEventCreate");
    check(cudaEventCreateWithFlags(&s.consumed, cudaEventDisableTiming), "cudaEventCreate");
  }
}

// One piece (at most kStagePieceBytes) through the next slot. Caller holds mu.
void upload_piece(void* dst, const void* src, size_t bytes) {
  Slot& s = slots[next_slot];
  next_slot = (next_slot + 1) % kUploadSlots;
  if (s.capacity < bytes) grow(s, bytes);
  else if (s.used) wait_if_pending(s.copied, "waiting for a staging buffer's previous copy");
  std::memcpy(s.host, src, bytes);
  const cudaStream_t compute = launch_stream();
  if (s.used) check(cudaStreamWaitEvent(copy_stream, s.consumed, 0), "ordering the copy stream");
  count_copy();
  check(cudaMemcpyAsync(s.dev, s.host, bytes, cudaMemcpyHostToDevice, copy_stream), "page-locked -> device");
  check(cudaEventRecord(s.copied, copy_stream), "cudaEventRecord");
  check(cudaStreamWaitEvent(compute, s.copied, 0), "ordering the current stream");
  count_copy();
  check(cudaMemcpyAsync(dst, s.dev, bytes, cudaMemcpyDeviceToDevice, compute), "staging -> destination");
  check(cudaEventRecord(s.consumed, compute), "cudaEventRecord");
  s.used = true;
}

}  // namespace

void upload(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  NIMBUS_CHECK(!capturing(), "cuda upload of ", bytes, " bytes from host memory inside a graph capture: a graph "
               "cannot hold it (copy the inputs into the captured tensors before each replay instead)");
  std::lock_guard<std::mutex> lock(mu);
  if (!copy_stream) check(cudaStreamCreateWithFlags(&copy_stream, cudaStreamNonBlocking), "creating the copy stream");
  for (size_t at = 0; at < bytes; at += kStagePieceBytes)
    upload_piece(static_cast<char*>(dst) + at, static_cast<const char*>(src) + at,
                 std::min(kStagePieceBytes, bytes - at));
}

size_t staging_bytes() {
  std::lock_guard<std::mutex> lock(mu);
  size_t n = 0;
  for (const Slot& s : slots) n += s.dev ? s.capacity : 0;
  return n;
}

}  // namespace nimbus::cuda
