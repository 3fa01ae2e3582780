/* stream.cu: the current stream and the stream API of stream.h (host code; nvcc or g++ + emulator).
 *
 * The current stream is one process-wide atomic handle, read by every launcher (launch_stream() in
 * compat.h). A switch records an event on the old stream and makes the new one wait for it, so the
 * device never runs two of our streams at once (see stream.h for why).
 */
#include "kernels/cuda/stream.h"

#include <atomic>
#include <string>

#include "kernels/common/error.h"
#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

namespace {

std::atomic<void*> current{nullptr};
std::atomic<void*> compute{nullptr};
std::atomic<uint64_t> launches{0}, host_waits{0}, copies{0};

cudaStream_t as_cuda(Stream s) { return static_cast<cudaStream_t>(s); }

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();  // clear the sticky error: the Error carries it
#ifdef __CUDACC__
  const std::string detail;
#else
  const std::string detail = emu::last_error_detail();
#endif
  throw Error(str(what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")",
                  detail.empty() ? "" : " (" + detail + ")"));
}

}  // namespace

WorkCounts work_counts() {
  return {launches.load(std::memory_order_relaxed), host_waits.load(std::memory_order_relaxed),
          copies.load(std::memory_order_relaxed)};
}
void count_launch() { launches.fetch_add(1, std::memory_order_relaxed); }
void count_host_wait() { host_waits.fetch_add(1, std::memory_order_relaxed); }
void count_copy() { copies.fetch_add(1, std::memory_order_relaxed); }

Stream current_stream() { return current.load(std::memory_order_relaxed); }
Stream compute_stream() { return compute.load(std::memory_order_relaxed); }

void set_current_stream(Stream s) {
  Stream old = current_stream();
  if (s == old) return;
  // Join: `s` starts after everything queued on `old` so far (an event taken now, waited on device).
  cudaEvent_t e = nullptr;
  check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cuda::set_current_stream: cudaEventCreate");
  cudaError_t r = cudaEventRecord(e, as_cuda(old));
  if (r == cudaSuccess) r = cudaStreamWaitEvent(as_cuda(s), e, 0);
  cudaEventDestroy(e);  // fine once waited on: the wait keeps its own reference
  check(r, "cuda::set_current_stream: joining the new stream to the current one");
  current.store(s, std::memory_order_relaxed);
}

Stream create_stream() {
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cuda::create_stream");
  return s;
}

void destroy_stream(Stream s) {
  NIMBUS_CHECK(s != compute_stream(), "cuda::destroy_stream: stream ", s, " is the backend's compute stream");
  NIMBUS_CHECK(s != current_stream(), "cuda::destroy_stream: stream ", s,
               " is the current stream; make another one current first");
  check(cudaStreamDestroy(as_cuda(s)), "cuda::destroy_stream");
}

void synchronize_stream(Stream s) {
  count_host_wait();
  check(cudaStreamSynchronize(as_cuda(s)), "cuda::synchronize_stream");
}

// For backend.cu's registration only: the compute stream becomes current.
void install_compute_stream(Stream s) {
  compute.store(s, std::memory_order_relaxed);
  current.store(s, std::memory_order_relaxed);
}

}  // namespace nimbus::cuda
