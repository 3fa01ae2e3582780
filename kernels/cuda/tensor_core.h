/* tensor_core.h: device functions for the sm_80+ warp-level matrix instructions, one per PTX
 * instruction: inline PTX under nvcc, the emulator's exact CPU model otherwise
 * (kernels/emu/tensor_core.cpp). A kernel that uses them includes this header (it includes compat.h).
 *
 *   cvt_rna_tf32(x)                     cvt.rna.tf32.f32: fp32 -> tf32 in a .b32 (nearest, ties away)
 *   mma_m16n8k8_tf32(d, a, b, c)        mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
 *   mma_m16n8k16_bf16(d, a, b, c)       mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
 *   ldmatrix_x1/_x2/_x4[_trans](r, p)   ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16
 *   cp_async_cg16(dst, src, n)          cp.async.cg.shared.global [dst], [src], 16, n  (n < 16: zero-fill)
 *   cp_async_ca<B>(dst, src, n)         cp.async.ca.shared.global [dst], [src], B, n   (B = 4, 8, 16)
 *   cp_async_commit()                   cp.async.commit_group
 *   cp_async_wait_group<N>()            cp.async.wait_group N
 *   cp_async_wait_all()                 cp.async.wait_all
 *   load_vector<V>(p), store_vector(p, v)   one 8/16-byte access (float4, uint4, ...), alignment checked
 *                                           by the emulator (a plain reinterpret_cast works too)
 *
 * Operands are the hardware's: A/B fragments are uint32_t registers (one tf32 each; or two bf16,
 * the lower k/column index in bits 0-15, see kernels/common/bfloat16.h), accumulators are float.
 * Fragment layouts (which lane holds which element): kernels/emu/tensor_core.cpp, from the PTX ISA.
 * mma and ldmatrix are warp-collective: all 32 lanes of a warp call them from the same call site,
 * never in divergent code (the emulator reports a lane that exited or waits elsewhere).
 * What the emulator checks and what is exact: docs/cuda-emulator.md, "Tensor-core instructions".
 * Requires sm_80 or newer under nvcc.
 */
#pragma once
#include <cstdint>

#include "kernels/cuda/compat.h"

#ifdef __CUDACC__
#define NIMBUS_TC_SITE
#define NIMBUS_TC_SITE_ONLY
#else
#include <source_location>

#include "kernels/emu/tensor_core.h"
// Emulator: each function gets its caller's file and line (for the same-call-site rule and messages).
#define NIMBUS_TC_SITE , std::source_location site = std::source_location::current()
#define NIMBUS_TC_SITE_ONLY std::source_location site = std::source_location::current()
#define NIMBUS_TC_AT site.file_name(), int(site.line())
#endif

// ---- cvt.rna.tf32.f32 ---------------------------------------------------------------------------
__device__ __forceinline__ uint32_t cvt_rna_tf32(float x) {
#ifdef __CUDACC__
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
#else
  return ::nimbus::emu::cvt_rna_tf32(x);
#endif
}

// ---- mma.sync --------------------------------------------------------------------------------------
// D (16x8, f32) = A (16x8, tf32, row) * B (8x8, tf32, col) + C. d may be c (accumulate in place).
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                 const float (&c)[4] NIMBUS_TC_SITE) {
#ifdef __CUDACC__
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#else
  ::nimbus::emu::mma_m16n8k8_tf32(d, a, b, c, NIMBUS_TC_AT);
#endif
}

// D (16x8, f32) = A (16x16, bf16, row) * B (16x8, bf16, col) + C. d may be c.
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                  const float (&c)[4] NIMBUS_TC_SITE) {
#ifdef __CUDACC__
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#else
  ::nimbus::emu::mma_m16n8k16_bf16(d, a, b, c, NIMBUS_TC_AT);
#endif
}

// ---- ldmatrix ----------------------------------------------------------------------------------------
// `row`: this lane's row address in shared memory (16-byte aligned); lane 8j+i addresses row i of
// matrix j. x1 uses lanes 0-7, x2 lanes 0-15, x4 all; the other lanes' addresses are ignored.
#ifdef __CUDACC__
#define NIMBUS_LDMATRIX(fn, num, qual, outs, ...)                                                   \
  __device__ __forceinline__ void fn(uint32_t (&r)[num], const void* row) {                         \
    const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(row));                        \
    asm volatile("ldmatrix.sync.aligned.m8n8.x" #num qual ".shared.b16 " outs ", [%" #num "];\n"    \
                 : __VA_ARGS__                                                                     \
                 : "r"(a)                                                                          \
                 : "memory");                                                                      \
  }
