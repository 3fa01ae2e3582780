/* backend.cu: the CUDA backend's registration: device runtime + op table (see backend.h).
 *
 * Host code only. Under nvcc it talks to the real runtime; compiled by g++ it talks to the
 * emulator's runtime shim (kernels/emu/runtime.h), whose one device runs kernels on the CPU.
 *
 * Why the caching allocator's reuse is safe (the argument of PyTorch's CUDACachingAllocator for a
 * block used on one stream): a tensor's block returns to the cache when the host drops it, possibly
 * while kernels queued earlier still read or write it. It returns to the pool of the stream it was
 * allocated on, and only allocations on that stream take from that pool, so the next owner touches it
 * through work queued later on the same stream, which runs after every kernel that used the block
 * before. (A block used on another stream than its own must be kept alive by its user until that
 * work is ordered; switching the current stream joins, stream.h.) During a graph capture the pool is
 * the capture's private one (engine/graph.h). The host itself only touches device memory through
 * copies that synchronize the stream first. cudaFree (empty_cache) synchronizes the device first.
 */
#include "backends/cuda/backend.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>

#include "backends/common/bf16_via_f32.h"
#include "backends/cuda/nccl_group.h"
#include "backends/cuda/upload.h"
#include "engine/allocator.h"
#include "engine/backend.h"
#include "engine/device.h"
#include "engine/distributed/process_group.h"
#include "engine/tensor.h"
#include "kernels/common/error.h"
#include "kernels/cuda/batchnorm.h"
#include "kernels/cuda/cast.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/conv2d_tc.h"
#include "kernels/cuda/conv2d_wgmma.h"
#include "kernels/cuda/copy.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/grad_clip.h"
#include "kernels/cuda/linear_tc.h"
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
  // Relaxed for this call: during a graph capture the private pool may need new memory, and a
  // cudaMalloc is safe there (the block belongs to the graph's pool for the graph's lifetime) though
  // CUDA's default capture mode refuses it. PyTorch's allocator does the same.
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  cudaThreadExchangeStreamCaptureMode(&mode);
  const cudaError_t e = cudaMalloc(&p, bytes);
  cudaThreadExchangeStreamCaptureMode(&mode);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // out of memory is reported by the allocator (after it drops its cache)
    return nullptr;
  }
  // Anything else is no shortage: after a kernel faults (an illegal address), every later call returns
  // that error for the rest of the process, and calling it "out of memory" would send the reader the
  // wrong way.
  NIMBUS_CHECK(e == cudaSuccess, "cuda: cudaMalloc of ", bytes, " bytes failed: ", cudaGetErrorString(e),
               " (not a shortage of memory: an earlier kernel probably failed; NIMBUS_CUDA_SYNC_CHECK=1 finds it)");
  return p;
}

// Only empty_cache() and the end of the process free. The allocator calls wait_before_free() once
// before a batch of frees: every queued kernel has run then, rather than relying on cudaFree's
// implicit synchronisation (which, the device idle, then costs nothing: one host wait per batch).
void wait_before_free() {
  count_host_wait();
  const cudaError_t e = cudaDeviceSynchronize();
  NIMBUS_CHECK(e == cudaSuccess, "cuda: waiting for the device before freeing memory: ", cudaGetErrorString(e),
               " (a kernel failed; NIMBUS_CUDA_SYNC_CHECK=1 finds which)");
}
void raw_free(void* p) { cudaFree(p); }

// Page-locked host memory (DeviceRuntime::pinned_alloc): device <-> host copies from it need no
// staging through the driver's own buffers.
void* pinned_alloc(size_t bytes) {
  void* p = nullptr;
  const cudaError_t e = cudaMallocHost(&p, bytes);
  if (e != cudaSuccess) (void)cudaGetLastError();
  NIMBUS_CHECK(e == cudaSuccess, "cuda: cudaMallocHost of ", bytes, " bytes failed: ", cudaGetErrorString(e));
  return p;
}
void pinned_free(void* p) { cudaFreeHost(p); }

