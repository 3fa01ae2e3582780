// learn_step.cpp: the numbers of docs/learn/10-gpu-step.md. A training step on the CUDA backend, run
// by the CUDA-on-CPU emulator (the target links nimbus_cuda_emu; see docs/learn/CMakeLists.txt):
//   1. what an eager step costs the host (kernel launches, waits for the device, copies), and what a
//      replay of the same step captured as a CUDA graph costs, with the weights compared bit for bit;
//   2. what a capture refuses, and why;
//   3. two streams and an event on the emulator's deferred streams (queued work runs only when
//      something waits for it, the latest a GPU could run it): a missing wait, and a page-locked
//      buffer rewritten too early;
//   4. the upload path's staging slots under the same deferred streams.
// Every count comes from the backend's own counters (kernels/cuda/stream.h, cuda::work_counts) and
// every value is a small number or a bit-for-bit comparison, so the output is the same bytes on
// every run. docs/learn/build.py pastes it into the page; ctest checks the page still matches.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "backends/cuda/backend.h"
#include "backends/cuda/upload.h"  // kUploadSlots
#include "engine/graph.h"
#include "engine/ops/loss.h"
#include "engine/optim/adam.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "kernels/common/error.h"
#include "kernels/cuda/compat.h"  // the emulator's cuda* runtime under g++
#include "kernels/cuda/stream.h"
#include "models/resnet.h"
#include "tests/emu/tiny_models.h"

using namespace nimbus;

