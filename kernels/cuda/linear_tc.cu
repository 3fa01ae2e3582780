/* linear_tc.cu: the linear layer on the tensor cores: its three GEMMs as problems for
 * mma::igemm_kernel (mma_core.cuh) over row-major matrices, each operand read with or without a
 * transpose, the bias added in the forward's epilogue.
 *   forward  y (N, out)  = x (N, in) w^T        M = N    N = out  Kred = in   (+ b[n] per column)
 *   dx       dx (N, in)  = dy (N, out) w        M = N    N = in   Kred = out
 *   dw       dw (out, in) = dy^T x              M = out  N = in   Kred = N
 *   db       gemm.cu's bias_backward
 * The transposed operands (w in the forward, dy in dw) are gathered across rows: not coalesced. At
 * the models' sizes (ResNet-50's 2048 -> 10 head) the layer is a rounding error of a step.
 * CPU twin: kernels/cpu/gemm.h.
 */
#include "kernels/cuda/linear_tc.h"

#include <algorithm>
#include <climits>
#include <type_traits>

#include "kernels/common/error.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/mma_core.cuh"

namespace nimbus::cuda {

namespace {

// C (M x N, row-major, pitch ldc, element type O) = op(A) op(B) (+ bias[n]);
// op(A)[m][k] = trans_a ? A[k][m] : A[m][k].
template <typename E, typename O = E>
struct MatMul {
  const E *A, *B, *bias;
  O* C;
  int lda, ldb, ldc;
  bool trans_a, trans_b;
  __device__ const E* a(int m, int k) const { return trans_a ? A + int64_t(k) * lda + m : A + int64_t(m) * lda + k; }
  using BCol = int;  // the column index itself
  __device__ BCol b_col(int n) const { return n; }
  __device__ const E* b(int k, int n) const { return trans_b ? B + int64_t(n) * ldb + k : B + int64_t(k) * ldb + n; }
  __device__ void store(int m, int n, float v, int) const {
    if (bias) v += float(bias[n]);
    C[int64_t(m) * ldc + n] = O(v);
  }
};

// The plan's configuration, or the dispatch's for this GEMM.
template <typename E>
int config_of(const TcPlan& p, int64_t M, int64_t N, int64_t K) {
  return p.config >= 0 ? p.config : tc_pick_config(TcKind::Gemm, std::is_same_v<E, bfloat16>, M, N, K, 1, device_smem_opt_in());
}

}  // namespace

bool linear_tc_supported(int64_t N, int64_t in, int64_t out) {
  const int64_t lim = INT_MAX - 256;
  return N > 0 && in > 0 && out > 0 && N * in < lim && N * out < lim && in * out < lim &&
         (std::max(N, out) + 63) / 64 < 65535;  // grid rows: 64-row tiles in configs 3-5
}

template <typename E>
void linear_tc_forward(E* y, const E* x, const E* w, const E* b, int64_t N, int64_t in, int64_t out, TcPlan plan) {
  NIMBUS_CHECK(linear_tc_supported(N, in, out), "cuda::linear_tc_forward: ", N, " x ", in, " -> ", out,
               " is too large for the tensor-core kernels");
  const int n = int(N), i = int(in), o = int(out);
  const MatMul<E> pb{x, w, b, y, i, i, o, false, true};
  mma::launch_igemm<E>(pb, n, o, i, 1, config_of<E>(plan, n, o, i), x, "cuda::linear_tc_forward");
}

template <typename E>
void linear_tc_backward(E* dx, E* dw, E* db, const E* dy, const E* x, const E* w, int64_t N, int64_t in, int64_t out,
                        TcPlan plan) {
  NIMBUS_CHECK(linear_tc_supported(N, in, out), "cuda::linear_tc_backward: ", N, " x ", in, " -> ", out,
               " is too large for the tensor-core kernels");
  const int n = int(N), i = int(in), o = int(out);
  if (dx) {
    NIMBUS_CHECK(w, "cuda::linear_tc_backward: dx needs w");
    const MatMul<E> pb{dy, w, nullptr, dx, o, i, i, false, false};
    mma::launch_igemm<E>(pb, n, i, o, 1, config_of<E>(plan, n, i, o), dy, "cuda::linear_tc_backward (dx)");
  }
  if (dw) {
    NIMBUS_CHECK(x, "cuda::linear_tc_backward: dw needs x");
    const MatMul<E> pb{dy, x, nullptr, dw, o, i, i, true, false};
    mma::launch_igemm<E>(pb, o, i, n, 1, config_of<E>(plan, o, i, n), dy, "cuda::linear_tc_backward (dw)");
  }
  if (db) bias_backward(db, dy, N, out, 1);
}

template <typename E>
void gemm_tc(bool trans_a, bool trans_b, int M, int N, int K, const E* A, int lda, const E* B, int ldb, float* C,
             int ldc, TcPlan plan) {
  NIMBUS_CHECK(M >= 0 && N >= 0 && K >= 0 && (int64_t(std::max(M, N)) + 63) / 64 < 65535, "cuda::gemm_tc: ", M,
               " x ", N, " x ", K, " is too large for the tensor-core kernels");
  const MatMul<E, float> pb{A, B, nullptr, C, lda, ldb, ldc, trans_a, trans_b};
  mma::launch_igemm<E>(pb, M, N, K, 1, config_of<E>(plan, M, N, K), A, "cuda::gemm_tc");
}

template void gemm_tc<float>(bool, bool, int, int, int, const float*, int, const float*, int, float*, int, TcPlan);
template void gemm_tc<bfloat16>(bool, bool, int, int, int, const bfloat16*, int, const bfloat16*, int, float*, int,
                                TcPlan);
template void linear_tc_forward<float>(float*, const float*, const float*, const float*, int64_t, int64_t, int64_t,
                                       TcPlan);
template void linear_tc_forward<bfloat16>(bfloat16*, const bfloat16*, const bfloat16*, const bfloat16*, int64_t,
                                          int64_t, int64_t, TcPlan);
template void linear_tc_backward<float>(float*, float*, float*, const float*, const float*, const float*, int64_t,
                                        int64_t, int64_t, TcPlan);
template void linear_tc_backward<bfloat16>(bfloat16*, bfloat16*, bfloat16*, const bfloat16*, const bfloat16*,
                                           const bfloat16*, int64_t, int64_t, int64_t, TcPlan);

}  // namespace nimbus::cuda
