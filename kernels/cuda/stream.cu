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
std::atomic<uint64_t> launches{0}, host_waits{0}, copies{0}, graph_launches{0};
std::atomic<bool> in_capture{false};

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
          copies.load(std::memory_order_relaxed), graph_launches.load(std::memory_order_relaxed)};
}
// A launch recorded by a capture is not queued: it is counted when a graph replays it (graph_launches).
void count_launch() {
  if (!in_capture.load(std::memory_order_relaxed)) launches.fetch_add(1, std::memory_order_relaxed);
}
void count_host_wait() { host_waits.fetch_add(1, std::memory_order_relaxed); }
void count_copy() { copies.fetch_add(1, std::memory_order_relaxed); }

Stream current_stream() { return current.load(std::memory_order_relaxed); }
Stream compute_stream() { return compute.load(std::memory_order_relaxed); }

void set_current_stream(Stream s) {
  Stream old = current_stream();
  if (s == old) return;
  NIMBUS_CHECK(!capturing(), "cuda::set_current_stream: the current stream is capturing a graph; "
               "a capture records one stream (end it before switching)");
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
  // Its work finishes first: the allocator's pool for this stream (keyed by the handle, which a new
  // stream may get again) then holds only blocks that no queued work still uses.
  synchronize_stream(s);
  check(cudaStreamDestroy(as_cuda(s)), "cuda::destroy_stream");
}

void synchronize_stream(Stream s) {
  count_host_wait();
  check(cudaStreamSynchronize(as_cuda(s)), "cuda::synchronize_stream");
}

void begin_capture() {
  NIMBUS_CHECK(!capturing(), "cuda::begin_capture: a capture is already under way");
  NIMBUS_CHECK(current_stream(), "cuda::begin_capture: the legacy default stream cannot be captured");
  check(cudaStreamBeginCapture(as_cuda(current_stream()), cudaStreamCaptureModeGlobal), "cuda::begin_capture");
  in_capture.store(true, std::memory_order_relaxed);
}

GraphExec end_capture() {
  NIMBUS_CHECK(capturing(), "cuda::end_capture: no capture is under way");
  in_capture.store(false, std::memory_order_relaxed);
  cudaGraph_t graph = nullptr;
  check(cudaStreamEndCapture(as_cuda(current_stream()), &graph), "cuda::end_capture");
  cudaGraphExec_t exec = nullptr;
  cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);  // the executable keeps what it needs
  check(e, "cuda::end_capture: cudaGraphInstantiate");
  return exec;
}

void abort_capture() {
  if (!capturing()) return;
  in_capture.store(false, std::memory_order_relaxed);
  cudaGraph_t graph = nullptr;
  if (cudaStreamEndCapture(as_cuda(current_stream()), &graph) == cudaSuccess) cudaGraphDestroy(graph);
  (void)cudaGetLastError();  // an invalidated capture reports it here; the caller has its own error
}

bool capturing() { return in_capture.load(std::memory_order_relaxed); }

void launch_graph(GraphExec g) {
  NIMBUS_CHECK(g, "cuda::launch_graph: no graph");
  NIMBUS_CHECK(!capturing(), "cuda::launch_graph: replaying a graph inside a capture is not supported");
  graph_launches.fetch_add(1, std::memory_order_relaxed);
  check(cudaGraphLaunch(static_cast<cudaGraphExec_t>(g), as_cuda(current_stream())), "cuda::launch_graph");
}

void destroy_graph(GraphExec g) {
  if (g) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(g));
}

// For backend.cu's registration only: the compute stream becomes current.
void install_compute_stream(Stream s) {
  compute.store(s, std::memory_order_relaxed);
  current.store(s, std::memory_order_relaxed);
}

}  // namespace nimbus::cuda
