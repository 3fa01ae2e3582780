/* runtime.cpp: the cuda* runtime subset on the CPU, and the emulator's global settings.
 *
 * Device memory is host memory kept in a registry (start -> size), so every copy and memset can
 * be checked: a copy's direction must match where its pointers live, and a device range must lie
 * inside one allocation. New allocations are filled with 0xFF bytes (a float NaN), so reading
 * memory nobody wrote shows up. Errors are sticky until cudaGetLastError(), as in CUDA; the
 * detailed text is in last_error_detail(). Everything runs synchronously, unless the deferred mode
 * queues a non-blocking stream's work until something waits for it (runtime.h, set_deferred; the
 * drain() functions below); streams are live handles in a set (use after destroy is an error) that
 * count the work issued on them (stream_stats), and events remember the stream and the point in it
 * where they were recorded.
 *
 * Ordering with the legacy default stream (strict mode). On a GPU, work on a stream created with
 * cudaStreamNonBlocking is not ordered with the legacy default stream: a plain cudaMemcpy (or a
 * launch on stream 0) issued while such a stream still has queued work may run before that work.
 * Everything here runs at once, so such a bug would pass unseen; instead, each non-blocking stream
 * counts the work issued on it and the work the host knows is finished (cudaStreamSynchronize,
 * cudaDeviceSynchronize, cudaFree, cudaEventSynchronize, or stream 0 waiting on an event of it), and
 * in strict mode legacy-stream work issued while any non-blocking stream has unfinished work fails
 * with cudaErrorInvalidResourceHandle and a detail naming the stream. (Seen on an H200, 2026-12-04:
 * tests that downloaded with cudaMemcpy after launching on the backend's non-blocking stream read
 * stale data; under the old emulator they passed.)
 */
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "kernels/common/error.h"
#include "kernels/emu/device.h"  // kMaxDynamicSmem, kMaxDynamicSmemOptIn
#include "kernels/emu/runtime.h"
#include "kernels/emu/tsan_ignore.h"

// A graph is a list of nodes run in order (one stream's capture has no branches).
struct EmuNode {
  enum Kind { Kernel, Copy, Memset } kind;
  std::function<void()> run;  // runs the node; errors are set as a launch's are (sticky)
};
struct EmuGraph {
  std::vector<EmuNode> nodes;
};
struct EmuGraphExec {
  std::vector<EmuNode> nodes;
};
// Work queued on a deferred stream (runtime.h, set_deferred): `run` once the stream's work before it
// has run; a cudaStreamWaitEvent is a marker with no `run` that first runs `wait_on`'s work up to
// `wait_at`.
struct EmuDeferred {
  uint64_t seq = 0;  // its place in the stream's queue: an event recorded at `queued_at` covers seq <= it
  cudaStream_t wait_on = nullptr;
  uint64_t wait_at = 0;
  std::function<void()> run;
};
struct EmuStream {
  nimbus::emu::StreamStats stats;
  std::deque<EmuDeferred> deferred;  // queued, not yet run (deferred mode)
  uint64_t queued = 0;               // places given out in `deferred` (work and wait markers alike)
  bool non_blocking = false;
  uint64_t issued = 0;    // work items issued on it
  uint64_t finished = 0;  // of those, how many the host (or stream 0) is known to be ordered after
  // What this stream's work waits for (cudaStreamWaitEvent): per other stream, the point in it.
  // When the host synchronises this stream, those points are finished too.
  std::map<cudaStream_t, uint64_t> waited;
  // Stream capture: the graph being recorded (nullptr: not capturing), its mode, and whether an
  // unsupported call invalidated it.
  EmuGraph* capture = nullptr;
  cudaStreamCaptureMode capture_mode = cudaStreamCaptureModeGlobal;
  std::thread::id capture_thread;  // the thread that began it
  bool invalidated = false;
};
struct EmuEvent {
  cudaStream_t stream = nullptr;  // where it was last recorded (nullptr: never, stream 0, or a destroyed stream)
  uint64_t at = 0;                // that stream's `issued` then (strict mode's bookkeeping)
  uint64_t queued_at = 0;         // and its `queued` (deferred mode: the queue places it covers)
  bool in_capture = false;        // recorded on a capturing stream
  int not_ready = 0;              // cudaEventQuery's cudaErrorNotReady answers since it was recorded
};

