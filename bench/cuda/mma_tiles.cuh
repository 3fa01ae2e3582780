/* mma_tiles.cuh: the pieces that the tensor-core kernel versions of bench/cuda (gemm.cu v4 and v5,
 * conv2d.cu v3) share: one block tile, its shared-memory layout, the loaders that stage a tile of
 * a row-major matrix into shared memory, the warp-level mma loop, the double-buffered k loop around
 * them, and the epilogue walk.
 * Device code in the kernel contract (docs/cuda-emulator.md): it runs by nvcc (sm_80+) and under
 * the CUDA-on-CPU emulator, where kernels/cuda/tensor_core.h models every instruction.
 *
 * The block tile. C (BM x BN = 128 x 128) += A (BM x BK) B (BK x BN) per step of BK = 32 along k.
 * 256 threads = 8 warps in a 2 x 4 grid; each warp owns a 64 x 32 piece of C, i.e. 4 x 4 mma
 * fragments of m16n8, so a thread keeps 4 * 4 * 4 = 64 fp32 accumulators in registers:
 *
 *            n: 0      32      64      96     128
 *   m:   0   +-------+-------+-------+-------+
 *            | warp0 | warp1 | warp2 | warp3 |      warp w: rows 64 * (w / 4), columns 32 * (w % 4)
 *       64   +-------+-------+-------+-------+
 *            | warp4 | warp5 | warp6 | warp7 |
 *      128   +-------+-------+-------+-------+
 *
 * Shared memory per stage (two stages: the next k-tile is copied while this one is multiplied):
 *   A tile BM x BK, k contiguous (A's rows), B tile BK x BN, n contiguous (B's rows), both padded
 *   so that the fragment reads of one warp hit 32 different banks (see the layout constants).
 *   tf32: 128 x 36 + 32 x 136 floats = 35,840 bytes a stage, 71,680 for two (dynamic shared memory
 *         above the 48 KiB default: cudaFuncSetAttribute).
 *   bf16: 128 x 40 + 32 x 136 bf16   = 18,944 bytes a stage, 37,888 for two.
 *
 * Loaders (a tile of rows [r0, r0 + TR) x columns [c0, c0 + TC) of a rows x cols row-major matrix;
 * everything outside the matrix becomes 0, so partial tiles need no special case in the mma loop):
 *   stage_tile_cp16   16-byte cp.async chunks, zero-filled past the edge (src_bytes 0); needs
 *                     cols % (16 / sizeof(T)) == 0 and a 16-byte aligned base: the fast path
 *   stage_tile_cp4    fp32 only: one 4-byte cp.async per element; any cols, any 4-byte alignment
 *   stage_tile_plain  any element type: plain loads and stores (bf16 at odd sizes: cp.async
 *                     copies at least 4 bytes, and an odd-length bf16 row is only 2-byte aligned)
 */
#pragma once
#include <cstdint>

#include "kernels/cuda/compat.h"
#include "kernels/cuda/mma_core.cuh"
#include "kernels/cuda/tensor_core.h"

