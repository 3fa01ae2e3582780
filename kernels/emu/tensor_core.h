/* tensor_core.h (emulator side): CPU models of the tensor-core era instructions behind the device
 * functions of kernels/cuda/tensor_core.h. Kernels never include this; they call those device
 * functions, which under nvcc are inline PTX and under the emulator forward here with the caller's
 * call site (std::source_location), so errors name the kernel line.
 *
 *   mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32     mma_m16n8k8_tf32
 *   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32    mma_m16n8k16_bf16
 *   ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16  ldmatrix
 *   cp.async.{ca,cg}.shared.global, commit_group, wait_group, wait_all
 *   cvt.rna.tf32.f32                                        cvt_rna_tf32 (pure; also used on the host)
 *   16/8-byte vector accesses                               check_vector_access (alignment)
 *
 * Fragment layouts, what is exact and what is not: the comments in tensor_core.cpp and
 * docs/cuda-emulator.md ("Tensor-core instructions").
 */
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace nimbus::emu {

// cvt.rna.tf32.f32: round to 10 mantissa bits, nearest, ties away from zero; the low 13 bits of the
// result are zero. Overflow rounds to infinity (no .satfinite); inf stays inf; a NaN becomes the
// canonical NaN 0x7FFFFFFF (the GPU's NaN payload is not modelled).
inline uint32_t cvt_rna_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return (u & 0x007fffffu) ? 0x7fffffffu : u;
  return (u + 0x1000u) & 0xffffe000u;  // + half an ulp of the 10-bit mantissa, on the magnitude
}

// Warp-collective: every lane of the warp calls it from the same call site.
void mma_m16n8k8_tf32(float* d, const uint32_t* a, const uint32_t* b, const float* c, const char* file, int line);
void mma_m16n8k16_bf16(float* d, const uint32_t* a, const uint32_t* b, const float* c, const char* file, int line);
// num = 1, 2 or 4 matrices; `row` is this lane's row address (lanes 0..8*num-1 are used).
void ldmatrix(uint32_t* r, int num, bool trans, const void* row, const char* file, int line);

// Per thread. cp_size 4, 8 or 16 (cg: 16); src_size in [0, cp_size], the rest is zero-filled.
void cp_async(void* smem_dst, const void* gmem_src, int cp_size, int src_size, bool cg, const char* file, int line);
void cp_async_commit();
void cp_async_wait_group(int n, const char* file, int line);
void cp_async_wait_all(const char* file, int line);

// A `bytes`-wide vector load/store at p: faults the block unless p is `bytes`-aligned.
void check_vector_access(const void* p, size_t bytes, bool store, const char* file, int line);

}  // namespace nimbus::emu
