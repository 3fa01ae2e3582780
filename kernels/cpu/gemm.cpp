// gemm.cpp: the reference GEMM, the OpenBLAS fast path, bias helpers and the
// linear layer built from them (see gemm.h).
#include "kernels/cpu/gemm.h"
#include "kernels/common/parallel.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>


namespace nimbus::cpu {

template <typename T>
void gemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
              const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      T acc = 0;
      for (int64_t p = 0; p < K; ++p) {
        T a = trans_a ? A[p * lda + i] : A[i * lda + p];
        T b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
        acc += a * b;
      }
      T& c = C[i * ldc + j];
      c = beta == T(0) ? alpha * acc : alpha * acc + beta * c;  // beta 0: never read C
    }
}

namespace {

// OpenBLAS on one thread, always: it splits a threaded call by the thread count, and the split changes
// the rounding (a 64 x 1024 x 64 product differed in 18% of its outputs between 1 and 2 threads), so a
// training run's weights depended on --threads. Two builds, two switches:
// - the pthread build threads a call unless its own count (blas_cpu_number) is 1:
//   openblas_set_num_threads(1), once, when the program starts (single-threaded: the OpenMP build's
//   version of that call also resizes its per-thread buffers and sets OpenMP's count, which is put
//   back; the first gemm may run inside a parallel region, where neither is safe);
// - the OpenMP build ignores its own count and threads any call made outside an active parallel region
//   over omp_get_max_threads(): SerialBlas sets that to 1 around each call, for the calling task only.
bool make_openblas_serial() {
  const int ours = omp_get_max_threads();
  openblas_set_num_threads(1);
  omp_set_num_threads(ours);
  return true;
}
[[maybe_unused]] const bool openblas_serial = make_openblas_serial();  // runs before main

class SerialBlas {
 public:
  SerialBlas() : saved_(omp_in_parallel() ? 1 : omp_get_max_threads()) {
    if (saved_ != 1) omp_set_num_threads(1);
  }
  ~SerialBlas() {
    if (saved_ != 1) omp_set_num_threads(saved_);
  }
  SerialBlas(const SerialBlas&) = delete;
  SerialBlas& operator=(const SerialBlas&) = delete;

 private:
  int saved_;
};

}  // namespace

GemmTiles gemm_tiles(int64_t M, int64_t N, int64_t K) {
  GemmTiles t{kGemmMaxTile, kGemmMaxTile};
  // A side longer than twice the product's is cut down first: the same cuts, an honest work estimate.
  while (t.rows > kGemmMinTile && t.rows / 2 >= M) t.rows /= 2;
  while (t.cols > kGemmMinTile && t.cols / 2 >= N) t.cols /= 2;
  const auto count = [](int64_t n, int64_t tile) { return (n + tile - 1) / tile; };
  // From here a side is less than twice its extent, so halving it always adds tiles.
  const auto can_halve = [&](int64_t tile, int64_t other) {
    return tile > kGemmMinTile && (tile / 2) * other * K >= kGemmMinTileWork;
  };
  while (count(M, t.rows) * count(N, t.cols) < kGemmMinTiles) {
    const bool rows = can_halve(t.rows, std::min(t.cols, N)), cols = can_halve(t.cols, std::min(t.rows, M));
    if (rows && (t.rows >= t.cols || !cols))  // the longer side first, rows on a tie
      t.rows /= 2;
    else if (cols)
      t.cols /= 2;
    else
      break;
  }
  return t;
}

template <>
void gemm<float>(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // BLAS would also do this, but some builds dislike K = 0
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  // C in tiles cut by the shape alone (gemm_tiles), each a serial sgemm: every output sums its K
  // products in an order that the shape decides, never the thread count. Our threads share out the
  // tiles; inside a parallel region (the per-image convolution paths) the calling thread runs them in
  // turn.
  const GemmTiles size = gemm_tiles(M, N, K);
  const int64_t mt = (M + size.rows - 1) / size.rows, nt = (N + size.cols - 1) / size.cols;
  const auto tile = [&](int64_t t) {
    const int64_t i0 = (t / nt) * size.rows, j0 = (t % nt) * size.cols;
    const int64_t m = std::min(size.rows, M - i0), n = std::min(size.cols, N - j0);
    const float* a = trans_a ? A + i0 : A + i0 * lda;
    const float* b = trans_b ? B + j0 * ldb : B + j0;
    const SerialBlas serial;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                blasint(m), blasint(n), blasint(K), alpha, a, blasint(lda), b, blasint(ldb), beta, C + i0 * ldc + j0,
                blasint(ldc));
  };
  const int64_t tiles = mt * nt;
#pragma omp parallel for schedule(dynamic) if (tiles > 1 && !omp_in_parallel() && M * N * K > kParallelGrain * 64)
  for (int64_t t = 0; t < tiles; ++t) tile(t);
}

template <>
void gemm<double>(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                  int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  gemm_ref(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <typename T>
void bias_fill(T* y, const T* b, int64_t N, int64_t K, int64_t inner) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      T* row = y + (n * K + k) * inner;
      for (int64_t i = 0; i < inner; ++i) row[i] = b[k];
    }
}

template <typename T>
void bias_backward(T* db, const T* dy, int64_t N, int64_t K, int64_t inner) {
#pragma omp parallel for if (N * K * inner > kParallelGrain)
  for (int64_t k = 0; k < K; ++k) {
    T acc = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T* row = dy + (n * K + k) * inner;
#pragma omp simd reduction(+ : acc)
      for (int64_t i = 0; i < inner; ++i) acc += row[i];
    }
    db[k] = acc;
  }
}

template <typename T>
void linear_forward(T* y, const T* x, const T* w, const T* b, int64_t N, int64_t in, int64_t out) {
  if (b) bias_fill(y, b, N, out, int64_t(1));
  gemm<T>(false, true, N, out, in, T(1), x, in, w, in, b ? T(1) : T(0), y, out);  // y (N,out) = x w^T
}

template <typename T>
void linear_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, int64_t N, int64_t in, int64_t out) {
  if (dx) gemm<T>(false, false, N, in, out, T(1), dy, out, w, in, T(0), dx, in);  // (N,out)(out,in)
  if (dw) gemm<T>(true, false, out, in, N, T(1), dy, out, x, in, T(0), dw, in);   // (out,N)(N,in)
  if (db) bias_backward(db, dy, N, out, int64_t(1));
}

#define NIMBUS_INSTANTIATE(T)                                                                                   \
  template void gemm_ref<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T, \
                            T*, int64_t);                                                                       \
  template void bias_fill<T>(T*, const T*, int64_t, int64_t, int64_t);                                          \
  template void bias_backward<T>(T*, const T*, int64_t, int64_t, int64_t);                                      \
  template void linear_forward<T>(T*, const T*, const T*, const T*, int64_t, int64_t, int64_t);                 \
  template void linear_backward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, int64_t);
NIMBUS_INSTANTIATE(float)
NIMBUS_INSTANTIATE(double)
#undef NIMBUS_INSTANTIATE

}  // namespace nimbus::cpu
