/* device.h: the CUDA-on-CPU emulator's device side, what a .cu file sees when g++ compiles it.
 *
 * Included only through kernels/cuda/compat.h (never directly by kernels). Every CUDA thread
 * is a fiber on the calling OS thread; the scheduler (scheduler.cpp) runs them in a chosen
 * order, releases __syncthreads() once every live thread of the block has arrived at the
 * same call site, and runs warp primitives behind a barrier that spans only the warp.
 * Anything a kernel uses that is not declared here fails to compile, on purpose.
 * Design and limits: docs/cuda-emulator.md; kernel contract: ../shared/reference/cuda-on-cpu.md §2.5.
 */
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/emu/runtime.h"

// ---------------------------------------------------------------------------------------------
// Qualifiers. __shared__ is thread_local: all fibers of a block share the OS thread's copy.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__ thread_local
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __grid_constant__  // a kernel parameter whose address may be taken (a CUtensorMap): by-value params are anyway

struct uint3 {
  unsigned int x, y, z;
};

// CUDA's vector types with CUDA's size and alignment, so `reinterpret_cast<const float4*>(p)[i]`
// compiles to one 16-byte access as on a GPU. A misaligned access is undefined there (a GPU faults);
// here UBSan (-fsanitize=alignment, part of scripts/test.sh --sanitize) reports it, and the checked
// load_vector/store_vector of kernels/cuda/tensor_core.h report it in every build.
struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned int x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned int x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned int x, unsigned int y) { return {x, y}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) { return {x, y, z, w}; }
static_assert(sizeof(float4) == 16 && alignof(float4) == 16 && sizeof(uint4) == 16 && alignof(uint4) == 16);

