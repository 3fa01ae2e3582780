/* backend.h: registers the CUDA device with the engine (backends/cuda/backend.cu).
 *
 * register_cuda_backend() checks cudaGetDeviceCount; if a device is usable it creates the backend's
 * compute stream (stream.h), installs the CUDA DeviceRuntime (caching allocator over cudaMalloc,
 * copies ordered on the current stream, fill, synchronize = stream synchronize) and the op table
 * of engine/kernel_list.def (engine/backend.h), and returns true. Either way it records a sentence for
 * nimbus::cuda_status(). Idempotent and thread-safe. The same source is linked as nimbus_cuda_emu
 * (the emulated device, for tests) or, built by nvcc against cudart, as the real backend.
 *
 * References for A/B comparisons (never the default): with NIMBUS_CUDA_REFERENCE=cublas in the
 * environment at registration, or set_reference(), every GEMM (linear layers and the GEMMs inside
 * our im2col convolution) runs on cuBLAS; with =cudnn, convolutions run on cuDNN and linear layers
 * on cuBLAS. Only the real backend built with cuBLAS and cuDNN has them (references_available());
 * elsewhere asking for one is an Error. The status sentence names an active reference.
 *
 * Math mode for float32 convolutions and linear layers: Tf32 (the default, as PyTorch's
 * convolutions on a GPU) runs them on our tensor-core kernels, operands rounded to TF32 (10
 * mantissa bits) with fp32 accumulation; Fp32 runs the plain fp32 kernels, the exact reference
 * path. NIMBUS_CUDA_MATH=tf32|fp32 in the environment at registration, or set_math(). bfloat16
 * tensors always multiply on the tensor cores. An active reference takes precedence over both.
 *
 * Kernels for tensor-core convolutions (TF32 and bf16): Wgmma (Hopper's warpgroup MMAs fed by TMA,
 * conv2d_wgmma.h) or MmaSync (conv2d_tc.h, every tensor-core GPU). Auto, the default, is Wgmma where
 * the device runs our sm_90a code (wgmma_available(): an H100/H200 with a build for sm_90a) and MmaSync
 * elsewhere, the emulator included. Under Wgmma each direction of a convolution still goes to mma.sync
 * where the dispatch table (tc_dispatch.h) measured an mma.sync configuration faster for its shape.
 * NIMBUS_CUDA_CONV=auto|mma|wgmma in the environment at registration, or set_conv_kernels(). Asking
 * for Wgmma where the real device cannot run it is an Error; the emulator models the instructions, so
 * there it may be asked for (the tests do).
 */
#pragma once
#include <string>

namespace nimbus::cuda {

bool register_cuda_backend();

enum class Reference { None, Cublas, Cudnn };
Reference parse_reference(const std::string& name);  // "none", "cublas", "cudnn"; else Error
const char* reference_name(Reference r);
bool references_available();
void set_reference(Reference r);  // Error if not registered or the reference is not available
Reference reference();

enum class Math { Tf32, Fp32 };
Math parse_math(const std::string& name);  // "tf32", "fp32"; else Error
const char* math_name(Math m);
void set_math(Math m);  // process-wide; affects ops launched afterwards
Math math();

// Scope object for tests: sets the math mode, restores the previous one.
class MathScope {
 public:
  explicit MathScope(Math m) : saved_(math()) { set_math(m); }
  ~MathScope() { set_math(saved_); }
  MathScope(const MathScope&) = delete;
  MathScope& operator=(const MathScope&) = delete;

 private:
  Math saved_;
};

enum class ConvKernels { Auto, MmaSync, Wgmma };
ConvKernels parse_conv_kernels(const std::string& name);  // "auto", "mma", "wgmma"; else Error
const char* conv_kernels_name(ConvKernels k);
void set_conv_kernels(ConvKernels k);  // process-wide; Error for Wgmma on a device without sm_90a code
ConvKernels conv_kernels();            // as set
bool convs_on_wgmma();                 // what tensor-core convolutions run on now (Auto resolved)

// Scope object for tests: sets the convolution kernels, restores the previous choice.
class ConvKernelsScope {
 public:
  explicit ConvKernelsScope(ConvKernels k) : saved_(conv_kernels()) { set_conv_kernels(k); }
  ~ConvKernelsScope() { set_conv_kernels(saved_); }
  ConvKernelsScope(const ConvKernelsScope&) = delete;
  ConvKernelsScope& operator=(const ConvKernelsScope&) = delete;

 private:
  ConvKernels saved_;
};

// Batch-norm statistics folded into the convolution (conv2d_forward_bn_stats: a conv -> batch norm pair
// in training, ResNet's): on (the default), the tensor-core forward writes per-tile moments of its
// output in its epilogue (kernels/cuda/bn_moments.cuh) and one small kernel merges them, so batch norm's
// statistics never read the output; off, the forward and then batch norm's own statistics kernels (two
// reads of the output). Either way the statistics agree within float rounding (another summation
// order). NIMBUS_CUDA_BN_FOLD=1|0 in the environment at registration, or set_bn_fold(); bench_models
// times a ResNet step both ways (its rows say which).
void set_bn_fold(bool on);  // process-wide
bool bn_fold();

// Scope object for tests and benchmarks: sets the fold, restores the previous setting.
class BnFoldScope {
 public:
  explicit BnFoldScope(bool on) : saved_(bn_fold()) { set_bn_fold(on); }
  ~BnFoldScope() { set_bn_fold(saved_); }
  BnFoldScope(const BnFoldScope&) = delete;
  BnFoldScope& operator=(const BnFoldScope&) = delete;

 private:
  bool saved_;
};

}  // namespace nimbus::cuda
