// test_app_runs.cpp: the four apps run end to end on tiny models and tiny
// synthetic data (data/synthetic.h), each case in seconds:
//   train_resnet / train_dsen2cr: SIGKILL mid-training then --resume ends with
//     byte-identical tensors to an uninterrupted run; NaN loss stops with the
//     step named and the last good checkpoint kept; corrupt / mismatched
//     checkpoints are clear errors; input_norm = training-set statistics.
//   classify: probabilities equal the model's forward; wrong band count errors.
//   remove_clouds: output equals the model's forward (within uint16 rounding),
//     tiled equals untiled, georeferencing carried, missing SAR errors, folder mode.
//   all: --device cuda is a clear error (exit 1), --help exits 0.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <cmath>
#include <limits>
#include <cstdlib>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <tuple>

#include "apps/common/accuracy.h"
#include "apps/common/cloud_removal.h"
#include "apps/common/experiment.h"
#include "apps/common/run_folder.h"
#include "apps/common/training.h"
#include "data/eurosat.h"
#include "data/geotiff.h"
#include "data/normalize.h"
#include "data/sen12mscr.h"
#include "data/synthetic.h"
#include "data/synthetic_spectra.h"
#include "engine/autograd.h"
#include "engine/io/checkpoint.h"
#include "engine/io/json.h"
#include "engine/io/safetensors.h"
#include "models/model_io.h"
#include "tests/apps/app_runner.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;
namespace fs = std::filesystem;

namespace {

// 6 EuroSAT-like tiles per class: stratified 0.8 / 0.1 -> 5 train, 1 val per class; 50 train = 6 batches of 8.
std::string make_eurosat(const TempDir& d) {
  const std::string root = d / "eurosat";
  for (int c = 0; c < 10; ++c)
    for (int i = 0; i < 6; ++i) data::write_eurosat_tile(root, 42, c, i);
  return root;
}

std::vector<std::string> resnet_args(const std::string& data, const std::string& out) {
  return {"--data", data,   "--out",   out, "--epochs", "3", "--batch-size", "8", "--block", "basic", "--blocks",
          "1,1,1,1", "--width", "4", "--milestones", "2", "--threads", "1", "--workers", "1"};
}

// 64x64 triplets: indices 0..3 are train ROIs, index 64 (spring ROI 17) is a benchmark val ROI.
std::string make_sen12mscr(const TempDir& d) {
  const std::string root = d / "sen12mscr";
  data::SyntheticOptions o;
  o.size = 64;
  o.patches_per_roi = 1;
  o.cover_lo = 0.2;
  o.cover_hi = 0.6;
  for (int i : {0, 1, 2, 3, 64}) data::write_triplet(root, o, i);
  return root;
}

std::vector<std::string> dsen2cr_args(const std::string& data, const std::string& out) {
  return {"--data",   data, "--out",      out, "--epochs",   "3", "--batch-size", "2",       "--crop", "32",
          "--blocks", "1",  "--features", "8", "--threads", "1", "--workers",    "1"};
}

// A ResNet classifier small enough for app tests: basic blocks, one per stage, width 4 (resnet_args').
models::ResNetConfig tiny_classifier_config() {
  models::ResNetConfig rc;
  rc.block = models::BlockType::Basic;
  rc.blocks = {1, 1, 1, 1};
  rc.width = 4;
  return rc;
}
models::Model tiny_classifier(Rng& rng) {
  return models::build_model(models::ModelConfig::of(tiny_classifier_config()), rng);
}

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& more) {
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

// Every tensor (weights, buffers, optimiser state) bit-identical.
void check_same_tensors(const std::string& a, const std::string& b) {
  SafetensorsFile fa = load_safetensors(a), fb = load_safetensors(b);
  REQUIRE(fa.tensors.size() == fb.tensors.size());
  size_t differ = 0;
  for (const auto& [name, t] : fa.tensors) {
    const Tensor* u = fb.find(name);
    REQUIRE_MESSAGE(u, name, " missing in ", b);
    if (t.to_vector() != u->to_vector()) {
      ++differ;
      MESSAGE("differs: ", name);
    }
  }
  CHECK(differ == 0);
  CHECK(fa.metadata.at("epoch") == fb.metadata.at("epoch"));
  CHECK(fa.metadata.count("rng") == fb.metadata.count("rng"));
  if (fa.metadata.count("rng")) CHECK(fa.metadata.at("rng") == fb.metadata.at("rng"));
}

// Trains with --augment-on host and then device into dir/host and dir/device (args_in(dir) gives the
// rest of the command): the same checkpoint and metrics, bit for bit.
void check_augment_on_device(const std::string& app,
                             const std::function<std::vector<std::string>(const std::string&)>& args_in,
                             const TempDir& d) {
  for (const char* where : {"host", "device"}) {
    AppResult r = run_app(app, with(args_in(d / where), {"--augment-on", where}));
    REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  }
  check_same_tensors(d / "host/last.safetensors", d / "device/last.safetensors");
  CHECK(read_file(d / "host/metrics.csv") == read_file(d / "device/metrics.csv"));
}

// Also the run's time line after each epoch but the last (3 epochs; the kill falls in the second).
void check_kill_resume(const std::string& app, const std::vector<std::string>& args_a,
                       const std::vector<std::string>& args_b, int64_t kill_step) {
  AppResult a = run_app(app, args_a);
  REQUIRE_MESSAGE(a.exit_code == 0, a.output);
  for (const char* done : {"1 of 3 epochs done in ", "2 of 3 epochs done in "})
    CHECK_MESSAGE(a.output.find(app + ": " + done) != std::string::npos, a.output);
  CHECK(a.output.find("3 of 3 epochs done") == std::string::npos);
  AppResult killed = run_app(app, with(args_b, {"--debug-sigkill-at-step", std::to_string(kill_step)}));
  CHECK(killed.signal == SIGKILL);
  AppResult resumed = run_app(app, with(args_b, {"--resume"}));
  REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.output);
  CHECK(resumed.output.find("resuming from") != std::string::npos);
  CHECK_MESSAGE(resumed.output.find(app + ": 2 of 3 epochs done (1 since the resume, in ") != std::string::npos,
                resumed.output);
}

}  // namespace

// A model whose weights, gradients and optimiser moments cannot fit in the memory available is refused
// before it is built, naming the options: the largest sizes the options accept used to fill the
// machine until the kernel killed the run, with no message.
TEST_CASE("trainers: a model larger than the memory available is refused before it is built") {
  models::DSen2CRConfig dc;
  dc.blocks = 16;
  dc.features = 256;  // the paper's: ~18.9 M parameters, 16 bytes each with Adam's moments
  const models::ModelConfig paper = models::ModelConfig::of(dc);
  const uint64_t need = 16 * uint64_t(models::min_parameter_count(paper));
  CHECK_NOTHROW(apps::refuse_model_beyond_memory(paper, need, "--blocks 16 --features 256"));
  CHECK_NOTHROW(apps::refuse_model_beyond_memory(paper, 0, "--blocks 16 --features 256"));  // unknown
  CHECK_THROWS_WITH_AS(apps::refuse_model_beyond_memory(paper, need - 1, "--blocks 16 --features 256"),
                       doctest::Contains("--blocks 16 --features 256 make a model (dsen2cr(B=16, F=256, SAR)) of at "
                                         "least 1.89e+07 parameters"),
                       cli::UsageError);
  CHECK(apps::host_memory_available() > 0);  // Linux: /proc/meminfo
  // The largest ResNet the options accept: at least 2.56e10 parameters, ~381 GiB. Refused at once (exit 2),
  // unless this machine has that much (then it would start to train it: not here).
  models::ResNetConfig huge;
  huge.block = models::BlockType::Basic;
  huge.blocks = {64, 64, 64, 64};
  huge.width = 512;
  if (16.0 * double(models::min_parameter_count(models::ModelConfig::of(huge))) <= double(apps::host_memory_available())) {
    MESSAGE("skipped the app run: this machine has memory for the largest model");
    return;
  }
  TempDir d("too_big");
  const std::string data = make_eurosat(d);
  AppResult r = run_app("train_resnet", {"--data", data, "--out", d / "run", "--block", "basic", "--blocks",
                                         "64,64,64,64", "--width", "512", "--epochs", "1", "--batch-size", "8",
                                         "--workers", "1", "--threads", "1", "--device", "cpu"});
  CHECK(r.exit_code == 2);
  CHECK_MESSAGE(r.output.find("--block basic --blocks 64,64,64,64 --width 512 make a model") != std::string::npos,
                r.output);
  CHECK_MESSAGE(r.output.find("GiB of memory available here") != std::string::npos, r.output);
  CHECK_FALSE(fs::exists(d / "run"));  // the folder it made, empty, is gone again
}

// The best score a resume compares new epochs with is the best epoch's own, not rounded: 6 digits made
// a later epoch that only tied the best (or a DSen2-CR loss within the rounding) replace best.safetensors
// after a resume. So the checkpoint's score, printed to metrics.csv's 9 digits, is the best of that column.
namespace {
void check_best_score(const std::string& run, const std::string& key, size_t column, bool lowest) {
  const std::string csv = read_file(run + "/metrics.csv");
  std::istringstream rows(csv);
  std::string best_text, row;
  std::getline(rows, row);  // the header
  double best = lowest ? INFINITY : -INFINITY;
  while (std::getline(rows, row)) {
    std::istringstream cells(row);
    std::string cell;
    for (size_t i = 0; i <= column; ++i) std::getline(cells, cell, ',');
    const double v = std::stod(cell);
    if (lowest ? v < best : v > best) best = v, best_text = cell;
  }
  const std::string saved = load_safetensors(run + "/last.safetensors").metadata.at(key);
  CHECK_MESSAGE(fmt_num(std::stod(saved), 9) == best_text, key, " ", saved, " in the checkpoint, ", best_text,
                " in metrics.csv");
}
}  // namespace

TEST_CASE("train_resnet: SIGKILL mid-epoch then --resume ends with the weights of an uninterrupted run") {
  TempDir d("resnet_kill");
  const std::string data = make_eurosat(d);
  // 6 batches per epoch: step 10 is inside epoch 2, after epoch 1's checkpoint.
  check_kill_resume("train_resnet", resnet_args(data, d / "a"), resnet_args(data, d / "b"), 10);
  check_same_tensors(d / "a/last.safetensors", d / "b/last.safetensors");
  check_same_tensors(d / "a/best.safetensors", d / "b/best.safetensors");
  CHECK(read_file(d / "a/metrics.csv") == read_file(d / "b/metrics.csv"));
  // Killed right after epoch 1's checkpoint (once the moment between the checkpoint's rename and
  // metrics.csv's rewrite): the row of epoch 1 survives the resume.
  AppResult after = run_app("train_resnet", with(resnet_args(data, d / "c"), {"--debug-sigkill-after-epoch", "1"}));
  CHECK(after.signal == SIGKILL);
  AppResult resumed = run_app("train_resnet", with(resnet_args(data, d / "c"), {"--resume"}));
  REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.output);
  CHECK(read_file(d / "c/metrics.csv") == read_file(d / "a/metrics.csv"));
  check_same_tensors(d / "a/last.safetensors", d / "c/last.safetensors");
  // metrics.csv: header + one row per epoch; lr divided by 5 from epoch index 2 (the third epoch).
  const std::string csv = read_file(d / "a/metrics.csv");
  CHECK(csv.rfind("epoch,lr,train_loss,train_acc,val_loss,val_acc\n1,0.001,", 0) == 0);
  CHECK(csv.find("\n3,0.0002,") != std::string::npos);
  models::LoadedModel lm = models::load_model(d / "a/last.safetensors");
  CHECK(lm.epoch == 3);
  CHECK(lm.model.classifier->config().width == 4);
  // (With 10 validation tiles every accuracy is k/10, exact in 6 digits too: the DSen2-CR kill test's
  // losses are the ones a rounded score fails.)
  check_best_score(d / "a", "best_val_acc", 5, false);
}

// --warmup-epochs 2.5 (6 steps an epoch: the rate ramps over 15 steps): killed at step 10, inside the
// warm-up, and resumed, the run ends with the uninterrupted run's bits (the ramp is a function of the
// run's step, not of the process); and the warm-up changed the run.
TEST_CASE("train_resnet: --warmup-epochs ramps the rate, and a resume inside the warm-up ends as the uninterrupted run") {
  TempDir d("resnet_warmup");
  const std::string data = make_eurosat(d);
  const std::vector<std::string> warm = {"--warmup-epochs", "2.5"};
  check_kill_resume("train_resnet", with(resnet_args(data, d / "a"), warm), with(resnet_args(data, d / "b"), warm), 10);
  check_same_tensors(d / "a/last.safetensors", d / "b/last.safetensors");
  CHECK(read_file(d / "a/metrics.csv") == read_file(d / "b/metrics.csv"));
  AppResult plain = run_app("train_resnet", resnet_args(data, d / "plain"));
  REQUIRE_MESSAGE(plain.exit_code == 0, plain.output);
  // The weights differ (metrics.csv's lr column is the schedule's in both: 0.001, 0.001, 0.0002).
  const SafetensorsFile wa = load_safetensors(d / "a/last.safetensors"), wp = load_safetensors(d / "plain/last.safetensors");
  size_t differing = 0;
  for (const auto& [name, t] : wa.tensors) differing += wp.at(name).to_vector() != t.to_vector();
  CHECK(differing > 0);
  CHECK(read_file(d / "a/metrics.csv").rfind("epoch,lr,train_loss,train_acc,val_loss,val_acc\n1,0.001,", 0) == 0);
}

// A run's weights and metrics must not depend on --threads: the per-image convolution summed its weight
// gradient per thread, and OpenBLAS split its products by the thread count (kernels/cpu/gemm.h). Both
// trainers, on 1 and 2 threads: every tensor and metrics.csv the same bits.
TEST_CASE("trainers: --threads 2 trains the same bits as --threads 1") {
  TempDir d("threads");
  const std::string eurosat = make_eurosat(d), cr = make_sen12mscr(d);
  auto threads = [](std::vector<std::string> a, const char* n) {
    const auto it = std::find(a.begin(), a.end(), "--threads");
    REQUIRE(it != a.end());
    *(it + 1) = n;
    return a;
  };
  for (const char* n : {"1", "2"}) {
    AppResult r = run_app("train_resnet", threads(resnet_args(eurosat, d / (std::string("resnet") + n)), n));
    REQUIRE_MESSAGE(r.exit_code == 0, r.output);
    AppResult c = run_app("train_dsen2cr", threads(dsen2cr_args(cr, d / (std::string("cr") + n)), n));
    REQUIRE_MESSAGE(c.exit_code == 0, c.output);
  }
  for (const char* app : {"resnet", "cr"}) {
    CAPTURE(app);
    const std::string one = d / (std::string(app) + "1"), two = d / (std::string(app) + "2");
    check_same_tensors(one + "/last.safetensors", two + "/last.safetensors");
    CHECK(read_file(one + "/metrics.csv") == read_file(two + "/metrics.csv"));
  }
}

TEST_CASE("train_resnet: --augment-on device trains bit for bit as the host augmentation, and differs from none") {
  TempDir d("resnet_augment");
  const std::string data = make_eurosat(d);
  check_augment_on_device("train_resnet", [&](const std::string& out) { return resnet_args(data, out); }, d);
  // The control: without augmentation the run differs (so the augmentation did something).
  AppResult none = run_app("train_resnet", with(resnet_args(data, d / "none"), {"--no-augment"}));
  REQUIRE_MESSAGE(none.exit_code == 0, none.output);
  CHECK(read_file(d / "none/metrics.csv") != read_file(d / "device/metrics.csv"));
}

// --clip-grad-norm: a limit no step reaches leaves the run bit for bit the unclipped one (the coefficient
// is exactly 1), one every step exceeds changes it; each epoch reports the norms and how many steps were
// clipped. train_dsen2cr takes the same option (training.cpp's loop is shared).
TEST_CASE("trainers: --clip-grad-norm clips every step above the limit, reports it, and changes nothing below") {
  TempDir d("clip");
  const std::string data = make_eurosat(d), cr = make_sen12mscr(d);
  AppResult plain = run_app("train_resnet", resnet_args(data, d / "plain"));
  REQUIRE_MESSAGE(plain.exit_code == 0, plain.output);
  CHECK(plain.output.find("gradient norm") == std::string::npos);
  AppResult high = run_app("train_resnet", with(resnet_args(data, d / "high"), {"--clip-grad-norm", "1e9"}));
  REQUIRE_MESSAGE(high.exit_code == 0, high.output);
  check_same_tensors(d / "plain/last.safetensors", d / "high/last.safetensors");
  CHECK(read_file(d / "plain/metrics.csv") == read_file(d / "high/metrics.csv"));
  for (const char* epoch : {"1", "2", "3"})
    CHECK_MESSAGE(high.output.find(std::string("train_resnet: epoch ") + epoch + " gradient norm before clipping: mean ") !=
                      std::string::npos, high.output);
  CHECK_MESSAGE(high.output.find("; 0 of 6 steps clipped to 1e+09") != std::string::npos, high.output);
  AppResult low = run_app("train_resnet", with(resnet_args(data, d / "low"), {"--clip-grad-norm", "0.001"}));
  REQUIRE_MESSAGE(low.exit_code == 0, low.output);
  CHECK_MESSAGE(low.output.find("; 6 of 6 steps clipped to 0.001") != std::string::npos, low.output);
  CHECK(read_file(d / "plain/metrics.csv") != read_file(d / "low/metrics.csv"));
  AppResult bad = run_app("train_resnet", with(resnet_args(data, d / "bad"), {"--clip-grad-norm", "-1"}));
  CHECK(bad.exit_code == 2);
  CHECK_MESSAGE(bad.output.find("--clip-grad-norm") != std::string::npos, bad.output);
  AppResult c = run_app("train_dsen2cr", with(dsen2cr_args(cr, d / "cr"), {"--clip-grad-norm", "0.001"}));
  REQUIRE_MESSAGE(c.exit_code == 0, c.output);
  CHECK_MESSAGE(c.output.find("train_dsen2cr: epoch 1 gradient norm before clipping: mean ") != std::string::npos,
                c.output);
}

