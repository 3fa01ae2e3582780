/* bench/cuda/conformance.cu: the tensor-core instructions of kernels/cuda/tensor_core.h, bit for bit,
 * emulator vs GPU.
 *
 * For each instruction one kernel (one warp) feeds distinct bit patterns per lane and writes every
 * output register of every lane to global memory; the program prints one line per instruction with
 * a 64-bit FNV-1a hash of those words and compares them with
 *   (1) a host reference computed here from the PTX ISA's layouts (independently of the emulator's
 *       model), reporting the first differing lanes and registers, in both builds, and
 *   (2) the expected hashes in a file (bench/cuda/conformance_expected.txt, written by the emulator
 *       build with --write-expected; by default the file next to this source when it exists).
 * Only data movement and exact arithmetic are tested: mma inputs are small integers, so every
 * product and partial sum is exact in fp32 and a tensor core must give the emulator's D exactly.
 * "mma_tf32_lowbits" repeats "mma_tf32" with garbage in the low 13 bits of every operand register:
 * the model assumes the hardware ignores them (if only that line fails on a GPU, the truncation
 * assumption is wrong, not the layout).
 *
 * Usage: bench_cuda_conformance (emulator build) / bin/gpu_bench_conformance (nvcc, bench/cuda/gpu.cmake)
 *   [--expect FILE]          compare the hashes with FILE (default: conformance_expected.txt beside this source)
 *   [--write-expected FILE]  write this build's hashes (emulator build: the committed file)
 *   [--dump]                 print every lane's output words
 * Exit status: 0 all match, 1 a mismatch (which instruction, lane, register), 2 bad usage, 77 no CUDA device.
 */
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "bench/cuda/bench_util.cuh"
#include "kernels/common/bfloat16.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/hopper.h"
#include "kernels/cuda/tensor_core.h"

