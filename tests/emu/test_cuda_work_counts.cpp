/* test_cuda_work_counts.cpp: the launch and host-wait counters (kernels/cuda/stream.h), the per-op
 * profiler (backends/cuda/op_profile.h) and the NIMBUS_CUDA_SYNC_CHECK switch, on the emulator.
 *
 * The counters are what bench_models --device cuda reports per training step on the GPU; the same
 * source counts here, so this file pins a training step's launches and host waits: a change that
 * adds launches or waits to a step fails here, in CI, with the new figure, and the budget below is
 * raised only on purpose (a GPU step pays ~3-5 us per launch and a full pipeline drain per wait).
 * The budgets are today's exact counts: lowering them as the sync-free step lands is the point.
 * Also: the upload path's staging, with the emulator's deferred streams, delivers every tensor intact.
 */
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/ops/loss.h"
#include "engine/optim/adam.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "backends/cuda/backend.h"
#include "backends/cuda/upload.h"
#include "kernels/cuda/elementwise.h"
#include "backends/cuda/op_profile.h"
#include "kernels/cuda/stream.h"
#include "models/dsen2cr.h"
#include "models/resnet.h"
#include "tests/emu/emu_util.h"
#include "tests/emu/tiny_models.h"

using namespace nimbus;
using nimbus::test::tiny_resnet;
using nimbus::test::kOnEmulator;