namespace {

void cuda_ok(cudaError_t e, const char* what) { NIMBUS_CHECK(e == cudaSuccess, what, ": ", cudaGetErrorString(e)); }

// The emulator tests' ResNet-50-shaped network (tests/emu/tiny_models.h): one bottleneck per stage,
// width 4, small enough for the emulator.
models::ResNetConfig small_resnet() { return test::tiny_resnet(); }

cuda::WorkCounts since(const cuda::WorkCounts& a) {
  const cuda::WorkCounts b = cuda::work_counts();
  return {b.launches - a.launches, b.host_waits - a.host_waits, b.copies - a.copies, b.graph_launches - a.graph_launches};
}

// Everything a checkpoint would hold: weights, batch-norm statistics, the optimiser's state.
std::vector<std::vector<float>> state(Module& net, const Optimizer& opt) {
  std::vector<std::vector<float>> w;
  for (const auto& [name, t] : net.named_parameters()) w.push_back(t.to_vector());
  for (const auto& [name, t] : net.named_buffers()) w.push_back(t.to_vector());
  for (const auto& [name, t] : opt.state_dict().tensors) w.push_back(t.to_vector());
  return w;
}

// The text of the Error that `f` throws.
std::string refusal(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(not refused)";
}

// ---- 1. eager steps against replays of a captured step -----------------------------------------
void eager_and_graph() {
  Rng data(7);
  std::vector<Tensor> xs, ys;
  for (int k = 0; k < 5; ++k) {
    xs.push_back(Tensor::randn({2, 13, 16, 16}, data).to(Device::CUDA));
    ys.push_back(Tensor::from_vector({2}, {float(k % 10), float((3 * k + 1) % 10)}).to(Device::CUDA));
  }
  auto lr_at = [](int k) { return k < 3 ? 1e-3 : 1e-4; };  // divided by 10 before the fourth step
  // Eager: every step launches its kernels one by one.
  Rng ra(1);
  models::ResNet a(small_resnet(), ra);
  a.to(Device::CUDA);
  Adam opt_a(a.named_parameters(), AdamOptions{1e-3});
  cuda::WorkCounts eager{};
  for (int k = 0; k < 5; ++k) {
    const cuda::WorkCounts before = cuda::work_counts();
    opt_a.set_lr(lr_at(k));
    opt_a.zero_grad();
    cross_entropy(a.forward(xs[size_t(k)]), ys[size_t(k)]).backward();
    opt_a.step();
    if (k == 1) eager = since(before);
  }
  // Captured: one eager warm-up step (it creates Adam's state), then the step recorded once with its
  // inputs in two fixed tensors, and replayed with each batch copied into them.
  Rng rb(1);
  models::ResNet b(small_resnet(), rb);
  b.to(Device::CUDA);
  Adam opt_b(b.named_parameters(), AdamOptions{1e-3});
  Tensor x = xs[0].clone(), y = ys[0].clone(), loss;
  auto step = [&] {
    opt_b.zero_grad();
    loss = cross_entropy(b.forward(x), y);
    loss.backward();
    opt_b.step();
  };
  step();
  DeviceGraph graph = DeviceGraph::capture(Device::CUDA, step);
  cuda::WorkCounts replay{};
  for (int k = 1; k < 5; ++k) {
    const cuda::WorkCounts before = cuda::work_counts();
    opt_b.set_lr(lr_at(k));  // written into device memory, which the graph reads
    x.copy_(xs[size_t(k)]);
    y.copy_(ys[size_t(k)]);
    graph.replay();
    if (k == 1) replay = since(before);
  }
  const bool finite = std::isfinite(loss.item());
  const auto wa = state(a, opt_a), wb = state(b, opt_b);
  size_t differ = 0;
  for (size_t i = 0; i < wa.size(); ++i) differ += wa[i] != wb[i];
  const models::ResNetConfig cfg = small_resnet();
  const Shape in = xs[0].shape();
  std::printf("1. One Adam step of a small ResNet (%lld bands, one bottleneck per stage, %lld channels in the first "
              "stage), %lld tiles of %lld x %lld:\n",
              (long long)cfg.in_channels, (long long)cfg.width, (long long)in[0], (long long)in[2], (long long)in[3]);
  std::printf("  eager:          %llu kernel launches, %llu host waits, %llu copies\n",
              (unsigned long long)eager.launches, (unsigned long long)eager.host_waits,
              (unsigned long long)eager.copies);
  std::printf("  graph replay:   %llu kernel launches, %llu graph launch, %llu host waits, %llu copies (the inputs, "
              "device to device)\n",
              (unsigned long long)replay.launches, (unsigned long long)replay.graph_launches,
              (unsigned long long)replay.host_waits, (unsigned long long)replay.copies);
  std::printf("  after 5 steps each way (the rate divided by 10 before the fourth): %zu of %zu tensors differ\n"
              "  (weights, batch-norm statistics and Adam's moments)\n",
              differ, wa.size());
  std::printf("  the last replay's loss, in the tensor the capture made: %s\n", finite ? "finite" : "not finite");
}

// ---- 2. what a capture refuses -------------------------------------------------------------------
void refusals() {
  Rng rng(3);
  models::ResNet net(small_resnet(), rng);
  net.to(Device::CUDA);
  const Tensor x = Tensor::randn({2, 13, 16, 16}, rng).to(Device::CUDA);
  const Tensor y = Tensor::from_vector({2}, {1, 2}).to(Device::CUDA);
  Adam adam(net.named_parameters(), AdamOptions{1e-3});
  std::printf("2. Inside a capture (each refusal drops the capture; eager work goes on):\n");
  std::printf("  adam.step() before any eager step:\n    %s\n", refusal([&] {
                DeviceGraph::capture(Device::CUDA, [&] {
                  cross_entropy(net.forward(x), y).backward();
                  adam.step();
                });
              }).c_str());
  adam.zero_grad();  // the refused capture left gradients that no kernel ever wrote
  cross_entropy(net.forward(x), y).backward();
  adam.step();
  std::printf("  adam.set_lr(5e-4):\n    %s\n",
              refusal([&] { DeviceGraph::capture(Device::CUDA, [&] { adam.set_lr(5e-4); }); }).c_str());
  std::printf("  an upload from host memory:\n    %s\n", refusal([&] {
                DeviceGraph::capture(Device::CUDA, [&] { (void)Tensor::from_vector({3}, {1, 2, 3}, Device::CUDA); });
              }).c_str());
  std::printf("  loss.item(), a wait for the device:\n    %s\n", refusal([&] {
                DeviceGraph::capture(Device::CUDA, [&] { (void)cross_entropy(net.forward(x), y).item(); });
              }).c_str());
  std::printf("  still capturing afterwards: %s\n", cuda::capturing() ? "yes" : "no");
}

// ---- 3. two streams and an event, run late ---------------------------------------------------------
__global__ void set_kernel(float* p, float v) { p[threadIdx.x] = v; }

void streams_run_late() {
  emu::set_deferred(true);
  cudaStream_t a = nullptr, b = nullptr;
  cuda_ok(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), "stream");
  cuda_ok(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), "stream");
  float *d = nullptr, *e = nullptr, *host = nullptr, *out = nullptr;
  cuda_ok(cudaMalloc(&d, 16), "cudaMalloc");  // new emulated memory is NaN bytes
  cuda_ok(cudaMalloc(&e, 16), "cudaMalloc");
  cuda_ok(cudaMallocHost(&host, 16), "cudaMallocHost");
  cuda_ok(cudaMallocHost(&out, 16), "cudaMallocHost");
  cudaEvent_t written = nullptr;
  cuda_ok(cudaEventCreateWithFlags(&written, cudaEventDisableTiming), "event");
  auto read = [&](const float* src, cudaStream_t s) {  // src[0], through page-locked memory on s
    cuda_ok(cudaMemcpyAsync(out, src, 16, cudaMemcpyDeviceToHost, s), "copy");
    cuda_ok(cudaStreamSynchronize(s), "synchronize");
    return out[0];
  };
  std::printf("3. Two streams on the emulator's deferred streams (work runs when something waits for it):\n");
  launch(set_kernel, 1, 4, 0, a, d, 1.0f);  // a: d = 1
  cuda_ok(cudaEventRecord(written, a), "record");
  std::printf("  a queues d = 1 and records an event; the event is %s\n",
              cudaEventQuery(written) == cudaErrorNotReady ? "not ready" : "ready");
  cuda_ok(cudaMemcpyAsync(e, d, 16, cudaMemcpyDeviceToDevice, b), "copy");
  const float stale = read(e, b);
  std::printf("  b copies d without waiting for the event: b reads %s\n",
              std::isnan(stale) ? "NaN (d as cudaMalloc left it)" : std::to_string(stale).c_str());
  cuda_ok(cudaStreamWaitEvent(b, written, 0), "wait");
  cuda_ok(cudaMemcpyAsync(e, d, 16, cudaMemcpyDeviceToDevice, b), "copy");
  std::printf("  b waits for the event first (cudaStreamWaitEvent): b reads %g\n", double(read(e, b)));
  host[0] = 5.0f;
  cuda_ok(cudaMemcpyAsync(d, host, 16, cudaMemcpyHostToDevice, a), "copy");
  host[0] = 7.0f;
  std::printf("  a page-locked buffer holding 5 is queued for copying, then set to 7 by the host: the device gets %g\n",
              double(read(d, a)));
  cudaEventDestroy(written);
  cudaFreeHost(host);
  cudaFreeHost(out);
  cudaFree(d);
  cudaFree(e);
  cudaStreamDestroy(a);
  cudaStreamDestroy(b);
  emu::set_deferred(false);
}