namespace nimbus::emu {

// ---------------------------------------------------------------------------------------------
// Thread coordinates of the running fiber (scheduler.cpp). Out of line on purpose: an inline
// read of an extern thread_local trips a g++ 12 + binutils UBSan false positive (the null check
// on the TLS address tests flags that the linker's TLS relaxation no longer sets).
#define EMU_NO_TSAN __attribute__((no_sanitize("thread")))
struct Coords {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
uint3 thread_idx();
uint3 block_idx();
dim3 block_dim();
dim3 grid_dim();
unsigned char* dynamic_smem();  // the block's dynamic shared memory (kMaxDynamicSmemOptIn bytes of storage)
size_t dynamic_smem_bytes();     // how many of them the running launch asked for

// ---------------------------------------------------------------------------------------------
// Synchronisation (scheduler.cpp). `file`/`line` identify the call site.
void syncthreads(const char* file, int line);

enum class WarpOp : int { Shfl, ShflUp, ShflDown, ShflXor, Ballot, Any, All, Syncwarp, Collective, Group };
// One lane's part in a warp-wide operation: waits for every lane in `mask`, returns this lane's
// result (the shuffled 32-bit value, or the ballot/any/all word). `arg` is srcLane/delta/laneMask.
uint32_t warp_op(WarpOp op, uint32_t mask, uint32_t value, int arg, int width, const char* file, int line);

template <typename T>
inline T shfl_generic(WarpOp op, uint32_t mask, T var, int arg, int width, const char* file, int line) {
  static_assert(sizeof(T) == 4 && std::is_trivially_copyable_v<T>, "emulated shuffles move 32-bit values only");
  uint32_t bits;
  std::memcpy(&bits, &var, 4);
  bits = warp_op(op, mask, bits, arg, width, file, line);
  std::memcpy(&var, &bits, 4);
  return var;
}

// Dynamic shared memory: one agreed name for the whole project (see DYNAMIC_SMEM in compat.h).
constexpr size_t kMaxDynamicSmem = 48 * 1024;        // CUDA's default limit without an opt-in attribute
constexpr int kMaxBlockThreads = 1024;              // threads in a block (every architecture since sm_20)
constexpr size_t kMaxDynamicSmemOptIn = 227 * 1024;  // sm_90's most, after cudaFuncSetAttribute (sm_80: 163 KiB)

// ---------------------------------------------------------------------------------------------
// For the instruction models (tensor_core.cpp): warp-collective instructions and checks.
//
// warp_collective: one lane's part in a warp-wide instruction with per-lane operands (mma.sync,
// ldmatrix.sync). Every lane of the warp must arrive from the same call site (`.aligned`: the same
// instruction); a lane that exited, or one waiting elsewhere, is reported like a warp-op deadlock,
// in both strict and lax mode (undefined on a GPU). The last lane to arrive calls
// fn(lanes), lanes[l] being lane l's `lane_data` (each lane's operands and result slots, on its own
// stack); fn returns "" or an error, which fails the launch naming the call site.
using CollectiveFn = std::string (*)(void* const* lanes);
void warp_collective(const char* name, CollectiveFn fn, void* lane_data, const char* file, int line);
// Fails the running CUDA thread's block with `msg` (the launch throws nimbus::Error); never returns.
[[noreturn]] void kernel_fault(std::string msg);
// Where an address lies, as far as the emulator knows: the block's dynamic shared memory, a
// cudaMalloc allocation (global), a fiber stack of the block (local), or elsewhere (a static
// __shared__ array is an ordinary thread_local, so "elsewhere" is where those live).
enum class MemSpace { DynamicShared, Global, Local, Other };
MemSpace classify_address(const void* p, size_t bytes);
int current_thread_id();          // linear id in the block of the running CUDA thread
bool in_kernel();                 // a block is running on this OS thread (its threads, or its scheduler)
uint64_t block_barriers();        // __syncthreads() releases so far in the running block
uint64_t block_syncwarps(int warp);  // __syncwarp() completions so far in that warp of the running block
uint64_t current_block_serial();  // changes with every block run on this OS thread
struct LaunchStats;
LaunchStats& current_block_stats();  // the running block's counters (summed into last_launch_stats)

// For the Hopper models (hopper.cpp).
//
// group_collective: like warp_collective, for a warpgroup: the 128 threads of 4 consecutive warps,
// the first warp's index a multiple of 4 (wgmma.*.sync.aligned, setmaxnreg). Every thread of the
// warpgroup must arrive from the same call site; fn(lanes) gets 128 lanes, lanes[i] being thread
// 128*(tid/128) + i. A warpgroup that the block does not fully contain is an error.
void group_collective(const char* name, CollectiveFn fn, void* lane_data, const char* file, int line);
// event_wait: suspends the running thread until another thread of the block calls event_wake(key)
// (an mbarrier whose phase it waits for changed); the caller then checks its condition again. When
// nothing can run, the deadlock report lists each waiting thread's `name`, call site and
// describe(key) (what the object still waits for). Keys are addresses of the models' own objects.
using DescribeFn = std::string (*)(const void* key);
void event_wait(const void* key, const char* name, DescribeFn describe, const char* file, int line);
void event_wake(const void* key);  // every thread of the block waiting on key becomes runnable

// ---------------------------------------------------------------------------------------------
// Launch. Runs fn(ctx) once per CUDA thread of every block. Errors in the kernel (barrier
// divergence, deadlock, a thread exiting while others wait, bad warp-op masks) throw
// nimbus::Error; an invalid configuration sets cudaErrorInvalidConfiguration like CUDA does.
// `smem_limit` is the kernel's dynamic shared memory limit (kMaxDynamicSmem unless raised with
// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)).
void run_kernel(dim3 grid, dim3 block, size_t smem, void (*fn)(void*), void* ctx,
                size_t smem_limit = kMaxDynamicSmem);

}  // namespace nimbus::emu

#define threadIdx (::nimbus::emu::thread_idx())
#define blockIdx (::nimbus::emu::block_idx())
#define blockDim (::nimbus::emu::block_dim())
#define gridDim (::nimbus::emu::grid_dim())
constexpr int warpSize = 32;

#define __syncthreads() ::nimbus::emu::syncthreads(__FILE__, __LINE__)
// (mask, var, arg[, width]) -> shfl_generic(op, mask, var, arg, width, file, line)
namespace nimbus::emu {
template <typename T>
inline T shfl_call(WarpOp op, const char* f, int l, uint32_t mask, T var, int arg, int width = 32) {
  return shfl_generic(op, mask, var, arg, width, f, l);
}
}  // namespace nimbus::emu
#define __shfl_sync(...) ::nimbus::emu::shfl_call(::nimbus::emu::WarpOp::Shfl, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::nimbus::emu::shfl_call(::nimbus::emu::WarpOp::ShflUp, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) \
  ::nimbus::emu::shfl_call(::nimbus::emu::WarpOp::ShflDown, __FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::nimbus::emu::shfl_call(::nimbus::emu::WarpOp::ShflXor, __FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(mask, pred) \
  ::nimbus::emu::warp_op(::nimbus::emu::WarpOp::Ballot, (mask), (pred) ? 1u : 0u, 0, 32, __FILE__, __LINE__)
#define __any_sync(mask, pred) \
  int(::nimbus::emu::warp_op(::nimbus::emu::WarpOp::Any, (mask), (pred) ? 1u : 0u, 0, 32, __FILE__, __LINE__))
#define __all_sync(mask, pred) \
  int(::nimbus::emu::warp_op(::nimbus::emu::WarpOp::All, (mask), (pred) ? 1u : 0u, 0, 32, __FILE__, __LINE__))
#define __syncwarp(...) ::nimbus::emu::syncwarp_call(__FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__)
namespace nimbus::emu {
inline void syncwarp_call(const char* f, int l, uint32_t mask = 0xffffffffu) {
  warp_op(WarpOp::Syncwarp, mask, 0, 0, 32, f, l);
}
}  // namespace nimbus::emu

// ---------------------------------------------------------------------------------------------
// Atomics: exactly the overloads CUDA has (no float atomicSub/Max/Min there, so none here).
// Relaxed __atomic builtins, so TSan sees atomics and OpenMP block parallelism is safe.
#define EMU_ATOMIC_RMW(name, T, builtin) \
  inline T name(T* a, T v) { return builtin(a, v, __ATOMIC_RELAXED); }
EMU_ATOMIC_RMW(atomicAdd, int, __atomic_fetch_add)
EMU_ATOMIC_RMW(atomicAdd, unsigned int, __atomic_fetch_add)
EMU_ATOMIC_RMW(atomicAdd, unsigned long long, __atomic_fetch_add)
EMU_ATOMIC_RMW(atomicSub, int, __atomic_fetch_sub)
EMU_ATOMIC_RMW(atomicSub, unsigned int, __atomic_fetch_sub)
EMU_ATOMIC_RMW(atomicExch, int, __atomic_exchange_n)
EMU_ATOMIC_RMW(atomicExch, unsigned int, __atomic_exchange_n)
EMU_ATOMIC_RMW(atomicExch, unsigned long long, __atomic_exchange_n)
#undef EMU_ATOMIC_RMW
namespace nimbus::emu {
// Compare-and-swap loop: *a = f(*a, v) atomically, returns the old value.
template <typename T, typename F>
inline T atomic_update(T* a, T v, F f) {
  T old = __atomic_load_n(a, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(a, &old, f(old, v), false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
}  // namespace nimbus::emu
inline int atomicMax(int* a, int v) { return nimbus::emu::atomic_update(a, v, [](int x, int y) { return x > y ? x : y; }); }
inline unsigned int atomicMax(unsigned int* a, unsigned int v) {
  return nimbus::emu::atomic_update(a, v, [](unsigned x, unsigned y) { return x > y ? x : y; });
}
inline int atomicMin(int* a, int v) { return nimbus::emu::atomic_update(a, v, [](int x, int y) { return x < y ? x : y; }); }
inline unsigned int atomicMin(unsigned int* a, unsigned int v) {
  return nimbus::emu::atomic_update(a, v, [](unsigned x, unsigned y) { return x < y ? x : y; });
}
inline float atomicAdd(float* a, float v) {
  // Generic __atomic CAS compares bytes, so a NaN already stored cannot make this loop forever.
  float old, next;
  __atomic_load(a, &old, __ATOMIC_RELAXED);
  do {
    next = old + v;
  } while (!__atomic_compare_exchange(a, &old, &next, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return old;
}
inline float atomicExch(float* a, float v) {
  float old;
  __atomic_exchange(a, &v, &old, __ATOMIC_RELAXED);
  return old;
}
inline int atomicCAS(int* a, int compare, int val) {
  __atomic_compare_exchange_n(a, &compare, val, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;  // the old value either way
}
inline unsigned int atomicCAS(unsigned int* a, unsigned int compare, unsigned int val) {
  __atomic_compare_exchange_n(a, &compare, val, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;
}
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long compare, unsigned long long val) {
  __atomic_compare_exchange_n(a, &compare, val, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---------------------------------------------------------------------------------------------
// Intrinsics mapped to host math. The fast-math ones are exact here; a GPU differs in the last bits.
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }  // NaN -> 0 on GPU
template <typename T>
inline T __ldg(const T* p) { return *p; }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline unsigned int __float_as_uint(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned int u) { float x; std::memcpy(&x, &u, 4); return x; }
// CUDA's device isnan (global namespace, float).
inline bool isnan(float x) { return std::isnan(x); }
// CUDA's global min/max overloads for the types our kernels use.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// ---------------------------------------------------------------------------------------------
// emu_launch(kernel, grid, block, smem, stream, args...): runs a kernel. Kernels are started
// through compat.h's launch(), which counts the launch and calls this (it is
// kernel<<<grid, block, smem, stream>>>(args...) under nvcc). Arguments are converted to the
// kernel's parameter types and copied once, like CUDA's by-value parameter buffer.
template <typename... P, typename... A>
void emu_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "launch: wrong number of kernel arguments");
  static_assert((std::is_trivially_copyable_v<std::decay_t<P>> && ...), "launch: kernel parameters must be POD");
  // Streams run in order on the host (unless deferred: runtime.h); the stream is checked (live) and
  // counted (emu::stream_stats).
  if (!::nimbus::emu::begin_launch_on(stream)) return;
  struct Call {
    void (*kernel)(P...);
    std::tuple<std::decay_t<P>...> params;
  } call{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
  const size_t limit = ::nimbus::emu::dynamic_smem_limit(reinterpret_cast<const void*>(kernel));
  if (!::nimbus::emu::launch_config_ok(grid, block, smem, limit)) return;  // at the call, as CUDA reports it
  auto run = [grid, block, smem, limit](Call& c) {
    ::nimbus::emu::run_kernel(grid, block, smem, [](void* p) {
      auto* call = static_cast<Call*>(p);
      std::apply(call->kernel, call->params);
    }, &c, limit);
  };
  // A capturing stream keeps a copy of the parameters (as a CUDA graph's kernel node does) and runs
  // nothing now; so does a deferred stream (runtime.h, set_deferred) until something waits for it.
  if (::nimbus::emu::capture_kernel(stream, [run, call]() mutable { run(call); })) return;
  run(call);
}