namespace {

// ---- inputs -------------------------------------------------------------------------------------
__host__ __device__ inline uint32_t mix(uint32_t x) {  // a small integer hash (lowbias32)
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}
// Small integers in [-8, 8]: products <= 64, sums of 16 of them plus C stay far below 2^24.
__host__ __device__ inline float small_int(uint32_t seed, uint32_t i) { return float(int(mix(seed * 977u + i) % 17u) - 8); }
inline uint32_t fbits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Matrices as the kernels see them, row-major: tf32 A 16x8 (seed 1), B 8x8 (2), C 16x8 (3);
// bf16 A 16x16 (4), B 16x8 (5), C 16x8 (6).
__device__ inline uint32_t tf32_bits(float v, uint32_t garbage) { return __float_as_uint(v) | (garbage & 0x1fffu); }

// ---- kernels: one warp each; lane l writes its `regs` words at out[l * regs + r] -----------------------
__global__ void cvt_kernel(uint32_t* out) {
  const uint32_t l = threadIdx.x;
  // Per lane: a tie (low 13 bits 0x1000), just below, just above, and a random pattern; signs alternate.
  const uint32_t base = 0x3F800000u + (l << 13) + ((l & 1) << 31);
  const uint32_t in[4] = {base | 0x1000u, base | 0x0FFFu, base | 0x1001u, (mix(l) & 0x8FFFFFFFu) | 0x00800000u};
  for (int r = 0; r < 4; ++r) out[l * 4 + r] = cvt_rna_tf32(__uint_as_float(in[r]));
}

__global__ void mma_tf32_kernel(uint32_t* out, int lowbits) {
  const int l = int(threadIdx.x), g = l >> 2, t = l & 3;
  const uint32_t junk = lowbits ? mix(uint32_t(l) + 1000u) : 0u;
  // PTX layout (m16n8k8 .tf32): a0 (g,t) a1 (g+8,t) a2 (g,t+4) a3 (g+8,t+4); b0 (k=t,n=g) b1 (k=t+4,n=g)
  uint32_t a[4] = {tf32_bits(small_int(1, g * 8 + t), junk), tf32_bits(small_int(1, (g + 8) * 8 + t), junk >> 3),
                   tf32_bits(small_int(1, g * 8 + t + 4), junk >> 6),
                   tf32_bits(small_int(1, (g + 8) * 8 + t + 4), junk >> 9)};
  uint32_t b[2] = {tf32_bits(small_int(2, t * 8 + g), junk >> 12), tf32_bits(small_int(2, (t + 4) * 8 + g), junk >> 15)};
  // C/D: c0 (g,2t) c1 (g,2t+1) c2 (g+8,2t) c3 (g+8,2t+1)
  float c[4] = {small_int(3, g * 8 + 2 * t), small_int(3, g * 8 + 2 * t + 1), small_int(3, (g + 8) * 8 + 2 * t),
                small_int(3, (g + 8) * 8 + 2 * t + 1)};
  float d[4];
  mma_m16n8k8_tf32(d, a, b, c);
  for (int r = 0; r < 4; ++r) out[l * 4 + r] = __float_as_uint(d[r]);
}

__device__ inline uint32_t bf16_pair(float lo, float hi) {
  return nimbus::bf16x2_pack(nimbus::bf16_from_float_rne(lo), nimbus::bf16_from_float_rne(hi));
}

__global__ void mma_bf16_kernel(uint32_t* out) {
  const int l = int(threadIdx.x), g = l >> 2, t = l & 3;
  // PTX layout (m16n8k16 .bf16): reg0 (g, 2t..2t+1) reg1 (g+8, 2t..) reg2 (g, 2t+8..) reg3 (g+8, 2t+8..),
  // lower column in bits 0-15; B reg0 (k 2t..2t+1, n g) reg1 (k 2t+8.., n g).
  uint32_t a[4];
  for (int r = 0; r < 4; ++r) {
    const int row = g + ((r & 1) ? 8 : 0), col = 2 * t + ((r & 2) ? 8 : 0);
    a[r] = bf16_pair(small_int(4, row * 16 + col), small_int(4, row * 16 + col + 1));
  }
  uint32_t b[2];
  for (int r = 0; r < 2; ++r) {
    const int k = 2 * t + 8 * r;
    b[r] = bf16_pair(small_int(5, k * 8 + g), small_int(5, (k + 1) * 8 + g));
  }
  float c[4] = {small_int(6, g * 8 + 2 * t), small_int(6, g * 8 + 2 * t + 1), small_int(6, (g + 8) * 8 + 2 * t),
                small_int(6, (g + 8) * 8 + 2 * t + 1)};
  float d[4];
  mma_m16n8k16_bf16(d, a, b, c);
  for (int r = 0; r < 4; ++r) out[l * 4 + r] = __float_as_uint(d[r]);
}

// 32 rows of 8 b16 (16 bytes) in shared memory, row s holding 0x100*s + c + (0x8000 for odd s);
// lane l gives the address of row (5l + 3) mod 32 (a permutation, so lanes != memory order).
constexpr int kRows = 32;
__host__ __device__ inline uint16_t ld_value(int row, int c) { return uint16_t(0x100 * row + c + (row & 1) * 0x8000); }
__host__ __device__ inline int ld_row(int lane) { return (5 * lane + 3) % kRows; }

__global__ void ldmatrix_kernel(uint32_t* out, int num, int trans) {
  __shared__ __align__(16) uint16_t s[kRows * 8];
  const int l = int(threadIdx.x);
  for (int c = 0; c < 8; ++c) s[l * 8 + c] = ld_value(l, c);
  __syncwarp();
  const uint16_t* row = s + ld_row(l) * 8;
  uint32_t r[4] = {0, 0, 0, 0};
  if (num == 1) {
    uint32_t x[1];
    trans ? ldmatrix_x1_trans(x, row) : ldmatrix_x1(x, row);
    r[0] = x[0];
  } else if (num == 2) {
    uint32_t x[2];
    trans ? ldmatrix_x2_trans(x, row) : ldmatrix_x2(x, row);
    r[0] = x[0], r[1] = x[1];
  } else {
    trans ? ldmatrix_x4_trans(r, row) : ldmatrix_x4(r, row);
  }
  for (int j = 0; j < num; ++j) out[l * num + j] = r[j];
}

// cp.async: global source words src[i] = mix(i); lane l copies with src-size l % 17 (cg) etc.
__global__ void cp_async_kernel(uint32_t* out, const uint32_t* src, int mode) {
  __shared__ __align__(16) uint32_t s[32 * 8];
  const int l = int(threadIdx.x);
  uint32_t* mine = s + l * 8;
  if (mode == 0) {  // cg 16 with src-size 0..16
    cp_async_cg16(mine, src + l * 4, l % 17);
    cp_async_commit();
    cp_async_wait_group<0>();
    for (int r = 0; r < 4; ++r) out[l * 4 + r] = mine[r];
  } else if (mode == 1) {  // ca 4 (src-size 0..4), ca 8 (0..8), ca 16 (0..16)
    cp_async_ca<4>(mine, src + l * 8 + 1, l % 5);
    cp_async_ca<8>(mine + 2, src + l * 8 + 2, l % 9);
    cp_async_ca<16>(mine + 4, src + l * 8 + 4, (l * 7) % 17);
    cp_async_wait_all();
    out[l * 7] = mine[0];
    for (int r = 0; r < 6; ++r) out[l * 7 + 1 + r] = mine[2 + r];
  } else {  // two groups: wait_group 1 completes the older one
    cp_async_cg16(mine, src + l * 4);
    cp_async_commit();
    cp_async_cg16(mine + 4, src + 128 + l * 4);
    cp_async_commit();
    cp_async_wait_group<1>();
    for (int r = 0; r < 4; ++r) out[l * 8 + r] = mine[r];
    cp_async_wait_group<0>();
    for (int r = 0; r < 4; ++r) out[l * 8 + 4 + r] = mine[4 + r];
  }
}

// 16-byte vectors: global -> shared (uint4, plain reinterpret_cast) -> a neighbour's -> global (float4).
__global__ void vector_kernel(uint32_t* out, const uint32_t* src) {
  __shared__ uint4 s[32];
  const int l = int(threadIdx.x);
  s[l] = load_vector<uint4>(src + 4 * l);
  __syncwarp();
  const float4 v = reinterpret_cast<const float4*>(s)[(l + 7) % 32];
  store_vector(reinterpret_cast<float*>(out) + 4 * l, v);
}

// ---- host references (from the PTX ISA's layouts, independently of the emulator) ---------------------
uint32_t rna_ref(uint32_t u) {
  if ((u & 0x7f800000u) == 0x7f800000u) return u;  // inputs here are finite
  uint32_t sign = u & 0x80000000u, mag = u & 0x7fffffffu, low = mag & 0x1fffu;
  mag -= low;
  if (low >= 0x1000u) mag += 0x2000u;  // ties away from zero
  return sign | mag;
}

std::vector<uint32_t> ref_cvt() {
  std::vector<uint32_t> o(128);
  for (uint32_t l = 0; l < 32; ++l) {
    const uint32_t base = 0x3F800000u + (l << 13) + ((l & 1) << 31);
    const uint32_t in[4] = {base | 0x1000u, base | 0x0FFFu, base | 0x1001u, (mix(l) & 0x8FFFFFFFu) | 0x00800000u};
    for (int r = 0; r < 4; ++r) o[l * 4 + r] = rna_ref(in[r]);
  }
  return o;
}

// D = C + A B on full matrices (exact: small integers), scattered to the C/D fragment layout.
std::vector<uint32_t> ref_mma(int K, uint32_t sa, uint32_t sb, uint32_t sc) {
  std::vector<uint32_t> o(128);
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const int m = (l >> 2) + 8 * (i >> 1), n = 2 * (l & 3) + (i & 1);
      double acc = small_int(sc, uint32_t(m * 8 + n));
      for (int k = 0; k < K; ++k) acc += double(small_int(sa, uint32_t(m * K + k))) * small_int(sb, uint32_t(k * 8 + n));
      o[size_t(l * 4 + i)] = fbits(float(acc));
    }
  return o;
}

