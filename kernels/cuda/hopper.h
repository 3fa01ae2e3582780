/* hopper.h: device functions for the Hopper instructions a wgmma kernel is built from, one per PTX
 * instruction: inline PTX under nvcc, the emulator's exact CPU model otherwise
 * (kernels/emu/hopper.cpp). A kernel that uses them includes this header (it includes compat.h).
 *
 *   smem_address(p)                           __cvta_generic_to_shared (the emulator: offset in DYNAMIC_SMEM)
 *   mbarrier_init(bar, count)                 mbarrier.init.shared::cta.b64
 *   mbarrier_inval(bar)                       mbarrier.inval.shared::cta.b64
 *   fence_mbarrier_init()                     fence.mbarrier_init.release.cluster
 *   mbarrier_arrive(bar[, count]) -> state    mbarrier.arrive.shared::cta.b64
 *   mbarrier_arrive_expect_tx(bar, bytes)     mbarrier.arrive.expect_tx.shared::cta.b64
 *   mbarrier_expect_tx(bar, bytes)            mbarrier.expect_tx.relaxed.cta.shared::cta.b64
 *   mbarrier_complete_tx(bar, bytes)          mbarrier.complete_tx.relaxed.cta.shared::cta.b64
 *   mbarrier_try_wait_parity(bar, p) -> bool  mbarrier.try_wait.parity.shared::cta.b64
 *   mbarrier_wait_parity(bar, p)              a loop on try_wait.parity until it succeeds
 *   tma_load_{1..5}d(dst, map, bar, c0, ...)  cp.async.bulk.tensor.Nd.shared::cluster.global.tile
 *                                                 .mbarrier::complete_tx::bytes
 *   tma_prefetch_descriptor(map)              prefetch.tensormap
 *   fence_proxy_async_shared()                fence.proxy.async.shared::cta
 *   wgmma_desc(p, lbo, sbo, swizzle)          a wgmma matrix descriptor for shared memory at p
 *   wgmma_m64k16_bf16<N, TA, TB, SA, SB>(d, desc_a, desc_b, scale_d)   wgmma.mma_async...m64nNk16.f32.bf16.bf16
 *   wgmma_m64k16_bf16_rs<N, TB, SA, SB>(d, a, desc_b, scale_d)         the same, A in registers
 *   wgmma_m64k8_tf32<N, SA, SB>(d, desc_a, desc_b, scale_d)           wgmma.mma_async...m64nNk8.f32.tf32.tf32
 *   wgmma_m64k8_tf32_rs<N, SA, SB>(d, a, desc_b, scale_d)             the same, A in registers
 *   wgmma_fence(), wgmma_commit_group(), wgmma_wait_group<N>()        wgmma.fence / commit_group / wait_group
 *   wgmma_fence_operand(d)                    nvcc: keeps the compiler from moving accumulator accesses across
 *                                             the asynchronous wgmma (CUTLASS's warpgroup_fence_operand)
 *   setmaxnreg_inc<R>(), setmaxnreg_dec<R>()  setmaxnreg.{inc,dec}.sync.aligned.u32 R
 *   elect_one_sync([mask]) -> bool            elect.sync: true in the lowest lane of mask
 *
 * Operands are the hardware's: an mbarrier is a uint64_t in shared memory; a tensor map is the
 * CUtensorMap from nimbus::cuda::encode_tensor_map (tensor_map.h), passed to the kernel as a
 * `const __grid_constant__ CUtensorMap` parameter; accumulators are float d[N/2] per thread of the
 * warpgroup, A registers uint32_t a[4] (two bf16, the lower k in bits 0-15, or one tf32 each).
 * Layouts (descriptor bits, canonical shared layouts, swizzles, register fragments): the comment at
 * the top of kernels/emu/hopper.cpp. wgmma instructions are warpgroup-collective: the 128 threads of 4
 * consecutive warps (first warp index a multiple of 4) call them from the same call site.
 * What the emulator checks and what is exact: docs/cuda-emulator.md, "Hopper instructions".
 * Under nvcc: sm_90 or newer for the TMA, mbarrier tx and fence instructions; sm_90a for wgmma and
 * setmaxnreg (NIMBUS_DEVICE_SM90A, compat.h). Other targets compile them to a trap.
 */
#pragma once
#include <cstdint>

#include "kernels/cuda/compat.h"
#include "kernels/cuda/tensor_map.h"

#ifdef __CUDACC__
#define NIMBUS_HP_SITE
#define NIMBUS_HP_SITE_ONLY
#else
#include <source_location>

