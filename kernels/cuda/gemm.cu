/* gemm.cu: shared-memory tiled SGEMM (the engine's default CUDA GEMM), bias fill/reduction, and the
 * linear layer on top of them.
 *
 * SGEMM: one TILE x TILE thread block computes one TILE x TILE tile of C, one element per thread.
 * Per step it stages a TILE x TILE slice of op(A) and of op(B) in shared memory (out-of-range
 * cells as 0, so any M, N, K works), then every thread runs TILE multiply-adds from shared memory.
 * gemm_batched runs independent GEMMs side by side (blockIdx.z picks the matrices); gemm_reduce sums
 * the products of a batch of operand pairs into one C (a convolution's weight gradient over images).
 * Each C element is summed over the pairs, then k, in increasing order by one thread: no atomics, the result does
 * not depend on thread or block order. tile == 64 selects the register-blocked kernel below
 * (bench/cuda/gemm.cu version 3); the default stays 16 until a GPU timing says otherwise.
 * CPU twin: kernels/cpu/gemm.h.
 */
#include "kernels/cuda/gemm.h"

#include <atomic>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/compat.h"
#include "kernels/common/error.h"

namespace nimbus::cuda {

// C = alpha op(A) op(B) + beta C. Block (TILE, TILE); grid (ceil(N/TILE), ceil(M/TILE)).
// `reduce` > 1 (gemm_reduce): the block sums op(A_r) op(B_r) over r < reduce into its one C tile.
template <int TILE>
__global__ void sgemm_tiled_kernel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                                   const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb,
                                   int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c,
                                   int64_t reduce) {
  __shared__ float As[TILE][TILE + 1];  // +1: no bank conflicts when a column is read
  __shared__ float Bs[TILE][TILE + 1];
  A += blockIdx.z * stride_a, B += blockIdx.z * stride_b, C += blockIdx.z * stride_c;  // this block's matrices
  const int tx = int(threadIdx.x), ty = int(threadIdx.y);
  const int64_t row = int64_t(blockIdx.y) * TILE + ty, col = int64_t(blockIdx.x) * TILE + tx;
  float acc = 0.0f;
  for (int64_t r = 0; r < reduce; ++r, A += stride_a, B += stride_b)
    for (int64_t k0 = 0; k0 < K; k0 += TILE) {
      const int64_t ka = k0 + tx, kb = k0 + ty;
      As[ty][tx] = (row < M && ka < K) ? (trans_a ? A[ka * lda + row] : A[row * lda + ka]) : 0.0f;
      Bs[ty][tx] = (kb < K && col < N) ? (trans_b ? B[col * ldb + kb] : B[kb * ldb + col]) : 0.0f;
      __syncthreads();  // both tiles staged
      for (int kk = 0; kk < TILE; ++kk) acc += As[ty][kk] * Bs[kk][tx];
      __syncthreads();  // everyone done reading before the next step overwrites the tiles
    }
  if (row < M && col < N) {
    float* c = C + row * ldc + col;
    *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
  }
}

// Register-blocked variant (tile == 64): a 64x64 C tile per 256-thread block, each thread 4x4
// outputs accumulated in registers from 8-deep shared slices of op(A) (stored k-major) and op(B),
// so each shared value loaded feeds 4 FMAs instead of 1. Same k order per element as above.
constexpr int kRbM = 64, kRbN = 64, kRbK = 8, kRbT = 4;

__global__ void sgemm_regblock_kernel(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                                      const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb,
                                      int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c,
                                      int64_t reduce) {
  __shared__ float As[kRbK][kRbM];
  __shared__ float Bs[kRbK][kRbN];
  A += blockIdx.z * stride_a, B += blockIdx.z * stride_b, C += blockIdx.z * stride_c;
  const int tid = int(threadIdx.x), tr = tid / 16, tc = tid % 16;
  const int64_t row0 = int64_t(blockIdx.y) * kRbM, col0 = int64_t(blockIdx.x) * kRbN;
  float acc[kRbT][kRbT] = {};
  for (int64_t r = 0; r < reduce; ++r, A += stride_a, B += stride_b)
    for (int64_t k0 = 0; k0 < K; k0 += kRbK) {
      for (int e = tid; e < kRbM * kRbK; e += 256) {  // 2 elements of each slice per thread
        const int m = e / kRbK, k = e % kRbK;
        const int64_t gm = row0 + m, gk = k0 + k;
        As[k][m] = (gm < M && gk < K) ? (trans_a ? A[gk * lda + gm] : A[gm * lda + gk]) : 0.0f;
        const int kb = e / kRbN, n = e % kRbN;
        const int64_t gkb = k0 + kb, gn = col0 + n;
        Bs[kb][n] = (gkb < K && gn < N) ? (trans_b ? B[gn * ldb + gkb] : B[gkb * ldb + gn]) : 0.0f;
      }
      __syncthreads();  // slices staged
      for (int k = 0; k < kRbK; ++k) {
        float a[kRbT], b[kRbT];
        for (int i = 0; i < kRbT; ++i) a[i] = As[k][tr * kRbT + i];
        for (int j = 0; j < kRbT; ++j) b[j] = Bs[k][tc * kRbT + j];
        for (int i = 0; i < kRbT; ++i)
          for (int j = 0; j < kRbT; ++j) acc[i][j] += a[i] * b[j];
      }
      __syncthreads();  // slices consumed before the next step overwrites them
    }
  for (int i = 0; i < kRbT; ++i)
    for (int j = 0; j < kRbT; ++j) {
      const int64_t r = row0 + tr * kRbT + i, c = col0 + tc * kRbT + j;
      if (r < M && c < N) {
        float* out = C + r * ldc + c;
        *out = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *out;
      }
    }
}