// Matrix j (lanes 8j..8j+7 give its rows) element (r, c) = ld_value(ld_row(8j + r), c).
std::vector<uint32_t> ref_ldmatrix(int num, bool trans) {
  std::vector<uint32_t> o(size_t(32 * num));
  auto M = [](int j, int r, int c) { return uint32_t(ld_value(ld_row(8 * j + r), c)); };
  for (int l = 0; l < 32; ++l)
    for (int j = 0; j < num; ++j) {
      const int a = l / 4, b = 2 * (l % 4);  // (row l/4, cols 2(l%4)..+1); .trans: of the transpose
      o[size_t(l * num + j)] = trans ? M(j, b, a) | M(j, b + 1, a) << 16 : M(j, a, b) | M(j, a, b + 1) << 16;
    }
  return o;
}

std::vector<uint32_t> source_words() {
  std::vector<uint32_t> s(8192);  // the tensor-core cases read the first 512; the TMA cases more
  for (uint32_t i = 0; i < s.size(); ++i) s[i] = mix(i + 77u);
  return s;
}
// `bytes` bytes from src word w, zero-filled after `valid` bytes, as words.
void copy_ref(uint32_t* dst, const std::vector<uint32_t>& src, int w, int bytes, int valid) {
  unsigned char buf[16] = {};
  std::memcpy(buf, &src[size_t(w)], size_t(valid));
  std::memcpy(dst, buf, size_t(bytes));
}
std::vector<uint32_t> ref_cp_async(int mode) {
  const std::vector<uint32_t> src = source_words();
  std::vector<uint32_t> o;
  for (int l = 0; l < 32; ++l) {
    uint32_t w[8] = {};
    if (mode == 0) {
      copy_ref(w, src, l * 4, 16, l % 17);
      o.insert(o.end(), w, w + 4);
    } else if (mode == 1) {
      copy_ref(w, src, l * 8 + 1, 4, l % 5);
      copy_ref(w + 1, src, l * 8 + 2, 8, l % 9);
      copy_ref(w + 3, src, l * 8 + 4, 16, (l * 7) % 17);
      o.insert(o.end(), w, w + 7);
    } else {
      copy_ref(w, src, l * 4, 16, 16);
      copy_ref(w + 4, src, 128 + l * 4, 16, 16);
      o.insert(o.end(), w, w + 8);
    }
  }
  return o;
}
std::vector<uint32_t> ref_vector() {
  const std::vector<uint32_t> src = source_words();
  std::vector<uint32_t> o(128);
  for (int l = 0; l < 32; ++l)
    for (int r = 0; r < 4; ++r) o[size_t(l * 4 + r)] = src[size_t(4 * ((l + 7) % 32) + r)];
  return o;
}

