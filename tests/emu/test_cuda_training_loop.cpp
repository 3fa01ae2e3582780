/* test_cuda_training_loop.cpp: the trainers' epoch loop (apps/common/training.h) on the emulated
 * CUDA backend: a step replayed as a captured graph trains exactly as the eager step does, the host
 * waits for the device only when it reads the losses back (every --read-every steps and at the end
 * of an epoch), and a batch of other shapes runs eagerly between replays; with the emulator's deferred
 * streams (work run as late as a GPU may) it trains the same, bit for bit; so do accumulated, clipped
 * steps. And on the CPU: a validation loss that is not finite stops the run before the epoch is recorded
 * or saved, and so does, when clipping, a gradient norm that is not finite under a finite loss.
 */
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "apps/common/training.h"
#include "backends/cuda/backend.h"
#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops/loss.h"
#include "engine/optim/adam.h"
#include "engine/random.h"
#include "kernels/cuda/stream.h"
#include "models/model.h"
#include "tests/emu/emu_util.h"  // ScopedDeferred
#include "tests/emu/tiny_models.h"

using namespace nimbus;
using nimbus::test::tiny_resnet;

namespace {

struct Run {
  std::vector<std::vector<float>> weights;
  std::vector<double> losses;             // as after_step saw them, in order
  std::vector<std::vector<int64_t>> labels;  // each batch's, as after_step saw them
  std::vector<double> lrs;                // the optimiser's rate as each batch is drawn
  std::vector<double> accuracy_inputs;    // the first logit of each kept batch, in order
  cuda::WorkCounts epoch;                 // what the epoch's training steps cost
  std::vector<cuda::WorkCounts> at_step;  // the counters as each step starts, then as validation does
  int64_t steps_seen = 0;
};

// `epochs` epochs of 5 batches of 3 tiles of 8x8 pixels (the emulator is slow); the run's batch 3 has 2
// tiles (other shapes: eager). With `accumulate` batches a step, the gradients clipped to `clip` (> 0),
// `samples` tiles an epoch (3 a batch), and a warm-up of `warmup` epochs.
Run train(bool graphs, const std::string& dir, int64_t epochs = 1, int64_t accumulate = 1, double clip = 0,
          size_t samples = 15, double warmup = 0) {
  Rng rng(4);
  models::Model model = models::build_model(models::ModelConfig::of(tiny_resnet()), rng);
  models::Classifier& clf = *model.classifier;
  clf.to(Device::CUDA);
  Adam adam(clf.named_parameters(), AdamOptions{1e-3});
  const data::SampleFn fn = [](size_t i, Rng&) {
    data::Sample s;
    Rng r(100 + i);
    std::vector<float> v(13 * 8 * 8);
    for (float& x : v) x = float(r.uniform() * 3000);
    s.add("image", {13, 8, 8}, v);
    s.label = int64_t(i % 10);
    return s;
  };
  data::LoaderOptions lo = apps::loader_options(3, 1, 9, 0, accumulate);
  data::Loader loader(samples, fn, lo);
  apps::RunPaths paths(dir, "test");
  apps::DebugHooks debug;
  apps::EpochLoop loop{epochs, 3, 0, &loader, &adam, &model, &paths, &debug, 9};
  Run out;
  cuda::WorkCounts start;
  loop.device = Device::CUDA;
  loop.read_every = 3;
  loop.graphs = graphs;
  loop.accumulate = accumulate;
  loop.clip_grad_norm = clip;
  loop.warmup_epochs = warmup;
  loop.lr_at = [](int epoch) { return epoch == 0 ? 1e-3 : 5e-4; };
  loop.train_mode = [&] {
    clf.train();
    start = cuda::work_counts();
  };
  loop.step_inputs = [&](const data::Batch& bt) {
    out.at_step.push_back(cuda::work_counts());
    out.lrs.push_back(adam.lr());
    Tensor x = bt["image"];
    std::vector<float> labels(bt.labels.begin(), bt.labels.end());
    if (bt.step == 3) {  // a smaller batch
      std::vector<float> v = x.to_vector();
      v.resize(v.size() / 3 * 2);
      x = Tensor::from_vector({2, 13, 8, 8}, v);
      labels.resize(2);
    }
    return std::vector<Tensor>{x, Tensor::from_vector({int64_t(labels.size())}, labels)};
  };
  loop.step_loss = [&](const std::vector<Tensor>& in, std::vector<Tensor>& keep) {
    const Tensor logits = clf.logits(in[0]);
    keep.push_back(logits.detach());
    return cross_entropy(logits, in[1]);
  };
  loop.after_step = [&](const std::vector<int64_t>& labels, double l, const std::vector<Tensor>& kept) {
    out.losses.push_back(l);
    out.labels.push_back(labels);
    REQUIRE(kept.size() == 1);
    CHECK(kept[0].device() == Device::CPU);
    out.accuracy_inputs.push_back(kept[0].to_vector()[0]);
    ++out.steps_seen;
  };
  loop.note = [] { return std::string(); };
  loop.validate = [&](int epoch) {
    const cuda::WorkCounts end = cuda::work_counts();
    out.at_step.push_back(end);
    if (epoch == 0)
      out.epoch = {end.launches - start.launches, end.host_waits - start.host_waits, end.copies - start.copies,
                   end.graph_launches - start.graph_launches};
    return apps::EpochLoop::Validation{};
  };
  loop.report = [](int) {};
  apps::train_epochs(loop);
  for (const auto& [name, t] : clf.named_parameters()) out.weights.push_back(t.to_vector());
  for (const auto& [name, t] : clf.named_buffers()) out.weights.push_back(t.to_vector());
  return out;
}

// How many of two runs' tensors (weights, then buffers) differ in any bit.
size_t tensors_differing(const Run& a, const Run& b) {
  REQUIRE(a.weights.size() == b.weights.size());
  size_t n = 0;
  for (size_t i = 0; i < a.weights.size(); ++i) n += a.weights[i] != b.weights[i];
  return n;
}

TEST_CASE("cuda training loop: the replayed graph trains bit for bit as the eager loop, waiting only to read losses, captured again each epoch") {
  REQUIRE(cuda::register_cuda_backend());
  const std::string dir = (std::filesystem::temp_directory_path() / "nimbus_test_training_loop").string();
  std::filesystem::remove_all(dir);
  const Run eager = train(false, dir + "/eager", 2);
  const Run graph = train(true, dir + "/graph", 2);
  REQUIRE(eager.steps_seen == 10);
  REQUIRE(graph.steps_seen == 10);
  CHECK(graph.losses == eager.losses);
  CHECK(graph.accuracy_inputs == eager.accuracy_inputs);
  CHECK(tensors_differing(graph, eager) == 0);
  // The first epoch, 5 steps, read every 3: the two reads of the losses are the only host waits in steady state. With
  // the graph, step 0 runs eagerly (it creates the optimiser state), step 1 is captured and replayed,
  // steps 2 and 4 replay it, and the smaller batch 3 runs eagerly; eager, every step launches all its
  // kernels. The capture waits once: it gives the ordinary cache back first (cudaFree, engine/graph.h).
  MESSAGE("eager: ", eager.epoch.launches, " launches, ", eager.epoch.host_waits, " host waits, ", eager.epoch.copies,
          " copies; graph: ", graph.epoch.launches, " launches, ", graph.epoch.graph_launches, " graph launches, ",
          graph.epoch.host_waits, " host waits, ", graph.epoch.copies, " copies");
  CHECK(graph.epoch.host_waits == 3);
  CHECK(eager.epoch.host_waits == 2);
  CHECK(graph.epoch.graph_launches == 3);
  CHECK(eager.epoch.graph_launches == 0);
  // Step by step in the first epoch (the counters between the starts of consecutive steps; reads follow
  // steps 2 and 4).
  REQUIRE(eager.at_step.size() == 12);  // per epoch: 5 steps' starts, then validation's
  REQUIRE(graph.at_step.size() == 12);
  auto delta = [](const Run& r, size_t k) {
    const cuda::WorkCounts &a = r.at_step[k], &b = r.at_step[k + 1];
    return cuda::WorkCounts{b.launches - a.launches, b.host_waits - a.host_waits, b.copies - a.copies,
                            b.graph_launches - a.graph_launches};
  };
  const uint64_t per_step = delta(eager, 2).launches;
  CHECK(per_step > 100);
  CHECK(delta(eager, 4).launches == per_step);
  for (size_t k : {size_t(2), size_t(4)}) {
    CAPTURE(k);
    CHECK(delta(graph, k).launches == 0);  // a replay: one graph launch, no kernel launched
    CHECK(delta(graph, k).graph_launches == 1);
    CHECK(delta(graph, k).host_waits == 1);  // the read that follows the step
    CHECK(delta(eager, k).host_waits == 1);
  }
  CHECK(delta(graph, 1).launches == 0);  // captured (recorded, not queued), then replayed once
  CHECK(delta(graph, 1).graph_launches == 1);
  CHECK(delta(graph, 1).host_waits == 1);  // the capture's one wait, before it gives the cache back
  CHECK(delta(eager, 1).host_waits == 0);
  CHECK(delta(graph, 3).launches == delta(eager, 3).launches);  // the smaller batch: eager in both
  CHECK(delta(graph, 3).graph_launches == 0);
  for (size_t k : {size_t(0), size_t(3)}) {
    CAPTURE(k);
    CHECK(delta(graph, k).host_waits == 0);
    CHECK(delta(eager, k).host_waits == 0);
  }
  // The second epoch: the graph was released before the first validation (its private pool would stay
  // reserved beside the validation's memory) and is captured again at this epoch's first step, which
  // therefore waits once (the capture gives the ordinary cache back).
  CHECK(delta(graph, 6).launches == 0);  // captured, then replayed
  CHECK(delta(graph, 6).graph_launches == 1);
  CHECK(delta(graph, 6).host_waits == 1);
  CHECK(delta(eager, 6).host_waits == 0);
  // With the emulator's deferred streams (kernels/emu/runtime.h: queued work, uploads' copies included,
  // runs only when something waits for it, as on a GPU that lags), the graph run trains bit for bit the
  // same: the uploads, the replays and the reads of the losses are ordered by what they wait for, not
  // by running at once. (It waits more often, for staging slots: the counts above are the default mode's.)
  const Run late = [&] {
    const test::ScopedDeferred deferred;
    return train(true, dir + "/late", 2);
  }();
  CHECK(late.losses == graph.losses);
  CHECK(tensors_differing(late, graph) == 0);
  std::filesystem::remove_all(dir);
}

// Gradient accumulation, 2 batches a step, clipped, 7 batches an epoch. Epoch 1: batches {0, 1} make the
// first step (eager: it creates the optimiser state), {2, 3} the second (captured: the group's shapes, batch
// 3 being smaller), {4, 5} of other shapes than the graph's run eagerly, batch 6 is left out (never made).
// Epoch 2: {0, 1} captured, {2, 3} and {4, 5} replayed with their own inputs. Graph and eager train the same
// bits; both see the batches the unaccumulated run sees, in its order, less each epoch's last; and both
// train otherwise than it.
TEST_CASE("cuda training loop: accumulated steps (2 batches a step, clipped) replay as the eager loop, bit for bit") {
  REQUIRE(cuda::register_cuda_backend());
  const std::string dir = (std::filesystem::temp_directory_path() / "nimbus_test_training_loop_acc").string();
  std::filesystem::remove_all(dir);
  const Run eager = train(false, dir + "/eager", 2, 2, 0.5, 21);
  const Run graph = train(true, dir + "/graph", 2, 2, 0.5, 21);
  const Run single = train(false, dir + "/single", 2, 1, 0, 21);
  CHECK(eager.steps_seen == 12);  // 6 of the 7 batches an epoch, twice
  CHECK(graph.steps_seen == 12);
  REQUIRE(single.labels.size() == 14);
  for (size_t b = 0; b < 12; ++b) {
    CAPTURE(b);
    CHECK(eager.labels[b] == single.labels[b < 6 ? b : b + 1]);  // epoch 2 starts at its own first batch
  }
  CHECK(graph.labels == eager.labels);
  CHECK(graph.losses == eager.losses);
  CHECK(tensors_differing(graph, eager) == 0);
  CHECK(tensors_differing(single, eager) > 0);
  CHECK(graph.epoch.graph_launches == 1);  // the first epoch's second step, replayed once
  CHECK(graph.epoch.launches < eager.epoch.launches);
  std::filesystem::remove_all(dir);
}

// A warm-up of 1.5 epochs (5 steps an epoch: W = 8 steps): step t at the epoch's rate x (t + 1) / 8, the
// second epoch's rate (5e-4) from step 8 on; the graph, whose replays read the rate from the device,
// trains the same bits as the eager loop, and otherwise than without the warm-up.
TEST_CASE("cuda training loop: a warm-up's rate, step by step, replayed by the graph as the eager loop runs it") {
  REQUIRE(cuda::register_cuda_backend());
  const std::string dir = (std::filesystem::temp_directory_path() / "nimbus_test_training_loop_warmup").string();
  std::filesystem::remove_all(dir);
  const Run eager = train(false, dir + "/eager", 2, 1, 0, 15, 1.5);
  const Run graph = train(true, dir + "/graph", 2, 1, 0, 15, 1.5);
  const Run plain = train(true, dir + "/plain", 2);
  REQUIRE(eager.lrs.size() == 10);
  for (int64_t t = 0; t < 10; ++t) {
    CAPTURE(t);
    const double base = t < 5 ? 1e-3 : 5e-4;
    CHECK(eager.lrs[size_t(t)] == (t < 8 ? base * double(t + 1) / 8.0 : base));
  }
  CHECK(graph.lrs == eager.lrs);
  CHECK(graph.losses == eager.losses);
  CHECK(tensors_differing(graph, eager) == 0);
  CHECK(tensors_differing(plain, graph) > 0);
  std::filesystem::remove_all(dir);
}

}  // namespace