namespace nimbus::emu {
namespace {

std::mutex registry_mutex;
std::map<uintptr_t, size_t> registry;  // device allocations: start -> bytes
size_t registry_bytes = 0;             // their sum, for the memory limit
size_t memory_limit = 0;               // set_device_memory_limit; 0: none
std::atomic<int> sticky_error{0};      // set_sticky_error: an asynchronous fault's error, or 0

// Live streams, and the default stream's counters. Guarded by stream_mutex.
std::mutex stream_mutex;
std::set<cudaStream_t> live_streams;
std::set<cudaEvent_t> live_events;  // so that a destroyed stream's events stop naming it
StreamStats default_stream_stats;

// The counters of `s`, or nullptr (error set, naming `what`) if s is not live. Caller holds stream_mutex.
StreamStats* stream_counters(cudaStream_t s, const char* what);

thread_local cudaError_t last_error = cudaSuccess;  // per host thread, as in CUDA
thread_local std::string last_detail;

// Page-locked host blocks (cudaMallocHost): start -> bytes. Guarded by registry_mutex.
std::map<uintptr_t, size_t> pinned;
// The thread's capture interaction mode (cudaThreadExchangeStreamCaptureMode).
thread_local cudaStreamCaptureMode thread_capture_mode = cudaStreamCaptureModeGlobal;

// The allocation containing [p, p + bytes), or nullptr. Caller holds registry_mutex.
const std::pair<const uintptr_t, size_t>* find_allocation(const void* p, size_t bytes) {
  auto a = uintptr_t(p);
  auto it = registry.upper_bound(a);
  if (it == registry.begin()) return nullptr;
  --it;
  if (a >= it->first + it->second && !(a == it->first && it->second == 0)) return nullptr;
  if (a + bytes > it->first + it->second) return nullptr;
  return &*it;
}

cudaError_t fail(cudaError_t e, const std::string& detail) {
  set_last_error(e, detail);
  return e;
}

OrderSpec parse_order_env() {
  OrderSpec s;
  const char* e = std::getenv("EMU_ORDER");
  if (!e) return s;
  std::string v = e;
  if (v == "forward") s.order = Order::Forward;
  else if (v == "reverse") s.order = Order::Reverse;
  else if (v.rfind("shuffle", 0) == 0) {
    s.order = Order::Shuffle;
    if (v.size() > 8 && v[7] == ':') s.seed = std::strtoull(v.c_str() + 8, nullptr, 10);
  } else {
    throw Error(str("EMU_ORDER=", v, ": expected forward, reverse or shuffle[:seed]"));
  }
  return s;
}

OrderSpec& order_setting() {
  static OrderSpec s = parse_order_env();
  return s;
}
bool& strict_setting() {
  static bool s = [] {
    const char* e = std::getenv("EMU_STRICT");
    return !(e && std::string(e) == "0");
  }();
  return s;
}

StreamStats* stream_counters(cudaStream_t s, const char* what) {
  if (!s) return &default_stream_stats;
  if (live_streams.count(s)) return &s->stats;
  fail(cudaErrorInvalidResourceHandle,
       nimbus::str(what, ": stream ", static_cast<const void*>(s), " was never created or is already destroyed"));
  return nullptr;
}

// A call that is unsafe during stream capture (an allocation, a free, a synchronisation, a query, a
// synchronous copy) is about to run. CUDA's rule (cudaThreadExchangeStreamCaptureMode): a thread in
// relaxed mode may make it; a thread in thread-local mode may not while a capture it began is under
// way, unless that capture is relaxed; a thread in global mode (the default) may not either, nor while
// another thread's capture begun in global mode is under way. A refused call fails with
// cudaErrorStreamCaptureUnsupported and invalidates the captures that refused it, as on a GPU.
// Caller holds stream_mutex.
bool refused_in_capture(const char* what) {
  if (thread_capture_mode == cudaStreamCaptureModeRelaxed) return false;
  const std::thread::id me = std::this_thread::get_id();
  auto refuses = [&](cudaStream_t o) {
    if (!o->capture) return false;
    if (o->capture_thread == me) return o->capture_mode != cudaStreamCaptureModeRelaxed;
    return thread_capture_mode == cudaStreamCaptureModeGlobal && o->capture_mode == cudaStreamCaptureModeGlobal;
  };
  cudaStream_t active = nullptr;
  for (cudaStream_t o : live_streams)
    if (refuses(o)) active = o, o->invalidated = true;
  if (!active) return false;
  fail(cudaErrorStreamCaptureUnsupported,
       nimbus::str(what, " while stream ", static_cast<const void*>(active),
                   " is capturing a graph: not allowed during capture (the capture is now invalidated)"));
  return true;
}
// The same for a call that synchronises with stream `s`: refused whenever s itself captures.
bool refused_sync(cudaStream_t s, const char* what) {
  if (s && s->capture) {
    s->invalidated = true;
    fail(cudaErrorStreamCaptureUnsupported,
         nimbus::str(what, " on stream ", static_cast<const void*>(s),
                     ", which is capturing a graph: a capture cannot be waited for (the capture is now invalidated)"));
    return true;
  }
  return refused_in_capture(what);
}

// Work is about to be issued on `s`: on a non-blocking stream it is queued (unfinished until the
// host synchronises); on stream 0, in strict mode, no non-blocking stream may have unfinished work
// (see the top of the file). False, with the error set, otherwise. Caller holds stream_mutex.
bool issue_on(cudaStream_t s, const char* what) {
  if (s && s->capture) return true;  // recorded, not queued
  if (s) {
    if (s->non_blocking) ++s->issued;
    return true;
  }
  if (!strict_setting()) return true;
  for (cudaStream_t o : live_streams)
    if (o->non_blocking && o->issued > o->finished) {
      fail(cudaErrorInvalidResourceHandle,
           nimbus::str(what, " on the legacy default stream while non-blocking stream ", static_cast<const void*>(o),
                       " has ", o->issued - o->finished, " unsynchronised work item(s): on a GPU it is not ordered "
                       "after them (synchronize that stream first, or issue this on it)"));
      return false;
    }
  return true;
}

void finish_all() {
  for (cudaStream_t o : live_streams) o->finished = o->issued, o->waited.clear();
}

// The host now knows that `s`'s work is done: so is, transitively, the work it waited for.
void finish(cudaStream_t s) {
  std::vector<cudaStream_t> todo{s};
  while (!todo.empty()) {
    cudaStream_t t = todo.back();
    todo.pop_back();
    for (const auto& [o, at] : t->waited)
      if (live_streams.count(o) && o->finished < at) {
        o->finished = at;
        todo.push_back(o);
      }
    t->waited.clear();
  }
}

std::atomic<bool>& deferred_setting() {
  static std::atomic<bool> d{[] {
    const char* e = std::getenv("EMU_DEFER");
    return e && std::string(e) == "1";
  }()};
  return d;
}

// Runs `s`'s queued work up to place `upto` (UINT64_MAX: all of it), and first, at each wait marker,
// the other stream's work it waits for. One drain at a time (a recursive mutex: markers recurse), each
// item run without stream_mutex (a kernel or copy may need it). A marker leaves the queue only after
// the work it waits for has run, so a kernel that faults (an Error) in that work leaves it in place;
// a faulting item itself has run, as a faulted kernel on a GPU has. Caller holds no lock.
std::recursive_mutex drain_mutex;
void drain(cudaStream_t s, uint64_t upto) {
  if (!s) return;
  std::lock_guard<std::recursive_mutex> drain_lock(drain_mutex);
  for (;;) {
    cudaStream_t wait_on = nullptr;
    uint64_t wait_at = 0;
    {
      std::lock_guard<std::mutex> lock(stream_mutex);
      if (!live_streams.count(s) || s->deferred.empty() || s->deferred.front().seq > upto) return;
      wait_on = s->deferred.front().wait_on, wait_at = s->deferred.front().wait_at;
    }
    if (wait_on) drain(wait_on, wait_at);
    std::function<void()> run;
    {
      std::lock_guard<std::mutex> lock(stream_mutex);
      run = std::move(s->deferred.front().run);
      s->deferred.pop_front();
    }
    if (run) run();
  }
}
void drain_all() {
  std::vector<cudaStream_t> all;
  {
    std::lock_guard<std::mutex> lock(stream_mutex);
    all.assign(live_streams.begin(), live_streams.end());
  }
  for (cudaStream_t o : all) drain(o, UINT64_MAX);
}
// Does `s` (live) still hold queued work up to queue place `at`? Caller holds stream_mutex.
bool queued_up_to(cudaStream_t s, uint64_t at) {
  return s && live_streams.count(s) && !s->deferred.empty() && s->deferred.front().seq <= at;
}
// Queues `run` on `s` if s is a live, non-blocking, non-capturing stream and the mode defers, or s
// still holds queued work (the mode was just turned off: later work must not overtake it). Caller
// holds stream_mutex.
bool defer_on(cudaStream_t s, std::function<void()>& run) {
  if (!s || !live_streams.count(s) || s->capture || !s->non_blocking) return false;
  if (!deferred_setting() && s->deferred.empty()) return false;
  s->deferred.push_back({++s->queued, nullptr, 0, std::move(run)});
  return true;
}

// Counts one copy/memset on `s`; false (error set) if s is not live or the copy would be unordered.
bool count_copy(cudaStream_t s, const char* what) {
  std::lock_guard<std::mutex> lock(stream_mutex);
  StreamStats* st = stream_counters(s, what);
  if (st && !issue_on(s, what)) return false;
  if (st) ++st->copies;
  return st != nullptr;
}

}  // namespace

StreamStats stream_stats(cudaStream_t s) {
  std::lock_guard<std::mutex> lock(stream_mutex);
  NIMBUS_CHECK(!s || live_streams.count(s), "emu::stream_stats: stream ", static_cast<const void*>(s),
               " was never created or is already destroyed");
  return s ? s->stats : default_stream_stats;
}
bool is_live_stream(cudaStream_t s) {
  std::lock_guard<std::mutex> lock(stream_mutex);
  return !s || live_streams.count(s);
}
bool begin_launch_on(cudaStream_t s) {
  std::lock_guard<std::mutex> lock(stream_mutex);
  StreamStats* st = stream_counters(s, "launch");
  if (st && !issue_on(s, "a kernel launch")) return false;
  if (st) ++st->launches;
  return st != nullptr;
}

void set_order(OrderSpec spec) { order_setting() = spec; }
OrderSpec order() { return order_setting(); }
const char* order_name(Order o) {
  return o == Order::Forward ? "forward" : o == Order::Reverse ? "reverse" : "shuffled";
}
void set_strict(bool s) { strict_setting() = s; }
void set_deferred(bool d) {
  deferred_setting() = d;  // first: work queued from now on runs at once, after what is queued
  if (!d) drain_all();
}
bool deferred() { return deferred_setting(); }
bool strict() { return strict_setting(); }

// Also asked by CUDA threads (cp.async, TMA, address checks): there the lock orders nothing for TSan.
bool is_device_pointer(const void* p) {
  const TsanIgnoreSync quiet(in_kernel());
  std::lock_guard<std::mutex> lock(registry_mutex);
  return find_allocation(p, 0) != nullptr;
}
bool is_device_range(const void* p, size_t bytes) {
  const TsanIgnoreSync quiet(in_kernel());
  std::lock_guard<std::mutex> lock(registry_mutex);
  return find_allocation(p, bytes) != nullptr;
}

namespace {
std::mutex attribute_mutex;
std::map<const void*, size_t> smem_opt_in;  // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize
size_t device_smem_opt_in = kMaxDynamicSmemOptIn;  // set_smem_opt_in_limit
}  // namespace
size_t dynamic_smem_limit(const void* kernel) {
  std::lock_guard<std::mutex> lock(attribute_mutex);
  auto it = smem_opt_in.find(kernel);
  return std::min(it == smem_opt_in.end() ? kMaxDynamicSmem : it->second, device_smem_opt_in);
}
void set_smem_opt_in_limit(size_t bytes) {
  NIMBUS_CHECK(bytes >= kMaxDynamicSmem && bytes <= kMaxDynamicSmemOptIn, "emu::set_smem_opt_in_limit: ", bytes,
               " bytes is not in [48 KiB, 227 KiB]");
  std::lock_guard<std::mutex> lock(attribute_mutex);
  device_smem_opt_in = bytes;
}
size_t smem_opt_in_limit() {
  std::lock_guard<std::mutex> lock(attribute_mutex);
  return device_smem_opt_in;
}
size_t live_allocations() {
  std::lock_guard<std::mutex> lock(registry_mutex);
  return registry.size();
}
std::string last_error_detail() { return last_detail; }
void set_last_error(cudaError_t e, const std::string& detail) {
  last_error = e;
  last_detail = detail;
}
void set_device_memory_limit(size_t bytes) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  memory_limit = bytes;
}
void set_sticky_error(cudaError_t e) { sticky_error = int(e); }

}  // namespace nimbus::emu