// On the current stream, in order with the kernels. Device -> host: the host waits, since it reads
// the data next. Host -> device: staged in pieces (upload.h), no wait (the caller may free or reuse
// the source once we return). Device -> device: queued only.
void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  // Host -> device: staged through page-locked memory on the copy stream, no host wait (upload.h).
  if (src_dev == Device::CPU && dst_dev == Device::CUDA) return upload(dst, src, bytes);
  const cudaMemcpyKind kind = src_dev == Device::CPU
                                  ? (dst_dev == Device::CPU ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice)
                                  : (dst_dev == Device::CPU ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice);
  count_copy();
  cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, launch_stream());
  if (e == cudaSuccess && kind != cudaMemcpyDeviceToDevice) {
    count_host_wait();
    e = cudaStreamSynchronize(launch_stream());
  }
  if (e != cudaSuccess) (void)cudaGetLastError();
  NIMBUS_CHECK(e == cudaSuccess, "cuda copy of ", bytes, " bytes (", device_name(src_dev), " -> ",
               device_name(dst_dev), ") failed: ", cudaGetErrorString(e));
}

// ---- graph capture (engine/graph.h) -----------------------------------------------------------
// Each capture allocates from its own private pool (engine/allocator.h); outside a capture the pool
// is the current stream's, so a block freed on one stream is not handed to another.
CachingAllocator* the_allocator = nullptr;
std::atomic<CachingAllocator::Pool> capture_pool{0};

CachingAllocator::Pool current_pool() {
  const CachingAllocator::Pool p = capture_pool.load(std::memory_order_relaxed);
  return p ? p : CachingAllocator::Pool(reinterpret_cast<uintptr_t>(current_stream()));
}
CachingAllocator::Pool compute_pool() { return CachingAllocator::Pool(reinterpret_cast<uintptr_t>(compute_stream())); }

struct CapturedGraph {
  GraphExec exec;
  CachingAllocator::Pool pool;
};

void begin_capture_hook() {
  NIMBUS_CHECK(!capture_pool.load(), "graph capture: a capture is already under way");
  const CachingAllocator::Pool pool = the_allocator->new_private_pool();
  cuda::begin_capture();
  capture_pool.store(pool);
}
// The pool of a capture that recorded nothing usable: its blocks were never touched by a graph.
void drop_capture_pool() {
  const CachingAllocator::Pool pool = capture_pool.exchange(0);
  if (pool) the_allocator->release_private_pool(pool, current_pool());
}
void* end_capture_hook() {
  GraphExec exec = nullptr;
  try {
    exec = cuda::end_capture();
  } catch (...) {
    drop_capture_pool();
    throw;
  }
  return new CapturedGraph{exec, capture_pool.exchange(0)};
}
void abort_capture_hook() {
  cuda::abort_capture();
  drop_capture_pool();
}
void replay_graph_hook(void* g) { cuda::launch_graph(static_cast<CapturedGraph*>(g)->exec); }
// The graph's memory goes to the compute stream's pool: work queued there later runs after the
// graph's last replay on it.
void destroy_graph_hook(void* g) {
  auto* c = static_cast<CapturedGraph*>(g);
  cuda::destroy_graph(c->exec);
  the_allocator->release_private_pool(c->pool, compute_pool());
  delete c;
}
bool capturing_hook() { return cuda::capturing(); }

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

}  // namespace

