// training.cpp: shared pieces of the training apps (see training.h).
#include "apps/common/training.h"

#include "apps/common/accuracy.h"

#include <algorithm>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "apps/common/progress.h"
#include "engine/io/checkpoint.h"
#include "engine/optim/adam.h"
#include "engine/optim/nadam.h"

namespace nimbus::apps {

namespace fs = std::filesystem;

RunPaths::RunPaths(const std::string& out_dir) : out(out_dir) {
  NIMBUS_CHECK(!out.empty(), "--out DIR is required");
  std::error_code ec;
  fs::create_directories(out, ec);
  NIMBUS_CHECK(!ec && fs::is_directory(out), out, ": cannot create the output folder (", ec.message(), ")");
  last = out + "/last.safetensors";
  best = out + "/best.safetensors";
  metrics = out + "/metrics.csv";
}

MetricsCsv::MetricsCsv(std::string path, std::vector<std::string> columns, int keep_through_epoch)
    : path_(std::move(path)), columns_(std::move(columns)) {
  std::ifstream in(path_);
  std::string line;
  bool header = true;
  while (in && std::getline(in, line)) {
    if (header) {
      header = false;
      continue;
    }
    if (line.empty()) continue;
    // Rows are ours: the first field is the integer epoch.
    long epoch = std::strtol(line.c_str(), nullptr, 10);
    if (epoch >= 1 && epoch <= keep_through_epoch) rows_.push_back(line);
  }
}

void MetricsCsv::append(const std::vector<double>& row) {
  NIMBUS_CHECK(row.size() == columns_.size(), path_, ": a row of ", row.size(), " values for ", columns_.size(),
               " columns");
  std::ostringstream r;
  for (size_t i = 0; i < row.size(); ++i)
    r << (i ? "," : "") << (i == 0 ? std::to_string((long long)row[0]) : fmt_num(row[i], 9));
  rows_.push_back(r.str());
  std::ostringstream all;
  for (size_t i = 0; i < columns_.size(); ++i) all << (i ? "," : "") << columns_[i];
  all << "\n";
  for (auto& l : rows_) all << l << "\n";
  write_file_atomic(path_, all.str());
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& type, const NamedTensors& params, double lr) {
  NIMBUS_CHECK(lr > 0 && std::isfinite(lr), "--lr must be positive, got ", lr);
  if (type == "adam") {
    AdamOptions o;
    o.lr = lr;
    return std::make_unique<Adam>(params, o);
  }
  if (type == "nadam") {
    NadamOptions o;
    o.lr = lr;
    return std::make_unique<Nadam>(params, o);
  }
  throw Error(str("unknown optimiser '", type, "' (adam or nadam)"));
}

int resume_or_start(bool resume, const std::string& program, const std::string& last, uint64_t seed,
                    models::Model& model, Optimizer& optimizer, Metadata* metadata) {
  if (!resume) return 0;
  if (!fs::exists(last)) {
    std::fprintf(stderr, "%s: --resume: no %s yet, starting from epoch 1\n", program.c_str(), last.c_str());
    return 0;
  }
  // The metadata first (not load_model: it would build a model, drawing from the global Rng).
  const Metadata meta = load_safetensors(last).metadata;
  auto s = meta.find(kSeedKey);
  NIMBUS_CHECK(s == meta.end() || s->second == std::to_string(seed), last, ": the run used --seed ", s->second,
               " (its split and sample order depend on it) but this one has --seed ", seed);
  const int64_t epoch = models::load_training_state(last, model, optimizer, &global_rng());
  NIMBUS_CHECK(epoch >= 0, last, ": has no \"epoch\" metadata, cannot resume from it");
  if (metadata) *metadata = meta;
  std::fprintf(stderr, "%s: resuming from %s after epoch %lld\n", program.c_str(), last.c_str(), (long long)epoch);
  return int(epoch);
}

void check_loss_finite(double loss, int64_t step, int epoch, size_t batch, const std::string& kept) {
  if (std::isfinite(loss)) return;
  throw Error(str("loss is ", std::isnan(loss) ? "NaN" : "infinite", " at step ", step, " (epoch ", epoch + 1,
                  ", batch ", batch + 1, "); training stopped, the last good checkpoint is kept: ",
                  fs::exists(kept) ? kept : std::string("(none written yet)")));
}

void DebugHooks::before_step(int64_t step) const {
  if (step == kill_at_step) {
    std::fflush(nullptr);
    std::raise(SIGKILL);
  }
}

double DebugHooks::loss(double value, int64_t step) const {
  return step == nan_at_step ? std::numeric_limits<double>::quiet_NaN() : value;
}

void add_training_options(cli::Parser& p) {
  p.add_int("workers", 2, str("data loader threads (1 to ", kMaxWorkers, ")"));
  p.add_flag("resume", "continue from <out>/last.safetensors (model, optimiser, epoch, RNG, loader order)");
  p.add_int("debug-inject-nan-at-step", -1, "(testing) make the loss of this global step (0-based) NaN (-1: never)");
  p.add_int("debug-sigkill-at-step", -1, "(testing) SIGKILL this process at the start of this step (-1: never)");
  cli::add_common_options(p);
}

TrainingOptions read_training_options(const cli::Parser& p, const std::string& data_metavar) {
  TrainingOptions o;
  o.data = p.get_string("data");
  o.out = p.get_string("out");
  o.epochs = p.get_int("epochs");
  o.batch = p.get_int("batch-size");
  o.workers = p.get_int("workers");
  o.resume = p.get_flag("resume");
  o.debug = {p.get_int("debug-inject-nan-at-step"), p.get_int("debug-sigkill-at-step")};
  if (o.data.empty()) throw cli::UsageError("--data " + data_metavar + " is required");
  if (o.out.empty()) throw cli::UsageError("--out DIR is required");
  if (o.epochs < 1 || o.batch < 1 || o.workers < 1)
    throw cli::UsageError("--epochs, --batch-size, --workers must be >= 1");
  // Each worker holds prefetched batches: 100000 of them drove a machine into the OOM killer.
  if (o.workers > kMaxWorkers)
    throw cli::UsageError(str("--workers ", o.workers, ": at most ", kMaxWorkers, " data loader threads"));
  if (o.batch > kMaxBatch) throw cli::UsageError(str("--batch-size ", o.batch, ": at most ", kMaxBatch));
  if (o.epochs > kMaxEpochs) throw cli::UsageError(str("--epochs ", o.epochs, ": at most ", kMaxEpochs));
  return o;
}

Tensor stack_field(const std::vector<data::Sample>& samples, const std::string& name) {
  NIMBUS_CHECK(!samples.empty(), "stack_field: no samples");
  std::vector<int64_t> dims;
  std::vector<float> all;
  size_t per = 0;
  for (const data::Sample& s : samples) {
    size_t k = 0;
    while (k < s.names.size() && s.names[k] != name) ++k;
    NIMBUS_CHECK(k < s.names.size(), "stack_field: sample ", s.path, " has no '", name, "'");
    if (dims.empty()) {
      dims = s.shapes[k].vec();
      dims.insert(dims.begin(), int64_t(samples.size()));
      per = s.values[k].size();
      all.reserve(samples.size() * per);
    }
    NIMBUS_CHECK(s.values[k].size() == per, "stack_field: sample ", s.path, ": '", name,
                 "' is ", s.shapes[k].str(), ", unlike the first sample's");
    all.insert(all.end(), s.values[k].begin(), s.values[k].end());
  }
  return Tensor::from_vector(Shape(dims), all);
}

data::LoaderOptions loader_options(int64_t batch, int64_t workers, uint64_t seed, int first_epoch) {
  data::LoaderOptions lo;
  lo.batch_size = size_t(batch);
  lo.threads = int(workers);
  lo.prefetch = int(std::max<int64_t>(4, workers));
  lo.seed = seed;
  lo.first_epoch = first_epoch;
  return lo;
}

void train_epochs(const EpochLoop& L) {
  const size_t nb = L.loader->batches_per_epoch();
  for (int epoch = L.first_epoch; epoch < L.epochs; ++epoch) {
    L.optimizer->set_lr(L.lr_at(epoch));
    L.train_mode();
    Progress bar("train epoch " + std::to_string(epoch + 1), int64_t(nb) * L.batch, stderr, Progress::Mode::Auto,
                 "img");
    for (size_t b = 0; b < nb; ++b) {
      const int64_t step = int64_t(epoch) * int64_t(nb) + int64_t(b);
      L.debug->before_step(step);
      data::Batch bt = L.loader->next();
      Tensor loss = L.step_loss(bt);
      const double l = L.debug->loss(loss.item(), step);
      check_loss_finite(l, step, epoch, b, L.paths->last);
      L.optimizer->zero_grad();
      loss.backward();
      L.optimizer->step();
      L.after_step(bt, l);
      bar.update(int64_t(b + 1) * L.batch);
      bar.set_note(L.note());
    }
    bar.finish();
    const EpochLoop::Validation v = L.validate(epoch);
    models::SaveOptions so;
    so.epoch = epoch + 1;
    so.extra = v.extra;
    so.extra[kSeedKey] = std::to_string(L.seed);
    if (v.improved) models::save_model(L.paths->best, *L.model, so);
    so.optimizer = L.optimizer;
    so.rng = &global_rng();
    models::save_model(L.paths->last, *L.model, so);
    L.report(epoch);
  }
}

}  // namespace nimbus::apps
