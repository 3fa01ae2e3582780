// gemm.cpp: the reference GEMM, the OpenBLAS fast path, bias helpers and the
// linear layer built from them (see gemm.h).
#include "kernels/cpu/gemm.h"
#include "kernels/common/parallel.h"

#include <cblas.h>


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

template <>
void gemm<float>(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // BLAS would also do this, but some builds dislike K = 0
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              blasint(M), blasint(N), blasint(K), alpha, A, blasint(lda), B, blasint(ldb), beta, C, blasint(ldc));
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
