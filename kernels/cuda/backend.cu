/* backend.cu: the CUDA backend's registration: device runtime + op table (see backend.h).
 *
 * Host code only. Under nvcc it talks to the real runtime; compiled by g++ it talks to the
 * emulator's runtime shim (kernels/emu/runtime.h), whose one device runs kernels on the CPU.
 *
 * Why the caching allocator needs no stream bookkeeping (the argument of PyTorch's
 * CUDACachingAllocator for a block used on one stream): a tensor's block returns to the cache when
 * the host drops it, possibly while kernels queued earlier still read or write it. The next owner
 * can only touch it through work queued later on the current stream, and all our work is on one
 * stream at a time (stream.h: a switch is a join), so that work runs after every kernel that used
 * the block before. The host itself only touches device memory through copies that synchronize the
 * stream first. cudaFree (empty_cache) synchronizes the device before returning memory.
 */
#include "kernels/cuda/backend.h"

#include <cstdlib>
#include <mutex>
#include <string>

#include "engine/allocator.h"
#include "engine/cuda_ops.h"
#include "engine/device.h"
#include "engine/error.h"
#include "kernels/cuda/batchnorm.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/copy.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/loss.h"
#include "kernels/cuda/optim.h"
#include "kernels/cuda/pool.h"
#include "kernels/cuda/stream.h"
#ifdef NIMBUS_CUDA_REFERENCES
#include "kernels/cuda/real/reference.h"
#endif

namespace nimbus::cuda {

namespace {

void* raw_alloc(size_t bytes) {
  void* p = nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    (void)cudaGetLastError();  // out of memory is reported by the allocator; clear the sticky error
    return nullptr;
  }
  return p;
}

// Only empty_cache() and the end of the process free: wait for every queued kernel first, rather
// than rely on cudaFree's implicit synchronisation.
void raw_free(void* p) {
  count_host_wait();
  cudaDeviceSynchronize();
  cudaFree(p);
}

// On the current stream, in order with the kernels. The host waits when it is a side of the copy:
// for device -> host it reads the data next; for host -> device the caller may free or reuse the
// source once we return, and cudaMemcpyAsync promises to have read it only for pageable memory.
void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  const cudaMemcpyKind kind = src_dev == Device::CPU
                                  ? (dst_dev == Device::CPU ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice)
                                  : (dst_dev == Device::CPU ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice);
  cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, launch_stream());
  if (e == cudaSuccess && kind != cudaMemcpyDeviceToDevice) {
    count_host_wait();
    e = cudaStreamSynchronize(launch_stream());
  }
  if (e != cudaSuccess) (void)cudaGetLastError();
  NIMBUS_CHECK(e == cudaSuccess, "cuda copy of ", bytes, " bytes (", device_name(src_dev), " -> ",
               device_name(dst_dev), ") failed: ", cudaGetErrorString(e));
}

void fill_n(float* dst, float value, size_t n) { fill(dst, value, int64_t(n)); }  // a kernel: current stream

void synchronize() { synchronize_stream(current_stream()); }

std::string versions() {
#ifdef __CUDACC__
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  auto v = [](int x) { return x == 0 ? std::string("none") : str(x / 1000, ".", (x % 1000) / 10); };
  return str("driver ", v(driver), ", runtime ", v(runtime));
#else
  return "CUDA-on-CPU emulator, no driver";
#endif
}

