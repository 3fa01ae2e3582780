/* test_emu_hopper.cpp: the emulator's Hopper instruction models (kernels/cuda/hopper.h,
 * kernels/emu/hopper.cpp) and the demonstration GEMM (kernels/cuda/hopper_demo.cu).
 *
 * Expected values come from host computations written here from the documentation, independently
 * of the models: the swizzles as "16-byte chunk XOR line index" tables, the wgmma canonical layouts
 * evaluated as CuTe shape:stride layouts (CUTLASS's make_gmma_desc comments), the descriptor fields
 * through a copy of CUTLASS's GmmaDescriptor bitfield struct, the register fragments from the PTX
 * ISA's formulas, and the products in float64:
 *   - mbarrier: phases over several rounds with several producers, counts, tx-counts, parity waits;
 *     misuse (use before init, before a barrier made the init visible, too many arrivals, tx-count
 *     out of range, a wait that never completes: deadlock report);
 *   - encode_tensor_map: the driver's rules one by one;
 *   - TMA: every swizzle mode, rank 2 and 3, element strides, OOB zero fill, against the host
 *     re-implementation and hand-checked chunk positions; poison before the wait; misuse;
 *   - wgmma: descriptor bits; bf16 (K- and MN-major, every swizzle, A in registers) and tf32 for
 *     N = 8 ... 256 against a float64 product on every thread's fragment; chains, scale-d, negation;
 *     misuse (missing fence.proxy.async, missing wgmma.fence, reading or writing in-flight registers,
 *     changing operands in flight, descriptors the model refuses, a warp of the warpgroup missing);
 *   - setmaxnreg (the register budget, .inc raises, .dec lowers), elect.sync;
 *   - the worked example: a 64x64xK bf16 GEMM from TMA + mbarrier + wgmma.
 */
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/common/bfloat16.h"
#include "kernels/common/error.h"
#include "kernels/cuda/hopper.h"
#include "kernels/cuda/hopper_demo.h"
#include "tests/emu/emu_util.h"

using namespace nimbus;
using namespace nimbus::test;
using emu::Order;

