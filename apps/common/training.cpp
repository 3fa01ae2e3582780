// training.cpp: shared pieces of the training apps (see training.h).
#include "apps/common/training.h"

#include "apps/common/accuracy.h"
#include "apps/common/device.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "apps/common/progress.h"
#include "engine/distributed/data_parallel.h"
#include "engine/distributed/gradient_reducer.h"
#include "engine/device.h"
#include "engine/graph.h"
#include "engine/io/checkpoint.h"
#include "engine/io/fnv1a.h"
#include "engine/ops/arith.h"
#include "engine/optim/adam.h"
#include "engine/optim/clip_grad.h"
#include "engine/optim/nadam.h"

namespace nimbus::apps {

namespace fs = std::filesystem;

RunPaths::RunPaths(const std::string& out_dir, const std::string& program) : out(out_dir) {
  if (world().rank() == 0) folder = std::make_unique<RunFolder>(out_dir, program);
  last = out + "/last.safetensors";
  best = out + "/best.safetensors";
  metrics = out + "/metrics.csv";
}

void RunPaths::refuse_over(const std::vector<std::pair<std::string, std::string>>& inputs) const {
  for (const std::string& f : {last, best, metrics}) cli::refuse_output_over_input("--out", f, inputs);
}

MetricsCsv::MetricsCsv(std::string path, std::vector<std::string> columns, int keep_through_epoch)
    : path_(std::move(path)), columns_(std::move(columns)) {
  if (keep_through_epoch <= 0) return;  // a fresh run: whatever is there is replaced
  std::ifstream in(path_);
  if (!in) return;  // none (a resume whose metrics.csv was removed starts a new one)
  std::string header;
  std::getline(in, header);
  std::string want;
  for (size_t i = 0; i < columns_.size(); ++i) want += (i ? "," : "") + columns_[i];
  const char* fix = ": remove or repair it to resume (the checkpoints do not depend on it)";
  NIMBUS_CHECK(header == want, path_, ":1: header '", header, "' is not this run's '", want, "'", fix);
  std::string line;
  for (int lineno = 2; std::getline(in, line); ++lineno) {
    if (line.empty()) continue;
    const size_t fields = size_t(std::count(line.begin(), line.end(), ',')) + 1;
    char* end = nullptr;
    const long epoch = std::strtol(line.c_str(), &end, 10);
    NIMBUS_CHECK(fields == columns_.size() && end != line.c_str() && *end == ',' && epoch >= 1, path_, ":", lineno,
                 ": '", line, "' is not a row of this run's ", columns_.size(), " columns", fix);
    if (epoch <= keep_through_epoch) rows_.push_back(line);
  }
}

void MetricsCsv::append(const std::vector<double>& row) {
  NIMBUS_CHECK(row.size() == columns_.size(), path_, ": a row of ", row.size(), " values for ", columns_.size(),
               " columns");
  std::ostringstream r;
  for (size_t i = 0; i < row.size(); ++i)
    r << (i ? "," : "") << (i == 0 ? std::to_string((long long)row[0]) : fmt_num(row[i], 9));
  rows_.push_back(r.str());
  if (world().rank() != 0) return;  // rank 0 alone writes
  std::ostringstream all;
  for (size_t i = 0; i < columns_.size(); ++i) all << (i ? "," : "") << columns_[i];
  all << "\n";
  for (auto& l : rows_) all << l << "\n";
  write_file_atomic(path_, all.str());
}

void refuse_model_beyond_memory(const models::ModelConfig& config, uint64_t available, const std::string& options) {
  const double params = double(models::min_parameter_count(config)), need = 16.0 * params;
  if (available == 0 || need <= double(available)) return;
  constexpr double GiB = double(uint64_t(1) << 30);
  char text[256];
  std::snprintf(text, sizeof text,
                "at least %.3g parameters: its weights, gradients and optimiser moments need at least %.1f GiB, more "
                "than the %.1f GiB of memory available here",
                params, need / GiB, double(available) / GiB);
  throw cli::UsageError(str(options, " make a model (", config.str(), ") of ", text));
}

uint64_t host_memory_available() {
  std::ifstream f("/proc/meminfo");
  for (std::string key; f >> key;) {
    uint64_t kib = 0;
    if (key == "MemAvailable:" && f >> kib) return kib * 1024;
    f.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return 0;
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& type, const NamedTensors& params, double lr,
                                          double weight_decay) {
  NIMBUS_CHECK(lr > 0 && std::isfinite(lr), "--lr must be positive, got ", lr);
  if (type == "adam" || type == "adamw") {
    AdamOptions o;
    o.lr = lr;
    o.weight_decay = weight_decay;
    o.decoupled_weight_decay = type == "adamw";
    return std::make_unique<Adam>(params, o);
  }
  if (type == "nadam") {
    if (weight_decay != 0)
      throw cli::UsageError(str("--weight-decay ", weight_decay, ": Keras-2 Nadam has none (--optimizer adam or adamw)"));
    NadamOptions o;
    o.lr = lr;
    return std::make_unique<Nadam>(params, o);
  }
  throw Error(str("unknown optimiser '", type, "' (adam, adamw or nadam)"));
}

namespace {
std::string hex16(uint64_t h) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
  return hex;
}
}  // namespace

std::string data_fingerprint(const std::vector<std::string>& names, const std::string& what) {
  Fnv1a h;
  for (const std::string& n : names) h.text(n);  // a 0 byte ends each name
  return str(names.size(), " ", what, ", index ", hex16(h.h));
}

RunSetting init_setting(const std::string& path, const models::InitReport* loaded) {
  if (path.empty()) return {"init", "", true};
  NIMBUS_CHECK(loaded, "--init ", path, ": init_setting needs the file's init_from report");
  return {"init", str(fs::path(path).filename().string(), ", content ", hex16(loaded->content_fnv1a)), true};
}

void say_init(const models::InitReport& r, const std::string& path, const std::string& program) {
  if (world().rank() != 0) return;
  std::fprintf(stderr, "%s: --init: %d tensors from %s\n", program.c_str(), r.copied, path.c_str());
  for (const std::string& k : r.kept)
    std::fprintf(stderr, "%s: --init: kept this run's own %s\n", program.c_str(), k.c_str());
}

namespace {
std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

// Rank 0's (name, value) pairs, sent to every rank: names and values as "name\x1fvalue\x1e" records.
std::vector<std::pair<std::string, std::string>> rank0_values(ProcessGroup& g,
                                                              const std::vector<std::pair<std::string, std::string>>& mine) {
  std::string text;
  for (const auto& [k, v] : mine) text += k + '\x1f' + v + '\x1e';
  double bytes = double(text.size());
  g.broadcast(&bytes, sizeof bytes, 0);
  std::string theirs(size_t(bytes), '\0');
  if (g.rank() == 0) theirs = text;
  if (!theirs.empty()) g.broadcast(theirs.data(), theirs.size(), 0);
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t at = 0; at < theirs.size();) {
    const size_t unit = theirs.find('\x1f', at), end = theirs.find('\x1e', at);
    if (unit == std::string::npos || end == std::string::npos || unit > end) break;
    out.emplace_back(theirs.substr(at, unit - at), theirs.substr(unit + 1, end - unit - 1));
    at = end + 1;
  }
  return out;
}

// Every rank of a group that refuses at once: each says its part (`says`, its own), and only then, past a
// barrier, throws UsageError(`summary`): the first rank to stop them all (MPI_Abort) would cut another's
// message short. One process: UsageError(`says`).
[[noreturn]] void refuse_on_every_rank(const std::string& program, const std::string& says,
                                       const std::string& summary) {
  ProcessGroup& g = world();
  if (g.size() == 1) throw cli::UsageError(says);
  std::fprintf(stderr, "%s (%s): %s\n", program.c_str(), describe_rank().c_str(), says.c_str());
  std::fflush(stderr);
  g.barrier();
  throw cli::UsageError(summary);
}

// Every rank compares `mine` with rank 0's; if any rank differs, every rank throws UsageError (`what`
// names the things compared, `rule` says what must hold), a differing rank naming each difference.
void require_same_on_every_rank(const std::string& program,
                                const std::vector<std::pair<std::string, std::string>>& mine, const std::string& what,
                                const std::string& rule) {
  ProcessGroup& g = world();
  if (g.size() == 1) return;
  const std::vector<std::pair<std::string, std::string>> theirs = rank0_values(g, mine);
  std::vector<std::string> differ;
  for (const auto& [k, v] : mine) {
    auto it = std::find_if(theirs.begin(), theirs.end(), [&](const auto& t) { return t.first == k; });
    const std::string other = it == theirs.end() ? std::string("(none)") : it->second;
    if (other != v) differ.push_back(str(k, " '", v, "' here, '", other, "' on rank 0"));
  }
  if (theirs.size() != mine.size() && differ.empty()) differ.push_back("another set of them");
  double count = differ.empty() ? 0.0 : 1.0;
  g.all_reduce_sum(&count, 1);
  if (count == 0) return;
  const std::string says =
      !differ.empty() ? str("this rank was given other ", what, " than rank 0: ", join(differ, "; "), "; ", rule)
                      : str(int(count), " of ", g.size(), " ranks were given other ", what,
                            " than rank 0 (each names them); ", rule);
  refuse_on_every_rank(program, says, str("the ranks do not agree on their ", what, " (each rank said above)"));
}
}  // namespace