using namespace nimbus::emu;

namespace {
bool refused(const char* what) {
  std::lock_guard<std::mutex> lock(stream_mutex);
  return refused_in_capture(what);
}
}  // namespace

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (!ptr) return fail(cudaErrorInvalidValue, "cudaMalloc: null output pointer");
  if (sticky_error) return fail(cudaError_t(sticky_error.load()), "cudaMalloc: an earlier kernel faulted");
  if (refused("cudaMalloc")) return cudaErrorStreamCaptureUnsupported;
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    if (memory_limit && registry_bytes + bytes > memory_limit)
      return fail(cudaErrorMemoryAllocation, nimbus::str("cudaMalloc: out of memory for ", bytes, " bytes (",
                                                         registry_bytes, " of the ", memory_limit, " bytes in use)"));
  }
  // 256-byte aligned like CUDA's, but exactly `bytes` long (no rounding up), so ASan flags a kernel
  // reading one element past the end, which a GPU's allocation granularity would hide.
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) p = nullptr;
  if (!p) return fail(cudaErrorMemoryAllocation, nimbus::str("cudaMalloc: out of memory for ", bytes, " bytes"));
  std::memset(p, 0xFF, bytes);
  std::lock_guard<std::mutex> lock(registry_mutex);
  registry[uintptr_t(p)] = bytes;
  registry_bytes += bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (!ptr) return cudaSuccess;
  if (refused("cudaFree")) return cudaErrorStreamCaptureUnsupported;
  drain_all();  // cudaFree synchronises the device: queued work that uses the block runs first
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    auto it = registry.find(uintptr_t(ptr));
    if (it == registry.end())
      return fail(cudaErrorInvalidValue, nimbus::str("cudaFree: ", ptr, " is not the start of a live allocation"));
    registry_bytes -= it->second;
    registry.erase(it);
  }
  std::free(ptr);
  std::lock_guard<std::mutex> lock(stream_mutex);
  finish_all();  // cudaFree synchronises the device
  return cudaSuccess;
}