namespace {

float bitsf(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint32_t fbits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// ---------------------------------------------------------------------------------------------
// mbarrier. 128 threads; the producers are lanes 0 of warps 0-3 and the count is 5: thread 0 arrives
// with count 2, threads 32 and 64 with 1, thread 96 announces 48 bytes (expect_tx), arrives, then
// delivers them in three complete_tx of 16. Round r: each producer writes its slot first; every
// thread waits on parity r & 1 and records the sum of the slots it sees; thread 0 keeps its token.
__global__ void mbarrier_rounds_kernel(int rounds, int* seen, uint64_t* tokens) {
  __shared__ uint64_t bar;
  __shared__ int slot[4];
  const int tid = int(threadIdx.x);
  if (tid == 0) mbarrier_init(&bar, 5);
  __syncthreads();
  // The phase before the first (parity 1) counts as completed: no wait.
  seen[tid * (rounds + 1)] = mbarrier_try_wait_parity(&bar, 1) ? 1 : 0;
  __syncthreads();
  for (int r = 0; r < rounds; ++r) {
    if (tid % 32 == 0) {
      slot[tid / 32] = 1000 * r + tid;
      if (tid == 0) tokens[r] = mbarrier_arrive(&bar, 2);
      if (tid == 32 || tid == 64) (void)mbarrier_arrive(&bar);
      if (tid == 96) {
        mbarrier_expect_tx(&bar, 48);
        (void)mbarrier_arrive(&bar);
        for (int i = 0; i < 3; ++i) mbarrier_complete_tx(&bar, 16);
      }
    }
    mbarrier_wait_parity(&bar, uint32_t(r) & 1u);
    seen[tid * (rounds + 1) + 1 + r] = slot[0] + slot[1] + slot[2] + slot[3];
    __syncthreads();  // nobody writes a slot of round r+1 before everyone has read round r
  }
}

TEST_CASE("hopper: mbarrier phases over several rounds with several producers") {
  const int rounds = 5, n = 128;
  DeviceBuffer<int> seen(size_t(n * (rounds + 1)));
  DeviceBuffer<uint64_t> tokens{size_t(rounds)};
  for (Order o : kAllOrders) {
    ScopedOrder so(o, 17);
    launch(mbarrier_rounds_kernel, 1, n, 0, nullptr, rounds, seen.p, tokens.p);
    CHECK(emu::last_launch_stats().mbarrier_phases == rounds);
    auto h = seen.download();
    auto tk = tokens.download();
    for (int t = 0; t < n; ++t) {
      CHECK(h[size_t(t * (rounds + 1))] == 1);
      for (int r = 0; r < rounds; ++r) {
        const int want = 4000 * r + 0 + 32 + 64 + 96;  // every producer's slot of round r
        REQUIRE_MESSAGE(h[size_t(t * (rounds + 1) + 1 + r)] == want, "thread ", t, " round ", r);
      }
    }
    for (int r = 0; r < rounds; ++r) CHECK(tk[size_t(r)] == uint64_t(r));  // the emulator's token: the phase
  }
}

enum BarMisuse {
  kNoInit, kNoSync, kShuffleOnly, kSyncwarpSameWarp, kSyncwarpOtherWarp, kCountZero, kTooMany, kTxOverflow,
  kTxUnderflow, kNeverCompletes, kBadParity
};
__global__ void mbarrier_misuse_kernel(int mode) {
  __shared__ uint64_t bar;
  const int tid = int(threadIdx.x);
  if (mode == kNoInit) {
    (void)mbarrier_arrive(&bar);
    return;
  }
  if (mode == kCountZero) {
    if (tid == 0) mbarrier_init(&bar, 0);
    return;
  }
  if (tid == 0) mbarrier_init(&bar, 2);
  if (mode == kShuffleOnly) (void)__shfl_sync(0xffffffffu, tid, 0);  // orders no memory
  if (mode == kSyncwarpSameWarp || mode == kSyncwarpOtherWarp) __syncwarp();  // orders each warp's lanes
  if (mode != kNoSync && mode != kShuffleOnly && mode != kSyncwarpSameWarp && mode != kSyncwarpOtherWarp)
    __syncthreads();
  switch (mode) {
    case kNoSync:  // thread 1 arrives on a barrier whose init no barrier has published
    case kShuffleOnly:
    case kSyncwarpSameWarp:  // thread 1 is in thread 0's warp: its __syncwarp published the init
      if (tid == 1) (void)mbarrier_arrive(&bar);
      break;
    case kSyncwarpOtherWarp:  // thread 33 is not
      if (tid == 33) (void)mbarrier_arrive(&bar);
      break;
    case kTooMany:
      if (tid == 0) (void)mbarrier_arrive(&bar, 3);
      break;
    case kTxOverflow:
      if (tid == 0) mbarrier_expect_tx(&bar, 1u << 20);
      break;
    case kTxUnderflow:
      if (tid == 0) mbarrier_complete_tx(&bar, (1u << 20) - 1);
      if (tid == 0) mbarrier_complete_tx(&bar, 1);
      break;
    case kNeverCompletes:  // both arrive, but 24 announced bytes never come
      if (tid < 2) (void)mbarrier_arrive_expect_tx(&bar, tid == 0 ? 24 : 0);
      mbarrier_wait_parity(&bar, 0);
      break;
    default:
      (void)mbarrier_try_wait_parity(&bar, 2);
  }
}

TEST_CASE("hopper: mbarrier misuse is reported") {
  auto run = [](int mode) { return launch_error([&] { launch(mbarrier_misuse_kernel, 1, 64, 0, nullptr, mode); }); };
  std::string m = run(kNoInit);
  CHECK_MESSAGE((contains(m, "mbarrier.arrive at") && contains(m, "was never initialised")), m);
  m = run(kNoSync);
  CHECK_MESSAGE((contains(m, "by thread 1") && contains(m, "initialised by thread 0") &&
                    contains(m, "no __syncthreads() since (or __syncwarp() of that warp)")),
                m);
  m = run(kShuffleOnly);  // a shuffle orders no memory
  CHECK_MESSAGE((contains(m, "by thread 1") && contains(m, "no __syncthreads() since")), m);
  CHECK(run(kSyncwarpSameWarp) == "(no error)");
  m = run(kSyncwarpOtherWarp);
  CHECK_MESSAGE((contains(m, "by thread 33") && contains(m, "initialised by thread 0")), m);
  m = run(kCountZero);
  CHECK_MESSAGE(contains(m, "count 0 is not in [1, 2^20 - 1]"), m);
  m = run(kTooMany);
  CHECK_MESSAGE((contains(m, "3 arrival(s)") && contains(m, "only 2 of 2 pending")), m);
  m = run(kTxOverflow);
  CHECK_MESSAGE(contains(m, "tx-count overflow"), m);
  m = run(kTxUnderflow);
  CHECK_MESSAGE((contains(m, "tx-count underflow") && contains(m, "mbarrier.complete_tx at")), m);
  m = run(kNeverCompletes);
  CHECK_MESSAGE((contains(m, "deadlock") && contains(m, "Threads 0-63 wait in mbarrier.try_wait.parity at") &&
                    contains(m, "test_emu_hopper.cpp") && contains(m, "0 of 2 arrivals pending and tx-count 24") &&
                    contains(m, "no copy delivers")),
                m);
  m = run(kBadParity);
  CHECK_MESSAGE(contains(m, "parity 2 is not 0 or 1"), m);
}

// ---------------------------------------------------------------------------------------------
// encode_tensor_map: the rules of cuTensorMapEncodeTiled (cuda.h).
TEST_CASE("hopper: encode_tensor_map follows the driver's rules") {
  DeviceBuffer<float> g(4096);
  alignas(64) CUtensorMap map;
  cuda::TensorMapDesc ok;
  ok.type = cuda::TmaType::F32;
  ok.rank = 2;
  ok.global = g.p;
  ok.dims[0] = 60, ok.dims[1] = 50;
  ok.strides[0] = 64 * 4;
  ok.box[0] = 32, ok.box[1] = 8;
  ok.swizzle = cuda::TmaSwizzle::B128;
  cuda::encode_tensor_map(&map, ok);
  struct Case {
    void (*change)(cuda::TensorMapDesc&);
    const char* message;
  };
  const Case cases[] = {
      {[](cuda::TensorMapDesc& d) { d.rank = 6; }, "rank 6 is not in [1, 5]"},
      {[](cuda::TensorMapDesc& d) { d.rank = 0; }, "rank 0 is not in [1, 5]"},
      {[](cuda::TensorMapDesc& d) { d.global = static_cast<const char*>(d.global) + 8; }, "is not 16-byte aligned"},
      {[](cuda::TensorMapDesc& d) { d.global = static_cast<const char*>(d.global) + 64; },
       "is not 128-byte aligned, which a swizzled map needs"},
      {[](cuda::TensorMapDesc& d) { d.dims[1] = 0; }, "dims[1] = 0 is not in [1, 2^32]"},
      {[](cuda::TensorMapDesc& d) { d.dims[0] = (uint64_t(1) << 32) + 1; }, "is not in [1, 2^32]"},
      {[](cuda::TensorMapDesc& d) { d.strides[0] = 248; }, "strides[0] = 248 bytes is not a multiple of 16"},
      {[](cuda::TensorMapDesc& d) { d.strides[0] = uint64_t(1) << 40; }, "below 2^40"},
      {[](cuda::TensorMapDesc& d) { d.box[1] = 257; }, "box[1] = 257 is not in [1, 256]"},
      {[](cuda::TensorMapDesc& d) { d.box[0] = 6, d.swizzle = cuda::TmaSwizzle::None; },
       "inner dimension, 24 bytes, is not a multiple of 16"},
      {[](cuda::TensorMapDesc& d) { d.swizzle = cuda::TmaSwizzle::B64; }, "exceeds the 64-byte swizzle span"},
      {[](cuda::TensorMapDesc& d) { d.element_strides[1] = 9; }, "element_strides[1] = 9 is not in [1, 8]"},
      {[](cuda::TensorMapDesc& d) { d.element_strides[0] = 0; }, "element_strides[0] = 0"},
      {[](cuda::TensorMapDesc& d) { d.type = cuda::TmaType::I32, d.oob_fill = cuda::TmaOobFill::NanRequestZeroFma; },
       "NaN-request OOB fill needs a floating-point data type"},
  };
  for (const Case& c : cases) {
    cuda::TensorMapDesc d = ok;
    c.change(d);
    std::string m;
    try {
      cuda::encode_tensor_map(&map, d);
    } catch (const Error& e) {
      m = e.what();
    }
    CHECK_MESSAGE(contains(m, c.message), "want '", c.message, "', got '", m, "'");
  }
  std::string m;
  try {
    cuda::encode_tensor_map(reinterpret_cast<CUtensorMap*>(reinterpret_cast<char*>(&map) + 0), ok);  // aligned: fine
    alignas(64) unsigned char raw[192];
    cuda::encode_tensor_map(reinterpret_cast<CUtensorMap*>(raw + 32), ok);
  } catch (const Error& e) {
    m = e.what();
  }
  CHECK_MESSAGE(contains(m, "the CUtensorMap is not 64-byte aligned"), m);
  // Only a swizzled map needs the 128-byte base; an unswizzled one takes any 16-byte aligned address.
  cuda::TensorMapDesc plain = ok;
  plain.swizzle = cuda::TmaSwizzle::None;
  plain.global = static_cast<const char*>(ok.global) + 64;
  CHECK_NOTHROW(cuda::encode_tensor_map(&map, plain));
  // NaN-request fill is accepted for a float type (the copy model then refuses it: not modelled).
  cuda::TensorMapDesc nan = ok;
  nan.oob_fill = cuda::TmaOobFill::NanRequestZeroFma;
  cuda::encode_tensor_map(&map, nan);
}

// ---------------------------------------------------------------------------------------------
// TMA. One copy per launch: thread 0 initialises the barrier, announces the box and issues the copy;
// every thread waits and copies the destination's bytes out. `early` gets what thread 0 saw at the
// destination right after issuing, before waiting (the poison).
struct TmaArgs {
  int rank;
  int c[3];
  uint32_t box_bytes;
  uint32_t dst_offset;  // from the 1024-aligned dynamic shared memory
  int expect_extra;     // added to the expect_tx count (a wrong count must hang)
  int store_in_flight;  // thread 0 stores into the destination before waiting (strict: error)
  // How the barrier's init is made visible to the copy engine: 1 thread 0's fence.mbarrier_init (right),
  // 0 no fence, 2 thread 1's fence.mbarrier_init (orders only thread 1's inits), 3 thread 0's
  // fence.proxy.async (enough), 4 thread 1's fence.proxy.async before the __syncthreads() (it has not
  // seen the init), 5 thread 1's fence.proxy.async after it (it has).
  int fence = 1;
};
__global__ void tma_kernel(const __grid_constant__ CUtensorMap map, TmaArgs a, unsigned char* out,
                           unsigned char* early) {
  DYNAMIC_SMEM(unsigned char, smem);
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem);  // 8 bytes at the start; boxes from 1024 on
  unsigned char* dst = smem + a.dst_offset;
  const int tid = int(threadIdx.x), n = int(blockDim.x);
  if (tid == 0) mbarrier_init(bar, 1);
  const int fencer = a.fence == 1 || a.fence == 3 ? 0 : 1;
  if (tid == fencer && a.fence >= 1 && a.fence <= 2) fence_mbarrier_init();
  if (tid == fencer && (a.fence == 3 || a.fence == 4)) fence_proxy_async_shared();
  __syncthreads();
  if (tid == 1 && a.fence == 5) fence_proxy_async_shared();
  if (a.fence == 5) __syncthreads();  // thread 0 issues the copy after thread 1's fence
  if (tid == 0) {
    (void)mbarrier_arrive_expect_tx(bar, uint32_t(int(a.box_bytes) + a.expect_extra));
    if (a.rank == 2)
      tma_load_2d(dst, &map, bar, a.c[0], a.c[1]);
    else
      tma_load_3d(dst, &map, bar, a.c[0], a.c[1], a.c[2]);
    if (a.store_in_flight) dst[5] = 1;
  }
  if (tid == 0)  // right after the issue, before any thread waited: in every order
    for (uint32_t i = 0; i < a.box_bytes; ++i) early[i] = dst[i];
  mbarrier_wait_parity(bar, 0);
  for (uint32_t i = uint32_t(tid); i < a.box_bytes; i += uint32_t(n)) out[i] = dst[i];
}

// Host re-implementation. The box is a dense array, dim 0 fastest, element (i0, i1, i2) from
// coordinates (c0 + i0, c1 + i1*es1, c2 + i2*es2), zero outside [0, dim). Its bytes are then placed by
// the swizzle, read as a table of 128-byte lines of 16-byte chunks: chunk q of line L moves to chunk
// q ^ (L mod 8) (128B), q ^ (L mod 4) (64B: the two low chunk bits), q ^ (L mod 2) (32B: the low bit).
size_t swizzled_offset(size_t off, int swizzle) {
  const size_t line = off / 128, chunk = (off % 128) / 16, byte = off % 16;
  const size_t x = swizzle == 3 ? line % 8 : swizzle == 2 ? line % 4 : swizzle == 1 ? line % 2 : 0;
  return line * 128 + (chunk ^ x) * 16 + byte;
}

std::vector<unsigned char> tma_reference(const std::vector<unsigned char>& global, const cuda::TensorMapDesc& d,
                                         const int* c, int elem) {
  uint32_t n[3] = {1, 1, 1};
  for (int i = 0; i < d.rank; ++i) n[i] = i == 0 ? d.box[0] : (d.box[i] + d.element_strides[i] - 1) / d.element_strides[i];
  std::vector<unsigned char> img(size_t(n[0]) * n[1] * n[2] * size_t(elem), 0);
  for (uint32_t i2 = 0; i2 < n[2]; ++i2)
    for (uint32_t i1 = 0; i1 < n[1]; ++i1)
      for (uint32_t i0 = 0; i0 < n[0]; ++i0) {
        const int64_t g[3] = {c[0] + int64_t(i0), c[1] + int64_t(i1) * d.element_strides[1],
                              c[2] + int64_t(i2) * (d.rank > 2 ? d.element_strides[2] : 1)};
        bool in = true;
        size_t src = 0;
        for (int k = 0; k < d.rank; ++k) {
          in = in && g[k] >= 0 && uint64_t(g[k]) < d.dims[k];
          src += k == 0 ? size_t(g[0]) * size_t(elem) : size_t(g[k]) * size_t(d.strides[k - 1]);
        }
        const size_t off = ((size_t(i2) * n[1] + i1) * n[0] + i0) * size_t(elem);
        if (in) std::memcpy(&img[swizzled_offset(off, int(d.swizzle))], &global[src], size_t(elem));
      }
  return img;
}

struct TmaCase {
  cuda::TmaType type;
  int rank;
  uint64_t dims[3];
  uint32_t box[3];
  uint32_t es[3];
  cuda::TmaSwizzle swizzle;
  int c[3];
  const char* what;
};

TEST_CASE("hopper: TMA boxes in every swizzle mode equal the host re-implementation, OOB zero-filled") {
  using cuda::TmaSwizzle;
  using cuda::TmaType;
  // Global tensors of distinct bytes; dims chosen so boxes straddle every edge.
  const TmaCase cases[] = {
      {TmaType::BF16, 2, {100, 40, 1}, {64, 16, 1}, {1, 1, 1}, TmaSwizzle::B128, {-8, 30, 0}, "bf16 128B, left/bottom OOB"},
      {TmaType::BF16, 2, {100, 40, 1}, {64, 24, 1}, {1, 1, 1}, TmaSwizzle::B128, {60, -5, 0}, "bf16 128B, right/top OOB"},
      {TmaType::F32, 2, {50, 33, 1}, {16, 16, 1}, {1, 1, 1}, TmaSwizzle::B64, {40, 20, 0}, "f32 64B"},
      {TmaType::F32, 2, {50, 33, 1}, {8, 16, 1}, {1, 1, 1}, TmaSwizzle::B32, {-3, 2, 0}, "f32 32B"},
      {TmaType::U8, 2, {200, 20, 1}, {48, 7, 1}, {1, 1, 1}, TmaSwizzle::None, {190, 15, 0}, "u8 no swizzle"},
      {TmaType::BF16, 3, {64, 10, 6}, {64, 6, 4}, {1, 2, 3}, TmaSwizzle::B128, {0, 3, -2}, "bf16 3d 128B, element strides"},
      {TmaType::F32, 3, {24, 9, 5}, {16, 4, 3}, {1, 1, 1}, TmaSwizzle::B64, {4, -1, 3}, "f32 3d 64B"},
      {TmaType::BF16, 2, {100, 40, 1}, {64, 8, 1}, {1, 1, 1}, TmaSwizzle::B128, {-200, 100, 0}, "entirely outside"},
  };
  for (const TmaCase& tc : cases) {
    const int elem = cuda::tma_type_bytes(tc.type);
    cuda::TensorMapDesc d;
    d.type = tc.type;
    d.rank = tc.rank;
    // Rows padded to a multiple of 16 bytes, plus 32 bytes (strides need not be tight).
    const uint64_t row = (tc.dims[0] * uint64_t(elem) + 15) / 16 * 16 + 32;
    uint64_t total = row;
    for (int i = 0; i < tc.rank; ++i) {
      d.dims[i] = tc.dims[i], d.box[i] = tc.box[i], d.element_strides[i] = tc.es[i];
      if (i > 0) d.strides[i - 1] = total, total *= tc.dims[i];
    }
    d.swizzle = tc.swizzle;
    std::vector<unsigned char> host(total);
    std::mt19937 rng{uint32_t(total)};
    for (auto& b : host) b = uint8_t(rng() % 255);  // never 0xFF (the poison)
    DeviceBuffer<unsigned char> g(host);
    d.global = g.p;
    alignas(64) CUtensorMap map;
    cuda::encode_tensor_map(&map, d);
    const std::vector<unsigned char> want = tma_reference(host, d, tc.c, elem);
    TmaArgs a{tc.rank, {tc.c[0], tc.c[1], tc.c[2]}, uint32_t(want.size()), 1024, 0, 0};
    DeviceBuffer<unsigned char> out(want.size()), early(want.size());
    for (Order o : kAllOrders) {
      ScopedOrder so(o, 3);
      launch(tma_kernel, 1, 64, 1024 + want.size(), nullptr, map, a, out.p, early.p);
      CHECK(emu::last_launch_stats().tma == 1);
      const auto got = out.download();
      size_t bad = 0;
      for (size_t i = 0; i < want.size(); ++i) bad += got[i] != want[i];
      CHECK_MESSAGE(bad == 0, std::string(tc.what), ": ", bad, " bytes differ");
      const auto e = early.download();
      size_t poisoned = 0;
      for (unsigned char b : e) poisoned += b == 0xFF;
      CHECK_MESSAGE(poisoned == e.size(), std::string(tc.what), ": read before the wait saw data");
    }
  }
}

// Hand-checked positions, from CUTLASS's Swizzle<3,4,3> / <2,4,3> / <1,4,3> (address bits 7-9, 7-8, 7
// XORed into bits 4-6, 4-5, 4): a 16-byte chunk with a distinct byte value, where does it land?
TEST_CASE("hopper: TMA swizzle, hand-checked chunk positions") {
  struct Hand {
    cuda::TmaSwizzle sw;
    uint32_t row, chunk;  // in the box: row of `span` bytes, 16-byte chunk in it
    uint32_t want_byte;   // offset in shared memory
  };
  const Hand hand[] = {
      {cuda::TmaSwizzle::B128, 0, 0, 0},        {cuda::TmaSwizzle::B128, 1, 0, 128 + 16},
      {cuda::TmaSwizzle::B128, 3, 5, 384 + 96}, {cuda::TmaSwizzle::B128, 7, 7, 896 + 0},
      {cuda::TmaSwizzle::B128, 9, 2, 1152 + 48}, {cuda::TmaSwizzle::B64, 1, 2, 64 + 32},
      {cuda::TmaSwizzle::B64, 2, 0, 128 + 16},  {cuda::TmaSwizzle::B64, 7, 1, 448 + 32},
      {cuda::TmaSwizzle::B32, 3, 1, 96 + 16},   {cuda::TmaSwizzle::B32, 4, 0, 128 + 16},
      {cuda::TmaSwizzle::B32, 5, 1, 160 + 0},
  };
  for (const Hand& h : hand) {
    const uint32_t span = 16u << uint32_t(h.sw), rows = 16;
    std::vector<unsigned char> host(size_t(span) * rows, 0);
    for (int b = 0; b < 16; ++b) host[h.row * span + h.chunk * 16 + uint32_t(b)] = uint8_t(0xA0 + b);
    DeviceBuffer<unsigned char> g(host);
    cuda::TensorMapDesc d;
    d.type = cuda::TmaType::U8;
    d.global = g.p;
    d.dims[0] = span, d.dims[1] = rows, d.strides[0] = span, d.box[0] = span, d.box[1] = rows;
    d.swizzle = h.sw;
    alignas(64) CUtensorMap map;
    cuda::encode_tensor_map(&map, d);
    DeviceBuffer<unsigned char> out(host.size()), early(host.size());
    TmaArgs a{2, {0, 0, 0}, uint32_t(host.size()), 1024, 0, 0};
    launch(tma_kernel, 1, 32, 1024 + host.size(), nullptr, map, a, out.p, early.p);
    const auto got = out.download();
    for (int b = 0; b < 16; ++b)
      CHECK_MESSAGE(int(got[h.want_byte + uint32_t(b)]) == 0xA0 + b, "swizzle ", int(h.sw), " row ", h.row, " chunk ",
                    h.chunk);
    size_t nonzero = 0;
    for (unsigned char v : got) nonzero += v != 0;
    CHECK(nonzero == 16);
  }
}

TEST_CASE("hopper: TMA misuse is reported") {
  std::vector<unsigned char> host(64 * 64 * 2, 1);
  DeviceBuffer<unsigned char> g(host), out(8192), early(8192);
  cuda::TensorMapDesc d;
  d.type = cuda::TmaType::BF16;
  d.global = g.p;
  d.dims[0] = 64, d.dims[1] = 64, d.strides[0] = 128, d.box[0] = 64, d.box[1] = 8;
  d.swizzle = cuda::TmaSwizzle::B128;
  alignas(64) CUtensorMap map;
  cuda::encode_tensor_map(&map, d);
  auto run = [&](TmaArgs a, const CUtensorMap& m) {
    return launch_error([&] { launch(tma_kernel, 1, 32, 4096 + 1024, nullptr, m, a, out.p, early.p); });
  };
  std::string m = run({2, {0, 0, 0}, 1024, 1024 + 512, 0, 0}, map);
  CHECK_MESSAGE(contains(m, "destination shared address 1536 is not 1024-byte aligned"), m);
  m = run({2, {0, 0, 0}, 1024, 1024, 16, 0}, map);
  CHECK_MESSAGE((contains(m, "deadlock") && contains(m, "tx-count 16") &&
                    contains(m, "bytes announced by expect_tx that no copy delivers")),
                m);
  m = run({2, {0, 0, 0}, 1024, 1024, -16, 0}, map);
  CHECK_MESSAGE((contains(m, "deadlock") && contains(m, "tx-count -16")), m);
  m = run({2, {0, 0, 0}, 1024, 1024, 0, 1}, map);
  CHECK_MESSAGE(contains(m, "was written while the copy was in flight"), m);
  m = run({3, {0, 0, 0}, 1024, 1024, 0, 0}, map);
  CHECK_MESSAGE(contains(m, "the tensor map has rank 2"), m);
  // The barrier's init must reach the async proxy before a copy signals it.
  for (int fence : {0, 2, 4}) {
    CAPTURE(fence);
    m = run({2, {0, 0, 0}, 1024, 1024, 0, 0, fence}, map);
    CHECK_MESSAGE(contains(m, "is not yet visible to the async proxy that signals it"), m);
  }
  for (int fence : {3, 5}) {
    CAPTURE(fence);
    CHECK(run({2, {0, 0, 0}, 1024, 1024, 0, 0, fence}, map) == "(no error)");
  }
  cuda::TensorMapDesc plain = d;
  plain.swizzle = cuda::TmaSwizzle::None;
  alignas(64) CUtensorMap map_plain;
  cuda::encode_tensor_map(&map_plain, plain);
  m = run({2, {0, 0, 0}, 1024, 1024 + 64, 0, 0}, map_plain);
  CHECK_MESSAGE(contains(m, "is not 128-byte aligned"), m);
  run({2, {0, 0, 0}, 1024, 1024 + 128, 0, 0}, map_plain);  // 128 is enough without a swizzle
  cuda::TensorMapDesc narrow = d;
  narrow.box[0] = 32;  // 64 bytes with the 128B swizzle: the driver accepts, the model refuses
  alignas(64) CUtensorMap map_narrow;
  cuda::encode_tensor_map(&map_narrow, narrow);
  m = run({2, {0, 0, 0}, 512, 1024, 0, 0}, map_narrow);
  CHECK_MESSAGE(contains(m, "only when its inner dimension is exactly the swizzle span"), m);
  // The flushing and rounding types (F32_FTZ, TF32, TF32_FTZ): the driver accepts them; the model,
  // which copies bits, refuses them rather than copy what the hardware would change.
  for (cuda::TmaType type : {cuda::TmaType::F32_FTZ, cuda::TmaType::TF32, cuda::TmaType::TF32_FTZ}) {
    cuda::TensorMapDesc f = d;
    f.type = type;
    f.dims[0] = 32, f.box[0] = 32;  // 128-byte rows of 4-byte elements, the same 1024-byte box
    alignas(64) CUtensorMap map_f;
    cuda::encode_tensor_map(&map_f, f);
    m = run({2, {0, 0, 0}, 1024, 1024, 0, 0}, map_f);
    CHECK_MESSAGE(contains(m, "is not modelled (the copy would flush or round)"), m);
  }
  cuda::TensorMapDesc f32 = d;  // plain F32 is copied
  f32.type = cuda::TmaType::F32;
  f32.dims[0] = 32, f32.box[0] = 32;
  alignas(64) CUtensorMap map_f32;
  cuda::encode_tensor_map(&map_f32, f32);
  CHECK(run({2, {0, 0, 0}, 1024, 1024, 0, 0}, map_f32) == "(no error)");
  alignas(64) CUtensorMap junk{};
  m = run({2, {0, 0, 0}, 1024, 1024, 0, 0}, junk);
  CHECK_MESSAGE(contains(m, "was not written by nimbus::cuda::encode_tensor_map"), m);
  ScopedOrder lax(Order::Forward, 1, false);  // EMU_STRICT=0: the in-flight store is not checked
  CHECK(run({2, {0, 0, 0}, 1024, 1024, 0, 1}, map) == "(no error)");
}

// ---------------------------------------------------------------------------------------------
// wgmma descriptors: our encoding against a copy of CUTLASS's GmmaDescriptor bitfields
// (cute/arch/mma_sm90_desc.hpp): start_address_ bits [0,14), leading_byte_offset_ [16,30),
// stride_byte_offset_ [32,46), base_offset_ [49,52), layout_type_ [62,64), the first three in 16-byte units.
union CutlassGmmaDescriptor {
  uint64_t desc_;
  struct {
    uint16_t start_address_ : 14, : 2;
    uint16_t leading_byte_offset_ : 14, : 2;
    uint16_t stride_byte_offset_ : 14, : 2;
    uint8_t : 1, base_offset_ : 3, : 4;
    uint8_t : 6, layout_type_ : 2;
  } bitfield;
};

__global__ void desc_kernel(uint64_t* out) {
  DYNAMIC_SMEM(unsigned char, smem);
  if (threadIdx.x != 0) return;  // one writer (TSan reports the same value written by every thread)
  out[0] = wgmma_desc(smem + 2048 + 32, 16, 1024, WgmmaSwizzle::B128);
  out[1] = wgmma_desc(smem + 16, 128, 256, WgmmaSwizzle::None);
  out[2] = uint64_t(smem_address(smem + 4096));
}

TEST_CASE("hopper: wgmma descriptor fields match CUTLASS's GmmaDescriptor bitfields") {
  std::mt19937 rng(5);
  for (int i = 0; i < 2000; ++i) {
    const uint32_t start = (rng() & 0x3FFFF) & ~15u, lbo = (rng() & 0x3FFFF) & ~15u, sbo = (rng() & 0x3FFFF) & ~15u;
    const auto sw = WgmmaSwizzle(rng() % 4);
    CutlassGmmaDescriptor c{};
    c.bitfield.start_address_ = uint16_t(start >> 4);
    c.bitfield.leading_byte_offset_ = uint16_t(lbo >> 4);
    c.bitfield.stride_byte_offset_ = uint16_t(sbo >> 4);
    c.bitfield.base_offset_ = 0;
    c.bitfield.layout_type_ = uint8_t(sw);
    REQUIRE(wgmma_desc_encode(start, lbo, sbo, sw) == c.desc_);
  }
  // The names of the layout types: 128B = 1, 64B = 2, 32B = 3 (CUTLASS's GMMA::LayoutType).
  CHECK(wgmma_desc_encode(0, 0, 0, WgmmaSwizzle::B128) == uint64_t(1) << 62);
  CHECK(wgmma_desc_encode(0, 0, 0, WgmmaSwizzle::B32) == uint64_t(3) << 62);
  DeviceBuffer<uint64_t> out{3};
  launch(desc_kernel, 1, 32, 8192, nullptr, out.p);
  const auto h = out.download();
  CutlassGmmaDescriptor c{};
  c.desc_ = h[0];
  CHECK(int(c.bitfield.start_address_) == (2048 + 32) >> 4);  // the offset in the 1024-aligned dynamic shared memory
  CHECK(int(c.bitfield.leading_byte_offset_) == 1);
  CHECK(int(c.bitfield.stride_byte_offset_) == 64);
  CHECK(int(c.bitfield.layout_type_) == 1);
  c.desc_ = h[1];
  CHECK(int(c.bitfield.start_address_) == 1);
  CHECK(int(c.bitfield.leading_byte_offset_) == 8);
  CHECK(int(c.bitfield.stride_byte_offset_) == 16);
  CHECK(int(c.bitfield.layout_type_) == 0);
  CHECK(h[2] == 4096);
}

// ---------------------------------------------------------------------------------------------
// wgmma against float64. The shared-memory image of each operand is laid out on the host by
// evaluating CUTLASS's canonical GMMA layouts (make_gmma_desc's comments), in 16-byte units u128:
//   K-major:  INTERLEAVE ((8,n),2):((1,SBO),LBO)   swizzled ((8,n),2):((W,SBO),1)
//   MN-major: INTERLEAVE ((1,n),(8,k)):((X,SBO),(1,LBO))   swizzled ((W,n),(8,k)):((1,LBO),(W,SBO))
// composed with Swizzle<B,4,3> on the byte address (W = 2^B units per row).
struct Layout {
  WgmmaSwizzle sw;
  uint32_t base, lbo, sbo;  // bytes; base: the operand's offset in shared memory
};
int swz_bits(WgmmaSwizzle s) { return s == WgmmaSwizzle::B128 ? 3 : s == WgmmaSwizzle::B64 ? 2 : s == WgmmaSwizzle::B32 ? 1 : 0; }

// CuTe: a coordinate of one mode split colexicographically over its shape, dotted with its stride.
uint32_t mode_offset(uint32_t c, std::initializer_list<uint32_t> shape, std::initializer_list<uint32_t> stride) {
  uint32_t off = 0;
  auto st = stride.begin();
  for (uint32_t s : shape) off += (c % s) * *st++, c /= s;
  return off;
}
uint32_t cutlass_swizzle(uint32_t offset, int B) {  // Swizzle<B,4,3>
  const uint32_t yyy = ((1u << B) - 1u) << 7;
  return offset ^ ((offset & yyy) >> 3);
}
// Byte address of element (mn, k) of an operand with `elem`-byte elements (16 bytes = T elements).
uint32_t canonical_address(const Layout& L, bool mn_major, int mn, int k, int elem, int rows) {
  const int B = swz_bits(L.sw);
  const uint32_t W = 1u << B, T = 16u / uint32_t(elem), n = uint32_t(rows) / 8;
  const uint32_t SBO = L.sbo / 16, LBO = L.lbo / 16;
  uint32_t units, within;
  if (!mn_major) {
    units = mode_offset(uint32_t(mn), {8, n}, {B ? W : 1u, SBO}) + mode_offset(uint32_t(k) / T, {2}, {B ? 1u : LBO});
    within = (uint32_t(k) % T) * uint32_t(elem);
  } else {
    const uint32_t mu = uint32_t(mn) / T;  // MN unit
    units = (B ? mode_offset(mu, {W, n}, {1, LBO}) : mode_offset(mu, {1, n * 8}, {0, SBO})) +
            (B ? mode_offset(uint32_t(k), {8, 2}, {W, SBO}) : mode_offset(uint32_t(k), {8, 2}, {1, LBO}));
    within = (uint32_t(mn) % T) * uint32_t(elem);
  }
  return cutlass_swizzle(L.base + 16 * units + within, B);
}

struct WgArgs {
  uint32_t image_bytes;
  Layout a, b;
  int scale_d, twice, skip_fence;
};

template <int N, bool TF32, bool RS, int TA, int TB, int SA, int SB>
__global__ void wgmma_kernel(const unsigned char* image, WgArgs g, const uint32_t* a_frag, const float* c_frag,
                             float* d_out) {
  DYNAMIC_SMEM(unsigned char, smem);
  const int tid = int(threadIdx.x);
  for (uint32_t i = uint32_t(tid); i < g.image_bytes; i += blockDim.x) smem[i] = image[i];  // plain stores
  if (!g.skip_fence) fence_proxy_async_shared();
  __syncthreads();
  float d[N / 2];
  uint32_t a[4];
  for (int v = 0; v < N / 2; ++v) d[v] = c_frag[tid * (N / 2) + v];
  for (int r = 0; r < 4; ++r) a[r] = a_frag[tid * 4 + r];
  const uint64_t da = wgmma_desc(smem + g.a.base, g.a.lbo, g.a.sbo, g.a.sw);
  const uint64_t db = wgmma_desc(smem + g.b.base, g.b.lbo, g.b.sbo, g.b.sw);
  wgmma_fence();
  for (int rep = 0; rep < 1 + g.twice; ++rep) {  // the second one chains on the first's accumulators
    if constexpr (TF32 && RS)
      wgmma_m64k8_tf32_rs<N, SA, SB>(d, a, db, g.scale_d);
    else if constexpr (TF32)
      wgmma_m64k8_tf32<N, SA, SB>(d, da, db, g.scale_d);
    else if constexpr (RS)
      wgmma_m64k16_bf16_rs<N, TB, SA, SB>(d, a, db, g.scale_d);
    else
      wgmma_m64k16_bf16<N, TA, TB, SA, SB>(d, da, db, g.scale_d);
  }
  wgmma_commit_group();
  wgmma_wait_group<0>();
  wgmma_fence_operand(d);
  for (int v = 0; v < N / 2; ++v) d_out[tid * (N / 2) + v] = d[v];
}

// PTX register fragments, thread i of the warpgroup (w = i/32, g = (i%32)/4, t = i%4).
struct RowCol {
  int row, col;
};
RowCol d_frag(int i, int v) {  // accumulator v: pairs of columns, rows g and g+8, then the next 8 columns
  const int w = i / 32, g = (i % 32) / 4, t = i % 4, j = v / 4, within = v % 4;
  return {16 * w + g + (within >= 2 ? 8 : 0), 8 * j + 2 * t + within % 2};
}
RowCol a_frag_bf16(int i, int e) {  // element e = 0..7 (register e/2, half e%2)
  const int w = i / 32, g = (i % 32) / 4, t = i % 4;
  return {16 * w + g + ((e / 2) % 2) * 8, 2 * t + e % 2 + (e / 4) * 8};
}
RowCol a_frag_tf32(int i, int r) {
  const int w = i / 32, g = (i % 32) / 4, t = i % 4;
  return {16 * w + g + (r % 2) * 8, t + (r / 2) * 4};
}

struct WgCase {
  int n;
  bool tf32, rs;
  int ta, tb, sa, sb;
  Layout la, lb;
  int scale_d, twice;
  const char* what;
};

template <int N, bool TF32, bool RS, int TA, int TB, int SA, int SB>
void run_wgmma_case(const WgCase& c, std::mt19937& rng) {
  const int K = TF32 ? 8 : 16, elem = TF32 ? 4 : 2, R = N / 2;
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  // Logical operands (as the hardware sees them) and their bit patterns.
  std::vector<uint32_t> Abits(size_t(64 * K)), Bbits(size_t(N * K));
  std::vector<double> A(Abits.size()), B(Bbits.size());
  auto make = [&](uint32_t& bits, double& val) {
    if (TF32) {
      bits = fbits(u(rng)) ^ (rng() & 0x1FFFu);  // garbage in the low 13 bits: ignored
      val = double(bitsf(bits & 0xFFFFE000u));
    } else {
      bits = bf16_from_float_rne(u(rng));
      val = double(bf16_to_float(uint16_t(bits)));
    }
  };
  for (size_t i = 0; i < A.size(); ++i) make(Abits[i], A[i]);
  for (size_t i = 0; i < B.size(); ++i) make(Bbits[i], B[i]);
  uint32_t bytes = 0;
  std::vector<unsigned char> image(64 * 1024, 0x5A);  // filler where no operand lives
  std::vector<bool> used(image.size(), false);
  auto put = [&](uint32_t at, uint32_t bits) {
    for (int b = 0; b < elem; ++b) {
      REQUIRE_MESSAGE(!used[at + uint32_t(b)], std::string(c.what), ": the test's layouts overlap at byte ", at + b);
      used[at + uint32_t(b)] = true;
    }
    std::memcpy(&image[at], &bits, size_t(elem));
    bytes = std::max(bytes, at + uint32_t(elem));
  };
  for (int m = 0; m < 64 && !RS; ++m)
    for (int k = 0; k < K; ++k) put(canonical_address(c.la, TA == 1, m, k, elem, 64), Abits[size_t(m * K + k)]);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) put(canonical_address(c.lb, TB == 1, n, k, elem, N), Bbits[size_t(n * K + k)]);
  image.resize(bytes);
  std::vector<uint32_t> afrag(128 * 4, 0);
  std::vector<float> cfrag(size_t(128 * R)), C(size_t(64 * N));
  for (auto& v : C) v = c.scale_d ? u(rng) : bitsf(0x7FC00000u);  // scale-d 0: C is not read (NaN would show)
  for (int i = 0; i < 128; ++i) {
    if (TF32)
      for (int r = 0; r < 4; ++r) {
        const RowCol rc = a_frag_tf32(i, r);
        afrag[size_t(i * 4 + r)] = Abits[size_t(rc.row * K + rc.col)];
      }
    else
      for (int e = 0; e < 8; ++e) {
        const RowCol rc = a_frag_bf16(i, e);
        afrag[size_t(i * 4 + e / 2)] |= Abits[size_t(rc.row * K + rc.col)] << (16 * (e % 2));
      }
    for (int v = 0; v < R; ++v) {
      const RowCol rc = d_frag(i, v);
      cfrag[size_t(i * R + v)] = C[size_t(rc.row * N + rc.col)];
    }
  }
  DeviceBuffer<unsigned char> dimage(image);
  DeviceBuffer<uint32_t> da(afrag);
  DeviceBuffer<float> dc(cfrag), dd(cfrag.size());
  WgArgs args{uint32_t(image.size()), c.la, c.lb, c.scale_d, c.twice, 0};
  const size_t smem = std::max<size_t>(image.size(), 16);
  REQUIRE(cudaFuncSetAttribute(wgmma_kernel<N, TF32, RS, TA, TB, SA, SB>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               int(64 * 1024)) == cudaSuccess);
  std::vector<float> first;
  for (Order o : kAllOrders) {
    ScopedOrder so(o, 23);
    launch(wgmma_kernel<N, TF32, RS, TA, TB, SA, SB>, 1, 128, smem, nullptr, dimage.p, args, da.p, dc.p, dd.p);
    CHECK(emu::last_launch_stats().wgmma == 1 + c.twice);
    const auto h = dd.download();
    for (int i = 0; i < 128; ++i)
      for (int v = 0; v < R; ++v) {
        const RowCol rc = d_frag(i, v);
        double sum = 0;
        for (int k = 0; k < K; ++k) sum += (SA * A[size_t(rc.row * K + k)]) * (SB * B[size_t(rc.col * K + k)]);
        float want = float((c.scale_d ? double(C[size_t(rc.row * N + rc.col)]) : 0.0) + sum);
        if (c.twice) want = float(double(want) + sum);
        const float got = h[size_t(i * R + v)];
        REQUIRE_MESSAGE(fbits(got) == fbits(want), std::string(c.what), ": thread ", i, " d[", v, "] (row ", rc.row, ", col ",
                        rc.col, "): ", got, " vs ", want);
      }
    if (first.empty())
      first = h;
    else
      CHECK(h == first);
  }
}

