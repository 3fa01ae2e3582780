/* test_emulator.cpp: the CUDA-on-CPU emulator's mechanics, one behaviour per test case.
 *
 * Small kernels written here exercise: coordinates, barrier counting, the barrier rules (early
 * exit, wrong site, deadlock), warp shuffles/votes against CUDA's documented semantics, atomics,
 * dynamic shared memory poisoning and limits, thread/block order control, a race that only an
 * order change exposes, and the runtime shim (poisoned malloc, checked memcpy, sticky errors).
 * Expected values come from CUDA's documented rules, computed independently in the test.
 */
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "kernels/common/error.h"
#include "kernels/cuda/tensor_core.h"  // cp_async_ca
#include "tests/emu/emu_util.h"

using namespace nimbus;
using namespace nimbus::test;
using emu::Order;

namespace {

// ---------------------------------------------------------------------------------------------
// Coordinates.
__global__ void coords_kernel(int* out) {
  int tid = int(threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y);
  int bid = int(blockIdx.x + blockIdx.y * gridDim.x + blockIdx.z * gridDim.x * gridDim.y);
  int nthreads = int(blockDim.x * blockDim.y * blockDim.z);
  int* o = out + 4 * (bid * nthreads + tid);
  o[0] = int(threadIdx.x) * 100 + int(threadIdx.y) * 10 + int(threadIdx.z);
  o[1] = int(blockIdx.x) * 100 + int(blockIdx.y) * 10 + int(blockIdx.z);
  o[2] = int(blockDim.x) * 100 + int(blockDim.y) * 10 + int(blockDim.z);
  o[3] = int(gridDim.x) * 100 + int(gridDim.y) * 10 + int(gridDim.z);
}

TEST_CASE("emu: threadIdx/blockIdx/blockDim/gridDim in 3-D launches") {
  dim3 grid(3, 2, 2), block(4, 3, 2);
  int nthreads = 24, nblocks = 12;
  DeviceBuffer<int> out(size_t(4 * nthreads * nblocks));
  for (Order o : kAllOrders) {
    ScopedOrder so(o);
    launch(coords_kernel, grid, block, 0, nullptr, out.p);
    auto h = out.download();
    for (int bz = 0; bz < 2; ++bz)
      for (int by = 0; by < 2; ++by)
        for (int bx = 0; bx < 3; ++bx)
          for (int tz = 0; tz < 2; ++tz)
            for (int ty = 0; ty < 3; ++ty)
              for (int tx = 0; tx < 4; ++tx) {
                int bid = bx + by * 3 + bz * 6, tid = tx + ty * 4 + tz * 12;
                const int* r = &h[size_t(4 * (bid * nthreads + tid))];
                REQUIRE(r[0] == tx * 100 + ty * 10 + tz);
                REQUIRE(r[1] == bx * 100 + by * 10 + bz);
                REQUIRE(r[2] == 432);
                REQUIRE(r[3] == 322);
              }
    CHECK(emu::last_launch_stats().blocks == nblocks);
    CHECK(emu::last_launch_stats().threads == nblocks * nthreads);
  }
}

// ---------------------------------------------------------------------------------------------
// Barriers.

// Rotates values through shared memory `rounds` times: each round needs both barriers, so any
// barrier that released early would read a stale or half-written neighbour.
__global__ void rotate_kernel(int* out, int rounds) {
  __shared__ int buf[256];
  int t = int(threadIdx.x), n = int(blockDim.x);
  int v = t + 1000 * int(blockIdx.x);
  for (int r = 0; r < rounds; ++r) {
    buf[t] = v;
    __syncthreads();
    v = buf[(t + 1) % n];
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

TEST_CASE("emu: __syncthreads releases once per call site visit and orders shared memory") {
  const int blocks = 3, threads = 96, rounds = 5;
  DeviceBuffer<int> out(size_t(blocks * threads));
  for (Order o : kAllOrders) {
    ScopedOrder so(o, 7);
    launch(rotate_kernel, blocks, threads, 0, nullptr, out.p, rounds);
    auto h = out.download();
    for (int b = 0; b < blocks; ++b)
      for (int t = 0; t < threads; ++t) REQUIRE(h[size_t(b * threads + t)] == (t + rounds) % threads + 1000 * b);
    CHECK(emu::last_launch_stats().barriers == int64_t(blocks) * rounds * 2);
  }
}

// The HIP-CPU failure mode: threads < 10 return before the barrier.
__global__ void early_exit_kernel(int* arrivals) {
  if (threadIdx.x < 10) return;
  __syncthreads();
  atomicAdd(arrivals, 1);
}

TEST_CASE("emu: a thread returning before a barrier is an error in strict mode, never a re-run") {
  DeviceBuffer<int> arrivals(1);
  for (Order o : kAllOrders) {
    ScopedOrder so(o);
    cudaMemset(arrivals.p, 0, sizeof(int));
    const std::string m = launch_error([&] { launch(early_exit_kernel, 1, 64, 0, nullptr, arrivals.p); });
    CHECK_MESSAGE(m.find("threads 0-9 exited while threads 10-63 wait at __syncthreads()") != std::string::npos, m);
    CHECK_MESSAGE(m.find("test_emulator.cpp") != std::string::npos, m);
  }
  {  // the same error when blocks run on 2 OS threads
    ScopedBlockThreads threads(2);
    CHECK_THROWS_WITH_AS(launch(early_exit_kernel, 4, 64, 0, nullptr, arrivals.p),
                         doctest::Contains("exited while threads 10-63 wait"), Error);
  }
  // Non-strict follows PTX exit: the barrier releases for the 54 live threads, each counted once.
  for (Order o : kAllOrders) {
    ScopedOrder so(o, 1, /*strict=*/false);
    cudaMemset(arrivals.p, 0, sizeof(int));
    launch(early_exit_kernel, 2, 64, 0, nullptr, arrivals.p);
    CHECK(arrivals.download()[0] == 2 * 54);
  }
}

constexpr int kFirstSiteLine = __LINE__ + 3;  // the line of the first __syncthreads below
__global__ void two_sites_kernel(int* out) {
  if (threadIdx.x % 2)
    __syncthreads();
  else
    __syncthreads();  // kFirstSiteLine + 2
  out[threadIdx.x] = 1;
}

TEST_CASE("emu: __syncthreads reached from two call sites is reported") {
  DeviceBuffer<int> out(64);
  const std::string m = launch_error([&] { launch(two_sites_kernel, 1, 64, 0, nullptr, out.p); });
  CHECK_MESSAGE(m.find("different call sites") != std::string::npos, m);
  CHECK_MESSAGE(m.find("test_emulator.cpp:" + std::to_string(kFirstSiteLine)) != std::string::npos, m);
  CHECK_MESSAGE(m.find("test_emulator.cpp:" + std::to_string(kFirstSiteLine + 2)) != std::string::npos, m);
}

// Lanes 0-15 of warp 0 wait at the block barrier; lanes 16-31 wait in __syncwarp for them.
__global__ void deadlock_kernel(int* out) {
  if (threadIdx.x >= 16 && threadIdx.x < 32)
    __syncwarp();
  else
    __syncthreads();
  out[threadIdx.x] = 1;
}

TEST_CASE("emu: deadlock is detected and names the waiting threads") {
  DeviceBuffer<int> out(64);
  for (Order o : kAllOrders) {
    ScopedOrder so(o);
    const std::string m = launch_error([&] { launch(deadlock_kernel, 1, 64, 0, nullptr, out.p); });
    CHECK_MESSAGE(m.find("deadlock") != std::string::npos, m);
    CHECK_MESSAGE(m.find("Threads 16-31 wait in __syncwarp") != std::string::npos, m);
    CHECK_MESSAGE(m.find("for threads 0-15 of its mask") != std::string::npos, m);
    CHECK_MESSAGE(m.find("Threads 0-15,32-63 wait at __syncthreads()") != std::string::npos, m);
  }
}

// ---------------------------------------------------------------------------------------------
// Warp primitives. Values are lane*10 + warp*1000 so the source lane of every result is visible.
enum ShflKind { kIdx, kUp, kDown, kXor };

__global__ void shuffle_kernel(int* out, int kind, int arg, int width) {
  int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  int v = lane * 10 + warp * 1000;
  int r = 0;
  switch (kind) {
    case kIdx: r = __shfl_sync(0xffffffffu, v, arg, width); break;
    case kUp: r = __shfl_up_sync(0xffffffffu, v, unsigned(arg), width); break;
    case kDown: r = __shfl_down_sync(0xffffffffu, v, unsigned(arg), width); break;
    default: r = __shfl_xor_sync(0xffffffffu, v, arg, width); break;
  }
  out[threadIdx.x] = r;
}

// Source lane per the CUDA programming guide (or -1: the lane keeps its own value).
int expected_source(int kind, int lane, int arg, int width) {
  int seg = lane / width * width;
  switch (kind) {
    case kIdx: return seg + (arg % width + width) % width;  // "srcLane modulo width", within the segment
    case kUp: return lane - arg >= seg ? lane - arg : -1;
    case kDown: return lane + arg < seg + width ? lane + arg : -1;
    default: {
      int j = lane ^ arg;  // earlier segments are reachable, later ones give the own value
      return j < seg + width ? j : -1;
    }
  }
}

TEST_CASE("emu: __shfl_sync/_up/_down/_xor follow CUDA's width and out-of-range rules") {
  DeviceBuffer<int> out(64);
  struct Case {
    int kind, arg, width;
  };
  const Case cases[] = {{kIdx, 5, 32},  {kIdx, 37, 32}, {kIdx, 3, 8},   {kIdx, 13, 8},  {kIdx, -1, 16},
                        {kUp, 1, 32},   {kUp, 3, 16},   {kUp, 40, 32},  {kDown, 5, 32}, {kDown, 2, 4},
                        {kDown, 16, 16}, {kXor, 1, 32}, {kXor, 16, 32}, {kXor, 4, 8},   {kXor, 8, 8},
                        {kXor, 31, 16}, {kIdx, 0, 1}};
  for (const Case& c : cases) {
    for (Order o : {Order::Forward, Order::Reverse}) {
      ScopedOrder so(o);
      launch(shuffle_kernel, 1, 64, 0, nullptr, out.p, c.kind, c.arg, c.width);
      auto h = out.download();
      for (int t = 0; t < 64; ++t) {
        int lane = t % 32, warp = t / 32;
        int src = expected_source(c.kind, lane, c.arg, c.width);
        int want = (src < 0 ? lane : src) * 10 + warp * 1000;
        REQUIRE_MESSAGE(h[size_t(t)] == want, "kind ", c.kind, " arg ", c.arg, " width ", c.width, " lane ", lane);
      }
    }
  }
}

__global__ void vote_kernel(unsigned* out) {
  int lane = int(threadIdx.x) % 32;
  bool pred = lane % 3 == 0;
  out[threadIdx.x * 4 + 0] = __ballot_sync(0xffffffffu, pred);
  out[threadIdx.x * 4 + 1] = unsigned(__any_sync(0xffffffffu, pred));
  out[threadIdx.x * 4 + 2] = unsigned(__all_sync(0xffffffffu, pred));
  out[threadIdx.x * 4 + 3] = unsigned(__all_sync(0xffffffffu, lane < 40));
}

TEST_CASE("emu: __ballot_sync/__any_sync/__all_sync") {
  DeviceBuffer<unsigned> out(64 * 4);
  launch(vote_kernel, 1, 64, 0, nullptr, out.p);
  auto h = out.download();
  unsigned want = 0;
  for (int l = 0; l < 32; l += 3) want |= 1u << l;
  for (int t = 0; t < 64; ++t) {
    CHECK(h[size_t(t * 4 + 0)] == want);
    CHECK(h[size_t(t * 4 + 1)] == 1u);
    CHECK(h[size_t(t * 4 + 2)] == 0u);
    CHECK(h[size_t(t * 4 + 3)] == 1u);
  }
}

// Only warp 1 shuffles (inside a branch): the warp barrier must not wait for warp 0.
// Half-warp masks: lanes 0-15 and 16-31 each reduce on their own.
__global__ void warp_scope_kernel(float* out) {
  int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  float v = float(lane);
  if (warp == 1) {
    unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
    for (int off = 8; off > 0; off /= 2) v += __shfl_down_sync(half, v, unsigned(off), 16);
  }
  out[threadIdx.x] = v;
}

TEST_CASE("emu: warp primitives are warp-scoped, with partial masks") {
  DeviceBuffer<float> out(64);
  for (Order o : kAllOrders) {
    ScopedOrder so(o);
    launch(warp_scope_kernel, 1, 64, 0, nullptr, out.p);
    auto h = out.download();
    CHECK(h[0] == 0.0f);
    CHECK(h[5] == 5.0f);
    CHECK(h[32] == float(0 + 15) * 16 / 2);        // lanes 0..15
    CHECK(h[48] == float(16 + 31) * 16 / 2);       // lanes 16..31
    CHECK(emu::last_launch_stats().warp_syncs == 8);  // 4 steps x 2 half-warps
  }
}

__global__ void bad_mask_kernel(int* out) { out[threadIdx.x] = __shfl_sync(0x0000fffeu, 1, 0); }
__global__ void bad_width_kernel(int* out) { out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1, 6); }
__global__ void outside_mask_kernel(int* out) {
  unsigned m = threadIdx.x < 16 ? 0xffffu : 0xffff0000u;
  out[threadIdx.x] = __shfl_down_sync(m, int(threadIdx.x), 1u);  // lane 15 reads lane 16: not in its mask
}

TEST_CASE("emu: warp primitive misuse is reported") {
  DeviceBuffer<int> out(64);
  auto expect_error = [&](void (*k)(int*), dim3 block, const std::string& text) {
    const std::string m = launch_error([&] { launch(k, 1, block, 0, nullptr, out.p); });
    CHECK_MESSAGE(m.find(text) != std::string::npos, m);
  };
  expect_error(bad_mask_kernel, 32, "that excludes itself");
  expect_error(bad_width_kernel, 32, "width 6 is not a power of two");
  expect_error(bad_mask_kernel, 40, "warp primitives need a multiple of 32");
  expect_error(outside_mask_kernel, 32, "lane 15 reads lane 16 which is not in mask");
}

// ---------------------------------------------------------------------------------------------
// Atomics.
__global__ void atomics_kernel(int* ints, unsigned* uints, float* floats) {
  int t = int(blockIdx.x * blockDim.x + threadIdx.x);
  atomicAdd(&ints[0], 1);
  atomicMax(&ints[1], t);
  atomicMin(&ints[2], -t);
  atomicSub(&ints[3], 2);
  atomicAdd(&uints[0], 3u);
  atomicMax(&uints[1], unsigned(t) * 2u);
  atomicMin(&uints[2], unsigned(t) + 5u);
  atomicSub(&uints[3], 1u);
  atomicAdd(&floats[0], 0.5f);
  // A CAS loop: each thread adds 1 to ints[4] by compare-and-swap.
  int old = atomicAdd(&ints[4], 0), assumed;  // an atomic read: a plain one would race with the CAS
  do {
    assumed = old;
    old = atomicCAS(&ints[4], assumed, assumed + 1);
  } while (old != assumed);
  if (t == 7) atomicExch(&ints[5], 77), atomicExch(&floats[1], 7.5f), atomicCAS(&uints[4], 0u, 9u);
}

TEST_CASE("emu: atomics for int, unsigned and float") {
  const int blocks = 3, threads = 64, n = blocks * threads;
  DeviceBuffer<int> ints(std::vector<int>{0, -1, 0, 1000, 0, 0});
  DeviceBuffer<unsigned> uints(std::vector<unsigned>{0, 0, 1000, 500, 0});
  DeviceBuffer<float> floats(std::vector<float>{0, 0});
  launch(atomics_kernel, blocks, threads, 0, nullptr, ints.p, uints.p, floats.p);
  auto i = ints.download();
  auto u = uints.download();
  auto f = floats.download();
  CHECK(i[0] == n);
  CHECK(i[1] == n - 1);
  CHECK(i[2] == -(n - 1));
  CHECK(i[3] == 1000 - 2 * n);
  CHECK(i[4] == n);
  CHECK(i[5] == 77);
  CHECK(u[0] == 3u * n);
  CHECK(u[1] == 2u * (n - 1));
  CHECK(u[2] == 5u);
  CHECK(u[3] == 500u - n);
  CHECK(u[4] == 9u);
  CHECK(f[0] == 0.5f * n);  // exact: multiples of 0.5 below 2^24
  CHECK(f[1] == 7.5f);
}

// ---------------------------------------------------------------------------------------------
// Dynamic shared memory.
__global__ void smem_read_kernel(float* out, int write_first) {
  DYNAMIC_SMEM(float, s);
  if (write_first && blockIdx.x == 0) s[threadIdx.x] = 1.0f;  // block 0 writes; block 1 must not see it
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = s[threadIdx.x];
}

TEST_CASE("emu: dynamic shared memory is poisoned with NaN for every block") {
  DeviceBuffer<float> out(2 * 32);
  ScopedOrder so(Order::Forward);
  launch(smem_read_kernel, 2, 32, 32 * sizeof(float), nullptr, out.p, 1);
  auto h = out.download();
  for (int t = 0; t < 32; ++t) {
    CHECK(h[size_t(t)] == 1.0f);
    CHECK(std::isnan(h[size_t(32 + t)]));
  }
}

TEST_CASE("emu: invalid launch configurations set cudaErrorInvalidConfiguration and run nothing") {
  DeviceBuffer<float> out(64);
  cudaMemset(out.p, 0, 64 * sizeof(float));
  const dim3 blocks[] = {dim3(2048), dim3(32, 1, 65), dim3(0)};
  for (dim3 b : blocks) {
    launch(smem_read_kernel, 1, b, 0, nullptr, out.p, 0);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
    CHECK(cudaGetLastError() == cudaSuccess);  // reading clears it
  }
  launch(smem_read_kernel, 1, 32, emu::kMaxDynamicSmem + 4, nullptr, out.p, 0);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  CHECK(out.download()[0] == 0.0f);
  launch(smem_read_kernel, 1, 2048, 0, nullptr, out.p, 0);
  CHECK_THROWS_WITH_AS(cuda::check_launch("test"), doctest::Contains("at most 1024 threads per block"), Error);
}

// ---------------------------------------------------------------------------------------------
// Execution order.
__global__ void order_kernel(int* first_seen, int* ticket) {
  int t = atomicAdd(ticket, 1);  // runs before the thread's first switch away
  first_seen[t] = int(blockIdx.x * blockDim.x + threadIdx.x);
}

TEST_CASE("emu: forward, reverse and seeded shuffle orders of threads and blocks") {
  const int blocks = 3, threads = 32, n = blocks * threads;
  DeviceBuffer<int> seen(static_cast<size_t>(n)), ticket(1);
  auto run = [&](Order o, uint64_t seed) {
    ScopedOrder so(o, seed);
    cudaMemset(ticket.p, 0, sizeof(int));
    launch(order_kernel, blocks, threads, 0, nullptr, seen.p, ticket.p);
    return seen.download();
  };
  std::vector<int> fwd(n), rev(n);
  std::iota(fwd.begin(), fwd.end(), 0);
  std::reverse_copy(fwd.begin(), fwd.end(), rev.begin());
  CHECK(run(Order::Forward, 1) == fwd);
  CHECK(run(Order::Reverse, 1) == rev);
  auto s1 = run(Order::Shuffle, 1), s1b = run(Order::Shuffle, 1), s2 = run(Order::Shuffle, 2);
  CHECK(s1 == s1b);  // deterministic from the seed
  CHECK(s1 != s2);
  CHECK(s1 != fwd);
  CHECK(s1 != rev);
  auto sorted = s1;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == fwd);  // a permutation: every thread ran exactly once
  // Barrier-free kernel: each thread finishes before the next starts, so one stack suffices.
  run(Order::Forward, 1);
  CHECK(emu::last_launch_stats().max_stacks == 1);
}

// Shared-memory tree reduction. With `sync` false the barrier inside the loop is missing: a
// real race, which serial execution hides in some orders and not others.
__global__ void tree_sum_kernel(float* out, const float* x, int sync) {
  __shared__ float s[128];
  int t = int(threadIdx.x);
  s[t] = x[t];
  __syncthreads();
  for (int stride = int(blockDim.x) / 2; stride > 0; stride /= 2) {
    if (t < stride) s[t] += s[t + stride];
    if (sync) __syncthreads();
  }
  if (t == 0) out[0] = s[0];
}

TEST_CASE("emu: a missing barrier is exposed by changing the thread order") {
  std::vector<float> x(128);
  for (int i = 0; i < 128; ++i) x[size_t(i)] = float(i % 7 + 1);
  float want = std::accumulate(x.begin(), x.end(), 0.0f);
  DeviceBuffer<float> dx(x), out(1);
  auto run = [&](Order o, int sync) {
    ScopedOrder so(o, 3);
    launch(tree_sum_kernel, 1, 128, 0, nullptr, out.p, dx.p, sync);
    return out.download()[0];
  };
  for (Order o : kAllOrders) CHECK(run(o, 1) == want);
  float fwd = run(Order::Forward, 0), rev = run(Order::Reverse, 0), shuf = run(Order::Shuffle, 0);
  CHECK(fwd != rev);  // the order change makes the race visible
  CHECK(fwd != want);
  CHECK(shuf != want);
  MESSAGE("racy tree sum: forward ", fwd, ", reverse ", rev, ", shuffled ", shuf, ", correct ", want);
}

// Between two barriers each thread reads its neighbour's value and overwrites its own, which the
// other neighbour reads in the same interval: a missing barrier in the middle of a kernel. Serial
// execution gives the right answer in the forward order only; under TSan (tsan_check.sh) it is a race
// even though barriers come before and after it.
__global__ void missing_middle_barrier_kernel(float* out, const float* x) {
  __shared__ float s[64];
  const int t = int(threadIdx.x);
  s[t] = x[t];
  __syncthreads();
  const float next = t + 1 < 64 ? s[t + 1] : 0.f;
  s[t] = 2 * next;  // the bug: thread t - 1 may not have read s[t] yet
  __syncthreads();
  out[t] = s[t];
}

TEST_CASE("emu: a missing barrier between two barriers is exposed by changing the thread order") {
  std::vector<float> x(64), want(64);
  for (int i = 0; i < 64; ++i) x[size_t(i)] = float(i + 1);
  for (int i = 0; i + 1 < 64; ++i) want[size_t(i)] = 2 * x[size_t(i + 1)];  // want[63] = 0
  DeviceBuffer<float> dx(x), out(64);
  auto run = [&](Order o) {
    ScopedOrder so(o, 3);
    launch(missing_middle_barrier_kernel, 1, 64, 0, nullptr, out.p, dx.p);
    return out.download();
  };
  CHECK(run(Order::Forward) == want);  // thread t reads s[t + 1] before thread t + 1 overwrites it
  CHECK(run(Order::Reverse) != want);  // thread t + 1 has overwritten it
}

// Each lane writes shared memory, the warp exchanges values with a shuffle, and each lane then reads
// what its neighbour wrote. A shuffle orders no memory (CUDA: only __syncwarp does among a warp's
// lanes), so since Volta this is a race, although every order gives the right values here (a shuffle
// waits for the whole warp). Under TSan (tsan_check.sh) it is reported.
__global__ void shuffle_is_no_fence_kernel(float* out) {
  __shared__ float s[32];
  const int lane = int(threadIdx.x);
  s[lane] = float(lane);
  const float v = __shfl_xor_sync(0xffffffffu, float(lane), 1);
  out[lane] = s[lane ^ 1] + v;  // the bug: __syncwarp() belongs before this read
}

TEST_CASE("emu: a shuffle is no memory fence (the same values in every order)") {
  DeviceBuffer<float> out(32);
  for (Order o : kAllOrders) {
    ScopedOrder so(o, 3);
    launch(shuffle_is_no_fence_kernel, 1, 32, 0, nullptr, out.p);
    const std::vector<float> got = out.download();
    for (int lane = 0; lane < 32; ++lane) CHECK(got[size_t(lane)] == float(2 * (lane ^ 1)));
  }
}

// Each block writes its partial sum, then block 0 adds the partials up, with nothing between: a race
// between blocks (a GPU runs them in any order, at once; only a second launch or a grid-wide
// synchronisation would order them). Serial execution hides it in one block order and not another,
// and under TSan (kernels/emu/tsan_check.sh) the emulator reports it as a race between two blocks.
__global__ void inter_block_sum_kernel(float* partial, float* out, const float* x) {
  __shared__ float s[32];
  int t = int(threadIdx.x), b = int(blockIdx.x);
  s[t] = x[b * 32 + t];
  __syncthreads();
  if (t == 0) {
    float sum = 0;
    for (int i = 0; i < 32; ++i) sum += s[i];
    partial[b] = sum;
  }
  if (b == 0 && t == 0) {  // the bug: the other blocks' partials may not be written yet
    float total = 0;
    for (int i = 0; i < int(gridDim.x); ++i) total += partial[i];
    out[0] = total;
  }
}

TEST_CASE("emu: a race between blocks is exposed by changing the block order") {
  std::vector<float> x(4 * 32);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 5 + 1);
  const float want = std::accumulate(x.begin(), x.end(), 0.0f);
  DeviceBuffer<float> dx(x), partial(4), out(1);
  const ScopedBlockThreads serial(1);  // the block order decides the result: one OS thread
  auto run = [&](Order o) {
    partial.upload(std::vector<float>(4, 0.f));
    ScopedOrder so(o, 3);
    launch(inter_block_sum_kernel, 4, 32, 0, nullptr, partial.p, out.p, dx.p);
    return out.download()[0];
  };
  const float fwd = run(Order::Forward), rev = run(Order::Reverse);
  CHECK(rev == want);  // block 0 ran last: every partial was there
  CHECK(fwd != want);  // block 0 ran first: only its own
  MESSAGE("racy sum over blocks: forward ", fwd, ", reverse ", rev, ", correct ", want);
}