// ---- Hopper (sm_90a): TMA boxes and wgmma fragments -----------------------------------------------------
// Dynamic shared memory aligned up to 1024 bytes (the 128B swizzle's repeat) at run time: under nvcc its
// base is only known to be 16-byte aligned; the launches ask for 1 KiB more.
__device__ inline unsigned char* smem_1024(unsigned char* raw) { return raw + (1024 - smem_address(raw) % 1024) % 1024; }

// One warp: thread 0 announces and issues a 2-d box of `bytes` at (c0, c1); every lane waits, then lane l
// writes the destination's words [8l, 8l + 8) (1 KiB boxes).
__global__ void tma_kernel(const __grid_constant__ CUtensorMap map, uint32_t* out, int c0, int c1, uint32_t bytes) {
  DYNAMIC_SMEM(unsigned char, raw);
  unsigned char* smem = smem_1024(raw);
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + bytes);
  const int l = int(threadIdx.x);
  if (l == 0) {
    mbarrier_init(bar, 1);
    fence_mbarrier_init();
  }
  __syncthreads();
  if (l == 0) {
    (void)mbarrier_arrive_expect_tx(bar, bytes);
    tma_load_2d(smem, &map, bar, c0, c1);
  }
  mbarrier_wait_parity(bar, 0);
  const uint32_t* w = reinterpret_cast<const uint32_t*>(smem);
  for (int r = 0; r < 8; ++r) out[l * 8 + r] = w[l * 8 + r];
}

// The TMA cases: element size, global extent (elements, rows; rows of `pitch` bytes from the source
// words), box (elements, rows) of 1 KiB, swizzle, coordinates (partly out of bounds).
struct TmaConf {
  nimbus::cuda::TmaType type;
  int elem, dim0, dim1, pitch, box0, box1;
  nimbus::cuda::TmaSwizzle swizzle;
  int c0, c1;
};
const TmaConf kTma[] = {
    {nimbus::cuda::TmaType::BF16, 2, 72, 20, 160, 64, 8, nimbus::cuda::TmaSwizzle::B128, -8, 15},
    {nimbus::cuda::TmaType::F32, 4, 20, 40, 96, 16, 16, nimbus::cuda::TmaSwizzle::B64, 10, -3},
    {nimbus::cuda::TmaType::F32, 4, 12, 40, 64, 8, 32, nimbus::cuda::TmaSwizzle::B32, -2, 20},
    {nimbus::cuda::TmaType::U8, 1, 100, 20, 112, 64, 16, nimbus::cuda::TmaSwizzle::None, 50, -4},
};

template <int I>
void run_tma(uint32_t* out, const uint32_t* src) {
  const TmaConf& t = kTma[I];
  nimbus::cuda::TensorMapDesc d;
  d.type = t.type;
  d.rank = 2;
  d.global = src;
  d.dims[0] = uint64_t(t.dim0), d.dims[1] = uint64_t(t.dim1);
  d.strides[0] = uint64_t(t.pitch);
  d.box[0] = uint32_t(t.box0), d.box[1] = uint32_t(t.box1);
  d.swizzle = t.swizzle;
  alignas(64) CUtensorMap map;
  nimbus::cuda::encode_tensor_map(&map, d);
  launch(tma_kernel, 1, 32, 2048 + 64, nullptr, map, out, t.c0, t.c1, 1024u);
}

// The box as a dense array (dim 0 fastest), zero out of bounds, its bytes then moved by the swizzle:
// 16-byte chunk q of 128-byte line L goes to chunk q ^ (L mod 8) (128B), q ^ (L mod 4) (64B), q ^ (L mod 2) (32B).
template <int I>
std::vector<uint32_t> ref_tma() {
  const TmaConf& t = kTma[I];
  const std::vector<uint32_t> src = source_words();
  const auto* bytes = reinterpret_cast<const unsigned char*>(src.data());
  std::vector<unsigned char> img(1024, 0);
  const int sw = int(t.swizzle);
  for (int r = 0; r < t.box1; ++r)
    for (int e = 0; e < t.box0; ++e) {
      const int x = t.c0 + e, y = t.c1 + r;
      const size_t off = size_t((r * t.box0 + e) * t.elem), line = off / 128, chunk = (off % 128) / 16;
      const size_t flip = sw == 3 ? line % 8 : sw == 2 ? line % 4 : sw == 1 ? line % 2 : 0;
      const size_t to = line * 128 + (chunk ^ flip) * 16 + off % 16;
      if (x >= 0 && x < t.dim0 && y >= 0 && y < t.dim1)
        std::memcpy(&img[to], bytes + size_t(y) * size_t(t.pitch) + size_t(x * t.elem), size_t(t.elem));
    }
  std::vector<uint32_t> o(256);
  std::memcpy(o.data(), img.data(), 1024);
  return o;
}