TEST_CASE("train_resnet: a NaN loss stops training naming the step and keeps the last good checkpoint") {
  TempDir d("resnet_nan");
  const std::string data = make_eurosat(d);
  AppResult r = run_app("train_resnet", with(resnet_args(data, d / "run"), {"--debug-inject-nan-at-step", "8"}));
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("loss is NaN at step 8 (epoch 2, batch 3)") != std::string::npos, r.output);
  CHECK(r.output.find("last good checkpoint is kept") != std::string::npos);
  CHECK(models::load_model(d / "run/last.safetensors").epoch == 1);
  const std::string csv = read_file(d / "run/metrics.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 2);  // header + epoch 1
}

TEST_CASE("train_resnet: corrupt or mismatched checkpoint on --resume is a clear error") {
  TempDir d("resnet_corrupt");
  const std::string data = make_eurosat(d);
  std::vector<std::string> one = resnet_args(data, d / "run");
  one[5] = "1";  // --epochs 1
  // A learning rate that cannot train: a usage error before the run folder or its split files exist.
  AppResult bad_lr = run_app("train_resnet", with(resnet_args(data, d / "bad_lr"), {"--lr", "-1"}));
  CHECK(bad_lr.exit_code == 2);
  CHECK_FALSE(fs::exists(d / "bad_lr"));
  // Milestones out of order: the same, before the split files and the input statistics.
  AppResult bad_ms = run_app("train_resnet", with(resnet_args(data, d / "bad_ms"), {"--milestones", "3,1"}));
  CHECK(bad_ms.exit_code == 2);
  CHECK(bad_ms.output.find("--milestones must be increasing") != std::string::npos);
  CHECK_FALSE(fs::exists(d / "bad_ms"));
  REQUIRE(run_app("train_resnet", one).exit_code == 0);
  // A different architecture: refused, naming the file.
  std::vector<std::string> wider = with(resnet_args(data, d / "run"), {"--resume"});
  wider[13] = "8";  // --width 8
  AppResult m = run_app("train_resnet", wider);
  CHECK(m.exit_code == 1);
  CHECK_MESSAGE(m.output.find("last.safetensors: holds resnet") != std::string::npos, m.output);
  // Another --seed would mean another split and sample order: refused, and the split files it wrote
  // are left as they were (they were rewritten before the check).
  const std::string split_before = read_file(d / "run/split_train.txt");
  AppResult seed = run_app("train_resnet", with(resnet_args(data, d / "run"), {"--resume", "--seed", "7"}));
  CHECK(seed.exit_code == 1);
  CHECK_MESSAGE(seed.output.find("the run used --seed 42") != std::string::npos, seed.output);
  CHECK(read_file(d / "run/split_train.txt") == split_before);
  // A damaged seed is named as damage (the checksum is checked first), not as another run's --seed.
  fs::copy(d / "run", d / "damaged", fs::copy_options::recursive);
  {
    SafetensorsFile f = load_safetensors(d / "damaged/last.safetensors");
    REQUIRE(f.metadata.at(apps::kSeedKey) == "42");
    f.metadata[apps::kSeedKey] = "7";
    save_safetensors(d / "damaged/last.safetensors", f.tensors, f.metadata);
  }
  AppResult damaged = run_app("train_resnet", with(resnet_args(data, d / "damaged"), {"--resume"}));
  CHECK(damaged.exit_code == 1);
  CHECK_MESSAGE(damaged.output.find("last.safetensors: checksum mismatch") != std::string::npos, damaged.output);
  // A fresh run into the folder (no --resume): refused before anything is written, since it would
  // overwrite last.safetensors and could keep the earlier run's best.safetensors as its own.
  const std::string last_before = read_file(d / "run/last.safetensors");
  AppResult fresh = run_app("train_resnet", one);
  CHECK(fresh.exit_code == 2);
  CHECK_MESSAGE(fresh.output.find("holds an earlier run's checkpoints (last.safetensors, best.safetensors): --resume "
                                  "continues that run; --overwrite starts anew") != std::string::npos,
                fresh.output);
  CHECK(read_file(d / "run/last.safetensors") == last_before);
  CHECK(run_app("train_resnet", with(one, {"--resume", "--overwrite"})).exit_code == 2);
  // --resume where only an earlier run's best is left (last removed): refused too, for the same reason.
  fs::create_directories(d / "stale");
  fs::copy_file(d / "run/best.safetensors", d / "stale/best.safetensors");
  AppResult stale = run_app("train_resnet", with(resnet_args(data, d / "stale"), {"--resume"}));
  CHECK(stale.exit_code == 2);
  CHECK_MESSAGE(stale.output.find("has no last.safetensors to continue but holds an earlier run's best") !=
                    std::string::npos,
                stale.output);
  // --overwrite: the earlier checkpoints go first (here the new run, without validation, writes no best).
  fs::copy(d / "run", d / "again", fs::copy_options::recursive);
  std::vector<std::string> again = with(resnet_args(data, d / "again"), {"--overwrite", "--val-fraction", "0"});
  again[5] = "1";
  AppResult over = run_app("train_resnet", again);
  REQUIRE_MESSAGE(over.exit_code == 0, over.output);
  CHECK(over.output.find("--overwrite: removed the earlier run's last.safetensors and best.safetensors") !=
        std::string::npos);
  CHECK_FALSE(fs::exists(d / "again/best.safetensors"));
  CHECK(fs::exists(d / "again/last.safetensors"));
  // Another run's data, split or band order: refused, every difference named, nothing rewritten.
  const std::string fewer = d / "fewer";
  fs::copy(data, fewer, fs::copy_options::recursive);
  fs::remove(fewer + "/Forest/Forest_5.tif");
  AppResult other = run_app("train_resnet", with(resnet_args(fewer, d / "run"),
                                                 {"--resume", "--train-fraction", "0.7", "--bands", "sen12ms",
                                                  "--pack", d / "p"}));
  CHECK_FALSE(fs::exists(d / "p"));  // the pack is built after the check: a refused resume builds none
  CHECK(other.exit_code == 1);
  CHECK_MESSAGE(other.output.find("last.safetensors: belongs to another run") != std::string::npos, other.output);
  for (const char* line : {"data: '60 tiles, index ", "' now", "split: '--train-fraction 0.8 --val-fraction 0.1' in "
                           "the checkpoint, '--train-fraction 0.7 --val-fraction 0.1' now",
                           "bands: 'B1,B2,B3,B4,B5,B6,B7,B8,B9,B10,B11,B12,B8A' in the checkpoint, "
                           "'B1,B2,B3,B4,B5,B6,B7,B8,B8A,B9,B10,B11,B12' now"})
    CHECK_MESSAGE(other.output.find(line) != std::string::npos, line, "\n", other.output);
  CHECK(other.output.find("59 tiles, index ") != std::string::npos);
  CHECK(read_file(d / "run/split_train.txt") == split_before);
  // The same tiles in another folder are the same data: the run resumes from there.
  const std::string moved = d / "moved";
  fs::rename(data, moved);
  std::vector<std::string> two = resnet_args(moved, d / "run");
  two[5] = "2";
  AppResult resumed = run_app("train_resnet", with(two, {"--resume"}));
  CHECK_MESSAGE(resumed.exit_code == 0, resumed.output);
  CHECK(resumed.output.find("after epoch 1") != std::string::npos);
  CHECK(read_file(d / "run/split_train.txt") == split_before);
  fs::rename(moved, data);
  // Metadata that passes the checksum (rewritten by save_checkpoint) but cannot be resumed from: an epoch
  // beyond --epochs' bound (it wrapped to a negative int), a best score no epoch can beat (NaN) or reach.
  for (const auto& [key, value, says] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"epoch", "2147483648", "metadata \"epoch\" is 2147483648, more than the 1000000 epochs"},
           {"best_val_acc", "nan", "metadata \"best_val_acc\" is nan, outside [-1, 1]"},
           {"best_val_acc", "2", "metadata \"best_val_acc\" is 2, outside [-1, 1]"}}) {
    CAPTURE(value);
    fs::remove_all(d / "meta");
    fs::copy(d / "run", d / "meta", fs::copy_options::recursive);
    const std::string path = d / "meta/last.safetensors";
    models::LoadedModel lm = models::load_model(path);
    std::unique_ptr<Optimizer> opt = apps::make_optimizer("adam", lm.model.module().named_parameters(), 1e-3);
    Metadata meta = load_checkpoint(path, lm.model.module(), opt.get());
    meta[key] = value;
    save_checkpoint(path, lm.model.module(), opt.get(), meta);
    AppResult bad = run_app("train_resnet", with(resnet_args(data, d / "meta"), {"--resume"}));
    CHECK(bad.exit_code == 1);
    CHECK_MESSAGE(bad.output.find(path + ": " + says) != std::string::npos, bad.output);
  }
  // One flipped byte in the tensor data: the checksum catches it.
  const std::string last = d / "run/last.safetensors";
  {
    std::fstream f(last, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-100, std::ios::end);
    char c = 0;
    f.read(&c, 1);
    f.seekp(-100, std::ios::end);
    c = char(c ^ 0x10);
    f.write(&c, 1);
  }
  AppResult r = run_app("train_resnet", with(resnet_args(data, d / "run"), {"--resume"}));
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find(last) != std::string::npos, r.output);
  // Truncated.
  fs::resize_file(last, 100);
  r = run_app("train_resnet", with(resnet_args(data, d / "run"), {"--resume"}));
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find(last) != std::string::npos, r.output);
}

TEST_CASE("trainers: files whose band descriptions contradict the order they are read in are refused") {
  TempDir d("declared_bands");
  // EuroSAT tiles re-saved in SEN12MS order, with descriptions saying so (as rasterio would).
  const std::string data = make_eurosat(d);
  std::vector<std::string> sen12ms_names;
  for (int b : data::sen12ms_bands()) sen12ms_names.emplace_back(data::kS2BandNames[size_t(b)]);
  auto resave = [&](const std::string& path) {
    data::Raster r = data::read_geotiff(path);
    r.data = data::reorder_bands(std::move(r.data), size_t(r.width) * size_t(r.height), data::eurosat_bands(),
                                 data::sen12ms_bands(), path);
    r.band_names = sen12ms_names;
    data::write_geotiff(path, r, {});
  };
  std::vector<std::string> one = resnet_args(data, d / "run");
  one[5] = "1";
  // One re-saved tile, not the first of the training split (which is checked before training): the
  // loader refuses it when it reads it.
  std::vector<std::string> plain = resnet_args(data, d / "plain");
  plain[5] = "1";
  REQUIRE(run_app("train_resnet", plain).exit_code == 0);
  std::istringstream split(read_file(d / "plain/split_train.txt"));
  std::string first_tile, second_tile;
  std::getline(split, first_tile);
  std::getline(split, second_tile);
  REQUIRE_FALSE(second_tile.empty());
  resave(data + "/" + second_tile);
  plain[3] = d / "plain2";
  AppResult in_loader = run_app("train_resnet", plain);
  CHECK(in_loader.exit_code == 1);
  // It had started reading tiles (the input statistics read the training split first).
  CHECK_MESSAGE(in_loader.output.find("input_norm statistics") != std::string::npos, in_loader.output);
  CHECK_MESSAGE(in_loader.output.find(second_tile + ": its band descriptions say") != std::string::npos,
                in_loader.output);
  // The same from a --pack, which keeps the band descriptions.
  plain[3] = d / "plain3";
  AppResult from_pack = run_app("train_resnet", with(plain, {"--pack", d / "tiles.pack"}));
  CHECK(from_pack.exit_code == 1);
  CHECK_MESSAGE(from_pack.output.find("building the raster pack") != std::string::npos, from_pack.output);
  CHECK_MESSAGE(from_pack.output.find(second_tile + ": its band descriptions say") != std::string::npos,
                from_pack.output);
  // Every tile re-saved: refused before training, by the first.
  for (const auto& e : fs::recursive_directory_iterator(data))
    if (e.path().extension() == ".tif" && e.path().string() != data + "/" + second_tile) resave(e.path().string());
  AppResult as_eurosat = run_app("train_resnet", one);  // --bands eurosat, the default
  CHECK(as_eurosat.exit_code == 1);
  CHECK_MESSAGE(as_eurosat.output.find(".tif: its band descriptions say B1,B2,B3,B4,B5,B6,B7,B8,B8A,B9,B10,B11,B12, "
                                       "but it is read as --bands eurosat") != std::string::npos,
                as_eurosat.output);
  CHECK(as_eurosat.output.find("train epoch") == std::string::npos);  // before any training
  AppResult as_said = run_app("train_resnet", with(one, {"--bands", "sen12ms"}));
  CHECK_MESSAGE(as_said.exit_code == 0, as_said.output);
  // A SEN12MS-CR cloudy image in EuroSAT order: DSen2-CR takes SEN12MS order and nothing reorders it.
  const std::string cr = make_sen12mscr(d);
  std::string cloudy;
  for (const auto& e : fs::recursive_directory_iterator(cr))
    if (e.path().string().find("_s2_cloudy_") != std::string::npos && e.path().extension() == ".tif")
      cloudy = std::max(cloudy, e.path().string());  // ROIs2017_winter: not the first triplet, so the loader's check
  data::Raster r = data::read_geotiff(cloudy);
  for (int b : data::eurosat_bands()) r.band_names.emplace_back(data::kS2BandNames[size_t(b)]);
  data::write_geotiff(cloudy, r, {});
  std::vector<std::string> cr_args = dsen2cr_args(cr, d / "cr");
  cr_args[5] = "1";
  AppResult refused = run_app("train_dsen2cr", cr_args);
  CHECK(refused.exit_code == 1);
  CHECK_MESSAGE(refused.output.find(cloudy + ": its band descriptions say B1,B2,B3,B4,B5,B6,B7,B8,B9,B10,B11,B12,"
                                    "B8A, but it is read as SEN12MS-CR's band order") != std::string::npos,
                refused.output);
  // Cloudy images stored as float32 (a re-export): the loader takes uint16 only, and the first triplet's
  // files are checked as the loader will check them before any work, not at the first batch.
  TempDir d2("band_contradiction_f32");
  const std::string cr2 = make_sen12mscr(d2);
  for (const auto& e : fs::recursive_directory_iterator(cr2))
    if (e.path().string().find("_s2_cloudy_") != std::string::npos && e.path().extension() == ".tif") {
      data::Raster f = data::read_geotiff(e.path().string());
      data::WriteOptions o;
      o.type = data::SampleType::Float32;
      data::write_geotiff(e.path().string(), f, o);
    }
  std::vector<std::string> f32_args = dsen2cr_args(cr2, d2 / "cr");
  f32_args[5] = "1";
  AppResult f32 = run_app("train_dsen2cr", f32_args);
  CHECK(f32.exit_code == 1);
  CHECK_MESSAGE(f32.output.find(": cloudy S2 must be 13-band uint16 but is 13-band float32") != std::string::npos,
                f32.output);
  CHECK_MESSAGE(f32.output.find("train epoch") == std::string::npos, f32.output);  // before any training
  // S1 in linear power: the same, before any work (a --pack would be built first otherwise).
  TempDir d3("linear_sar");
  const std::string cr3 = make_sen12mscr(d3);
  for (const auto& e : fs::recursive_directory_iterator(cr3))
    if (e.path().filename().string().find("_s1_") != std::string::npos && e.path().extension() == ".tif") {
      data::Raster f = data::read_geotiff(e.path().string());
      for (float& x : f.data) x = std::pow(10.f, x / 10.f);
      data::WriteOptions o;
      o.type = data::SampleType::Float32;
      data::write_geotiff(e.path().string(), f, o);
    }
  std::vector<std::string> lin_args = dsen2cr_args(cr3, d3 / "cr");
  lin_args[5] = "1";
  AppResult lin = run_app("train_dsen2cr", with(lin_args, {"--pack", d3 / "cr.pack"}));
  CHECK(lin.exit_code == 1);
  CHECK_MESSAGE(lin.output.find("% of its S1 values are above 0") != std::string::npos, lin.output);
  CHECK_MESSAGE(lin.output.find("train epoch") == std::string::npos, lin.output);
  CHECK_FALSE(fs::exists(d3 / "cr.pack"));
}

TEST_CASE("train_resnet: --optimizer adamw --weight-decay trains with AdamW, and its checkpoint says so") {
  TempDir d("resnet_adamw");
  const std::string data = make_eurosat(d);
  std::vector<std::string> args = resnet_args(data, d / "run");
  args[5] = "1";
  AppResult r = run_app("train_resnet", with(args, {"--optimizer", "adamw", "--weight-decay", "0.05"}));
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  SafetensorsFile f = load_safetensors(d / "run/last.safetensors");
  CHECK(f.metadata.at("optim.type") == "adamw");
  CHECK(f.metadata.at("optim.weight_decay") == "0.05");
  // Another decay on resume: the optimiser's state was made with this one.
  args[5] = "2";
  AppResult other = run_app("train_resnet", with(args, {"--resume", "--optimizer", "adamw", "--weight-decay", "0.1"}));
  CHECK(other.exit_code == 1);
  CHECK_MESSAGE(other.output.find("weight_decay") != std::string::npos, other.output);
}