// The same kind of bug around a cp.async, whose address check takes the emulator's allocation-registry
// lock: under TSan that lock must not order block 1 after block 0 (it did once, hiding races).
// Block 0 writes scratch[0] before its copy; block 1 reads it after its own, in the same launch.
__global__ void cp_async_inter_block_kernel(float* scratch, float* out, const float* x) {
  DYNAMIC_SMEM(float, s);
  const int t = int(threadIdx.x), b = int(blockIdx.x);
  if (t == 0) scratch[b] = float(b + 1);
  cp_async_ca<4>(s + t, x + b * 32 + t);
  cp_async_wait_all();
  __syncthreads();
  if (t == 0 && b == 1) out[0] = scratch[0] + s[0];  // the bug: block 0 may not have written it
}

TEST_CASE("emu: a race between blocks around a cp.async is exposed by changing the block order") {
  std::vector<float> x(64);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(10 * i);
  DeviceBuffer<float> dx(x), scratch(2), out(1);
  const ScopedBlockThreads serial(1);
  auto run = [&](Order o) {
    scratch.upload({0.f, 0.f});
    ScopedOrder so(o, 3);
    launch(cp_async_inter_block_kernel, 2, 32, 32 * sizeof(float), nullptr, scratch.p, out.p, dx.p);
    return out.download()[0];
  };
  CHECK(run(Order::Forward) == 1 + x[32]);  // block 0 ran first
#ifndef __SANITIZE_THREAD__  // under TSan the forward order alone: there only a false order could hide it
  CHECK(run(Order::Reverse) == x[32]);      // block 1 ran first: scratch[0] still 0
#endif
}