namespace {

// A two-epoch loop on the CPU over 6 constant tiles in batches of 3 (2 steps an epoch), its run folder in
// the temporary folder `name`, the loop's functions set but step_loss, after_step, validate and report.
struct CpuLoop {
  explicit CpuLoop(const std::string& name)
      : dir((std::filesystem::temp_directory_path() / name).string()),
        model(build()),
        clf(*model.classifier),
        adam(clf.named_parameters(), AdamOptions{1e-3}),
        loader(6, sample, apps::loader_options(3, 1, 9, 0, 1)),
        paths(fresh(dir), "test"),
        loop{2, 3, 0, &loader, &adam, &model, &paths, &debug, 9} {
    loop.lr_at = [](int) { return 1e-3; };
    loop.train_mode = [this] { clf.train(); };
    loop.step_inputs = [](const data::Batch& bt) {
      std::vector<float> labels(bt.labels.begin(), bt.labels.end());
      return std::vector<Tensor>{bt["image"], Tensor::from_vector({int64_t(labels.size())}, labels)};
    };
    loop.note = [] { return std::string(); };
  }
  ~CpuLoop() { std::filesystem::remove_all(dir); }
  static const std::string& fresh(const std::string& d) {  // an earlier run's folder removed first
    std::filesystem::remove_all(d);
    return d;
  }
  static models::Model build() {
    Rng rng(4);
    return models::build_model(models::ModelConfig::of(tiny_resnet()), rng);
  }
  static data::Sample sample(size_t i, Rng&) {
    data::Sample s;
    s.add("image", {13, 8, 8}, std::vector<float>(13 * 8 * 8, float(100 * i)));
    s.label = int64_t(i % 10);
    return s;
  }
  std::string dir;
  models::Model model;
  models::Classifier& clf;
  Adam adam;
  data::Loader loader;
  apps::RunPaths paths;
  apps::DebugHooks debug;
  apps::EpochLoop loop;
};

// An epoch on the CPU whose validation loss is NaN though every training loss was finite (what a last
// step leaving NaN weights gives): the loop stops with an error naming the epoch, before metrics.csv's
// row and before either checkpoint. A NaN model must never become last.safetensors, let alone best.
TEST_CASE("training loop: a non-finite validation loss stops the run before the epoch's row and checkpoints") {
  CpuLoop c("nimbus_test_training_loop_nan");
  apps::EpochLoop& loop = c.loop;
  loop.step_loss = [&](const std::vector<Tensor>& in, std::vector<Tensor>&) {
    return cross_entropy(c.clf.logits(in[0]), in[1]);
  };
  int steps = 0, reports = 0;
  loop.after_step = [&](const std::vector<int64_t>&, double l, const std::vector<Tensor>&) {
    CHECK(std::isfinite(l));
    ++steps;
  };
  loop.validate = [&](int epoch) {
    apps::EpochLoop::Validation v;
    v.improved = true;  // as a NaN model scoring class 0's share would claim
    v.loss = epoch == 0 ? 2.3 : std::nan("");
    return v;
  };
  loop.report = [&](int) { ++reports; };
  CHECK_THROWS_WITH_AS(apps::train_epochs(loop),
                       doctest::Contains("epoch 2: the validation loss is nan though every training loss was finite"),
                       Error);
  CHECK(steps == 4);    // both epochs trained
  CHECK(reports == 1);  // the first epoch's row only
  // The checkpoints are the first epoch's: the second wrote neither.
  CHECK(load_safetensors(c.paths.last).metadata.at("epoch") == "1");
  CHECK(load_safetensors(c.paths.best).metadata.at("epoch") == "1");
}

// With clipping, a step whose loss is finite but whose gradients are not (an op's backward gave NaN):
// the run stops at that step, naming it, with the previous epoch's checkpoint kept. Without the check the
// NaN would first show in the next step's loss, blaming a step that did nothing wrong.
TEST_CASE("training loop: with clipping, a gradient norm that is not finite stops the run naming its step") {
  CpuLoop c("nimbus_test_training_loop_norm");
  apps::EpochLoop& loop = c.loop;
  loop.clip_grad_norm = 1.0;
  int calls = 0;
  loop.step_loss = [&](const std::vector<Tensor>& in, std::vector<Tensor>&) {
    Tensor logits = c.clf.logits(in[0]);
    if (calls++ == 2) {  // step 2 (epoch 2, batch 1): the same values, a NaN gradient
      Tensor y = logits.view(logits.shape());
      const Shape s = logits.shape();
      record("nan_grad", {logits}, y, [s](const Tensor&, GradSink& sink) { sink.set(0, Tensor::full(s, NAN)); });
      logits = y;
    }
    return cross_entropy(logits, in[1]);
  };
  int steps = 0;
  loop.after_step = [&](const std::vector<int64_t>&, double l, const std::vector<Tensor>& kept) {
    CHECK(std::isfinite(l));
    CHECK(kept.empty());  // the norm is the loop's, not the app's
    ++steps;
  };
  loop.validate = [&](int) { return apps::EpochLoop::Validation{}; };
  loop.report = [&](int) {};
  CHECK_THROWS_WITH_AS(apps::train_epochs(loop),
                       doctest::Contains("the gradient norm is NaN at step 2 (epoch 2, batch 1) though its loss was "
                                         "finite; training stopped, the last good checkpoint is kept"),
                       Error);
  CHECK(steps == 2);  // the steps before it (its own loss was checked, then its norm stopped the run)
  CHECK(load_safetensors(c.paths.last).metadata.at("epoch") == "1");
}

}  // namespace
