/* test_cuda_graphs.cpp: stream capture and graph replay, from the emulator's runtime up to a whole
 * training step (engine/graph.h), and the allocator's pools that make replays safe. Also built for a
 * GPU (test_cuda_real), where the runtime cases check the emulator's model against CUDA itself.
 *
 * The emulator records what a capturing stream is given and runs it at each cudaGraphLaunch; it
 * refuses, as CUDA does, what a capture cannot hold (an allocation, a free, a wait, an event query, a
 * synchronous or pageable copy), also when another thread makes the call, as the capture modes say. The training-step tests are the sync-free step's contract: a captured step replayed
 * five times leaves the weights bit for bit where five eager steps leave them (SGD, Adam and Nadam,
 * with the learning rate divided at a milestone in between), with one graph launch and no host wait
 * per step (a small conv net: the emulator is slow; the ResNet's step counts are pinned in
 * test_cuda_work_counts.cpp).
 */
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "backends/cuda/backend.h"
#include "engine/allocator.h"
#include "engine/graph.h"
#include "engine/nn/layers.h"
#include "engine/ops/loss.h"
#include "engine/optim/adam.h"
#include "engine/optim/clip_grad.h"
#include "engine/optim/lr_schedule.h"
#include "engine/optim/nadam.h"
#include "engine/optim/sgd.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/conv2d_wgmma.h"  // wgmma_available
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/stream.h"
#include "models/resnet.h"
#include "tests/emu/emu_util.h"
#include "tests/emu/tiny_models.h"

using namespace nimbus;
using nimbus::test::tiny_resnet;

namespace {

cudaStream_t compute() { return static_cast<cudaStream_t>(cuda::compute_stream()); }

// ---- the emulator's runtime ----------------------------------------------------------------------

TEST_CASE("emu graphs: a capture records launches and copies without running them, and each replay runs them in order") {
  REQUIRE(cuda::register_cuda_backend());
  test::DeviceBuffer<float> a(64), b(64);
  cuda::fill(a.p, 1.0f, 64);
  cuda::fill(b.p, 0.0f, 64);
  float* pinned = nullptr;
  REQUIRE(cudaMallocHost(&pinned, 64 * sizeof(float)) == cudaSuccess);
  for (int i = 0; i < 64; ++i) pinned[i] = float(i);
#ifndef NIMBUS_CUDA_RUNTIME
  REQUIRE(emu::is_pinned_range(pinned, 64 * sizeof(float)));
  CHECK_FALSE(emu::is_pinned_range(pinned, 65 * sizeof(float)));
#endif

  REQUIRE(cudaStreamBeginCapture(compute(), cudaStreamCaptureModeGlobal) == cudaSuccess);
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  REQUIRE(cudaStreamIsCapturing(compute(), &st) == cudaSuccess);
  CHECK(st == cudaStreamCaptureStatusActive);
  // b += a (a kernel), then a <- pinned (a copy from page-locked memory, read at replay time).
  cuda::add_inplace(b.p, a.p, 64);
  REQUIRE(cudaMemcpyAsync(a.p, pinned, 64 * sizeof(float), cudaMemcpyHostToDevice, compute()) == cudaSuccess);
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(compute(), &graph) == cudaSuccess);
  REQUIRE(graph != nullptr);
#ifndef NIMBUS_CUDA_RUNTIME
  CHECK(emu::graph_stats(graph).kernels == 1);
  CHECK(emu::graph_stats(graph).copies == 1);
#endif
  CHECK(b.download() == std::vector<float>(64, 0.0f));  // nothing ran
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  REQUIRE(cudaGraphDestroy(graph) == cudaSuccess);

#ifndef NIMBUS_CUDA_RUNTIME
  const int64_t before = emu::stream_stats(compute()).graph_launches;
#endif
  REQUIRE(cudaGraphLaunch(exec, compute()) == cudaSuccess);  // b = 1, a = 0..63
  // The host may rewrite page-locked memory once the copy that reads it has run (an event or, here,
  // a wait); the next replay then copies the new values.
  REQUIRE(cudaStreamSynchronize(compute()) == cudaSuccess);
  for (int i = 0; i < 64; ++i) pinned[i] = 2.0f * float(i);
  REQUIRE(cudaGraphLaunch(exec, compute()) == cudaSuccess);  // b = 1 + i, a = 2i
#ifndef NIMBUS_CUDA_RUNTIME
  CHECK(emu::stream_stats(compute()).graph_launches - before == 2);
#endif
  const std::vector<float> got_a = a.download(), got_b = b.download();
  for (int i = 0; i < 64; ++i) {
    CHECK(got_b[size_t(i)] == 1.0f + float(i));
    CHECK(got_a[size_t(i)] == 2.0f * float(i));
  }
  REQUIRE(cudaGraphExecDestroy(exec) == cudaSuccess);
  REQUIRE(cudaFreeHost(pinned) == cudaSuccess);
}