// wgmma: one warpgroup. The host lays out small-integer operands in shared memory (an image copied in by
// plain stores, then fence.proxy.async); thread i writes its N/2 accumulators at out[i * N/2 + v].
struct WgConf {
  int n;
  bool tf32, a_regs, b_mn_major;
  WgmmaSwizzle sa, sb;
  uint32_t a_lbo, a_sbo, b_lbo, b_sbo;  // A at 0, B at 8192
};
constexpr WgConf kWg[] = {
    {32, false, false, false, WgmmaSwizzle::B128, WgmmaSwizzle::B128, 16, 1024, 16, 1024},
    {16, false, true, true, WgmmaSwizzle::None, WgmmaSwizzle::None, 0, 0, 512, 128},
    {16, true, false, false, WgmmaSwizzle::B64, WgmmaSwizzle::B32, 16, 512, 16, 256},
};

template <int I>
__global__ void wgmma_kernel(const unsigned char* image, uint32_t image_bytes, const uint32_t* a_regs, uint32_t* out) {
  constexpr WgConf c = kWg[I];
  DYNAMIC_SMEM(unsigned char, raw);
  unsigned char* smem = smem_1024(raw);
  const int i = int(threadIdx.x);
  for (uint32_t b = uint32_t(i); b < image_bytes; b += 128) smem[b] = image[b];
  fence_proxy_async_shared();
  __syncthreads();
  float d[c.n / 2];
  for (int v = 0; v < c.n / 2; ++v) d[v] = float(v % 5) - 2.0f;  // C, exact
  const uint32_t a[4] = {a_regs[i * 4], a_regs[i * 4 + 1], a_regs[i * 4 + 2], a_regs[i * 4 + 3]};
  const uint64_t da = wgmma_desc(smem, c.a_lbo, c.a_sbo, c.sa), db = wgmma_desc(smem + 8192, c.b_lbo, c.b_sbo, c.sb);
  wgmma_fence_operand(d);
  wgmma_fence();
  if constexpr (c.tf32)
    wgmma_m64k8_tf32<c.n>(d, da, db, 1);
  else if constexpr (c.a_regs)
    wgmma_m64k16_bf16_rs<c.n, int(c.b_mn_major)>(d, a, db, 1);
  else
    wgmma_m64k16_bf16<c.n>(d, da, db, 1);
  wgmma_commit_group();
  wgmma_wait_group<0>();
  wgmma_fence_operand(d);
  for (int v = 0; v < c.n / 2; ++v) out[i * (c.n / 2) + v] = __float_as_uint(d[v]);
}

// Operand values: A (m, k) = small_int(7, m*K + k), B (n, k) = small_int(8, n*K + k); tf32 words carry
// garbage in their low 13 bits. Shared addresses from the canonical layouts (CUTLASS make_gmma_desc):
// K-major swizzled: row r at (r/8)*SBO + (r%8)*W*16, k unit kc at kc*16; K-major none: (r/8)*SBO +
// (r%8)*16 + kc*LBO; MN-major none (bf16): MN unit u = mn/8 at u*SBO, k at (k%8)*16 + (k/8)*LBO; then
// Swizzle<B,4,3>: address bits [7, 7+B) XORed into [4, 4+B).
uint32_t conf_address(WgmmaSwizzle s, uint32_t lbo, uint32_t sbo, bool mn_major, int mn, int k, int elem) {
  const int B = s == WgmmaSwizzle::B128 ? 3 : s == WgmmaSwizzle::B64 ? 2 : s == WgmmaSwizzle::B32 ? 1 : 0;
  const uint32_t W = 1u << B, T = 16u / uint32_t(elem);
  uint32_t a;
  if (mn_major)
    a = uint32_t(mn / 8) * sbo + uint32_t(k % 8) * 16 + uint32_t(k / 8) * lbo + uint32_t(mn % 8) * 2;
  else
    a = uint32_t(mn / 8) * sbo + uint32_t(mn % 8) * 16 * (B ? W : 1) + (uint32_t(k) / T) * (B ? 16 : lbo) +
        (uint32_t(k) % T) * uint32_t(elem);
  return a ^ (((a >> 7) & ((1u << B) - 1)) << 4);
}
uint32_t wg_bits(bool tf32, uint32_t seed, uint32_t idx) {
  const float v = small_int(seed, idx);
  return tf32 ? fbits(v) | (mix(idx + seed) & 0x1fffu) : nimbus::bf16_from_float_rne(v);
}

