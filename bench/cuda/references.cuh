/* references.cuh: the NVIDIA-library references of the `--case` benchmarks (gemm.cu, conv2d.cu),
 * in three precisions each. Bench only (nvcc, cuBLAS, cuDNN 9's legacy convolution API); the
 * backend's own A/B references (kernels/cuda/real/reference.h) stay as they are.
 *
 *   precision  cuBLAS GEMM                               cuDNN convolution
 *   fp32       cublasGemmEx, CUBLAS_COMPUTE_32F,         NCHW float, CUDNN_FMA_MATH (no tensor cores)
 *              handle in CUBLAS_DEFAULT_MATH (no TF32)
 *   tf32       CUBLAS_COMPUTE_32F_FAST_TF32              NCHW float, CUDNN_TENSOR_OP_MATH
 *   bf16       A, B CUDA_R_16BF, C fp32, COMPUTE_32F     NHWC bf16 tensors (filter K,R,S,C), float
 *                                                        compute, CUDNN_TENSOR_OP_MATH
 *
 * cuDNN's algorithm per (geometry, direction, precision): cudnnFind*AlgorithmEx asked for every
 * algorithm with a 1 GiB workspace; we take the fastest that succeeded (fp32: among FMA-math ones)
 * and set the descriptor's math type to the one it reported. Everything runs on the legacy default
 * stream (nullptr), like the bench's own launches and events.
 * bf16 inputs are the fp32 inputs rounded to nearest (to_bf16), so every precision sees the same data.
 */
#pragma once
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cudnn.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "bench/cuda/bench_util.cuh"
#include "kernels/cpu/conv2d.h"

namespace bench {

enum class Precision { fp32, tf32, bf16 };
inline const char* name(Precision p) { return p == Precision::fp32 ? "fp32" : p == Precision::tf32 ? "tf32" : "bf16"; }

inline void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(std::string(what) + ": " + cublasGetStatusName(s));
}
inline void check_cudnn(cudnnStatus_t s, const char* what) {
  if (s != CUDNN_STATUS_SUCCESS) throw std::runtime_error(std::string(what) + ": " + cudnnGetErrorString(s));
}

// ---- fp32 -> bf16, optionally NCHW -> NHWC ---------------------------------------------------------
// in: a 4-D fp32 tensor (d0, d1, d2, d3) in NCHW order. out: bf16, same order (nhwc false) or
// (d0, d2, d3, d1) (nhwc true; for a filter (K, C, R, S) that is cuDNN's NHWC filter layout K,R,S,C).
struct Dims4 {
  int64_t d0, d1, d2, d3;
  __host__ __device__ int64_t size() const { return d0 * d1 * d2 * d3; }
};
__host__ __device__ inline int64_t nhwc_index(int64_t i, Dims4 d) {  // NCHW flat index -> NHWC flat index
  const int64_t i3 = i % d.d3, i2 = (i / d.d3) % d.d2, i1 = (i / (d.d3 * d.d2)) % d.d1, i0 = i / (d.d3 * d.d2 * d.d1);
  return ((i0 * d.d2 + i2) * d.d3 + i3) * d.d1 + i1;
}
__global__ void to_bf16_kernel(__nv_bfloat16* out, const float* in, Dims4 d, bool nhwc) {
  const int64_t n = d.size();
  for (int64_t i = grid_first(); i < n; i += grid_step()) out[nhwc ? nhwc_index(i, d) : i] = __float2bfloat16_rn(in[i]);
}
inline void to_bf16(void* out, const float* in, Dims4 d, bool nhwc) {
  launch(to_bf16_kernel, nimbus::cuda::grid_for(d.size(), 256, 65535), 256, 0, nullptr,
         static_cast<__nv_bfloat16*>(out), in, d, nhwc);
  CK(cudaGetLastError());
}