#include "kernels/emu/hopper.h"
#define NIMBUS_HP_SITE , std::source_location site = std::source_location::current()
#define NIMBUS_HP_SITE_ONLY std::source_location site = std::source_location::current()
#define NIMBUS_HP_AT site.file_name(), int(site.line())
#endif

#if defined(__CUDACC__) && NIMBUS_DEVICE_SM90A
#include "kernels/cuda/hopper_wgmma.inc"
#endif

// Under nvcc for a target without the instruction: a trap (never reached by a correct dispatch).
#define NIMBUS_HP_UNSUPPORTED() __trap()

// ---- shared addresses ---------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_address(const void* p NIMBUS_HP_SITE) {
#ifdef __CUDACC__
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
#else
  return ::nimbus::emu::shared_address(p, "smem_address", NIMBUS_HP_AT);
#endif
}

// ---- mbarrier ---------------------------------------------------------------------------------------------
// One thread initialises; the others may use it after a __syncthreads() (its own warp: a __syncwarp()).
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t count NIMBUS_HP_SITE) {
#ifdef __CUDACC__
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(bar))),
               "r"(count)
               : "memory");
#else
  ::nimbus::emu::mbarrier_init(bar, count, NIMBUS_HP_AT);
#endif
}

__device__ __forceinline__ void mbarrier_inval(uint64_t* bar NIMBUS_HP_SITE) {
#ifdef __CUDACC__
  asm volatile("mbarrier.inval.shared::cta.b64 [%0];\n" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(bar)))
               : "memory");
#else
  ::nimbus::emu::mbarrier_inval(bar, NIMBUS_HP_AT);
#endif
}

// Makes this thread's mbarrier.init visible to the async proxy (the TMA that signals the barrier) and
// the cluster; the other threads of the block then need the __syncthreads() that follows. The emulator
// refuses a bulk copy that signals a barrier no such fence (or a fence.proxy.async) has covered.
__device__ __forceinline__ void fence_mbarrier_init() {
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  ::nimbus::emu::fence_mbarrier_init();
#endif
}

// count arrivals (1 by default); returns the state token (opaque; the emulator's is the phase number).
__device__ __forceinline__ uint64_t mbarrier_arrive(uint64_t* bar, uint32_t count = 1 NIMBUS_HP_SITE) {
#ifdef __CUDACC__
  uint64_t state = 0;
#if NIMBUS_DEVICE_SM90
  asm volatile("mbarrier.arrive.shared::cta.b64 %0, [%1], %2;\n"
               : "=l"(state)
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(bar))), "r"(count)
               : "memory");
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
  return state;
#else
  return ::nimbus::emu::mbarrier_arrive(bar, count, false, 0, NIMBUS_HP_AT);
#endif
}

// expect-tx of `bytes`, then one arrival.
__device__ __forceinline__ uint64_t mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes NIMBUS_HP_SITE) {
#ifdef __CUDACC__
  uint64_t state = 0;
#if NIMBUS_DEVICE_SM90
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 %0, [%1], %2;\n"
               : "=l"(state)
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(bar))), "r"(bytes)
               : "memory");
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
  return state;
#else
  return ::nimbus::emu::mbarrier_arrive(bar, 1, true, bytes, NIMBUS_HP_AT);
#endif
}

__device__ __forceinline__ void mbarrier_expect_tx(uint64_t* bar, uint32_t bytes NIMBUS_HP_SITE) {
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(
                   static_cast<uint32_t>(__cvta_generic_to_shared(bar))),
               "r"(bytes)
               : "memory");
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  ::nimbus::emu::mbarrier_expect_tx(bar, bytes, NIMBUS_HP_AT);
#endif
}

__device__ __forceinline__ void mbarrier_complete_tx(uint64_t* bar, uint32_t bytes NIMBUS_HP_SITE) {
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90
  asm volatile("mbarrier.complete_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(
                   static_cast<uint32_t>(__cvta_generic_to_shared(bar))),
               "r"(bytes)
               : "memory");
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  ::nimbus::emu::mbarrier_complete_tx(bar, bytes, NIMBUS_HP_AT);
#endif
}

// True when the phase of parity `parity` (the current phase or the one before) has completed. On a
// GPU it may also return false after a time limit; the emulator returns only once it is true.
__device__ __forceinline__ bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity NIMBUS_HP_SITE) {
#ifdef __CUDACC__
  uint32_t done = 0;
#if NIMBUS_DEVICE_SM90
  asm volatile(
      "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(bar))), "r"(parity)
      : "memory");
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
  return done != 0;
#else
  return ::nimbus::emu::mbarrier_try_wait_parity(bar, parity, NIMBUS_HP_AT);
#endif
}