namespace {

struct StepCounts {
  uint64_t launches = 0, host_waits = 0, copies = 0;
};

// Runs `step` three times (the first two allocate and warm the optimiser state) and counts the third.
template <typename F>
StepCounts count_third_step(F step) {
  step(), step();
  device_runtime(Device::CUDA).synchronize();
  const cuda::WorkCounts a = cuda::work_counts();
  step();
  const cuda::WorkCounts b = cuda::work_counts();
  return {b.launches - a.launches, b.host_waits - a.host_waits, b.copies - a.copies};
}

// Today's counts for one Adam training step (see the top of the file). No host waits: the batch
// norms count their batches on the device, cross-entropy checks device-side targets in its kernels
// (a NaN loss, below) and the loss backwards read dL/dloss from device memory.
// Copies: none; a parameter's first gradient is kept, not cloned, when nothing else holds it.
// Adam: one prepare launch (the clock and every parameter's scalars, advanced on the device so that a
// captured step replays correctly), then one launch per 32 parameter tensors (the tiny ResNet has 57
// tensors: 2 launches, not 57).
// A convolution (TF32 math, the default): one tensor-core launch forward with its bias and ReLU, one
// for the data gradient per stride phase (stride^2: 4 for the tiny ResNet's six stride-2 convs, so
// each multiplies only its own taps), one for the weight gradient over every image (plus the split
// sum when it splits the reduction; not at these sizes). In fp32 math the im2col path takes more.
// Batch norm in training: statistics, invstd, running update and batch count in one launch, the
// normalisation in a second; its backward takes the ReLU's mask in the same launch (7 -> 3 a layer).
constexpr uint64_t kResNetStepLaunches = 147, kResNetStepWaits = 0, kResNetStepCopies = 0;
constexpr uint64_t kDSen2CRStepLaunches = 42, kDSen2CRStepWaits = 0, kDSen2CRStepCopies = 0;

TEST_CASE("cuda work counts: one launch per kernel, none for a host copy, and a stream sync is a host wait") {
  REQUIRE(cuda::register_cuda_backend());
  test::DeviceBuffer<float> y(1000);
  const cuda::WorkCounts a = cuda::work_counts();
  cuda::fill(y.p, 1.0f, 1000);
  cuda::fill(y.p, 2.0f, 1000);
  const cuda::WorkCounts b = cuda::work_counts();
  CHECK(b.launches - a.launches == 2);
  CHECK(b.host_waits == a.host_waits);
  const Tensor t = Tensor::full({5}, 3.0f, Device::CUDA);  // a fill kernel
  const cuda::WorkCounts c = cuda::work_counts();
  CHECK(c.launches - b.launches == 1);
  CHECK(t.to_vector() == std::vector<float>(5, 3.0f));  // device -> host: one wait, one copy
  const cuda::WorkCounts d = cuda::work_counts();
  CHECK(d.host_waits - c.host_waits == 1);
  CHECK(d.copies - c.copies == 1);
  CHECK(d.launches == c.launches);
  const Tensor u = t.clone();  // device -> device: a copy, no wait
  CHECK(cuda::work_counts().copies - d.copies == 1);
  CHECK(cuda::work_counts().host_waits == d.host_waits);
  device_runtime(Device::CUDA).synchronize();
  CHECK(cuda::work_counts().host_waits - d.host_waits == 1);
}

// Host -> device copies are staged through page-locked memory on a copy stream (backends/cuda/upload.h):
// two queued copies, no host wait, and the data arrives; many uploads in a row reuse the slots.
TEST_CASE("cuda work counts: an upload from host memory queues two copies and never waits") {
  REQUIRE(cuda::register_cuda_backend());
  std::vector<Tensor> up;
  for (int k = 0; k < 3 * cuda::kUploadSlots; ++k) {
    std::vector<float> v(1000 + size_t(k));
    for (size_t i = 0; i < v.size(); ++i) v[i] = float(i) * 0.5f + float(k);
    const cuda::WorkCounts a = cuda::work_counts();
    up.push_back(Tensor::from_vector({int64_t(v.size())}, v, Device::CUDA));
    const cuda::WorkCounts b = cuda::work_counts();
    CHECK(b.copies - a.copies == 2);  // page-locked -> device staging, staging -> tensor
    CHECK(b.host_waits == a.host_waits);
    v.assign(v.size(), -1.0f);  // the caller may reuse its buffer at once
  }
  for (int k = 0; k < 3 * cuda::kUploadSlots; ++k) {
    const std::vector<float> got = up[size_t(k)].to_vector();
    REQUIRE(got.size() == 1000 + size_t(k));
    CHECK(got[0] == float(k));
    CHECK(got.back() == float(got.size() - 1) * 0.5f + float(k));
  }
  // Larger than a piece: staged in pieces (two copies each), still no wait, and the slots never grow
  // past a piece (the staging memory is bounded whatever the input's size).
  {
    const size_t n = cuda::kStagePieceBytes / sizeof(float) * 2 + 12345;  // 3 pieces
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = float(i % 1000003);
    const size_t staged_before = cuda::staging_bytes();
    const cuda::WorkCounts a = cuda::work_counts();
    const Tensor big = Tensor::from_vector({int64_t(n)}, v, Device::CUDA);
    const cuda::WorkCounts b = cuda::work_counts();
    CHECK(b.copies - a.copies == 6);
    CHECK(b.host_waits == a.host_waits);
    CHECK(big.to_vector() == v);
    CHECK(cuda::staging_bytes() <= size_t(cuda::kUploadSlots) * cuda::kStagePieceBytes);
    // Two full pieces grew at most two slots to a piece each (at least 1 MiB before); one slot for the
    // whole 64 MiB would have grown to 128 MiB.
    CHECK(cuda::staging_bytes() - staged_before <= 2 * cuda::kStagePieceBytes);
  }
  // Inside a capture an upload is refused (a graph cannot hold it).
  cuda::begin_capture();
  CHECK_THROWS_WITH_AS(Tensor::from_vector({3}, {1, 2, 3}, Device::CUDA), doctest::Contains("inside a graph capture"),
                       Error);
  cuda::abort_capture();
}

// The same staging with the emulator's deferred streams (kernels/emu/runtime.h: queued copies run only
// when something waits for them, as on a GPU whose copy engine lags): every tensor still arrives
// intact. So a page-locked slot is rewritten only after its previous copy ran, and the copy into the
// tensor waits for the copy stream's. The host waits for slots here, where the copies never run early
// (on a GPU it waits only when the device lags that far behind).
TEST_CASE("cuda upload: with the copies run late (deferred streams), every upload still arrives intact") {
  REQUIRE(cuda::register_cuda_backend());
  const test::ScopedDeferred deferred;  // on a GPU: the hardware's own timing
  auto value = [](size_t i, int k) { return float(i % 4099) * 0.25f + 100.0f * float(k); };
  std::vector<Tensor> up;
  const cuda::WorkCounts a = cuda::work_counts();
  const int count = 3 * cuda::kUploadSlots;
  for (int k = 0; k <= count; ++k) {
    // The last one has three pieces (two full), so slots are reused within one upload too.
    const size_t n = k < count ? 500 + size_t(k) : cuda::kStagePieceBytes / sizeof(float) * 2 + 777;
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = value(i, k);
    up.push_back(Tensor::from_vector({int64_t(n)}, v, Device::CUDA));
    v.assign(n, -1.0f);
  }
  if (test::kOnEmulator) CHECK(cuda::work_counts().host_waits > a.host_waits);
  for (int k = 0; k <= count; ++k) {
    CAPTURE(k);
    const std::vector<float> got = up[size_t(k)].to_vector();
    size_t wrong = 0;
    for (size_t i = 0; i < got.size(); ++i) wrong += got[i] != value(i, k);
    CHECK(wrong == 0);
  }
}

// Trains `net` on the device with Adam, `loss(net)` giving each step's loss, and checks the third
// step's counts against the budget.
template <typename Net, typename Loss>
void check_step_budget(const char* what, Net& net, Loss loss, uint64_t launches, uint64_t waits, uint64_t copies) {
  net.to(Device::CUDA);
  net.train();
  Adam adam(net.named_parameters(), AdamOptions{1e-4});
  const StepCounts n = count_third_step([&] {
    adam.zero_grad();
    loss(net).backward();
    adam.step();
  });
  MESSAGE(std::string(what), " step: ", n.launches, " launches, ", n.host_waits, " host waits, ", n.copies,
          " copies");
  CHECK(n.launches > 0);
  CHECK(n.launches <= launches);
  CHECK(n.host_waits <= waits);
  CHECK(n.copies <= copies);
}

TEST_CASE("cuda work counts: a tiny ResNet-50-shaped Adam step stays within its launch and host-wait budget") {
  REQUIRE(cuda::register_cuda_backend());
  Rng rng(1);
  models::ResNet net(tiny_resnet(), rng);
  const Tensor x = Tensor::randn({2, 13, 32, 32}, rng).to(Device::CUDA);
  const Tensor y = Tensor::from_vector({2}, {3, 7}).to(Device::CUDA);
  check_step_budget("ResNet", net, [&](models::ResNet& m) { return cross_entropy(m.forward(x), y); },
                    kResNetStepLaunches, kResNetStepWaits, kResNetStepCopies);
}

TEST_CASE("cuda work counts: a tiny DSen2-CR Adam step stays within its launch and host-wait budget") {
  REQUIRE(cuda::register_cuda_backend());
  Rng rng(2);
  models::DSen2CR net(models::DSen2CRConfig{2, 8, true}, rng);
  const Tensor s2 = Tensor::randn({2, 13, 8, 8}, rng).to(Device::CUDA);
  const Tensor s1 = Tensor::randn({2, 2, 8, 8}, rng).to(Device::CUDA);
  const Tensor target = Tensor::randn({2, 13, 8, 8}, rng).to(Device::CUDA);
  check_step_budget("DSen2-CR", net, [&](models::DSen2CR& m) { return l1_loss(m.forward(s2, s1), target); },
                    kDSen2CRStepLaunches, kDSen2CRStepWaits, kDSen2CRStepCopies);
}

TEST_CASE("cuda op profile: every engine op entered is counted under its name, in order of time") {
  REQUIRE(cuda::register_cuda_backend());
  Rng rng(3);
  models::DSen2CR net(models::DSen2CRConfig{2, 8, true}, rng);
  net.to(Device::CUDA);
  const Tensor s2 = Tensor::randn({1, 13, 6, 6}, rng).to(Device::CUDA), s1 = Tensor::randn({1, 2, 6, 6}, rng).to(Device::CUDA);
  const Tensor target = Tensor::randn({1, 13, 6, 6}, rng).to(Device::CUDA);
  CHECK_THROWS_WITH_AS(cuda::stop_op_profile(), doctest::Contains("none is open"), Error);
  cuda::start_op_profile();
  CHECK_THROWS_WITH_AS(cuda::start_op_profile(), doctest::Contains("already open"), Error);
  l1_loss(net.forward(s2, s1), target).backward();
  const std::vector<cuda::OpTime> ops = cuda::stop_op_profile();
  auto calls = [&](const std::string& name) {
    for (const cuda::OpTime& t : ops)
      if (t.op == name) return t.calls;
    return int64_t(0);
  };
  // DSen2-CR B=2: head conv, 2 blocks of 2 convs, tail conv = 6 convs forward, 6 backward; the head
  // and each block's first conv carry the fused ReLU (conv2d_relu), each block's second the residual
  // sum x + 0.1 F(x) (conv2d_residual); the tail is a plain conv2d.
  CHECK(calls("conv2d") == 1);
  CHECK(calls("conv2d_relu") == 3);
  CHECK(calls("conv2d_residual") == 2);
  CHECK(calls("conv2d_backward") == 1);
  CHECK(calls("conv2d_relu_backward") == 3);
  CHECK(calls("conv2d_residual_backward") == 2);
  CHECK(calls("l1_loss") >= 1);
  CHECK(calls("(before the first op)") == 0);
  for (size_t i = 1; i < ops.size(); ++i) CHECK(ops[i - 1].ms >= ops[i].ms);
  for (const cuda::OpTime& t : ops) CHECK((kOnEmulator ? t.ms == 0 : t.ms >= 0));  // emulator events read 0 ms
  // Closed: later ops are not recorded (a second stop has nothing to stop).
  (void)Tensor::full({3}, 1.0f, Device::CUDA);
  CHECK_THROWS_AS(cuda::stop_op_profile(), Error);
}

TEST_CASE("cuda sync check: the NIMBUS_CUDA_SYNC_CHECK switch waits for every kernel") {
  REQUIRE(cuda::register_cuda_backend());
  const bool was = cuda::sync_check_enabled();
  cuda::set_sync_check(true);
  test::DeviceBuffer<float> y(100);
  const cuda::WorkCounts a = cuda::work_counts();
  cuda::fill(y.p, 1.0f, 100);
  cuda::fill(y.p, 2.0f, 100);
  const cuda::WorkCounts b = cuda::work_counts();
  CHECK(b.launches - a.launches == 2);
  CHECK(b.host_waits - a.host_waits == 2);
  CHECK_THROWS_WITH_AS(cuda::fill(y.p, 1.0f, 100, 2048), doctest::Contains("cuda::fill: CUDA launch failed"), Error);
  // During a capture a kernel is recorded, not run: nothing to wait for, and a wait would invalidate
  // the capture. So a step still captures with the switch on (its replays' faults show at a wait).
  const cuda::WorkCounts c = cuda::work_counts();
  cuda::begin_capture();
  cuda::fill(y.p, 4.0f, 100);
  const cuda::GraphExec g = cuda::end_capture();
  CHECK(cuda::work_counts().host_waits == c.host_waits);
  cuda::launch_graph(g);
  cuda::destroy_graph(g);
  CHECK(y.download()[99] == 4.0f);
  cuda::set_sync_check(false);
  cuda::fill(y.p, 3.0f, 100);
  CHECK(cuda::work_counts().host_waits == b.host_waits);  // a refused launch has nothing to wait for; off: no wait
  cuda::set_sync_check(was);
}

}  // namespace

