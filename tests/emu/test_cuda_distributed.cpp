/* test_cuda_distributed.cpp: the data-parallel code on the emulated CUDA device: the gradient
 * reducer staging CUDA gradients in device buckets (the path NCCL takes: device-to-device copies into
 * the bucket, the all-reduce on device memory, the mean copied back), and the synchronised batch norm
 * running the CUDA backend's kernels in float32 and bfloat16.
 *
 * The group is a mirror: it claims two ranks and answers every collective as if the other rank held
 * the same data (a sum doubles it, a mean leaves it), and it reduces device memory as NCCL does. So
 * the reducer must give back exactly the gradients of a plain backward, and the synchronised batch
 * norm (a global batch of two identical halves has the half's mean and variance) batch norm's own
 * output and input gradient. NCCL itself needs a GPU (scripts/gpu_check.sh, phase distributed).
 */
#include <doctest/doctest.h>

#include <cmath>
#include <optional>
#include <vector>

#include "backends/cuda/backend.h"
#include "engine/distributed/gradient_reducer.h"
#include "engine/distributed/sync_batchnorm.h"
#include "engine/ops/batchnorm.h"
#include "engine/ops/loss.h"
#include "engine/random.h"
#include "kernels/cuda/stream.h"
#include "kernels/emu/runtime.h"
#include "models/model.h"
#include "tests/common/check.h"
#include "tests/emu/emu_util.h"  // ScopedDeferred
#include "tests/emu/tiny_models.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {

class MirrorGroup final : public ProcessGroup {
 public:
  struct Call {
    Device where;
    size_t n;
    bool pinned;  // host data in page-locked memory
  };
  bool host_only = false;  // reduce host memory only, as MPI does (else device memory too, as NCCL)
  std::vector<Call> calls;  // start_all_reduce's, in order
  int rank() const override { return 0; }
  int size() const override { return 2; }
  const char* kind() const override { return "mirror"; }
  void all_reduce_sum(float* data, size_t n) override {
    for (size_t i = 0; i < n; ++i) data[i] *= 2;
  }
  void all_reduce_sum(double* data, size_t n) override {
    // sync_batch_norm2d gathers rows (rank 0's filled, rank 1's zero: count, C means, C variances):
    // mirror rank 0's into rank 1's, its means moved by mean_shift (rank 1's data then is rank 0's plus
    // mean_shift per channel).
    if (n % 2 == 0 && gathering_) {
      for (size_t i = 0; i < n / 2; ++i) data[n / 2 + i] = data[i];
      for (size_t c = 0; c < mean_shift.size(); ++c) data[n / 2 + 1 + c] += mean_shift[c];
      return;
    }
    for (size_t i = 0; i < n; ++i) data[i] *= 2;
  }
  void broadcast(void*, size_t, int) override {}
  void barrier() override {}
  bool reduces_on(Device d) const override { return !host_only || d == Device::CPU; }
  std::unique_ptr<PendingCollective> start_all_reduce(float* data, size_t n, ReduceOp op, Device where) override {
    calls.push_back({where, n, where == Device::CPU && emu::is_pinned_range(data, n * sizeof(float))});
    std::vector<float> host(n);
    device_runtime(where).copy(host.data(), Device::CPU, data, where, n * sizeof(float));
    if (op == ReduceOp::Sum)
      for (float& v : host) v *= 2;
    device_runtime(where).copy(data, where, host.data(), Device::CPU, n * sizeof(float));
    return ProcessGroup::start_all_reduce(nullptr, 0, ReduceOp::Sum, Device::CPU);  // a completed one
  }
  bool gathering_ = true;  // the next double all-reduce is the statistics' gather
  std::vector<double> mean_shift;  // rank 1's means minus rank 0's (none: the same statistics)
};

std::vector<float> rand_floats(size_t n, uint64_t seed) {
  Rng rng(seed);
  return to_float(random_vec(n, rng, -1, 2));
}

}  // namespace