namespace mma_tiles {

constexpr int kBM = 128, kBN = 128, kBK = 32;  // block tile
constexpr int kThreads = 256;                  // 8 warps
constexpr int kWarpsN = 4;                     // warps along n (2 along m)
constexpr int kWM = 64, kWN = 32;              // warp tile
constexpr int kFragsM = kWM / 16, kFragsN = kWN / 8;  // 4 x 4 fragments of m16n8 per warp

using Acc = float[kFragsM][kFragsN][4];  // a thread's accumulators: fragment (i, j), register c0..c3

// ---- tf32 layout ------------------------------------------------------------------------------------
// A fragment read (PTX m16n8k8 tf32): lane (g = lane/4, t = lane%4) reads A[g][t] (and rows +8,
// columns +4). With rows 36 floats apart, row g starts at bank 4g, so the 32 lanes read banks
// 4g + t: all different. B fragment: lane reads B[t][g]; rows 136 floats apart start at bank 8t,
// so banks 8t + g: all different. Both pitches keep rows 16-byte aligned for the cp.async chunks.
constexpr int kLdaF = kBK + 4;                        // 36 floats
constexpr int kLdbF = kBN + 8;                        // 136 floats
constexpr int kStageF = kBM * kLdaF + kBK * kLdbF;    // floats per stage (A, then B)
constexpr size_t kSmemTf32 = 2 * size_t(kStageF) * sizeof(float);

// ---- bf16 layout --------------------------------------------------------------------------------------
// ldmatrix reads eight 16-byte rows per 8x8 matrix in one shared-memory phase; they are conflict-free
// when the eight rows start in eight different 16-byte bank groups. A rows 40 bf16 = 80 bytes
// apart: row r in group 5r mod 8; B rows 136 bf16 = 272 bytes: group 17r mod 8 = r mod 8. Both
// all different for r = 0..7 (unpadded, 64 and 256 bytes, rows would collide 2-way and 8-way).
constexpr int kLdaH = kBK + 8;                        // 40 bf16
constexpr int kLdbH = kBN + 8;                        // 136 bf16
constexpr int kStageH = kBM * kLdaH + kBK * kLdbH;    // bf16 elements per stage
constexpr size_t kSmemBf16 = 2 * size_t(kStageH) * sizeof(uint16_t);

// The layout by operand type: float (tf32) or uint16_t (bf16 bit patterns).
template <typename T>
struct StageLayout;
template <>
struct StageLayout<float> {
  static constexpr int kLda = kLdaF, kLdb = kLdbF, kStage = kStageF;
  static constexpr size_t kSmem = kSmemTf32;
};
template <>
struct StageLayout<uint16_t> {
  static constexpr int kLda = kLdaH, kLdb = kLdbH, kStage = kStageH;
  static constexpr size_t kSmem = kSmemBf16;
};

// ---- loaders (every thread of the block calls them; no barrier inside) -----------------------------------
template <typename T, int TR, int TC, int LD>
__device__ __forceinline__ void stage_tile_cp16(T* s, const T* g, int rows, int cols, int r0, int c0) {
  constexpr int kPer = 16 / int(sizeof(T)), kPerRow = TC / kPer, kChunks = TR * kPerRow;
  static_assert(TC % kPer == 0 && kChunks % kThreads == 0, "whole chunks, the same number per thread");
  for (int i = int(threadIdx.x); i < kChunks; i += kThreads) {
    const int r = i / kPerRow, c = (i % kPerRow) * kPer;
    const bool in = r0 + r < rows && c0 + c < cols;  // cols % kPer == 0: a chunk is all in or all out
    const T* src = in ? g + int64_t(r0 + r) * cols + (c0 + c) : g;  // a valid address even when unread
    cp_async_cg16(s + r * LD + c, src, in ? 16 : 0);
  }
}

template <int TR, int TC, int LD>
__device__ __forceinline__ void stage_tile_cp4(float* s, const float* g, int rows, int cols, int r0, int c0) {
  static_assert((TR * TC) % kThreads == 0, "the same number of elements per thread");
  for (int i = int(threadIdx.x); i < TR * TC; i += kThreads) {
    const int r = i / TC, c = i % TC;
    const bool in = r0 + r < rows && c0 + c < cols;
    cp_async_ca<4>(s + r * LD + c, in ? g + int64_t(r0 + r) * cols + (c0 + c) : g, in ? 4 : 0);
  }
}

template <typename T, int TR, int TC, int LD>
__device__ __forceinline__ void stage_tile_plain(T* s, const T* g, int rows, int cols, int r0, int c0) {
  static_assert((TR * TC) % kThreads == 0, "the same number of elements per thread");
  for (int i = int(threadIdx.x); i < TR * TC; i += kThreads) {
    const int r = i / TC, c = i % TC;
    const bool in = r0 + r < rows && c0 + c < cols;
    s[r * LD + c] = in ? g[int64_t(r0 + r) * cols + (c0 + c)] : T(0);
  }
}

// ---- the warp's mma loop over one staged k-tile ------------------------------------------------------------
// tf32, m16n8k8: 4 k-steps of 8. Per step a warp reads 4 A fragments (4 floats a lane each) and 4 B
// fragments (2 each) with scalar shared loads, rounds them with cvt.rna.tf32, and issues 16 mma.
// As: this stage's A tile (kBM x kLdaF), Bs: its B tile (kBK x kLdbF); wm, wn: the warp's position.
__device__ __forceinline__ void warp_mma_tf32(const float* As, const float* Bs, Acc& acc, int wm, int wn) {
  const int lane = int(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int kk = 0; kk < kBK; kk += 8) {
    uint32_t a[kFragsM][4], b[kFragsN][2];
#pragma unroll
    for (int i = 0; i < kFragsM; ++i) {  // a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4)
      const float* p = As + (wm * kWM + i * 16 + g) * kLdaF + kk + t;
      a[i][0] = cvt_rna_tf32(p[0]);
      a[i][1] = cvt_rna_tf32(p[8 * kLdaF]);
      a[i][2] = cvt_rna_tf32(p[4]);
      a[i][3] = cvt_rna_tf32(p[8 * kLdaF + 4]);
    }
#pragma unroll
    for (int j = 0; j < kFragsN; ++j) {  // b0 (k t, n g), b1 (k t+4, n g)
      const float* p = Bs + (kk + t) * kLdbF + wn * kWN + j * 8 + g;
      b[j][0] = cvt_rna_tf32(p[0]);
      b[j][1] = cvt_rna_tf32(p[4 * kLdbF]);
    }
#pragma unroll
    for (int i = 0; i < kFragsM; ++i)
#pragma unroll
      for (int j = 0; j < kFragsN; ++j) mma_m16n8k8_tf32(acc[i][j], a[i], b[j], acc[i][j]);
  }
}

// bf16, m16n8k16: 2 k-steps of 16. Per step 4 ldmatrix.x4 give the 4 A fragments (matrices: rows
// 0-7 / 8-15 x k 0-7 / 8-15, in the register order a0a1, a2a3, a4a5, a6a7), 2 ldmatrix.x4.trans
// give the 4 B fragments two at a time (B's rows are k: the transpose hands lane (g, t) the pair
// k = 2t, 2t+1 of column g), then 16 mma.
__device__ __forceinline__ void warp_mma_bf16(const uint16_t* As, const uint16_t* Bs, Acc& acc, int wm, int wn) {
  const int lane = int(threadIdx.x) % 32, mat = lane / 8, row = lane % 8;  // lane gives row `row` of matrix `mat`
#pragma unroll
  for (int kk = 0; kk < kBK; kk += 16) {
    uint32_t a[kFragsM][4], b[kFragsN][2];
#pragma unroll
    for (int i = 0; i < kFragsM; ++i)
      ldmatrix_x4(a[i], As + (wm * kWM + i * 16 + row + 8 * (mat & 1)) * kLdaH + kk + 8 * (mat >> 1));
#pragma unroll
    for (int j = 0; j < kFragsN; j += 2) {  // matrices: k 0-7 / 8-15 of fragment j, then of j + 1
      uint32_t r[4];
      ldmatrix_x4_trans(r, Bs + (kk + row + 8 * (mat & 1)) * kLdbH + wn * kWN + (j + (mat >> 1)) * 8);
      b[j][0] = r[0], b[j][1] = r[1], b[j + 1][0] = r[2], b[j + 1][1] = r[3];
    }
#pragma unroll
    for (int i = 0; i < kFragsM; ++i)
#pragma unroll
      for (int j = 0; j < kFragsN; ++j) mma_m16n8k16_bf16(acc[i][j], a[i], b[j], acc[i][j]);
  }
}

// ---- the k loop: two stages (the backend's, kernels/cuda/mma_core.cuh) ---------------------------------------
using nimbus::cuda::mma::double_buffered_k_loop;

// ---- epilogue ---------------------------------------------------------------------------------------------------
// Calls store(row, col, v0, v1) for every pair of adjacent accumulators of this thread: columns
// col and col + 1 of `row` (C/D fragment: c0 c1 at (g, 2t), (g, 2t+1); c2 c3 at row g + 8). Rows
// and columns are the block tile's plus (m0, n0); the caller checks them against the matrix.
template <typename Store>
__device__ __forceinline__ void for_each_acc_pair(const Acc& acc, int m0, int n0, int wm, int wn, Store&& store) {
  const int lane = int(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < kFragsM; ++i)
#pragma unroll
    for (int j = 0; j < kFragsN; ++j) {
      const int row = m0 + wm * kWM + i * 16 + g, col = n0 + wn * kWN + j * 8 + 2 * t;
      store(row, col, acc[i][j][0], acc[i][j][1]);
      store(row + 8, col, acc[i][j][2], acc[i][j][3]);
    }
}

// The accumulators into row-major C (M x N): a pair of columns as one 8-byte store when N is even
// (then C + row * N + col, col even, is 8-byte aligned), element by element at the right edge.
__device__ __forceinline__ void store_c_row_major(const Acc& acc, float* C, int M, int N, int m0, int n0, int wm,
                                                  int wn) {
  const bool pairs = N % 2 == 0;
  for_each_acc_pair(acc, m0, n0, wm, wn, [&](int row, int col, float v0, float v1) {
    if (row >= M) return;
    float* c = C + int64_t(row) * N + col;
    if (pairs && col + 1 < N) {
      store_vector(c, make_float2(v0, v1));
    } else {
      if (col < N) c[0] = v0;
      if (col + 1 < N) c[1] = v1;
    }
  });
}

// Host: true when p is 16-byte aligned (the cp.async fast path's other condition).
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace mma_tiles

// ---- host side: validating and reporting the tensor-core versions -----------------------------------------
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench/cuda/bench_util.cuh"
#include "kernels/common/tf32.h"

namespace mma_tiles {

// cvt.rna.tf32.f32 on the host (kernels/common/tf32.h).
inline float round_tf32(float x) { return nimbus::tf32_round(x); }

// The rel_err bound of a precision: bench_util.cuh's bound() (the --case rows' bound), which sits
// in that header's nvcc-only part; the emulator build uses the same numbers.
inline double precision_bound(const std::string& precision) { return bound(precision); }

// The orders a small validation runs a version in: under the emulator forward, reverse and shuffled
// (threads within a block and blocks within the grid), whose outputs must be bitwise equal (these
// kernels use no atomics); on a GPU once, in the hardware's order. Scope object: restores the order.
class ValidationOrder {
 public:
#ifdef __CUDACC__
  static constexpr int kCount = 1;
  explicit ValidationOrder(int) {}
  const char* name() const { return "gpu"; }
#else
#if defined(__SANITIZE_ADDRESS__)
  // Under AddressSanitizer the shuffled order only (kOrders' last), as the tests' sweeps
  // (tests/emu/emu_util.h, kSweepOrders): what ASan checks does not depend on the order, and the
  // Release build checks all three bit for bit.
  static constexpr int kCount = 1;
  explicit ValidationOrder(int i) : saved_(nimbus::emu::order()), order_(kOrders[2 - i]) {
#else
  static constexpr int kCount = 3;
  explicit ValidationOrder(int i) : saved_(nimbus::emu::order()), order_(kOrders[i]) {
#endif
    nimbus::emu::set_order({order_, 7});
  }
  ~ValidationOrder() { nimbus::emu::set_order(saved_); }
  ValidationOrder(const ValidationOrder&) = delete;
  ValidationOrder& operator=(const ValidationOrder&) = delete;
  const char* name() const { return nimbus::emu::order_name(order_); }

 private:
  static constexpr nimbus::emu::Order kOrders[3] = {nimbus::emu::Order::Forward, nimbus::emu::Order::Reverse,
                                                    nimbus::emu::Order::Shuffle};
  nimbus::emu::OrderSpec saved_;
  nimbus::emu::Order order_;
#endif
};

// One output of a tensor-core version against its float64 references (validate_mma in gemm.cu and
// conv2d.cu): ref from the fp32 inputs, rounded from the operands the tensor cores multiply, mag
// the sum of |a b| per element.
struct MmaCheck {
  double rel = 0;    // ||out - ref|| / ||ref|| (NaN when an element is not finite): within the precision's bound
  double worst = 0;  // max |out - rounded| / (1e-5 mag): <= 1
  bool same = true;  // bitwise equal to the first order's output
  bool pass = false;
};

// Runs a version once per ValidationOrder: run(out) writes the n = ref.size() outputs into the device
// buffer out (NaN bytes beforehand, so every element must be written), then print(order name, check)
// reports the order. True if every order passed.
inline bool check_in_every_order(const std::function<void(float* out)>& run, const std::vector<double>& ref,
                                 const std::vector<double>& rounded, const std::vector<double>& mag, double bound,
                                 const std::function<void(const char* order, const MmaCheck& c)>& print) {
  float* dout = nullptr;
  CK(cudaMalloc(&dout, ref.size() * sizeof(float)));
  bool ok = true;
  std::vector<float> first;
  for (int o = 0; o < ValidationOrder::kCount; ++o) {
    const ValidationOrder order(o);
    CK(cudaMemset(dout, 0xFF, ref.size() * sizeof(float)));
    run(dout);
    std::vector<float> out(ref.size());
    CK(cudaMemcpy(out.data(), dout, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
    MmaCheck c;
    double num = 0, den = 0;
    for (size_t i = 0; i < out.size(); ++i) {
      num += (out[i] - ref[i]) * (out[i] - ref[i]), den += ref[i] * ref[i];
      const double e = std::fabs(out[i] - rounded[i]) / (1e-5 * mag[i] + 1e-30);
      c.worst = std::isfinite(out[i]) ? std::fmax(c.worst, e) : INFINITY;
    }
    c.rel = std::isfinite(c.worst) ? std::sqrt(num / (den > 0 ? den : 1)) : NAN;
    c.same = first.empty() || std::memcmp(first.data(), out.data(), out.size() * sizeof(float)) == 0;
    c.pass = c.rel <= bound && c.worst <= 1 && c.same;
    print(order.name(), c);
    ok = ok && c.pass;
    if (first.empty()) first = out;
  }
  cudaFree(dout);
  return ok;
}

// A device copy of a host vector of any trivially copyable type (the caller frees it with cudaFree).
template <typename T>
T* upload_any(const std::vector<T>& h) {
  T* d = nullptr;
  CK(cudaMalloc(&d, h.size() * sizeof(T)));
  CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

#ifdef __CUDACC__
// print_rows (bench_util.cuh) once per precision, so that each of our rows names the library
// reference in its own precision ("cublas_tf32" for a tf32 version) with that reference's median:
// the rows of precision p are `library`'s p row and our versions in p, in the order of `impls`.
inline bool print_rows_by_precision(const std::string& case_name, const std::vector<Impl>& impls, double flops,
                                    int layers, const std::string& device, const std::string& library,
                                    int layers_total = 0) {
  bool ok = true;
  for (const char* p : {"fp32", "tf32", "bf16"}) {
    std::vector<Impl> group;
    for (const Impl& im : impls)
      if (im.precision == p && (im.ours || im.name == library)) group.push_back(im);
    if (!group.empty()) ok = print_rows(case_name, group, flops, layers, device, library + "_" + p, layers_total) && ok;
  }
  return ok;
}
#endif

}  // namespace mma_tiles