// Each call that a capture cannot hold fails with cudaErrorStreamCaptureUnsupported and invalidates
// the capture: its end reports cudaErrorStreamCaptureInvalidated and gives no graph.
TEST_CASE("emu graphs: allocations, frees, waits, synchronous and pageable copies during capture invalidate it") {
  REQUIRE(cuda::register_cuda_backend());
  test::DeviceBuffer<float> d(16);
  std::vector<float> pageable(16, 1.0f);
  void* p = nullptr;
  struct Refused {
    const char* what;
    std::function<cudaError_t()> call;
  };
  const std::vector<Refused> refused = {
      {"cudaMalloc", [&] { return cudaMalloc(&p, 256); }},
      {"cudaFree", [&] { return cudaFree(d.p); }},
      {"cudaMallocHost", [&] { return cudaMallocHost(&p, 256); }},
      {"cudaDeviceSynchronize", [] { return cudaDeviceSynchronize(); }},
      {"cudaStreamSynchronize", [] { return cudaStreamSynchronize(compute()); }},
      {"cudaMemcpy", [&] { return cudaMemcpy(d.p, pageable.data(), 64, cudaMemcpyHostToDevice); }},
      {"cudaMemcpyAsync", [&] { return cudaMemcpyAsync(d.p, pageable.data(), 64, cudaMemcpyHostToDevice, compute()); }},
      {"cudaMemcpyAsync", [&] { return cudaMemcpyAsync(pageable.data(), d.p, 64, cudaMemcpyDeviceToHost, compute()); }},
  };
  for (const Refused& r : refused) {
    CAPTURE(r.what);
    REQUIRE(cudaStreamBeginCapture(compute(), cudaStreamCaptureModeGlobal) == cudaSuccess);
    CHECK(r.call() == cudaErrorStreamCaptureUnsupported);
#ifndef NIMBUS_CUDA_RUNTIME
    CHECK(emu::last_error_detail().find(r.what) != std::string::npos);
#endif
    CHECK(cudaGetLastError() == cudaErrorStreamCaptureUnsupported);
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    REQUIRE(cudaStreamIsCapturing(compute(), &st) == cudaSuccess);
    CHECK(st == cudaStreamCaptureStatusInvalidated);
    cudaGraph_t g = reinterpret_cast<cudaGraph_t>(&st);  // overwritten with nullptr
    CHECK(cudaStreamEndCapture(compute(), &g) == cudaErrorStreamCaptureInvalidated);
    CHECK(g == nullptr);
    (void)cudaGetLastError();
  }
  CHECK(p == nullptr);  // nothing was allocated
  // A device-to-device copy is fine; a thread that swaps itself to relaxed mode may allocate (the
  // CUDA backend's allocator does, for a capture's private pool).
  test::DeviceBuffer<float> e(16);
  cudaGraph_t g = nullptr;
  REQUIRE(cudaStreamBeginCapture(compute(), cudaStreamCaptureModeGlobal) == cudaSuccess);
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  REQUIRE(cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess);
  CHECK(mode == cudaStreamCaptureModeGlobal);
  CHECK(cudaMalloc(&p, 256) == cudaSuccess);
  REQUIRE(cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess);
  CHECK(cudaMemcpyAsync(d.p, e.p, 64, cudaMemcpyDeviceToDevice, compute()) == cudaSuccess);
  REQUIRE(cudaStreamEndCapture(compute(), &g) == cudaSuccess);
#ifndef NIMBUS_CUDA_RUNTIME
  CHECK(emu::graph_stats(g).copies == 1);
#endif
  cudaGraphDestroy(g);
  cudaFree(p);
}