TEST_CASE("hopper: wgmma bf16 and tf32 against a float64 product on every thread's fragment") {
  std::mt19937 rng(2026);
  using S = WgmmaSwizzle;
  // K-major operands: swizzled atoms are 8 rows of W*16 bytes (SBO: the next 8 rows; a multiple of the
  // pattern's repeat); INTERLEAVE core matrices are 8 rows of 16 bytes (LBO: next k unit, SBO: next 8 rows).
  const Layout kA128{S::B128, 0, 16, 1024}, kB128{S::B128, 8192, 16, 1024}, kA64{S::B64, 0, 16, 1024};
  const Layout kB64{S::B64, 8192, 16, 512}, kA32{S::B32, 0, 16, 256}, kB32{S::B32, 4096, 16, 512};
  const Layout kAnone{S::None, 0, 128, 256}, kBnone{S::None, 8192, 2048, 128}, kB32far{S::B32, 16384, 16, 256};
  // MN-major (bf16): swizzled atoms are W*8 elements of MN x 8 k rows (LBO: next atom along MN, SBO:
  // the next 8 k); INTERLEAVE units are 8 MN elements, k rows 16 bytes apart (SBO: next MN unit, LBO: next 8 k).
  const Layout mA128{S::B128, 0, 2048, 1024}, mB32{S::B32, 8192, 512, 256}, mBnone{S::None, 8192, 1024, 128};
  const Layout mA64{S::B64, 0, 1024, 512}, mBnone128{S::None, 8192, 2048, 128};
  run_wgmma_case<8, false, false, 0, 0, 1, 1>({8, false, false, 0, 0, 1, 1, kAnone, kBnone, 1, 0, "bf16 n8 none"}, rng);
  run_wgmma_case<16, false, false, 0, 0, 1, 1>({16, false, false, 0, 0, 1, 1, kA32, kB32, 1, 0, "bf16 n16 32B"}, rng);
  run_wgmma_case<32, false, false, 0, 0, 1, 1>({32, false, false, 0, 0, 1, 1, kA64, kB64, 1, 0, "bf16 n32 64B"}, rng);
  run_wgmma_case<64, false, false, 0, 0, 1, 1>({64, false, false, 0, 0, 1, 1, kA128, kB128, 1, 0, "bf16 n64 128B"},
                                               rng);
  run_wgmma_case<128, false, false, 0, 0, 1, 1>({128, false, false, 0, 0, 1, 1, kA128, kB64, 0, 0,
                                                 "bf16 n128 128B/64B scale-d 0"},
                                                rng);
  run_wgmma_case<256, false, false, 0, 0, 1, 1>({256, false, false, 0, 0, 1, 1, kA32, kB128, 1, 0,
                                                 "bf16 n256 32B/128B"},
                                                rng);
  run_wgmma_case<64, false, false, 1, 1, 1, 1>({64, false, false, 1, 1, 1, 1, mA128, mBnone, 1, 0,
                                                "bf16 n64 MN-major A 128B, B none"},
                                               rng);
  run_wgmma_case<32, false, false, 1, 1, -1, 1>({32, false, false, 1, 1, -1, 1, mA64, mB32, 1, 0,
                                                 "bf16 n32 MN-major 64B/32B, A negated"},
                                                rng);
  run_wgmma_case<16, false, false, 0, 1, 1, 1>({16, false, false, 0, 1, 1, 1, kA128, mB32, 1, 1,
                                                "bf16 n16 K/MN-major, chained twice"},
                                               rng);
  run_wgmma_case<128, false, true, 0, 1, 1, -1>({128, false, true, 0, 1, 1, -1, kA128, mBnone128, 1, 0,
                                                 "bf16 n128 A in registers, B MN-major, B negated"},
                                                rng);
  run_wgmma_case<8, false, true, 0, 0, 1, 1>({8, false, true, 0, 0, 1, 1, kA128, kB128, 1, 1,
                                              "bf16 n8 A in registers, chained twice"},
                                             rng);
  run_wgmma_case<8, true, false, 0, 0, 1, 1>({8, true, false, 0, 0, 1, 1, kAnone, kBnone, 1, 0, "tf32 n8 none"}, rng);
  run_wgmma_case<64, true, false, 0, 0, 1, 1>({64, true, false, 0, 0, 1, 1, kA128, kB128, 1, 0, "tf32 n64 128B"}, rng);
  run_wgmma_case<256, true, false, 0, 0, -1, -1>({256, true, false, 0, 0, -1, -1, kA64, kB32far, 1, 0,
                                                  "tf32 n256 64B/32B, both negated"},
                                                 rng);
  run_wgmma_case<32, true, true, 0, 0, 1, 1>({32, true, true, 0, 0, 1, 1, kA128, kB64, 0, 0,
                                              "tf32 n32 A in registers, scale-d 0"},
                                             rng);
}