// NCCL's path (the group reduces device memory) and MPI's (host memory only: each bucket goes to
// page-locked host memory in one copy, the host's one wait per bucket, and comes back in one). MPI's
// again with the emulator's deferred streams (late): the device work runs only when waited for, so
// a bucket handed to the group before its copy to page-locked memory ran would give wrong gradients.
TEST_CASE("cuda distributed: the gradient reducer stages CUDA gradients in device buckets and gives back their mean") {
  REQUIRE(cuda::register_cuda_backend());
  for (const bool late : {false, true})
  for (const bool host_only : {false, true})
  for (size_t bucket : {size_t(1) << 22, size_t(300)}) {
    if (late && !host_only) continue;
    CAPTURE(late);
    CAPTURE(host_only);
    CAPTURE(bucket);
    std::optional<test::ScopedDeferred> deferred;
    if (late) deferred.emplace();
    Rng rng(5);
    models::Model model = models::build_model(models::ModelConfig::of(tiny_resnet()), rng);
    models::Classifier& clf = *model.classifier;
    clf.to(Device::CUDA);
    clf.train();
    const Tensor x = Tensor::from_vector({2, 13, 8, 8}, rand_floats(2 * 13 * 64, 6)).to(Device::CUDA);
    const Tensor labels = Tensor::from_vector({2}, {3.f, 7.f}).to(Device::CUDA);
    const NamedTensors params = clf.named_parameters();
    // The reference: a plain backward.
    cross_entropy(clf.logits(x), labels).backward();
    std::vector<std::vector<float>> want;
    for (const auto& [name, p] : params) want.push_back(p.grad().to_vector());
    clf.zero_grad();
    // Through the reducer (batch norm buffers moved by the first forward; the same batch again).
    MirrorGroup g;
    g.host_only = host_only;
    GradientReducer reducer(params, g, bucket);
    const Tensor loss = cross_entropy(clf.logits(x), labels);
    const cuda::WorkCounts before = cuda::work_counts();
    reducer.backward(loss);
    const uint64_t waits = cuda::work_counts().host_waits - before.host_waits;
    size_t differ = 0, floats = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      differ += params[i].second.grad().to_vector() != want[i];
      CHECK(params[i].second.grad().device() == Device::CUDA);
    }
    for (const MirrorGroup::Call& c : g.calls) {
      // NCCL's: device memory, no host staging; MPI's: page-locked host memory
      CHECK(c.where == (host_only ? Device::CPU : Device::CUDA));
      CHECK(c.pinned == host_only);
      floats += c.n;
    }
    if (host_only && !late) CHECK(waits == g.calls.size());  // one download per bucket, not one per parameter
    CHECK(differ == 0);  // the mean of two equal gradients is the gradient, bit for bit
    CHECK(floats == size_t(clf.num_parameters()));
    CHECK(reducer.last_step().collectives == g.calls.size());
    if (bucket == 300) {
      CHECK(g.calls.size() > 2);
      CHECK(reducer.last_step().before_backward_end >= 1);
    } else {
      CHECK(g.calls.size() == 1);
    }
  }
}