// The capture modes across threads (cudaThreadExchangeStreamCaptureMode). While this thread captures in
// global mode, another thread in global mode (the default) may not allocate page-locked memory nor
// query an event: the call fails and the capture is invalidated (a loader thread's upload would
// invalidate the training step's capture so). In thread-local or relaxed mode it may. A capture begun
// in thread-local or relaxed mode does not bind other threads.
TEST_CASE("emu graphs: another thread's unsafe call invalidates a global capture unless a mode allows it") {
  REQUIRE(cuda::register_cuda_backend());
  test::DeviceBuffer<float> d(16);
  cudaEvent_t before = nullptr;
  REQUIRE(cudaEventCreateWithFlags(&before, cudaEventDisableTiming) == cudaSuccess);
  REQUIRE(cudaEventRecord(before, compute()) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(compute()) == cudaSuccess);  // the event has completed
  const std::function<cudaError_t()> malloc_host = [] {
    void* host = nullptr;
    const cudaError_t e = cudaMallocHost(&host, 256);
    if (e == cudaSuccess) cudaFreeHost(host);
    return e;
  };
  const std::function<cudaError_t()> query = [&] { return cudaEventQuery(before); };
  struct Case {
    const char* what;
    cudaStreamCaptureMode capture, other;  // the capture's mode, the other thread's
    bool refused;
    const std::function<cudaError_t()>& call;
  };
  const Case cases[] = {
      {"cudaMallocHost", cudaStreamCaptureModeGlobal, cudaStreamCaptureModeGlobal, true, malloc_host},
      {"cudaEventQuery", cudaStreamCaptureModeGlobal, cudaStreamCaptureModeGlobal, true, query},
      {"cudaMallocHost", cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal, false, malloc_host},
      {"cudaEventQuery", cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal, false, query},
      {"cudaMallocHost", cudaStreamCaptureModeGlobal, cudaStreamCaptureModeRelaxed, false, malloc_host},
      {"cudaMallocHost", cudaStreamCaptureModeThreadLocal, cudaStreamCaptureModeGlobal, false, malloc_host},
      {"cudaMallocHost", cudaStreamCaptureModeRelaxed, cudaStreamCaptureModeGlobal, false, malloc_host},
  };
  for (const Case& c : cases) {
    const std::string call = c.what;
    const int capture_mode = int(c.capture), other_thread_mode = int(c.other);  // 0 global, 1 thread-local, 2 relaxed
    CAPTURE(call);
    CAPTURE(capture_mode);
    CAPTURE(other_thread_mode);
    REQUIRE(cudaStreamBeginCapture(compute(), c.capture) == cudaSuccess);
    REQUIRE(cudaMemsetAsync(d.p, 0, 64, compute()) == cudaSuccess);
    cudaError_t got = cudaErrorInvalidValue;  // neither answer, should the thread not get to call
    std::thread other([&] {
      cudaStreamCaptureMode mode = c.other;
      if (cudaThreadExchangeStreamCaptureMode(&mode) != cudaSuccess) return;
      got = c.call();
      (void)cudaGetLastError();
    });
    other.join();
    CHECK(got == (c.refused ? cudaErrorStreamCaptureUnsupported : cudaSuccess));
    cudaGraph_t g = nullptr;
    CHECK(cudaStreamEndCapture(compute(), &g) == (c.refused ? cudaErrorStreamCaptureInvalidated : cudaSuccess));
    CHECK((g == nullptr) == c.refused);
    if (g) cudaGraphDestroy(g);
    (void)cudaGetLastError();
  }
  cudaEventDestroy(before);
}

// ---- the allocator's pools -----------------------------------------------------------------------

CachingAllocator::Pool test_pool = 0;
CachingAllocator::Pool test_pool_fn() { return test_pool; }
std::set<void*>* raw_blocks = nullptr;
void* counted_alloc(size_t bytes) {
  void* p = std::malloc(bytes);
  raw_blocks->insert(p);
  return p;
}
void counted_free(void* p) {
  raw_blocks->erase(p);
  std::free(p);
}