__device__ __forceinline__ void mbarrier_wait_parity(uint64_t* bar, uint32_t parity NIMBUS_HP_SITE) {
#ifdef __CUDACC__
  while (!mbarrier_try_wait_parity(bar, parity)) {
  }
#else
  ::nimbus::emu::mbarrier_try_wait_parity(bar, parity, NIMBUS_HP_AT);
#endif
}

// ---- bulk tensor copies (TMA) -----------------------------------------------------------------------------
// Copies the box of `map` whose first element has coordinates (c0, c1, ...) (innermost first; they may
// be negative or past the extent: those elements are zero) into shared memory at dst (128-byte
// aligned; with a swizzle, aligned to its repeat: 256/512/1024 bytes for 32B/64B/128B), then the copy
// engine performs complete_tx of the box's bytes on bar. One thread issues it.
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90
#define NIMBUS_TMA_LOAD(fn, n, coords_ptx, params, ...)                                                        \
  __device__ __forceinline__ void fn(void* dst, const CUtensorMap* map, uint64_t* bar, params) {              \
    asm volatile("cp.async.bulk.tensor." #n "d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"       \
                 " [%0], [%1, " coords_ptx "], [%2];\n" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(dst))), \
                 "l"(map), "r"(static_cast<uint32_t>(__cvta_generic_to_shared(bar))), __VA_ARGS__                \
                 : "memory");                                                                                 \
  }
#else
#define NIMBUS_TMA_LOAD(fn, n, coords_ptx, params, ...) \
  __device__ __forceinline__ void fn(void*, const CUtensorMap*, uint64_t*, params) { NIMBUS_HP_UNSUPPORTED(); }
#endif
#else
#define NIMBUS_TMA_LOAD(fn, n, coords_ptx, params, ...)                                              \
  __device__ __forceinline__ void fn(void* dst, const CUtensorMap* map, uint64_t* bar, params NIMBUS_HP_SITE) { \
    const int32_t c[] = {__VA_ARGS__};                                                                \
    ::nimbus::emu::tma_load(n, dst, map, bar, c, NIMBUS_HP_AT);                                        \
  }
#endif
#ifdef __CUDACC__
#define NIMBUS_C(i) "r"(c##i)
#else
#define NIMBUS_C(i) c##i
#endif
#define NIMBUS_P(...) __VA_ARGS__
NIMBUS_TMA_LOAD(tma_load_1d, 1, "{%3}", NIMBUS_P(int c0), NIMBUS_C(0))
NIMBUS_TMA_LOAD(tma_load_2d, 2, "{%3, %4}", NIMBUS_P(int c0, int c1), NIMBUS_C(0), NIMBUS_C(1))
NIMBUS_TMA_LOAD(tma_load_3d, 3, "{%3, %4, %5}", NIMBUS_P(int c0, int c1, int c2), NIMBUS_C(0), NIMBUS_C(1), NIMBUS_C(2))
NIMBUS_TMA_LOAD(tma_load_4d, 4, "{%3, %4, %5, %6}", NIMBUS_P(int c0, int c1, int c2, int c3), NIMBUS_C(0), NIMBUS_C(1),
                NIMBUS_C(2), NIMBUS_C(3))
NIMBUS_TMA_LOAD(tma_load_5d, 5, "{%3, %4, %5, %6, %7}", NIMBUS_P(int c0, int c1, int c2, int c3, int c4), NIMBUS_C(0),
                NIMBUS_C(1), NIMBUS_C(2), NIMBUS_C(3), NIMBUS_C(4))
#undef NIMBUS_TMA_LOAD
#undef NIMBUS_C
#undef NIMBUS_P

__device__ __forceinline__ void tma_prefetch_descriptor(const CUtensorMap* map NIMBUS_HP_SITE) {
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(map) : "memory");
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  ::nimbus::emu::tma_prefetch(map, NIMBUS_HP_AT);
#endif
}

// ---- proxy fence ------------------------------------------------------------------------------------------------
// Orders this thread's plain shared-memory stores before later async-proxy accesses (wgmma operand
// reads, bulk copies): after writing an operand, before the __syncthreads() and the wgmma.
__device__ __forceinline__ void fence_proxy_async_shared() {
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  ::nimbus::emu::fence_proxy_async_shared();
#endif
}