cudaError_t cudaMallocHost(void** ptr, size_t bytes) {
  if (!ptr) return fail(cudaErrorInvalidValue, "cudaMallocHost: null output pointer");
  if (refused("cudaMallocHost")) return cudaErrorStreamCaptureUnsupported;
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) p = nullptr;
  if (!p) return fail(cudaErrorMemoryAllocation, nimbus::str("cudaMallocHost: out of memory for ", bytes, " bytes"));
  std::memset(p, 0xFF, bytes);
  std::lock_guard<std::mutex> lock(registry_mutex);
  pinned[uintptr_t(p)] = bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFreeHost(void* ptr) {
  if (!ptr) return cudaSuccess;
  if (refused("cudaFreeHost")) return cudaErrorStreamCaptureUnsupported;
  drain_all();  // as cudaFree
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    auto it = pinned.find(uintptr_t(ptr));
    if (it == pinned.end())
      return fail(cudaErrorInvalidValue, nimbus::str("cudaFreeHost: ", ptr, " is not the start of a cudaMallocHost block"));
    pinned.erase(it);
  }
  std::free(ptr);
  std::lock_guard<std::mutex> lock(stream_mutex);
  finish_all();  // cudaFreeHost synchronises the device
  return cudaSuccess;
}

bool nimbus::emu::is_pinned_range(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  auto a = uintptr_t(p);
  auto it = pinned.upper_bound(a);
  if (it == pinned.begin()) return false;
  --it;
  return a >= it->first && a + bytes <= it->first + it->second;
}