void check_ranks_agree(const cli::Parser& p, const std::vector<std::string>& per_rank) {
  std::vector<std::pair<std::string, std::string>> mine;
  for (const auto& [k, v] : p.values()) {
    const bool own = std::find(per_rank.begin(), per_rank.end(), k) != per_rank.end();
    // A per-rank option's value may differ, not whether it is there (--pack on one rank only hung both).
    mine.emplace_back("--" + k, !own ? v : v.empty() ? "(none)" : "(given)");
  }
  std::vector<std::string> shown;
  for (const std::string& k : per_rank) shown.push_back("--" + k);
  require_same_on_every_rank(p.program(), mine, "options",
                             str("every rank must be given the same options (only ", join(shown, ", "), " may differ)"));
}

int resume_or_start(const TrainingOptions& options, const std::string& program, const RunPaths& paths, uint64_t seed,
                    RunSettings& settings, models::Model& model, Optimizer& optimizer, Metadata* metadata) {
  const std::string& last = paths.last;
  ProcessGroup& g = world();
  {  // the run itself (the data by its names, not its path; the split, the bands, ...): the same everywhere
    std::vector<std::pair<std::string, std::string>> mine;
    for (const RunSetting& rs : settings) mine.emplace_back(rs.name, rs.value);
    require_same_on_every_rank(program, mine, "run settings",
                               "every rank must train on the same data (the same file names; its folder may differ), "
                               "split and settings");
  }
  if (!options.resume) {
    // A fresh run into an earlier run's folder: its last.safetensors would be overwritten at the first
    // epoch's end and its best.safetensors kept whenever this run's validation never improves (no
    // validation set, NaN losses), to be taken for this run's by whatever reads the folder next.
    std::vector<std::string> held;
    for (const std::string& f : {paths.last, paths.best})
      if (fs::exists(f)) held.push_back(fs::path(f).filename().string());
    double any = held.empty() ? 0.0 : 1.0;
    g.all_reduce_sum(&any, 1);  // every rank decides alike (only rank 0 removes)
    if (any == 0) return 0;
    if (!options.overwrite) {
      const std::string says =
          str("--out ", paths.out,
              held.empty() ? " holds no checkpoint here, but another rank's holds an earlier run's"
                           : str(" holds an earlier run's checkpoints (", join(held, ", "), ")"),
              ": --resume continues that run; --overwrite starts anew and removes them");
      // Every rank refuses at once (a rank's own message was lost when another stopped them all first).
      refuse_on_every_rank(program, says,
                           "the ranks' output folders hold an earlier run's checkpoints (each rank said above)");
    }
    // Every rank removes what it sees: with an --out that is not shared, a rank's own copy would
    // otherwise outlive the run and stop a later --resume (it would see a checkpoint the others do not).
    // On a shared folder the ranks race to remove the same files, which is harmless (a file already
    // gone is not an error).
    for (const std::string& f : {paths.last, paths.best}) {
      std::error_code ec;
      fs::remove(f, ec);
      NIMBUS_CHECK(!ec || !fs::exists(f), "--overwrite: cannot remove ", f, ": ", ec.message());
    }
    if (g.rank() == 0)
      std::fprintf(stderr, "%s: --overwrite: removed the earlier run's %s from %s\n", program.c_str(),
                   join(held, " and ").c_str(), paths.out.c_str());
    g.barrier();
    return 0;
  }
  // Every rank must take the same decision: a rank that does not see the checkpoint (an --out that is
  // not shared, a file still arriving) would start from epoch 1 while the others resume, and the
  // ranks' collectives would no longer pair up.
  const bool here = fs::exists(last);
  double seen = here ? 1.0 : 0.0;
  g.all_reduce_sum(&seen, 1);
  NIMBUS_CHECK(seen == 0 || seen == double(g.size()), "--resume: ", last, " exists for ", int(seen), " of ", g.size(),
               " ranks (", here ? "this one included" : "not this one",
               "); --out must be a folder every rank sees");
  if (seen == 0) {
    // No last checkpoint but another run's best: starting from epoch 1 would keep it whenever this
    // run's validation never improves, as a fresh run would (above).
    double best_seen = fs::exists(paths.best) ? 1.0 : 0.0;
    g.all_reduce_sum(&best_seen, 1);
    if (best_seen > 0)
      throw cli::UsageError(str("--resume: ", paths.out, " has no last.safetensors to continue but holds an earlier "
                                "run's best.safetensors: --overwrite starts anew and removes it"));
    if (g.rank() == 0)
      std::fprintf(stderr, "%s: --resume: no %s yet, starting from epoch 1\n", program.c_str(), last.c_str());
    return 0;
  }
  // The metadata first (not load_model: it would build a model, drawing from the global Rng), from a
  // file whose checksum holds: a damaged seed or setting is named as damage, not as another run's.
  Metadata meta;
  {
    SafetensorsFile file = load_safetensors(last);  // its tensors go at the end of this block
    verify_checkpoint(file, last);
    meta = std::move(file.metadata);
  }
  auto s = meta.find(kSeedKey);
  NIMBUS_CHECK(s == meta.end() || s->second == std::to_string(seed), last, ": the run used --seed ", s->second,
               " (its split and sample order depend on it) but this one has --seed ", seed);
  std::string differ_list;
  for (RunSetting& rs : settings) {
    auto it = meta.find(kRunSettingPrefix + rs.name);
    if (rs.may_omit) {
      const std::string recorded = it == meta.end() ? std::string() : it->second;
      if (rs.value.empty()) rs.value = recorded;  // not repeated: the run's own carries on
      else if (recorded != rs.value)
        differ_list += str("\n  ", rs.name, ": '", recorded.empty() ? "(none)" : recorded, "' in the checkpoint, '",
                           rs.value, "' now");
    } else if (it != meta.end() && it->second != rs.value) {
      differ_list += str("\n  ", rs.name, ": '", it->second, "' in the checkpoint, '", rs.value, "' now");
    }
  }
  NIMBUS_CHECK(differ_list.empty(), last, ": belongs to another run; --resume continues a run on the data and "
               "settings it started with, and these differ:", differ_list,
               "\n  (give another --out to start a new run)");
  const int64_t epoch = models::load_training_state(last, model, optimizer, &global_rng());
  NIMBUS_CHECK(epoch >= 0, last, ": has no \"epoch\" metadata, cannot resume from it");
  NIMBUS_CHECK(epoch <= kMaxEpochs, last, ": metadata \"epoch\" is ", epoch, ", more than the ", kMaxEpochs,
               " epochs a run may have: cannot resume from it");
  double first = double(epoch);  // and every rank read the same epoch's checkpoint
  g.broadcast(&first, sizeof first, 0);
  double differ = double(first != double(epoch));
  g.all_reduce_sum(&differ, 1);
  NIMBUS_CHECK(differ == 0, "--resume: ", last, " holds epoch ", epoch, " here and epoch ", int64_t(first),
               " on rank 0 (", int(differ), " of ", g.size(), " ranks differ); --out must be a folder every rank sees");
  if (metadata) *metadata = meta;
  if (g.rank() == 0)
    std::fprintf(stderr, "%s: resuming from %s after epoch %lld\n", program.c_str(), last.c_str(), (long long)epoch);
  return int(epoch);
}