// ---- 4. the upload path, run late ----------------------------------------------------------------
void uploads_run_late() {
  emu::set_deferred(true);
  const int count = 3 * cuda::kUploadSlots;
  std::vector<Tensor> up;
  const cuda::WorkCounts before = cuda::work_counts();
  for (int k = 0; k < count; ++k) {
    std::vector<float> v(1000, float(k));
    up.push_back(Tensor::from_vector({1000}, v, Device::CUDA));
    v.assign(v.size(), -1.0f);  // the caller's buffer is free again at once
  }
  const cuda::WorkCounts queued = since(before);
  size_t intact = 0;
  for (int k = 0; k < count; ++k) intact += up[size_t(k)].to_vector() == std::vector<float>(1000, float(k));
  std::printf("4. %d uploads of 1000 floats through %d staging slots (backends/cuda/upload.cu), deferred streams:\n",
              count, cuda::kUploadSlots);
  std::printf("  %llu copies queued, %llu host waits for a slot whose last copy had not run, %zu of %d tensors intact\n",
              (unsigned long long)queued.copies, (unsigned long long)queued.host_waits, intact, count);
  emu::set_deferred(false);
}

}  // namespace

int main() {
  try {
    // The backend's defaults, whatever the environment says (these switches change the counts).
    for (const char* v : {"NIMBUS_CUDA_MATH", "NIMBUS_CUDA_CONV", "NIMBUS_CUDA_BN_FOLD", "NIMBUS_BN_PROLOGUE",
                          "NIMBUS_CUDA_REFERENCE"})
      ::unsetenv(v);
    NIMBUS_CHECK(cuda::register_cuda_backend(), "the emulated CUDA backend did not register");
    cuda::set_sync_check(false);  // NIMBUS_CUDA_SYNC_CHECK is read at start-up
    emu::set_deferred(false);  // this program sets the mode itself (EMU_DEFER would change the counts)
    eager_and_graph();
    refusals();
    streams_run_late();
    uploads_run_late();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "learn_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