namespace {
// Checks a copy's direction and ranges (an error set and returned), then copies unless `copy` is false
// (an async copy is checked at the call, and again when it runs: its memory may be freed meanwhile).
cudaError_t memcpy_checked(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, bool copy = true) {
  if (bytes == 0) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    bool dst_dev = find_allocation(dst, 0), src_dev = find_allocation(src, 0);
    if (kind == cudaMemcpyDefault) kind = cudaMemcpyKind((src_dev ? 2 : 0) | (dst_dev ? 1 : 0));
    static const char* names[] = {"HostToHost", "HostToDevice", "DeviceToHost", "DeviceToDevice"};
    bool want_dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool want_src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (kind < 0 || kind > 3)
      return fail(cudaErrorInvalidValue, nimbus::str("cudaMemcpy: invalid kind ", int(kind)));
    if (dst_dev != want_dst_dev || src_dev != want_src_dev)
      return fail(cudaErrorInvalidValue,
                  nimbus::str("cudaMemcpy", names[kind], ": destination is ", dst_dev ? "device" : "host",
                              " memory and source is ", src_dev ? "device" : "host", " memory"));
    if (dst_dev && !find_allocation(dst, bytes))
      return fail(cudaErrorInvalidValue, nimbus::str("cudaMemcpy: ", bytes, " bytes at ", dst,
                                                     " run past the end of the destination allocation"));
    if (src_dev && !find_allocation(src, bytes))
      return fail(cudaErrorInvalidValue, nimbus::str("cudaMemcpy: ", bytes, " bytes at ", src,
                                                     " run past the end of the source allocation"));
  }
  if (copy) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t memset_checked(void* ptr, int value, size_t bytes, bool set = true) {
  if (bytes == 0) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    if (!find_allocation(ptr, bytes))
      return fail(cudaErrorInvalidValue,
                  nimbus::str("cudaMemset: ", bytes, " bytes at ", ptr, " are not inside one device allocation"));
  }
  if (set) std::memset(ptr, value, bytes);
  return cudaSuccess;
}
}  // namespace

namespace {
// If `s` is capturing, records `node` (after the checks a capture makes now) and returns true.
// Caller holds no lock.
bool captured(cudaStream_t s, EmuNode&& node, cudaError_t* result) {
  std::lock_guard<std::mutex> lock(stream_mutex);
  *result = cudaSuccess;
  if (defer_on(s, node.run)) return true;  // deferred mode: queued, run when waited for
  if (!s || !live_streams.count(s) || !s->capture) return false;
  s->capture->nodes.push_back(std::move(node));
  return true;
}
// The side of a copy that is pageable host memory (neither device memory nor cudaMallocHost's), or
// nullptr.
const void* pageable_side(const void* dst, const void* src, size_t bytes) {
  for (const void* p : {dst, src})
    if (!is_device_range(p, bytes) && !is_pinned_range(p, bytes)) return p;
  return nullptr;
}
// Deferred mode: a copy between a stream and pageable host memory is staged (host to device) or
// completed (device to host) at the call, after the stream's queued work, so it runs now.
bool pageable_now(cudaStream_t s, void* dst, const void* src, size_t bytes) {
  if (!s) return false;
  {
    std::lock_guard<std::mutex> lock(stream_mutex);
    if (!live_streams.count(s) || s->capture || (!deferred_setting() && s->deferred.empty())) return false;
  }
  if (!pageable_side(dst, src, bytes)) return false;
  drain(s, UINT64_MAX);
  return true;
}
// A copy into a capture: each host side must be page-locked (a pageable copy is staged by the
// driver at the call, which a graph cannot replay).
bool pageable_in_capture(cudaStream_t s, void* dst, const void* src, size_t bytes) {
  {
    std::lock_guard<std::mutex> lock(stream_mutex);
    if (!s || !live_streams.count(s) || !s->capture) return false;
  }
  const void* p = pageable_side(dst, src, bytes);
  if (!p) return false;
  std::lock_guard<std::mutex> lock(stream_mutex);
  s->invalidated = true;
  fail(cudaErrorStreamCaptureUnsupported,
       nimbus::str("cudaMemcpyAsync: ", bytes, " bytes at ", p, " are pageable host memory, which stream ",
                   static_cast<const void*>(s), " cannot capture (use cudaMallocHost; the capture is now invalidated)"));
  return true;
}
}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (refused("cudaMemcpy (synchronous)")) return cudaErrorStreamCaptureUnsupported;
  return count_copy(nullptr, "cudaMemcpy") ? memcpy_checked(dst, src, bytes, kind) : cudaErrorInvalidResourceHandle;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
  if (!count_copy(s, "cudaMemcpyAsync")) return cudaErrorInvalidResourceHandle;
  if (pageable_in_capture(s, dst, src, bytes)) return cudaErrorStreamCaptureUnsupported;
  if (pageable_now(s, dst, src, bytes)) return memcpy_checked(dst, src, bytes, kind);
  if (const cudaError_t e = memcpy_checked(dst, src, bytes, kind, false); e != cudaSuccess) return e;
  cudaError_t r;
  if (captured(s, {EmuNode::Copy, [=] { memcpy_checked(dst, src, bytes, kind); }}, &r)) return r;
  return memcpy_checked(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  if (refused("cudaMemset (synchronous)")) return cudaErrorStreamCaptureUnsupported;
  return count_copy(nullptr, "cudaMemset") ? memset_checked(ptr, value, bytes) : cudaErrorInvalidResourceHandle;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t s) {
  if (!count_copy(s, "cudaMemsetAsync")) return cudaErrorInvalidResourceHandle;
  if (const cudaError_t e = memset_checked(ptr, value, bytes, false); e != cudaSuccess) return e;
  cudaError_t r;
  if (captured(s, {EmuNode::Memset, [=] { memset_checked(ptr, value, bytes); }}, &r)) return r;
  return memset_checked(ptr, value, bytes);
}

