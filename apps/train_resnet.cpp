// train_resnet: train the land-cover classifier (a ResNet, default ResNet-50)
// on EuroSAT MS, with what Aarnoutse & Witte report (reference/experiment.md): Adam lr
// 1e-3, divided by 5 at epochs 50/100/200/250, 13 bands, no pretraining; and our
// choices where they report none (docs/experiment.md lists them): batch 32, flips and
// rot90, a stratified 80/10/10 split, per-band standardisation, torchvision's init.
//
//   train_resnet --data EuroSAT_MS/ --out runs/resnet [--epochs N] [--batch-size B] [--resume]
//
// Band order: EuroSAT files store B8A last (--bands says otherwise for re-saved
// tiles; a tile whose GDAL band descriptions contradict --bands is refused);
// tiles are moved to the SEN12MS-CR order (data/sentinel2.h) before
// anything else, like DSen2-CR's output, and the checkpoint says so in its
// "bands" metadata, which classify and cloud_impact honour.
// The split (stratified per class, from --seed; or --splits: the standard
// eurosat-{train,val,test}.txt lists, or an earlier run's) is written to
// <out>/split_*.txt; input_norm mean/std (reflectance, per band) come from
// training tiles only and are stored in the checkpoint. After every epoch:
// validation loss and accuracy, <out>/last.safetensors (+ optimiser, epoch,
// RNG: --resume), <out>/best.safetensors when validation accuracy improved,
// <out>/metrics.csv. At the end the test split is scored once, with
// best.safetensors read back from its file (last.safetensors without
// validation tiles): accuracy with its 95% interval and the confusion matrix
// in <out>/test.json. --init FILE fine-tunes instead (models::init_from): the backbone from another
// model file, fc anew when its classes differ, input_norm the file's when it has one (--input-norm).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "apps/common/accuracy.h"
#include "apps/common/band_order.h"
#include "apps/common/device.h"
#include "apps/common/progress.h"
#include "apps/common/training.h"
#include "engine/distributed/process_group.h"
#include "engine/distributed/sync_batchnorm.h"
#include "data/eurosat.h"
#include "engine/autograd.h"
#include "engine/ops/augment.h"
#include "engine/ops/loss.h"
#include "engine/optim/lr_schedule.h"

using namespace nimbus;
namespace fs = std::filesystem;