// ---- cuBLAS ------------------------------------------------------------------------------------
inline cublasHandle_t cublas() {
  static cublasHandle_t h = [] {
    cublasHandle_t c = nullptr;
    check_cublas(cublasCreate(&c), "cublasCreate");
    check_cublas(cublasSetMathMode(c, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");  // TF32 only when asked
    return c;
  }();
  return h;
}

// Row-major C (M x N) = A (M x K) B (K x N): column-major cuBLAS computes C^T = B^T A^T, i.e. (B, A)
// swapped with m = N, n = M. A and B are fp32 (fp32, tf32) or bf16 (bf16); C is always fp32.
inline void cublas_gemm(Precision p, int M, int N, int K, const void* A, const void* B, float* C) {
  const float one = 1.0f, zero = 0.0f;
  const cudaDataType_t t = p == Precision::bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t compute = p == Precision::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  check_cublas(cublasGemmEx(cublas(), CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, &one, B, t, N, A, t, K, &zero, C, CUDA_R_32F,
                            N, compute, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
}

// ---- cuDNN ---------------------------------------------------------------------------------------
enum class Dir { fwd, dgrad, wgrad };
constexpr size_t kCudnnWorkspaceBytes = size_t(1) << 30;  // 1 GiB

inline cudnnHandle_t cudnn() {
  static cudnnHandle_t h = [] {
    cudnnHandle_t c = nullptr;
    check_cudnn(cudnnCreate(&c), "cudnnCreate");
    return c;
  }();
  return h;
}
inline void* cudnn_workspace() {  // allocated once, kept for the process
  static void* ws = [] {
    void* p = nullptr;
    CK(cudaMalloc(&p, kCudnnWorkspaceBytes));
    return p;
  }();
  return ws;
}

// One convolution in one precision, one direction: descriptors, the chosen algorithm, and run().
// Operands by direction (device pointers, in this precision's type and layout):
//   fwd   (a = x, b = w)  -> out = y      dgrad (a = dy, b = w) -> out = dx      wgrad (a = dy, b = x) -> out = dw
class CudnnConv {
 public:
  CudnnConv(const nimbus::cpu::ConvGeom& g, Precision p, Dir d) : p_(p), d_(d) {
    const cudnnDataType_t t = p == Precision::bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    const cudnnTensorFormat_t f = p == Precision::bf16 ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
    check_cudnn(cudnnCreateTensorDescriptor(&x_), "cudnnCreateTensorDescriptor");
    check_cudnn(cudnnCreateTensorDescriptor(&y_), "cudnnCreateTensorDescriptor");
    check_cudnn(cudnnCreateFilterDescriptor(&w_), "cudnnCreateFilterDescriptor");
    check_cudnn(cudnnCreateConvolutionDescriptor(&conv_), "cudnnCreateConvolutionDescriptor");
    check_cudnn(cudnnSetTensor4dDescriptor(x_, f, t, int(g.N), int(g.C), int(g.H), int(g.W)), "cudnn x descriptor");
    check_cudnn(cudnnSetTensor4dDescriptor(y_, f, t, int(g.N), int(g.K), int(g.P()), int(g.Q())), "cudnn y descriptor");
    check_cudnn(cudnnSetFilter4dDescriptor(w_, t, f, int(g.K), int(g.C), int(g.R), int(g.S)), "cudnn w descriptor");
    check_cudnn(cudnnSetConvolution2dDescriptor(conv_, int(g.pad), int(g.pad), int(g.stride), int(g.stride), 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),  // float compute
                "cudnnSetConvolution2dDescriptor");
    check_cudnn(cudnnSetConvolutionMathType(conv_, p == Precision::fp32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH),
                "cudnnSetConvolutionMathType");
  }
  ~CudnnConv() {
    cudnnDestroyConvolutionDescriptor(conv_);
    cudnnDestroyFilterDescriptor(w_);
    cudnnDestroyTensorDescriptor(y_);
    cudnnDestroyTensorDescriptor(x_);
  }
  CudnnConv(const CudnnConv&) = delete;
  CudnnConv& operator=(const CudnnConv&) = delete;

  // Try every algorithm (cudnnFind*AlgorithmEx, 1 GiB workspace; it overwrites `out`), keep the
  // fastest that succeeded. Returns its algorithm id.
  int find(const void* a, const void* b, void* out) {
    constexpr int kMax = 16;
    int found = 0;
    void* ws = cudnn_workspace();
    if (d_ == Dir::fwd) {
      cudnnConvolutionFwdAlgoPerf_t perf[kMax];
      check_cudnn(cudnnFindConvolutionForwardAlgorithmEx(cudnn(), x_, a, w_, b, conv_, y_, out, kMax, &found, perf, ws,
                                                         kCudnnWorkspaceBytes),
                  "cudnnFindConvolutionForwardAlgorithmEx");
      const auto& best = pick(perf, found);
      algo_ = int(best.algo), ws_bytes_ = best.memory, math_ = best.mathType;
    } else if (d_ == Dir::dgrad) {
      cudnnConvolutionBwdDataAlgoPerf_t perf[kMax];
      check_cudnn(cudnnFindConvolutionBackwardDataAlgorithmEx(cudnn(), w_, b, y_, a, conv_, x_, out, kMax, &found, perf,
                                                              ws, kCudnnWorkspaceBytes),
                  "cudnnFindConvolutionBackwardDataAlgorithmEx");
      const auto& best = pick(perf, found);
      algo_ = int(best.algo), ws_bytes_ = best.memory, math_ = best.mathType;
    } else {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[kMax];
      check_cudnn(cudnnFindConvolutionBackwardFilterAlgorithmEx(cudnn(), x_, b, y_, a, conv_, w_, out, kMax, &found,
                                                                perf, ws, kCudnnWorkspaceBytes),
                  "cudnnFindConvolutionBackwardFilterAlgorithmEx");
      const auto& best = pick(perf, found);
      algo_ = int(best.algo), ws_bytes_ = best.memory, math_ = best.mathType;
    }
    // Run in the math type the measurement used (cuDNN's advice for the legacy find API).
    check_cudnn(cudnnSetConvolutionMathType(conv_, math_), "cudnnSetConvolutionMathType");
    return algo_;
  }

  void run(const void* a, const void* b, void* out) const {
    const float one = 1.0f, zero = 0.0f;
    void* ws = cudnn_workspace();
    if (d_ == Dir::fwd) {
      check_cudnn(cudnnConvolutionForward(cudnn(), &one, x_, a, w_, b, conv_, cudnnConvolutionFwdAlgo_t(algo_), ws,
                                          ws_bytes_, &zero, y_, out),
                  "cudnnConvolutionForward");
    } else if (d_ == Dir::dgrad) {
      check_cudnn(cudnnConvolutionBackwardData(cudnn(), &one, w_, b, y_, a, conv_, cudnnConvolutionBwdDataAlgo_t(algo_),
                                               ws, ws_bytes_, &zero, x_, out),
                  "cudnnConvolutionBackwardData");
    } else {
      check_cudnn(cudnnConvolutionBackwardFilter(cudnn(), &one, x_, b, y_, a, conv_,
                                                 cudnnConvolutionBwdFilterAlgo_t(algo_), ws, ws_bytes_, &zero, w_, out),
                  "cudnnConvolutionBackwardFilter");
    }
  }

 private:
  // perf[] comes sorted by time: the first that succeeded is the fastest. fp32 takes the first in
  // CUDNN_FMA_MATH, else the first in CUDNN_DEFAULT_MATH (which may use TF32 on sm_80+: the 1e-4
  // validation bound then fails it, visibly), never a tensor-op one.
  template <typename Perf>
  const Perf& pick(const Perf* perf, int found) const {
    const cudnnMathType_t allowed[2] = {CUDNN_FMA_MATH, CUDNN_DEFAULT_MATH};
    for (int pass = 0; pass < 2; ++pass)
      for (int i = 0; i < found; ++i)
        if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= kCudnnWorkspaceBytes &&
            (p_ != Precision::fp32 || perf[i].mathType == allowed[pass]))
          return perf[i];
    throw std::runtime_error(std::string("cuDNN found no working ") + name(p_) + " algorithm (" +
                             std::to_string(found) + " tried)");
  }

  Precision p_;
  Dir d_;
  cudnnTensorDescriptor_t x_ = nullptr, y_ = nullptr;
  cudnnFilterDescriptor_t w_ = nullptr;
  cudnnConvolutionDescriptor_t conv_ = nullptr;
  int algo_ = -1;
  size_t ws_bytes_ = 0;
  cudnnMathType_t math_ = CUDNN_FMA_MATH;
};

}  // namespace bench