// ---------------------------------------------------------------------------------------------
// Runtime shim.
TEST_CASE("emu: cudaMalloc poisons, cudaMemcpy checks direction and bounds") {
  int count = 0;
  CHECK(cudaGetDeviceCount(&count) == cudaSuccess);
  CHECK(count == 1);
  size_t live = emu::live_allocations();
  float* d = nullptr;
  REQUIRE(cudaMalloc(&d, 10 * sizeof(float)) == cudaSuccess);
  CHECK(emu::live_allocations() == live + 1);
  CHECK(emu::is_device_pointer(d + 9));
  CHECK_FALSE(emu::is_device_pointer(d + 10));
  std::vector<float> h(10, 3.0f);
  REQUIRE(cudaMemcpy(h.data(), d, 10 * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  for (float v : h) CHECK(std::isnan(v));

  std::vector<float> host(10, 1.0f);
  CHECK(cudaMemcpy(host.data(), d, 40, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);  // reversed
  CHECK(emu::last_error_detail().find("destination is host memory and source is device memory") != std::string::npos);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(cudaMemcpy(d + 2, host.data(), 40, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);  // past the end
  CHECK(emu::last_error_detail().find("run past the end") != std::string::npos);
  CHECK(cudaMemcpy(d, host.data(), 40, cudaMemcpyDefault) == cudaSuccess);  // inferred HostToDevice
  CHECK(cudaMemset(d, 0, 44) == cudaErrorInvalidValue);
  CHECK(cudaMemset(d, 0, 40) == cudaSuccess);
  CHECK(cudaFree(host.data()) == cudaErrorInvalidValue);
  CHECK(std::string(cudaGetErrorString(cudaErrorInvalidValue)) == "invalid argument");
  cudaGetLastError();
  CHECK(cudaFree(d) == cudaSuccess);
  CHECK(emu::live_allocations() == live);
  cudaStream_t s;
  cudaEvent_t e;
  CHECK(cudaStreamCreate(&s) == cudaSuccess);
  CHECK(cudaEventCreate(&e) == cudaSuccess);
  CHECK(cudaEventRecord(e, s) == cudaSuccess);
  CHECK(cudaStreamSynchronize(s) == cudaSuccess);
  CHECK(cudaEventDestroy(e) == cudaSuccess);
  CHECK(cudaStreamDestroy(s) == cudaSuccess);
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
}

__global__ void fill_one_kernel(float* out) { out[threadIdx.x] = 1.0f; }

TEST_CASE("emu: legacy-stream copies and launches must not overtake unsynchronised non-blocking streams") {
  ScopedOrder strict(Order::Forward, 1, true);
  float* d = nullptr;
  REQUIRE(cudaMalloc(&d, 32 * sizeof(float)) == cudaSuccess);
  std::vector<float> h(32);
  cudaStream_t nb = nullptr, blocking = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&nb, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamCreate(&blocking) == cudaSuccess);
  // A blocking stream is ordered with stream 0: no complaint.
  launch(fill_one_kernel, 1, 32, 0, blocking, d);
  CHECK(cudaMemcpy(h.data(), d, 128, cudaMemcpyDeviceToHost) == cudaSuccess);
  // Work queued on the non-blocking stream: a plain copy, a memset or a stream-0 launch would race it.
  launch(fill_one_kernel, 1, 32, 0, nb, d);
  CHECK(cudaMemcpy(h.data(), d, 128, cudaMemcpyDeviceToHost) == cudaErrorInvalidResourceHandle);
  CHECK(emu::last_error_detail().find("cudaMemcpy on the legacy default stream while non-blocking stream") !=
        std::string::npos);
  CHECK(emu::last_error_detail().find("1 unsynchronised work item") != std::string::npos);
  cudaGetLastError();
  CHECK(cudaMemset(d, 0, 128) == cudaErrorInvalidResourceHandle);
  cudaGetLastError();
  CHECK_THROWS_AS((launch(fill_one_kernel, 1, 32, 0, nullptr, d), cuda::check_launch("stream-0 launch")), Error);
  // On the same stream, or after the host synchronised with it, it is ordered.
  CHECK(cudaMemcpyAsync(h.data(), d, 128, cudaMemcpyDeviceToHost, nb) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(nb) == cudaSuccess);
  CHECK(cudaMemcpy(h.data(), d, 128, cudaMemcpyDeviceToHost) == cudaSuccess);
  // An event: synchronising on it, or stream 0 waiting on it, orders what came before it.
  cudaEvent_t e = nullptr;
  REQUIRE(cudaEventCreate(&e) == cudaSuccess);
  launch(fill_one_kernel, 1, 32, 0, nb, d);
  REQUIRE(cudaEventRecord(e, nb) == cudaSuccess);
  REQUIRE(cudaEventSynchronize(e) == cudaSuccess);
  CHECK(cudaMemcpy(h.data(), d, 128, cudaMemcpyDeviceToHost) == cudaSuccess);
  launch(fill_one_kernel, 1, 32, 0, nb, d);
  REQUIRE(cudaEventRecord(e, nb) == cudaSuccess);
  REQUIRE(cudaStreamWaitEvent(nullptr, e) == cudaSuccess);
  CHECK(cudaMemset(d, 0, 128) == cudaSuccess);
  // Work after the event is not covered by it; cudaDeviceSynchronize covers everything.
  REQUIRE(cudaEventRecord(e, nb) == cudaSuccess);
  launch(fill_one_kernel, 1, 32, 0, nb, d);
  REQUIRE(cudaEventSynchronize(e) == cudaSuccess);
  CHECK(cudaMemcpy(h.data(), d, 128, cudaMemcpyDeviceToHost) == cudaErrorInvalidResourceHandle);
  cudaGetLastError();
  {
    ScopedOrder lax(Order::Forward, 1, false);  // EMU_STRICT=0: not checked
    CHECK(cudaMemcpy(h.data(), d, 128, cudaMemcpyDeviceToHost) == cudaSuccess);
  }
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  CHECK(cudaMemcpy(h.data(), d, 128, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(h == std::vector<float>(32, 1.0f));
  cudaEventDestroy(e);
  cudaStreamDestroy(nb);
  cudaStreamDestroy(blocking);
  CHECK(cudaFree(d) == cudaSuccess);
}

}  // namespace
