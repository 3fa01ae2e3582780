/* launch.cu: host helpers shared by every launcher (compiled by nvcc and, as C++, by g++).
 *
 * Debug switch: with NIMBUS_CUDA_SYNC_CHECK=1 in the environment, check_launch() also waits for the
 * kernel to finish and raises its execution error (an illegal address, say) as an Error naming the
 * launcher that queued it. Without it such an error surfaces at the next synchronisation, named
 * after whatever happened to wait. Each of those waits counts as a host wait (stream.h). During a
 * graph capture it does not wait: a captured kernel is only recorded, and a wait would invalidate the
 * capture; a replay's faults surface at the next synchronisation.
 */
#include "kernels/cuda/compat.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "kernels/common/error.h"
#include "kernels/cuda/stream.h"  // capturing

namespace nimbus::cuda {

namespace {
std::atomic<bool> sync_check{[] {
  const char* v = std::getenv("NIMBUS_CUDA_SYNC_CHECK");
  return v && *v && std::strcmp(v, "0") != 0;
}()};
}  // namespace

// A device that cannot be asked (a sticky error, no device) sets no limit here: the launch that follows
// fails too, and check_launch names its op. On a GPU the answer is cached per device (the launchers ask
// at every launch); the emulator asks each time, as its tests change the device it models.
int64_t device_smem_opt_in() {
  int device = 0, bytes = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return INT64_MAX;
  }
#ifdef __CUDACC__
  static std::atomic<int> cached[64] = {};
  const bool cacheable = device >= 0 && device < 64;
  if (cacheable && cached[device].load(std::memory_order_relaxed) > 0) return cached[device].load(std::memory_order_relaxed);
#endif
  if (cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    (void)cudaGetLastError();
    return INT64_MAX;
  }
#ifdef __CUDACC__
  if (cacheable) cached[device].store(bytes, std::memory_order_relaxed);
#endif
  return bytes;
}

void allow_dynamic_smem(const void* kernel, size_t bytes, const char* what) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return;  // the launch that follows fails too, and check_launch names its op
  }
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, size_t> allowed;  // (kernel, device) -> bytes opted in to
  const std::lock_guard<std::mutex> lock(mutex);
  size_t& done = allowed[{kernel, device}];
  if (done >= bytes) return;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  if (e != cudaSuccess) (void)cudaGetLastError();
  NIMBUS_CHECK(e == cudaSuccess, what, ": cudaFuncSetAttribute (", bytes, " bytes of dynamic shared memory on device ",
               device, "): ", cudaGetErrorString(e));
  done = bytes;
}

bool sync_check_enabled() { return sync_check.load(std::memory_order_relaxed); }
void set_sync_check(bool on) { sync_check.store(on, std::memory_order_relaxed); }

void check_launch(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess && sync_check_enabled() && !capturing()) {  // a captured kernel is recorded, not run
    count_host_wait();
    e = cudaStreamSynchronize(launch_stream());
    if (e != cudaSuccess) (void)cudaGetLastError();
    if (e != cudaSuccess)
      throw Error(str(what, ": CUDA kernel failed (NIMBUS_CUDA_SYNC_CHECK): ", cudaGetErrorString(e)));
  }
  if (e == cudaSuccess) return;
#ifdef __CUDACC__
  std::string detail;
#else
  std::string detail = emu::last_error_detail();  // the emulator knows which limit was broken
#endif
  throw Error(str(what, ": CUDA launch failed: ", cudaGetErrorString(e), detail.empty() ? "" : " (" + detail + ")"));
}

}  // namespace nimbus::cuda
