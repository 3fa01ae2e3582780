/* emu_util.h: small helpers for the emulator tests: device buffers, the error of a failing launch and
 * scoped order/strict and deferred-stream settings.
 * Built with -DNIMBUS_CUDA_RUNTIME (test_cuda_real), the same tests run on a real GPU: the order
 * settings become no-ops and kOnEmulator is false for the few checks that only hold on the emulator. */
#pragma once
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "kernels/common/error.h"
#include "kernels/cuda/compat.h"

namespace nimbus::test {

// A cudaMalloc'd array of T, freed on scope exit; copies checked. Copies go on the backend's current
// stream (where the launchers queue their kernels) and wait for it: a plain cudaMemcpy runs on the
// legacy default stream, which the backend's non-blocking stream is not ordered with (a GPU then
// reads stale data; the emulator's strict mode refuses it).
template <typename T>
struct DeviceBuffer {
  T* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) { REQUIRE(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess); }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void upload(const std::vector<T>& host) {
    REQUIRE(host.size() == n);
    const cudaStream_t s = cuda::launch_stream();
    REQUIRE(cudaMemcpyAsync(p, host.data(), n * sizeof(T), cudaMemcpyHostToDevice, s) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
  }
  std::vector<T> download() const {
    std::vector<T> host(n);
    const cudaStream_t s = cuda::launch_stream();
    REQUIRE(cudaMemcpyAsync(host.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost, s) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
    return host;
  }
};

// The text of the Error that f() (a launch that must fail) throws; "(no error)" when it throws none,
// so that the caller's checks of the text fail.
template <typename F>
std::string launch_error(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// The contents of float device buffers one after the other: the outputs of one launch as the single
// vector that same_in_all_orders compares.
template <typename... Buffers>
std::vector<float> download_all(const Buffers&... buffers) {
  std::vector<float> all;
  for (const std::vector<float>& part : {buffers.download()...}) all.insert(all.end(), part.begin(), part.end());
  return all;
}

#ifdef NIMBUS_CUDA_RUNTIME
// On a real GPU (test_cuda_real) the hardware picks the order: one pass, the scoped settings do nothing.
}  // namespace nimbus::test
namespace nimbus::emu {
enum class Order { Forward };  // one pass, in whatever order the hardware runs it
inline const char* order_name(Order) { return "hardware"; }
}  // namespace nimbus::emu
namespace nimbus::test {
struct ScopedOrder {
  explicit ScopedOrder(emu::Order, uint64_t = 1, bool = true) {}
};
struct ScopedBlockThreads {
  explicit ScopedBlockThreads(int) {}
};
struct ScopedDeferred {
  ScopedDeferred() {}  // a GPU runs queued work late anyway
};
inline const emu::Order kAllOrders[] = {emu::Order::Forward};
constexpr bool kOnEmulator = false;
#else
constexpr bool kOnEmulator = true;

// Sets the emulator's thread/block order (and strictness) for one scope.
struct ScopedOrder {
  emu::OrderSpec saved = emu::order();
  bool saved_strict = emu::strict();
  explicit ScopedOrder(emu::Order o, uint64_t seed = 1, bool strict = true) {
    emu::set_order({o, seed});
    emu::set_strict(strict);
  }
  ~ScopedOrder() {
    emu::set_order(saved);
    emu::set_strict(saved_strict);
  }
};

// Runs blocks on n OS threads for one scope.
struct ScopedBlockThreads {
  int saved = emu::block_threads();
  explicit ScopedBlockThreads(int n) { emu::set_block_threads(n); }
  ~ScopedBlockThreads() { emu::set_block_threads(saved); }
};

// Deferred streams for one scope (kernels/emu/runtime.h, set_deferred): queued work runs only when
// something waits for it, as on a GPU that lags; the end of the scope runs what is still queued.
struct ScopedDeferred {
  bool saved = emu::deferred();  // EMU_DEFER=1 may have set it for the whole run
  ScopedDeferred() { emu::set_deferred(true); }
  ~ScopedDeferred() {
    try {  // runs what is still queued: a kernel that faults there must not end the program
      emu::set_deferred(saved);
    } catch (const std::exception& e) {
      FAIL_CHECK("queued work failed when deferral ended: ", e.what());
    }
  }
};

inline const emu::Order kAllOrders[] = {emu::Order::Forward, emu::Order::Reverse, emu::Order::Shuffle};
#endif

// The orders of the long tensor-core sweeps (tests/emu/test_cuda_tensor_core_ops.cpp). Under
// AddressSanitizer one, the shuffled: what ASan checks (every access in bounds and alive) does not
// depend on the order, the Release run checks all three bit for bit, and the three took ~4 minutes of
// the sanitizer run's CI time.
#if defined(__SANITIZE_ADDRESS__) && !defined(NIMBUS_CUDA_RUNTIME)
inline const emu::Order kSweepOrders[] = {emu::Order::Shuffle};
#else
inline constexpr const auto& kSweepOrders = kAllOrders;
#endif
// The mma.sync configurations (tc_dispatch.h kTcConfigs) that the newer per-configuration tests run: all
// six, or under AddressSanitizer, for the same reason, the largest and the smallest tile (0 and 4).
#if defined(__SANITIZE_ADDRESS__) && !defined(NIMBUS_CUDA_RUNTIME)
inline const int kSweepConfigs[] = {0, 4};
#else
inline const int kSweepConfigs[] = {0, 1, 2, 3, 4, 5};
#endif

}  // namespace nimbus::test