// ---------------------------------------------------------------------------------------------
// wgmma ordering and misuse. A (64 x 16) and B (16 x 16) bf16 all 1.0, K-major without swizzle
// (A at 0, B at 4096: core matrices 128 bytes, LBO 128, SBO 256), so every D element is 16 (+ C).
enum WgMode {
  kGood, kWaitOne, kUncommitted, kReadEarly, kNoProxyFence, kNoWgmmaFence, kWriteEarly, kSmemEarly, kRegsEarly,
  kStartMisaligned, kBaseOffset, kOutside, kWarpMissing, kNonUniform, kDivergent
};
__global__ void wgmma_misuse_kernel(int mode, float* out) {
  DYNAMIC_SMEM(unsigned char, smem);
  const int tid = int(threadIdx.x);
  if (mode == kWarpMissing && tid >= 96) return;
  uint16_t* h = reinterpret_cast<uint16_t*>(smem);
  for (int i = tid; i < 8192 / 2; i += int(blockDim.x)) h[i] = 0x3F80;  // bf16 1.0 everywhere, each by one thread
  if (mode != kNoProxyFence) fence_proxy_async_shared();
  __syncthreads();
  uint64_t da = wgmma_desc(smem, 128, 256, WgmmaSwizzle::None);
  uint64_t db = wgmma_desc(smem + (mode == kOutside ? 8192 - 256 : 4096), 128, 256, WgmmaSwizzle::None);
  if (mode == kStartMisaligned) da = wgmma_desc(smem + 128, 16, 1024, WgmmaSwizzle::B128);
  if (mode == kBaseOffset) da |= uint64_t(1) << 49;
  if (mode == kNonUniform && tid == 5) db += 1;
  float d1[8] = {}, d2[8] = {};
  uint32_t a[4] = {0x3F803F80u, 0x3F803F80u, 0x3F803F80u, 0x3F803F80u};
  if (mode != kNoWgmmaFence) wgmma_fence();
  if (mode == kRegsEarly) {
    wgmma_m64k16_bf16_rs<16>(d1, a, db, 0);
    a[0] = 0;  // A registers changed before the wait
  } else if (mode == kDivergent) {
    if (tid < 64)
      wgmma_m64k16_bf16<16>(d1, da, db, 0);
    else
      wgmma_m64k16_bf16<16>(d1, da, db, 0);
  } else {
    wgmma_m64k16_bf16<16>(d1, da, db, 0);
  }
  if (mode == kUncommitted) {
    wgmma_wait_group<0>();  // the op is in no group yet: still in flight
    out[tid] = d1[0];
    wgmma_commit_group();
    wgmma_wait_group<0>();
    out[128 + tid] = d1[0];
    return;
  }
  wgmma_commit_group();
  if (mode == kWaitOne) {
    wgmma_fence();
    wgmma_m64k16_bf16<16>(d2, da, db, 0);
    wgmma_commit_group();
    wgmma_wait_group<1>();  // the first group is complete, the second may be in flight
    out[tid] = d1[0], out[128 + tid] = d2[0];
    wgmma_wait_group<0>();
    out[256 + tid] = d2[0];
    return;
  }
  if (mode == kReadEarly) out[tid] = d1[3];  // before the wait: the model's NaN
  if (mode == kWriteEarly && tid == 7) d1[2] = 1.0f;
  if (mode == kSmemEarly && tid == 0) h[4096 / 2 + 3] = 0x4000;  // an element of B
  wgmma_wait_group<0>();
  if (mode != kReadEarly) out[tid] = d1[3];
}