// ---- wgmma descriptors ------------------------------------------------------------------------------------------
// The descriptor's layout type (bits 62-63).
enum class WgmmaSwizzle : uint32_t { None = 0, B128 = 1, B64 = 2, B32 = 3 };
// Start address, leading and stride byte offsets (multiples of 16 below 2^18), base offset 0.
__host__ __device__ constexpr uint64_t wgmma_desc_encode(uint32_t smem_addr, uint32_t lbo_bytes, uint32_t sbo_bytes,
                                                       WgmmaSwizzle swizzle) {
  return uint64_t((smem_addr & 0x3FFFFu) >> 4) | uint64_t((lbo_bytes & 0x3FFFFu) >> 4) << 16 |
         uint64_t((sbo_bytes & 0x3FFFFu) >> 4) << 32 | uint64_t(swizzle) << 62;
}
__device__ __forceinline__ uint64_t wgmma_desc(const void* smem, uint32_t lbo_bytes, uint32_t sbo_bytes,
                                               WgmmaSwizzle swizzle NIMBUS_HP_SITE) {
#ifdef __CUDACC__
  return wgmma_desc_encode(static_cast<uint32_t>(__cvta_generic_to_shared(smem)), lbo_bytes, sbo_bytes, swizzle);
#else
  return wgmma_desc_encode(::nimbus::emu::shared_address(smem, "wgmma_desc", NIMBUS_HP_AT), lbo_bytes, sbo_bytes,
                           swizzle);
#endif
}

// ---- wgmma -------------------------------------------------------------------------------------------------------
// D (64 x N, f32, d[N/2] per thread) = A (64 x 16 bf16) * B (16 x N) + (scale_d ? D : 0); A and B from
// descriptors; TransA/TransB = 1: MN-major operand; ScaleA/ScaleB = -1 negates it. Asynchronous: d is
// unusable until the wgmma_wait_group that covers the op's commit group.
template <int N, int TransA = 0, int TransB = 0, int ScaleA = 1, int ScaleB = 1>
__device__ __forceinline__ void wgmma_m64k16_bf16(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b,
                                                  int scale_d NIMBUS_HP_SITE) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk16: N is a multiple of 8 in [8, 256]");
  static_assert((TransA | TransB) >> 1 == 0 && (ScaleA == 1 || ScaleA == -1) && (ScaleB == 1 || ScaleB == -1),
                "wgmma: trans is 0 or 1, scale is 1 or -1");
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90A
  nimbus_wgmma_asm::bf16_ss<ScaleA, ScaleB, TransA, TransB>(d, desc_a, desc_b, scale_d);
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  static constexpr ::nimbus::emu::WgmmaShape shape{::nimbus::emu::WgmmaType::BF16, N, false, TransA, TransB, ScaleA,
                                                   ScaleB};
  ::nimbus::emu::wgmma_mma_async(shape, d, nullptr, desc_a, desc_b, scale_d, NIMBUS_HP_AT);
#endif
}

// The same with A (K-major) in registers: a[4] per thread, the fragment layout of hopper.cpp.
template <int N, int TransB = 0, int ScaleA = 1, int ScaleB = 1>
__device__ __forceinline__ void wgmma_m64k16_bf16_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,
                                                     int scale_d NIMBUS_HP_SITE) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk16: N is a multiple of 8 in [8, 256]");
  static_assert(TransB >> 1 == 0 && (ScaleA == 1 || ScaleA == -1) && (ScaleB == 1 || ScaleB == -1),
                "wgmma: trans is 0 or 1, scale is 1 or -1");
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90A
  nimbus_wgmma_asm::bf16_rs<ScaleA, ScaleB, TransB>(d, a, desc_b, scale_d);
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  static constexpr ::nimbus::emu::WgmmaShape shape{::nimbus::emu::WgmmaType::BF16, N, true, 0, TransB, ScaleA, ScaleB};
  ::nimbus::emu::wgmma_mma_async(shape, d, a, 0, desc_b, scale_d, NIMBUS_HP_AT);
#endif
}

// D (64 x N) = A (64 x 8 tf32) * B (8 x N) + (scale_d ? D : 0); both K-major (tf32 has no transpose).
template <int N, int ScaleA = 1, int ScaleB = 1>
__device__ __forceinline__ void wgmma_m64k8_tf32(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b,
                                                 int scale_d NIMBUS_HP_SITE) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk8: N is a multiple of 8 in [8, 256]");
  static_assert((ScaleA == 1 || ScaleA == -1) && (ScaleB == 1 || ScaleB == -1), "wgmma: scale is 1 or -1");
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90A
  nimbus_wgmma_asm::tf32_ss<ScaleA, ScaleB>(d, desc_a, desc_b, scale_d);
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  static constexpr ::nimbus::emu::WgmmaShape shape{::nimbus::emu::WgmmaType::TF32, N, false, 0, 0, ScaleA, ScaleB};
  ::nimbus::emu::wgmma_mma_async(shape, d, nullptr, desc_a, desc_b, scale_d, NIMBUS_HP_AT);