double metadata_number(const Metadata& m, const std::string& key, double fallback, const std::string& path,
                       double lo, double hi) {
  auto it = m.find(key);
  if (it == m.end()) return fallback;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(it->second.c_str(), &end);
  NIMBUS_CHECK(!it->second.empty() && *end == '\0' && errno != ERANGE, path, ": metadata \"", key, "\" is '",
               it->second, "', not a number");
  // NaN or out of range: a best score no epoch could beat (NaN) or reach (an accuracy of 2) would keep a
  // stale best.safetensors for the rest of the run.
  NIMBUS_CHECK(v >= lo && v <= hi, path, ": metadata \"", key, "\" is ", it->second, ", outside [", lo, ", ", hi,
               "]: cannot resume from it");
  return v;
}

void check_loss_finite(double loss, int64_t step, int epoch, size_t batch, const std::string& last_checkpoint) {
  if (std::isfinite(loss)) return;
  throw Error(str("loss is ", std::isnan(loss) ? "NaN" : "infinite", " at step ", step, " (epoch ", epoch + 1,
                  ", batch ", batch + 1, "); training stopped, the last good checkpoint is kept: ",
                  fs::exists(last_checkpoint) ? last_checkpoint : std::string("(none written yet)")));
}

bool DebugHooks::here() const { return rank < 0 || rank == world().rank(); }