// Two streams, A and B (pools 2 and 4), allocating and freeing at random: a block handed out on one
// stream was never freed on the other, so work still queued there cannot be using it.
TEST_CASE("allocator pools: a block freed on one stream is never handed out on another") {
  std::set<void*> blocks;
  raw_blocks = &blocks;
  CachingAllocator alloc(counted_alloc, counted_free);
  alloc.set_pool_fn(test_pool_fn);
  Rng rng(5);
  std::vector<std::pair<void*, CachingAllocator::Pool>> live;
  std::map<void*, CachingAllocator::Pool> freed_on;  // last pool each block was freed under
  int reused = 0;
  for (int i = 0; i < 4000; ++i) {
    test_pool = rng.uniform() < 0.5 ? 2 : 4;
    if (live.empty() || rng.uniform() < 0.55) {
      const size_t bytes = 512 * (1 + size_t(rng.uniform() * 4));
      void* p = alloc.allocate(bytes);
      if (freed_on.count(p)) {
        CHECK(freed_on[p] == test_pool);
        ++reused;
      }
      live.emplace_back(p, test_pool);
    } else {
      const size_t k = size_t(rng.uniform() * double(live.size())) % live.size();
      // Freed while either stream is current: the block returns to the pool it came from.
      freed_on[live[k].first] = live[k].second;
      alloc.deallocate(live[k].first);
      live.erase(live.begin() + long(k));
    }
  }
  CHECK(reused > 100);  // the cache really served both streams
  test_pool = 0;
  for (auto& [p, pool] : live) alloc.deallocate(p);
  alloc.empty_cache();
  CHECK(blocks.empty());
}

TEST_CASE("allocator pools: a private pool takes what is freed during capture and gives it back on release") {
  std::set<void*> blocks;
  raw_blocks = &blocks;
  CachingAllocator alloc(counted_alloc, counted_free);
  alloc.set_pool_fn(test_pool_fn);
  test_pool = 2;  // the stream
  void* before = alloc.allocate(1000);  // allocated on the stream, freed during capture
  void* kept = alloc.allocate(1000);
  const CachingAllocator::Pool priv = alloc.new_private_pool();
  CHECK(CachingAllocator::is_private(priv));
  test_pool = priv;  // capturing
  alloc.deallocate(before);
  CHECK(alloc.cached_blocks(priv) == 1);
  CHECK(alloc.cached_blocks(2) == 0);
  void* inside = alloc.allocate(1000);
  CHECK(inside == before);  // the capture reuses it (the graph runs in capture order)
  void* graph_out = alloc.allocate(1000);
  alloc.deallocate(inside);
  test_pool = 2;  // capture over: eager work between replays
  void* eager = alloc.allocate(1000);
  CHECK(eager != inside);  // the graph's memory is not handed to eager work
  CHECK(eager != graph_out);
  alloc.deallocate(graph_out);  // a capture's output freed later returns to the private pool
  CHECK(alloc.cached_blocks(priv) == 2);
  alloc.empty_cache();  // never frees a live graph's memory
  CHECK(alloc.cached_blocks(priv) == 2);
  alloc.release_private_pool(priv, 2);  // the graph is destroyed
  CHECK(alloc.cached_blocks(priv) == 0);
  CHECK(alloc.cached_blocks(2) == 2);
  CHECK_THROWS_WITH_AS(alloc.release_private_pool(priv, 2), doctest::Contains("released twice"), Error);
  for (void* p : {kept, eager}) alloc.deallocate(p);
  alloc.empty_cache();
  CHECK(blocks.empty());
  test_pool = 0;
}

// Two live graphs: the second capture drops the first graph's outputs (zero_grad, a new loss). Those
// blocks stay the first graph's, which writes them at every replay; the second graph gets others.
TEST_CASE("allocator pools: a capture never takes a block of another live graph's pool") {
  std::set<void*> blocks;
  raw_blocks = &blocks;
  CachingAllocator alloc(counted_alloc, counted_free);
  alloc.set_pool_fn(test_pool_fn);
  const CachingAllocator::Pool first = alloc.new_private_pool(), second = alloc.new_private_pool();
  test_pool = first;  // capturing the first graph
  void* first_out = alloc.allocate(1000);
  test_pool = second;  // capturing the second: it frees the first graph's output
  alloc.deallocate(first_out);
  CHECK(alloc.cached_blocks(first) == 1);
  CHECK(alloc.cached_blocks(second) == 0);
  void* second_out = alloc.allocate(1000);
  CHECK(second_out != first_out);
  test_pool = 2;
  alloc.release_private_pool(first, 2);  // the first graph goes: its block is the stream's now
  CHECK(alloc.cached_blocks(2) == 1);
  alloc.deallocate(second_out);  // back to the live second graph
  CHECK(alloc.cached_blocks(second) == 1);
  alloc.release_private_pool(second, 2);
  alloc.empty_cache();
  CHECK(blocks.empty());
  test_pool = 0;
}