template <int I>
void run_wgmma(uint32_t* out, const uint32_t*) {
  const WgConf& c = kWg[I];
  const int K = c.tf32 ? 8 : 16, elem = c.tf32 ? 4 : 2;
  std::vector<unsigned char> image(16384, 0);
  for (int m = 0; m < 64 && !c.a_regs; ++m)
    for (int k = 0; k < K; ++k) {
      const uint32_t v = wg_bits(c.tf32, 7, uint32_t(m * K + k));
      std::memcpy(&image[conf_address(c.sa, c.a_lbo, c.a_sbo, false, m, k, elem)], &v, size_t(elem));
    }
  for (int n = 0; n < c.n; ++n)
    for (int k = 0; k < K; ++k) {
      const uint32_t v = wg_bits(c.tf32, 8, uint32_t(n * K + k));
      std::memcpy(&image[8192 + conf_address(c.sb, c.b_lbo, c.b_sbo, c.b_mn_major, n, k, elem)], &v, size_t(elem));
    }
  // A registers (bf16): thread i, w = i/32, g = (i%32)/4, t = i%4: register r holds row 16w + g + 8(r%2),
  // columns 2t + 8(r/2) (bits 0-15) and the next (bits 16-31).
  std::vector<uint32_t> regs(512, 0);
  for (int i = 0; i < 128; ++i)
    for (int r = 0; r < 4; ++r) {
      const int row = 16 * (i / 32) + (i % 32) / 4 + 8 * (r % 2), col = 2 * (i % 4) + 8 * (r / 2);
      regs[size_t(i * 4 + r)] = wg_bits(false, 7, uint32_t(row * K + col)) | wg_bits(false, 7, uint32_t(row * K + col + 1)) << 16;
    }
  unsigned char* d_image = nullptr;
  uint32_t* d_regs = nullptr;
  CK(cudaMalloc(&d_image, image.size()));
  CK(cudaMalloc(&d_regs, regs.size() * 4));
  CK(cudaMemcpy(d_image, image.data(), image.size(), cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_regs, regs.data(), regs.size() * 4, cudaMemcpyHostToDevice));
  launch(wgmma_kernel<I>, 1, 128, 16384 + 1024, nullptr, d_image, uint32_t(image.size()), d_regs, out);
  CK(cudaDeviceSynchronize());
  CK(cudaFree(d_image));
  CK(cudaFree(d_regs));
}

// D fragment: thread i's v-th accumulator is (row 16w + g + 8((v%4)/2), column 8(v/4) + 2t + v%2).
template <int I>
std::vector<uint32_t> ref_wgmma() {
  const WgConf& c = kWg[I];
  const int K = c.tf32 ? 8 : 16, R = c.n / 2;
  std::vector<uint32_t> o(size_t(128 * R));
  for (int i = 0; i < 128; ++i)
    for (int v = 0; v < R; ++v) {
      const int m = 16 * (i / 32) + (i % 32) / 4 + 8 * ((v % 4) / 2), n = 8 * (v / 4) + 2 * (i % 4) + v % 2;
      double acc = double(v % 5) - 2.0;
      for (int k = 0; k < K; ++k)
        acc += double(small_int(7, uint32_t(m * K + k))) * double(small_int(8, uint32_t(n * K + k)));
      o[size_t(i * R + v)] = fbits(float(acc));
    }
  return o;
}

// ---- driver ------------------------------------------------------------------------------------------
struct Instr {
  const char* name;
  int regs;  // words per lane (per thread)
  void (*run)(uint32_t* out, const uint32_t* src);
  std::vector<uint32_t> (*ref)();
  int threads = 32;     // one warp, or a warpgroup (128): the 32 "lane" hashes then cover 4 threads each
  bool hopper = false;  // needs sm_90a (compute capability 9.0) on a GPU
};

template <int Num, bool Trans>
void run_ldmatrix(uint32_t* out, const uint32_t*) {
  launch(ldmatrix_kernel, 1, 32, 0, nullptr, out, Num, int(Trans));
}
template <int Num, bool Trans>
std::vector<uint32_t> ref_ld() {
  return ref_ldmatrix(Num, Trans);
}