namespace {

// Lowest per-band standard deviation used for input standardisation, in reflectance.
constexpr double kMinBandStd = 0.01;

struct Score {
  double loss = 0;
  int64_t correct = 0, n = 0;
  double acc() const { return n ? double(correct) / double(n) : std::nan(""); }
  void add(const Tensor& logits, const std::vector<int64_t>& labels, double batch_loss,
           ConfusionMatrix* confusion = nullptr) {
    const std::vector<float> l = logits.to_vector();
    const size_t K = size_t(logits.size(1));
    for (size_t i = 0; i < labels.size(); ++i) {
      const float* row = l.data() + i * K;
      const int64_t pred = int64_t(std::max_element(row, row + K) - row);
      correct += pred == labels[i];
      if (confusion) confusion->add(int(labels[i]), int(pred));
    }
    loss += batch_loss * double(labels.size());
    n += int64_t(labels.size());
  }
  double mean_loss() const { return n ? loss / double(n) : std::nan(""); }
  // The score of every rank's samples together (data-parallel runs; unchanged with one rank).
  Score over_ranks() const {
    std::vector<double> v = {loss, double(correct), double(n)};
    apps::sum_over_ranks(v);
    return Score{v[0], int64_t(v[1]), int64_t(v[2])};
  }
};

Tensor label_tensor(const std::vector<int64_t>& labels) {
  std::vector<float> v(labels.begin(), labels.end());
  return Tensor::from_vector({int64_t(v.size())}, v);
}

// Per-band mean and std of reflectance clip(DN, 0, 1e4) / 1e4 over (at most n) evenly spaced training tiles.
void input_norm_stats(const data::SampleFn& fn, size_t count, size_t n, std::vector<float>& mean,
                      std::vector<float>& std) {
  const size_t use = n == 0 ? count : std::min(n, count);
  constexpr size_t C = data::kS2Bands;
  std::vector<double> s(C, 0.0), s2(C, 0.0);
  double pixels = 0;
  Progress bar("input_norm statistics", int64_t(use), stderr, Progress::Mode::Auto, "img");
  for (size_t k = 0; k < use; ++k) {
    Rng rng(0);
    const data::Sample smp = fn(k * count / use, rng);
    const std::vector<float>& v = smp.values[0];
    const size_t hw = v.size() / C;
    for (size_t c = 0; c < C; ++c)
      for (size_t i = 0; i < hw; ++i) {
        const double r = std::clamp(double(v[c * hw + i]), 0.0, double(data::kS2DnPerReflectance)) /
                         double(data::kS2DnPerReflectance);
        s[c] += r;
        s2[c] += r * r;
      }
    pixels += double(hw);
    bar.update(int64_t(k + 1));
  }
  bar.finish();
  mean.assign(C, 0.f);
  std.assign(C, 1.f);
  for (size_t c = 0; c < C; ++c) {
    const double m = s[c] / pixels, var = std::max(0.0, s2[c] / pixels - m * m);
    mean[c] = float(m);
    // Floor the std at 0.01 reflectance (100 DN). Nearly flat bands (B10 cirrus: ~3 DN
    // on clear EuroSAT tiles) would otherwise be scaled up ~300x, so that any small
    // error there (a cirrus veil, DSen2-CR's ~70 DN residual) dominates the classifier's
    // input: +50 DN on B10 alone turned every pristine demo scene into "Highway".
    std[c] = float(std::max(std::sqrt(var), kMinBandStd));
  }
}

// The score over the samples `which` of fn (this rank's share in a data-parallel run); each
// (label, prediction) pair also counted in `confusion` when given.
Score evaluate(models::Classifier& clf, const data::SampleFn& fn, const std::vector<size_t>& which, size_t batch,
               Device dev, const char* what = "validation", ConfusionMatrix* confusion = nullptr) {
  NoGradGuard ng;
  clf.eval();
  Score sc;
  Progress bar(what, int64_t(which.size()), stderr, Progress::Mode::Auto, "img");
  for (size_t b0 = 0; b0 < which.size(); b0 += batch) {
    std::vector<data::Sample> samples;
    std::vector<int64_t> labels;
    for (size_t k = b0; k < std::min(which.size(), b0 + batch); ++k) {
      Rng rng(0);
      samples.push_back(fn(which[k], rng));
      labels.push_back(samples.back().label);
    }
    Tensor logits = clf.logits(apps::stack_field(samples, "image").to(dev));
    sc.add(logits, labels, double(cross_entropy(logits, label_tensor(labels).to(dev)).item()), confusion);
    bar.update(int64_t(sc.n));
  }
  bar.finish();
  return sc;
}

// The test split, scored once at the end with the checkpoint a user goes on with (best.safetensors, or
// last.safetensors when there were no validation tiles), read back from its file as classify reads it.
// Rank 0 alone: another rank's --out may be a disk without the file. Printed, and written to `json_path`.
void score_test_split(const std::string& checkpoint, const data::SampleFn& test_fn, size_t count, size_t batch,
                      Device dev, const std::string& json_path) {
  models::LoadedModel lm = models::load_model(checkpoint);
  NIMBUS_CHECK(lm.model.classifier, checkpoint, ": holds no classifier");
  models::Classifier& clf = *lm.model.classifier;
  clf.to(dev);
  std::vector<size_t> all(count);
  for (size_t i = 0; i < count; ++i) all[i] = i;
  ConfusionMatrix confusion(clf.config().classes);
  const Score sc = evaluate(clf, test_fn, all, batch, dev, "test", &confusion);
  const Proportion acc = confusion.accuracy();
  std::vector<std::string> names(data::eurosat_class_names().begin(), data::eurosat_class_names().end());
  json::write(json_path, json::object({{"checkpoint", json::string(fs::path(checkpoint).filename().string())},
                                       {"epoch", json::number(double(lm.epoch))},
                                       {"tiles", json::number(double(sc.n))},
                                       {"loss", json::number(sc.mean_loss())},
                                       {"accuracy", to_json(acc)},
                                       {"confusion", to_json(confusion, names)}}));
  std::printf("train_resnet: test accuracy %.4f (95%% interval %.4f-%.4f) on %lld tiles, %s of epoch %lld; %s\n",
              acc.value, acc.lo, acc.hi, (long long)sc.n, fs::path(checkpoint).filename().string().c_str(),
              (long long)lm.epoch, json_path.c_str());
}

int run(int argc, char** argv) {
  cli::Parser p("train_resnet",
                "Train the ResNet land-cover classifier on EuroSAT MS (13 bands, 10 classes), resumable. Writes "
                "last.safetensors, best.safetensors, metrics.csv, the split files and the test split's score (test.json) "
                "into --out.");
  p.add_string("data", "", "EuroSAT MS root: <Class>/<Class>_<n>.tif, 13-band uint16", "DIR");
  p.add_string("out", "", "run folder for checkpoints, metrics.csv and split_{train,val,test}.txt", "DIR");
  p.add_int("epochs", 200, "epochs to train in total (a resumed run stops at the same total)").range(1, apps::kMaxEpochs);
  p.add_int("batch-size", 32, "training batch size (the last incomplete batch of an epoch is dropped)")
      .range(1, apps::kMaxBatch);
  p.add_double("lr", 1e-3, "Adam learning rate at the first epoch (after --warmup-epochs' ramp, when given)")
      .range(1e-12, 10);  // checked before any file is made
  p.add_choice("optimizer", "adam", {"adam", "adamw"}, "PyTorch Adam (the paper's) or AdamW (decoupled weight decay)");
  p.add_double("weight-decay", 0, "Adam's L2 term or AdamW's decoupled decay (0: none, the paper's)").range(0, 1);
  p.add_int_list("milestones", "50,100,200,250",
                 "after this many epochs the learning rate is divided again (as PyTorch's MultiStepLR: 50 "
                 "divides it from the 51st epoch, metrics.csv's row 51; the paper's 200 and 250 never act in its "
                 "200 epochs)")
      .range(0, apps::kMaxEpochs);
  p.add_double("lr-divisor", 5, "divisor applied at each milestone").range(1, 1e6);
  p.add_choice("block", "bottleneck", {"basic", "bottleneck"}, "residual block type (bottleneck: ResNet-50 family)");
  p.add_int_list("blocks", "3,4,6,3", "blocks per stage, 4 numbers (3,4,6,3 = ResNet-50; 2,2,2,2 = ResNet-18)")
      .range(1, models::kMaxStageBlocks);
  p.add_int("width", 64, "channels of the first stage (64 = torchvision); smaller for CPU demos")
      .range(1, models::kMaxWidth);
  p.add_double("train-fraction", 0.8, "share of each class for training (stratified split from --seed)").range(0, 1);
  p.add_double("val-fraction", 0.1, "share of each class for validation; the rest is the test split").range(0, 1);
  p.add_string("splits", "",
               "train, validate and test on the tiles a folder's split files list instead of a stratified split: the "
               "standard eurosat-train.txt, eurosat-val.txt and eurosat-test.txt (Neumann et al. 2019, as torchgeo "
               "uses them) or an earlier run's split_train.txt, split_val.txt and split_test.txt (a run started "
               "with one of the two ways resumes with the same one)",
               "DIR");
  p.add_string("bands", "eurosat",
               "band order of the tiles under --data: eurosat = B1..B8,B9..B12,B8A (EuroSAT MS files as "
               "distributed), sen12ms = B1..B8,B8A,B9..B12, or band names separated by commas; tiles are moved to "
               "sen12ms order, which the checkpoint records under \"bands\"",
               "ORDER");
  p.add_int("norm-samples", 2000, "training tiles used for the input_norm mean/std (0 = all of them)").range(0, 1e9);
  p.add_choice("input-norm", "auto", {"auto", "measure", "identity"},
               "the classifier's per-band scaling of reflectance (DN / 10000): its mean and std over the training "
               "tiles (measure), none (identity: plain reflectance, for --init weights trained on DN / 10000), or "
               "auto: an --init file's own when it has one, else measured");
  p.add_flag("no-augment", "no flips / rot90 (default: random flip and quarter turn per tile and epoch)");
  p.add_flag("sync-bn", "with several ranks (mpirun), batch norm statistics over the global batch (every rank's "
             "samples) instead of each rank's own; no effect with one process");
  apps::add_training_options(p, "the tiles, the split fractions or --bands");  // --workers, --resume, ...
  p.parse_or_exit(argc, argv);

  const apps::TrainingOptions training = apps::read_training_options(p, "DIR");
  const std::vector<int64_t> blocks = p.get_int_list("blocks");
  if (blocks.size() != 4) throw cli::UsageError("--blocks needs 4 numbers (blocks per stage)");
  {  // before any work (the split files, the input statistics): StepLr would refuse them only then
    const std::vector<int64_t> ms = p.get_int_list("milestones");
    for (size_t i = 1; i < ms.size(); ++i)
      if (ms[i] <= ms[i - 1]) throw cli::UsageError("--milestones must be increasing epochs, e.g. 50,100,200");
  }
  const cli::CommonOptions common = apps::setup_device(p);
  const std::string splits_dir = p.get_string("splits");
  if (!splits_dir.empty() && (p.given("train-fraction") || p.given("val-fraction")))
    throw cli::UsageError("--splits takes the split from its files: --train-fraction and --val-fraction do not apply");
  {  // before any collective; --splits names a rank's own copy of the files (their tiles are compared)
    std::vector<std::string> per_rank = apps::kPerRankOptions;
    per_rank.push_back("splits");
    apps::check_ranks_agree(p, per_rank);
  }
  const apps::RunPaths paths(training.out, "train_resnet");
  paths.refuse_over({{"--data", training.data}, {"--init", training.init}});
  const std::array<std::string, 3> split_out = {paths.out + "/split_train.txt", paths.out + "/split_val.txt",
                                                paths.out + "/split_test.txt"};
  const std::string test_json = paths.out + "/test.json";

  // Data: index and split.
  data::EuroSat ds(training.data, /*check_files=*/false);
  std::vector<std::string> split_files;
  const data::EuroSatSplit split =
      splits_dir.empty() ? ds.stratified_split(common.seed, p.get_double("train-fraction"), p.get_double("val-fraction"))
                         : ds.read_split_folder(splits_dir, &split_files);
  {  // the run rewrites its split files: an earlier run's, given as --splits, must not be this run's --out
    std::vector<std::pair<std::string, std::string>> inputs;
    for (const std::string& f : split_files) inputs.emplace_back("--splits", f);
    for (const std::string& f : split_out) cli::refuse_output_over_input("--out", f, inputs);
  }
  // One step at least (each rank takes --batch-size of each of its --accumulate batches), before the split
  // files are written.
  const size_t step_samples = size_t(training.batch * training.accumulate) * size_t(world().size());
  NIMBUS_CHECK(split.train.size() >= step_samples, splits_dir.empty() ? training.data : split_files[0], ": ",
               split.train.size(), " training tiles, fewer than ",
               training.accumulate > 1 ? str("one step's ", training.accumulate, " batches of ") : std::string("one batch of "),
               training.batch, world().size() > 1 ? str(" on each of ", world().size(), " ranks") : std::string());
  const data::BandList file_bands = data::parse_bands(p.get_string("bands"), "--bands");
  NIMBUS_CHECK(file_bands.size() == size_t(data::kS2Bands), "--bands: a EuroSAT MS tile has ", data::kS2Bands,
               " bands, not ", file_bands.size(), " (", data::bands_csv(file_bands), ")");
  const data::BandList model_bands = data::sen12ms_bands();
  const std::string bands_from = "--bands " + p.get_string("bands");
  {  // the first tile now, not at its first read (each tile is checked as it is read, from a pack too)
    const std::string& first = ds.items()[split.train.front()].path;
    data::check_declared_bands(first, data::read_tiff_info(first).band_names, file_bands, bands_from);
  }

  // Model and optimiser, then (maybe) the saved state over them.
  models::ResNetConfig rc;
  rc.block = p.get_string("block") == "basic" ? models::BlockType::Basic : models::BlockType::Bottleneck;
  for (int s = 0; s < 4; ++s) rc.blocks[size_t(s)] = int(blocks[size_t(s)]);
  rc.width = int(p.get_int("width"));
  if (common.device == Device::CPU)
    apps::refuse_model_beyond_memory(models::ModelConfig::of(rc), apps::host_memory_available(),
                                     str("--block ", p.get_string("block"), " --blocks ", blocks[0], ",", blocks[1], ",", blocks[2],
                                         ",", blocks[3], " --width ", rc.width));
  models::Model model = models::build_model(models::ModelConfig::of(rc), global_rng());
  models::Classifier& clf = *model.classifier;
  if (p.get_flag("sync-bn") && convert_sync_batchnorm(clf, world()) > 0 && world().rank() == 0)
    std::fprintf(stderr, "train_resnet: batch norm synchronised over %d ranks\n", world().size());
  std::unique_ptr<Optimizer> opt = apps::make_optimizer(p.get_string("optimizer"), clf.named_parameters(),
                                                        p.get_double("lr"), p.get_double("weight-decay"));
  // The run is its tiles, their split and their band order: a resume with others is refused before
  // anything is written (the split files, the --pack), so a refused resume leaves everything as it was.
  std::vector<std::string> tiles;
  for (const data::EuroSatItem& it : ds.items()) tiles.push_back(it.rel);
  const auto split_fingerprint = [&] {  // --splits: the tiles of each part, by name
    std::string text = "--splits";
    const std::pair<const char*, const std::vector<size_t>*> parts[] = {
        {"train", &split.train}, {"val", &split.val}, {"test", &split.test}};
    for (const auto& [name, part] : parts) {
      std::vector<std::string> rels;
      for (size_t i : *part) rels.push_back(ds.items()[i].rel);
      text += str(" ", apps::data_fingerprint(rels, str(name, " tiles")));
    }
    return text;
  };
  // --init before resume_or_start: a file that does not fit leaves the run folder as it was, even with
  // --overwrite (which would remove the earlier run's checkpoints).
  std::optional<models::InitReport> init;
  if (!training.init.empty()) {
    init = models::init_from(training.init, model);
    if (const auto it = init->metadata.find(apps::kBandsKey); it != init->metadata.end())
      NIMBUS_CHECK(it->second == data::bands_csv(model_bands), training.init, ": its metadata says it takes bands ",
                   it->second, " but train_resnet's classifier takes ", data::bands_csv(model_bands));
  }
  apps::RunSettings settings{
      {"data", apps::data_fingerprint(tiles, "tiles")},
      {"split", splits_dir.empty() ? str("--train-fraction ", exact_str(p.get_double("train-fraction")),
                                         " --val-fraction ", exact_str(p.get_double("val-fraction")))
                                   : split_fingerprint()},
      {"bands", data::bands_csv(file_bands)},
      apps::init_setting(training.init, init ? &*init : nullptr)};
  Metadata saved;
  const int done = apps::resume_or_start(training, "train_resnet", paths, common.seed, settings, model,
                                         *opt, &saved);
  bool norm_from_init = false;  // a classifier's input_norm is its file's, as its weights were trained with
  if (done == 0 && init) {
    apps::say_init(*init, training.init, "train_resnet");
    norm_from_init = init->input_norm && p.get_string("input-norm") == "auto";
    if (norm_from_init && world().rank() == 0)
      std::fprintf(stderr, "train_resnet: --init: input_norm from the file, not measured on these tiles\n");
  }
  if (world().rank() == 0) {  // rank 0 alone writes into the run folder
    // An earlier score goes now: this run may replace best.safetensors and stop before scoring it anew,
    // and the old score would then be read as the new checkpoint's (cloud_impact reports it).
    fs::remove(test_json);
    ds.write_split_file(split_out[0], split.train);
    ds.write_split_file(split_out[1], split.val);
    ds.write_split_file(split_out[2], split.test);
  }

  // Sample functions (tiles reordered to sen12ms order), reading from the --pack when there is one.
  data::EuroSatSampleOptions train_opt, eval_opt;
  train_opt.file_bands = file_bands;  // a tile whose band descriptions say otherwise is refused
  train_opt.file_bands_from = bands_from;
  train_opt.transform = [file_bands, model_bands](std::vector<float>& chw, int h, int w) {
    chw = data::reorder_bands(std::move(chw), size_t(h) * size_t(w), file_bands, model_bands, "EuroSAT tile");
  };
  eval_opt.transform = train_opt.transform;
  eval_opt.file_bands = train_opt.file_bands;
  eval_opt.file_bands_from = train_opt.file_bands_from;
  train_opt.augment = data::AugmentConfig{0, false, !p.get_flag("no-augment")};
  const bool augment_on_device = train_opt.augment.flip_rotate && training.flips_on_device(common.device);
  train_opt.flip_rotate_on_device = augment_on_device;
  {
    std::vector<std::string> sources;
    for (const auto* part : {&split.train, &split.val})
      for (size_t i : *part) sources.push_back(ds.items()[i].path);
    train_opt.pack = eval_opt.pack = apps::open_training_pack(training, sources, "train_resnet");
  }
  const data::SampleFn train_fn = data::eurosat_sample_fn(ds, split.train, train_opt);
  const data::SampleFn stats_fn = data::eurosat_sample_fn(ds, split.train, eval_opt);
  const data::SampleFn val_fn = data::eurosat_sample_fn(ds, split.val, eval_opt);
  const data::SampleFn test_fn = data::eurosat_sample_fn(ds, split.test, eval_opt);
  if (split.val.empty() && world().rank() == 0)  // --val-fraction 0, classes too small for it, an empty list
    std::fprintf(stderr, "train_resnet: no validation tiles (%s): no best.safetensors will be written\n",
                 splits_dir.empty() ? str("--val-fraction ", p.get_double("val-fraction")).c_str()
                                    : str(split_files[1], " lists none").c_str());

  if (done == 0 && !norm_from_init) {
    std::vector<float> mean(data::kS2Bands, 0.f), std(data::kS2Bands, 1.f);  // identity: plain reflectance
    if (p.get_string("input-norm") != "identity")
      input_norm_stats(stats_fn, split.train.size(), size_t(std::max<int64_t>(0, p.get_int("norm-samples"))), mean,
                       std);
    clf.set_input_norm(mean, std);
  }
  double best = apps::metadata_number(saved, "best_val_acc", -1.0, paths.last, -1, 1);  // -1: none yet
  clf.to(common.device);
  std::vector<int> ms;
  for (int64_t m : p.get_int_list("milestones")) ms.push_back(int(m));
  const StepLr schedule(p.get_double("lr"), ms, p.get_double("lr-divisor"));
  if (world().rank() == 0)
    std::fprintf(stderr, "train_resnet: %s, %lld parameters; %zu train / %zu val tiles; epochs %d..%lld; %s in %s\n",
                 model.config.str().c_str(), (long long)clf.num_parameters(), split.train.size(), split.val.size(),
                 done + 1, (long long)training.epochs, device_name(common.device), common.precision.c_str());

  apps::MetricsCsv csv(paths.metrics, {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc"}, done);
  data::Loader loader(split.train.size(), train_fn,
                      apps::loader_options(training.batch, training.workers, common.seed, done,
                                           training.accumulate));

  Score tr, va;  // this epoch's training and validation scores
  bool improved = false;
  apps::EpochLoop loop{training.epochs, training.batch, done, &loader, opt.get(), &model, &paths,
                       &training.debug, common.seed};
  loop.settings = settings;
  loop.lr_at = [&](int epoch) { return schedule.lr_at(epoch); };
  loop.train_mode = [&] {
    clf.train();
    tr = Score{};
  };
  loop.device = common.device;
  loop.read_every = training.read_every;
  loop.graphs = training.graphs;
  loop.clip_grad_norm = training.clip_grad_norm;
  loop.accumulate = training.accumulate;
  loop.warmup_epochs = training.warmup_epochs;
  loop.program = "train_resnet";
  loop.step_inputs = [&](const data::Batch& bt) {
    std::vector<Tensor> in{bt["image"], label_tensor(bt.labels)};
    if (augment_on_device) in.push_back(bt["augment"]);  // the codes travel with the batch (and the graph's inputs)
    return in;
  };
  loop.step_loss = [&](const std::vector<Tensor>& in, std::vector<Tensor>& keep) {
    const Tensor logits = clf.logits(augment_on_device ? flip_rotate(in[0], in[2]) : in[0]);
    keep.push_back(logits.detach().to(DType::F32));  // bfloat16 under --precision bf16
    return cross_entropy(logits, in[1]);
  };
  loop.after_step = [&](const std::vector<int64_t>& labels, double l, const std::vector<Tensor>& kept) {
    tr.add(kept[0], labels, l);
  };
  loop.note = [&] {
    char note[64];
    // The loss is every rank's mean; the running accuracy is rank 0's share until the epoch's end.
    std::snprintf(note, sizeof note, "loss %.4f acc %.3f%s", tr.mean_loss(), tr.acc(),
                  world().size() > 1 ? " (rank 0)" : "");
    return std::string(note);
  };
  loop.validate = [&](int) {
    tr = tr.over_ranks();  // every rank's training samples; each rank then validates its share
    va = evaluate(clf, val_fn, apps::rank_share(split.val.size()), size_t(training.batch), common.device).over_ranks();
    // A finite loss too: a model whose logits are all NaN predicts class 0 (argmax) and scores that class's
    // share; it must not become the best (train_epochs then stops the run on the NaN loss).
    improved = va.n > 0 && std::isfinite(va.mean_loss()) && va.acc() > best;
    if (improved) best = va.acc();
    apps::EpochLoop::Validation v;
    v.improved = improved;
    v.extra = {{"best_val_acc", exact_str(best)}, {apps::kBandsKey, data::bands_csv(model_bands)}};
    if (va.n > 0) v.loss = va.mean_loss();
    return v;
  };
  loop.report = [&](int epoch) {
    // The schedule's rate (a warm-up scales it within its steps: training.h).
    const double lr = schedule.lr_at(epoch);
    csv.append({double(epoch + 1), lr, tr.mean_loss(), tr.acc(), va.mean_loss(), va.acc()});
    std::fprintf(stderr, "train_resnet: epoch %d/%lld  lr %.3g  train loss %.4f acc %.4f  val loss %.4f acc %.4f%s\n",
                 epoch + 1, (long long)training.epochs, lr, tr.mean_loss(), tr.acc(), va.mean_loss(), va.acc(),
                 improved ? "  (best)" : "");
  };
  apps::train_epochs(loop);
  if (world().rank() == 0) {
    if (split.val.empty())
      std::printf("train_resnet: done, no validation tiles: no best.safetensors; last.safetensors in %s\n",
                  paths.out.c_str());
    else
      std::printf("train_resnet: done, best validation accuracy %.4f; checkpoints in %s\n", best, paths.out.c_str());
    // The validation never improving (NaN losses) leaves no best.safetensors: nothing to test then.
    const std::string tested = split.val.empty() ? paths.last : paths.best;
    if (split.test.empty() || !fs::exists(tested))
      std::printf("train_resnet: %s: the test split is not scored\n",
                  split.test.empty() ? "no test tiles" : str("no ", fs::path(tested).filename().string()).c_str());
    else
      score_test_split(tested, test_fn, split.test.size(), size_t(training.batch), common.device, test_json);
  }
  world().barrier();  // the other ranks wait for rank 0's test score (a failure there stops them all)
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return nimbus::cli::guarded_main("train_resnet", run, argc, argv); }