cudaError_t cudaGetLastError() {
  cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return last_error; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureIsolation: return "cudaErrorStreamCaptureIsolation";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureIsolation: return "dependency created on uncaptured work in another stream";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
  }
  return "unknown error";
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue, "cudaGetDeviceCount: null pointer");
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device == 0 ? cudaSuccess
                     : fail(cudaErrorInvalidDevice, nimbus::str("cudaSetDevice(", device, "): the emulator has device 0 only"));
}
cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue, "cudaGetDevice: null pointer");
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (!value) return fail(cudaErrorInvalidValue, "cudaDeviceGetAttribute: null pointer");
  if (device != 0)
    return fail(cudaErrorInvalidDevice, nimbus::str("cudaDeviceGetAttribute: device ", device, ": the emulator has device 0 only"));
  if (attr != cudaDevAttrMaxSharedMemoryPerBlockOptin)
    return fail(cudaErrorInvalidValue, nimbus::str("cudaDeviceGetAttribute: attribute ", int(attr), " is not emulated"));
  *value = int(smem_opt_in_limit());
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  if (refused("cudaDeviceSynchronize")) return cudaErrorStreamCaptureUnsupported;
  drain_all();
  std::lock_guard<std::mutex> lock(stream_mutex);
  finish_all();
  if (sticky_error) return fail(cudaError_t(sticky_error.load()), "cudaDeviceSynchronize: an earlier kernel faulted");
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  if (!s) return fail(cudaErrorInvalidValue, "cudaStreamCreate: null pointer");
  if (flags > cudaStreamNonBlocking)
    return fail(cudaErrorInvalidValue, nimbus::str("cudaStreamCreateWithFlags: unknown flags ", flags));
  *s = new EmuStream;
  (*s)->non_blocking = flags == cudaStreamNonBlocking;
  std::lock_guard<std::mutex> lock(stream_mutex);
  live_streams.insert(*s);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (!s) return fail(cudaErrorInvalidResourceHandle, "cudaStreamDestroy: the default stream cannot be destroyed");
  drain(s, UINT64_MAX);  // its queued work still runs on a GPU; here, before the handle goes
  {
    std::lock_guard<std::mutex> lock(stream_mutex);
    if (!stream_counters(s, "cudaStreamDestroy")) return cudaErrorInvalidResourceHandle;
    if (s->capture)
      return fail(cudaErrorStreamCaptureUnsupported, nimbus::str("cudaStreamDestroy: stream ", static_cast<const void*>(s),
                                                                 " is capturing a graph; end the capture first"));
    live_streams.erase(s);
    for (cudaStream_t o : live_streams) {
      o->waited.erase(s);
      for (EmuDeferred& d : o->deferred)
        if (d.wait_on == s) d.wait_on = nullptr;  // its work has run (drained above)
    }
    for (cudaEvent_t e : live_events)
      if (e->stream == s) e->stream = nullptr;  // complete; a new stream may get this address
  }
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  {
    std::lock_guard<std::mutex> lock(stream_mutex);
    if (!stream_counters(s, "cudaStreamSynchronize")) return cudaErrorInvalidResourceHandle;
    if (refused_sync(s, "cudaStreamSynchronize")) return cudaErrorStreamCaptureUnsupported;
  }
  drain(s, UINT64_MAX);
  std::lock_guard<std::mutex> lock(stream_mutex);
  if (s) {
    s->finished = s->issued;
    finish(s);
  }
  if (sticky_error) return fail(cudaError_t(sticky_error.load()), "cudaStreamSynchronize: an earlier kernel faulted");
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: null event");
  std::unique_lock<std::mutex> lock(stream_mutex);
  StreamStats* st = stream_counters(s, "cudaStreamWaitEvent");
  if (st && ((s && s->capture) || e->in_capture)) {
    // A capture here is one stream's sequence: joining another stream in or out is not modelled.
    if (s && s->capture) s->invalidated = true;
    if (e->stream && live_streams.count(e->stream) && e->stream->capture) e->stream->invalidated = true;
    return fail(cudaErrorStreamCaptureIsolation,
                nimbus::str("cudaStreamWaitEvent: a dependency between stream ", static_cast<const void*>(s),
                            " and an event of another stream during capture (the emulator captures one stream "
                            "only; the capture is now invalidated)"));
  }
  if (st) ++st->waits;
  // Deferred mode: s's later work first runs the event's (a marker); stream 0 runs now, so it runs the
  // event's work now (below, without the lock).
  cudaStream_t run_now = nullptr;
  if (st && deferred_setting() && e->stream && e->stream != s && live_streams.count(e->stream)) {
    if (s && s->non_blocking && !s->capture) s->deferred.push_back({++s->queued, e->stream, e->queued_at, nullptr});
    else run_now = e->stream;
  }
  // Stream 0 waiting on an event of a non-blocking stream is ordered after that stream's work up to it.
  if (st && !s && e->stream && live_streams.count(e->stream) && e->stream->finished < e->at) e->stream->finished = e->at;
  // Another stream's: remembered, so that synchronising s finishes that work too.
  if (st && s && e->stream && e->stream != s && live_streams.count(e->stream)) {
    uint64_t& at = s->waited[e->stream];
    if (at < e->at) at = e->at;
  }
  if (run_now) {
    const uint64_t at = e->queued_at;
    lock.unlock();
    drain(run_now, at);
  }
  return st ? cudaSuccess : cudaErrorInvalidResourceHandle;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  if (!e) return fail(cudaErrorInvalidValue, "cudaEventCreate: null pointer");
  if (flags & ~3u) return fail(cudaErrorInvalidValue, nimbus::str("cudaEventCreateWithFlags: unknown flags ", flags));
  *e = new EmuEvent;
  std::lock_guard<std::mutex> lock(stream_mutex);
  live_events.insert(*e);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  {
    std::lock_guard<std::mutex> lock(stream_mutex);
    live_events.erase(e);
  }
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: null event");
  std::lock_guard<std::mutex> lock(stream_mutex);
  if (!stream_counters(s, "cudaEventRecord")) return cudaErrorInvalidResourceHandle;
  e->stream = s;
  e->at = s ? s->issued : 0;
  e->queued_at = s ? s->queued : 0;
  e->in_capture = s && s->capture;
  e->not_ready = 0;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventSynchronize: null event");
  cudaStream_t s = nullptr;
  uint64_t at = 0, queued_at = 0;
  {
    std::lock_guard<std::mutex> lock(stream_mutex);
    if (refused_sync(e->in_capture ? e->stream : nullptr, "cudaEventSynchronize"))
      return cudaErrorStreamCaptureUnsupported;
    s = e->stream, at = e->at, queued_at = e->queued_at;
  }
  drain(s, queued_at);
  std::lock_guard<std::mutex> lock(stream_mutex);
  if (s && live_streams.count(s) && s->finished < at) s->finished = at;
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
  if (!ms) return fail(cudaErrorInvalidValue, "cudaEventElapsedTime: null pointer");
  *ms = 0.0f;
  return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventQuery: null event");
  // Not while another thread runs queued work (it may be this event's). A GPU makes progress: after
  // kNotReadyAnswers answers for one recording, the next query runs the work, so a polling loop ends.
  constexpr int kNotReadyAnswers = 15;
  std::lock_guard<std::recursive_mutex> drain_lock(drain_mutex);
  cudaStream_t late = nullptr;
  {
    std::lock_guard<std::mutex> lock(stream_mutex);
    if (e->in_capture && e->stream && live_streams.count(e->stream) && e->stream->capture)
      return fail(cudaErrorStreamCaptureUnsupported, "cudaEventQuery: the event was recorded in an ongoing capture");
    if (refused_in_capture("cudaEventQuery")) return cudaErrorStreamCaptureUnsupported;
    if (queued_up_to(e->stream, e->queued_at)) {  // deferred mode: its work has not run
      if (++e->not_ready <= kNotReadyAnswers) return cudaErrorNotReady;
      late = e->stream;
    }
  }
  if (late) drain(late, e->queued_at);
  std::lock_guard<std::mutex> lock(stream_mutex);
  if (e->stream && live_streams.count(e->stream) && e->stream->finished < e->at) e->stream->finished = e->at;
  return cudaSuccess;
}