const Instr kInstrs[] = {
    {"cvt.rna.tf32.f32", 4, [](uint32_t* o, const uint32_t*) { launch(cvt_kernel, 1, 32, 0, nullptr, o); }, ref_cvt},
    {"mma.m16n8k8.tf32", 4, [](uint32_t* o, const uint32_t*) { launch(mma_tf32_kernel, 1, 32, 0, nullptr, o, 0); },
     [] { return ref_mma(8, 1, 2, 3); }},
    {"mma.m16n8k8.tf32_lowbits", 4,
     [](uint32_t* o, const uint32_t*) { launch(mma_tf32_kernel, 1, 32, 0, nullptr, o, 1); },
     [] { return ref_mma(8, 1, 2, 3); }},
    {"mma.m16n8k16.bf16", 4, [](uint32_t* o, const uint32_t*) { launch(mma_bf16_kernel, 1, 32, 0, nullptr, o); },
     [] { return ref_mma(16, 4, 5, 6); }},
    {"ldmatrix.x1", 1, run_ldmatrix<1, false>, ref_ld<1, false>},
    {"ldmatrix.x2", 2, run_ldmatrix<2, false>, ref_ld<2, false>},
    {"ldmatrix.x4", 4, run_ldmatrix<4, false>, ref_ld<4, false>},
    {"ldmatrix.x1.trans", 1, run_ldmatrix<1, true>, ref_ld<1, true>},
    {"ldmatrix.x2.trans", 2, run_ldmatrix<2, true>, ref_ld<2, true>},
    {"ldmatrix.x4.trans", 4, run_ldmatrix<4, true>, ref_ld<4, true>},
    {"cp.async.cg16.zfill", 4, [](uint32_t* o, const uint32_t* s) { launch(cp_async_kernel, 1, 32, 0, nullptr, o, s, 0); },
     [] { return ref_cp_async(0); }},
    {"cp.async.ca4_8_16.zfill", 7,
     [](uint32_t* o, const uint32_t* s) { launch(cp_async_kernel, 1, 32, 0, nullptr, o, s, 1); },
     [] { return ref_cp_async(1); }},
    {"cp.async.wait_group", 8, [](uint32_t* o, const uint32_t* s) { launch(cp_async_kernel, 1, 32, 0, nullptr, o, s, 2); },
     [] { return ref_cp_async(2); }},
    {"vector.16B", 4, [](uint32_t* o, const uint32_t* s) { launch(vector_kernel, 1, 32, 0, nullptr, o, s); }, ref_vector},
    {"tma.2d.bf16.swizzle128B", 8, run_tma<0>, ref_tma<0>, 32, true},
    {"tma.2d.f32.swizzle64B", 8, run_tma<1>, ref_tma<1>, 32, true},
    {"tma.2d.f32.swizzle32B", 8, run_tma<2>, ref_tma<2>, 32, true},
    {"tma.2d.u8.noswizzle", 8, run_tma<3>, ref_tma<3>, 32, true},
    {"wgmma.m64n32k16.bf16", 16, run_wgmma<0>, ref_wgmma<0>, 128, true},
    {"wgmma.m64n16k16.bf16.rs", 8, run_wgmma<1>, ref_wgmma<1>, 128, true},
    {"wgmma.m64n16k8.tf32", 8, run_wgmma<2>, ref_wgmma<2>, 128, true},
};

uint64_t fnv1a(const uint32_t* w, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i)
    for (int b = 0; b < 4; ++b) h = (h ^ ((w[i] >> (8 * b)) & 0xffu)) * 0x100000001b3ull;
  return h;
}
std::string hex(uint64_t h) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

struct Result {
  std::string name;
  std::string total;
  std::vector<std::string> lanes;  // 32 per-lane hashes
};

// "name total lane0 .. lane31" per line; '#' starts a comment.
std::map<std::string, Result> read_expected(const std::string& path, bool& ok) {
  std::map<std::string, Result> m;
  std::ifstream f(path);
  ok = bool(f);
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream is(line);
    Result r;
    is >> r.name >> r.total;
    std::string h;
    while (is >> h) r.lanes.push_back(h);
    m[r.name] = r;
  }
  return m;
}

std::string default_expected() {
  std::string f = __FILE__;
  const size_t slash = f.find_last_of('/');
  return (slash == std::string::npos ? std::string() : f.substr(0, slash + 1)) + "conformance_expected.txt";
}

int usage(const char* prog) {
  std::fprintf(stderr, "usage: %s [--expect FILE] [--write-expected FILE] [--dump]\n", prog);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string expect, write;
  bool dump = false, expect_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--expect" && i + 1 < argc) {
      expect = argv[++i], expect_given = true;
    } else if (a == "--write-expected" && i + 1 < argc) {
      write = argv[++i];
    } else if (a == "--dump") {
      dump = true;
    } else {
      return usage(argv[0]);
    }
  }
#ifdef __CUDACC__
  require_device();
  const char* world = "gpu";
#else
  const char* world = "emulator";