TEST_CASE("hopper: wgmma groups, and misuse is reported") {
  DeviceBuffer<float> out(384);
  auto run = [&](int mode, int threads = 128) {
    return launch_error([&] { launch(wgmma_misuse_kernel, 1, threads, 8192, nullptr, mode, out.p); });
  };
  for (Order o : kAllOrders) {
    ScopedOrder so(o, 29);
    CHECK(run(kGood) == "(no error)");
    for (float v : out.download()) (void)v;
    auto h = out.download();
    for (int t = 0; t < 128; ++t) REQUIRE(h[size_t(t)] == 16.0f);
    CHECK(run(kWaitOne) == "(no error)");
    h = out.download();
    for (int t = 0; t < 128; ++t) {
      REQUIRE(h[size_t(t)] == 16.0f);
      REQUIRE(std::isnan(h[size_t(128 + t)]));
      REQUIRE(h[size_t(256 + t)] == 16.0f);
    }
    CHECK(run(kUncommitted) == "(no error)");
    h = out.download();
    for (int t = 0; t < 128; ++t) {
      REQUIRE(std::isnan(h[size_t(t)]));
      REQUIRE(h[size_t(128 + t)] == 16.0f);
    }
    CHECK(run(kReadEarly) == "(no error)");  // no error, but every value read in flight is NaN
    h = out.download();
    for (int t = 0; t < 128; ++t) REQUIRE(std::isnan(h[size_t(t)]));
  }
  std::string m = run(kNoProxyFence);
  CHECK_MESSAGE((contains(m, "operand B element") || contains(m, "operand A element")), m);
  CHECK_MESSAGE(contains(m, "after the last fence.proxy.async"), m);
  m = run(kNoWgmmaFence);
  CHECK_MESSAGE(contains(m, "no wgmma.fence since the warpgroup's last wgmma.wait_group"), m);
  m = run(kWriteEarly);
  CHECK_MESSAGE(contains(m, "thread 7 of the warpgroup wrote its accumulator d[2] while the wgmma.mma_async"), m);
  m = run(kSmemEarly);
  CHECK_MESSAGE(contains(m, "changed while the wgmma was in flight"), m);
  m = run(kRegsEarly);
  CHECK_MESSAGE(contains(m, "changed its A register a[0]"), m);
  m = run(kStartMisaligned);
  CHECK_MESSAGE(contains(m, "is not at a pattern row boundary"), m);
  m = run(kBaseOffset);
  CHECK_MESSAGE(contains(m, "has base offset 1"), m);
  m = run(kOutside);
  CHECK_MESSAGE(contains(m, "lies outside the launch's 8192 bytes of dynamic shared memory"), m);
  {
    ScopedOrder lax(Order::Forward, 1, false);  // the __syncthreads() releases without warp 3 (PTX exit)
    m = run(kWarpMissing);
  }
  CHECK_MESSAGE((contains(m, "Threads 0-95 wait in wgmma.fence.sync.aligned") &&
                 contains(m, "for threads 96-127 of their warpgroup, which exited")),
                m);
  m = run(kNonUniform);
  CHECK_MESSAGE(contains(m, "thread 5 of the warpgroup passes other operands"), m);
  m = run(kDivergent);
  CHECK_MESSAGE(contains(m, "all 128 threads of a warpgroup must execute the same instruction (.aligned)"), m);
  m = run(kGood, 96);
  CHECK_MESSAGE(contains(m, "which a block of 96 threads does not contain"), m);
  m = run(kGood, 160);  // warpgroup 0 is fine; threads 128-159 form no warpgroup
  CHECK_MESSAGE(contains(m, "is in warpgroup 1 (threads 128-255)"), m);
}