// ---- stream capture and graphs -----------------------------------------------------------------

bool nimbus::emu::capture_kernel(cudaStream_t s, std::function<void()>&& run) {
  cudaError_t r;
  return captured(s, {EmuNode::Kernel, std::move(run)}, &r);
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  std::lock_guard<std::mutex> lock(stream_mutex);
  if (!s) return fail(cudaErrorStreamCaptureUnsupported, "cudaStreamBeginCapture: the legacy default stream cannot capture");
  if (!stream_counters(s, "cudaStreamBeginCapture")) return cudaErrorInvalidResourceHandle;
  if (mode < cudaStreamCaptureModeGlobal || mode > cudaStreamCaptureModeRelaxed)
    return fail(cudaErrorInvalidValue, nimbus::str("cudaStreamBeginCapture: unknown mode ", int(mode)));
  if (s->capture)
    return fail(cudaErrorIllegalState, nimbus::str("cudaStreamBeginCapture: stream ", static_cast<const void*>(s),
                                                   " is already capturing"));
  s->capture = new EmuGraph;
  s->capture_mode = mode;
  s->capture_thread = std::this_thread::get_id();
  s->invalidated = false;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  if (!graph) return fail(cudaErrorInvalidValue, "cudaStreamEndCapture: null output pointer");
  *graph = nullptr;
  std::lock_guard<std::mutex> lock(stream_mutex);
  if (!s || !stream_counters(s, "cudaStreamEndCapture")) return s ? cudaErrorInvalidResourceHandle : fail(cudaErrorIllegalState, "cudaStreamEndCapture: the legacy default stream never captures");
  if (!s->capture)
    return fail(cudaErrorIllegalState, nimbus::str("cudaStreamEndCapture: stream ", static_cast<const void*>(s),
                                                   " is not capturing"));
  EmuGraph* g = s->capture;
  s->capture = nullptr;
  if (s->invalidated) {
    delete g;
    return fail(cudaErrorStreamCaptureInvalidated,
                "cudaStreamEndCapture: the capture was invalidated by an unsupported call during it");
  }
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  if (!status) return fail(cudaErrorInvalidValue, "cudaStreamIsCapturing: null output pointer");
  std::lock_guard<std::mutex> lock(stream_mutex);
  if (!stream_counters(s, "cudaStreamIsCapturing")) return cudaErrorInvalidResourceHandle;
  *status = !s || !s->capture ? cudaStreamCaptureStatusNone
            : s->invalidated  ? cudaStreamCaptureStatusInvalidated
                              : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode) {
  if (!mode) return fail(cudaErrorInvalidValue, "cudaThreadExchangeStreamCaptureMode: null pointer");
  std::swap(*mode, thread_capture_mode);
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags) {
  if (!exec || !graph) return fail(cudaErrorInvalidValue, "cudaGraphInstantiate: null pointer");
  if (flags != 0) return fail(cudaErrorInvalidValue, nimbus::str("cudaGraphInstantiate: flags ", flags, " are not emulated"));
  *exec = new EmuGraphExec{graph->nodes};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  if (!exec) return fail(cudaErrorInvalidValue, "cudaGraphLaunch: null graph");
  {
    std::lock_guard<std::mutex> lock(stream_mutex);
    if (!stream_counters(s, "cudaGraphLaunch")) return cudaErrorInvalidResourceHandle;
    if (s && s->capture)
      return fail(cudaErrorStreamCaptureUnsupported, "cudaGraphLaunch: launching a graph into a capture is not emulated");
    if (!issue_on(s, "cudaGraphLaunch")) return cudaErrorInvalidResourceHandle;
    ++(s ? s->stats : default_stream_stats).graph_launches;
  }
  // In order; the first failing node ends the replay with its error set (sticky), as a fault would.
  if (const cudaError_t pending = cudaPeekAtLastError(); pending != cudaSuccess) return pending;
  auto replay = [](const std::vector<EmuNode>& nodes) {
    for (const EmuNode& n : nodes) {
      n.run();
      if (cudaPeekAtLastError() != cudaSuccess) break;
    }
  };
  {
    std::lock_guard<std::mutex> lock(stream_mutex);
    if (s && s->non_blocking && !s->capture && (deferred_setting() || !s->deferred.empty())) {
      // Deferred mode: queued with a copy of the nodes (the exec may be destroyed before it runs).
      std::function<void()> queued = [replay, nodes = exec->nodes] { replay(nodes); };
      if (defer_on(s, queued)) return cudaSuccess;
    }
  }
  replay(exec->nodes);
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

nimbus::emu::GraphStats nimbus::emu::graph_stats(cudaGraph_t g) {
  NIMBUS_CHECK(g, "emu::graph_stats: null graph");
  GraphStats st;
  for (const EmuNode& n : g->nodes)
    ++(n.kind == EmuNode::Kernel ? st.kernels : n.kind == EmuNode::Copy ? st.copies : st.memsets);
  return st;
}

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  if (!func) return fail(cudaErrorInvalidDeviceFunction, "cudaFuncSetAttribute: null kernel");
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) {
    if (value < -1 || value > 100)
      return fail(cudaErrorInvalidValue, nimbus::str("cudaFuncSetAttribute: carveout ", value, " not in -1..100"));
    return cudaSuccess;
  }
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize)
    return fail(cudaErrorInvalidValue, nimbus::str("cudaFuncSetAttribute: attribute ", int(attr), " is not emulated"));
  const size_t most = smem_opt_in_limit();
  if (value < 0 || size_t(value) > most)
    return fail(cudaErrorInvalidValue, nimbus::str("cudaFuncSetAttribute: cudaFuncAttributeMaxDynamicSharedMemorySize ",
                                                   value, " is not in [0, ", most, "] (this device's opt-in limit)"));
  std::lock_guard<std::mutex> lock(attribute_mutex);
  smem_opt_in[func] = size_t(value);
  return cudaSuccess;
}
