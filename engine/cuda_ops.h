// cuda_ops.h: the CUDA entry points the engine's ops call, as a table of function pointers.
//
// Why a table: the engine must link without cudart and without the emulator. The CUDA library
// (nimbus_cuda via nvcc, or nimbus_cuda_emu for tests) fills this table and the CUDA
// DeviceRuntime in nimbus::cuda::register_cuda_backend() (kernels/cuda/backend.h); until then
// cuda_ops() throws, and a CUDA tensor cannot even be allocated. Pointers are device pointers;
// the semantics are those of the kernels/cuda/*.h launcher of the same name.
#pragma once
#include <cstdint>
#include <string>

#include "kernels/cpu/conv2d.h"  // ConvGeom
#include "kernels/cpu/pool.h"    // PoolGeom
#include "kernels/cuda/optim.h"  // AdamScalars, NadamScalars, SgdScalars (plain structs)

namespace nimbus {

struct CudaOps {
  // pointwise over n floats
  void (*add_inplace)(float* y, const float* x, int64_t n);
  void (*relu_forward)(float* y, const float* x, int64_t n);
  void (*relu_backward)(float* dx, const float* dy, const float* y, int64_t n);
  void (*add)(float* y, const float* a, const float* b, int64_t n);
  void (*scale)(float* y, const float* x, float s, int64_t n);
  // linear and conv2d (tiled SGEMM underneath)
  void (*linear_forward)(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in, int64_t out);
  void (*linear_backward)(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t N,
                          int64_t in, int64_t out);
  int64_t (*conv2d_workspace)(const cpu::ConvGeom& g);
  void (*conv2d_forward)(float* y, const float* x, const float* w, const float* b, const cpu::ConvGeom& g, float* ws);
  void (*conv2d_backward)(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                          const cpu::ConvGeom& g, float* ws);
  // batch norm
  void (*batchnorm_stats)(float* mean, float* var, const float* x, int64_t N, int64_t C, int64_t HW);
  void (*batchnorm_invstd)(float* invstd, const float* var, float eps, int64_t C);
  void (*batchnorm_update_running)(float* rm, float* rv, const float* mean, const float* var, float momentum,
                                   int64_t M, int64_t C);
  void (*batchnorm_forward)(float* y, const float* x, const float* mean, const float* invstd, const float* weight,
                            const float* bias, int64_t N, int64_t C, int64_t HW);
  void (*batchnorm_backward)(float* dx, float* dweight, float* dbias, const float* dy, const float* x,
                             const float* mean, const float* invstd, const float* weight, int64_t N, int64_t C,
                             int64_t HW, bool training);
  // pooling
  void (*max_pool2d_forward)(float* y, const float* x, const cpu::PoolGeom& g);
  void (*max_pool2d_backward)(float* dx, const float* dy, const float* x, const cpu::PoolGeom& g);
  void (*global_avg_pool_forward)(float* y, const float* x, int64_t planes, int64_t hw);
  void (*global_avg_pool_backward)(float* dx, const float* dy, int64_t planes, int64_t hw);
  // concat_channels: strided row copy
  void (*copy_rows)(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t len);
  // losses: forward writes the loss to a device float, scratch has loss_scratch_floats(n) floats
  int64_t (*loss_scratch_floats)(int64_t n);
  void (*softmax_forward)(float* y, const float* x, int64_t N, int64_t K);
  void (*cross_entropy_forward)(float* loss, float* prob, const float* logits, const float* target, int64_t N,
                                int64_t K, float* scratch);
  void (*cross_entropy_backward)(float* dlogits, const float* prob, const float* target, float g, int64_t N,
                                 int64_t K);
  void (*l1_forward)(float* loss, const float* p, const float* t, int64_t n, float* scratch);
  void (*l1_backward)(float* dp, const float* p, const float* t, float g, int64_t n);
  void (*mse_forward)(float* loss, const float* p, const float* t, int64_t n, float* scratch);
  void (*mse_backward)(float* dp, const float* p, const float* t, float g, int64_t n);
  void (*carl_forward)(float* loss, const float* P, const float* Tg, const float* I, const float* M, float lambda,
                       int64_t N, int64_t C, int64_t HW, float* scratch);
  void (*carl_backward)(float* dP, const float* P, const float* Tg, const float* I, const float* M, float lambda,
                        float g, int64_t N, int64_t C, int64_t HW);
  // fused optimiser updates
  void (*adam_update)(float* p, float* m, float* v, const float* g, int64_t n, const cuda::AdamScalars& s);
  void (*nadam_update)(float* p, float* m, float* v, const float* g, int64_t n, const cuda::NadamScalars& s);
  void (*sgd_update)(float* p, float* buf, const float* g, int64_t n, const cuda::SgdScalars& s);
};

// The registered table; throws Error("<op>: ...") naming `op` when no CUDA backend is registered.
// Every engine op calls it once per use, so it doubles as the op boundary for profiling: when a
// marker is set, it is called with `op` first (the CUDA backend's per-op timer, op_profile.h).
const CudaOps& cuda_ops(const char* op);
void set_cuda_ops(const CudaOps& ops);
using CudaOpMarker = void (*)(const char* op);  // `op` is a string literal
void set_cuda_op_marker(CudaOpMarker marker);   // nullptr: none

// One sentence on the CUDA backend for --device handling: what was found, or why it is unusable
// ("no CUDA device: cudaGetDeviceCount returned ... (driver ..., runtime ...)"). Set by the
// backend's registration; before any registration it says this program has no CUDA backend.
std::string cuda_status();
void set_cuda_status(const std::string& status);

}  // namespace nimbus