// ---- the kernel list on CUDA -------------------------------------------------------------------
// Every entry of engine/kernel_list.def calls nimbus::cuda::<name>(arguments) with the launcher's
// default block size, except the adapters declared here (they hide the launcher of the same name).
namespace cuda_entries {
using namespace ::nimbus::cuda;

// float32 convolutions and linear layers: the tensor-core kernels in TF32 (conv2d_tc.cu,
// linear_tc.cu) unless math() is Fp32 or a reference is active (then the im2col + GEMM path, whose
// GEMMs the reference may take over), or the geometry overflows the tensor-core kernels' indices.
// bfloat16 always takes the tensor cores, except at such a geometry (then float32 scratch around the
// plain kernels, backends/common/bf16_via_f32.h). Tensor-core convolutions (TF32 and bf16) run on wgmma
// where conv_kernels() says so (backend.h) and the geometry fits (conv2d_wgmma_supported), else on
// mma.sync.
bool tf32_on() { return math() == Math::Tf32 && gemm_reference() == nullptr; }
bool wgmma_on(const ConvGeom& g) { return convs_on_wgmma() && conv2d_wgmma_supported(g); }
// Whether direction `kind` of a conv at g in E runs on wgmma: where wgmma is on, unless the dispatch
// table measured an mma.sync configuration faster there (and mma.sync can take g).
template <typename E>
bool wgmma_for(const ConvGeom& g, TcKind kind) {
  if (!wgmma_on(g)) return false;
  return !conv2d_tc_supported(g) || conv2d_wgmma_preferred(g, kind, std::is_same_v<E, float>);
}
// The wgmma forward (plain, ReLU or residual epilogue): the warp-specialised kernel where the dispatch
// table's line says it measured faster, else the plain one.
template <typename E>
void wgmma_forward(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, bool relu, const E* r, float s,
                   float* ws) {
  if (conv2d_wgmma_specialised_preferred(g, std::is_same_v<E, float>))
    return conv2d_wgmma_forward_specialised<E>(y, x, w, b, g, relu, r, s, ws);
  conv2d_wgmma_forward<E>(y, x, w, b, g, relu, r, s, ws);
}
// The tensor-core backward, each gradient on its family: wgmma's first (the workspace is reused in
// stream order), db with it, the rest on mma.sync.
template <typename E>
void tc_conv_backward(E* dx, E* dw, E* db, const E* dy, const E* x, const E* w, const ConvGeom& g, float* ws) {
  const bool hx = wgmma_for<E>(g, TcKind::ConvDataGrad), hw = wgmma_for<E>(g, TcKind::ConvWeightGrad);
  if (hx || hw) conv2d_wgmma_backward<E>(hx ? dx : nullptr, hw ? dw : nullptr, db, dy, x, w, g, ws);
  if (!hx || !hw) conv2d_tc_backward<E>(hx ? nullptr : dx, hw ? nullptr : dw, hx || hw ? nullptr : db, dy, x, w, g, ws);
}

// One workspace size for both dtypes (the op table's conv2d_workspace has no dtype): the largest need.
int64_t conv2d_workspace(const ConvGeom& g) {
  const bool tc = conv2d_tc_supported(g);
  int64_t n = tc ? conv2d_tc_workspace(g) : 0;  // bfloat16 always, float32 under TF32
  if (!tc || !tf32_on()) n = std::max(n, cuda::conv2d_workspace(g));
  if (wgmma_on(g)) n = std::max(n, conv2d_wgmma_workspace(g));
  return n;
}

// The im2col + GEMM path has no epilogue: the ReLU is a second pass over y.
void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                    bool relu) {
  if (tf32_on() && wgmma_for<float>(g, TcKind::ConvForward))
    return wgmma_forward<float>(y, x, w, b, g, relu, nullptr, 1.0f, ws);
  if (tf32_on() && conv2d_tc_supported(g)) return conv2d_tc_forward(y, x, w, b, g, relu);
  cuda::conv2d_forward(y, x, w, b, g, ws);
  if (relu) cuda::relu_forward(y, y, g.N * g.K * g.P() * g.Q());
}
void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvGeom& g, float* ws) {
  if (tf32_on() && (wgmma_on(g) || conv2d_tc_supported(g))) return tc_conv_backward(dx, dw, db, dy, x, w, g, ws);
  cuda::conv2d_backward(dx, dw, db, dy, x, w, g, ws);
}
// The residual sum in the tensor-core epilogue, else a second pass (y = r + s y).
void conv2d_residual_forward(float* y, const float* x, const float* w, const float* b, const float* r, float s,
                             const ConvGeom& g, float* ws) {
  if (tf32_on() && wgmma_for<float>(g, TcKind::ConvForward))
    return wgmma_forward<float>(y, x, w, b, g, false, r, s, ws);
  if (tf32_on() && conv2d_tc_supported(g)) return conv2d_tc_residual_forward(y, x, w, b, r, s, g);
  cuda::conv2d_forward(y, x, w, b, g, ws);
  cuda::add_scaled(y, r, y, s, g.N * g.K * g.P() * g.Q());
}
void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in, int64_t out) {
  if (tf32_on() && linear_tc_supported(N, in, out)) return linear_tc_forward(y, x, w, b, N, in, out);
  cuda::linear_forward(y, x, w, b, N, in, out);
}
void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t N,
                     int64_t in, int64_t out) {
  if (tf32_on() && linear_tc_supported(N, in, out)) return linear_tc_backward(dx, dw, db, dy, x, w, N, in, out);
  cuda::linear_backward(dx, dw, db, dy, x, w, N, in, out);
}