// The op table: the launchers with their default block sizes.
CudaOps make_ops() {
  CudaOps o{};
  o.add_inplace = [](float* y, const float* x, int64_t n) { add_inplace(y, x, n); };
  o.relu_forward = [](float* y, const float* x, int64_t n) { relu_forward(y, x, n); };
  o.relu_backward = [](float* dx, const float* dy, const float* y, int64_t n) { relu_backward(dx, dy, y, n); };
  o.add = [](float* y, const float* a, const float* b, int64_t n) { add(y, a, b, n); };
  o.scale = [](float* y, const float* x, float s, int64_t n) { scale(y, x, s, n); };
  o.linear_forward = [](float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in,
                        int64_t out) { linear_forward(y, x, w, b, N, in, out); };
  o.linear_backward = [](float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t N,
                         int64_t in, int64_t out) { linear_backward(dx, dw, db, dy, x, w, N, in, out); };
  o.conv2d_workspace = [](const ConvGeom& g) { return cuda::conv2d_workspace(g); };
  o.conv2d_forward = [](float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws) {
    cuda::conv2d_forward(y, x, w, b, g, ws);
  };
  o.conv2d_backward = [](float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                         const ConvGeom& g, float* ws) { cuda::conv2d_backward(dx, dw, db, dy, x, w, g, ws); };
  o.batchnorm_stats = [](float* mean, float* var, const float* x, int64_t N, int64_t C, int64_t HW) {
    batchnorm_stats(mean, var, x, N, C, HW);
  };
  o.batchnorm_invstd = batchnorm_invstd;
  o.batchnorm_update_running = batchnorm_update_running;
  o.batchnorm_forward = [](float* y, const float* x, const float* mean, const float* invstd, const float* w,
                           const float* b, int64_t N, int64_t C, int64_t HW) {
    batchnorm_forward(y, x, mean, invstd, w, b, N, C, HW);
  };
  o.batchnorm_backward = [](float* dx, float* dw, float* db, const float* dy, const float* x, const float* mean,
                            const float* invstd, const float* w, int64_t N, int64_t C, int64_t HW, bool training) {
    batchnorm_backward(dx, dw, db, dy, x, mean, invstd, w, N, C, HW, training);
  };
  o.max_pool2d_forward = [](float* y, const float* x, const PoolGeom& g) { cuda::max_pool2d_forward(y, x, g); };
  o.max_pool2d_backward = [](float* dx, const float* dy, const float* x, const PoolGeom& g) {
    cuda::max_pool2d_backward(dx, dy, x, g);
  };
  o.global_avg_pool_forward = [](float* y, const float* x, int64_t planes, int64_t hw) {
    global_avg_pool_forward(y, x, planes, hw);
  };
  o.global_avg_pool_backward = [](float* dx, const float* dy, int64_t planes, int64_t hw) {
    global_avg_pool_backward(dx, dy, planes, hw);
  };
  o.copy_rows = [](float* dst, int64_t ds, const float* src, int64_t ss, int64_t rows, int64_t len) {
    copy_rows(dst, ds, src, ss, rows, len);
  };
  o.loss_scratch_floats = loss_scratch_floats;
  o.softmax_forward = [](float* y, const float* x, int64_t N, int64_t K) { softmax_forward(y, x, N, K); };
  o.cross_entropy_forward = [](float* loss, float* prob, const float* logits, const float* target, int64_t N,
                               int64_t K, float* scratch) {
    cross_entropy_forward(loss, prob, logits, target, N, K, scratch);
  };
  o.cross_entropy_backward = [](float* dl, const float* prob, const float* target, float g, int64_t N, int64_t K) {
    cross_entropy_backward(dl, prob, target, g, N, K);
  };
  o.l1_forward = [](float* loss, const float* p, const float* t, int64_t n, float* s) { l1_forward(loss, p, t, n, s); };
  o.l1_backward = [](float* dp, const float* p, const float* t, float g, int64_t n) { l1_backward(dp, p, t, g, n); };
  o.mse_forward = [](float* loss, const float* p, const float* t, int64_t n, float* s) {
    mse_forward(loss, p, t, n, s);
  };
  o.mse_backward = [](float* dp, const float* p, const float* t, float g, int64_t n) { mse_backward(dp, p, t, g, n); };
  o.carl_forward = [](float* loss, const float* P, const float* Tg, const float* I, const float* M, float lambda,
                      int64_t N, int64_t C, int64_t HW,
                      float* s) { carl_forward(loss, P, Tg, I, M, lambda, N, C, HW, s); };
  o.carl_backward = [](float* dP, const float* P, const float* Tg, const float* I, const float* M, float lambda,
                       float g, int64_t N, int64_t C,
                       int64_t HW) { carl_backward(dP, P, Tg, I, M, lambda, g, N, C, HW); };
  o.adam_update = [](float* p, float* m, float* v, const float* g, int64_t n, const AdamScalars& s) {
    adam_update(p, m, v, g, n, s);
  };
  o.nadam_update = [](float* p, float* m, float* v, const float* g, int64_t n, const NadamScalars& s) {
    nadam_update(p, m, v, g, n, s);
  };
  o.sgd_update = [](float* p, float* buf, const float* g, int64_t n, const SgdScalars& s) {
    sgd_update(p, buf, g, n, s);
  };
  return o;
}

