/* test_cuda_streams.cpp: the CUDA backend's stream use (kernels/cuda/stream.h), run by the emulator.
 *
 * By default the emulator runs everything in order, so what is checked here is *where* work goes (it counts
 * launches, copies and event waits per stream, emu::stream_stats) and that results stay right:
 * the backend's ops, fills and copies use its compute stream and never the default stream; under a
 * StreamGuard they use the user's stream, with a join (one event wait) on entry and on exit; a
 * destroyed stream is refused with a clear error instead of being used. And the emulator's deferred
 * streams, which run queued work only when something waits for it, so that a missing wait between
 * streams shows as wrong numbers.
 */
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "engine/device.h"
#include "engine/ops/activation.h"
#include "engine/ops/conv.h"
#include "engine/ops/linear.h"
#include "engine/ops/loss.h"
#include "engine/ops/shape_ops.h"
#include "engine/random.h"
#include "backends/cuda/backend.h"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/stream.h"
#include "tests/common/check.h"
#include "tests/emu/emu_util.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {

cudaStream_t as_cuda(cuda::Stream s) { return static_cast<cudaStream_t>(s); }
emu::StreamStats stats(cuda::Stream s) { return emu::stream_stats(as_cuda(s)); }

// conv -> relu -> linear -> MSE on device d: the loss and the gradients of x, w, fw (on the CPU).
struct Result {
  Tensor loss, dx, dw, dfw;
};
Result small_step(Device d) {
  Rng rng(21);
  auto leaf = [&](Shape s) { return Tensor::randn(s, rng).to(d).set_requires_grad(true); };
  Tensor x = leaf({2, 3, 7, 6}), w = leaf({4, 3, 3, 3}), b = leaf({4}), fw = leaf({5, 4 * 4 * 3}), fb = leaf({5});
  Tensor h = relu(conv2d(x, w, b, 2, 1));  // (2,4,4,3)
  Tensor y = linear(flatten(h, 1), fw, fb);  // (2,5)
  Tensor loss = mse_loss(y, Tensor::full({2, 5}, 0.5f, d));
  loss.backward();
  return {loss.to(Device::CPU), x.grad().to(Device::CPU), w.grad().to(Device::CPU), fw.grad().to(Device::CPU)};
}

// Compared in fp32 math (backend.h), where the CUDA backend's results are float32 sums like the CPU's;
// the TF32 tensor-core path has its own bounds (test_cuda_tensor_core_ops.cpp, test_cuda_ops.cpp).
void check_equal_to_cpu(const Result& got) {
  const Result want = small_step(Device::CPU);
  check_close(got.loss, want.loss, 1e-5, 1e-5, "loss");
  check_close(got.dx, want.dx, 1e-5, 1e-4, "dx");
  check_close(got.dw, want.dw, 1e-5, 1e-4, "dw");
  check_close(got.dfw, want.dfw, 1e-5, 1e-4, "dfw");
}

__global__ void set_one_kernel(float* p) { p[threadIdx.x] = 1.0f; }

// A kernel bug the emulator reports (a barrier reached from two call sites): its Error is thrown where
// the kernel runs, which in deferred mode is inside a drain.
__global__ void two_barriers_kernel(float* p) {
  if (threadIdx.x % 2)
    __syncthreads();
  else
    __syncthreads();
  p[threadIdx.x] = 2.0f;
}

}  // namespace

TEST_CASE("cuda streams: ops, fills and copies go on the backend's compute stream, none on the default stream") {
  REQUIRE(cuda::register_cuda_backend());
  const cuda::Stream s = cuda::compute_stream();
  REQUIRE(s != nullptr);
  CHECK(cuda::current_stream() == s);
  const emu::StreamStats before = stats(s), default_before = stats(nullptr);
  const cuda::MathScope fp32(cuda::Math::Fp32);  // check_equal_to_cpu's bound
  const Result got = small_step(Device::CUDA);
  Tensor z = Tensor::zeros({3, 5}, Device::CUDA);  // a device fill
  CHECK(z.to_vector() == std::vector<float>(15, 0.0f));
  const emu::StreamStats after = stats(s), default_after = stats(nullptr);
  CHECK(after.launches - before.launches >= 10);  // fill, im2col, gemm, relu, bias, ... forward and backward
  CHECK(after.copies - before.copies >= 6);       // uploads of 5 leaves and 1 target, downloads of 4 results
  CHECK(default_after.launches == default_before.launches);
  CHECK(default_after.copies == default_before.copies);
  check_equal_to_cpu(got);
}