void conv2d_forward(bfloat16* y, const bfloat16* x, const bfloat16* w, const bfloat16* b, const ConvGeom& g,
                    float* ws, bool relu);  // below
// A conv -> batch norm pair in training: with bn_fold() and a tensor-core forward, the moments come from
// the forward's epilogue into the workspace past the forward's own part, and one launch merges them;
// else the forward, then batch norm's statistics kernels over y.
// The workspace holds the forward's part, then the moments from a float offset that keeps them 16-byte
// aligned; their room only where a fold can happen (bfloat16 always takes the tensor cores).
int64_t conv2d_bn_moments_offset(const ConvGeom& g) { return (conv2d_workspace(g) + 3) / 4 * 4; }
int64_t conv2d_bn_workspace(const ConvGeom& g) {
  const bool fold = bn_fold() && (wgmma_on(g) || conv2d_tc_supported(g));
  return conv2d_bn_moments_offset(g) + (fold ? conv2d_bn_moments_floats(g) : 0);
}
template <typename T>
void batchnorm_train_stats(float* mean, float* invstd, float* running_mean, float* running_var, float* count,
                           const T* x, int64_t N, int64_t C, int64_t HW, float momentum, float eps);
// The folded pair, when a tensor-core forward takes it: the moments from the forward's epilogue (and
// `in`'s batch norm + ReLU applied in its gather), then one merge. False, with nothing done, otherwise.
template <typename E>
bool folded_forward_bn_stats(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, float* ws, float* mean,
                             float* invstd, float* running_mean, float* running_var, float* count, float momentum,
                             float eps, const BnReluIn& in = {}) {
  const bool tc = std::is_same_v<E, bfloat16> || tf32_on();
  const bool on_wgmma = tc && wgmma_for<E>(g, TcKind::ConvForward);
  if (!bn_fold() || !(on_wgmma || (tc && conv2d_tc_supported(g)))) return false;
  float* moments = ws + conv2d_bn_moments_offset(g);
  const int chunks = on_wgmma ? conv2d_wgmma_forward_bn_moments<E>(y, x, w, b, g, ws, moments, in)
                              : conv2d_tc_forward_bn_moments<E>(y, x, w, b, g, moments, {}, in);
  batchnorm_stats_from_moments(mean, invstd, running_mean, running_var, count, moments, g.K, chunks,
                               g.N * g.P() * g.Q(), momentum, eps);
  return true;
}
template <typename E>
void conv2d_forward_bn_stats(E* y, const E* x, const E* w, const E* b, const ConvGeom& g, float* ws, float* mean,
                             float* invstd, float* running_mean, float* running_var, float* count, float momentum,
                             float eps) {
  if (folded_forward_bn_stats<E>(y, x, w, b, g, ws, mean, invstd, running_mean, running_var, count, momentum, eps))
    return;
  conv2d_forward(y, x, w, b, g, ws, false);
  batchnorm_train_stats<E>(mean, invstd, running_mean, running_var, count, y, g.N, g.K, g.P() * g.Q(), momentum, eps);
}
// The pair reading relu(batch_norm(x)) of the previous layer: with the fold, the tensor-core forward
// applies it in its gather (the prologue); else that activation goes to scratch and the pair runs on it.
template <typename E>
void bnrelu_conv2d_forward_bn_stats(E* y, const E* x, const float* in_mean, const float* in_invstd,
                                    const float* in_weight, const float* in_bias, const E* w, const E* b,
                                    const ConvGeom& g, float* ws, float* mean, float* invstd, float* running_mean,
                                    float* running_var, float* count, float momentum, float eps) {
  if (folded_forward_bn_stats<E>(y, x, w, b, g, ws, mean, invstd, running_mean, running_var, count, momentum, eps,
                                 {in_mean, in_invstd, in_weight, in_bias}))
    return;
  const int64_t n = g.N * g.C * g.H * g.W;
  Tensor a = Tensor::empty({n}, Device::CUDA, std::is_same_v<E, bfloat16> ? DType::BF16 : DType::F32);
  E* ap = a.data_as<E>();
  cuda::batchnorm_forward(ap, x, in_mean, in_invstd, in_weight, in_bias, g.N, g.C, g.H * g.W, true);
  conv2d_forward_bn_stats<E>(y, ap, w, b, g, ws, mean, invstd, running_mean, running_var, count, momentum, eps);
}