// ---- references (backend.h) ------------------------------------------------------------------
Reference active_reference = Reference::None;

#ifdef NIMBUS_CUDA_REFERENCES
void install_reference(Reference r) {
  CudaOps o = make_ops();
  set_gemm_reference(r == Reference::None ? nullptr : ref::cublas_gemm_batched);
  if (r == Reference::Cudnn) {
    o.conv2d_workspace = ref::cudnn_conv2d_workspace;
    o.conv2d_forward = ref::cudnn_conv2d_forward;
    o.conv2d_backward = ref::cudnn_conv2d_backward;
  }
  set_cuda_ops(o);
}
#endif

std::string base_status;  // the registration sentence, without the reference note

bool do_register() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    set_cuda_status(
        str("no CUDA device: cudaGetDeviceCount returned ",
            e != cudaSuccess ? str(cudaGetErrorName(e), " (", cudaGetErrorString(e), ")") : str("0 devices"), " (",
            versions(), ")"));
    return false;
  }
  // Parse the environment before touching anything, so a typo fails cleanly and early.
  const char* env = std::getenv("NIMBUS_CUDA_REFERENCE");
  const Reference wanted = env ? parse_reference(env) : Reference::None;
  // The compute stream, never destroyed (like the allocator: work may run until the process ends).
  cudaStream_t stream = nullptr;
  const cudaError_t se = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  NIMBUS_CHECK(se == cudaSuccess, "cuda backend: cudaStreamCreate failed: ", cudaGetErrorString(se));
  install_compute_stream(stream);
  // Never destroyed: tensors freed during static destruction still return their blocks here.
  static CachingAllocator* allocator = new CachingAllocator(raw_alloc, raw_free);
  set_device_runtime(Device::CUDA, DeviceRuntime{allocator, copy, fill_n, synchronize});
  set_cuda_ops(make_ops());
  base_status = str("CUDA backend: ", count, " device(s), using device 0 (", versions(), ")");
  set_cuda_status(base_status);
  if (wanted != Reference::None) set_reference(wanted);
  return true;
}

}  // namespace

bool register_cuda_backend() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] { ok = do_register(); });
  return ok;
}

Reference parse_reference(const std::string& name) {
  if (name == "none" || name.empty()) return Reference::None;
  if (name == "cublas") return Reference::Cublas;
  if (name == "cudnn") return Reference::Cudnn;
  throw Error(str("NIMBUS_CUDA_REFERENCE=", name, ": expected none, cublas or cudnn"));
}

const char* reference_name(Reference r) {
  return r == Reference::Cublas ? "cublas" : r == Reference::Cudnn ? "cudnn" : "none";
}

bool references_available() {
#ifdef NIMBUS_CUDA_REFERENCES
  return true;
#else
  return false;
#endif
}

void set_reference(Reference r) {
  NIMBUS_CHECK(r == Reference::None || references_available(), "cuda reference ", reference_name(r),
               ": this build of the CUDA backend has no cuBLAS/cuDNN (only the real backend, "
               "-DNIMBUS_CUDA_BACKEND=ON with cuBLAS and cuDNN under the CUDA toolkit, has them)");
  NIMBUS_CHECK(!base_status.empty(), "cuda reference ", reference_name(r),
               ": the CUDA backend is not registered (register_cuda_backend() found no device)");
#ifdef NIMBUS_CUDA_REFERENCES
  install_reference(r);
#endif
  active_reference = r;
  set_cuda_status(r == Reference::None ? base_status
                  : str(base_status, "; reference ", reference_name(r),
                        r == Reference::Cublas ? ": every GEMM on cuBLAS" : ": conv2d on cuDNN, linear on cuBLAS"));
}

Reference reference() { return active_reference; }

}  // namespace nimbus::cuda