TEST_CASE("cuda streams: a StreamGuard puts the ops on a user stream, joined on entry and exit") {
  REQUIRE(cuda::register_cuda_backend());
  const cuda::Stream compute = cuda::compute_stream();
  const cuda::Stream user = cuda::create_stream();
  REQUIRE(user != nullptr);
  CHECK(user != compute);
  const emu::StreamStats compute_before = stats(compute);
  const cuda::MathScope fp32(cuda::Math::Fp32);  // check_equal_to_cpu's bound
  Result got;
  {
    cuda::StreamGuard guard(user);
    CHECK(cuda::current_stream() == user);
    CHECK(stats(user).waits == 1);  // the user stream waited for the compute stream's queue
    got = small_step(Device::CUDA);
    const emu::StreamStats u = stats(user), c = stats(compute);
    CHECK(u.launches >= 10);
    CHECK(u.copies >= 6);
    CHECK(c.launches == compute_before.launches);  // nothing leaked onto the compute stream
    CHECK(c.copies == compute_before.copies);
    cuda::synchronize_stream(user);
    device_runtime(Device::CUDA).synchronize();  // the runtime's synchronize: the current (user) stream
  }
  CHECK(cuda::current_stream() == compute);
  CHECK(stats(compute).waits == compute_before.waits + 1);  // and the compute stream waited for the user's
  check_equal_to_cpu(got);
  // The launchers themselves (not only the op table) follow the current stream.
  DeviceBuffer<float> buf(std::vector<float>(64, 0.0f));
  {
    cuda::StreamGuard guard(user);
    const int64_t launches = stats(user).launches;
    cuda::fill(buf.p, 2.0f, 64);
    CHECK(stats(user).launches == launches + 1);
  }
  CHECK(buf.download() == std::vector<float>(64, 2.0f));
  // Nested guards restore in order; a guard on the current stream is a no-op (no join).
  {
    cuda::StreamGuard a(compute);
    CHECK(stats(compute).waits == compute_before.waits + 2);  // the two guards above, nothing now
    cuda::StreamGuard b(user);
    CHECK(cuda::current_stream() == user);
  }
  CHECK(cuda::current_stream() == compute);
  {
    cuda::StreamGuard guard(user);
    CHECK_THROWS_WITH_AS(cuda::destroy_stream(user), doctest::Contains("is the current stream"), Error);
  }
  CHECK_THROWS_WITH_AS(cuda::destroy_stream(compute), doctest::Contains("compute stream"), Error);
  cuda::destroy_stream(user);
}

TEST_CASE("cuda streams: a destroyed stream is refused, not used") {
  REQUIRE(cuda::register_cuda_backend());
  const cuda::Stream dead = cuda::create_stream();
  cuda::destroy_stream(dead);
  // Making it current fails in the join (the emulator knows it is gone), and nothing changes.
  CHECK_THROWS_WITH_AS(cuda::set_current_stream(dead),
                       doctest::Contains("never created or is already destroyed"), Error);
  CHECK(cuda::current_stream() == cuda::compute_stream());
  CHECK_THROWS_WITH_AS(cuda::destroy_stream(dead), doctest::Contains("cudaErrorInvalidResourceHandle"), Error);
  CHECK_THROWS_WITH_AS(emu::stream_stats(as_cuda(dead)), doctest::Contains("already destroyed"), Error);
  // A raw launch or async copy on it sets the error and runs nothing, as CUDA does.
  DeviceBuffer<float> buf(std::vector<float>(4, 0.0f));
  launch(set_one_kernel, 1, 4, 0, as_cuda(dead), buf.p);
  CHECK(cudaGetLastError() == cudaErrorInvalidResourceHandle);
  std::vector<float> host(4, 5.0f);
  CHECK(cudaMemcpyAsync(buf.p, host.data(), 16, cudaMemcpyHostToDevice, as_cuda(dead)) ==
        cudaErrorInvalidResourceHandle);
  CHECK(emu::last_error_detail().find("cudaMemcpyAsync: stream") != std::string::npos);
  (void)cudaGetLastError();
  CHECK(buf.download() == std::vector<float>(4, 0.0f));
}