// Batch norm: a channel's values over several blocks when the channels alone would not fill the GPU
// (batchnorm.h batchnorm_splits), with float32 scratch from the caching allocator, on the stream.
template <typename T>
void batchnorm_train_stats(float* mean, float* invstd, float* running_mean, float* running_var, float* count,
                           const T* x, int64_t N, int64_t C, int64_t HW, float momentum, float eps) {
  const int splits = batchnorm_splits(N, C, HW);
  Tensor scratch = splits > 1 ? Tensor::empty({batchnorm_scratch_floats(C, splits)}, Device::CUDA) : Tensor();
  cuda::batchnorm_train_stats(mean, invstd, running_mean, running_var, count, x, N, C, HW, momentum, eps,
                              scratch.defined() ? scratch.data() : nullptr, splits);
}
template <typename T>
void batchnorm_backward(T* dx, float* dweight, float* dbias, const T* dy, const T* x, const float* mean,
                        const float* invstd, const float* weight, const T* relu_y, int64_t N, int64_t C, int64_t HW,
                        bool training) {
  const int splits = batchnorm_splits(N, C, HW);
  Tensor scratch = splits > 1 ? Tensor::empty({batchnorm_scratch_floats(C, splits)}, Device::CUDA) : Tensor();
  cuda::batchnorm_backward(dx, dweight, dbias, dy, x, mean, invstd, weight, relu_y, N, C, HW, training,
                           scratch.defined() ? scratch.data() : nullptr, splits);
}

