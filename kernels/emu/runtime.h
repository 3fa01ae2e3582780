/* runtime.h: the emulator's host side: the CUDA runtime types and the cuda* subset our backend
 * uses (runtime.cpp), plus the emulator's own controls (execution order, strictness, deferred streams,
 * stats).
 *
 * Self-contained on purpose: the CPU build needs no CUDA toolkit. Types and error codes carry
 * CUDA's names and values. There is no libcudart: device memory is host memory from a registry
 * (so direction and bounds of every copy can be checked), filled with NaN bytes when allocated.
 */
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorIllegalState = 401,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchFailure = 719,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureIsolation = 905,
  cudaErrorStreamCaptureImplicit = 906,
};
enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
using cudaStream_t = struct EmuStream*;
using cudaEvent_t = struct EmuEvent*;
using cudaGraph_t = struct EmuGraph*;          // a captured sequence of work
using cudaGraphExec_t = struct EmuGraphExec*;  // an instantiated graph, launchable
// The driver's tensor map (cuda.h): 128 opaque bytes, 64-byte aligned. The emulator keeps its own
// encoding in them (kernels/emu/hopper.cpp); only nimbus::cuda::encode_tensor_map writes one.
typedef struct CUtensorMap_st {
  alignas(64) uint64_t opaque[16];
} CUtensorMap;
enum cudaStreamCaptureMode : int {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};
enum cudaStreamCaptureStatus : int {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2,
};
constexpr unsigned int cudaStreamDefault = 0, cudaStreamNonBlocking = 1;
constexpr unsigned int cudaEventDefault = 0, cudaEventDisableTiming = 2;

cudaError_t cudaMalloc(void** ptr, size_t bytes);
template <typename T>
inline cudaError_t cudaMalloc(T** ptr, size_t bytes) { return cudaMalloc(reinterpret_cast<void**>(ptr), bytes); }
cudaError_t cudaFree(void* ptr);
// Page-locked host memory: an ordinary host allocation, registered as pinned, so that a copy from or
// to it may be captured into a graph (a pageable one may not, as on a GPU).
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
template <typename T>
inline cudaError_t cudaMallocHost(T** ptr, size_t bytes) { return cudaMallocHost(reinterpret_cast<void**>(ptr), bytes); }
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = nullptr);
cudaError_t cudaMemset(void* ptr, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = nullptr);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetDeviceCount(int* count);  // 1: the emulated device
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceSynchronize();
// Device attributes: only the most dynamic shared memory a block may opt in to (227 KiB, an sm_90's,
// unless a test models another device with emu::set_smem_opt_in_limit); others are cudaErrorInvalidValue.
enum cudaDeviceAttr : int { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags = 0);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);  // always 0: no timings here
// cudaSuccess, or in deferred mode cudaErrorNotReady while the event's work is queued (15 times for
// one recording; the 16th query runs the work, so a host polling in a loop sees progress, as on a
// GPU), or a capture's refusal (docs/cuda-emulator.md, "Refusals").
cudaError_t cudaEventQuery(cudaEvent_t event);

// Stream capture and graphs (one stream per capture; see docs/cuda-emulator.md "Graphs"). While a
// stream captures, launches, async copies and memsets on it are recorded, not run; cudaGraphLaunch
// runs the recorded work in order on a stream. As on a GPU, in a capture that is not relaxed (and
// unless the thread swapped itself to relaxed) cudaMalloc, cudaFree, cudaMallocHost, cudaFreeHost,
// any synchronisation, synchronous copies and memsets, and async copies to or from pageable host memory
// fail with cudaErrorStreamCaptureUnsupported and invalidate the capture, whose cudaStreamEndCapture
// then fails with cudaErrorStreamCaptureInvalidated.
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status);
cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);

