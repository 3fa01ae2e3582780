/* compat.h: the only header a kernel (.cu) includes. Real CUDA under nvcc, the emulator otherwise.
 *
 * Both worlds get the same spelling for the three things plain CUDA does not share with g++:
 *   launch(kernel, grid, block, smem, stream, args...)   == kernel<<<grid, block, smem, stream>>>(args...)
 *   DYNAMIC_SMEM(T, p);                                    T* p = the block's dynamic shared memory
 *   check_launch("what")                                   throws nimbus::Error if the launch failed
 * Launchers pass launch_stream() (the backend's current stream, stream.h) as `stream`.
 * Kernel contract (what may appear in a .cu): ../shared/reference/cuda-on-cpu.md §2.5 and
 * docs/cuda-emulator.md. __CUDA_ARCH__ branches belong here, never in kernels.
 *
 * A third world, for host-only C++ that drives the real device (the emulator's kernel tests
 * rebuilt for a GPU, tests/CMakeLists.txt test_cuda_real): g++ with -DNIMBUS_CUDA_RUNTIME gets the
 * real runtime API and the host helpers, but no launch() or device-side helpers (it holds no kernels).
 */
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels/cuda/stream.h"  // count_launch()

#if defined(NIMBUS_CUDA_RUNTIME) && !defined(__CUDACC__)
#include <cuda_runtime.h>
#elif defined(__CUDACC__)
#include <cuda_runtime.h>

template <typename... P, typename... A>
inline void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "launch: wrong number of kernel arguments");
  static_assert((std::is_trivially_copyable_v<std::decay_t<P>> && ...), "launch: kernel parameters must be POD");
  ::nimbus::cuda::count_launch();
  kernel<<<grid, block, smem, stream>>>(std::forward<A>(args)...);
}
#define DYNAMIC_SMEM(T, p)                                        \
  extern __shared__ __align__(16) unsigned char nimbus_dyn_smem[]; \
  T* p = reinterpret_cast<T*>(nimbus_dyn_smem)
#else
#include "kernels/emu/device.h"
template <typename... P, typename... A>
inline void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A&&... args) {
  ::nimbus::cuda::count_launch();
  emu_launch(kernel, grid, block, smem, stream, std::forward<A>(args)...);
}
#define DYNAMIC_SMEM(T, p) T* p = reinterpret_cast<T*>(::nimbus::emu::dynamic_smem())
#endif
// Architecture features, for the instruction headers (tensor_core.h, hopper.h) only: kernels never
// branch on them (docs/cuda-emulator.md, the kernel contract). In nvcc's device pass for an
// architecture, NIMBUS_DEVICE_SM90 is 1 from sm_90 on (TMA, mbarrier transaction counts,
// fence.proxy.async, elect.sync) and NIMBUS_DEVICE_SM90A is 1 for sm_90a only (wgmma, setmaxnreg,
// which exist only in the architecture-specific target). Both are 0 in nvcc's host pass and under the
// emulator, which models everything.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define NIMBUS_DEVICE_SM90 1
#else
#define NIMBUS_DEVICE_SM90 0
#endif
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define NIMBUS_DEVICE_SM90A 1
#else
#define NIMBUS_DEVICE_SM90A 0
#endif

// DYNAMIC_SMEM(T, p): p points to the block's dynamic shared memory, under one name for the whole
// project (CUDA requires all extern __shared__ arrays to agree anyway). Uninitialised at block
// start: the emulator fills it with NaN bytes for every block.


namespace nimbus::cuda {
// Host side: the stream every launcher uses (the current stream of stream.h).
inline cudaStream_t launch_stream() { return static_cast<cudaStream_t>(current_stream()); }
// Host side: raise the pending launch error (bad configuration, ...) as a nimbus::Error naming `what`;
// with NIMBUS_CUDA_SYNC_CHECK=1, also wait for the kernel and raise its execution error (launch.cu).
void check_launch(const char* what);
// Host side: the most dynamic shared memory a block of the current device may opt in to
// (cudaDevAttrMaxSharedMemoryPerBlockOptin: 227 KiB on sm_90, 163 KiB on sm_80, 99 KiB on sm_86/89);
// INT64_MAX when the device cannot be asked (the next launch then reports why).
int64_t device_smem_opt_in();
// Host side: opt `kernel` in to `bytes` of dynamic shared memory (above the default 48 KiB), once per
// kernel and device: the attribute belongs to the kernel as loaded on one device, so a process that
// drives two GPUs makes it on each. Raises an Error naming `what` when the device refuses. A host-side
// setting, safe during a stream capture.
void allow_dynamic_smem(const void* kernel, size_t bytes, const char* what);
template <typename... P>
void allow_dynamic_smem(void (*kernel)(P...), size_t bytes, const char* what) {
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), bytes, what);
}
bool sync_check_enabled();     // NIMBUS_CUDA_SYNC_CHECK at start-up, or the last set_sync_check()
void set_sync_check(bool on);
// Grid size for a grid-stride loop over n elements: enough blocks to cover n, capped (more
// blocks than that only add scheduling overhead; each thread then loops).
inline unsigned grid_for(int64_t n, int block, unsigned cap = 4096) {
  int64_t g = (n + block - 1) / block;
  return unsigned(g < 1 ? 1 : (g > cap ? cap : g));
}
#if defined(__CUDACC__) || !defined(NIMBUS_CUDA_RUNTIME)
// The launcher of a grid-stride kernel over n elements, on the current stream: nothing for n <= 0,
// else `kernel` with enough blocks of `block` threads, then check_launch(what).
template <typename... P, typename... A>
void launch_n(const char* what, void (*kernel)(P...), int64_t n, int block, A&&... args) {
  if (n <= 0) return;
  launch(kernel, grid_for(n, block), block, 0, launch_stream(), std::forward<A>(args)...);
  check_launch(what);
}
#endif
}  // namespace nimbus::cuda

#if defined(__CUDACC__) || !defined(NIMBUS_CUDA_RUNTIME)
// Grid-stride loop bounds for 1-D launches: for (i = grid_first(); i < n; i += grid_step()).
__device__ __forceinline__ int64_t grid_first() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_step() { return int64_t(gridDim.x) * blockDim.x; }
#endif