void DebugHooks::before_step(int64_t step) const {
  if (step == kill_at_step && here()) {
    std::fflush(nullptr);
    std::raise(SIGKILL);
  }
}

void DebugHooks::after_checkpoint(int epoch) const {
  if (epoch == kill_after_epoch && here()) {
    std::fflush(nullptr);
    std::raise(SIGKILL);
  }
}

double DebugHooks::loss(double value, int64_t step) const {
  return step == nan_at_step && here() ? std::numeric_limits<double>::quiet_NaN() : value;
}

void add_training_options(cli::Parser& p, const std::string& run_settings) {
  p.add_int("workers", 2, "data loader threads").range(1, kMaxWorkers);
  p.add_flag("resume", "continue from <out>/last.safetensors (model, optimiser, epoch, RNG, sample order) at the "
                       "start of the next epoch; refused when --seed, the model, or " + run_settings +
                       " differ from the run's. --batch-size, --accumulate and the number of ranks may change: the "
                       "samples come in the same order, grouped into other batches (and steps: a warm-up counts them)");
  p.add_flag("overwrite", "start anew in an --out that holds an earlier run's checkpoints, removing them (without it, "
                          "or --resume, such a folder is refused)");
  p.add_int("read-every", 16, "batches between reads of the training losses from the device: the host waits for "
            "it only then")
      .range(1, kMaxReadEvery);
  p.add_flag("eager", "on CUDA, launch every kernel of every step instead of replaying the step as a captured graph");
  p.add_double("clip-grad-norm", 0, "clip the gradients to this 2-norm before every optimiser step, as "
               "torch.nn.utils.clip_grad_norm_ (0: no clipping, the papers'); each epoch then reports the norms")
      .range(0, 1e12);
  p.add_int("accumulate", 1, "gradient accumulation: batches whose mean gradient makes one optimiser step, so a "
            "step sees --batch-size x N samples (x ranks) with one batch's activations in memory; batch norm still "
            "normalises each batch alone; an epoch's last batches that do not make N are left out")
      .range(1, kMaxAccumulate);
  p.add_double("warmup-epochs", 0, "ramp the learning rate up linearly over the first W = E x (optimiser steps an "
               "epoch) steps, step by step from lr / W to lr (0: none, the papers'); for the larger global batches of "
               "several ranks or --accumulate, with a larger --lr", "E")
      .range(0, 1000);
  p.add_string("init", "", "start from the weights of this model file: fine-tuning (a checkpoint of an earlier run, a "
               "converted Keras DSen2-CR, a PyTorch state_dict as safetensors); a classifier's fc may be for other "
               "classes or absent, and starts anew then. Only for a run's first epoch: a --resume continues from its "
               "checkpoint, and need not name the file again (one naming another file is refused)", "FILE");
  p.add_string("pack", "", "read the training and validation GeoTIFFs from this raster pack, built from them at the "
               "first run and rebuilt when one changes (decoded once: no TIFF decoding per sample)", "FILE");
  p.add_choice("augment-on", "auto", {"auto", "host", "device"},
               "where the training flips and quarter turns are applied: the loader threads (host) or the model's "
               "device, the same draws and the same pixels either way (auto: device on cuda, host on cpu)");
  p.add_int("debug-inject-nan-at-step", -1, "(testing) make the loss of this global step (0-based) NaN (-1: never)");
  p.add_int("debug-sigkill-at-step", -1, "(testing) SIGKILL this process at the start of this step (-1: never)");
  p.add_int("debug-sigkill-after-epoch", -1, "(testing) SIGKILL this process right after this epoch's checkpoint (-1: never)");
  p.add_int("debug-rank", -1, "(testing) with mpirun, the debug hooks act on this rank only (-1: every rank)");
  cli::add_common_options(p);
  add_precision_option(p);
}