// ---------------------------------------------------------------------------------------------
// setmaxnreg (a warpgroup rendezvous, no effect) and elect.sync.
__global__ void elect_kernel(uint32_t mask, int* out, int skip_warp) {
  const int tid = int(threadIdx.x);
  if (tid / 32 == skip_warp) return;
  if (tid < 128) setmaxnreg_dec<40>();
  if (mask >> (tid % 32) & 1) out[tid] = elect_one_sync(mask) ? 1 : 0;
  if (tid < 128) setmaxnreg_inc<232>();
}

TEST_CASE("hopper: elect.sync picks the lowest lane of the mask, setmaxnreg is warpgroup-collective") {
  DeviceBuffer<int> out(256);
  for (uint32_t mask : {0xFFFFFFFFu, 0xF0F0F0F0u, 0x00010000u, 0x80000001u}) {
    std::vector<int> zero(256, -1);
    out.upload(zero);
    launch(elect_kernel, 1, 256, 0, nullptr, mask, out.p, -1);
    const auto h = out.download();
    for (int t = 0; t < 256; ++t) {
      const int lane = t % 32;
      const int want = !(mask >> lane & 1) ? -1 : lane == __builtin_ctz(mask) ? 1 : 0;
      REQUIRE_MESSAGE(h[size_t(t)] == want, "mask ", mask, " thread ", t);
    }
  }
  const std::string m = launch_error([&] { launch(elect_kernel, 1, 128, 0, nullptr, 0xFFFFFFFFu, out.p, 2); });
  CHECK_MESSAGE((contains(m, "wait in setmaxnreg.dec.sync.aligned.u32") &&
                 contains(m, "for threads 64-95 of their warpgroup, which exited")),
                m);
}