// The CUDA backend's allocator keys its pools by the current stream.
TEST_CASE("cuda allocator: a block freed on the compute stream is reused there, not on another stream") {
  REQUIRE(cuda::register_cuda_backend());
  const cuda::Stream other = cuda::create_stream();
  const void* freed = nullptr;
  {
    const Tensor t = Tensor::empty({4096}, Device::CUDA);
    freed = t.data();
  }
  const void* on_other = nullptr;
  {
    cuda::StreamGuard guard(other);
    const Tensor u = Tensor::empty({4096}, Device::CUDA);
    on_other = u.data();
    CHECK(on_other != freed);  // the compute stream's cached block is not handed to this stream
  }
  const Tensor v = Tensor::empty({4096}, Device::CUDA);
  CHECK(v.data() == freed);  // back on the compute stream: its own block again
  {
    cuda::StreamGuard guard(other);
    const Tensor w = Tensor::empty({4096}, Device::CUDA);
    CHECK(w.data() == on_other);  // and the other stream gets back its own
  }
  cuda::destroy_stream(other);
}

#ifndef NIMBUS_CUDA_RUNTIME
// After a kernel faults on a GPU every later call returns its error: the allocator must say that, not
// "out of memory" (the emulator's models of a fault and of a full device, kernels/emu/runtime.h).
TEST_CASE("cuda allocator: a faulted device is not called out of memory, a full one is") {
  REQUIRE(cuda::register_cuda_backend());
  CachingAllocator& alloc = *device_runtime(Device::CUDA).allocator;
  alloc.empty_cache();
  emu::set_sticky_error(cudaErrorIllegalAddress);
  std::string msg;
  try {
    (void)Tensor::empty({777777}, Device::CUDA);  // nothing cached: the allocation goes to cudaMalloc
  } catch (const Error& e) {
    msg = e.what();
  }
  emu::set_sticky_error(cudaSuccess);
  CHECK_MESSAGE(msg.find("an illegal memory access was encountered") != std::string::npos, msg);
  CHECK(msg.find("not a shortage of memory") != std::string::npos);
  CHECK(msg.find("out of memory") == std::string::npos);
  { const Tensor t = Tensor::empty({4096}, Device::CUDA); }  // one cached block
  emu::set_sticky_error(cudaErrorIllegalAddress);
  CHECK_THROWS_WITH_AS(alloc.empty_cache(), doctest::Contains("waiting for the device before freeing memory: an "
                                                              "illegal memory access"), Error);
  emu::set_sticky_error(cudaSuccess);
  alloc.empty_cache();
  // A full device: out of memory, once the cache is dropped and the allocation retried.
  emu::set_device_memory_limit(1);
  CHECK_THROWS_WITH_AS((void)Tensor::empty({777777}, Device::CUDA), doctest::Contains("allocator: out of memory"),
                       Error);
  emu::set_device_memory_limit(0);
  CHECK(Tensor::empty({777777}, Device::CUDA).numel() == 777777);
}
#endif

// ---- a whole training step -----------------------------------------------------------------------

// A small conv net with the ops of a ResNet step (convolutions with and without a fused ReLU, batch
// norm, pooling, linear, cross-entropy): the emulator runs ~25 launches a step instead of ~150.
class SmallNet : public Module {
 public:
  explicit SmallNet(Rng& rng) {
    c1 = register_module("c1", std::make_shared<Conv2d>(13, 8, 3, 1, 1, false, rng));
    bn = register_module("bn", std::make_shared<BatchNorm2d>(8));
    c2 = register_module("c2", std::make_shared<Conv2d>(8, 8, 3, 2, 1, true, rng));
    pool = register_module("pool", std::make_shared<GlobalAvgPool>());
    flat = register_module("flat", std::make_shared<Flatten>());
    fc = register_module("fc", std::make_shared<Linear>(8, 10, true, rng));
  }
  Tensor forward(const Tensor& x) {
    return fc->forward(flat->forward(pool->forward(c2->forward_relu(bn->forward_relu(c1->forward(x))))));
  }
  std::shared_ptr<Conv2d> c1, c2;
  std::shared_ptr<BatchNorm2d> bn;
  std::shared_ptr<GlobalAvgPool> pool;
  std::shared_ptr<Flatten> flat;
  std::shared_ptr<Linear> fc;
};