// One launch of `batch` GEMMs side by side (grid z), or of one GEMM summed over `reduce` operand pairs.
static void launch_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                        int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta,
                        float* C, int64_t ldc, int64_t stride_c, int64_t batch, int64_t reduce, int tile) {
  NIMBUS_CHECK(tile == 8 || tile == 16 || tile == 32 || tile == 64, "cuda::gemm: tile ", tile,
               " must be 8, 16, 32 (shared-memory tiles) or 64 (register-blocked)");
  NIMBUS_CHECK(batch <= 65535, "cuda::gemm: batch of ", batch, " matrices (max 65535)");
  const int64_t bm = tile == 64 ? kRbM : tile, bn = tile == 64 ? kRbN : tile;
  const int64_t gx = (N + bn - 1) / bn, gy = (M + bm - 1) / bm;
  NIMBUS_CHECK(gy <= 65535, "cuda::gemm: M = ", M, " needs ", gy, " block rows (max 65535)");
  const dim3 grid{unsigned(gx), unsigned(gy), unsigned(batch)};
  const dim3 block = tile == 64 ? dim3{256} : dim3{unsigned(tile), unsigned(tile)};
  auto kernel = tile == 64 ? sgemm_regblock_kernel
                : tile == 8 ? sgemm_tiled_kernel<8>
                : tile == 16 ? sgemm_tiled_kernel<16>
                             : sgemm_tiled_kernel<32>;
  launch(kernel, grid, block, 0, launch_stream(), trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b,
         beta, C, ldc, stride_c, reduce);
  check_launch("cuda::gemm");
}

void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
                  int64_t ldc, int64_t stride_c, int64_t batch, int tile) {
  if (M <= 0 || N <= 0 || batch <= 0) return;
  if (GemmBatchedFn f = gemm_reference()) {
    f(trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c, batch);
    return;
  }
  launch_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, stride_c, batch, 1,
              tile);
}

void gemm_reduce(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
                 int64_t ldc, int64_t reduce, int tile) {
  if (M <= 0 || N <= 0) return;
  if (GemmBatchedFn f = gemm_reference()) {  // the reference: one GEMM per pair, accumulated through beta
    for (int64_t r = 0; r < reduce; ++r)
      f(trans_a, trans_b, M, N, K, alpha, A + r * stride_a, lda, 0, B + r * stride_b, ldb, 0, r == 0 ? beta : 1.0f, C,
        ldc, 0, 1);
    if (reduce <= 0 && beta != 1.0f) f(false, false, M, N, 0, 0.0f, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
    return;
  }
  launch_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc, 0, 1,
              reduce < 0 ? 0 : reduce, tile);
}

static std::atomic<GemmBatchedFn> gemm_reference_fn{nullptr};
void set_gemm_reference(GemmBatchedFn f) { gemm_reference_fn.store(f); }
GemmBatchedFn gemm_reference() { return gemm_reference_fn.load(std::memory_order_relaxed); }

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int tile) {
  gemm_batched(trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1, tile);
}

// ---------------------------------------------------------------------------------------------
// Bias: fill (pointwise) and its gradient (one block per channel, fixed-order block reduction).
__global__ void bias_fill_kernel(float* y, const float* b, int64_t K, int64_t inner, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) y[i] = b[(i / inner) % K];
}

// T = float or bfloat16 (summed in float, rounded once).
template <typename T>
__global__ void bias_backward_kernel(T* db, const T* dy, int64_t N, int64_t K, int64_t inner) {
  const int64_t k = blockIdx.x, m = N * inner;
  float acc = 0.0f;
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) acc += float(dy[((j / inner) * K + k) * inner + j % inner]);
  acc = block_reduce_sum(acc);
  if (threadIdx.x == 0) db[k] = T(acc);
}

void bias_fill(float* y, const float* b, int64_t N, int64_t K, int64_t inner, int block) {
  const int64_t n = N * K * inner;
  if (n <= 0) return;
  launch(bias_fill_kernel, grid_for(n, block), block, 0, launch_stream(), y, b, K, inner, n);
  check_launch("cuda::bias_fill");
}

template <typename T>
static void bias_backward_t(T* db, const T* dy, int64_t N, int64_t K, int64_t inner, int block) {
  if (K <= 0) return;
  NIMBUS_CHECK(K <= 2147483647, "cuda::bias_backward: ", K, " channels");
  launch(bias_backward_kernel<T>, unsigned(K), block, 0, launch_stream(), db, dy, N, K, inner);
  check_launch("cuda::bias_backward");
}
void bias_backward(float* db, const float* dy, int64_t N, int64_t K, int64_t inner, int block) {
  bias_backward_t(db, dy, N, K, inner, block);
}
void bias_backward(bfloat16* db, const bfloat16* dy, int64_t N, int64_t K, int64_t inner, int block) {
  bias_backward_t(db, dy, N, K, inner, block);
}

// ---------------------------------------------------------------------------------------------
// Linear: the same three GEMMs as kernels/cpu/gemm.cpp.
void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in, int64_t out,
                    int tile) {
  if (b) bias_fill(y, b, N, out, 1);
  gemm(false, true, N, out, in, 1.0f, x, in, w, in, b ? 1.0f : 0.0f, y, out, tile);  // y (+)= x w^T
}

void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t N,
                     int64_t in, int64_t out, int tile) {
  if (dx) gemm(false, false, N, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in, tile);  // dx = dy w
  if (dw) gemm(true, false, out, in, N, 1.0f, dy, out, x, in, 0.0f, dw, in, tile);   // dw = dy^T x
  if (db) bias_backward(db, dy, N, out, 1);
}

}  // namespace nimbus::cuda