// bfloat16 fallback: float32 scratch from the caching allocator, on the stream.
struct DeviceMem {
  struct Scratch {
    explicit Scratch(int64_t n) : t(n > 0 ? Tensor::empty({n}, Device::CUDA) : Tensor()) {}
    float* data() { return t.defined() ? t.data() : nullptr; }
    Tensor t;
  };
  static void widen(float* dst, const bfloat16* src, int64_t n) { cuda::cast_bf16_to_f32(dst, src, n); }
  static void narrow(bfloat16* dst, const float* src, int64_t n) { cuda::cast_f32_to_bf16(dst, src, n); }
};
using DeviceViaF32 = ViaF32<DeviceMem>;
void linear_forward(bfloat16* y, const bfloat16* x, const bfloat16* w, const bfloat16* b, int64_t N, int64_t in,
                    int64_t out) {
  if (linear_tc_supported(N, in, out)) return linear_tc_forward(y, x, w, b, N, in, out);
  DeviceViaF32::linear_forward([](auto... a) { cuda::linear_forward(a...); }, y, x, w, b, N, in, out);
}
void linear_backward(bfloat16* dx, bfloat16* dw, bfloat16* db, const bfloat16* dy, const bfloat16* x,
                     const bfloat16* w, int64_t N, int64_t in, int64_t out) {
  if (linear_tc_supported(N, in, out)) return linear_tc_backward(dx, dw, db, dy, x, w, N, in, out);
  DeviceViaF32::linear_backward([](auto... a) { cuda::linear_backward(a...); }, dx, dw, db, dy, x, w, N, in, out);
}
void conv2d_forward(bfloat16* y, const bfloat16* x, const bfloat16* w, const bfloat16* b, const ConvGeom& g,
                    float* ws, bool relu) {
  if (wgmma_for<bfloat16>(g, TcKind::ConvForward))
    return wgmma_forward<bfloat16>(y, x, w, b, g, relu, nullptr, 1.0f, ws);
  if (conv2d_tc_supported(g)) return conv2d_tc_forward(y, x, w, b, g, relu);
  DeviceViaF32::conv2d_forward(
      [](float* y32, const float* x32, const float* w32, const float* b32, const ConvGeom& g32, float* ws32,
         bool relu32) {
        cuda::conv2d_forward(y32, x32, w32, b32, g32, ws32);
        if (relu32) cuda::relu_forward(y32, y32, g32.N * g32.K * g32.P() * g32.Q());
      },
      y, x, w, b, g, ws, relu);
}
void conv2d_residual_forward(bfloat16* y, const bfloat16* x, const bfloat16* w, const bfloat16* b,
                             const bfloat16* r, float s, const ConvGeom& g, float* ws) {
  if (wgmma_for<bfloat16>(g, TcKind::ConvForward))
    return wgmma_forward<bfloat16>(y, x, w, b, g, false, r, s, ws);
  if (conv2d_tc_supported(g)) return conv2d_tc_residual_forward(y, x, w, b, r, s, g);
  conv2d_forward(y, x, w, b, g, ws, false);
  cuda::add_scaled(y, r, y, s, g.N * g.K * g.P() * g.Q());
}
void conv2d_backward(bfloat16* dx, bfloat16* dw, bfloat16* db, const bfloat16* dy, const bfloat16* x,
                     const bfloat16* w, const ConvGeom& g, float* ws) {
  if (wgmma_on(g) || conv2d_tc_supported(g)) return tc_conv_backward(dx, dw, db, dy, x, w, g, ws);
  DeviceViaF32::conv2d_backward([](auto... a) { cuda::conv2d_backward(a...); }, dx, dw, db, dy, x, w, g, ws);
}
}  // namespace cuda_entries