// setmaxnreg's register budget: the counts the block's warpgroups ask for must fit the block's pool,
// its launch count x its threads (else a .inc waits forever on a GPU), and .inc / .dec only raise /
// lower a count. 384 threads: the launch gives each at most 168 registers, a pool of 64,512.
__global__ void maxnreg_kernel(int variant) {
  const int wg = int(threadIdx.x) / 128;
  if (wg == 0) {
    if (variant != 3) setmaxnreg_dec<40>();  // variant 3: the producer keeps the launch's count
  } else if (variant == 0 || variant == 3) {
    setmaxnreg_inc<232>();                   // 128 x 40 + 256 x 232 = 64,512: fits exactly
  } else if (variant == 1) {
    setmaxnreg_inc<240>();                   // 128 x 40 + 256 x 240 = 66,560: too many
  } else {
    setmaxnreg_inc<232>();
    setmaxnreg_inc<200>();                   // an .inc that lowers the count
  }
}

TEST_CASE("hopper: setmaxnreg counts must fit the block's register pool, .inc raises and .dec lowers") {
  launch(maxnreg_kernel, 2, 384, 0, nullptr, 0);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  for (Order o : kAllOrders) {  // whichever warpgroup sets its count last sees the total
    ScopedOrder so(o, 5);
    const std::string m = launch_error([&] { launch(maxnreg_kernel, 1, 384, 0, nullptr, 1); });
    CHECK_MESSAGE((contains(m, "would hold 66560 registers") && contains(m, "0: 40, 1: 240, 2: 240") &&
                   contains(m, "more than its pool of 64512 (384 threads x 168")),
                  m);
  }
  // The producer never releases its 168: the consumers' .inc to 232 waits forever on a GPU. Seen when
  // the block ends (until then the producer might still .dec): 128 x 168 + 256 x 232 = 80,896.
  for (Order o : kAllOrders) {
    ScopedOrder so(o, 5);
    const std::string m = launch_error([&] { launch(maxnreg_kernel, 1, 384, 0, nullptr, 3); });
    CHECK_MESSAGE((contains(m, "at the block's end") && contains(m, "would hold 80896 registers") &&
                   contains(m, "0: 168 (never ran setmaxnreg")),
                  m);
  }
  const std::string m = launch_error([&] { launch(maxnreg_kernel, 1, 384, 0, nullptr, 2); });
  CHECK_MESSAGE((contains(m, "setmaxnreg.inc to 200 registers in warpgroup 1, whose count is 232") &&
                 contains(m, ".inc may only raise the count")),
                m);
}