TEST_CASE("train_resnet: input_norm holds the training split's per-band reflectance mean and std (SEN12MS order)") {
  TempDir d("resnet_norm");
  const std::string data = make_eurosat(d);
  std::vector<std::string> args = resnet_args(data, d / "run");
  args[5] = "1";
  REQUIRE(run_app("train_resnet", with(args, {"--norm-samples", "0"})).exit_code == 0);
  // Recompute from the split file it wrote, independently: EuroSAT file band i is S2 band kEuroSatFileOrder[i].
  data::EuroSat ds(data);
  const std::vector<size_t> train = ds.read_split_file(d / "run/split_train.txt");
  REQUIRE(train.size() == 50);
  std::vector<double> s(13), s2(13);
  double n = 0;
  for (size_t i : train) {
    data::Raster r = data::read_geotiff(ds.items()[i].path);
    const size_t hw = size_t(r.width * r.height);
    for (size_t fb = 0; fb < 13; ++fb) {
      const size_t band = size_t(data::kEuroSatFileOrder[fb]);
      for (size_t k = 0; k < hw; ++k) {
        const double v = std::min(std::max(double(r.data[fb * hw + k]), 0.0), 10000.0) / 10000.0;
        s[band] += v;
        s2[band] += v * v;
      }
    }
    n += double(hw);
  }
  std::vector<double> mean(13), sd(13);
  for (size_t c = 0; c < 13; ++c) {
    mean[c] = s[c] / n;
    sd[c] = std::max(std::sqrt(s2[c] / n - mean[c] * mean[c]), 0.01);  // floored at 100 DN (train_resnet)
  }
  REQUIRE(sd[10] == 0.01);  // B10 (cirrus) is nearly flat on clear tiles: the floor is exercised
  SafetensorsFile f = load_safetensors(d / "run/last.safetensors");
  check_close(f.at("input_norm.mean").to_vector(), mean, 1e-6, 1e-5, "input_norm.mean");
  check_close(f.at("input_norm.std").to_vector(), sd, 1e-6, 1e-4, "input_norm.std");
  CHECK(f.metadata.at("bands") == "B1,B2,B3,B4,B5,B6,B7,B8,B8A,B9,B10,B11,B12");  // what it trained on
}

namespace {
// The parameters (not the buffers: batch norm's running statistics move whatever the rate) of two files
// within `atol`: a run at --lr 1e-12 moves each by about 1e-12 a step, so its last checkpoint holds the
// weights it started from. Names in `except` are left out; returns how many were compared.
int check_parameters_close(const std::string& a, const std::string& b, double atol,
                           const std::vector<std::string>& except = {}) {
  SafetensorsFile fa = load_safetensors(a), fb = load_safetensors(b);
  int compared = 0;
  for (const auto& [name, t] : fa.tensors) {
    const bool param = name.ends_with(".weight") || name.ends_with(".bias");
    if (!param || name.starts_with("optim.") || std::find(except.begin(), except.end(), name) != except.end())
      continue;
    const Tensor* u = fb.find(name);
    REQUIRE_MESSAGE(u, name, " missing in ", b);
    check_close(t.to_vector(), u->to_vector(), atol, 0, name);
    ++compared;
  }
  return compared;
}
}  // namespace

// --init FILE: a fresh run starts from a model file's weights. At --lr 1e-12 its first epoch's
// checkpoint still holds them (within 1e-10, where the weights are ~1e-2 and up), while the same run
// without --init holds the usual initialisation (it differs by far more).
TEST_CASE("train_dsen2cr: --init starts from a model file's weights, refuses one that does not fit, and a resume names it") {
  TempDir d("dsen2cr_init");
  const std::string data = make_sen12mscr(d);
  Rng rng(7);
  models::Model m = models::build_model(models::ModelConfig::of(models::DSen2CRConfig{1, 8, true}), rng);
  for (auto& [name, t] : m.module().named_parameters())  // biases 0 at build: give them values to carry
    if (name.ends_with(".bias")) t.copy_(Tensor::from_vector(t.shape(), std::vector<float>(size_t(t.numel()), 0.03f)));
  const std::string from = d / "from.safetensors";
  models::save_model(from, m);
  std::vector<std::string> args = dsen2cr_args(data, d / "run");
  args[5] = "1";  // --epochs
  AppResult r = run_app("train_dsen2cr", with(args, {"--init", from, "--lr", "1e-12"}));
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  CHECK_MESSAGE(r.output.find("train_dsen2cr: --init: 8 tensors from " + from) != std::string::npos, r.output);
  CHECK(check_parameters_close(from, d / "run/last.safetensors", 1e-10) == 8);
  CHECK(load_safetensors(d / "run/last.safetensors").metadata.at("run.init").starts_with("from.safetensors, content "));
  // Without --init: the run's own initialisation, far from the file's.
  AppResult plain = run_app("train_dsen2cr", with(dsen2cr_args(data, d / "plain"), {"--epochs", "1", "--lr", "1e-12"}));
  REQUIRE_MESSAGE(plain.exit_code == 0, plain.output);
  const std::vector<float> a = load_safetensors(from).at("head.weight").to_vector(),
                           b = load_safetensors(d / "plain/last.safetensors").at("head.weight").to_vector();
  double far = 0;
  for (size_t i = 0; i < a.size(); ++i) far = std::max(far, double(std::fabs(a[i] - b[i])));
  CHECK(far > 0.05);
  // A resume need not name the file again (its weights come from last.safetensors, which goes on saying
  // where the run started); naming another file, or one for a run that started without, is refused.
  args[5] = "2";
  models::save_model(d / "other.safetensors", models::build_model(models::ModelConfig::of(models::DSen2CRConfig{1, 8, true}), rng));
  AppResult other = run_app("train_dsen2cr", with(args, {"--resume", "--init", d / "other.safetensors"}));
  CHECK(other.exit_code == 1);
  CHECK_MESSAGE(other.output.find("init: 'from.safetensors, content ") != std::string::npos, other.output);
  AppResult same = run_app("train_dsen2cr", with(args, {"--resume", "--lr", "1e-12"}));
  CHECK_MESSAGE(same.exit_code == 0, same.output);
  CHECK_MESSAGE(same.output.find("--init: ") == std::string::npos, same.output);  // weights from last.safetensors
  CHECK(load_safetensors(d / "run/last.safetensors").metadata.at("run.init").starts_with("from.safetensors, content "));
  args[5] = "3";
  AppResult again = run_app("train_dsen2cr", with(args, {"--resume", "--init", from, "--lr", "1e-12"}));
  CHECK_MESSAGE(again.exit_code == 0, again.output);
  AppResult late = run_app("train_dsen2cr", with(dsen2cr_args(data, d / "plain"), {"--epochs", "2", "--resume", "--init", from}));
  CHECK(late.exit_code == 1);
  CHECK_MESSAGE(late.output.find("init: '(none)' in the checkpoint, 'from.safetensors, content ") != std::string::npos,
                late.output);
  // The run's own checkpoint as --init of a run that would replace it: refused, the file kept.
  AppResult own = run_app("train_dsen2cr", with(args, {"--overwrite", "--init", d / "run/last.safetensors"}));
  CHECK(own.exit_code == 2);
  CHECK_MESSAGE(own.output.find("is also --init (an input): refusing to overwrite it") != std::string::npos, own.output);
  CHECK(fs::exists(d / "run/last.safetensors"));
  // Another model: refused before training, listing what does not fit, the run folder not left behind.
  AppResult wider = run_app("train_dsen2cr", with(dsen2cr_args(data, d / "wider"), {"--init", from, "--features", "4"}));
  CHECK(wider.exit_code == 1);
  CHECK_MESSAGE(wider.output.find(from + ": holds dsen2cr(B=1, F=8, SAR), which does not fit this run's dsen2cr(B=1, "
                                  "F=4, SAR); 7 shaped otherwise: head.weight (8,15,3,3) in the file, (4,15,3,3) "
                                  "here") != std::string::npos,
                wider.output);
  CHECK_FALSE(fs::exists(d / "wider"));
  // ... and with --overwrite into an earlier run's folder, before its checkpoints are removed.
  const std::string before = read_file(d / "run/last.safetensors");
  AppResult over = run_app("train_dsen2cr", with(args, {"--overwrite", "--init", from, "--features", "4"}));
  CHECK(over.exit_code == 1);
  CHECK_MESSAGE(over.output.find("which does not fit this run's dsen2cr(B=1, F=4, SAR)") != std::string::npos,
                over.output);
  CHECK(read_file(d / "run/last.safetensors") == before);
  AppResult nosar = run_app("train_dsen2cr", with(dsen2cr_args(data, d / "nosar"), {"--init", from, "--no-sar"}));
  CHECK(nosar.exit_code == 1);
  CHECK_MESSAGE(nosar.output.find("1 shaped otherwise: head.weight (8,15,3,3) in the file, (8,13,3,3) here") !=
                    std::string::npos,
                nosar.output);
  // A classifier is not a DSen2-CR: every name missing, every one of its own unexpected.
  Rng rng2(8);
  models::save_model(d / "clf.safetensors", tiny_classifier(rng2));
  AppResult clf = run_app("train_dsen2cr", with(dsen2cr_args(data, d / "clf"), {"--init", d / "clf.safetensors"}));
  CHECK(clf.exit_code == 1);
  CHECK_MESSAGE(clf.output.find(": holds resnet(basic [1,1,1,1] width 4, 13 -> 10), which does not fit this run's "
                                "dsen2cr(B=1, F=8, SAR); 8 missing: head.weight, head.bias") != std::string::npos,
                clf.output);
  AppResult none = run_app("train_dsen2cr", with(dsen2cr_args(data, d / "none"), {"--init", d / "no_such.safetensors"}));
  CHECK(none.exit_code != 0);
  CHECK_MESSAGE(none.output.find("no_such.safetensors: cannot open safetensors file") != std::string::npos, none.output);
}

// A classifier from another task: the backbone carried over, fc started anew when its classes differ or
// it has none; input_norm the file's when it has one (its weights were trained on that scaling), else
// measured on this run's tiles.
TEST_CASE("train_resnet: --init carries a backbone over, fc starts anew for other classes, input_norm as the file says") {
  TempDir d("resnet_init");
  const std::string data = make_eurosat(d);
  models::ResNetConfig rc = tiny_classifier_config();
  rc.classes = 7;  // another task's head
  Rng rng(11);
  models::Model m = models::build_model(models::ModelConfig::of(rc), rng);
  std::vector<float> mean(13), sd(13);
  for (int c = 0; c < 13; ++c) mean[size_t(c)] = 0.1f + 0.01f * float(c), sd[size_t(c)] = 0.05f + 0.002f * float(c);
  m.classifier->set_input_norm(mean, sd);
  const std::string from = d / "seven.safetensors";
  models::SaveOptions so;
  so.extra = {{"bands", "B1,B2,B3,B4,B5,B6,B7,B8,B8A,B9,B10,B11,B12"}};
  models::save_model(from, m, so);
  const auto run = [&](const std::string& out, const std::vector<std::string>& more) {
    std::vector<std::string> args = resnet_args(data, d / out);
    args[5] = "1";
    AppResult r = run_app("train_resnet", with(with(args, {"--lr", "1e-12"}), more));
    REQUIRE_MESSAGE(r.exit_code == 0, r.output);
    return r;
  };
  const AppResult r = run("run", {"--init", from});
  CHECK_MESSAGE(r.output.find("kept this run's own fc.weight ((7,32) in the file, (10,32) here: another number of "
                              "classes)") != std::string::npos,
                r.output);
  CHECK_MESSAGE(r.output.find("input_norm from the file") != std::string::npos, r.output);
  const std::string last = d / "run/last.safetensors";
  CHECK(check_parameters_close(from, last, 1e-10, {"fc.weight", "fc.bias"}) > 10);
  const SafetensorsFile f = load_safetensors(last);
  CHECK(f.at("input_norm.mean").to_vector() == mean);
  CHECK(f.at("input_norm.std").to_vector() == sd);
  // fc as the run without --init made it (the same draws: --init takes none), not the file's.
  run("plain", {});
  const std::string plain = d / "plain/last.safetensors";
  SafetensorsFile fp = load_safetensors(plain);
  check_close(f.at("fc.weight").to_vector(), fp.at("fc.weight").to_vector(), 1e-10, 0, "fc.weight vs the plain run");
  {  // conv1 the file's, far from the plain run's
    const std::vector<float> a = f.at("conv1.weight").to_vector(), b = fp.at("conv1.weight").to_vector();
    double far = 0;
    for (size_t i = 0; i < a.size(); ++i) far = std::max(far, double(std::fabs(a[i] - b[i])));
    CHECK(far > 0.05);
  }
  // A backbone as PyTorch files come (no metadata, no fc, no input_norm): input_norm measured on the tiles.
  std::vector<std::pair<std::string, Tensor>> backbone;
  for (auto& [name, t] : m.module().state_dict())
    if (!name.starts_with("fc.") && !name.starts_with("input_norm.")) backbone.emplace_back(name, t);
  save_safetensors(d / "backbone.safetensors", backbone, {});
  const AppResult b = run("bb", {"--init", d / "backbone.safetensors"});
  CHECK_MESSAGE(b.output.find("kept this run's own fc.weight (not in the file)") != std::string::npos, b.output);
  CHECK_MESSAGE(b.output.find("kept this run's own input_norm.mean (not in the file)") != std::string::npos, b.output);
  const SafetensorsFile fb = load_safetensors(d / "bb/last.safetensors");
  CHECK(fb.at("input_norm.mean").to_vector() == fp.at("input_norm.mean").to_vector());
  CHECK(check_parameters_close(from, d / "bb/last.safetensors", 1e-10, {"fc.weight", "fc.bias"}) > 10);
  // --input-norm: plain reflectance (a torchgeo backbone's scaling), or measured despite the file's own.
  run("identity", {"--init", d / "backbone.safetensors", "--input-norm", "identity"});
  const SafetensorsFile fi = load_safetensors(d / "identity/last.safetensors");
  CHECK(fi.at("input_norm.mean").to_vector() == std::vector<float>(13, 0.f));
  CHECK(fi.at("input_norm.std").to_vector() == std::vector<float>(13, 1.f));
  const AppResult measured = run("measured", {"--init", from, "--input-norm", "measure"});
  CHECK_MESSAGE(measured.output.find("input_norm from the file") == std::string::npos, measured.output);
  const SafetensorsFile fm = load_safetensors(d / "measured/last.safetensors");
  CHECK(fm.at("input_norm.std").to_vector() == fp.at("input_norm.std").to_vector());
  // A file whose metadata says another band order: its conv1 would see the bands shuffled.
  so.extra = {{"bands", "B2,B3,B4,B5,B6,B7,B8,B11,B12,B1,B9,B10,B8A"}};
  models::save_model(d / "shuffled.safetensors", m, so);
  std::vector<std::string> args = resnet_args(data, d / "shuffled");
  AppResult shuffled = run_app("train_resnet", with(args, {"--init", d / "shuffled.safetensors"}));
  CHECK(shuffled.exit_code == 1);
  CHECK_MESSAGE(shuffled.output.find("shuffled.safetensors: its metadata says it takes bands B2,B3,") != std::string::npos,
                shuffled.output);
  CHECK_FALSE(fs::exists(d / "shuffled"));  // refused before the split files: the new folder went with it
  // Another width: refused, naming the file's model and this run's.
  AppResult wide = run_app("train_resnet", with(args, {"--init", from, "--width", "8", "--overwrite"}));
  CHECK(wide.exit_code == 1);
  CHECK_MESSAGE(wide.output.find("seven.safetensors: holds resnet(basic [1,1,1,1] width 4, 13 -> 7), which does not fit "
                                 "this run's resnet(basic [1,1,1,1] width 8, 13 -> 10)") != std::string::npos,
                wide.output);
}

TEST_CASE("train_dsen2cr: SIGKILL then --resume equals an uninterrupted run with metrics per epoch") {
  TempDir d("dsen2cr_kill");
  const std::string data = make_sen12mscr(d);
  // 4 train triplets, batch 2: 2 steps per epoch; step 3 is in epoch 2.
  check_kill_resume("train_dsen2cr", dsen2cr_args(data, d / "a"), dsen2cr_args(data, d / "b"), 3);
  check_same_tensors(d / "a/last.safetensors", d / "b/last.safetensors");
  check_same_tensors(d / "a/best.safetensors", d / "b/best.safetensors");
  check_best_score(d / "a", "best_val_loss", 3, true);
  check_best_score(d / "b", "best_val_loss", 3, true);
  const std::string csv = read_file(d / "a/metrics.csv");
  CHECK(csv == read_file(d / "b/metrics.csv"));
  CHECK(csv.rfind("epoch,lr,train_loss,val_loss,val_mae,val_rmse,val_psnr,val_ssim,val_sam\n", 0) == 0);
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 4);
  CHECK(csv.find("nan") == std::string::npos);  // one val triplet: every metric exists
  SafetensorsFile f = load_safetensors(d / "a/last.safetensors");
  CHECK(f.metadata.at("optim.type") == "nadam");
  models::LoadedModel lm = models::load_model(d / "a/last.safetensors");
  REQUIRE(lm.model.dsen2cr);
  CHECK(lm.model.dsen2cr->config() == models::DSen2CRConfig{1, 8, true});
}