TEST_CASE("cuda work counts: cross-entropy on a device-side target never waits, and a bad target gives a NaN loss") {
  REQUIRE(cuda::register_cuda_backend());
  const Tensor logits = Tensor::from_vector({3, 4}, {1, 2, 3, 4, 0, 0, 1, 0, -1, 2, 0.5f, 0}, Device::CUDA);
  const Tensor good = Tensor::from_vector({3}, {3, 0, 1}, Device::CUDA);
  const cuda::WorkCounts a = cuda::work_counts();
  const Tensor loss = cross_entropy(logits, good);
  CHECK(cuda::work_counts().host_waits == a.host_waits);
  CHECK(std::isfinite(loss.item()));
  CHECK(loss.item() == doctest::Approx(cross_entropy(logits.to(Device::CPU), good.to(Device::CPU)).item()));
  for (float bad : {4.0f, -1.0f, 1.5f, NAN}) {
    CAPTURE(bad);
    const Tensor t = Tensor::from_vector({3}, {3, bad, 1}, Device::CUDA);
    CHECK(std::isnan(cross_entropy(logits, t).item()));
    // On the host the same target is an error naming the row.
    CHECK_THROWS_WITH_AS(cross_entropy(logits.to(Device::CPU), t.to(Device::CPU)), doctest::Contains("target[1]"),
                         Error);
  }
}
