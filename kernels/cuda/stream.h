/* stream.h: which CUDA stream the backend's work goes on (stream.cu), callable from plain C++.
 *
 * The backend owns one compute stream, created (non-blocking) by register_cuda_backend(). Every
 * kernel launch of the op table, every device fill and every copy goes on the *current* stream,
 * which is the compute stream unless a user stream was made current (set_current_stream or, scoped,
 * StreamGuard). Host<->device copies are cudaMemcpyAsync on it plus a stream synchronize, so the
 * host sees finished data; DeviceRuntime::synchronize() synchronizes it.
 *
 * One stream at a time, by design: switching the current stream is a join (the new stream waits,
 * through an event, for everything already queued on the old one), so all device work runs in the
 * host's program order. That is what keeps the caching allocator's reuse safe (docs/cuda-backend.md).
 * Handles are opaque (a cudaStream_t as void*) so this header needs no CUDA header. The current
 * stream is process-wide: drive the device from one host thread.
 */
#pragma once
#include <cstdint>

namespace nimbus::cuda {

// What the backend asked of the device since the process started, counted at the source (the
// launch() helper of compat.h and the backend's copies and synchronisations), the same under nvcc
// and under the emulator: bench_models reports them per training step, and a test keeps them from
// growing unnoticed. A host wait is any call that blocks the host until device work is done: a
// stream or device synchronisation, or a copy to or from host memory (which synchronises). A copy
// is any memcpy the backend queues (device to device too: a clone costs a queue entry like a launch).
struct WorkCounts {
  uint64_t launches = 0;        // kernels queued (a capture records, it does not queue: not counted)
  uint64_t host_waits = 0;
  uint64_t copies = 0;
  uint64_t graph_launches = 0;  // replays of a captured graph (each one call, however many kernels it holds)
};
WorkCounts work_counts();
void count_launch();     // compat.h's launch() calls it
void count_host_wait();  // every blocking call of the backend calls it
void count_copy();       // the backend's copy routine calls it

using Stream = void*;  // a cudaStream_t; nullptr is CUDA's legacy default stream

Stream current_stream();  // where the next launch/copy/fill goes
Stream compute_stream();  // the backend's own stream (nullptr before registration)
// Makes `s` current after making it wait for the work queued on the current stream (a no-op if
// s is already current). Throws nimbus::Error if the CUDA runtime refuses (e.g. a destroyed stream).
void set_current_stream(Stream s);

// A new non-blocking stream, and its release (Error if `s` is current: switch away first).
Stream create_stream();
void destroy_stream(Stream s);  // waits for its work first (a host wait)
void synchronize_stream(Stream s);  // the host waits until the work queued on s is done

// Registration only (backend.cu): `s` becomes the compute stream and the current stream.
void install_compute_stream(Stream s);

// Stream capture (CUDA graphs). begin_capture() starts recording the current stream: launches,
// fills and device copies queued on it from then on are recorded, not run, until end_capture(),
// which returns the instantiated graph. Anything that would make the host wait (a copy to or from
// host memory, a synchronisation) is refused during capture: CUDA invalidates the capture and
// end_capture() throws. Switching the current stream during capture throws. One capture at a time.
using GraphExec = void*;  // a cudaGraphExec_t
void begin_capture();
GraphExec end_capture();          // throws nimbus::Error naming why if the capture was invalidated
void abort_capture();             // ends a capture and drops what it recorded (after an error in it)
bool capturing();                 // is a capture under way
void launch_graph(GraphExec g);   // one replay, on the current stream (counted in graph_launches)
void destroy_graph(GraphExec g);  // nullptr is fine

// Makes `s` current for one scope; on exit the previous stream becomes current again (and waits
// for what was queued on s, so later work sees its results). Destroying the previous stream
// inside the scope is a bug; the join on exit then fails and terminates.
class StreamGuard {
 public:
  explicit StreamGuard(Stream s) : previous_(current_stream()) { set_current_stream(s); }
  ~StreamGuard() { set_current_stream(previous_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream previous_;
};

}  // namespace nimbus::cuda
