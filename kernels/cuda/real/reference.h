/* reference.h: cuBLAS SGEMM and cuDNN convolution as references for our hand-written kernels
 * (reference.cu). Real CUDA only (nvcc, cuBLAS, cuDNN); never the default path.
 *
 * Two users, one copy of the library calls:
 *   - the backend's A/B switch (NIMBUS_CUDA_REFERENCE=cublas|cudnn, backend.h set_reference);
 *   - the GPU test tests/gpu/test_gpu_reference.cu (our kernels vs these, several shapes);
 *   (bench/cuda has its own fp32/TF32/bf16 references with algorithm search: bench/cuda/references.cuh).
 * Every call goes on the backend's current stream (stream.h), like our launchers, and uses fp32
 * arithmetic without TF32 (cuBLAS default math; cuDNN CUDNN_FMA_MATH), the arithmetic of our kernels.
 */
#pragma once
#include <cublas_v2.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdint>

#include "kernels/common/geometry.h"  // ConvGeom

namespace nimbus::cuda::ref {

// The process-wide handles (created on first use, never destroyed), bound to the current stream.
cublasHandle_t cublas();
cudnnHandle_t cudnn();

// The contract of cuda::gemm_batched (gemm.h): row-major, C_i (M x N) = alpha op(A_i) op(B_i) +
// beta C_i (beta == 0: C write-only), matrix i at A + i*stride_a etc. Runs cublasSgemm[StridedBatched].
void cublas_gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                         int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float beta,
                         float* C, int64_t ldc, int64_t stride_c, int64_t batch);
inline void cublas_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                        int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cublas_gemm_batched(trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

// One convolution geometry as cuDNN sees it (NCHW fp32, cross-correlation, symmetric pad): its
// descriptors and, per direction, the first algorithm of cuDNN's heuristic ranking that runs in
// FMA math (deterministic ones preferred for backward-filter). x (N,C,H,W), w (K,C,R,S), y (N,K,P,Q).
class CudnnConv {
 public:
  explicit CudnnConv(const cpu::ConvGeom& g);
  ~CudnnConv();
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;

  size_t workspace_bytes() const { return ws_bytes_; }  // enough for all three directions
  // y = conv(x, w) + beta y; dx = conv^T(dy, w); dw = sum over images of dy (x) x. ws: workspace_bytes().
  void forward(float* y, const float* x, const float* w, void* ws, float beta = 0.0f) const;
  void backward_data(float* dx, const float* dy, const float* w, void* ws) const;
  void backward_filter(float* dw, const float* dy, const float* x, void* ws) const;

 private:
  cudnnTensorDescriptor_t x_ = nullptr, y_ = nullptr;
  cudnnFilterDescriptor_t w_ = nullptr;
  cudnnConvolutionDescriptor_t conv_ = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_{};
  cudnnConvolutionBwdDataAlgo_t bwd_data_{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_{};
  size_t ws_bytes_ = 0;
};

// The kernel-list shape of conv2d (engine/kernel_list.def, without the fused ReLU) on cuDNN: descriptors cached per geometry,
// `ws` has conv2d_workspace(g) floats; bias through our bias_fill / bias_backward (gemm.h).
int64_t cudnn_conv2d_workspace(const cpu::ConvGeom& g);
void cudnn_conv2d_forward(float* y, const float* x, const float* w, const float* b, const cpu::ConvGeom& g,
                          float* ws);
void cudnn_conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                           const cpu::ConvGeom& g, float* ws);

}  // namespace nimbus::cuda::ref