TEST_CASE("train_dsen2cr: --augment-on device trains bit for bit as the host augmentation") {
  // The loader draws the flips, masks the turned crop in place and leaves the pixels as read; the
  // model's device turns them. A step that forgot a field (or turned the mask twice) would differ.
  TempDir d("dsen2cr_augment");
  const std::string data = make_sen12mscr(d);
  check_augment_on_device("train_dsen2cr", [&](const std::string& out) { return dsen2cr_args(data, out); }, d);
}

TEST_CASE("train_dsen2cr: NaN loss stops naming the step and the l1 / adam / no-sar options work") {
  TempDir d("dsen2cr_nan");
  const std::string data = make_sen12mscr(d);
  AppResult r = run_app("train_dsen2cr", with(dsen2cr_args(data, d / "run"), {"--debug-inject-nan-at-step", "2"}));
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("loss is NaN at step 2 (epoch 2, batch 1)") != std::string::npos, r.output);
  CHECK(models::load_model(d / "run/last.safetensors").epoch == 1);
  std::vector<std::string> args = dsen2cr_args(data, d / "l1");
  args[5] = "1";
  AppResult ok = run_app("train_dsen2cr", with(args, {"--loss", "l1", "--optimizer", "adam", "--no-sar"}));
  REQUIRE_MESSAGE(ok.exit_code == 0, ok.output);
  SafetensorsFile f = load_safetensors(d / "l1/last.safetensors");
  CHECK(f.metadata.at("optim.type") == "adam");
  CHECK(f.at("head.weight").size(1) == 13);
  CHECK(f.metadata.at("run.loss") == "l1");
  CHECK(f.metadata.at("run.data").rfind("5 triplets (4 train, 1 val), index ", 0) == 0);
  // AdamW with a decoupled decay: its checkpoint says so; resumed as Adam it is refused; Nadam takes none.
  std::vector<std::string> w_args = dsen2cr_args(data, d / "adamw");
  w_args[5] = "1";
  AppResult adamw = run_app("train_dsen2cr", with(w_args, {"--optimizer", "adamw", "--weight-decay", "0.01"}));
  REQUIRE_MESSAGE(adamw.exit_code == 0, adamw.output);
  SafetensorsFile fw = load_safetensors(d / "adamw/last.safetensors");
  CHECK(fw.metadata.at("optim.type") == "adamw");
  CHECK(fw.metadata.at("optim.weight_decay") == "0.01");
  w_args[5] = "2";
  AppResult as_adam = run_app("train_dsen2cr", with(w_args, {"--resume", "--optimizer", "adam", "--weight-decay",
                                                              "0.01"}));
  CHECK(as_adam.exit_code == 1);
  CHECK_MESSAGE(as_adam.output.find("saved by adamw, loading into adam") != std::string::npos, as_adam.output);
  AppResult nadam_wd = run_app("train_dsen2cr", with(dsen2cr_args(data, d / "nadam_wd"), {"--weight-decay", "0.1"}));
  CHECK(nadam_wd.exit_code == 2);
  CHECK_MESSAGE(nadam_wd.output.find("Keras-2 Nadam has none") != std::string::npos, nadam_wd.output);
  CHECK_FALSE(fs::exists(d / "nadam_wd"));
  // A crop larger than the 64x64 images: a usage error before any training, naming a file.
  AppResult big = run_app("train_dsen2cr", with(dsen2cr_args(data, d / "big"), {"--crop", "65"}));
  CHECK(big.exit_code == 2);
  CHECK_MESSAGE(big.output.find("--crop 65 is larger than the images: " + data) != std::string::npos, big.output);
  CHECK_MESSAGE(big.output.find(" is 64x64; give --crop 64 or less") != std::string::npos, big.output);
  CHECK(big.output.find("train epoch") == std::string::npos);
  // Its best validation loss was an L1 loss with masks at threshold 0.2: a resume measuring CARL, or
  // masks at another threshold, would compare unlike numbers, and one on other triplets other data.
  fs::remove_all(data + "/ROIs1158_spring_s2_cloudy/s2_cloudy_17");  // the val triplet
  AppResult other = run_app("train_dsen2cr", with(args, {"--resume", "--optimizer", "adam", "--no-sar",
                                                         "--cloud-threshold", "0.3", "--crop", "16"}));
  CHECK(other.exit_code == 1);
  for (const char* line : {"l1/last.safetensors: belongs to another run",
                           "loss: 'l1' in the checkpoint, 'carl --lambda 1' now",
                           "cloud-threshold: '0.2' in the checkpoint, '0.3' now",
                           "crop: '32' in the checkpoint, '16' now",
                           "data: '5 triplets (4 train, 1 val), index "})
    CHECK_MESSAGE(other.output.find(line) != std::string::npos, line, "\n", other.output);
  CHECK(other.output.find("'4 triplets (4 train, 0 val), index ") != std::string::npos);
}

TEST_CASE("trainers: --pack gives the same weights as the files, builds once, rebuilds when a file changes") {
  TempDir d("pack");
  const std::string cr_data = make_sen12mscr(d), eurosat = make_eurosat(d);
  AppResult plain = run_app("train_dsen2cr", dsen2cr_args(cr_data, d / "cr_files"));
  REQUIRE_MESSAGE(plain.exit_code == 0, plain.output);
  AppResult first = run_app("train_dsen2cr", with(dsen2cr_args(cr_data, d / "cr_pack"), {"--pack", d / "cr.pack"}));
  REQUIRE_MESSAGE(first.exit_code == 0, first.output);
  CHECK_MESSAGE(first.output.find("building the raster pack") != std::string::npos, first.output);
  check_same_tensors(d / "cr_files/last.safetensors", d / "cr_pack/last.safetensors");
  CHECK(read_file(d / "cr_files/metrics.csv") == read_file(d / "cr_pack/metrics.csv"));
  // A second run reuses the pack.
  AppResult again = run_app("train_dsen2cr", with(dsen2cr_args(cr_data, d / "cr_again"), {"--pack", d / "cr.pack"}));
  REQUIRE_MESSAGE(again.exit_code == 0, again.output);
  CHECK(again.output.find("building the raster pack") == std::string::npos);
  CHECK(again.output.find("reading 15 files from the raster pack") != std::string::npos);

  AppResult rplain = run_app("train_resnet", resnet_args(eurosat, d / "r_files"));
  REQUIRE_MESSAGE(rplain.exit_code == 0, rplain.output);
  AppResult rpack = run_app("train_resnet", with(resnet_args(eurosat, d / "r_pack"), {"--pack", d / "r.pack"}));
  REQUIRE_MESSAGE(rpack.exit_code == 0, rpack.output);
  check_same_tensors(d / "r_files/last.safetensors", d / "r_pack/last.safetensors");
  // A tile rewritten: the next run says which and rebuilds.
  std::string tile;
  for (const auto& e : fs::recursive_directory_iterator(eurosat))
    if (e.path().extension() == ".tif") {
      tile = e.path().string();
      break;
    }
  REQUIRE(!tile.empty());
  data::Raster r = data::read_geotiff(tile);
  r.data[0] += 1;
  data::write_geotiff(tile, r, data::WriteOptions{});
  AppResult stale = run_app("train_resnet", with(resnet_args(eurosat, d / "r_stale"), {"--pack", d / "r.pack"}));
  REQUIRE_MESSAGE(stale.exit_code == 0, stale.output);
  CHECK_MESSAGE(stale.output.find("changed since the pack was built") != std::string::npos, stale.output);
  // A --pack that names someone's file is refused and the file kept: a training tile (an input of the
  // run), and a checkpoint (no pack magic).
  const std::string tile_bytes = read_file(tile), ckpt_bytes = read_file(d / "r_files/last.safetensors");
  AppResult on_tile = run_app("train_resnet", with(resnet_args(eurosat, d / "r_tile"), {"--pack", tile}));
  CHECK(on_tile.exit_code == 1);
  CHECK_MESSAGE(on_tile.output.find("refusing to") != std::string::npos, on_tile.output);
  CHECK(read_file(tile) == tile_bytes);
  AppResult on_ckpt = run_app("train_resnet", with(resnet_args(eurosat, d / "r_ckpt"), {"--pack", d / "r_files/last.safetensors"}));
  CHECK(on_ckpt.exit_code == 1);
  CHECK_MESSAGE(on_ckpt.output.find("is not a raster pack") != std::string::npos, on_ckpt.output);
  CHECK(read_file(d / "r_files/last.safetensors") == ckpt_bytes);
  // A --data list CSV kept in --out under the name of a file the run writes: refused before any work.
  const std::string list = d / "listrun/metrics.csv";
  fs::create_directories(d / "listrun");
  { std::ofstream(list) << "s1,s2,s2_cloudy\n"; }
  AppResult over_list = run_app("train_dsen2cr", dsen2cr_args(list, d / "listrun"));
  CHECK(over_list.exit_code == 2);
  CHECK_MESSAGE(over_list.output.find("is also --data (an input)") != std::string::npos, over_list.output);
  CHECK(read_file(list) == "s1,s2,s2_cloudy\n");
}

namespace {

// The largest relative difference between two checkpoints' tensors (NaN never passes).
double checkpoint_difference(const std::string& a, const std::string& b) {
  SafetensorsFile fa = load_safetensors(a), fb = load_safetensors(b);
  double worst = 0;
  size_t not_finite = 0;
  for (const auto& [name, t] : fa.tensors) {
    const Tensor* u = fb.find(name);
    REQUIRE_MESSAGE(u, name, " missing in ", b);
    const std::vector<float> x = t.to_vector(), y = u->to_vector();
    REQUIRE(x.size() == y.size());
    for (size_t i = 0; i < x.size(); ++i) {
      not_finite += !std::isfinite(x[i]) || !std::isfinite(y[i]);
      worst = std::max(worst, std::fabs(double(x[i]) - y[i]) / (1e-3 + std::fabs(double(y[i]))));
    }
  }
  CHECK(not_finite == 0);
  MESSAGE(a, " vs ", b, ": largest relative difference ", worst);
  return worst;
}

}  // namespace

// --accumulate 2 of batch 1 takes the steps of batch 2 (DSen2-CR has no batch norm; CARL is a mean over
// the batch, so the two halves' gradients, each halved, add up to the whole's): every tensor within a few
// float32 roundings after 3 epochs, with Adam and with Keras' Nadam; batch 1 alone is another run. The
// epoch's training loss is the mean of its batches' either way. Fewer batches in an epoch than one step
// takes is refused before any work.
TEST_CASE("train_dsen2cr: --accumulate 2 of batch 1 trains as batch 2, and fewer batches than a step is refused") {
  TempDir d("accumulate");
  const std::string data = make_sen12mscr(d);  // 4 train triplets: 2 steps of 2 an epoch
  auto args = [&](const std::string& out, const char* batch, const char* optimizer) {
    std::vector<std::string> a = with(dsen2cr_args(data, d / out), {"--optimizer", optimizer, "--lr", "1e-3"});
    a[7] = batch;  // --batch-size
    return a;
  };
  // metrics.csv's training loss (column 3) of the first epoch.
  const auto first_train_loss = [&](const std::string& run) {
    std::istringstream rows(read_file(d / run + "/metrics.csv"));
    std::string row, cell;
    std::getline(rows, row);  // the header
    std::getline(rows, row);
    std::istringstream cells(row);
    for (int i = 0; i < 3; ++i) std::getline(cells, cell, ',');
    REQUIRE_MESSAGE(!cell.empty(), run, "/metrics.csv has no first row");
    return std::stod(cell);
  };
  for (const char* opt : {"nadam", "adam"}) {
    CAPTURE(opt);
    const std::string whole = str("whole_", opt), acc = str("acc_", opt);
    AppResult r1 = run_app("train_dsen2cr", args(whole, "2", opt));
    REQUIRE_MESSAGE(r1.exit_code == 0, r1.output);
    AppResult r2 = run_app("train_dsen2cr", with(args(acc, "1", opt), {"--accumulate", "2"}));
    REQUIRE_MESSAGE(r2.exit_code == 0, r2.output);
    CHECK(checkpoint_difference(d / whole + "/last.safetensors", d / acc + "/last.safetensors") < 1e-4);
    // The first epoch's training loss: the same batches' mean, to the last digits.
    CHECK(first_train_loss(acc) == doctest::Approx(first_train_loss(whole)).epsilon(1e-5));
  }
  AppResult single = run_app("train_dsen2cr", args("single", "1", "adam"));
  REQUIRE_MESSAGE(single.exit_code == 0, single.output);
  CHECK(checkpoint_difference(d / "whole_adam/last.safetensors", d / "single/last.safetensors") > 1e-2);
  // 3 batches a step of the 4: one step an epoch, the fourth batch left out; the epoch's training loss is
  // the mean of the 3 trained (as batch 3's, which leaves the same triplet out), not their sum over 4.
  AppResult three = run_app("train_dsen2cr", with(args("acc3", "1", "adam"), {"--accumulate", "3"}));
  REQUIRE_MESSAGE(three.exit_code == 0, three.output);
  AppResult b3 = run_app("train_dsen2cr", args("b3", "3", "adam"));
  REQUIRE_MESSAGE(b3.exit_code == 0, b3.output);
  CHECK(first_train_loss("acc3") == doctest::Approx(first_train_loss("b3")).epsilon(1e-5));
  AppResult too_many = run_app("train_dsen2cr", with(args("too_many", "1", "adam"), {"--accumulate", "5"}));
  CHECK(too_many.exit_code == 1);
  CHECK_MESSAGE(too_many.output.find("4 training triplets (benchmark split), fewer than one step's 5 batches of 1") !=
                    std::string::npos,
                too_many.output);
}

#ifdef NIMBUS_MPIEXEC  // the data-parallel tests' helpers
namespace {

// metrics.csv's numbers, row by row (the header skipped).
std::vector<std::vector<double>> csv_numbers(const std::string& path) {
  std::vector<std::vector<double>> rows;
  std::istringstream in(read_file(path));
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::vector<double> row;
    std::istringstream cells(line);
    std::string cell;
    while (std::getline(cells, cell, ',')) row.push_back(std::stod(cell));
    rows.push_back(row);
  }
  return rows;
}

}  // namespace
#endif

