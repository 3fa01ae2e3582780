// gemm.h: matrix multiply, the workhorse under conv2d and linear.
//
//   C (M x N) = alpha * op(A) op(B) + beta * C      all matrices row-major
//   op(A) is M x K: A is stored M x K (lda >= K), or K x M (lda >= M) when trans_a.
//   op(B) is K x N: B is stored K x N (ldb >= N), or N x K (ldb >= K) when trans_b.
//   beta == 0 means C is write-only (it may hold garbage or NaN), as in BLAS.
//
// gemm_ref is the plain triple loop (the definition, usable in double).
// gemm<float> is the fast path: OpenBLAS cblas_sgemm on tiles of C (gemm_tiles:
// fixed by the shape), each on one thread, the tiles shared out over
// our OpenMP threads (or run in turn inside a parallel region). Its results are
// the same bits for any thread count: the tiles depend on the shape alone.
// gemm<double> runs gemm_ref, so every caller can be tested in double.
//
// The fully connected layer is one GEMM plus a bias, so it lives here too:
//   x (N, in), w (out, in), b (out) -> y = x w^T + b (N, out).
#pragma once
#include <cstdint>

namespace nimbus::cpu {

template <typename T>
void gemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
              const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// The tiles of gemm<float>, chosen by the shape alone (never the thread count: that keeps the bits).
// 256 x 256, so that re-packing an operand per tile costs ~1/256 of the work (a side at least twice
// the product's is first cut to it); then, while the product has fewer than kGemmMinTiles tiles, the
// longer tile side is halved (down to 64) as long as a tile keeps at least kGemmMinTileWork
// multiply-adds (~0.3 ms on one core), so a many-core machine gets tiles for every thread: ResNet-50's
// training step spends 40% of its GEMM work in products of fewer than 16 tiles of 256 x 256 (its
// weight gradients: 512 x 128 outputs summed over 4608 products). On 2 cores this costs nothing
// measurable (docs/perf-notes.md); the gain on more cores is expected, not measured here.
struct GemmTiles {
  int64_t rows, cols;
};
constexpr int64_t kGemmMaxTile = 256, kGemmMinTile = 64, kGemmMinTiles = 32, kGemmMinTileWork = int64_t(1) << 24;
GemmTiles gemm_tiles(int64_t M, int64_t N, int64_t K);

template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
          const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// Bias over a (N, K, inner) tensor: y[n,k,i] = b[k] (fill; a GEMM then adds
// with beta = 1), and its gradient db[k] = sum_{n,i} dy[n,k,i] (written, not
// accumulated). Linear is inner = 1, conv2d is inner = P*Q. bias_fill runs on
// the calling thread (per-image conv paths call it inside their own parallel
// loop); bias_backward splits the channels over threads.
template <typename T> void bias_fill(T* y, const T* b, int64_t N, int64_t K, int64_t inner);
template <typename T> void bias_backward(T* db, const T* dy, int64_t N, int64_t K, int64_t inner);

// Linear: y = x w^T + b (b may be null). Backward writes each of dx, dw, db
// that is non-null: dx = dy w (N, in), dw = dy^T x (out, in), db = sum_n dy.
template <typename T>
void linear_forward(T* y, const T* x, const T* w, const T* b, int64_t N, int64_t in, int64_t out);
template <typename T>
void linear_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, int64_t N, int64_t in, int64_t out);

}  // namespace nimbus::cpu