// Strict mode's legacy-stream rule follows cross-stream waits: synchronising a stream also finishes
// the work of another stream that it waited for (the upload path: the compute stream waits for the
// copy stream's copies, then the host synchronises the compute stream).
TEST_CASE("emu streams: synchronising a stream finishes the work on other streams that it waited for") {
  REQUIRE(cuda::register_cuda_backend());
  emu::set_strict(true);
  cudaStream_t a = nullptr, b = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking) == cudaSuccess);
  float* d = nullptr;
  REQUIRE(cudaMalloc(&d, 64) == cudaSuccess);
  REQUIRE(cudaMemsetAsync(d, 0, 64, a) == cudaSuccess);
  cudaEvent_t e = nullptr;
  REQUIRE(cudaEventCreateWithFlags(&e, cudaEventDisableTiming) == cudaSuccess);
  REQUIRE(cudaEventRecord(e, a) == cudaSuccess);
  REQUIRE(cudaStreamWaitEvent(b, e, 0) == cudaSuccess);
  CHECK(cudaMemset(d, 1, 64) == cudaErrorInvalidResourceHandle);  // a's memset is not known done yet
  (void)cudaGetLastError();
  REQUIRE(cudaStreamSynchronize(b) == cudaSuccess);  // b waited for a's memset: it is done
  CHECK(cudaMemset(d, 1, 64) == cudaSuccess);
  REQUIRE(cudaMemsetAsync(d, 0, 64, a) == cudaSuccess);  // new work on a, not waited for by b
  REQUIRE(cudaStreamSynchronize(b) == cudaSuccess);
  CHECK(cudaMemset(d, 1, 64) == cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();
  REQUIRE(cudaStreamSynchronize(a) == cudaSuccess);
  cudaEventDestroy(e);
  cudaFree(d);
  cudaStreamDestroy(a);
  cudaStreamDestroy(b);
}

