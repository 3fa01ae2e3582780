/* runtime.cpp: the cuda* runtime subset on the CPU, and the emulator's global settings.
 *
 * Device memory is host memory kept in a registry (start -> size), so every copy and memset can
 * be checked: a copy's direction must match where its pointers live, and a device range must lie
 * inside one allocation. New allocations are filled with 0xFF bytes (a float NaN), so reading
 * memory nobody wrote shows up. Errors are sticky until cudaGetLastError(), as in CUDA; the
 * detailed text is in last_error_detail(). Everything runs synchronously; streams are live handles
 * in a set (use after destroy is an error) that count the work issued on them (stream_stats), and
 * events remember the stream and the point in it where they were recorded.
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
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>

#include "kernels/common/error.h"
#include "kernels/emu/device.h"  // kMaxDynamicSmem, kMaxDynamicSmemOptIn
#include "kernels/emu/runtime.h"

struct EmuStream {
  nimbus::emu::StreamStats stats;
  bool non_blocking = false;
  uint64_t issued = 0;    // work items issued on it
  uint64_t finished = 0;  // of those, how many the host (or stream 0) is known to be ordered after
};
struct EmuEvent {
  cudaStream_t stream = nullptr;  // where it was last recorded (nullptr: never, or stream 0)
  uint64_t at = 0;                // that stream's `issued` then
};

namespace nimbus::emu {
namespace {

std::mutex registry_mutex;
std::map<uintptr_t, size_t> registry;  // device allocations: start -> bytes

// Live streams, and the default stream's counters. Guarded by stream_mutex.
std::mutex stream_mutex;
std::set<cudaStream_t> live_streams;
StreamStats default_stream_stats;

// The counters of `s`, or nullptr (error set, naming `what`) if s is not live. Caller holds stream_mutex.
StreamStats* stream_counters(cudaStream_t s, const char* what);

thread_local cudaError_t last_error = cudaSuccess;  // per host thread, as in CUDA
thread_local std::string last_detail;

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

// Work is about to be issued on `s`: on a non-blocking stream it is queued (unfinished until the
// host synchronises); on stream 0, in strict mode, no non-blocking stream may have unfinished work
// (see the top of the file). False, with the error set, otherwise. Caller holds stream_mutex.
bool issue_on(cudaStream_t s, const char* what) {
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
  for (cudaStream_t o : live_streams) o->finished = o->issued;
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
bool strict() { return strict_setting(); }

bool is_device_pointer(const void* p) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  return find_allocation(p, 0) != nullptr;
}
bool is_device_range(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  return find_allocation(p, bytes) != nullptr;
}

namespace {
std::mutex attribute_mutex;
std::map<const void*, size_t> smem_opt_in;  // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize
}  // namespace
size_t dynamic_smem_limit(const void* kernel) {
  std::lock_guard<std::mutex> lock(attribute_mutex);
  auto it = smem_opt_in.find(kernel);
  return it == smem_opt_in.end() ? kMaxDynamicSmem : it->second;
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

}  // namespace nimbus::emu

using namespace nimbus::emu;

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (!ptr) return fail(cudaErrorInvalidValue, "cudaMalloc: null output pointer");
  // 256-byte aligned like CUDA's, but exactly `bytes` long (no rounding up), so ASan flags a kernel
  // reading one element past the end, which a GPU's allocation granularity would hide.
  void* p = nullptr;
  if (posix_memalign(&p, 256, bytes ? bytes : 1) != 0) p = nullptr;
  if (!p) return fail(cudaErrorMemoryAllocation, nimbus::str("cudaMalloc: out of memory for ", bytes, " bytes"));
  std::memset(p, 0xFF, bytes);
  std::lock_guard<std::mutex> lock(registry_mutex);
  registry[uintptr_t(p)] = bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (!ptr) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    auto it = registry.find(uintptr_t(ptr));
    if (it == registry.end())
      return fail(cudaErrorInvalidValue, nimbus::str("cudaFree: ", ptr, " is not the start of a live allocation"));
    registry.erase(it);
  }
  std::free(ptr);
  std::lock_guard<std::mutex> lock(stream_mutex);
  finish_all();  // cudaFree synchronises the device
  return cudaSuccess;
}

namespace {
cudaError_t memcpy_checked(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
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
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t memset_checked(void* ptr, int value, size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    if (!find_allocation(ptr, bytes))
      return fail(cudaErrorInvalidValue,
                  nimbus::str("cudaMemset: ", bytes, " bytes at ", ptr, " are not inside one device allocation"));
  }
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  return count_copy(nullptr, "cudaMemcpy") ? memcpy_checked(dst, src, bytes, kind) : cudaErrorInvalidResourceHandle;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
  return count_copy(s, "cudaMemcpyAsync") ? memcpy_checked(dst, src, bytes, kind) : cudaErrorInvalidResourceHandle;
}
cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  return count_copy(nullptr, "cudaMemset") ? memset_checked(ptr, value, bytes) : cudaErrorInvalidResourceHandle;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t s) {
  return count_copy(s, "cudaMemsetAsync") ? memset_checked(ptr, value, bytes) : cudaErrorInvalidResourceHandle;
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
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
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
    case cudaErrorLaunchFailure: return "unspecified launch failure";
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
cudaError_t cudaDeviceSynchronize() {
  std::lock_guard<std::mutex> lock(stream_mutex);
  finish_all();
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
  {
    std::lock_guard<std::mutex> lock(stream_mutex);
    if (!stream_counters(s, "cudaStreamDestroy")) return cudaErrorInvalidResourceHandle;
    live_streams.erase(s);
  }
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  std::lock_guard<std::mutex> lock(stream_mutex);
  if (!stream_counters(s, "cudaStreamSynchronize")) return cudaErrorInvalidResourceHandle;
  if (s) s->finished = s->issued;
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaStreamWaitEvent: null event");
  std::lock_guard<std::mutex> lock(stream_mutex);
  StreamStats* st = stream_counters(s, "cudaStreamWaitEvent");
  if (st) ++st->waits;
  // Stream 0 waiting on an event of a non-blocking stream is ordered after that stream's work up to it.
  if (st && !s && e->stream && live_streams.count(e->stream) && e->stream->finished < e->at) e->stream->finished = e->at;
  return st ? cudaSuccess : cudaErrorInvalidResourceHandle;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int flags) {
  if (!e) return fail(cudaErrorInvalidValue, "cudaEventCreate: null pointer");
  if (flags & ~3u) return fail(cudaErrorInvalidValue, nimbus::str("cudaEventCreateWithFlags: unknown flags ", flags));
  *e = new EmuEvent;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventRecord: null event");
  std::lock_guard<std::mutex> lock(stream_mutex);
  if (!stream_counters(s, "cudaEventRecord")) return cudaErrorInvalidResourceHandle;
  e->stream = s;
  e->at = s ? s->issued : 0;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!e) return fail(cudaErrorInvalidResourceHandle, "cudaEventSynchronize: null event");
  std::lock_guard<std::mutex> lock(stream_mutex);
  if (e->stream && live_streams.count(e->stream) && e->stream->finished < e->at) e->stream->finished = e->at;
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
  if (!ms) return fail(cudaErrorInvalidValue, "cudaEventElapsedTime: null pointer");
  *ms = 0.0f;
  return cudaSuccess;
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
  if (value < 0 || size_t(value) > kMaxDynamicSmemOptIn)
    return fail(cudaErrorInvalidValue, nimbus::str("cudaFuncSetAttribute: cudaFuncAttributeMaxDynamicSharedMemorySize ",
                                                   value, " is not in [0, ", kMaxDynamicSmemOptIn, "] (227 KiB on sm_90)"));
  std::lock_guard<std::mutex> lock(attribute_mutex);
  smem_opt_in[func] = size_t(value);
  return cudaSuccess;
}