// ---------------------------------------------------------------------------------------------
// The worked example (kernels/cuda/hopper_demo.cu): C (64 x 64) = A B^T, bf16 in, f32 out, K = 192
// (three k-tiles, so both stages are reused), with TMA + mbarrier + wgmma.
TEST_CASE("hopper: a 64x64xK bf16 GEMM from TMA + mbarrier + wgmma vs float64") {
  const int K = 192;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<uint16_t> A(size_t(64 * K)), B(size_t(64 * K));
  for (auto& v : A) v = bf16_from_float_rne(u(rng));
  for (auto& v : B) v = bf16_from_float_rne(u(rng));
  DeviceBuffer<uint16_t> da(A), db(B);
  DeviceBuffer<float> dc(64 * 64);
  std::vector<float> first;
  for (Order o : kAllOrders) {
    ScopedOrder so(o, 31);
    cuda::hopper_gemm_bf16_demo(da.p, db.p, dc.p, K);
    const auto st = emu::last_launch_stats();
    CHECK(st.wgmma == K / 16);
    CHECK(st.tma == 2 * K / 64);
    CHECK(st.mbarrier_phases == K / 64);
    const auto h = dc.download();
    double worst = 0;
    for (int m = 0; m < 64; ++m)
      for (int n = 0; n < 64; ++n) {
        double ref = 0, mag = 0;
        for (int k = 0; k < K; ++k) {
          const double p = double(bf16_to_float(A[size_t(m * K + k)])) * double(bf16_to_float(B[size_t(n * K + k)]));
          ref += p, mag += std::fabs(p);
        }
        // Each wgmma rounds its 16-term sum once to fp32: K/16 roundings of at most half an ulp of the
        // running sum, bounded by mag.
        const double err = std::fabs(double(h[size_t(m * 64 + n)]) - ref), bound = double(K / 16) * 0x1p-24 * mag;
        REQUIRE_MESSAGE(err <= bound, "m ", m, " n ", n, ": ", h[size_t(m * 64 + n)], " vs ", ref);
        worst = std::max(worst, err / mag);
      }
    MESSAGE("TMA + wgmma GEMM 64x64x", K, ": worst error / sum|a*b| = ", worst);
    if (first.empty())
      first = h;
    else
      CHECK(h == first);
  }
  std::string m;
  try {
    cuda::hopper_gemm_bf16_demo(da.p, db.p, dc.p, 100);
  } catch (const Error& e) {
    m = e.what();
  }
  CHECK_MESSAGE(contains(m, "K = 100 is not a positive multiple of 64"), m);
}

}  // namespace