namespace {

Backend make_backend() {
  Backend t;
#define NIMBUS_KERNEL(name, dtypes, ret, params, args) \
  NIMBUS_BACKEND_ENTRY(t, cuda_entries, name, dtypes, ret, params, args)
#include "engine/kernel_list.def"
#undef NIMBUS_KERNEL
  return t;
}

// ---- references (backend.h) ------------------------------------------------------------------
Reference active_reference = Reference::None;

#ifdef NIMBUS_CUDA_REFERENCES
void install_reference(Reference r) {
  Backend t = make_backend();
  set_gemm_reference(r == Reference::None ? nullptr : ref::cublas_gemm_batched);
  if (r == Reference::Cudnn) {
    // cuDNN's float32 needs, and ours: bfloat16 convolutions stay on our kernels (the wgmma weight copy).
    t.f32.conv2d_workspace = [](const ConvGeom& g) {
      return std::max(ref::cudnn_conv2d_workspace(g), cuda_entries::conv2d_workspace(g));
    };
    t.f32.conv2d_forward = [](float* y, const float* x, const float* w, const float* b, const ConvGeom& g, float* ws,
                          bool relu) {
      ref::cudnn_conv2d_forward(y, x, w, b, g, ws);
      if (relu) cuda::relu_forward(y, y, g.N * g.K * g.P() * g.Q());
    };
    t.f32.conv2d_backward = ref::cudnn_conv2d_backward;
    t.f32.conv2d_bn_workspace = [](const ConvGeom& g) {  // float32: cuDNN's forward, then our statistics
      return std::max(ref::cudnn_conv2d_workspace(g), cuda_entries::conv2d_bn_workspace(g));
    };
    t.f32.conv2d_forward_bn_stats = [](float* y, const float* x, const float* w, const float* b, const ConvGeom& g,
                                       float* ws, float* mean, float* invstd, float* rm, float* rv, float* count,
                                       float momentum, float eps) {
      ref::cudnn_conv2d_forward(y, x, w, b, g, ws);
      cuda_entries::batchnorm_train_stats<float>(mean, invstd, rm, rv, count, y, g.N, g.K, g.P() * g.Q(), momentum,
                                                 eps);
    };
    // The batch norm + ReLU written out (cuDNN has no such prologue), then the pair above.
    t.f32.bnrelu_conv2d_forward_bn_stats = [](float* y, const float* x, const float* im, const float* is,
                                              const float* iw, const float* ib, const float* w, const float* b,
                                              const ConvGeom& g, float* ws, float* mean, float* invstd, float* rm,
                                              float* rv, float* count, float momentum, float eps) {
      Tensor a = Tensor::empty({g.N * g.C * g.H * g.W}, Device::CUDA);
      cuda::batchnorm_forward(a.data(), x, im, is, iw, ib, g.N, g.C, g.H * g.W, true);
      ref::cudnn_conv2d_forward(y, a.data(), w, b, g, ws);
      cuda_entries::batchnorm_train_stats<float>(mean, invstd, rm, rv, count, y, g.N, g.K, g.P() * g.Q(), momentum,
                                                 eps);
    };
  }
  set_backend(Device::CUDA, t);
}
#endif

std::string base_status;  // the registration sentence, without the reference and math notes
std::atomic<Math> current_math{Math::Tf32};
std::atomic<ConvKernels> current_conv{ConvKernels::Auto};
std::atomic<bool> current_bn_fold{true};

// The status sentence: registration, then the math mode, then an active reference.
void update_status() {
  const Reference r = active_reference;
  set_cuda_status(str(base_status, "; float32 conv2d/linear in ", math_name(current_math.load()),
                      current_math.load() == Math::Tf32 ? " on our tensor-core kernels" : " on the plain kernels",
                      "; tensor-core conv2d on ", convs_on_wgmma() ? "wgmma (sm_90a)" : "mma.sync",
                      current_bn_fold.load() ? ", batch-norm statistics in its epilogue" : "",
                      r == Reference::None ? ""
                                           : str("; reference ", reference_name(r),
                                                 r == Reference::Cublas ? ": every GEMM on cuBLAS"
                                                                        : ": conv2d on cuDNN, linear on cuBLAS")));
}

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
  const char* math_env = std::getenv("NIMBUS_CUDA_MATH");
  const Math wanted_math = math_env ? parse_math(math_env) : current_math.load();
  const char* conv_env = std::getenv("NIMBUS_CUDA_CONV");
  const ConvKernels wanted_conv = conv_env ? parse_conv_kernels(conv_env) : current_conv.load();
  if (const char* fold_env = std::getenv("NIMBUS_CUDA_BN_FOLD")) {
    const std::string v = fold_env;
    NIMBUS_CHECK(v == "0" || v == "1", "NIMBUS_CUDA_BN_FOLD=", v, ": expected 1 (fold batch-norm statistics into ",
                 "the convolution) or 0");
    current_bn_fold = v == "1";
  }
  // Data-parallel ranks on one machine take one GPU each, by local rank; more ranks than GPUs share
  // them round-robin.
  const int device = launched_local_rank() % count;
  const cudaError_t de = cudaSetDevice(device);
  NIMBUS_CHECK(de == cudaSuccess, "cuda backend: cudaSetDevice(", device, ") failed: ", cudaGetErrorString(de));
  // The compute stream, never destroyed (like the allocator: work may run until the process ends).
  cudaStream_t stream = nullptr;
  const cudaError_t se = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  NIMBUS_CHECK(se == cudaSuccess, "cuda backend: cudaStreamCreate failed: ", cudaGetErrorString(se));
  install_compute_stream(stream);
  // Never destroyed: tensors freed during static destruction still return their blocks here.
#ifdef __CUDACC__
  constexpr bool host_memory = false;
#else
  constexpr bool host_memory = true;  // the emulator's device memory: AddressSanitizer may guard it
#endif
  static CachingAllocator* allocator = new CachingAllocator(raw_alloc, raw_free, host_memory, wait_before_free);
  allocator->set_pool_fn(current_pool);
#ifndef __CUDACC__
  allocator->set_guard_fn([] { return !emu::deferred(); });  // allocator.h says why
#endif
  the_allocator = allocator;
  set_device_runtime(Device::CUDA,
                     DeviceRuntime{allocator, copy, fill_n, synchronize, begin_capture_hook, end_capture_hook,
                                   abort_capture_hook, replay_graph_hook, destroy_graph_hook, capturing_hook,
                                   pinned_alloc, pinned_free});
  set_backend(Device::CUDA, make_backend());
  register_nccl_group();  // NIMBUS_PROCESS_GROUP=nccl (real CUDA only)
  base_status = str("CUDA backend: ", count, " device(s), using device ", device, " (", versions(), ")");
  current_math = wanted_math;
  (void)wgmma_available();  // its probe now, never later inside a capture
  set_conv_kernels(wanted_conv);
  update_status();
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
  update_status();
}