// Kernel attributes: only the dynamic shared memory opt-in. A kernel may use more than 48 KiB of
// dynamic shared memory only after cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
// bytes), bytes <= the device's opt-in limit (227 KiB, an sm_90's, unless set_smem_opt_in_limit set
// less); the launch is checked against both (cudaErrorInvalidConfiguration).
enum cudaFuncAttribute : int {
  cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
  cudaFuncAttributePreferredSharedMemoryCarveout = 9,  // accepted (0..100, or -1), no effect
};
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value);
template <typename... P>
inline cudaError_t cudaFuncSetAttribute(void (*func)(P...), cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(func), attr, value);
}

namespace nimbus::emu {

// Order in which threads within a block, and blocks within a grid, are run.
// Forward and Reverse are fixed; Shuffle draws a new permutation per block and per scheduling
// round from `seed`, deterministically. Default from EMU_ORDER=forward|reverse|shuffle[:seed].
enum class Order { Forward, Reverse, Shuffle };
struct OrderSpec {
  Order order = Order::Forward;
  uint64_t seed = 1;
};
void set_order(OrderSpec spec);
OrderSpec order();
const char* order_name(Order o);

// Strict (default; EMU_STRICT=0 turns it off): a thread that exits while others of its block wait
// at a barrier is an error. Non-strict follows PTX `exit`: the barrier then releases without it.
void set_strict(bool strict);
bool strict();

// Deferred streams (off by default; EMU_DEFER=1 turns it on): work queued on a non-blocking stream
// (kernels, async copies and memsets, graph replays) does not run at the call but as late as CUDA
// allows, when something waits for it: cudaStreamSynchronize, cudaEventSynchronize,
// cudaDeviceSynchronize, cudaFree or cudaFreeHost (they synchronise the device), cudaStreamDestroy, a
// copy between the stream and pageable host memory (CUDA stages it at the call), a stream that is not
// deferred (stream 0, a blocking stream) waiting on an event, or another stream's queue reaching a
// cudaStreamWaitEvent on it. cudaEventQuery says cudaErrorNotReady while the event's work is still
// queued (15 times; the 16th query runs it: a polling host sees progress). So a missing event wait between two streams, or a page-locked buffer rewritten
// before the copy that reads it has run, gives wrong numbers here, as it would on a GPU whose copy
// engine or other stream ran late; in the default mode everything runs at once and such a bug passes.
// A launch's configuration and a copy's direction and ranges are still checked at the call; a
// kernel's fault is raised by the call that runs it. last_launch_stats() then describes the last
// kernel run, not the last queued. Turning the mode off runs everything still queued (work queued
// after that runs at once, behind it).
void set_deferred(bool deferred);
bool deferred();

// OS threads running blocks in parallel (OpenMP); default from EMU_THREADS, else 1 (serial,
// deterministic). Results of a correct kernel must not depend on it.
void set_block_threads(int n);
int block_threads();

// What the last launch did, for tests (summed over blocks).
struct LaunchStats {
  int64_t blocks = 0, threads = 0;
  int64_t barriers = 0;    // __syncthreads releases
  int64_t warp_syncs = 0;  // warp-primitive releases (one per warp per call site reached)
  int64_t max_stacks = 0;  // most fibers suspended at once (stacks in use)
  // Tensor-core instruction models (kernels/emu/tensor_core.cpp), per warp-level instruction:
  int64_t mma = 0;                   // mma.sync executed (one per warp)
  int64_t ldmatrix = 0;              // ldmatrix executed (one per warp)
  int64_t ldmatrix_wavefronts = 0;   // shared-memory wavefronts they took (at least one per 8x8 matrix)
  int64_t smem_bank_conflicts = 0;   // extra wavefronts caused by bank conflicts (wavefronts - matrices)
  int64_t cp_async = 0;              // cp.async copies issued (one per thread)
  // Hopper models (kernels/emu/hopper.cpp):
  int64_t wgmma = 0;        // wgmma.mma_async executed (one per warpgroup)
  int64_t tma = 0;          // cp.async.bulk.tensor copies issued (one per issuing thread)
  int64_t mbarrier_phases = 0;  // mbarrier phases completed
};
LaunchStats last_launch_stats();
LaunchStats all_launch_stats();  // summed over every launch since the process started (max_stacks: the most)

// Streams run nothing asynchronously (unless deferred: set_deferred), but every stream is checked and
// counted, so tests can see where work went: a launch, async copy/memset or wait on a stream that was
// never created or is already destroyed fails with cudaErrorInvalidResourceHandle (the launch runs
// nothing). nullptr is the default stream; synchronous cudaMemcpy/cudaMemset count there.
struct StreamStats {
  int64_t launches = 0;  // launch() calls on it
  int64_t copies = 0;    // cudaMemcpy[Async] and cudaMemset[Async] on it
  int64_t waits = 0;     // cudaStreamWaitEvent on it
  int64_t graph_launches = 0;  // cudaGraphLaunch on it
};
StreamStats stream_stats(cudaStream_t s);  // throws nimbus::Error for a stream that is not live
bool is_live_stream(cudaStream_t s);       // nullptr (the default stream) is always live
// Called by launch() before running a kernel: false (error set) if `s` is not live.
bool begin_launch_on(cudaStream_t s);
// Called by launch() after begin_launch_on: if `s` is capturing, takes the kernel as a graph node
// (run by every replay) and returns true; in deferred mode, queues it on a non-blocking `s` and returns
// true; false otherwise (run it now).
bool capture_kernel(cudaStream_t s, std::function<void()>&& run);
// Called by launch() after begin_launch_on: false, with cudaErrorInvalidConfiguration set, when grid, block and
// dynamic shared memory are no valid launch (`smem_limit`: the kernel's dynamic_smem_limit).
bool launch_config_ok(dim3 grid, dim3 block, size_t smem, size_t smem_limit);
// Graph bookkeeping for tests: kernel, copy and memset nodes of a graph; replays of an exec.
struct GraphStats {
  int64_t kernels = 0, copies = 0, memsets = 0;
};
GraphStats graph_stats(cudaGraph_t g);
bool is_pinned_range(const void* p, size_t bytes);  // [p, p + bytes) inside one cudaMallocHost block

// Registry queries: is p inside a live cudaMalloc allocation? The detail of the last runtime error
// (cudaGetErrorString only gives the generic text).
bool is_device_pointer(const void* p);
bool is_device_range(const void* p, size_t bytes);  // [p, p + bytes) inside one live allocation
// The kernel's dynamic shared memory limit: kMaxDynamicSmem, or what cudaFuncSetAttribute set.
size_t dynamic_smem_limit(const void* kernel);
size_t live_allocations();
std::string last_error_detail();
void set_last_error(cudaError_t e, const std::string& detail);  // used by the scheduler

// Test models of two things only a GPU has:
//  - a device of limited memory: cudaMalloc fails with cudaErrorMemoryAllocation once the live
//    allocations would pass `bytes` (0: no limit, the default);
//  - a kernel that faulted asynchronously (an illegal address): from then on cudaMalloc,
//    cudaDeviceSynchronize and cudaStreamSynchronize return `e`, as CUDA's sticky errors do for the
//    rest of the process; set_sticky_error(cudaSuccess) ends the model (a test's fresh process).
void set_device_memory_limit(size_t bytes);
void set_sticky_error(cudaError_t e);
// A device whose blocks may opt in to at most `bytes` of dynamic shared memory (an sm_86 or sm_89:
// 99 KiB; an sm_80: 163 KiB), in [48 KiB, 227 KiB]; kMaxDynamicSmemOptIn, an sm_90's, is the default.
// cudaDeviceGetAttribute reports it, cudaFuncSetAttribute refuses more, and a launch is checked
// against the smaller of it and the kernel's own limit.
void set_smem_opt_in_limit(size_t bytes);
size_t smem_opt_in_limit();

}  // namespace nimbus::emu