std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, const NamedTensors& params) {
  if (kind == "sgd") return std::make_unique<SGD>(params, SGDOptions{0.05, 0.9, 0.0, 1e-4, true});
  if (kind == "adam") return std::make_unique<Adam>(params, AdamOptions{1e-3, 0.9, 0.999, 1e-8, 1e-4});
  if (kind == "adamw") return std::make_unique<Adam>(params, AdamOptions{1e-3, 0.9, 0.999, 1e-8, 1e-2, true});
  return std::make_unique<Nadam>(params, NadamOptions{2e-3});
}

std::vector<std::vector<float>> weights(Module& net) {
  std::vector<std::vector<float>> w;
  for (const auto& [name, t] : net.named_parameters()) w.push_back(t.to_vector());
  for (const auto& [name, t] : net.named_buffers()) w.push_back(t.to_vector());
  return w;
}

// Five eager steps against a warm-up step, one capture and five replays of the same step, for the
// optimiser `kind`: the weights and the optimiser's state bit for bit. Batches 0..5 on the device: 0
// warms up, 1..5 are the compared steps. The rate is divided by 10 from step 3 (a milestone between
// replays). With clip > 0, every step clips the gradients to that norm (clip_grad_norm, between
// backward and the step) and the norms the replays return equal the eager steps'.
void replays_equal_eager(const std::string& kind, double clip = 0) {
  REQUIRE(cuda::register_cuda_backend());
  CAPTURE(kind);
  CAPTURE(clip);
  std::vector<float> eager_norms;
  Rng data_rng(11);
  std::vector<Tensor> xs, ys;
  for (int k = 0; k < 6; ++k) {
    xs.push_back(Tensor::randn({2, 13, 16, 16}, data_rng).to(Device::CUDA));
    ys.push_back(Tensor::from_vector({2}, {float(k % 10), float((3 * k + 1) % 10)}).to(Device::CUDA));
  }
  const StepLr schedule(1.0, {3}, 10);
  // Eager.
  Rng rng_a(1);
  SmallNet a(rng_a);
  a.to(Device::CUDA);
  a.train();
  auto opt_a = make_optimizer(kind, a.named_parameters());
  const double base = opt_a->lr();
  for (int k = 0; k < 6; ++k) {
    opt_a->set_lr(base * schedule.lr_at(k));
    opt_a->zero_grad();
    cross_entropy(a.forward(xs[size_t(k)]), ys[size_t(k)]).backward();
    if (clip > 0) eager_norms.push_back(clip_grad_norm(a.named_parameters(), clip).item());
    opt_a->step();
  }
  for (float n : eager_norms) CHECK(n > clip);  // every step clipped: the comparison sees clipping
  // Captured: the same warm-up step eagerly, then the step captured once with its inputs in two
  // fixed tensors, and replayed with each batch copied into them.
  Rng rng_b(1);
  SmallNet b(rng_b);
  b.to(Device::CUDA);
  b.train();
  auto opt_b = make_optimizer(kind, b.named_parameters());
  Tensor x = xs[0].clone(), y = ys[0].clone(), loss, norm;
  auto step = [&] {
    opt_b->zero_grad();
    loss = cross_entropy(b.forward(x), y);
    loss.backward();
    if (clip > 0) norm = clip_grad_norm(b.named_parameters(), clip);
    opt_b->step();
  };
  opt_b->set_lr(base * schedule.lr_at(0));
  step();
  // The capture gives the ordinary cache back before it allocates its own pool: else what the warm-up
  // step left cached (its activations) and the capture's own would both be reserved. So the capture
  // adds to the reserved memory less than half of what was cached (measured: 2% with, 25% without).
  CachingAllocator& alloc = *device_runtime(Device::CUDA).allocator;
  alloc.reset_peaks();
  const AllocatorStats warm = alloc.stats();
  DeviceGraph graph = DeviceGraph::capture(Device::CUDA, step);
  CHECK_FALSE(graph.empty());
  INFO("reserved after the warm-up step ", warm.peak_reserved, " bytes (", warm.bytes_cached, " cached), peak in the capture ",
          alloc.stats().peak_reserved);
  CHECK(alloc.stats().peak_reserved < warm.peak_reserved + warm.bytes_cached / 2);
  for (int k = 1; k < 6; ++k) {
    CAPTURE(k);
    const cuda::WorkCounts before = cuda::work_counts();
    opt_b->set_lr(base * schedule.lr_at(k));  // a one-thread kernel when the rate changes
    x.copy_(xs[size_t(k)]);
    y.copy_(ys[size_t(k)]);
    graph.replay();
    const cuda::WorkCounts after = cuda::work_counts();
    CHECK(after.graph_launches - before.graph_launches == 1);
    CHECK(after.launches - before.launches == (k == 3 ? 1u : 0u));
    CHECK(after.host_waits == before.host_waits);
    CHECK(after.copies - before.copies == 2);  // the two inputs, device to device
    if (clip > 0) CHECK(norm.item() == eager_norms[size_t(k)]);
  }
  const auto wa = weights(a), wb = weights(b);
  REQUIRE(wa.size() == wb.size());
  size_t differing = 0;
  for (size_t i = 0; i < wa.size(); ++i) differing += wa[i] != wb[i];
  CHECK(differing == 0);
  // The optimisers agree too: counts and (Nadam) the schedule, as a checkpoint would save them.
  const OptimizerState sa = opt_a->state_dict(), sb = opt_b->state_dict();
  REQUIRE(sa.tensors.size() == sb.tensors.size());
  for (size_t i = 0; i < sa.tensors.size(); ++i) {
    CAPTURE(sa.tensors[i].first);
    CHECK(sa.tensors[i].first == sb.tensors[i].first);
    CHECK(sa.tensors[i].second.to_vector() == sb.tensors[i].second.to_vector());
  }
  CHECK(opt_b->steps() == 6);
  CHECK(std::isfinite(loss.item()));  // the last replay's loss, in the tensor the capture made
}

