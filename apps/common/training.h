// training.h: what train_resnet and train_dsen2cr share: the options they
// both take, the run folder (checkpoints, metrics.csv), resuming, the
// optimiser choice, the epoch loop (train_epochs), stopping on a non-finite
// loss, the hidden fault-injection hooks the reliability tests use, and
// stacking samples into batch tensors.
//
// Run folder <out>/:
//   last.safetensors   after every epoch: model, optimiser, "epoch" = epochs done,
//                      "rng" = global Rng, the app's extra keys (best score...)
//   metrics.csv        one row per epoch, rewritten atomically after each epoch
// Checkpoints are written atomically (temp file + rename), so a SIGKILL at any
// moment leaves the previous complete file. Resuming loads last.safetensors
// and restarts at epoch "epoch"; the loader is a pure function of
// (seed, epoch, index), so the resumed run sees the same batches.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "apps/common/cli.h"
#include "apps/common/run_folder.h"
#include "data/loader.h"
#include "data/raster_pack.h"
#include "engine/optim/optimizer.h"
#include "models/model_io.h"

namespace nimbus::apps {

struct RunPaths {
  // Takes the folder for this run (run_folder.h: created, locked, stale temporaries removed). In a
  // data-parallel run only rank 0 takes it (and writes there); the other ranks only read from it.
  RunPaths(const std::string& out_dir, const std::string& program);
  // Before any work: a usage error when one of the run's files (checkpoints, metrics.csv) is one of
  // `inputs` (option -> path), e.g. a --data list CSV kept in --out under one of those names.
  void refuse_over(const std::vector<std::pair<std::string, std::string>>& inputs) const;
  std::unique_ptr<RunFolder> folder;  // null on ranks other than 0
  std::string out, last, best, metrics;
};

// metrics.csv: header fixed at construction; on resume the rows of epochs
// <= keep_through_epoch are kept from the existing file, later ones (from the
// interrupted epoch) dropped. Epochs are 1-based in the file. On resume (keep_through_epoch > 0) a file
// that is not this run's (another header, a row of other fields) is an Error naming it and the line:
// it used to be dropped silently and rewritten with the new rows alone.
class MetricsCsv {
 public:
  MetricsCsv(std::string path, std::vector<std::string> columns, int keep_through_epoch);
  // row[0] = epoch; same length as the columns. Written by rank 0 alone in a data-parallel run.
  void append(const std::vector<double>& row);
 private:
  std::string path_;
  std::vector<std::string> columns_;
  std::vector<std::string> rows_;
};

// "adam" (PyTorch Adam; weight_decay as L2 in the gradient), "adamw" (PyTorch AdamW; decoupled) or
// "nadam" (Keras-2 Nadam, which has no weight decay: a UsageError when weight_decay is not 0), at
// learning rate lr.
std::unique_ptr<Optimizer> make_optimizer(const std::string& type, const NamedTensors& params, double lr,
                                          double weight_decay = 0);

// Before a trainer builds its model on the CPU: a UsageError naming `options` (those that size the model)
// when its weights, gradients and the optimiser's two moments (16 bytes a parameter, counted with
// models::min_parameter_count, a lower bound) need more than `available` bytes (0: unknown, nothing is
// refused). The largest sizes the options accept (train_resnet --block basic --blocks 64,64,64,64
// --width 512: at least 2.56e10 parameters) filled the machine's memory until the kernel killed the run, with no message.
void refuse_model_beyond_memory(const models::ModelConfig& config, uint64_t available, const std::string& options);
// The memory this machine can give now: /proc/meminfo's MemAvailable in bytes, 0 when unknown.
uint64_t host_memory_available();

// Checkpoint metadata key holding the run's --seed: a resume must use the same one.
inline constexpr const char* kSeedKey = "seed";

// What makes a training run the run it is, besides its model and --seed: the samples it trains and
// validates on, how they are read, and how its best score is measured. Each setting is stored in every
// checkpoint (metadata "run.<name>") and a resume refuses a checkpoint whose run differs: its epochs
// were trained on other data, or its best score is not comparable. What a resumed run may change
// (--epochs, --lr, --workers, ...) is not a setting. Checkpoints written before a setting existed
// lack its key and resume as before.
// A setting that a resume need not repeat (--init: the weights then come from the checkpoint) is
// `may_omit`: when this run's value is "" it is not compared and the checkpoint's value carries on into
// the next checkpoints; a checkpoint written before the setting existed holds "" for it.
struct RunSetting {
  std::string name;   // "data", "split", "bands", "loss", ...
  std::string value;  // compared as text: "27000 tiles, index 5f0c3a91d2e4b877"
  bool may_omit = false;
};
using RunSettings = std::vector<RunSetting>;
inline constexpr const char* kRunSettingPrefix = "run.";
// "<count> <what>, index <16 hex digits>": a 64-bit FNV-1a hash of the names in order. Names, not
// paths: a dataset moved to another folder is the same data.
std::string data_fingerprint(const std::vector<std::string>& names, const std::string& what);

// Loads <last> into model + optimiser + global Rng when --resume and the file
// exists. Returns the number of epochs already done (0 when starting afresh),
// printing what happened. A corrupt or mismatched file (other model, other
// optimiser, other --seed, another run's settings) is an Error naming it and every difference.
// Without --resume, a folder that holds an earlier run's checkpoints is a usage error (the new run
// would overwrite its last.safetensors and keep its best.safetensors, which the next step of a
// pipeline would take for this run's); --overwrite removes them first, saying so.
struct TrainingOptions;
// `settings`' may_omit entries left "" take the checkpoint's values.
int resume_or_start(const TrainingOptions& options, const std::string& program, const RunPaths& paths, uint64_t seed,
                    RunSettings& settings, models::Model& model, Optimizer& optimizer,
                    Metadata* metadata = nullptr);

// Before the first collective of a data-parallel run: every rank must have been given the same options
// but for `per_rank` (names without "--": what names a rank's own files and resources, e.g. out, data,
// pack, threads, workers). A rank given another --lr or --seed used to train another run in silence
// (another split: validation tiles in its training share); another --batch-size, --epochs or --sync-bn
// hung every rank in a collective. Throws UsageError on every rank; a rank that differs names each
// option with its value and rank 0's. resume_or_start compares the run settings (the data's names)
// the same way. One rank: nothing to compare.
void check_ranks_agree(const cli::Parser& p, const std::vector<std::string>& per_rank);
// The trainers' per-rank options: a rank's own --out (a disk of its own), the data's, the pack's and
// --init's paths (the data is compared by its names, --init's file by its content), and its threads.
inline const std::vector<std::string> kPerRankOptions = {"out", "data", "pack", "init", "threads", "workers"};

// --init: the run setting "init" (may_omit: "" without --init, else the file's name and the FNV-1a of
// its bytes, from the read that loaded it: every rank, and a resume that names it, must start from the
// same weights). The trainers copy the weights into the freshly built model before resume_or_start
// (models::init_from, whose report carries the hash), so that a file that does not fit is refused
// before --overwrite removes an earlier run's checkpoints; a resumed run then loads its checkpoint over
// them. say_init: rank 0 says what came from the file and which of the model's own were kept, when the
// run starts afresh.
RunSetting init_setting(const std::string& path, const models::InitReport* loaded);
void say_init(const models::InitReport& r, const std::string& path, const std::string& program);

// A number stored in a checkpoint's metadata (the best validation score): `fallback` when the key
// is absent; an Error naming the file and the key when the text is not a number, or is NaN or
// outside [lo, hi].
double metadata_number(const Metadata& m, const std::string& key, double fallback, const std::string& path,
                       double lo, double hi);

// Stops training on a NaN or infinite loss: Error naming the global step, the
// epoch and batch, and the checkpoint that is kept.
void check_loss_finite(double loss, int64_t step, int epoch, size_t batch, const std::string& last_checkpoint);

// Testing hooks, listed in --help under "debug-": --debug-inject-nan-at-step S
// replaces the loss of global step S (0-based) by NaN before the check (the
// loss itself, so the check is tested whatever the model does with a NaN
// input); --debug-sigkill-at-step S makes the process
// SIGKILL itself at the start of step S (as if killed from outside).
// --debug-rank R: in a data-parallel run, the hooks act on rank R alone (-1: every rank), so that a test
// can kill one rank and see the others stop.
struct DebugHooks {
  int64_t nan_at_step = -1, kill_at_step = -1;
  int64_t kill_after_epoch = -1;  // --debug-sigkill-after-epoch E: right after epoch E's checkpoint (1-based)
  int64_t rank = -1;
  bool here() const;  // do the hooks act on this rank?
  void before_step(int64_t step) const;      // raises SIGKILL at kill_at_step
  void after_checkpoint(int epoch) const;    // raises SIGKILL once epoch (1-based) kill_after_epoch is saved
  double loss(double value, int64_t step) const;  // NaN at nan_at_step, else value
};

// The options every trainer takes besides its own. add_training_options() declares, after the
// trainer's: --workers N (data loader threads), --resume, --overwrite, --read-every N (batches between
// reads of the losses from the device), --eager (no CUDA graph), --clip-grad-norm X (engine/optim/
// clip_grad.h before every optimiser step; 0, the default and both papers' choice, clips nothing),
// --accumulate N (gradient accumulation: N batches a step), --warmup-epochs E (a linear warm-up of the
// rate; EpochLoop says both), --pack, --augment-on, the debug hooks, then the common options (--device,
// --threads, --seed) and --precision. read_training_options() reads them back with --data, --out,
// --epochs and --batch-size, which each trainer declares first with its own defaults; it throws
// cli::UsageError when --data or --out is missing ("--data <data_metavar> is required") or a count
// is below 1.
// Bounds of the trainers' shared options (beyond them a typo, not a plan): loader threads, batch
// size, epochs, batches between reads, batches a step.
constexpr int64_t kMaxWorkers = 256, kMaxBatch = 65536, kMaxEpochs = 1000000, kMaxReadEvery = 4096,
                  kMaxAccumulate = 256;

struct TrainingOptions {
  std::string data, out;
  int64_t epochs = 0, batch = 0, workers = 0;
  int64_t read_every = 16;  // --read-every: batches between reads of the losses
  bool graphs = true;       // off with --eager
  double clip_grad_norm = 0;  // --clip-grad-norm: the gradients' largest 2-norm (0: not clipped)
  int64_t accumulate = 1;     // --accumulate: batches whose gradients make one optimiser step
  double warmup_epochs = 0;   // --warmup-epochs: the learning rate's linear warm-up (EpochLoop)
  bool resume = false;
  bool overwrite = false;  // --overwrite: a fresh run may replace an earlier run's checkpoints in --out
  std::string init;  // --init FILE: the model file a fresh run starts from ("" = the usual initialisation)
  std::string pack;  // --pack FILE: read the samples' GeoTIFFs from this raster pack ("" = from the files)
  std::string augment_on = "auto";  // --augment-on auto|host|device: where the training flips are applied
  DebugHooks debug;
  // Are the training flips and quarter turns left to the model's device (drawn by the loader, applied
  // by engine/ops/augment.h's flip_rotate)? auto: on CUDA yes, on the CPU the loader threads do them.
  bool flips_on_device(Device device) const;
};
// run_settings: what --resume compares, for its help ("the data, the split and the band order").
void add_training_options(cli::Parser& p, const std::string& run_settings);
// The raster pack (data/raster_pack.h) of --pack holding `sources`: built first, with a progress bar,
// when it is missing or stale (a source changed, or one is not in it); null without --pack.
std::shared_ptr<const data::RasterPack> open_training_pack(const TrainingOptions& o,
                                                           const std::vector<std::string>& sources,
                                                           const char* program);
TrainingOptions read_training_options(const cli::Parser& p, const std::string& data_metavar);

// Data-parallel runs: `values` summed element-wise over the ranks, in place (nothing with one rank),
// for the epoch's scores; and this rank's share of `count` items to evaluate (r, r + R, r + 2R, ...:
// every item on exactly one rank, all of them with one rank).
void sum_over_ranks(std::vector<double>& values);
std::vector<size_t> rank_share(size_t count);

// Stacks field `name` of each sample into one (B, ...) tensor.
Tensor stack_field(const std::vector<data::Sample>& samples, const std::string& name);

// The loader of a training run: batches of `batch` over `count` samples from `fn`, `workers`
// threads, the order a pure function of (seed, epoch), starting at epoch `first_epoch` on resume.
data::LoaderOptions loader_options(int64_t batch, int64_t workers, uint64_t seed, int first_epoch,
                                   int64_t accumulate);

// The epoch loop both trainers run. For each epoch from `first_epoch` to `epochs` (0-based): the
// learning rate lr_at(epoch) (ramped by a warm-up, below), train_mode(), then one optimiser step after
// another, each of `accumulate` batches of the loader (one without accumulation): for each batch, the
// debug hooks and its tensors (step_inputs) put on `device`; zero_grad; for each batch its loss =
// step_loss(inputs) and backward; with clip_grad_norm > 0 the gradients clipped to that norm
// (engine/optim/clip_grad.h, after a data-parallel run's all-reduce, so every rank clips the same mean
// gradients); the optimiser step. The host does not wait for the device in a step: each batch's loss (and
// what step_loss kept, the logits) is copied aside on the device, and every `read_every` batches and at
// the end of the epoch all of them are read back at once, each loss checked finite (a NaN stops training
// naming its step: "step" in messages and in the debug hooks counts batches) and passed to after_step,
// and the progress bar advances, noted with note(). When clipping, each step's norm before clipping is
// read back with its last batch's loss; a norm that is not finite stops training naming the step's
// batches, and after report(epoch) a line "<program>: epoch E gradient norm before clipping: mean M, max
// X; C of S steps clipped to N" goes to stderr (rank 0). After each epoch's report but the last, rank 0
// says how many epochs are done, in what time, and about how long the rest take at this process's mean
// rate ("<program>: 3 of 200 epochs done in 12:03; about 13:11:10 left"; a resume counts from its own
// start). Then validate(epoch) says whether the model improved and which metadata to store; the loop
// writes <best> (when improved) and <last> (with optimiser and RNG, for --resume). report(epoch), which
// writes metrics.csv's row, runs before the checkpoints: a run killed between the two then has the
// row and not the checkpoint, and a resume redoes the epoch and rewrites the row; in the other order
// it lost the row for good.
//
// Gradient accumulation (accumulate = N > 1): each batch's loss is scaled by 1/N before its backward,
// so the gradients add up to the mean gradient of the N batches, as of one batch N times larger when the
// loss is a mean over samples; the all-reduce, clipping and step come once, after the last. Batch norm
// still normalises each batch of `batch` samples alone. The last batches of an epoch that do not make N
// are left out (a usage error when an epoch has fewer than N): the loader, made with loader_options'
// `accumulate`, never reads them, and no step number names them. The activations kept for backward are one batch's, each batch
// uploaded just before its forward; the host holds the step's N batches, and a captured graph N batches'
// inputs on the device.
//
// Warm-up (warmup_epochs = E > 0): over the first W = round(E x steps an epoch) optimiser steps (at least
// 1), step t (0-based, counted from the run's start, a resume's too) runs at lr_at(epoch) x (t + 1) / W,
// then lr_at(epoch) itself: a linear ramp from lr / W to lr (Goyal et al.'s for large batches; PyTorch's
// LinearLR(start_factor = 1/W, total_iters = W - 1) stepped per optimiser step), on top of the schedule
// (a milestone inside the ramp moves its target). The rate is set before each step (a one-thread launch
// when it changes, between graph replays); the trainers' metrics.csv lr column is lr_at's. A resume that
// changes the steps an epoch (--batch-size, --accumulate, the ranks) changes W and where t stands.
//
// On CUDA, unless `graphs` is off, the step (its N batches with accumulation) is captured as a CUDA graph
// at the second step (the first creates the optimiser state) and replayed for every step of the same
// shapes, its inputs copied into the tensors the capture used (engine/graph.h); a step of other shapes
// runs eagerly (the loader drops the last, partial batch, so in the apps none comes). A step that cannot
// be captured runs eagerly, with a note on stderr saying why. The graph is released before each
// validation (its memory pool would otherwise stay reserved beside the validation's) and captured again
// at the next epoch's first step.
struct EpochLoop {
  EpochLoop(int64_t epochs_, int64_t batch_, int first_epoch_, data::Loader* loader_, Optimizer* optimizer_,
            models::Model* model_, const RunPaths* paths_, const DebugHooks* debug_, uint64_t seed_)
      : epochs(epochs_), batch(batch_), first_epoch(first_epoch_), loader(loader_), optimizer(optimizer_),
        model(model_), paths(paths_), debug(debug_), seed(seed_) {}
  int64_t epochs = 0, batch = 0;
  int first_epoch = 0;
  data::Loader* loader = nullptr;
  Optimizer* optimizer = nullptr;
  models::Model* model = nullptr;
  const RunPaths* paths = nullptr;
  const DebugHooks* debug = nullptr;
  uint64_t seed = 0;
  RunSettings settings;         // written into every checkpoint (see RunSetting)
  Device device = Device::CPU;  // the model's
  int64_t read_every = 16;      // batches between reads of the losses (one host wait each)
  bool graphs = true;           // on CUDA: capture the step once and replay it
  double clip_grad_norm = 0;    // > 0: the gradients clipped to this 2-norm before each optimiser step
  int64_t accumulate = 1;       // batches a step (gradient accumulation): see above
  double warmup_epochs = 0;     // > 0: the learning rate's linear warm-up over this many epochs: see above
  std::string program;          // the trainer's name, for the lines train_epochs prints itself
  std::function<double(int epoch)> lr_at;
  std::function<void()> train_mode;
  // The batch's tensors a step reads, on the host: the model's inputs, then its targets.
  std::function<std::vector<Tensor>(const data::Batch& batch)> step_inputs;
  // A batch's loss from those tensors on `device` (the forward pass only). Tensors after_step needs
  // besides the loss (the logits) are appended to `keep`.
  std::function<Tensor(const std::vector<Tensor>& inputs, std::vector<Tensor>& keep)> step_loss;
  // Once a batch's loss has been read back: its labels, its loss and the kept tensors (host).
  std::function<void(const std::vector<int64_t>& labels, double loss, const std::vector<Tensor>& kept)> after_step;
  std::function<std::string()> note;
  struct Validation {
    bool improved = false;
    std::map<std::string, std::string> extra;  // checkpoint metadata (best score, ...)
    // The mean validation loss, when there was validation: a non-finite one stops the run before the
    // epoch's checkpoints (the last step left weights that are not finite, though its loss was).
    std::optional<double> loss;
  };
  std::function<Validation(int epoch)> validate;
  std::function<void(int epoch)> report;  // metrics.csv row and the console line
};
void train_epochs(const EpochLoop& loop);

}  // namespace nimbus::apps
