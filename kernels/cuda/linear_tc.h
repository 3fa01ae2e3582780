/* linear_tc.h: the linear layer's three GEMMs on the tensor cores (linear_tc.cu), in TF32 (float
 * tensors) and bf16 (bfloat16 tensors), fp32 accumulation.
 *
 * Same contract as the float32 launchers in gemm.h: x (N,in), w (out,in), b (out) or null ->
 * y = x w^T + b (N,out); backward writes (=) each non-null dx = dy w, dw = dy^T x, db = sum_n dy.
 * Device pointers. `plan`: the configuration (tc_dispatch.h; default: the dispatch's choice).
 * linear_tc_supported is false when an extent overflows the kernels' int indices (the backend then
 * takes the plain fp32 GEMM).
 */
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"
#include "kernels/cuda/tc_dispatch.h"  // TcPlan

namespace nimbus::cuda {

bool linear_tc_supported(int64_t N, int64_t in, int64_t out);

template <typename E>
void linear_tc_forward(E* y, const E* x, const E* w, const E* b, int64_t N, int64_t in, int64_t out, TcPlan plan = {});
template <typename E>
void linear_tc_backward(E* dx, E* dw, E* db, const E* dy, const E* x, const E* w, int64_t N, int64_t in, int64_t out,
                        TcPlan plan = {});

// C (M x N, row-major, pitch ldc, float32) = op(A) op(B) with op(A)[m][k] = trans_a ? A[k][m] : A[m][k]:
// the layer's kernel as a plain GEMM (bench/cuda/gemm.cu times it as versions 6 and 7).
template <typename E>
void gemm_tc(bool trans_a, bool trans_b, int M, int N, int K, const E* A, int lda, const E* B, int ldb, float* C,
             int ldc, TcPlan plan = {});

extern template void gemm_tc<float>(bool, bool, int, int, int, const float*, int, const float*, int, float*, int,
                                    TcPlan);
extern template void gemm_tc<bfloat16>(bool, bool, int, int, int, const bfloat16*, int, const bfloat16*, int, float*,
                                       int, TcPlan);
extern template void linear_tc_forward<float>(float*, const float*, const float*, const float*, int64_t, int64_t,
                                              int64_t, TcPlan);
extern template void linear_tc_forward<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, const bfloat16*,
                                                 int64_t, int64_t, int64_t, TcPlan);
extern template void linear_tc_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                               int64_t, int64_t, int64_t, TcPlan);
extern template void linear_tc_backward<bfloat16>(bfloat16*, bfloat16*, bfloat16*, const bfloat16*,
                                                  const bfloat16*, const bfloat16*, int64_t, int64_t, int64_t, TcPlan);

}  // namespace nimbus::cuda