#endif
}

template <int N, int ScaleA = 1, int ScaleB = 1>
__device__ __forceinline__ void wgmma_m64k8_tf32_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,
                                                    int scale_d NIMBUS_HP_SITE) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk8: N is a multiple of 8 in [8, 256]");
  static_assert((ScaleA == 1 || ScaleA == -1) && (ScaleB == 1 || ScaleB == -1), "wgmma: scale is 1 or -1");
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90A
  nimbus_wgmma_asm::tf32_rs<ScaleA, ScaleB>(d, a, desc_b, scale_d);
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  static constexpr ::nimbus::emu::WgmmaShape shape{::nimbus::emu::WgmmaType::TF32, N, true, 0, 0, ScaleA, ScaleB};
  ::nimbus::emu::wgmma_mma_async(shape, d, a, 0, desc_b, scale_d, NIMBUS_HP_AT);
#endif
}

// Before the first wgmma of a batch, after any register access to its operands.
__device__ __forceinline__ void wgmma_fence(NIMBUS_HP_SITE_ONLY) {
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90A
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  ::nimbus::emu::wgmma_fence(NIMBUS_HP_AT);
#endif
}

// Closes the group of the warpgroup's uncommitted wgmma ops.
__device__ __forceinline__ void wgmma_commit_group(NIMBUS_HP_SITE_ONLY) {
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90A
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  ::nimbus::emu::wgmma_commit_group(NIMBUS_HP_AT);
#endif
}

// Waits until at most N of the warpgroup's committed groups are pending (N in [0, 7]).
template <int N>
__device__ __forceinline__ void wgmma_wait_group(NIMBUS_HP_SITE_ONLY) {
  static_assert(N >= 0 && N <= 7, "wgmma.wait_group N: N in [0, 7]");
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90A
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  ::nimbus::emu::wgmma_wait_group(N, NIMBUS_HP_AT);
#endif
}

// nvcc: an empty asm that "reads and writes" every accumulator, so the compiler keeps their accesses
// on the right side of wgmma_fence / wgmma_wait_group. Nothing to do in the emulator.
template <int R>
__device__ __forceinline__ void wgmma_fence_operand(float (&d)[R]) {
#ifdef __CUDACC__
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
#else
  (void)d;
#endif
}

// ---- setmaxnreg, elect.sync ----------------------------------------------------------------------------------------
template <int Regs>
__device__ __forceinline__ void setmaxnreg_inc(NIMBUS_HP_SITE_ONLY) {
  static_assert(Regs >= 24 && Regs <= 256 && Regs % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90A
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(Regs));
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  ::nimbus::emu::setmaxnreg(true, Regs, NIMBUS_HP_AT);
#endif
}
template <int Regs>
__device__ __forceinline__ void setmaxnreg_dec(NIMBUS_HP_SITE_ONLY) {
  static_assert(Regs >= 24 && Regs <= 256 && Regs % 8 == 0, "setmaxnreg: 24..256, a multiple of 8");
#ifdef __CUDACC__
#if NIMBUS_DEVICE_SM90A
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(Regs));
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
#else
  ::nimbus::emu::setmaxnreg(false, Regs, NIMBUS_HP_AT);
#endif
}

// True in exactly one lane of `mask` (the lowest); every lane of mask calls it (a warp-synchronous op;
// the emulator runs it as a __ballot_sync, which is the name its errors give).
__device__ __forceinline__ bool elect_one_sync(uint32_t mask = 0xffffffffu NIMBUS_HP_SITE) {
#ifdef __CUDACC__
  uint32_t elected = 0;
#if NIMBUS_DEVICE_SM90
  asm volatile("{\n.reg .b32 r;\n.reg .pred p;\nelect.sync r|p, %1;\nselp.u32 %0, 1, 0, p;\n}\n"
               : "=r"(elected)
               : "r"(mask));
#else
  NIMBUS_HP_UNSUPPORTED();
#endif
  return elected != 0;
#else
  const uint32_t all = ::nimbus::emu::warp_op(::nimbus::emu::WarpOp::Ballot, mask, 1u, 0, 32, NIMBUS_HP_AT);
  return ::nimbus::emu::current_thread_id() % 32 == __builtin_ctz(all);
#endif
}

#ifndef __CUDACC__
#undef NIMBUS_HP_AT
#endif
#undef NIMBUS_HP_SITE
#undef NIMBUS_HP_SITE_ONLY
#undef NIMBUS_HP_UNSUPPORTED