TEST_CASE("cuda graphs: five replays of a captured training step equal five eager steps, bit for bit") {
  for (const std::string kind : {"sgd", "adam", "adamw", "nadam"}) replays_equal_eager(kind);
}

TEST_CASE("cuda graphs: a captured step that clips its gradients (clip_grad_norm) replays as the eager steps") {
  for (const std::string kind : {"sgd", "adam"}) replays_equal_eager(kind, 0.05);
}

// The same with the convolutions on Hopper's kernels (conv2d_wgmma.cu, TF32: tensor maps made on the
// host and passed by value, their buffers in the workspace), as the H200's Auto choice runs them; the
// emulator's wgmma count shows the replays ran them.
// The trainers' --resume --device cuda: the model and the optimiser are loaded on the CPU, then the
// model moves to the device. The optimiser's slots must follow at the next step (on a GPU the fused
// update would otherwise be handed host addresses; the emulator's device memory is host memory, so
// the slots' device is checked, not only the values), and that step must be the uninterrupted run's.
TEST_CASE("cuda optimisers: state loaded on the CPU (a resume) moves to the device with the parameters, bit for bit") {
  REQUIRE(cuda::register_cuda_backend());
  for (const std::string kind : {"sgd", "adam", "nadam"}) {
    CAPTURE(kind);
    Rng data_rng(5);
    std::vector<Tensor> xs, ys;
    for (int k = 0; k < 3; ++k) {
      xs.push_back(Tensor::randn({2, 13, 16, 16}, data_rng).to(Device::CUDA));
      ys.push_back(Tensor::from_vector({2}, {float(k), float(k + 4)}).to(Device::CUDA));
    }
    Rng rng_a(1);
    SmallNet a(rng_a);
    a.to(Device::CUDA);
    a.train();
    auto opt_a = make_optimizer(kind, a.named_parameters());
    NamedTensors saved_weights;
    OptimizerState saved_state;
    for (int k = 0; k < 3; ++k) {
      if (k == 2) {  // the checkpoint, as the trainers write it: on the host
        for (const auto& [name, t] : a.state_dict()) saved_weights.emplace_back(name, t.to(Device::CPU));
        saved_state = opt_a->state_dict();
        for (auto& [name, t] : saved_state.tensors) t = t.to(Device::CPU);
      }
      opt_a->zero_grad();
      cross_entropy(a.forward(xs[size_t(k)]), ys[size_t(k)]).backward();
      opt_a->step();
    }
    // The resume: a fresh model and optimiser on the CPU, loaded, then the model moved.
    Rng rng_b(2);
    SmallNet b(rng_b);
    b.load_state_dict(saved_weights);
    b.train();
    auto opt_b = make_optimizer(kind, b.named_parameters());
    opt_b->load_state_dict(saved_state);
    b.to(Device::CUDA);
    opt_b->zero_grad();
    cross_entropy(b.forward(xs[2]), ys[2]).backward();
    opt_b->step();
    const OptimizerState sa = opt_a->state_dict(), sb = opt_b->state_dict();
    REQUIRE(sa.tensors.size() == sb.tensors.size());
    size_t slots = 0;
    for (size_t i = 0; i < sb.tensors.size(); ++i) {
      const auto& [name, t] = sb.tensors[i];
      CAPTURE(name);
      CHECK(sa.tensors[i].first == name);
      CHECK(sa.tensors[i].second.to_vector() == t.to_vector());
      if (t.ndim() > 0) {  // a slot (the counts are 0-d scalars made on the host)
        CHECK(t.device() == Device::CUDA);
        ++slots;
      }
    }
    CHECK(slots == a.named_parameters().size() * (kind == "sgd" ? 1 : 2));
    const auto wa = weights(a), wb = weights(b);
    REQUIRE(wa.size() == wb.size());
    size_t differing = 0;
    for (size_t i = 0; i < wa.size(); ++i) differing += wa[i] != wb[i];
    CHECK(differing == 0);
  }
}