// Built with MPI (libopenmpi-dev) and mpirun only: without them ctest lists none of these cases.
#ifdef NIMBUS_MPIEXEC
TEST_CASE("data parallel: 2 ranks of batch 1 train DSen2-CR as 1 rank of batch 2, rank 0 alone writes, a failure stops all") {
  TempDir d("dp");
  const std::string data = make_sen12mscr(d);  // 4 train triplets
  auto args = [&](const std::string& out, const char* batch, const char* optimizer) {
    std::vector<std::string> a = with(dsen2cr_args(data, d / out), {"--optimizer", optimizer, "--lr", "1e-3"});
    a[7] = batch;  // --batch-size
    return a;
  };
  // Every tensor of the two checkpoints within a few float32 roundings of each other (the ranks' means
  // are averaged, one process takes one mean: the sums differ in order), and at least one that moved.
  const auto close = checkpoint_difference;
  for (const char* opt : {"nadam", "adam"}) {
    CAPTURE(opt);
    const std::string one = str("one_", opt), two = str("two_", opt);
    AppResult r1 = run_app("train_dsen2cr", args(one, "2", opt));
    REQUIRE_MESSAGE(r1.exit_code == 0, r1.output);
    AppResult r2 = run_app_mpi(2, "train_dsen2cr", args(two, "1", opt));
    REQUIRE_MESSAGE(r2.exit_code == 0, r2.output);
    CHECK(close(d / one + "/last.safetensors", d / two + "/last.safetensors") < 1e-4);
    CHECK(read_file(d / two + "/metrics.csv").size() > 0);
    const std::string done = "train_dsen2cr: done";  // said once, by rank 0
    CHECK(r2.output.find(done) != std::string::npos);
    CHECK(r2.output.find(done) == r2.output.rfind(done));
  }
  // The control: 2 ranks of batch 2 (a global batch of 4, one step per epoch) is a different run.
  AppResult wrong = run_app_mpi(2, "train_dsen2cr", args("two_b2", "2", "adam"));
  REQUIRE_MESSAGE(wrong.exit_code == 0, wrong.output);
  CHECK(close(d / "one_adam/last.safetensors", d / "two_b2/last.safetensors") > 1e-2);
  // --init on 2 ranks: the ranks agree on the file (its name and bytes a run setting), and the run, whose
  // start broadcasts rank 0's weights, trains as one process from it; far from the run without --init.
  Rng init_rng(31);
  models::save_model(d / "init.safetensors",
                     models::build_model(models::ModelConfig::of(models::DSen2CRConfig{1, 8, true}), init_rng));
  const std::vector<std::string> from = {"--init", d / "init.safetensors"};
  AppResult one_init = run_app("train_dsen2cr", with(args("one_init", "2", "adam"), from));
  REQUIRE_MESSAGE(one_init.exit_code == 0, one_init.output);
  AppResult two_init = run_app_mpi(2, "train_dsen2cr", with(args("two_init", "1", "adam"), from));
  REQUIRE_MESSAGE(two_init.exit_code == 0, two_init.output);
  CHECK(close(d / "one_init/last.safetensors", d / "two_init/last.safetensors") < 1e-4);
  CHECK(close(d / "one_adam/last.safetensors", d / "two_init/last.safetensors") > 1e-2);
  // Ranks given files of other contents (each rank may have its own path): stopped before training.
  Rng other_rng(32);
  models::save_model(d / "other_init.safetensors",
                     models::build_model(models::ModelConfig::of(models::DSen2CRConfig{1, 8, true}), other_rng));
  AppResult differ = run_app_mpmd("train_dsen2cr", {with(args("two_differ", "1", "adam"), from),
                                                   with(args("two_differ", "1", "adam"),
                                                        {"--init", d / "other_init.safetensors"})});
  CHECK(differ.exit_code != 0);
  CHECK_MESSAGE(differ.output.find("this rank was given other run settings than rank 0: init 'other_init.safetensors, "
                                   "content ") != std::string::npos,
                differ.output);
  CHECK_FALSE(fs::exists(d / "two_differ/last.safetensors"));
  // With --accumulate 2, each rank's 2 batches of 1 add up before the all-reduce: a step of 4 triplets,
  // as one process with batch 4.
  AppResult four = run_app("train_dsen2cr", args("one_b4", "4", "adam"));
  REQUIRE_MESSAGE(four.exit_code == 0, four.output);
  AppResult acc = run_app_mpi(2, "train_dsen2cr", with(args("two_acc", "1", "adam"), {"--accumulate", "2"}));
  REQUIRE_MESSAGE(acc.exit_code == 0, acc.output);
  CHECK(close(d / "one_b4/last.safetensors", d / "two_acc/last.safetensors") < 1e-4);
  // Rank 0 alone wrote: one metrics.csv with one row per epoch, and the run folder is rank 0's. Given
  // an --out of its own, rank 1 leaves it unmade: it writes nothing anywhere it is told to.
  const std::string csv = read_file(d / "two_adam/metrics.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 4);
  AppResult own = run_app_mpmd("train_dsen2cr", {args("two_own_0", "1", "adam"), args("two_own_1", "1", "adam")});
  REQUIRE_MESSAGE(own.exit_code == 0, own.output);
  CHECK(std::filesystem::exists(d / "two_own_0/last.safetensors"));
  CHECK_FALSE(std::filesystem::exists(d / "two_own_1"));
  // A NaN on every rank at step 3 stops the run (exit 1) naming the step; epoch 1's checkpoint stays.
  AppResult nan = run_app_mpi(2, "train_dsen2cr", with(args("two_nan", "1", "adam"), {"--debug-inject-nan-at-step", "3"}));
  CHECK(nan.exit_code != 0);
  CHECK_MESSAGE(nan.output.find("loss is NaN at step 3") != std::string::npos, nan.output);
  CHECK(models::load_model(d / "two_nan/last.safetensors").epoch == 1);
  // A rank that cannot start (here: rank 0 holds the run folder of a second run into it) ends every rank.
  apps::RunFolder held(d / "two_held", "test");
  AppResult held_run = run_app_mpi(2, "train_dsen2cr", args("two_held", "1", "adam"));
  CHECK(held_run.exit_code != 0);
  CHECK_MESSAGE(held_run.output.find("rank 0 of 2") != std::string::npos, held_run.output);
  // A process group this build does not have: a clear error on every rank (naming it by the
  // launcher's numbers: making the group is what failed), and every rank stops.
  ::setenv("NIMBUS_PROCESS_GROUP", "bogus", 1);
  AppResult bogus = run_app_mpi(2, "train_dsen2cr", args("two_bogus", "1", "adam"));
  AppResult bogus1 = run_app("train_dsen2cr", args("one_bogus", "2", "adam"));
  ::unsetenv("NIMBUS_PROCESS_GROUP");
  CHECK(bogus.exit_code != 0);
  CHECK_MESSAGE(bogus.output.find("rank 1 of 2 (no process group yet)): NIMBUS_PROCESS_GROUP=bogus: no such process group") !=
                    std::string::npos,
                bogus.output);
  CHECK(bogus1.exit_code == 1);
  CHECK_MESSAGE(bogus1.output.find("train_dsen2cr: NIMBUS_PROCESS_GROUP=bogus: no such process group") != std::string::npos,
                bogus1.output);
}
#endif

#ifdef NIMBUS_MPIEXEC
TEST_CASE("data parallel: ResNet with synchronised batch norm, 2 ranks of batch 4 train as 1 rank of batch 8, scores over all ranks") {
  TempDir d("dp_resnet");
  const std::string data = make_eurosat(d);  // 50 training tiles: 6 global batches of 8 per epoch
  // Without flips: with them, this data's trajectory passes within rounding of a discontinuity (a
  // max-pool or ReLU near-tie) at its 6th step on some machines, where a one-process run with the
  // learning rate times (1 + 1e-7) ended as far from the plain run as the two ranks did (1.7 relative,
  // Adam's moments). The flips on several ranks are checked by train_dsen2cr's data-parallel test.
  auto args = [&](const std::string& out, const char* batch) {
    std::vector<std::string> a = with(resnet_args(data, d / out), {"--no-augment"});
    a[7] = batch;  // --batch-size
    return a;
  };
  AppResult one = run_app("train_resnet", args("one", "8"));
  REQUIRE_MESSAGE(one.exit_code == 0, one.output);
  // The control: a rounding-sized change (the rate times 1 + 1e-6, a few float32 steps) moves this run's
  // end, but by far less than the tolerance below.
  AppResult nudged = run_app("train_resnet", with(args("nudged", "8"), {"--lr", "1.000001e-3"}));
  REQUIRE_MESSAGE(nudged.exit_code == 0, nudged.output);
  const double control = checkpoint_difference(d / "one/last.safetensors", d / "nudged/last.safetensors");
  CHECK(control > 0);
  REQUIRE_MESSAGE(control < 1e-4, "the trajectory itself is ill-conditioned: the comparison of ranks cannot be trusted");
  AppResult sync = run_app_mpi(2, "train_resnet", with(args("sync", "4"), {"--sync-bn"}));
  REQUIRE_MESSAGE(sync.exit_code == 0, sync.output);
  CHECK(sync.output.find("batch norm synchronised over 2 ranks") != std::string::npos);
  AppResult per_rank = run_app_mpi(2, "train_resnet", args("per_rank", "4"));
  REQUIRE_MESSAGE(per_rank.exit_code == 0, per_rank.output);
  // Weights, optimiser state and running statistics after 3 epochs: a few float32 roundings apart with
  // synchronised batch norm; each rank's own statistics of 4 make a different run.
  CHECK(checkpoint_difference(d / "one/last.safetensors", d / "sync/last.safetensors") < 3e-4);
  CHECK(checkpoint_difference(d / "one/last.safetensors", d / "per_rank/last.safetensors") > 1e-2);
  // The epoch's scores are every rank's together: training loss and accuracy over all 48 tiles, validation
  // over all 10 (each rank validated its share), equal to the one-process run's.
  const auto a = csv_numbers(d / "one/metrics.csv"), b = csv_numbers(d / "sync/metrics.csv");
  REQUIRE(a.size() == 3);
  REQUIRE(b.size() == 3);
  for (size_t e = 0; e < 3; ++e) {
    CAPTURE(e);
    REQUIRE(a[e].size() == 6);  // epoch, lr, train_loss, train_acc, val_loss, val_acc
    REQUIRE(b[e].size() == 6);
    for (size_t k = 0; k < 6; ++k) CHECK(b[e][k] == doctest::Approx(a[e][k]).epsilon(1e-3));
  }
  // Only rank 0 drew progress bars: one "train epoch 1" final line, not two.
  const std::string marker = "train epoch 1: ";
  size_t bars = 0;
  for (size_t at = sync.output.find(marker); at != std::string::npos; at = sync.output.find(marker, at + 1)) ++bars;
  CHECK(bars == 1);
}

TEST_CASE("data parallel: --resume with another number of ranks continues the same run") {
  TempDir d("dp_resume");
  const std::string data = make_sen12mscr(d);  // 4 train triplets: 2 global batches of 2 per epoch
  auto args = [&](const std::string& out, const char* batch, const char* epochs) {
    std::vector<std::string> a = dsen2cr_args(data, d / out);
    a[5] = epochs, a[7] = batch;  // --epochs, --batch-size
    return a;
  };
  AppResult full = run_app_mpi(2, "train_dsen2cr", args("full", "1", "3"));
  REQUIRE_MESSAGE(full.exit_code == 0, full.output);
  // 2 epochs on 2 ranks of batch 1, the third on 1 process of batch 2 (the same global batch), and back.
  AppResult first = run_app_mpi(2, "train_dsen2cr", args("switch", "1", "2"));
  REQUIRE_MESSAGE(first.exit_code == 0, first.output);
  AppResult rest = run_app("train_dsen2cr", with(args("switch", "2", "3"), {"--resume"}));
  REQUIRE_MESSAGE(rest.exit_code == 0, rest.output);
  CHECK(rest.output.find("resuming from") != std::string::npos);
  CHECK(checkpoint_difference(d / "full/last.safetensors", d / "switch/last.safetensors") < 1e-4);
  AppResult first1 = run_app("train_dsen2cr", args("back", "2", "2"));
  REQUIRE_MESSAGE(first1.exit_code == 0, first1.output);
  AppResult rest2 = run_app_mpi(2, "train_dsen2cr", with(args("back", "1", "3"), {"--resume"}));
  REQUIRE_MESSAGE(rest2.exit_code == 0, rest2.output);
  CHECK(checkpoint_difference(d / "full/last.safetensors", d / "back/last.safetensors") < 1e-4);
  CHECK(models::load_model(d / "back/last.safetensors").epoch == 3);
  // A rank that does not see the checkpoint (here: rank 1 given another --out, as an --out on a disk of
  // its own would be): every rank stops, saying so, instead of rank 1 starting over while rank 0 resumes.
  const std::string before = read_file(d / "back/last.safetensors");
  AppResult split = run_app_mpmd("train_dsen2cr", {with(args("back", "1", "4"), {"--resume"}),
                                                   with(args("elsewhere", "1", "4"), {"--resume"})});
  CHECK(split.exit_code != 0);
  CHECK_MESSAGE(split.output.find("exists for 1 of 2 ranks") != std::string::npos, split.output);
  CHECK(read_file(d / "back/last.safetensors") == before);  // untouched
  // A fresh run where only rank 1's --out (a disk of its own, as above) holds an earlier run: every rank
  // refuses without --overwrite; with it, rank 1 removes its copy too, which would otherwise stop a
  // later --resume of this run (it would exist for 1 of 2 ranks).
  std::filesystem::create_directories(d / "stale");
  std::filesystem::copy_file(d / "back/last.safetensors", d / "stale/last.safetensors");
  AppResult refused = run_app_mpmd("train_dsen2cr", {args("fresh", "1", "1"), args("stale", "1", "1")});
  CHECK(refused.exit_code != 0);
  CHECK_MESSAGE(refused.output.find("stale holds an earlier run's checkpoints (last.safetensors)") != std::string::npos,
                refused.output);
  CHECK_MESSAGE(refused.output.find("fresh holds no checkpoint here, but another rank's holds an earlier run's") !=
                    std::string::npos,
                refused.output);
  CHECK(std::filesystem::exists(d / "stale/last.safetensors"));
  AppResult over = run_app_mpmd("train_dsen2cr", {with(args("fresh", "1", "1"), {"--overwrite"}),
                                                  with(args("stale", "1", "1"), {"--overwrite"})});
  REQUIRE_MESSAGE(over.exit_code == 0, over.output);
  CHECK_FALSE(std::filesystem::exists(d / "stale/last.safetensors"));
  CHECK(models::load_model(d / "fresh/last.safetensors").epoch == 1);
}

TEST_CASE("data parallel: with --pack the first rank of the machine builds the pack, the others only read it") {
  TempDir d("dp_pack");
  const std::string data = make_sen12mscr(d);
  std::vector<std::string> a = with(dsen2cr_args(data, d / "run"), {"--pack", d / "cr.pack"});
  a[5] = "1", a[7] = "1";  // --epochs, --batch-size
  AppResult r = run_app_mpi(2, "train_dsen2cr", a);
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  const std::string built = "building the raster pack";
  CHECK_MESSAGE(r.output.find(built) != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find(built) == r.output.rfind(built), r.output);  // once, not once per rank
  size_t files = 0;  // the pack and no one's leftover temporary file
  for (const auto& e : std::filesystem::directory_iterator(d.path)) files += e.path().filename().string().rfind("cr.pack", 0) == 0;
  CHECK(files == 1);
  // Without a pack, the same run: the samples are the same either way.
  std::vector<std::string> b = dsen2cr_args(data, d / "files");
  b[7] = "1";
  b[5] = "1";  // --epochs
  AppResult plain = run_app_mpi(2, "train_dsen2cr", b);
  REQUIRE_MESSAGE(plain.exit_code == 0, plain.output);
  CHECK(checkpoint_difference(d / "run/last.safetensors", d / "files/last.safetensors") == 0);
}

TEST_CASE("data parallel: one rank killed mid-epoch stops every rank, the exit is non-zero, the last checkpoint stays") {
  TempDir d("dp_kill");
  const std::string data = make_sen12mscr(d);
  std::vector<std::string> a = dsen2cr_args(data, d / "run");
  a[7] = "1";  // --batch-size: 2 steps per epoch with 2 ranks
  // Rank 1 is SIGKILLed at the start of step 3 (epoch 2), as if the machine had lost it.
  AppResult killed = run_app_mpi(2, "train_dsen2cr", with(a, {"--debug-sigkill-at-step", "3", "--debug-rank", "1"}));
  CHECK(killed.exit_code != 0);
  CHECK_MESSAGE(killed.output.find("signal 9") != std::string::npos, killed.output);  // mpirun names the cause
  CHECK(models::load_model(d / "run/last.safetensors").epoch == 1);  // epoch 1's, complete
  // And the run goes on from it.
  AppResult resumed = run_app_mpi(2, "train_dsen2cr", with(a, {"--resume"}));
  REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.output);
  CHECK(models::load_model(d / "run/last.safetensors").epoch == 3);
}

// Each rank parses its own command line. A rank given another --lr or --seed trained another run in
// silence (another --seed: another split, validation tiles in its training share); another --batch-size
// or other data hung every rank in a collective. Every rank now compares its options (all but its own
// --out, the data's and the pack's paths, threads and workers) and its run's settings (the data by the
// files' names) with rank 0's before any collective, and every rank stops with a usage error: the
// rank that differs names the option and both values. Nothing is written.
TEST_CASE("data parallel: ranks given other options or other data stop before any work, naming what differs") {
  TempDir d("dp_agree");
  const std::string data = make_sen12mscr(d);
  const std::vector<std::string> a = dsen2cr_args(data, d / "run");
  AppResult lr = run_app_mpmd("train_dsen2cr", {with(a, {"--lr", "1e-3"}), with(a, {"--lr", "0.5"})});
  CHECK(lr.exit_code == 2);
  CHECK_MESSAGE(lr.output.find("this rank was given other options than rank 0: --lr '0.5' here, '0.001' on rank 0") !=
                    std::string::npos,
                lr.output);
  CHECK_MESSAGE(lr.output.find("1 of 2 ranks were given other options than rank 0") != std::string::npos, lr.output);
  CHECK_FALSE(fs::exists(d / "run"));
  // 4 training triplets make no global batch of 2 x 3: refused before the run folder is written into.
  std::vector<std::string> big = a;
  big[7] = "3";  // --batch-size
  AppResult too_big = run_app_mpi(2, "train_dsen2cr", big);
  CHECK(too_big.exit_code == 1);
  CHECK_MESSAGE(too_big.output.find("4 training triplets (benchmark split), fewer than one batch of 3 on each of 2 "
                                    "ranks") != std::string::npos,
                too_big.output);
  CHECK_FALSE(fs::exists(d / "run/last.safetensors"));
  // A per-rank option's value may differ, not whether it is given: --pack on one rank only hung both.
  AppResult pack = run_app_mpmd("train_dsen2cr", {with(a, {"--pack", d / "p.pack"}), a});
  CHECK(pack.exit_code == 2);
  CHECK_MESSAGE(pack.output.find("--pack '(none)' here, '(given)' on rank 0") != std::string::npos, pack.output);
  // The same values spelled otherwise, another --out, --threads and --workers: the same run.
  std::vector<std::string> b = with(a, {"--lr", "0.001"});
  b[3] = d / "run_1";  // --out: a disk of its own
  b[b.size() - 5] = "2";  // --threads (dsen2cr_args: ..., "--threads", "1", "--workers", "1")
  AppResult same = run_app_mpmd("train_dsen2cr", {with(a, {"--lr", "1e-3"}), b});
  CHECK_MESSAGE(same.exit_code == 0, same.output);
  // The same file names in another folder are the same data; fewer files are not.
  const std::string copy = d / "copy", fewer = d / "fewer";
  fs::copy(data, copy, fs::copy_options::recursive);
  fs::copy(data, fewer, fs::copy_options::recursive);
  const data::Sen12mscrTriplet val = data::scan_sen12mscr(fewer).split(data::Split::Val).at(0);
  fs::remove(val.s2_cloudy);  // the validation triplet: the 4 training ones still make a global batch
  std::vector<std::string> moved = a, less = a;
  moved[1] = copy, less[1] = fewer;  // --data
  moved[3] = less[3] = d / "run2";
  std::vector<std::string> a2 = a;
  a2[3] = d / "run2";
  AppResult elsewhere = run_app_mpmd("train_dsen2cr", {a2, moved});
  CHECK_MESSAGE(elsewhere.exit_code == 0, elsewhere.output);
  AppResult other = run_app_mpmd("train_dsen2cr", {with(a2, {"--overwrite"}), with(less, {"--overwrite"})});
  CHECK(other.exit_code == 2);
  CHECK_MESSAGE(other.output.find("this rank was given other run settings than rank 0: data '") != std::string::npos,
                other.output);
}

