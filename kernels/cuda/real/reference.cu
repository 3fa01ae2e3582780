/* reference.cu: cuBLAS / cuDNN calls behind reference.h (host code, nvcc, real CUDA only).
 *
 * Row-major GEMM on column-major cuBLAS: a row-major (M x N) C is a column-major (N x M) C^T, and
 * C^T = op(B)^T op(A)^T, so cuBLAS gets (B, A) swapped with m = N, n = M and the same leading
 * dimensions; a transpose flag stays attached to its own matrix.
 */
#include "kernels/cuda/real/reference.h"

#include <algorithm>
#include <climits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "kernels/common/error.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"

namespace nimbus::cuda::ref {

namespace {

void check_cublas(cublasStatus_t s, const char* what) {
  NIMBUS_CHECK(s == CUBLAS_STATUS_SUCCESS, what, ": ", cublasGetStatusName(s), " (", cublasGetStatusString(s), ")");
}
void check_cudnn(cudnnStatus_t s, const char* what) {
  NIMBUS_CHECK(s == CUDNN_STATUS_SUCCESS, what, ": ", cudnnGetErrorString(s));
}
int as_int(int64_t v, const char* what) {
  NIMBUS_CHECK(v >= 0 && v <= INT_MAX, what, " = ", v, " does not fit the int the library takes");
  return int(v);
}

}  // namespace

cublasHandle_t cublas() {
  static cublasHandle_t h = [] {
    cublasHandle_t c = nullptr;
    check_cublas(cublasCreate(&c), "cublasCreate");
    check_cublas(cublasSetMathMode(c, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");  // fp32, no TF32
    return c;
  }();
  check_cublas(cublasSetStream(h, launch_stream()), "cublasSetStream");
  return h;
}

cudnnHandle_t cudnn() {
  static cudnnHandle_t h = [] {
    cudnnHandle_t c = nullptr;
    check_cudnn(cudnnCreate(&c), "cudnnCreate");
    return c;
  }();
  check_cudnn(cudnnSetStream(h, launch_stream()), "cudnnSetStream");
  return h;
}

void cublas_gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                         int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta,
                         float* C, int64_t ldc, int64_t stride_c, int64_t batch) {
  if (M <= 0 || N <= 0 || batch <= 0) return;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = as_int(N, "cublas gemm N"), n = as_int(M, "cublas gemm M"), k = as_int(K, "cublas gemm K");
  const int ld_b = as_int(ldb, "cublas gemm ldb"), ld_a = as_int(lda, "cublas gemm lda"),
            ld_c = as_int(ldc, "cublas gemm ldc");
  if (batch == 1) {
    check_cublas(cublasSgemm(cublas(), op_b, op_a, m, n, k, &alpha, B, ld_b, A, ld_a, &beta, C, ld_c), "cublasSgemm");
  } else {
    check_cublas(cublasSgemmStridedBatched(cublas(), op_b, op_a, m, n, k, &alpha, B, ld_b, stride_b, A, ld_a,
                                           stride_a, &beta, C, ld_c, stride_c, as_int(batch, "cublas gemm batch")),
                 "cublasSgemmStridedBatched");
  }
}

// ---- cuDNN convolution ---------------------------------------------------------------------------
namespace {

// The first entry of a heuristic ranking that ran (status), uses no tensor cores (FMA math) and,
// when asked, is deterministic (falls back to a non-deterministic one when none is).
template <typename Perf>
const Perf& pick(const Perf* perf, int found, bool want_deterministic, const char* what) {
  const Perf* fallback = nullptr;
  for (int i = 0; i < found; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS || p.mathType == CUDNN_TENSOR_OP_MATH ||
        p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
      continue;
    if (!want_deterministic || p.determinism == CUDNN_DETERMINISTIC) return p;
    if (!fallback) fallback = &p;
  }
  NIMBUS_CHECK(fallback, what, ": cuDNN's heuristic offers no fp32 (FMA math) algorithm for this convolution");
  return *fallback;
}

// pick()'s algorithm for one direction of the convolution, from cuDNN's heuristic ranking `rank`;
// ws_bytes grows to the workspace it needs (`workspace`). The three directions' cuDNN calls take
// the same four descriptors in the same order (a, b, conv, c) in both functions.
template <typename Perf, typename A, typename B, typename C>
decltype(Perf::algo) choose_algo(cudnnHandle_t h, A a, B b, cudnnConvolutionDescriptor_t conv, C c,
                                 cudnnStatus_t (*rank)(cudnnHandle_t, A, B, cudnnConvolutionDescriptor_t, C, int,
                                                       int*, Perf*),
                                 cudnnStatus_t (*workspace)(cudnnHandle_t, A, B, cudnnConvolutionDescriptor_t, C,
                                                            decltype(Perf::algo), size_t*),
                                 bool want_deterministic, const char* what, size_t& ws_bytes) {
  constexpr int kMax = 16;
  Perf perf[kMax];
  int found = 0;
  check_cudnn(rank(h, a, b, conv, c, kMax, &found, perf), (std::string(what) + ": algorithm ranking").c_str());
  const decltype(Perf::algo) algo = pick(perf, found, want_deterministic, what).algo;
  size_t bytes = 0;
  check_cudnn(workspace(h, a, b, conv, c, algo, &bytes), (std::string(what) + ": workspace size").c_str());
  ws_bytes = std::max(ws_bytes, bytes);
  return algo;
}

}  // namespace

CudnnConv::CudnnConv(const cpu::ConvGeom& g) {
  const int N = as_int(g.N, "cudnn N"), C = as_int(g.C, "cudnn C"), H = as_int(g.H, "cudnn H"),
            W = as_int(g.W, "cudnn W"), K = as_int(g.K, "cudnn K"), R = as_int(g.R, "cudnn R"),
            S = as_int(g.S, "cudnn S"), P = as_int(g.P(), "cudnn P"), Q = as_int(g.Q(), "cudnn Q");
  check_cudnn(cudnnCreateTensorDescriptor(&x_), "cudnnCreateTensorDescriptor");
  check_cudnn(cudnnCreateTensorDescriptor(&y_), "cudnnCreateTensorDescriptor");
  check_cudnn(cudnnCreateFilterDescriptor(&w_), "cudnnCreateFilterDescriptor");
  check_cudnn(cudnnCreateConvolutionDescriptor(&conv_), "cudnnCreateConvolutionDescriptor");
  check_cudnn(cudnnSetTensor4dDescriptor(x_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, C, H, W), "cudnn x descriptor");
  check_cudnn(cudnnSetTensor4dDescriptor(y_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, K, P, Q), "cudnn y descriptor");
  check_cudnn(cudnnSetFilter4dDescriptor(w_, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, K, C, R, S), "cudnn w descriptor");
  const int pad = as_int(g.pad, "cudnn pad"), stride = as_int(g.stride, "cudnn stride");
  check_cudnn(cudnnSetConvolution2dDescriptor(conv_, pad, pad, stride, stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                              CUDNN_DATA_FLOAT),
              "cudnnSetConvolution2dDescriptor");
  // CUDNN_DEFAULT_MATH would allow TF32 tensor cores on A100/H100 (10-bit mantissa); FMA is plain fp32.
  check_cudnn(cudnnSetConvolutionMathType(conv_, CUDNN_FMA_MATH), "cudnnSetConvolutionMathType");

  cudnnHandle_t h = cudnn();  // ws_bytes_ starts at 0
  fwd_ = choose_algo(h, x_, w_, conv_, y_, cudnnGetConvolutionForwardAlgorithm_v7,
                     cudnnGetConvolutionForwardWorkspaceSize, false, "cudnn forward", ws_bytes_);
  bwd_data_ = choose_algo(h, w_, y_, conv_, x_, cudnnGetConvolutionBackwardDataAlgorithm_v7,
                          cudnnGetConvolutionBackwardDataWorkspaceSize, true, "cudnn backward-data", ws_bytes_);
  bwd_filter_ = choose_algo(h, x_, y_, conv_, w_, cudnnGetConvolutionBackwardFilterAlgorithm_v7,
                            cudnnGetConvolutionBackwardFilterWorkspaceSize, true, "cudnn backward-filter", ws_bytes_);
}

CudnnConv::~CudnnConv() {
  cudnnDestroyConvolutionDescriptor(conv_);
  cudnnDestroyFilterDescriptor(w_);
  cudnnDestroyTensorDescriptor(y_);
  cudnnDestroyTensorDescriptor(x_);
}

void CudnnConv::forward(float* y, const float* x, const float* w, void* ws, float beta) const {
  const float one = 1.0f;
  check_cudnn(cudnnConvolutionForward(cudnn(), &one, x_, x, w_, w, conv_, fwd_, ws, ws_bytes_, &beta, y_, y),
              "cudnnConvolutionForward");
}

void CudnnConv::backward_data(float* dx, const float* dy, const float* w, void* ws) const {
  const float one = 1.0f, zero = 0.0f;
  check_cudnn(cudnnConvolutionBackwardData(cudnn(), &one, w_, w, y_, dy, conv_, bwd_data_, ws, ws_bytes_, &zero, x_,
                                           dx),
              "cudnnConvolutionBackwardData");
}

void CudnnConv::backward_filter(float* dw, const float* dy, const float* x, void* ws) const {
  const float one = 1.0f, zero = 0.0f;
  check_cudnn(cudnnConvolutionBackwardFilter(cudnn(), &one, x_, x, y_, dy, conv_, bwd_filter_, ws, ws_bytes_, &zero,
                                             w_, dw),
              "cudnnConvolutionBackwardFilter");
}

// ---- the op-table entries: one CudnnConv per geometry, kept for the life of the process ----------
namespace {

const CudnnConv& plan(const cpu::ConvGeom& g) {
  static std::mutex mu;
  static std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>,
                  std::unique_ptr<CudnnConv>>
      plans;
  std::lock_guard<std::mutex> lock(mu);
  auto& p = plans[{g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.stride, g.pad}];
  if (!p) p = std::make_unique<CudnnConv>(g);
  return *p;
}

}  // namespace

int64_t cudnn_conv2d_workspace(const cpu::ConvGeom& g) {
  if (g.N == 0) return 0;
  return int64_t((plan(g).workspace_bytes() + sizeof(float) - 1) / sizeof(float));
}

void cudnn_conv2d_forward(float* y, const float* x, const float* w, const float* b, const cpu::ConvGeom& g,
                          float* ws) {
  if (g.N == 0) return;
  if (b) bias_fill(y, b, g.N, g.K, g.P() * g.Q());
  plan(g).forward(y, x, w, ws, b ? 1.0f : 0.0f);  // y = conv + bias
}

void cudnn_conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                           const cpu::ConvGeom& g, float* ws) {
  if (db) bias_backward(db, dy, g.N, g.K, g.P() * g.Q());
  if (g.N == 0) {  // cuDNN refuses empty tensors; an empty batch has a zero weight gradient
    if (dw) fill(dw, 0.0f, g.K * g.C * g.R * g.S);
    return;
  }
  if (dw) plan(g).backward_filter(dw, dy, x, ws);
  if (dx) plan(g).backward_data(dx, dy, w, ws);
}

}  // namespace nimbus::cuda::ref