// Deferred streams (kernels/emu/runtime.h, set_deferred): queued work runs only when something waits
// for it, so an ordering mistake between streams gives wrong numbers here, as on a GPU that ran the
// other stream (or the copy engine) late. Each step below is one such mistake or its fix.
TEST_CASE("emu streams: deferred work runs when waited for, a missing wait reads stale data, a rewritten page-locked buffer is copied late") {
  REQUIRE(cuda::register_cuda_backend());
  const ScopedDeferred deferred;
  cudaStream_t a = nullptr, b = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking) == cudaSuccess);
  float *d = nullptr, *e = nullptr, *host = nullptr, *out = nullptr;
  REQUIRE(cudaMalloc(&d, 16) == cudaSuccess);  // 0xFF bytes: NaN until written
  REQUIRE(cudaMalloc(&e, 16) == cudaSuccess);
  REQUIRE(cudaMallocHost(&host, 16) == cudaSuccess);
  REQUIRE(cudaMallocHost(&out, 16) == cudaSuccess);
  cudaEvent_t ev = nullptr;
  REQUIRE(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) == cudaSuccess);
  auto read = [&](const float* src, cudaStream_t s) {  // src's 4 floats, through page-locked memory on s
    REQUIRE(cudaMemcpyAsync(out, src, 16, cudaMemcpyDeviceToHost, s) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
    return std::vector<float>(out, out + 4);
  };
  // Queued on a, not run: its event is not ready.
  launch(set_one_kernel, 1, 4, 0, a, d);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  REQUIRE(cudaEventRecord(ev, a) == cudaSuccess);
  CHECK(cudaEventQuery(ev) == cudaErrorNotReady);
  // b copies d without waiting for a: it reads d before a's kernel wrote it.
  REQUIRE(cudaMemcpyAsync(e, d, 16, cudaMemcpyDeviceToDevice, b) == cudaSuccess);
  CHECK(std::isnan(read(e, b)[0]));
  CHECK(cudaEventQuery(ev) == cudaErrorNotReady);  // synchronising b ran none of a's work
  // With the wait, b's copy first runs a's work up to the event.
  REQUIRE(cudaStreamWaitEvent(b, ev, 0) == cudaSuccess);
  REQUIRE(cudaMemcpyAsync(e, d, 16, cudaMemcpyDeviceToDevice, b) == cudaSuccess);
  CHECK(read(e, b) == std::vector<float>(4, 1.0f));
  CHECK(cudaEventQuery(ev) == cudaSuccess);
  // A page-locked buffer rewritten after its copy was queued: the copy, run later, reads the new values.
  std::fill(host, host + 4, 5.0f);
  REQUIRE(cudaMemcpyAsync(d, host, 16, cudaMemcpyHostToDevice, a) == cudaSuccess);
  std::fill(host, host + 4, 7.0f);
  CHECK(read(d, a) == std::vector<float>(4, 7.0f));
  // Pageable memory is staged at the call: rewriting it afterwards changes nothing.
  std::vector<float> pageable(4, 3.0f);
  REQUIRE(cudaMemcpyAsync(d, pageable.data(), 16, cudaMemcpyHostToDevice, a) == cudaSuccess);
  pageable.assign(4, 9.0f);
  CHECK(read(d, a) == std::vector<float>(4, 3.0f));
  // The legacy stream waiting on an event runs that work now: a plain cudaMemcpy then sees it.
  REQUIRE(cudaMemsetAsync(e, 0, 16, b) == cudaSuccess);
  REQUIRE(cudaEventRecord(ev, b) == cudaSuccess);
  REQUIRE(cudaStreamWaitEvent(nullptr, ev, 0) == cudaSuccess);
  std::vector<float> plain(4, -1.0f);
  REQUIRE(cudaMemcpy(plain.data(), e, 16, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(plain == std::vector<float>(4, 0.0f));
  // The join pattern: b waits for a's event and records its own; waiting for b's event runs a's work.
  launch(set_one_kernel, 1, 4, 0, a, d);
  REQUIRE(cudaEventRecord(ev, a) == cudaSuccess);
  cudaEvent_t joined = nullptr;
  REQUIRE(cudaEventCreateWithFlags(&joined, cudaEventDisableTiming) == cudaSuccess);
  REQUIRE(cudaStreamWaitEvent(b, ev, 0) == cudaSuccess);
  REQUIRE(cudaEventRecord(joined, b) == cudaSuccess);
  CHECK(cudaEventQuery(ev) == cudaErrorNotReady);
  REQUIRE(cudaEventSynchronize(joined) == cudaSuccess);
  CHECK(cudaEventQuery(ev) == cudaSuccess);
  // A host polling an event sees its work run after a while (16 answers), as a GPU makes progress.
  launch(set_one_kernel, 1, 4, 0, a, d);
  REQUIRE(cudaEventRecord(ev, a) == cudaSuccess);
  int polls = 1;
  while (cudaEventQuery(ev) == cudaErrorNotReady) ++polls;
  CHECK(polls == 16);
  // A copy's direction and ranges are checked at the call, not when it runs.
  CHECK(cudaMemcpyAsync(out, d, 16, cudaMemcpyHostToDevice, a) == cudaErrorInvalidValue);
  CHECK(cudaMemsetAsync(d, 0, 32, a) == cudaErrorInvalidValue);
  (void)cudaGetLastError();
  // An event of a destroyed stream is complete, whatever stream gets its address next.
  cudaStream_t c = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&c, cudaStreamNonBlocking) == cudaSuccess);
  launch(set_one_kernel, 1, 4, 0, c, d);
  REQUIRE(cudaEventRecord(joined, c) == cudaSuccess);
  const void* destroyed = c;
  REQUIRE(cudaStreamDestroy(c) == cudaSuccess);  // runs c's work first
  CHECK(cudaEventQuery(joined) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&c, cudaStreamNonBlocking) == cudaSuccess);
  if (c != destroyed) MESSAGE("the new stream got another address: the reused-address case did not arise");
  REQUIRE(cudaMemsetAsync(e, 0, 16, c) == cudaSuccess);
  CHECK(cudaEventQuery(joined) == cudaSuccess);
  REQUIRE(cudaStreamDestroy(c) == cudaSuccess);
  cudaEventDestroy(joined);
  // A captured graph's replay is queued like any work; turning the mode off runs what is still queued.
  REQUIRE(cudaStreamBeginCapture(a, cudaStreamCaptureModeGlobal) == cudaSuccess);
  launch(set_one_kernel, 1, 4, 0, a, e);
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(a, &graph) == cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  REQUIRE(cudaGraphLaunch(exec, a) == cudaSuccess);
  REQUIRE(cudaGraphExecDestroy(exec) == cudaSuccess);  // allowed before the replay ran, as in CUDA
  REQUIRE(cudaEventRecord(ev, a) == cudaSuccess);
  CHECK(cudaEventQuery(ev) == cudaErrorNotReady);
  emu::set_deferred(false);
  CHECK(cudaEventQuery(ev) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(a) == cudaSuccess);
  REQUIRE(cudaMemcpy(plain.data(), e, 16, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(plain == std::vector<float>(4, 1.0f));
  cudaGraphDestroy(graph);
  cudaEventDestroy(ev);
  cudaFreeHost(host);
  cudaFreeHost(out);
  cudaFree(d);
  cudaFree(e);
  cudaStreamDestroy(a);
  cudaStreamDestroy(b);
}

// A kernel that fails while queued work drains: the call that waited throws the kernel's error, and
// the drain leaves the rest consistent. The failed kernel has run (as a faulted kernel on a GPU has),
// the work queued after it on its stream and the other stream's wait marker stay queued, and the next
// wait runs them in order: nothing is lost or run twice, and no lock is left held.
TEST_CASE("emu streams: a kernel that fails during a deferred drain throws at the wait and loses no queued work") {
  REQUIRE(cuda::register_cuda_backend());
  const ScopedDeferred deferred;
  cudaStream_t a = nullptr, b = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking) == cudaSuccess);
  float *d = nullptr, *e = nullptr, *out = nullptr;
  REQUIRE(cudaMalloc(&d, 256) == cudaSuccess);
  REQUIRE(cudaMalloc(&e, 16) == cudaSuccess);
  REQUIRE(cudaMallocHost(&out, 16) == cudaSuccess);
  cudaEvent_t ev = nullptr;
  REQUIRE(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) == cudaSuccess);
  launch(two_barriers_kernel, 1, 64, 0, a, d);  // queued: nothing runs yet, so no error yet
  REQUIRE(cudaGetLastError() == cudaSuccess);
  launch(set_one_kernel, 1, 4, 0, a, e);  // after the bad kernel on a
  REQUIRE(cudaEventRecord(ev, a) == cudaSuccess);
  REQUIRE(cudaStreamWaitEvent(b, ev, 0) == cudaSuccess);  // b's marker: a's work up to ev
  REQUIRE(cudaMemcpyAsync(out, e, 16, cudaMemcpyDeviceToHost, b) == cudaSuccess);
  std::fill(out, out + 4, -1.0f);
  // Synchronising b runs a's work up to the marker: the bad kernel throws, from b's wait.
  const std::string m = launch_error([&] { (void)cudaStreamSynchronize(b); });
  CHECK_MESSAGE(m.find("different call sites") != std::string::npos, m);
  CHECK(std::vector<float>(out, out + 4) == std::vector<float>(4, -1.0f));  // b's copy has not run
  // Both stay queued: the next wait runs a's second kernel, then b's copy, once each.
  REQUIRE(cudaStreamSynchronize(b) == cudaSuccess);
  CHECK(std::vector<float>(out, out + 4) == std::vector<float>(4, 1.0f));
  CHECK(cudaEventQuery(ev) == cudaSuccess);
  std::fill(out, out + 4, -1.0f);
  REQUIRE(cudaStreamSynchronize(a) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(b) == cudaSuccess);
  CHECK(std::vector<float>(out, out + 4) == std::vector<float>(4, -1.0f));  // the copy did not run again
  // The drain lock was released: another thread can drain (a held std::recursive_mutex would hang it).
  launch(set_one_kernel, 1, 4, 0, a, e);
  std::thread other([&] { CHECK(cudaStreamSynchronize(a) == cudaSuccess); });
  other.join();
  CHECK(cudaGetLastError() == cudaSuccess);
  cudaEventDestroy(ev);
  cudaFreeHost(out);
  cudaFree(d);
  cudaFree(e);
  cudaStreamDestroy(a);
  cudaStreamDestroy(b);
}