#endif
  if (!expect_given && write.empty()) {
    std::ifstream probe(default_expected());
    if (probe) expect = default_expected();
  }
  bool expected_ok = true;
  std::map<std::string, Result> expected;
  if (!expect.empty()) {
    expected = read_expected(expect, expected_ok);
    if (!expected_ok) {
      std::fprintf(stderr, "conformance: cannot read %s\n", expect.c_str());
      return 2;
    }
  }
  bool ok = true;
  std::vector<Result> results;
  try {
    const std::vector<uint32_t> src = source_words();
    uint32_t *d_src = nullptr, *d_out = nullptr;
    CK(cudaMalloc(&d_src, src.size() * 4));
    size_t out_words = 0;
    for (const Instr& in : kInstrs) out_words = std::max(out_words, size_t(in.threads * in.regs));
    CK(cudaMalloc(&d_out, out_words * 4));
#ifdef __CUDACC__
    int major = 0;
    CK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
    const bool hopper = major == 9;  // sm_90a code runs on compute capability 9.0 only
#else
    const bool hopper = true;
#endif
    CK(cudaMemcpy(d_src, src.data(), src.size() * 4, cudaMemcpyHostToDevice));
    for (const Instr& in : kInstrs) {
      if (in.hopper && !hopper) {
        std::printf("%-26s skipped: needs sm_90a (compute capability 9.0)\n", in.name);
        continue;
      }
      const size_t n = size_t(in.threads * in.regs), per = n / 32;  // words per "lane" hash
      CK(cudaMemset(d_out, 0xFF, out_words * 4));
      in.run(d_out, d_src);
      CK(cudaGetLastError());
      CK(cudaDeviceSynchronize());
      std::vector<uint32_t> got(n);
      CK(cudaMemcpy(got.data(), d_out, n * 4, cudaMemcpyDeviceToHost));
      const std::vector<uint32_t> want = in.ref();
      Result r{in.name, hex(fnv1a(got.data(), n)), {}};
      for (int l = 0; l < 32; ++l) r.lanes.push_back(hex(fnv1a(&got[size_t(l) * per], per)));
      int bad = 0;
      for (int l = 0; l < in.threads; ++l)
        for (int k = 0; k < in.regs; ++k) {
          const size_t i = size_t(l * in.regs + k);
          if (got[i] == want[i]) continue;
          if (bad++ < 4)
            std::printf("  %s: thread %d register %d: 0x%08x, the PTX layout says 0x%08x\n", in.name, l, k, got[i],
                        want[i]);
        }
      std::string vs_file = "";
      if (!expect.empty()) {
        auto it = expected.find(in.name);
        if (it == expected.end()) {
          vs_file = ", not in the expected file";
          ok = false;
        } else if (it->second.total != r.total) {
          ok = false;
          std::string lanes;
          for (int l = 0; l < 32; ++l)
            if (size_t(l) >= it->second.lanes.size() || it->second.lanes[size_t(l)] != r.lanes[size_t(l)])
              lanes += (lanes.empty() ? "" : ",") + std::to_string(l);
          vs_file = ", expected " + it->second.total + " (lanes differing: " + lanes + ")";
        } else {
          vs_file = ", matches the expected file";
        }
      }
      std::printf("%-26s %s  %s%s%s\n", in.name, r.total.c_str(), bad ? "MISMATCH vs the host reference" : "ok",
                  bad ? (" (" + std::to_string(bad) + " words)").c_str() : "", vs_file.c_str());
      if (dump)
        for (int l = 0; l < in.threads; ++l) {
          std::printf("  lane %2d:", l);
          for (int k = 0; k < in.regs; ++k) std::printf(" %08x", got[size_t(l * in.regs + k)]);
          std::printf("\n");
        }
      ok = ok && bad == 0;
      results.push_back(r);
    }
    cudaFree(d_src);
    cudaFree(d_out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "conformance (%s): %s\n", world, e.what());
    return 1;
  }
  if (!write.empty()) {
    std::ofstream f(write);
    f << "# bench/cuda/conformance.cu expected hashes (FNV-1a 64 of every lane's output words), written by\n"
         "# the emulator build: bench_cuda_conformance --write-expected FILE. Per line: instruction, hash of\n"
         "# all lanes, then one hash per lane 0..31. The GPU build compares with --expect FILE.\n";
    for (const Result& r : results) {
      f << r.name << ' ' << r.total;
      for (const std::string& h : r.lanes) f << ' ' << h;
      f << '\n';
    }
    if (!f) {
      std::fprintf(stderr, "conformance: cannot write %s\n", write.c_str());
      return 2;
    }
    std::printf("wrote %s\n", write.c_str());
  }
  std::printf("conformance (%s): %s%s%s\n", world, ok ? "all instructions match" : "MISMATCH",
              expect.empty() ? "" : ", expected hashes from ", expect.c_str());
  return ok ? 0 : 1;
}