#else
#define NIMBUS_LDMATRIX(fn, num, qual, outs, ...)                                                   \
  __device__ __forceinline__ void fn(uint32_t (&r)[num], const void* row NIMBUS_TC_SITE) {          \
    ::nimbus::emu::ldmatrix(r, num, sizeof(qual) > 1, row, NIMBUS_TC_AT);                           \
  }
#endif
NIMBUS_LDMATRIX(ldmatrix_x1, 1, "", "{%0}", "=r"(r[0]))
NIMBUS_LDMATRIX(ldmatrix_x2, 2, "", "{%0,%1}", "=r"(r[0]), "=r"(r[1]))
NIMBUS_LDMATRIX(ldmatrix_x4, 4, "", "{%0,%1,%2,%3}", "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]))
NIMBUS_LDMATRIX(ldmatrix_x1_trans, 1, ".trans", "{%0}", "=r"(r[0]))
NIMBUS_LDMATRIX(ldmatrix_x2_trans, 2, ".trans", "{%0,%1}", "=r"(r[0]), "=r"(r[1]))
NIMBUS_LDMATRIX(ldmatrix_x4_trans, 4, ".trans", "{%0,%1,%2,%3}", "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]))
#undef NIMBUS_LDMATRIX

// ---- cp.async -------------------------------------------------------------------------------------------
// Copies `src_bytes` (<= the copy size) from global `src` to shared `dst`, zero-filling the rest.
// Complete only after cp_async_wait_group/wait_all in the issuing thread (then __syncthreads() for
// other threads to see it). dst and src aligned to the copy size.
__device__ __forceinline__ void cp_async_cg16(void* dst, const void* src, int src_bytes = 16 NIMBUS_TC_SITE) {
#ifdef __CUDACC__
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(src_bytes) : "memory");
#else
  ::nimbus::emu::cp_async(dst, src, 16, src_bytes, true, NIMBUS_TC_AT);
#endif
}

template <int Bytes>
__device__ __forceinline__ void cp_async_ca(void* dst, const void* src, int src_bytes = Bytes NIMBUS_TC_SITE) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async.ca copies 4, 8 or 16 bytes");
#ifdef __CUDACC__
  const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(d), "l"(src), "n"(Bytes), "r"(src_bytes)
               : "memory");
#else
  ::nimbus::emu::cp_async(dst, src, Bytes, src_bytes, false, NIMBUS_TC_AT);
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#ifdef __CUDACC__
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
  ::nimbus::emu::cp_async_commit();
#endif
}

// Waits until at most N of this thread's most recent committed groups are pending.
template <int N>
__device__ __forceinline__ void cp_async_wait_group(NIMBUS_TC_SITE_ONLY) {
  static_assert(N >= 0, "cp.async.wait_group N: N >= 0");
#ifdef __CUDACC__
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#else
  ::nimbus::emu::cp_async_wait_group(N, NIMBUS_TC_AT);
#endif
}

// cp.async.commit_group + cp.async.wait_group 0.
__device__ __forceinline__ void cp_async_wait_all(NIMBUS_TC_SITE_ONLY) {
#ifdef __CUDACC__
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#else
  ::nimbus::emu::cp_async_wait_all(NIMBUS_TC_AT);
#endif
}

// ---- vector accesses ---------------------------------------------------------------------------------------
// load_vector<float4>(p): one 16-byte load from p (global or shared), which must be 16-byte aligned.
template <typename V, typename T>
__device__ __forceinline__ V load_vector(const T* p NIMBUS_TC_SITE) {
  static_assert(sizeof(V) == 8 || sizeof(V) == 16, "load_vector: 8- or 16-byte vector types");
#ifndef __CUDACC__
  ::nimbus::emu::check_vector_access(p, sizeof(V), false, NIMBUS_TC_AT);
#endif
  return *reinterpret_cast<const V*>(p);
}

template <typename V, typename T>
__device__ __forceinline__ void store_vector(T* p, const V& v NIMBUS_TC_SITE) {
  static_assert(sizeof(V) == 8 || sizeof(V) == 16, "store_vector: 8- or 16-byte vector types");
#ifndef __CUDACC__
  ::nimbus::emu::check_vector_access(p, sizeof(V), true, NIMBUS_TC_AT);
#endif
  *reinterpret_cast<V*>(p) = v;
}

#ifndef __CUDACC__
#undef NIMBUS_TC_AT
#endif
#undef NIMBUS_TC_SITE
#undef NIMBUS_TC_SITE_ONLY