// The mirror above makes both ranks' statistics equal, so a synchronised batch norm that ignored the
// other rank would pass that test. Here rank 1's data is rank 0's plus a shift per channel: the forward
// must normalise by the statistics of both halves, as batch_norm2d on the CPU does over the two halves
// put together (output and running statistics).
TEST_CASE("cuda distributed: synchronised batch norm normalises by the other rank's statistics too") {
  REQUIRE(cuda::register_cuda_backend());
  const int64_t N = 3, C = 4, H = 5, W = 3, n = N * C * H * W;
  const std::vector<double> shift = {0.5, -1.0, 2.0, 0.25};
  const std::vector<float> xv = rand_floats(size_t(n), 21);
  std::vector<float> both = xv;  // rank 0's images, then rank 1's (each value plus its channel's shift)
  for (int64_t i = 0; i < n; ++i) both.push_back(xv[size_t(i)] + float(shift[size_t(i / (H * W) % C)]));
  const std::vector<float> wv = {1.f, -2.f, 0.5f, 1.5f}, bv = {0.f, 0.1f, -0.2f, 0.3f};
  Tensor rm_want = Tensor::zeros({C}), rv_want = Tensor::ones({C});
  const std::vector<float> whole = batch_norm2d(Tensor::from_vector({2 * N, C, H, W}, both), Tensor::from_vector({C}, wv),
                                                Tensor::from_vector({C}, bv), rm_want, rv_want, true, 0.1f, 1e-5f)
                                       .to_vector();
  const std::vector<float> want(whole.begin(), whole.begin() + n);  // rank 0's half
  MirrorGroup g;
  g.mean_shift = shift;
  Tensor rm = Tensor::zeros({C}, Device::CUDA), rv = Tensor::ones({C}, Device::CUDA);
  const Tensor y = sync_batch_norm2d(Tensor::from_vector({N, C, H, W}, xv).to(Device::CUDA),
                                     Tensor::from_vector({C}, wv).to(Device::CUDA),
                                     Tensor::from_vector({C}, bv).to(Device::CUDA), rm, rv, true, 0.1f, 1e-5f, nullptr, g);
  check_close(y.to_vector(), want, 1e-5, 1e-5, "y");
  check_close(rm.to_vector(), rm_want.to_vector(), 1e-6, 1e-5, "running_mean");
  check_close(rv.to_vector(), rv_want.to_vector(), 1e-6, 1e-5, "running_var");
}

TEST_CASE("cuda distributed: synchronised batch norm on the CUDA backend, float32 and bfloat16") {
  REQUIRE(cuda::register_cuda_backend());
  for (DType dt : {DType::F32, DType::BF16}) {
    CAPTURE(dtype_name(dt));
    const int64_t N = 3, C = 4, H = 5, W = 3;
    const std::vector<float> xv = rand_floats(size_t(N * C * H * W), 11), dyv = rand_floats(size_t(N * C * H * W), 12);
    auto run = [&](bool sync) {
      Tensor x = Tensor::from_vector({N, C, H, W}, xv).to(Device::CUDA).to(dt);
      x.set_requires_grad(true);
      Tensor w = Tensor::from_vector({C}, {1.f, -2.f, 0.5f, 1.5f}).to(Device::CUDA);
      Tensor b = Tensor::from_vector({C}, {0.f, 0.1f, -0.2f, 0.3f}).to(Device::CUDA);
      w.set_requires_grad(true), b.set_requires_grad(true);
      Tensor rm = Tensor::zeros({C}, Device::CUDA), rv = Tensor::ones({C}, Device::CUDA);
      MirrorGroup g;
      Tensor y = sync ? sync_batch_norm2d(x, w, b, rm, rv, true, 0.1f, 1e-5f, nullptr, g)
                      : batch_norm2d(x, w, b, rm, rv, true, 0.1f, 1e-5f);
      g.gathering_ = false;  // backward's collective is a sum
      y.backward(Tensor::from_vector(y.shape(), dyv).to(Device::CUDA).to(dt));
      return std::vector<std::vector<float>>{y.to_vector(), x.grad().to_vector(), w.grad().to_vector(),
                                             b.grad().to_vector(), rm.to_vector()};
    };
    const auto want = run(false), got = run(true);
    // float32: a few roundings (statistics via invstd, dx through three kernels); bfloat16: a few of its.
    const double tol = dt == DType::F32 ? 2e-5 : 3 * 0.0078125;
    const char* names[] = {"y", "dx", "dweight", "dbias", "running_mean"};
    for (size_t k = 0; k < want.size(); ++k) {
      double scale = 1e-6;
      for (float v : want[k]) scale = std::max(scale, double(std::fabs(v)));
      check_close(got[k], want[k], tol * scale, 0, names[k]);
    }
  }
}