std::shared_ptr<const data::RasterPack> open_training_pack(const TrainingOptions& o,
                                                           const std::vector<std::string>& sources,
                                                           const char* program) {
  if (o.pack.empty()) return nullptr;
  // With several ranks, the first rank on each machine checks the pack and builds it when it must,
  // while the others wait; then they open what it left, and only read. (Every rank building its own
  // copy at once multiplied the reads and the disk space by the ranks, and wrote from every rank.)
  ProcessGroup& g = world();
  const bool builder = g.size() == 1 || launched_local_rank() == 0;
  std::shared_ptr<const data::RasterPack> pack;
  if (builder) {
    std::unique_ptr<Progress> bar;
    pack = data::ensure_raster_pack(
        o.pack, sources, [program](const std::string& why) { std::fprintf(stderr, "%s: %s\n", program, why.c_str()); },
        [&](size_t done, size_t total) {
          if (!bar) bar = std::make_unique<Progress>("packing", int64_t(total), stderr, Progress::Mode::Auto, "file");
          bar->update(int64_t(done));
        });
    if (bar) bar->finish();
  }
  if (g.size() > 1) g.barrier();  // a builder that fails stops every rank (abort_all) instead
  if (!builder) {
    const std::string why = data::RasterPack::stale_reason(o.pack, sources);
    NIMBUS_CHECK(why.empty(), "--pack ", o.pack, ": not usable after the first rank on this machine made it (", why,
                 "); every rank of a machine must see the same path");
    pack = data::RasterPack::open(o.pack, true);
  }
  if (g.rank() == 0)
    std::fprintf(stderr, "%s: reading %zu files from the raster pack %s (%.1f MiB)\n", program, pack->size(),
                 o.pack.c_str(), double(pack->bytes()) / 1048576.0);
  return pack;
}

TrainingOptions read_training_options(const cli::Parser& p, const std::string& data_metavar) {
  TrainingOptions o;
  o.data = p.get_string("data");
  o.out = p.get_string("out");
  o.epochs = p.get_int("epochs");
  o.batch = p.get_int("batch-size");
  o.workers = p.get_int("workers");
  o.resume = p.get_flag("resume");
  o.overwrite = p.get_flag("overwrite");
  if (o.resume && o.overwrite) throw cli::UsageError("--resume continues a run and --overwrite starts anew: give one");
  o.read_every = p.get_int("read-every");
  o.graphs = !p.get_flag("eager");
  o.clip_grad_norm = p.get_double("clip-grad-norm");
  o.accumulate = p.get_int("accumulate");
  o.warmup_epochs = p.get_double("warmup-epochs");
  o.pack = p.get_string("pack");
  o.init = p.get_string("init");
  o.augment_on = p.get_string("augment-on");
  o.debug = {p.get_int("debug-inject-nan-at-step"), p.get_int("debug-sigkill-at-step"),
             p.get_int("debug-sigkill-after-epoch"), p.get_int("debug-rank")};
  if (o.data.empty()) throw cli::UsageError("--data " + data_metavar + " is required");
  if (o.out.empty()) throw cli::UsageError("--out DIR is required");
  // --epochs, --batch-size, --workers and --read-every were range-checked while parsing (the trainers
  // declare their ranges with the options). Each worker holds prefetched batches: 100000 of them
  // drove a machine into the OOM killer.
  return o;
}

bool TrainingOptions::flips_on_device(Device device) const {
  return augment_on == "device" || (augment_on == "auto" && device == Device::CUDA);
}

void sum_over_ranks(std::vector<double>& values) {
  ProcessGroup& g = world();
  if (g.size() > 1 && !values.empty()) g.all_reduce_sum(values.data(), values.size());
}

