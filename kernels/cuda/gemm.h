/* gemm.h: launchers for the CUDA SGEMM and the linear layer built on it (gemm.cu), callable from plain C++.
 *
 * Same contract as kernels/cpu/gemm.h (row-major, op(A) M x K, op(B) K x N, beta == 0 means C is
 * write-only). All pointers are device pointers. `tile` picks the kernel: 8, 16 or 32 is the
 * shared-memory tiled kernel (tile*tile threads per block); 64 is the register-blocked one
 * (64x64 C tile, 256 threads, 4x4 outputs each). Tests run several.
 */
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"

namespace nimbus::cuda {

constexpr int kGemmTile = 16;

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int tile = kGemmTile);

// `batch` independent GEMMs in one launch: matrix i of A, B, C starts at A + i*stride_a, ...
// (stride 0 shares one matrix, e.g. the conv weight). batch <= 65535.
void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
                  int64_t ldc, int64_t stride_c, int64_t batch, int tile = kGemmTile);

// C = alpha sum_{r < reduce} op(A_r) op(B_r) + beta C in one launch: one C, the batch a reduction (a
// convolution's weight gradient summed over its images). reduce == 0 leaves beta C.
void gemm_reduce(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta, float* C,
                 int64_t ldc, int64_t reduce, int tile = kGemmTile);

// A/B switch for the real backend (backend.h set_reference): when set, gemm_batched (and so gemm,
// linear and conv2d) calls `f` with its arguments (tile ignored) instead of our kernels. Null (the
// default) restores our kernels. Process-wide; never set in the emulator.
using GemmBatchedFn = void (*)(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                               const float* A, int64_t lda, int64_t stride_a, const float* B, int64_t ldb,
                               int64_t stride_b, float beta, float* C, int64_t ldc, int64_t stride_c, int64_t batch);
void set_gemm_reference(GemmBatchedFn f);
GemmBatchedFn gemm_reference();

// y[n,k,i] = b[k] over (N, K, inner); db[k] = sum_{n,i} dy[n,k,i] (written; block = threads per channel).
void bias_fill(float* y, const float* b, int64_t N, int64_t K, int64_t inner, int block = 256);
void bias_backward(float* db, const float* dy, int64_t N, int64_t K, int64_t inner, int block = 256);
void bias_backward(bfloat16* db, const bfloat16* dy, int64_t N, int64_t K, int64_t inner, int block = 256);  // summed in float

// x (N,in), w (out,in), b (out) or null -> y = x w^T + b (N,out). Backward writes each non-null
// dx = dy w, dw = dy^T x, db = sum_n dy.
void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in, int64_t out,
                    int tile = kGemmTile);
void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t N,
                     int64_t in, int64_t out, int tile = kGemmTile);

}  // namespace nimbus::cuda