// A rank whose own data cannot be read stops every rank (MPI_Abort); rank 0, which may have made the run
// folder by then, is stopped by SIGTERM, and the folder it made, holding only its lock, goes with it (it
// used to stay, holding .nimbus.lock). Best effort: should the SIGTERM reach rank 0 before it makes the
// folder, this passes without the handler's part (it failed every time with the handler's part removed;
// test_run_folder.cpp checks that part alone, deterministically).
TEST_CASE("data parallel: a rank that fails at start-up stops every rank, and leaves no run folder") {
  TempDir d("dp_start_fail");
  const std::string data = make_sen12mscr(d);
  const std::vector<std::string> a = dsen2cr_args(data, d / "run");
  std::vector<std::string> missing = a;
  missing[1] = d / "no_such_data";  // --data
  AppResult r = run_app_mpmd("train_dsen2cr", {a, missing});
  CHECK(r.exit_code != 0);
  CHECK_MESSAGE(r.output.find("no_such_data") != std::string::npos, r.output);
  CHECK_FALSE(fs::exists(d / "run"));
}
#endif


TEST_CASE("classify: probabilities equal the model's forward, each file in the band order it says, and errors") {
  TempDir d("classify");
  Rng rng(3);
  models::Model m = tiny_classifier(rng);
  std::vector<float> mean(13), sd(13);
  for (int c = 0; c < 13; ++c) mean[size_t(c)] = 0.05f + 0.01f * float(c), sd[size_t(c)] = 0.02f + 0.003f * float(c);
  m.classifier->set_input_norm(mean, sd);
  const std::string ckpt = d / "clf.safetensors";
  models::save_model(ckpt, m);
  // Two EuroSAT tiles (64x64, B8A last, in the EuroSAT layout) and one 40x40 image whose GDAL band
  // descriptions say SEN12MS order.
  data::write_eurosat_tile(d / "eu", 42, 1, 0);
  data::write_eurosat_tile(d / "eu", 42, 8, 0);
  data::Raster s12;
  s12.width = s12.height = 40;
  s12.bands = 13;
  s12.data.resize(13 * 40 * 40);
  for (float& v : s12.data) v = float(rng.below(4000));
  for (int b = 0; b < 13; ++b) s12.band_names.emplace_back(data::kS2BandNames[size_t(b)]);
  data::WriteOptions wo;
  data::write_geotiff(d / "s12.tif", s12, wo);
  AppResult r =
      run_app("classify", {"--weights", ckpt, "--out", d / "p.csv", "--threads", "1", d / "eu", d / "s12.tif"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  // save_model wrote no "bands" key: SEN12MS order, said once.
  CHECK_MESSAGE(r.output.find("does not say which bands it takes") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("3 images, bands read as 2 eurosat (dataset layout), 1 sen12ms (band descriptions)") !=
                    std::string::npos,
                r.output);
  std::ifstream in(d / "p.csv");
  std::string line;
  std::getline(in, line);
  CHECK(line.rfind("path,class_index,class_name,p_AnnualCrop,p_Forest,", 0) == 0);
  int rows = 0;
  NoGradGuard ng;
  m.classifier->eval();
  while (std::getline(in, line)) {
    ++rows;
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    REQUIRE(f.size() == 13);
    data::Raster img = data::read_geotiff(f[0]);
    const data::BandList order = img.width == 64 ? data::eurosat_bands() : data::sen12ms_bands();
    std::vector<float> x(13 * size_t(img.width * img.height));
    for (size_t fb = 0; fb < 13; ++fb)  // file band fb holds canonical band order[fb]
      std::copy_n(img.data.begin() + long(fb * x.size() / 13), x.size() / 13,
                  x.begin() + long(size_t(order[fb]) * x.size() / 13));
    std::vector<float> want =
        m.classifier->probabilities(Tensor::from_vector({1, 13, img.height, img.width}, x)).to_vector();
    std::vector<double> got;
    for (int k = 0; k < 10; ++k) got.push_back(std::stod(f[size_t(3 + k)]));
    check_close(got, want, 1e-7, 1e-6, f[0]);
    const int best = int(std::max_element(want.begin(), want.end()) - want.begin());
    CHECK(std::stoi(f[1]) == best);
    CHECK(f[2] == data::eurosat_class_names()[size_t(best)]);
  }
  CHECK(rows == 3);
  // Forcing the wrong order changes the answer for a EuroSAT tile (B8A moved): the option is live.
  AppResult forced =
      run_app("classify", {"--weights", ckpt, "--out", d / "q.csv", "--bands", "sen12ms", "--threads", "1",
                           d / "eu"});
  REQUIRE(forced.exit_code == 0);
  CHECK(read_file(d / "q.csv") != read_file(d / "p.csv").substr(0, read_file(d / "q.csv").size()));
  // 4 bands: error naming the file, exit 1.
  data::Raster four = s12;
  four.bands = 4;
  four.data.resize(4 * 40 * 40);
  four.band_names.clear();  // says nothing: read as SEN12MS order, 13 bands
  data::write_geotiff(d / "four.tif", four, wo);
  AppResult bad = run_app("classify", {"--weights", ckpt, "--out", d / "b.csv", "--threads", "1", d / "four.tif"});
  CHECK(bad.exit_code == 1);
  CHECK_MESSAGE(bad.output.find("four.tif: has 4 bands but its band order (assumed) names 13") != std::string::npos,
                bad.output);
  CHECK_MESSAGE(bad.output.find("four.tif has no band descriptions and is in neither") != std::string::npos,
                bad.output);
  CHECK_FALSE(fs::exists(d / "b.csv"));
  // A DSen2-CR checkpoint is not a classifier.
  models::Model cr = models::build_model(models::ModelConfig::of(models::DSen2CRConfig{1, 4, true}), rng);
  models::save_model(d / "cr.safetensors", cr);
  AppResult wrong = run_app("classify", {"--weights", d / "cr.safetensors", "--out", d / "c.csv", d / "s12.tif"});
  CHECK(wrong.exit_code == 1);
  CHECK(wrong.output.find("not a land-cover classifier") != std::string::npos);
  // A truncated checkpoint: error naming it.
  fs::resize_file(ckpt, 64);
  AppResult cut = run_app("classify", {"--weights", ckpt, "--out", d / "c.csv", d / "s12.tif"});
  CHECK(cut.exit_code == 1);
  CHECK_MESSAGE(cut.output.find(ckpt) != std::string::npos, cut.output);
}

// What can be known before the work is checked before it: the output's place, every input's bands, and
// options that contradict each other (each used to fail after the images were processed, or be ignored).
TEST_CASE("classify and remove_clouds: outputs, bands and contradictory options are refused before any work") {
  TempDir d("upfront");
  Rng rng(8);
  models::Model m = tiny_classifier(rng);
  const std::string ckpt = d / "clf.safetensors";
  models::save_model(ckpt, m);
  data::write_eurosat_tile(d / "eu", 42, 1, 0);
  data::write_eurosat_tile(d / "eu", 42, 8, 0);
  // --out a folder: a usage error before anything is read.
  fs::create_directories(d / "outdir");
  AppResult folder = run_app("classify", {"--weights", ckpt, "--out", d / "outdir", "--threads", "1", d / "eu"});
  CHECK(folder.exit_code == 2);
  CHECK_MESSAGE(folder.output.find("--out " + (d / "outdir") + " is a folder") != std::string::npos, folder.output);
  CHECK(folder.output.find("img/s") == std::string::npos);  // no image was classified
  // --out in a folder that does not exist yet: made, as the other apps make theirs.
  AppResult nested = run_app("classify", {"--weights", ckpt, "--out", d / "new/sub/p.csv", "--threads", "1", d / "eu"});
  REQUIRE_MESSAGE(nested.exit_code == 0, nested.output);
  CHECK(fs::is_regular_file(d / "new/sub/p.csv"));
  // A file without a band the classifier takes, after good ones: refused from the headers, naming it.
  data::Raster rgbn;
  rgbn.width = rgbn.height = 64;
  rgbn.bands = 4;
  rgbn.data.assign(4 * 64 * 64, 500.f);
  rgbn.band_names = {"B2", "B3", "B4", "B8"};
  data::write_geotiff(d / "z_rgbn.tif", rgbn, data::WriteOptions{});
  AppResult bands = run_app("classify", {"--weights", ckpt, "--out", d / "b.csv", "--threads", "1", d / "eu",
                                         d / "z_rgbn.tif"});
  CHECK(bands.exit_code == 1);
  CHECK_MESSAGE(bands.output.find("z_rgbn.tif: has no band B1 (it holds B2,B3,B4,B8)") != std::string::npos,
                bands.output);
  CHECK(bands.output.find("img/s") == std::string::npos);
  CHECK_FALSE(fs::exists(d / "b.csv"));
  // A linked folder inside a searched one is followed (each real folder once, even through a loop).
  fs::create_directories(d / "linked");
  fs::create_directory_symlink(d / "eu", d / "linked/more");
  fs::create_directory_symlink(d / "linked", d / "linked/loop");
  AppResult links = run_app("classify", {"--weights", ckpt, "--out", d / "l.csv", "--threads", "1", d / "linked"});
  REQUIRE_MESSAGE(links.exit_code == 0, links.output);
  CHECK_MESSAGE(links.output.find("classify: 2 images") != std::string::npos, links.output);
  // Common options out of range are usage errors (exit 2), named once.
  AppResult threads = run_app("classify", {"--weights", ckpt, "--out", d / "t.csv", "--threads", "-1", d / "eu"});
  CHECK(threads.exit_code == 2);
  CHECK_MESSAGE(threads.output.find("--threads") != std::string::npos, threads.output);
  CHECK(threads.output.find("classify: classify:") == std::string::npos);
  // remove_clouds: an option of the other mode, or an overlap tiles cannot blend over.
  const std::vector<std::vector<std::string>> contradictory = {
      {"--data", d / "x", "--out-dir", d / "o", "--s1", d / "s1.tif"},
      {"--s2", d / "a.tif", "--out", d / "o.tif", "--split", "val"},
      {"--s2", d / "a.tif", "--out", d / "o.tif", "--out-dir", d / "o"},
      {"--s2", d / "a.tif", "--out", d / "o.tif", "--overlap", "0"},
      {"--s2", d / "a.tif", "--out", d / "o.tif", "--tile", "128", "--overlap", "128"},
      {"--s2", d / "a.tif", "--out", d / "o.tif", "--tile", "128", "--overlap", "65"}};  // more than half a tile
  for (const auto& args : contradictory) {
    std::vector<std::string> full = {"--weights", ckpt};
    full.insert(full.end(), args.begin(), args.end());
    AppResult r = run_app("remove_clouds", full);
    CAPTURE(r.output);
    CHECK(r.exit_code == 2);
  }
  AppResult half = run_app("remove_clouds", {"--weights", ckpt, "--s2", d / "a.tif", "--out", d / "o.tif", "--tile",
                                             "128", "--overlap", "65"});
  CHECK_MESSAGE(half.output.find("--overlap 65 must be -1 (the default) or in [1, 64] (half of --tile 128)") !=
                    std::string::npos,
                half.output);
}

// A scene whose left 16 columns are the file's nodata value (0 in every band): the output says 0 is
// its nodata value and holds it there; elsewhere it is what the same pixels give without the tag.
TEST_CASE("remove_clouds: nodata pixels of the input are nodata in the output") {
  TempDir d("remove_clouds_nodata");
  const std::string data = make_sen12mscr(d);
  Rng rng(5);
  models::Model m = models::build_model(models::ModelConfig::of(models::DSen2CRConfig{2, 8, true}), rng);
  const std::string ckpt = d / "cr.safetensors";
  models::save_model(ckpt, m);
  const data::Sen12mscrTriplet t = data::scan_sen12mscr(data).triplets[0];
  data::Raster s2 = data::read_geotiff(t.s2_cloudy);
  const size_t hw = size_t(s2.width) * size_t(s2.height);
  for (int c = 0; c < s2.bands; ++c)
    for (int y = 0; y < s2.height; ++y)
      for (int x = 0; x < 16; ++x) s2.data[size_t(c) * hw + size_t(y * s2.width + x)] = 0.f;
  data::write_geotiff(d / "plain.tif", s2, data::WriteOptions{});
  s2.nodata = 0.0;
  data::write_geotiff(d / "edge.tif", s2, data::WriteOptions{});
  for (const char* name : {"plain", "edge"}) {
    AppResult r = run_app("remove_clouds", {"--weights", ckpt, "--s2", d / (std::string(name) + ".tif"), "--s1", t.s1,
                                            "--out", d / (std::string(name) + "_out.tif"), "--threads", "1"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  }
  const data::Raster plain = data::read_geotiff(d / "plain_out.tif"), edge = data::read_geotiff(d / "edge_out.tif");
  CHECK_FALSE(plain.nodata.has_value());
  CHECK(edge.nodata == std::optional<double>(0.0));
  size_t nodata_ok = 0, data_ok = 0, nonzero_edge_in_plain = 0;
  for (int c = 0; c < edge.bands; ++c)
    for (size_t q = 0; q < hw; ++q) {
      const size_t i = size_t(c) * hw + q;
      if (int(q % size_t(s2.width)) < 16) {
        nodata_ok += edge.data[i] == 0.f;
        nonzero_edge_in_plain += plain.data[i] != 0.f;
      } else {
        data_ok += edge.data[i] == plain.data[i] || (plain.data[i] == 0.f && edge.data[i] == 1.f);
      }
    }
  CHECK(nodata_ok == size_t(13 * 16 * s2.height));
  CHECK(data_ok == size_t(13) * (hw - size_t(16 * s2.height)));
  CHECK(nonzero_edge_in_plain > 0);  // without the tag the model's output there is kept: the test can fail
  // A pixel with data never reads as nodata: where the plain run wrote 0, the tagged one wrote 1.
  size_t zero_data = 0, moved = 0;
  for (int c = 0; c < edge.bands; ++c)
    for (size_t q = 0; q < hw; ++q)
      if (int(q % size_t(s2.width)) >= 16) {
        const size_t i = size_t(c) * hw + q;
        zero_data += edge.data[i] == 0.f;
        moved += plain.data[i] == 0.f && edge.data[i] == 1.f;
      }
  CHECK(zero_data == 0);
  MESSAGE(moved, " data values moved from 0 to 1 DN");
  // Tiled and in stripes, the nodata pixels are marked as each window is read: a scene 5 times as wide
  // (320 columns: output tiles of 256, so --stripe 256 makes two stripes, the second's windows starting
  // right of column 0), nodata in columns [0, 16) and [272, 288). The same pixels, and no others, are
  // nodata in the output.
  const int wide = 5 * s2.width;
  auto widen = [&](const data::Raster& r) {
    data::Raster o = r;
    o.width = wide;
    o.data.assign(size_t(r.bands) * size_t(wide) * size_t(r.height), 0.f);
    for (int c = 0; c < r.bands; ++c)
      for (int y = 0; y < r.height; ++y)
        for (int x = 0; x < wide; ++x)
          o.data[(size_t(c) * size_t(r.height) + size_t(y)) * size_t(wide) + size_t(x)] =
              r.data[(size_t(c) * size_t(r.height) + size_t(y)) * size_t(r.width) + size_t(x % r.width)];
    return o;
  };
  auto edge_col = [](int x) { return x < 16 || (x >= 272 && x < 288); };
  data::Raster s2w = widen(data::read_geotiff(t.s2_cloudy));  // the scene without the edge above
  s2w.nodata = 0.0;
  for (int c = 0; c < s2w.bands; ++c)
    for (int y = 0; y < s2w.height; ++y)
      for (int x = 0; x < wide; ++x)
        if (edge_col(x)) s2w.data[(size_t(c) * size_t(s2w.height) + size_t(y)) * size_t(wide) + size_t(x)] = 0.f;
  data::write_geotiff(d / "wide.tif", s2w, data::WriteOptions{});
  data::write_geotiff(d / "wide_s1.tif", widen(data::read_geotiff(t.s1)), data::WriteOptions{});
  AppResult r = run_app("remove_clouds", {"--weights", ckpt, "--s2", d / "wide.tif", "--s1", d / "wide_s1.tif", "--out",
                                          d / "wide_out.tif", "--tile", "40", "--overlap", "20", "--stripe", "256",
                                          "--threads", "1"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  const data::Raster tiled = data::read_geotiff(d / "wide_out.tif");
  REQUIRE(tiled.width == wide);
  CHECK(tiled.nodata == std::optional<double>(0.0));
  const size_t whw = size_t(wide) * size_t(tiled.height);
  size_t tiled_nodata = 0, tiled_wrong = 0;
  for (int c = 0; c < tiled.bands; ++c)
    for (size_t q = 0; q < whw; ++q) {
      const bool edge_px = edge_col(int(q % size_t(wide))), zero = tiled.data[size_t(c) * whw + q] == 0.f;
      tiled_nodata += edge_px && zero;
      tiled_wrong += edge_px != zero;
    }
  CHECK(tiled_nodata == size_t(13 * 32 * s2.height));
  CHECK(tiled_wrong == 0);
}

TEST_CASE("remove_clouds: output equals the model's forward (tiled or not) with georeferencing kept and errors") {
  TempDir d("remove_clouds");
  const std::string data = make_sen12mscr(d);
  Rng rng(5);
  models::Model m = models::build_model(models::ModelConfig::of(models::DSen2CRConfig{2, 8, true}), rng);
  const std::string ckpt = d / "cr.safetensors";
  models::save_model(ckpt, m);
  data::Sen12mscrIndex idx = data::scan_sen12mscr(data);
  REQUIRE(idx.triplets.size() == 5);
  const data::Sen12mscrTriplet& t = idx.triplets[0];
  AppResult whole = run_app("remove_clouds", {"--weights", ckpt, "--s2", t.s2_cloudy, "--s1", t.s1, "--out",
                                              d / "whole.tif", "--threads", "1"});
  REQUIRE_MESSAGE(whole.exit_code == 0, whole.output);
  AppResult tiled = run_app("remove_clouds", {"--weights", ckpt, "--s2", t.s2_cloudy, "--s1", t.s1, "--out",
                                              d / "tiled.tif", "--tile", "40", "--overlap", "20", "--batch-size", "3",
                                              "--threads", "1"});
  REQUIRE_MESSAGE(tiled.exit_code == 0, tiled.output);
  CHECK_MESSAGE(tiled.output.find("not exact") == std::string::npos, tiled.output);  // margin 6 = the radius
  // Tiles too small for the receptive radius (6 px: 2 blocks) with the default overlap (8 px, half of 16):
  // blended, not exact, and said so.
  AppResult small = run_app("remove_clouds", {"--weights", ckpt, "--s2", t.s2_cloudy, "--s1", t.s1, "--out",
                                              d / "small.tif", "--tile", "16", "--threads", "1"});
  REQUIRE_MESSAGE(small.exit_code == 0, small.output);
  CHECK_MESSAGE(small.output.find("--tile 16 with an overlap of 8 px cuts tiles with a margin of 3 px, below the "
                                  "model's receptive radius 6: tiles are blended, not exact (--tile 26 and the "
                                  "default overlap are exact)") != std::string::npos,
                small.output);
  // The model's own forward on the whole image, in DN.
  data::Raster s2 = data::read_geotiff(t.s2_cloudy), s1 = data::read_geotiff(t.s1);
  std::vector<float> a = s2.data, b = s1.data;
  data::normalize_s2(a.data(), a.size());
  data::normalize_s1(b.data(), size_t(64 * 64));
  NoGradGuard ng;
  m.dsen2cr->eval();
  std::vector<float> want =
      m.dsen2cr->forward(Tensor::from_vector({1, 13, 64, 64}, a), Tensor::from_vector({1, 2, 64, 64}, b)).to_vector();
  for (float& v : want) v = std::min(std::max(std::round(v * 2000.f), 0.f), 65535.f);
  data::Raster w = data::read_geotiff(d / "whole.tif"), tl = data::read_geotiff(d / "tiled.tif");
  CHECK(w.type == data::SampleType::UInt16);
  check_close(w.data, want, 1.0, 0, "whole vs forward (DN)");
  check_close(tl.data, w.data, 1.0, 0, "tiled vs whole (DN)");
  // --compress deflate: the same pixels and georeferencing, Deflate with GDAL's integer predictor.
  AppResult packed = run_app("remove_clouds", {"--weights", ckpt, "--s2", t.s2_cloudy, "--s1", t.s1, "--out",
                                               d / "deflate.tif", "--threads", "1", "--compress", "deflate"});
  REQUIRE_MESSAGE(packed.exit_code == 0, packed.output);
  const data::TiffInfo packed_info = data::read_tiff_info(d / "deflate.tif");
  CHECK(packed_info.compression == 8);
  CHECK(packed_info.predictor == 2);
  CHECK(data::read_tiff_info(d / "whole.tif").compression == 1);
  const data::Raster pw = data::read_geotiff(d / "deflate.tif");
  check_close(pw.data, w.data, 0, 0, "--compress deflate vs none");
  CHECK(pw.geo == w.geo);
  CHECK(pw.band_names == w.band_names);
  // Georeferencing carried over.
  REQUIRE(s2.geo.present());
  CHECK(w.geo == s2.geo);  // georeferencing kept
  // Missing SAR for a SAR model.
  AppResult nosar = run_app("remove_clouds", {"--weights", ckpt, "--s2", t.s2_cloudy, "--out", d / "x.tif"});
  CHECK(nosar.exit_code == 1);
  CHECK_MESSAGE(nosar.output.find("needs S1 SAR input: give --s1") != std::string::npos, nosar.output);
  CHECK_FALSE(fs::exists(d / "x.tif"));
  // Wrong band count for --s2 (the SAR file).
  // A SAR image of the same size on another grid (its tie point a kilometre east): refused, nothing written.
  data::Raster shifted = data::read_geotiff(t.s1);
  REQUIRE(shifted.geo.tiepoints.size() >= 5);
  shifted.geo.tiepoints[3] += 1000;
  data::WriteOptions float_out;
  float_out.type = data::SampleType::Float32;
  data::write_geotiff(d / "s1_shifted.tif", shifted, float_out);
  AppResult grid = run_app("remove_clouds", {"--weights", ckpt, "--s2", t.s2_cloudy, "--s1", d / "s1_shifted.tif",
                                             "--out", d / "x.tif"});
  CHECK(grid.exit_code == 1);
  CHECK_MESSAGE(grid.output.find("are not on the same grid (tie points differ") != std::string::npos, grid.output);
  CHECK_FALSE(fs::exists(d / "x.tif"));
  AppResult bands = run_app("remove_clouds", {"--weights", ckpt, "--s2", t.s1, "--s1", t.s1, "--out", d / "x.tif"});
  CHECK(bands.exit_code == 1);
  CHECK(bands.output.find("has 2 bands; DSen2-CR needs 13") != std::string::npos);
  // Folder mode over the val split (one triplet): same bytes as the single-image run of it.
  AppResult folder = run_app("remove_clouds", {"--weights", ckpt, "--data", data, "--split", "val", "--out-dir",
                                               d / "out", "--threads", "1"});
  REQUIRE_MESSAGE(folder.exit_code == 0, folder.output);
  const data::Sen12mscrTriplet v = idx.split(data::Split::Val).at(0);
  const std::string produced = d / ("out/" + fs::path(v.s2_cloudy).filename().string());
  REQUIRE(fs::exists(produced));
  AppResult single = run_app("remove_clouds", {"--weights", ckpt, "--s2", v.s2_cloudy, "--s1", v.s1, "--out",
                                               d / "v.tif", "--threads", "1"});
  REQUIRE(single.exit_code == 0);
  CHECK(read_file(produced) == read_file(d / "v.tif"));
  // --split all: every triplet whatever its ROI (cloud_impact's choice for sets off the benchmark ROIs).
  AppResult all = run_app("remove_clouds", {"--weights", ckpt, "--data", data, "--split", "all", "--out-dir",
                                            d / "out_all", "--threads", "1"});
  REQUIRE_MESSAGE(all.exit_code == 0, all.output);
  size_t written = 0;
  for (const auto& e : fs::directory_iterator(d / "out_all")) written += e.path().extension() == ".tif";
  CHECK(written == idx.triplets.size());
  CHECK(read_file(d / ("out_all/" + fs::path(v.s2_cloudy).filename().string())) == read_file(d / "v.tif"));
  // Folder mode into the cloudy images' own folder: refused before any work, every input kept.
  const std::string cloudy_dir = fs::path(v.s2_cloudy).parent_path().string(), cloudy_bytes = read_file(v.s2_cloudy);
  AppResult over = run_app("remove_clouds", {"--weights", ckpt, "--data", data, "--split", "val", "--out-dir",
                                             cloudy_dir, "--threads", "1"});
  CHECK(over.exit_code == 2);
  CHECK_MESSAGE(over.output.find("is also a cloudy image (an input)") != std::string::npos, over.output);
  CHECK(read_file(v.s2_cloudy) == cloudy_bytes);
  // A pipe as --out (or a device: renaming the finished GeoTIFF over /dev/null replaced it with a plain
  // file), a file as --out-dir: usage errors before any work, the pipe left as it was.
  const std::string fifo = d / "fifo.tif";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  AppResult pipe = run_app("remove_clouds", {"--weights", ckpt, "--s2", v.s2_cloudy, "--s1", v.s1, "--out", fifo});
  CHECK(pipe.exit_code == 2);
  CHECK_MESSAGE(pipe.output.find("--out " + fifo + " is a device or a pipe") != std::string::npos, pipe.output);
  CHECK(fs::is_fifo(fifo));
  AppResult file_dir = run_app("remove_clouds", {"--weights", ckpt, "--data", data, "--split", "val", "--out-dir",
                                                 d / "v.tif"});
  CHECK(file_dir.exit_code == 2);
  CHECK_MESSAGE(file_dir.output.find("--out-dir " + d / "v.tif" + " is not a folder") != std::string::npos,
                file_dir.output);
  // Through a symbolic link: the file it names is written, the link kept.
  fs::create_symlink("v.tif", d / "link.tif");
  AppResult linked = run_app("remove_clouds", {"--weights", ckpt, "--s2", v.s2_cloudy, "--s1", v.s1, "--out",
                                               d / "link.tif", "--threads", "1"});
  REQUIRE_MESSAGE(linked.exit_code == 0, linked.output);
  CHECK(fs::is_symlink(d / "link.tif"));
  CHECK(read_file(produced) == read_file(d / "v.tif"));
  // S1 in linear power (a re-export without the dB step): refused naming the file, no output written.
  data::Raster power = data::read_geotiff(v.s1);
  for (float& x : power.data) x = std::pow(10.f, x / 10.f);
  data::WriteOptions f32;
  f32.type = data::SampleType::Float32;
  data::write_geotiff(d / "power_s1.tif", power, f32);
  AppResult lin = run_app("remove_clouds", {"--weights", ckpt, "--s2", v.s2_cloudy, "--s1", d / "power_s1.tif",
                                            "--out", d / "lin.tif", "--threads", "1"});
  CHECK(lin.exit_code == 1);
  CHECK_MESSAGE(lin.output.find(d / "power_s1.tif" + ": 100.0% of its S1 values are above 0") != std::string::npos,
                lin.output);
  CHECK_FALSE(fs::exists(d / "lin.tif"));
}

TEST_CASE("apps: --device cuda is a clear error (exit 1) and --help works (exit 0)") {
  for (const char* app : {"train_resnet", "train_dsen2cr", "classify", "remove_clouds"}) {
    AppResult h = run_app(app, {"--help"});
    CHECK(h.exit_code == 0);
    CHECK(h.output.find("--device") != std::string::npos);
    CHECK(h.output.find("--threads") != std::string::npos);
    CHECK(h.output.find("--seed") != std::string::npos);
    AppResult u = run_app(app, {"--no-such-option"});
    CHECK(u.exit_code == 2);
  }
  TempDir d("cuda");
  const std::string data = make_eurosat(d);
  // Out-of-range trainer options are usage errors naming the option, before any work.
  for (auto [opt, value] : {std::pair{"--workers", "100000"}, {"--batch-size", "4294967304"}, {"--epochs", "0"}}) {
    for (const char* app : {"train_resnet", "train_dsen2cr"}) {
      CAPTURE(app);
      CAPTURE(opt);
      AppResult bad = run_app(app, {"--data", data, "--out", d / "bad", opt, value});
      CHECK(bad.exit_code == 2);
      CHECK(bad.output.find(opt) != std::string::npos);
      CHECK_FALSE(fs::exists(d / "bad/last.safetensors"));
    }
  }
  // Model sizes within the bounds a checkpoint may declare (models/model.h), and 2^32 + 8 no longer
  // wraps to 8 on its way to int.
  for (auto [app, opt, value] : {std::tuple{"train_resnet", "--width", "4294967304"},
                                 {"train_resnet", "--blocks", "1,100000000,1,1"},
                                 {"train_dsen2cr", "--features", "4294967304"},
                                 {"train_dsen2cr", "--blocks", "-1"},
                                 {"train_dsen2cr", "--lambda", "-1"},
                                 {"train_dsen2cr", "--val-limit", "-1"},
                                 {"train_dsen2cr", "--cloud-threshold", "5"},
                                 {"train_resnet", "--milestones", "-5"},
                                 {"train_dsen2cr", "--crop", "4294967304"}}) {
    CAPTURE(app);
    CAPTURE(opt);
    AppResult bad = run_app(app, {"--data", data, "--out", d / "bad", opt, value});
    CHECK(bad.exit_code == 2);
    CHECK(bad.output.find(std::string(opt) + " ") != std::string::npos);
  }
  AppResult r = run_app("train_resnet", with(resnet_args(data, d / "run"), {"--device", "cuda"}));
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("no usable CUDA device/backend") != std::string::npos, r.output);
  CHECK_FALSE(fs::exists(d / "run/last.safetensors"));
}

TEST_CASE("remove_clouds: streams a scene by windows and stripes into a tiled GeoTIFF, the same as in memory") {
  TempDir d("stream");
  REQUIRE(run_app("make_synthetic", {"--out", d.path.string(), "--granule", "600", "--threads", "1"}).exit_code == 0);
  const std::string s2 = d / "granule/s2_cloudy.tif", s1 = d / "granule/s1.tif";
  Rng rng(4);
  models::Model m = models::build_model(models::ModelConfig::of(models::DSen2CRConfig{2, 8, true}), rng);
  models::save_model(d / "cr.safetensors", m);
  auto run = [&](const std::string& out, const std::string& s2_in, const std::string& s1_in,
                 std::vector<std::string> extra) {
    std::vector<std::string> args = {"--weights", d / "cr.safetensors", "--s2", s2_in, "--s1", s1_in, "--out", out,
                                     "--tile", "128", "--overlap", "40", "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    AppResult r = run_app("remove_clouds", args);
    REQUIRE_MESSAGE(r.exit_code == 0, r.output);
    return data::read_geotiff(out);
  };
  // Stripes of 256 columns (tiles on their edges run twice, batched by 3) and the whole width.
  const data::Raster striped = run(d / "striped.tif", s2, s1, {"--stripe", "256", "--batch-size", "3"});
  const data::Raster whole = run(d / "whole.tif", s2, s1, {"--stripe", "0"});
  CHECK(striped.data == whole.data);
  // The whole scene in memory, blended by remove_clouds_tiled and written as write_geotiff rounds.
  data::Raster in2 = data::read_geotiff(s2), in1 = data::read_geotiff(s1);
  apps::TileOptions o;
  o.tile = 128;
  o.overlap = 40;
  data::Raster want = in2;
  want.data = apps::remove_clouds_tiled(*m.dsen2cr, in2.data.data(), in1.data.data(), in2.height, in2.width, o);
  data::write_geotiff(d / "memory.tif", want, data::WriteOptions{});
  CHECK(data::read_geotiff(d / "memory.tif").data == whole.data);
  // A tiled GeoTIFF with the input's georeferencing and its bands named.
  const data::TiffInfo info = data::read_tiff_info(d / "striped.tif");
  CHECK(info.tiled);
  CHECK((info.width == 600 && info.height == 600 && info.bands == 13));
  CHECK(info.geo == in2.geo);
  CHECK(info.band_names.front() == "B1");
  CHECK(info.band_names[8] == "B8A");

  // Input in EuroSAT order that says so in its band descriptions: the same output.
  data::Raster eu = in2;
  eu.data = data::reorder_bands(in2.data, size_t(600) * 600, data::sen12ms_bands(), data::eurosat_bands(), "eu");
  eu.band_names.clear();
  for (int b : data::eurosat_bands()) eu.band_names.emplace_back(data::kS2BandNames[size_t(b)]);
  data::write_geotiff(d / "eu.tif", eu, data::WriteOptions{});
  CHECK(run(d / "from_eu.tif", d / "eu.tif", s1, {}).data == whole.data);

  // NaN in the SAR file is filled with the file's mean, as in memory (fill_nan_with_mean).
  data::Raster holes = in1;
  for (size_t i = 0; i < holes.data.size(); i += 997) holes.data[i] = std::nanf("");
  data::WriteOptions f32;
  f32.type = data::SampleType::Float32;
  data::write_geotiff(d / "s1_nan.tif", holes, f32);
  const data::Raster filled = run(d / "nan.tif", s2, d / "s1_nan.tif", {"--stripe", "256"});
  data::fill_nan_with_mean(holes.data.data(), holes.data.size());
  want.data = apps::remove_clouds_tiled(*m.dsen2cr, in2.data.data(), holes.data.data(), 600, 600, o);
  data::write_geotiff(d / "memory_nan.tif", want, data::WriteOptions{});
  CHECK(filled.data == data::read_geotiff(d / "memory_nan.tif").data);  // the same fill value, to the bit
  CHECK(filled.data != whole.data);  // the holes mattered
  // A SAR file of nothing but NaN (outside the S1 swath): each band's clip floor, as in memory (fill_s1_nan).
  data::Raster empty = in1;
  std::fill(empty.data.begin(), empty.data.end(), std::nanf(""));
  data::write_geotiff(d / "s1_empty.tif", empty, f32);
  const data::Raster no_sar = run(d / "no_sar.tif", s2, d / "s1_empty.tif", {"--stripe", "256"});
  data::fill_s1_nan(empty.data.data(), size_t(600) * 600);
  want.data = apps::remove_clouds_tiled(*m.dsen2cr, in2.data.data(), empty.data.data(), 600, 600, o);
  data::write_geotiff(d / "memory_empty.tif", want, data::WriteOptions{});
  CHECK(no_sar.data == data::read_geotiff(d / "memory_empty.tif").data);
}

TEST_CASE("real fixtures: remove_clouds keeps georeferencing and classify reads EuroSAT tiles") {
  TempDir d("real");
  const std::string dir = real_fixture("sen12ms_cr/xufangchn+GLF-CR/data/");
  const std::string s2 = dir + "s2_cloudy/ROIs1970_fall_139_p839.tif", s1 = dir + "s1/ROIs1970_fall_139_p839.tif";
  Rng rng(9);
  models::Model m = models::build_model(models::ModelConfig::of(models::DSen2CRConfig{2, 8, true}), rng);
  models::save_model(d / "cr.safetensors", m);
  AppResult whole = run_app("remove_clouds", {"--weights", d / "cr.safetensors", "--s2", s2, "--s1", s1, "--out",
                                              d / "whole.tif", "--threads", "1"});
  REQUIRE_MESSAGE(whole.exit_code == 0, whole.output);
  AppResult tiled = run_app("remove_clouds", {"--weights", d / "cr.safetensors", "--s2", s2, "--s1", s1, "--out",
                                              d / "tiled.tif", "--tile", "100", "--overlap", "30", "--threads", "1"});
  REQUIRE_MESSAGE(tiled.exit_code == 0, tiled.output);
  data::Raster in = data::read_geotiff(s2), w = data::read_geotiff(d / "whole.tif");
  data::Raster t = data::read_geotiff(d / "tiled.tif");
  CHECK(w.width == in.width);
  CHECK(w.height == in.height);
  CHECK(w.bands == 13);
  check_close(t.data, w.data, 1.0, 0, "tiled vs whole on a real 256x256 patch (DN)");
  CHECK(w.geo == in.geo);  // georeferencing kept
  CHECK(!w.geo.geo_ascii_params.empty());

  models::save_model(d / "clf.safetensors", tiny_classifier(rng));
  AppResult c = run_app("classify", {"--weights", d / "clf.safetensors", "--out", d / "p.csv", "--threads", "1",
                                     real_fixture("eurosat_ms")});
  REQUIRE_MESSAGE(c.exit_code == 0, c.output);
  CHECK_MESSAGE(c.output.find("20 images, bands read as 20 eurosat (dataset layout)") != std::string::npos, c.output);
}


namespace {
// classify's CSV: path -> probabilities (columns 3 onwards).
std::map<std::string, std::vector<double>> read_probabilities(const std::string& csv) {
  std::map<std::string, std::vector<double>> out;
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    for (size_t k = 3; k < f.size(); ++k) out[f[0]].push_back(std::stod(f[k]));
  }
  return out;
}
}  // namespace

TEST_CASE("classify: an image larger than a tile is classified as cloud_impact does, read by windows") {
  TempDir d("classify_tiles");
  Rng rng(6);
  models::Model m = tiny_classifier(rng);
  const std::string ckpt = d / "clf.safetensors";
  models::save_model(ckpt, m);
  // A 130 x 200 image (tiles: 3 x 4 corners, the last row and column flush with the edge) and a
  // 64 x 64 one, both saying SEN12MS order.
  auto image = [&](int h, int w, const std::string& path) {
    data::Raster r;
    r.height = h, r.width = w, r.bands = 13;
    r.data.resize(size_t(13 * h * w));
    for (float& v : r.data) v = float(rng.below(5000));
    for (int b = 0; b < 13; ++b) r.band_names.emplace_back(data::kS2BandNames[size_t(b)]);
    data::write_geotiff(path, r, data::WriteOptions{});
    return r;
  };
  const data::Raster big = image(130, 200, d / "a_big.tif"), small = image(64, 64, d / "b_small.tif");
  const data::Raster thin = image(40, 100, d / "c_thin.tif");  // no 64 x 64 tile fits: classified whole
  std::shared_ptr<models::Classifier> clf = m.classifier;
  for (const char* mode : {"tiles", "center", "full"}) {
    CAPTURE(mode);
    const std::string out = d / (std::string(mode) + ".csv");
    AppResult r = run_app("classify", {"--weights", ckpt, "--out", out, "--classify", mode, "--batch-size", "5",
                                       "--threads", "1", d / "a_big.tif", d / "b_small.tif", d / "c_thin.tif"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.output);
    const auto got = read_probabilities(out);
    REQUIRE(got.size() == 3);
    const apps::ClassifyFn whole = apps::classifier_fn(clf, apps::ClassifyMode::Full, 64, Device::CPU);
    check_close(got.at(d / "c_thin.tif"), whole(thin.data.data(), 40, 100), 1e-7, 1e-5, "40x100");
    const apps::ClassifyFn fn = apps::classifier_fn(clf, apps::parse_classify_mode(mode), 64, Device::CPU);
    const std::vector<float> want_big = fn(big.data.data(), 130, 200), want_small = fn(small.data.data(), 64, 64);
    check_close(got.at(d / "a_big.tif"), want_big, 1e-7, 1e-5, "130x200");
    check_close(got.at(d / "b_small.tif"), want_small, 1e-7, 1e-5, "64x64");
  }
  // The three modes differ on the large image: the option is live.
  const auto t = read_probabilities(d / "tiles.csv"), c = read_probabilities(d / "center.csv"),
             f = read_probabilities(d / "full.csv");
  CHECK(t.at(d / "a_big.tif") != c.at(d / "a_big.tif"));
  CHECK(t.at(d / "a_big.tif") != f.at(d / "a_big.tif"));
  // One tile: the same image (in another batch, so equal up to rounding).
  check_close(t.at(d / "b_small.tif"), f.at(d / "b_small.tif"), 1e-7, 1e-5, "64x64, tiles vs full");
}

// Nodata (GDAL's tag): a tile that is nodata in every pixel and band is left out of the image's average;
// an image that is nodata everywhere gets class -1 and no probabilities.
TEST_CASE("classify: tiles without data are left out, an image without data has no class") {
  TempDir d("classify_nodata");
  Rng rng(12);
  models::Model m = tiny_classifier(rng);
  const std::string ckpt = d / "clf.safetensors";
  models::save_model(ckpt, m);
  data::Raster r;
  r.height = r.width = 128, r.bands = 13;
  r.data.resize(size_t(13 * 128 * 128));
  for (float& v : r.data) v = float(1 + rng.below(5000));  // no 0 by chance
  for (int b = 0; b < 13; ++b) r.band_names.emplace_back(data::kS2BandNames[size_t(b)]);
  for (int c = 0; c < 13; ++c)  // the top-left tile is the swath's edge
    for (int y = 0; y < 64; ++y)
      for (int x = 0; x < 64; ++x) r.data[size_t(c * 128 * 128 + y * 128 + x)] = 0.f;
  r.nodata = 0.0;
  data::write_geotiff(d / "a_edge.tif", r, data::WriteOptions{});
  data::Raster empty = r;
  std::fill(empty.data.begin(), empty.data.end(), 0.f);
  data::write_geotiff(d / "b_empty.tif", empty, data::WriteOptions{});
  AppResult run = run_app("classify", {"--weights", ckpt, "--out", d / "p.csv", "--threads", "1", d / "a_edge.tif",
                                       d / "b_empty.tif"});
  REQUIRE_MESSAGE(run.exit_code == 0, run.output);
  CHECK_MESSAGE(run.output.find("1 images are nodata everywhere") != std::string::npos, run.output);
  std::ifstream in(d / "p.csv");
  std::string header, edge, none;
  std::getline(in, header), std::getline(in, edge), std::getline(in, none);
  CHECK(none == d / "b_empty.tif" + ",-1,nodata" + std::string(10, ','));
  // The edge image: the mean of its three tiles with data.
  std::vector<std::string> f;
  std::stringstream ss(edge);
  for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
  REQUIRE(f.size() == 13);
  const apps::ClassifyFn one = apps::classifier_fn(m.classifier, apps::ClassifyMode::Full, 64, Device::CPU);
  std::vector<double> want(10, 0.0);
  for (const auto& [y0, x0] : std::vector<std::pair<int, int>>{{0, 64}, {64, 0}, {64, 64}}) {
    std::vector<float> tile;
    for (int c = 0; c < 13; ++c)
      for (int y = 0; y < 64; ++y)
        for (int x = 0; x < 64; ++x) tile.push_back(r.data[size_t(c * 128 * 128 + (y0 + y) * 128 + x0 + x)]);
    const std::vector<float> p = one(tile.data(), 64, 64);
    for (int k = 0; k < 10; ++k) want[size_t(k)] += p[size_t(k)] / 3.0;
  }
  std::vector<double> got;
  for (int k = 0; k < 10; ++k) got.push_back(std::stod(f[size_t(3 + k)]));
  check_close(got, want, 1e-7, 1e-5, "the mean of the three tiles with data");
  // The same image in float32 with NaN as its nodata value (NaN in every band of the edge tile): the
  // same tiles are left out, and the NaN is no error.
  data::Raster nan_edge = r;
  for (int c = 0; c < 13; ++c)
    for (int y = 0; y < 64; ++y)
      for (int x = 0; x < 64; ++x) nan_edge.data[size_t(c * 128 * 128 + y * 128 + x)] = NAN;
  nan_edge.nodata = std::nan("");
  data::WriteOptions f32;
  f32.type = data::SampleType::Float32;
  data::write_geotiff(d / "c_nan_edge.tif", nan_edge, f32);
  AppResult nan_run = run_app("classify", {"--weights", ckpt, "--out", d / "q.csv", "--threads", "1", d / "c_nan_edge.tif"});
  REQUIRE_MESSAGE(nan_run.exit_code == 0, nan_run.output);
  check_close(read_probabilities(d / "q.csv").at(d / "c_nan_edge.tif"), want, 1e-7, 1e-5, "NaN nodata: the same mean");
  // The same in float64 with -1.797e308 as its nodata value (a common float64 convention, infinite as
  // float32): the same tiles left out, and no "not finite" error.
  data::Raster low_edge = nan_edge;
  low_edge.nodata = -1.797e308;
  for (float& v : low_edge.data)
    if (std::isnan(v)) v = -std::numeric_limits<float>::infinity();
  data::WriteOptions f64;
  f64.type = data::SampleType::Float64;
  data::write_geotiff(d / "c_low_edge.tif", low_edge, f64);
  REQUIRE(data::read_tiff_info(d / "c_low_edge.tif").type == data::SampleType::Float64);
  AppResult low_run = run_app("classify", {"--weights", ckpt, "--out", d / "q64.csv", "--threads", "1", d / "c_low_edge.tif"});
  REQUIRE_MESSAGE(low_run.exit_code == 0, low_run.output);
  check_close(read_probabilities(d / "q64.csv").at(d / "c_low_edge.tif"), want, 1e-7, 1e-5,
              "float64 nodata -1.797e308: the same mean");
}

TEST_CASE("classify: a PyTorch classifier that names its bands classifies EuroSAT tiles as PyTorch does") {
  // tests/torch/gen_fixtures_models.py fed the 20 real EuroSAT tiles to a torchvision-named ResNet
  // as stored (B8A last) and kept its probabilities. With bands=<that order> in the checkpoint,
  // default options give PyTorch's answer; without the key, the file is taken as SEN12MS order
  // (with a notice) and the answer moves; --model-bands declares the order instead.
  TempDir d("bands_torch");
  const SafetensorsFile torch_file = load_safetensors(fixture("models_resnet_basic.safetensors"));
  const SafetensorsFile& want = fixture_file("models_resnet_basic_expected.safetensors");
  const json::Value tiles = json::parse(want.metadata.at("tiles"));
  const std::vector<float> probs = want.at("probs").to_vector();
  REQUIRE(tiles.arr.size() == 20);
  REQUIRE(probs.size() == 20 * 10);
  save_safetensors(d / "named.safetensors", torch_file.tensors, {{"bands", data::bands_csv(data::eurosat_bands())}});
  save_safetensors(d / "plain.safetensors", torch_file.tensors);
  auto classify = [&](const std::string& weights, const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> args = {"--weights", weights, "--out", out, "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(real_fixture("eurosat_ms"));
    AppResult r = run_app("classify", args);
    REQUIRE_MESSAGE(r.exit_code == 0, r.output);
    return r.output;
  };
  // The largest |nimbus - PyTorch| over every tile and class.
  auto worst = [&](const std::string& csv) {
    const auto got = read_probabilities(csv);
    REQUIRE(got.size() == 20);
    double w = 0;
    for (size_t t = 0; t < 20; ++t) {
      const auto it = got.find(real_fixture(tiles.arr[t].s));
      REQUIRE_MESSAGE(it != got.end(), tiles.arr[t].s);
      REQUIRE(it->second.size() == 10);
      for (size_t k = 0; k < 10; ++k) w = worse(w, std::fabs(it->second[k] - double(probs[t * 10 + k])));
    }
    return w;
  };
  const std::string named = classify(d / "named.safetensors", d / "named.csv", {});
  CHECK(named.find("does not say which bands") == std::string::npos);
  CHECK_MESSAGE(named.find("the classifier takes eurosat") != std::string::npos, named);
  CHECK(worst(d / "named.csv") < 1e-4);  // the models tests' tolerance for these probabilities

  const std::string plain = classify(d / "plain.safetensors", d / "plain.csv", {});
  CHECK_MESSAGE(plain.find("plain.safetensors does not say which bands it takes (no \"bands\" metadata): taken as "
                           "SEN12MS order") != std::string::npos,
                plain);
  CHECK(worst(d / "plain.csv") > 0.01);  // B8A fed where B9 belongs: a different answer

  classify(d / "plain.safetensors", d / "declared.csv", {"--model-bands", "eurosat"});
  CHECK(worst(d / "declared.csv") < 1e-4);
  // An option that contradicts the checkpoint is an error, not a silent choice.
  AppResult clash = run_app("classify", {"--weights", d / "named.safetensors", "--out", d / "x.csv", "--model-bands",
                                         "sen12ms", real_fixture("eurosat_ms")});
  CHECK(clash.exit_code == 1);
  CHECK_MESSAGE(clash.output.find("its metadata says it takes bands B1,B2,B3,B4,B5,B6,B7,B8,B9,B10,B11,B12,B8A but "
                                  "--model-bands says B1,B2,B3,B4,B5,B6,B7,B8,B8A") != std::string::npos,
                clash.output);
  CHECK_FALSE(fs::exists(d / "x.csv"));
}

TEST_CASE("apps: --precision bf16 trains and classifies under bfloat16 autocast with float32 checkpoints") {
  TempDir d("precision");
  const std::string data = make_eurosat(d);
  AppResult f32 = run_app("train_resnet", with(resnet_args(data, d / "f32"), {"--epochs", "1", "--precision", "fp32"}));
  REQUIRE_MESSAGE(f32.exit_code == 0, f32.output);
  CHECK(f32.output.find("cpu in fp32") != std::string::npos);
  AppResult b16 = run_app("train_resnet", with(resnet_args(data, d / "b16"), {"--epochs", "1", "--precision", "bf16"}));
  REQUIRE_MESSAGE(b16.exit_code == 0, b16.output);
  CHECK(b16.output.find("cpu in bf16") != std::string::npos);
  // The checkpoint keeps float32 master weights and optimiser state, moved elsewhere than by
  // float32 arithmetic (how far a whole bf16 step may part from fp32's: tests/engine/test_autocast.cpp;
  // over an epoch of this tiny network's batch norms the difference is no longer a rounding bound).
  SafetensorsFile a = load_safetensors(d / "f32/last.safetensors"), b = load_safetensors(d / "b16/last.safetensors");
  size_t differ = 0;
  for (const auto& [name, t] : a.tensors) {
    const Tensor* u = b.find(name);
    REQUIRE_MESSAGE(u, name, " missing in the bf16 checkpoint");
    CHECK_MESSAGE(u->dtype() == DType::F32, name, " is not float32 in the bf16 run's checkpoint");
    const std::vector<float> y = u->to_vector();
    for (float v : y) REQUIRE_MESSAGE(std::isfinite(v), name, " holds a non-finite value");
    differ += t.to_vector() != y ? 1 : 0;
  }
  CHECK(differ > 0);  // bf16 really ran
  // classify in bf16: probabilities within 0.05 of fp32's (bfloat16 logits: 2^-8 of their size).
  const std::string ckpt = d / "f32/last.safetensors";
  data::write_eurosat_tile(d / "eu", 7, 3, 0);
  AppResult c32 = run_app("classify", {"--weights", ckpt, "--out", d / "p32.csv", "--threads", "1", d / "eu"});
  AppResult c16 = run_app("classify", {"--weights", ckpt, "--out", d / "p16.csv", "--threads", "1", "--precision",
                                       "bf16", d / "eu"});
  REQUIRE_MESSAGE(c32.exit_code == 0, c32.output);
  REQUIRE_MESSAGE(c16.exit_code == 0, c16.output);
  auto probs = [](const std::string& csv) {
    std::ifstream in(csv);
    std::string line;
    std::getline(in, line);  // header
    std::getline(in, line);
    std::vector<double> p;
    std::stringstream ss(line);
    int field = 0;
    for (std::string x; std::getline(ss, x, ','); ++field)
      if (field >= 3) p.push_back(std::stod(x));
    return p;
  };
  const std::vector<double> p32 = probs(d / "p32.csv"), p16 = probs(d / "p16.csv");
  REQUIRE(p32.size() == 10);
  REQUIRE(p16.size() == 10);
  double worst = 0;
  for (size_t k = 0; k < 10; ++k) worst = worse(worst, std::fabs(p16[k] - p32[k]));  // a NaN fails
  CHECK(worst <= 0.05);
  // tf32 on the CPU runs fp32 and says so.
  AppResult t = run_app("classify", {"--weights", ckpt, "--out", d / "pt.csv", "--threads", "1", "--precision", "tf32",
                                     d / "eu"});
  REQUIRE_MESSAGE(t.exit_code == 0, t.output);
  CHECK(t.output.find("the CPU has no TF32, running fp32") != std::string::npos);
  CHECK(probs(d / "pt.csv") == p32);
}