TEST_CASE("cuda graphs: a captured step with the convolutions on wgmma replays as the eager steps, bit for bit") {
  REQUIRE(cuda::register_cuda_backend());
#ifdef NIMBUS_CUDA_RUNTIME
  if (!cuda::wgmma_available()) {
    MESSAGE("skipped: this device does not run sm_90a code");
    return;
  }
#else
  const int64_t before = emu::all_launch_stats().wgmma;
#endif
  const cuda::ConvKernelsScope hopper(cuda::ConvKernels::Wgmma);
  replays_equal_eager("adam");
#ifndef NIMBUS_CUDA_RUNTIME
  CHECK(emu::all_launch_stats().wgmma > before);
#endif
}

TEST_CASE("cuda graphs: a capture refuses a host wait, a first optimiser step, a new rate and a load, and leaves eager work intact") {
  REQUIRE(cuda::register_cuda_backend());
  Rng rng(3);
  models::ResNet net(tiny_resnet(), rng);
  net.to(Device::CUDA);
  const Tensor x = Tensor::randn({2, 13, 16, 16}, rng).to(Device::CUDA);
  const Tensor y = Tensor::from_vector({2}, {1, 2}).to(Device::CUDA);
  Adam adam(net.named_parameters(), AdamOptions{1e-3});
  // loss.item() waits for the device: refused, and the capture is dropped.
  CHECK_THROWS_WITH_AS(DeviceGraph::capture(Device::CUDA, [&] { (void)cross_entropy(net.forward(x), y).item(); }),
                       doctest::Contains("capturing"), Error);
  CHECK_FALSE(cuda::capturing());
  // The optimiser's first step creates its state: not inside a capture.
  CHECK_THROWS_WITH_AS(DeviceGraph::capture(Device::CUDA,
                                            [&] {
                                              cross_entropy(net.forward(x), y).backward();
                                              adam.step();
                                            }),
                       doctest::Contains("run one step eagerly"), Error);
  // After an eager step (the state exists): a new rate, or a load, inside a capture is refused, and
  // the rate stays what it was.
  net.zero_grad();
  cross_entropy(net.forward(x), y).backward();
  adam.step();
  CHECK_THROWS_WITH_AS(DeviceGraph::capture(Device::CUDA, [&] { adam.set_lr(5e-4); }),
                       doctest::Contains("set_lr inside a graph capture"), Error);
  CHECK(adam.lr() == 1e-3);
  const OptimizerState saved = adam.state_dict();
  CHECK_THROWS_WITH_AS(DeviceGraph::capture(Device::CUDA, [&] { adam.load_state_dict(saved); }),
                       doctest::Contains("load_state_dict inside a graph capture"), Error);
  // Switching streams inside a capture is refused too.
  const cuda::Stream other = cuda::create_stream();
  CHECK_THROWS_WITH_AS(DeviceGraph::capture(Device::CUDA, [&] { cuda::StreamGuard g(other); }),
                       doctest::Contains("capturing a graph"), Error);
  cuda::destroy_stream(other);
  // Eager work still runs and matches the CPU.
  net.zero_grad();
  const float loss = cross_entropy(net.forward(x), y).item();
  CHECK(std::isfinite(loss));
  CHECK_THROWS_WITH_AS(DeviceGraph::capture(Device::CPU, [] {}), doctest::Contains("has no graphs"), Error);
}

}  // namespace