Reference reference() { return active_reference; }

Math parse_math(const std::string& name) {
  if (name == "tf32") return Math::Tf32;
  if (name == "fp32") return Math::Fp32;
  throw Error(str("NIMBUS_CUDA_MATH=", name, ": expected tf32 or fp32"));
}

const char* math_name(Math m) { return m == Math::Tf32 ? "tf32" : "fp32"; }

void set_math(Math m) {
  current_math = m;
  if (!base_status.empty()) update_status();
}

Math math() { return current_math.load(); }

ConvKernels parse_conv_kernels(const std::string& name) {
  if (name == "auto") return ConvKernels::Auto;
  if (name == "mma") return ConvKernels::MmaSync;
  if (name == "wgmma") return ConvKernels::Wgmma;
  throw Error(str("NIMBUS_CUDA_CONV=", name, ": expected auto, mma or wgmma"));
}

const char* conv_kernels_name(ConvKernels k) {
  return k == ConvKernels::Auto ? "auto" : k == ConvKernels::MmaSync ? "mma" : "wgmma";
}

void set_conv_kernels(ConvKernels k) {
#ifdef __CUDACC__  // the emulator models every instruction: it runs the wgmma kernels when asked
  NIMBUS_CHECK(k != ConvKernels::Wgmma || wgmma_available(),
               "NIMBUS_CUDA_CONV=wgmma: this device does not run sm_90a code (the wgmma kernels need compute "
               "capability 9.0 and a build for sm_90a)");
#endif
  current_conv = k;
  if (!base_status.empty()) update_status();
}

ConvKernels conv_kernels() { return current_conv.load(); }

void set_bn_fold(bool on) {
  current_bn_fold = on;
  if (!base_status.empty()) update_status();
}

bool bn_fold() { return current_bn_fold.load(); }

bool convs_on_wgmma() {
  const ConvKernels k = current_conv.load();
  return k == ConvKernels::Wgmma || (k == ConvKernels::Auto && wgmma_available());
}

}  // namespace nimbus::cuda