std::vector<size_t> rank_share(size_t count) {
  const ProcessGroup& g = world();
  std::vector<size_t> mine;
  for (size_t k = size_t(g.rank()); k < count; k += size_t(g.size())) mine.push_back(k);
  return mine;
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

data::LoaderOptions loader_options(int64_t batch, int64_t workers, uint64_t seed, int first_epoch,
                                   int64_t accumulate) {
  data::LoaderOptions lo;
  lo.group = size_t(accumulate);  // an epoch's batches after its last whole step are never made
  lo.batch_size = size_t(batch);
  lo.threads = int(workers);
  lo.prefetch = int(std::max<int64_t>(4, workers));
  lo.seed = seed;
  lo.first_epoch = first_epoch;
  lo.rank = world().rank();
  lo.ranks = world().size();
  return lo;
}

namespace {

// Runs the training steps: eagerly, or (CUDA) as a replayed graph of the step (see training.h). A step
// is a group of batches (one without accumulation); each batch's inputs, loss and kept tensors are
// indexed by its place in the group.
class StepRunner {
 public:
  using Group = std::vector<std::vector<Tensor>>;  // per batch: its tensors

  explicit StepRunner(const EpochLoop& L)
      : L_(L), params_(L.model->module().named_parameters()), reducer_(params_, world()) {}

  // One step on the group's host tensors. The losses and kept tensors it returns are on the device and
  // valid until the next run().
  void run(const Group& host, std::vector<Tensor>& losses, std::vector<std::vector<Tensor>>& kept) {
    std::vector<Shape> shapes;
    for (const auto& batch : host)
      for (const Tensor& t : batch) shapes.push_back(t.shape());
    // Several ranks: the gradient all-reduce waits on the host, which a captured graph cannot hold.
    const bool want = L_.graphs && L_.device == Device::CUDA && !capture_failed_ && world().size() == 1;
    if (want && !graph_.empty() && shapes == shapes_) {
      for (size_t b = 0; b < host.size(); ++b)
        for (size_t i = 0; i < host[b].size(); ++i) inputs_[b][i].copy_(host[b][i]);  // staged uploads, no wait
      graph_.replay();
      losses = losses_, kept = kept_;
      return;
    }
    if (want && graph_.empty() && stepped_eagerly_) {
      inputs_.clear();  // a graph reads every batch of the group from its own tensors
      for (const auto& batch : host) inputs_.push_back(on_device(batch));
      shapes_ = shapes;
      try {
        graph_ = DeviceGraph::capture(L_.device, [&] { body(inputs_, false, losses_, kept_); });
      } catch (const Error& e) {
        capture_failed_ = true;
        std::fprintf(stderr, "note: the training step cannot be captured as a CUDA graph, running it eagerly (%s)\n",
                     e.what());
      }
      if (!graph_.empty()) {
        graph_.replay();  // capturing ran nothing: this is the step
        losses = losses_, kept = kept_;
        return;
      }
    }
    body(host, true, losses, kept);
    stepped_eagerly_ = true;
  }

  // Gives the captured step's private memory pool back to the allocator (engine/graph.h), before the
  // epoch's validation: validation runs eagerly, and a run sized to the GPU's memory would otherwise
  // need the step's memory and the validation's at once. The next epoch's first step captures again
  // (one capture's work, and its one host wait).
  void release_graph() {
    graph_ = DeviceGraph();
    inputs_.clear();
    losses_.clear();
    kept_.clear();
  }

 private:
  std::vector<Tensor> on_device(const std::vector<Tensor>& batch) const {
    std::vector<Tensor> d;
    for (const Tensor& t : batch) d.push_back(t.to(L_.device));
    return d;
  }

  // The step on `group`: its batches' host tensors, each uploaded just before its forward (upload), or
  // the graph's tensors on the device.
  void body(const Group& group, bool upload, std::vector<Tensor>& losses, std::vector<std::vector<Tensor>>& kept) {
    L_.optimizer->zero_grad();
    const size_t n = group.size();
    losses.assign(n, Tensor());
    kept.assign(n, {});
    for (size_t b = 0; b < n; ++b) {
      losses[b] = L_.step_loss(upload ? on_device(group[b]) : group[b], kept[b]);
      // Accumulating: each batch's share of the step's mean; the gradients add up in .grad.
      const Tensor share = n == 1 ? losses[b] : mul_scalar(losses[b], 1.f / float(n));
      if (b + 1 < n) share.backward();
      else reducer_.backward(share);  // with several ranks, every rank then holds the same mean gradients
    }
    // The norm before clipping, read back with the last batch's loss (kept last: read_back takes it off).
    if (L_.clip_grad_norm > 0) kept.back().push_back(clip_grad_norm(params_, L_.clip_grad_norm));
    L_.optimizer->step();
  }

  const EpochLoop& L_;
  NamedTensors params_;
  GradientReducer reducer_;
  bool stepped_eagerly_ = false, capture_failed_ = false;
  DeviceGraph graph_;
  std::vector<Shape> shapes_;
  Group inputs_;                           // the tensors the captured step reads
  std::vector<Tensor> losses_;             // and writes
  std::vector<std::vector<Tensor>> kept_;
};

// An epoch's gradient norms before clipping (--clip-grad-norm), as the steps are read back.
// A norm that is not finite stops the run there (its loss was finite, so nothing else would name the
// step: its NaN or zeroed gradients would show only in the next step's loss).
struct GradNorms {
  double sum = 0, max = 0;
  int64_t steps = 0, clipped = 0;
  // step and batch: the step's last batch's (0-based); group: its batches (--accumulate).
  void add(float norm, double limit, int64_t step, int epoch, size_t batch, size_t group,
           const std::string& last_checkpoint) {
    if (!std::isfinite(norm))
      throw Error(str("the gradient norm is ", std::isnan(norm) ? "NaN" : "infinite", " at step ",
                      group == 1 ? str(step, " (epoch ", epoch + 1, ", batch ", batch + 1, ")")
                                 : str(step - int64_t(group) + 1, "-", step, " (epoch ", epoch + 1, ", batches ",
                                       batch + 2 - group, "-", batch + 1, ", one optimiser step)"),
                      " though ", group == 1 ? "its loss was" : "their losses were", " finite; training stopped, "
                      "the last good checkpoint is kept: ",
                      fs::exists(last_checkpoint) ? last_checkpoint : std::string("(none written yet)")));
    ++steps, sum += norm, max = std::max(max, double(norm)), clipped += clip_scales(norm, limit);
  }
  void print(const std::string& program, int epoch, double limit) const {
    std::fprintf(stderr,
                 "%s: epoch %d gradient norm before clipping: mean %.4g, max %.4g; %lld of %lld steps clipped to %g\n",
                 program.c_str(), epoch + 1, steps ? sum / double(steps) : 0.0, max, (long long)clipped,
                 (long long)steps, limit);
  }
};

// The steps whose losses (and kept tensors) wait on the device to be read back: copied, in step
// order, into one device buffer, so that reading them all is one copy to the host (one wait).
class PendingSteps {
 public:
  explicit PendingSteps(Device d) : device_(d) {}
  size_t size() const { return steps_.size(); }

  void add(int64_t step, size_t batch, std::vector<int64_t> labels, const Tensor& loss,
           const std::vector<Tensor>& kept, int64_t read_every) {
    int64_t need = 1;
    for (const Tensor& t : kept) {
      NIMBUS_CHECK(t.dtype() == DType::F32, "pending steps: a kept tensor must be float32, got ", describe(t));
      need += t.numel();
    }
    // Sized (when empty) for twice read_every batches like this one: batches may differ a little (a step's
    // last batch keeps the gradient norm too, when clipping), and reads come by count, not space.
    if (steps_.empty() && (!buffer_.defined() || buffer_.numel() < need * read_every))
      buffer_ = Tensor::empty({2 * need * read_every}, device_);
    NIMBUS_CHECK(used_ + need <= buffer_.numel(), "pending steps: buffer full (read them first)");
    Pending p{step, batch, std::move(labels), used_, {}};
    const DeviceRuntime& rt = device_runtime(device_);
    rt.copy(buffer_.data() + used_, device_, loss.data(), device_, sizeof(float));
    int64_t at = used_ + 1;
    for (const Tensor& t : kept) {
      rt.copy(buffer_.data() + at, device_, t.data(), device_, size_t(t.numel()) * sizeof(float));
      p.kept_shapes.push_back(t.shape());
      at += t.numel();
    }
    used_ = at;
    steps_.push_back(std::move(p));
  }
  // Would a step needing `kept` fit without reading back first?
  bool fits(const std::vector<Tensor>& kept) const {
    int64_t need = 1;
    for (const Tensor& t : kept) {
      NIMBUS_CHECK(t.dtype() == DType::F32, "pending steps: a kept tensor must be float32, got ", describe(t));
      need += t.numel();
    }
    return buffer_.defined() && used_ + need <= buffer_.numel();
  }

  // Reads every pending step back (one host wait) and hands each to `f(step, batch, labels, loss, kept)`.
  template <typename F>
  void read(F f) {
    if (steps_.empty()) return;
    const std::vector<float> all = buffer_.to_vector();
    for (const Pending& p : steps_) {
      std::vector<Tensor> kept;
      int64_t at = p.offset + 1;
      for (const Shape& s : p.kept_shapes) {
        kept.push_back(Tensor::from_vector(s, std::vector<float>(all.begin() + at, all.begin() + at + s.numel())));
        at += s.numel();
      }
      f(p.step, p.batch, p.labels, double(all[size_t(p.offset)]), kept);
    }
    steps_.clear();
    used_ = 0;
  }

 private:
  struct Pending {
    int64_t step;
    size_t batch;
    std::vector<int64_t> labels;
    int64_t offset;  // of the loss in buffer_; the kept tensors follow it
    std::vector<Shape> kept_shapes;
  };
  Device device_;
  Tensor buffer_;
  int64_t used_ = 0;
  std::vector<Pending> steps_;
};

}  // namespace

void train_epochs(const EpochLoop& L) {
  NIMBUS_CHECK(L.read_every >= 1, "train_epochs: read_every must be >= 1");
  NIMBUS_CHECK(L.accumulate >= 1, "train_epochs: accumulate must be >= 1");
  const size_t nb = L.loader->batches_per_epoch(), group = size_t(L.accumulate);
  if (nb < group)
    throw cli::UsageError(str("--accumulate ", group, ": an epoch has ", nb, " batch", nb == 1 ? "" : "es",
                              " of --batch-size ", L.batch, " here, fewer than one step's ", group));
  const size_t used = nb / group * group;  // the batches that make whole steps; the rest are left out
  NIMBUS_CHECK(L.loader->batches_taken_per_epoch() == used, "train_epochs: the loader hands out ",
               L.loader->batches_taken_per_epoch(), " batches an epoch, not the ", used, " of whole steps of ", group,
               " (its options' group must be --accumulate)");
  const int64_t steps_per_epoch = int64_t(used / group);
  const int64_t warmup_steps =
      L.warmup_epochs > 0 ? std::max<int64_t>(1, std::llround(L.warmup_epochs * double(steps_per_epoch))) : 0;
  ProcessGroup& ranks = world();
  if (ranks.size() > 1) {  // the same start on every rank: rank 0's weights and buffers
    broadcast_tensors(L.model->module().named_parameters(), ranks);
    broadcast_tensors(L.model->module().named_buffers(), ranks);
  }
  StepRunner runner(L);
  PendingSteps pending(L.device);
  if (L.first_epoch >= L.epochs && ranks.rank() == 0)  // a --resume of a finished run
    std::fprintf(stderr, "the run has done %d epochs already, --epochs %lld: nothing to train (raise --epochs to "
                         "go on)\n", L.first_epoch, (long long)L.epochs);
  const bool clipping = L.clip_grad_norm > 0;
  const auto started = std::chrono::steady_clock::now();  // this process's first epoch (a resume's too)
  for (int epoch = L.first_epoch; epoch < L.epochs; ++epoch) {
    GradNorms norms;
    const double lr = L.lr_at(epoch);
    // Step t's rate (warm-up, training.h), set before each step; set_lr launches only when it changes.
    const auto rate = [&](int64_t t) { return t < warmup_steps ? lr * double(t + 1) / double(warmup_steps) : lr; };
    L.train_mode();
    // Counted in the global batch's images (every rank's), so the rate is the run's.
    const int64_t per_batch = L.batch * int64_t(ranks.size());
    Progress bar("train epoch " + std::to_string(epoch + 1), int64_t(used) * per_batch, stderr, Progress::Mode::Auto,
                 "img");
    auto read_back = [&] {
      pending.read([&](int64_t step, size_t b, const std::vector<int64_t>& labels, double value,
                       std::vector<Tensor> kept) {
        float norm = 0;
        const bool has_norm = clipping && (b + 1) % group == 0;  // the step's gradient norm, with its last batch
        if (has_norm) {
          norm = kept.back().item();
          kept.pop_back();
        }
        if (ranks.size() > 1) {  // the global batch's loss: the mean of the ranks' means
          ranks.all_reduce_sum(&value, 1);
          value /= double(ranks.size());
        }
        const double l = L.debug->loss(value, step);
        check_loss_finite(l, step, epoch, b, L.paths->last);
        if (has_norm) norms.add(norm, L.clip_grad_norm, step, epoch, b, group, L.paths->last);
        L.after_step(labels, l, kept);
        bar.update(int64_t(b + 1) * per_batch);
      });
      bar.set_note(L.note());
    };
    std::vector<Tensor> losses;
    std::vector<std::vector<Tensor>> kept;
    for (size_t b0 = 0; b0 < used; b0 += group) {
      const int64_t t = int64_t(epoch) * steps_per_epoch + int64_t(b0 / group);  // the run's optimiser step
      L.optimizer->set_lr(rate(t));
      StepRunner::Group inputs;
      std::vector<std::vector<int64_t>> labels;
      for (size_t b = b0; b < b0 + group; ++b) {
        L.debug->before_step(int64_t(epoch) * int64_t(nb) + int64_t(b));
        data::Batch bt = L.loader->next();
        inputs.push_back(L.step_inputs(bt));
        labels.push_back(std::move(bt.labels));
      }
      runner.run(inputs, losses, kept);
      for (size_t k = 0; k < group; ++k) {
        const size_t b = b0 + k;
        if (pending.size() > 0 && !pending.fits(kept[k])) read_back();
        pending.add(int64_t(epoch) * int64_t(nb) + int64_t(b), b, std::move(labels[k]), losses[k], kept[k],
                    L.read_every);
        if (int64_t(pending.size()) >= L.read_every) read_back();
      }
    }
    read_back();  // before validating and saving: a NaN stops the run before any checkpoint has it
    bar.finish();
    losses.clear(), kept.clear();  // the captured step's outputs: its pool goes back with them
    runner.release_graph();
    L.optimizer->zero_grad();  // nor are the gradients held through validation (the next step drops them anyway)
    // Per-rank batch norm leaves each rank its own running statistics: validate rank 0's, which it saves.
    if (ranks.size() > 1) broadcast_tensors(L.model->module().named_buffers(), ranks);
    const EpochLoop::Validation v = L.validate(epoch);
    // Every training loss was finite (read_back checked), yet validation is not: the epoch's last step
    // made the weights or batch-norm statistics non-finite. Stop before metrics.csv's row and the
    // checkpoints: last.safetensors keeps the previous epoch, as with a NaN training loss.
    NIMBUS_CHECK(!v.loss || std::isfinite(*v.loss), "epoch ", epoch + 1, ": the validation loss is ", *v.loss,
                 " though every training loss was finite: the epoch's last step left non-finite weights or "
                 "statistics; nothing of this epoch is saved (", L.paths->last, " keeps epoch ", epoch, ")");
    if (ranks.rank() == 0) {
      L.report(epoch);  // metrics.csv's row first (see training.h); rank 0 alone
      if (clipping) norms.print(L.program, epoch, L.clip_grad_norm);
      // The run's time so far and what the epochs still to come will take at this process's mean rate.
      const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      const int done_here = epoch + 1 - L.first_epoch, left = int(L.epochs) - epoch - 1;
      const std::string so_far = L.first_epoch == 0 ? str("in ", format_duration(took))
                                                    : str("(", done_here, " since the resume, in ", format_duration(took), ")");
      if (left > 0)
        std::fprintf(stderr, "%s: %d of %lld epochs done %s; about %s left\n", L.program.c_str(), epoch + 1,
                     (long long)L.epochs, so_far.c_str(), format_duration(took / done_here * left).c_str());
    }
    models::SaveOptions so;
    so.epoch = epoch + 1;
    so.extra = v.extra;
    so.extra[kSeedKey] = std::to_string(L.seed);
    for (const RunSetting& rs : L.settings) so.extra[kRunSettingPrefix + rs.name] = rs.value;
    if (ranks.rank() == 0) {  // rank 0 alone writes; the others hold the same weights
      if (v.improved) models::save_model(L.paths->best, *L.model, so);
      so.optimizer = L.optimizer;
      so.rng = &global_rng();
      models::save_model(L.paths->last, *L.model, so);
    }
    L.debug->after_checkpoint(epoch + 1);
  }
}

}  // namespace nimbus::apps
