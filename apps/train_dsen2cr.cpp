// train_dsen2cr: train DSen2-CR on SEN12MS-CR as Meraner et al. did
// (reference/dsen2cr-sen12mscr.md §4, §5): random 128x128 crops with one
// flip + quarter turn per sample and epoch, the §3 cloud/shadow mask computed
// on the raw cloudy crop, the CARL loss, Keras-2 Nadam at 7e-5, batch 16,
// B = 16 blocks of F = 256 features with SAR. On CUDA the flips are drawn by the
// loader and applied on the GPU (--augment-on; the same batch either way).
//
//   train_dsen2cr --data SEN12MS-CR/ --out runs/dsen2cr [--epochs 8] [--resume]
//
// Split: the UnCRtainTS benchmark split by ROI (data/sen12mscr.h); training on
// "train", validation on the top-left crop of every "val" triplet (no
// augmentation), reporting the loss and MAE / RMSE / PSNR / SSIM / SAM in
// reflectance units (data/image_metrics.h) per epoch in <out>/metrics.csv.
// Checkpoints after every epoch: <out>/last.safetensors (with optimiser,
// epoch, RNG for --resume) and <out>/best.safetensors (lowest validation loss).
// --init FILE fine-tunes a model of the same B, F and SAR (an earlier run's, or the authors' published
// weights through scripts/import_keras_dsen2cr.py) instead of starting from He-uniform weights.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>

#include "apps/common/device.h"
#include "apps/common/progress.h"
#include "apps/common/training.h"
#include "data/cloud_detector.h"
#include "data/geotiff.h"
#include "data/image_metrics.h"
#include "data/sen12mscr.h"
#include "engine/autograd.h"
#include "engine/distributed/process_group.h"
#include "engine/ops/augment.h"
#include "engine/ops/loss.h"

using namespace nimbus;

namespace {

struct Inputs {
  Tensor cloudy, target, sar, mask;
};

Tensor predict(models::DSen2CR& net, const Inputs& in) {
  return net.forward(in.cloudy, net.config().sar ? in.sar : Tensor());
}

Tensor loss_of(const std::string& kind, double lambda, const Tensor& pred, const Inputs& in) {
  if (kind == "l1") return l1_loss(pred, in.target);
  return carl_loss(pred, in.target, in.cloudy, in.mask, float(lambda));
}

struct ValResult {
  double loss = std::nan("");
  ImageMetrics metrics;  // dataset means (NaN-skipping)
  size_t images = 0;
};

// The validation loss and metrics over `val`, this rank's share, added up with every rank's.
ValResult validate(models::DSen2CR& net, const std::vector<data::Sen12mscrTriplet>& val,
                   const data::TripletSampleOptions& opt, size_t batch, const std::string& loss_kind, double lambda,
                   Device dev) {
  NoGradGuard ng;
  net.eval();
  ValResult r;
  MetricsMean mean;
  double loss_sum = 0;
  Progress bar("validation", int64_t(val.size()), stderr, Progress::Mode::Auto, "img");
  for (size_t b0 = 0; b0 < val.size(); b0 += batch) {
    std::vector<data::Sample> s;
    for (size_t k = b0; k < std::min(val.size(), b0 + batch); ++k) {
      Rng rng(0);
      s.push_back(data::load_triplet(val[k], rng, opt));
    }
    Inputs in{apps::stack_field(s, "cloudy").to(dev), apps::stack_field(s, "target").to(dev),
              apps::stack_field(s, "sar").to(dev), apps::stack_field(s, "mask").to(dev)};
    Tensor pred = predict(net, in);
    loss_sum += double(loss_of(loss_kind, lambda, pred, in).item()) * double(s.size());
    // Metrics in reflectance: normalised S2 is DN / 2000, reflectance DN / 10000.
    auto refl = [](const Tensor& t) {
      std::vector<float> v = t.to_vector();
      for (float& x : v) x /= 5.f;
      return v;
    };
    const std::vector<float> p = refl(pred), t = refl(in.target), c = refl(in.cloudy), m = in.mask.to_vector();
    const int C = int(pred.size(1)), H = int(pred.size(2)), W = int(pred.size(3));
    const size_t per = size_t(C) * size_t(H) * size_t(W), hw = size_t(H) * size_t(W);
    for (size_t i = 0; i < s.size(); ++i) {
      ImageView pv{p.data() + i * per, C, H, W}, tv{t.data() + i * per, C, H, W}, cv{c.data() + i * per, C, H, W};
      ImageMetrics im = image_metrics(pv, tv, cv, m.data() + i * hw);
      mean.add(im);
    }
    r.images += s.size();
    bar.update(int64_t(r.images));
  }
  bar.finish();
  // Every rank's share together (data-parallel runs): sums, counts and images added up over the ranks.
  std::vector<double> sums = mean.sums();
  sums.push_back(loss_sum);
  apps::sum_over_ranks(sums);
  loss_sum = sums.back();
  sums.pop_back();
  mean = MetricsMean::from_sums(sums);
  r.images = size_t(mean.images());
  if (r.images) r.loss = loss_sum / double(r.images);
  r.metrics = mean.mean();
  return r;
}

int run(int argc, char** argv) {
  cli::Parser p("train_dsen2cr",
                "Train DSen2-CR (cloud removal) on SEN12MS-CR, resumable. Writes last.safetensors, "
                "best.safetensors and metrics.csv into --out.");
  p.add_string("data", "", str("SEN12MS-CR root (nested ROIs*_s1/_s2/_s2_cloudy folders) or ", data::kTripletListHelp),
               "PATH");
  p.add_string("out", "", "run folder for checkpoints and metrics.csv", "DIR");
  p.add_int("epochs", 8, "epochs to train in total (DSen2-CR: 8)").range(1, apps::kMaxEpochs);
  p.add_int("batch-size", 16, "batch size (DSen2-CR: 16); the last incomplete batch of an epoch is dropped")
      .range(1, apps::kMaxBatch);
  p.add_int("crop", 128, "training crop size; random position, plus one flip and quarter turn per sample; "
            "validation scores each val triplet's top-left crop of this size (metrics.csv's val_* are not whole-image "
            "scores: cloud_impact gives those)")
      .range(11, 4096);
  p.add_choice("loss", "carl", {"carl", "l1"}, "CARL (cloud-adaptive, needs the cloud mask) or plain L1 to the target");
  p.add_double("lambda", 1.0, "CARL's weight on the whole-image L1 term").range(0, 1e6);
  p.add_choice("optimizer", "nadam", {"nadam", "adam", "adamw"},
               "Keras-2 Nadam (DSen2-CR), PyTorch Adam, or AdamW (Adam with decoupled weight decay)");
  p.add_double("weight-decay", 0, "Adam's L2 term or AdamW's decoupled decay (0: none; Nadam takes none)").range(0, 1);
  p.add_double("lr", 7e-5, "learning rate, constant after --warmup-epochs' ramp when given (DSen2-CR: 7e-5 with "
               "Nadam; its PyTorch port: 7e-4 with Adam)")
      .range(1e-12, 10);  // checked when parsed: before the run folder or any file is made
  p.add_int("blocks", 16, "residual blocks B").range(0, models::kMaxDsBlocks);
  p.add_int("features", 256, "features F of every conv").range(1, models::kMaxDsFeatures);
  p.add_flag("no-sar", "S2-only model (no S1 input)");
  p.add_double("cloud-threshold", 0.2, "cloud score threshold of the mask detector (DSen2-CR: 0.2)").range(0, 1);
  p.add_int("val-limit", 0, "validate on at most this many val triplets, spread over the split (0 = all)")
      .range(0, 1e9);
  apps::add_training_options(p, "the triplets (training, and validation after --val-limit), --crop, --loss, --lambda "
                                "or --cloud-threshold");  // --workers, --resume, the debug hooks, --device, ...
  p.parse_or_exit(argc, argv);
  if (p.get_string("optimizer") == "nadam" && p.get_double("weight-decay") != 0)  // before any file is made
    throw cli::UsageError("--weight-decay: Keras-2 Nadam has none (--optimizer adam or adamw)");

  const apps::TrainingOptions training = apps::read_training_options(p, "PATH");
  const int64_t crop = p.get_int("crop");
  // (--crop >= 11: SSIM's 11x11 window; the ranges are declared with the options.)
  const cli::CommonOptions common = apps::setup_device(p);
  apps::check_ranks_agree(p, apps::kPerRankOptions);  // before any collective
  const apps::RunPaths paths(training.out, "train_dsen2cr");
  paths.refuse_over({{"--data", training.data}, {"--init", training.init}});

  const bool csv_list = training.data.size() > 4 && training.data.substr(training.data.size() - 4) == ".csv";
  const data::Sen12mscrIndex index =
      csv_list ? data::read_sen12mscr_list(training.data) : data::scan_sen12mscr(training.data);
  const std::vector<data::Sen12mscrTriplet> train = index.split(data::Split::Train);
  std::vector<data::Sen12mscrTriplet> val = index.split(data::Split::Val);
  NIMBUS_CHECK(train.size() >= size_t(training.batch * training.accumulate) * size_t(world().size()), training.data,
               ": ", train.size(), " training triplets (benchmark split), fewer than ",
               training.accumulate > 1 ? str("one step's ", training.accumulate, " batches of ") : std::string("one batch of "),
               training.batch, world().size() > 1 ? str(" on each of ", world().size(), " ranks") : std::string());
  if (const int64_t lim = p.get_int("val-limit"); lim > 0 && size_t(lim) < val.size()) {
    std::vector<data::Sen12mscrTriplet> v;
    for (int64_t k = 0; k < lim; ++k) v.push_back(val[size_t(k) * val.size() / size_t(lim)]);
    val = std::move(v);
  }
  // A crop larger than the images, files in another band order, or S1 not in dB, would stop the run at
  // its first batch (after a --pack was built): said now, naming a file. (Each triplet is checked again when loaded from its files; reading
  // every header here would take minutes on the full set.)
  auto check_first = [&](const std::vector<data::Sen12mscrTriplet>& set) {
    if (set.empty()) return;
    // Its files' bands, types, band order and size, as each triplet is checked again when read.
    const auto [height, width] = data::check_triplet_files(set.front());
    const data::Raster s1 = data::read_geotiff(set.front().s1);  // in dB, as the loader will check it
    data::check_s1_in_db(set.front().s1, s1.data.data(), s1.data.size());
    if (crop > std::min(width, height))
      throw cli::UsageError(str("--crop ", crop, " is larger than the images: ", set.front().s2_cloudy, " is ",
                                width, "x", height, "; give --crop ", std::min(width, height), " or less"));
  };
  check_first(train);
  check_first(val);
  if (val.empty() && world().rank() == 0)
    std::fprintf(stderr, "train_dsen2cr: no validation triplets (benchmark val ROIs) under %s\n", training.data.c_str());

  data::TripletSampleOptions train_opt, val_opt;
  const double thr = p.get_double("cloud-threshold");
  auto mask_fn = [thr](const data::Raster& raw, int dihedral_code) {
    data::CloudDetectorOptions o;
    o.cloud_threshold = thr;
    o.dihedral_code = dihedral_code;
    return data::cloud_shadow_mask(raw.data.data(), raw.bands, raw.height, raw.width, o);
  };
  train_opt.augment = data::AugmentConfig{int(crop), true, true};
  // Flips on the device: the loader reads, masks and batches; one kernel per field turns the pixels.
  const bool augment_on_device = training.flips_on_device(common.device);
  train_opt.flip_rotate_on_device = augment_on_device;
  train_opt.mask_fn = mask_fn;
  val_opt.augment = data::AugmentConfig{int(crop), false, false};
  val_opt.mask_fn = mask_fn;

  models::DSen2CRConfig dc;
  dc.blocks = int(p.get_int("blocks"));
  dc.features = int(p.get_int("features"));
  dc.sar = !p.get_flag("no-sar");
  if (common.device == Device::CPU)
    apps::refuse_model_beyond_memory(models::ModelConfig::of(dc), apps::host_memory_available(),
                                     str("--blocks ", dc.blocks, " --features ", dc.features));
  models::Model model = models::build_model(models::ModelConfig::of(dc), global_rng());
  models::DSen2CR& net = *model.dsen2cr;
  const double lr = p.get_double("lr");
  std::unique_ptr<Optimizer> opt =
      apps::make_optimizer(p.get_string("optimizer"), net.named_parameters(), lr, p.get_double("weight-decay"));
  // The run is its triplets (training, and validation after --val-limit), its cloud masks, its loss and
  // its crop: the best validation loss a resume compares against was measured with them.
  std::vector<std::string> names;
  for (const data::Sen12mscrTriplet& t : train) names.push_back("train " + t.name());
  for (const data::Sen12mscrTriplet& t : val) names.push_back("val " + t.name());
  // --init before resume_or_start: a file that does not fit is refused before --overwrite removes anything.
  std::optional<models::InitReport> init;
  if (!training.init.empty()) init = models::init_from(training.init, model);
  apps::RunSettings settings{
      {"data", apps::data_fingerprint(names, str("triplets (", train.size(), " train, ", val.size(), " val)"))},
      {"loss", p.get_string("loss") == "carl" ? str("carl --lambda ", exact_str(p.get_double("lambda")))
                                              : p.get_string("loss")},
      {"cloud-threshold", exact_str(thr)},
      {"crop", str(crop)},  // validation scores the top-left crop x crop window
      apps::init_setting(training.init, init ? &*init : nullptr)};
  Metadata saved;
  const int done = apps::resume_or_start(training, "train_dsen2cr", paths, common.seed, settings, model,
                                         *opt, &saved);
  if (done == 0 && init) apps::say_init(*init, training.init, "train_dsen2cr");
  double best = apps::metadata_number(saved, "best_val_loss", INFINITY, paths.last, 0, INFINITY);
  // The --pack after the resume check: a refused resume must not rebuild it from other data.
  std::vector<std::string> sources;
  for (const auto& set : {std::cref(train), std::cref(val)})
    for (const data::Sen12mscrTriplet& t : set.get()) sources.insert(sources.end(), {t.s1, t.s2, t.s2_cloudy});
  train_opt.pack = val_opt.pack = apps::open_training_pack(training, sources, "train_dsen2cr");
  net.to(common.device);
  const std::string loss_kind = p.get_string("loss");
  const double lambda = p.get_double("lambda");
  if (world().rank() == 0)
    std::fprintf(stderr, "train_dsen2cr: %s, %lld parameters, loss %s, %s lr %g; %zu train / %zu val triplets; %s in %s\n",
                 model.config.str().c_str(), (long long)net.num_parameters(), loss_kind.c_str(),
                 p.get_string("optimizer").c_str(), lr, train.size(), val.size(), device_name(common.device),
                 common.precision.c_str());

  apps::MetricsCsv csv(paths.metrics,
                       {"epoch", "lr", "train_loss", "val_loss", "val_mae", "val_rmse", "val_psnr", "val_ssim",
                        "val_sam"},
                       done);
  data::Loader loader(train.size(), data::sen12mscr_sample_fn(train, train_opt),
                      apps::loader_options(training.batch, training.workers, common.seed, done,
                                           training.accumulate));

  double loss_sum = 0;  // this epoch's training loss, summed over the batches trained
  size_t batches_trained = 0;
  ValResult v;
  bool improved = false;
  std::vector<data::Sen12mscrTriplet> val_mine;  // this rank's share of the validation triplets (all of them alone)
  for (size_t k : apps::rank_share(val.size())) val_mine.push_back(val[k]);
  apps::EpochLoop loop{training.epochs, training.batch, done, &loader, opt.get(), &model, &paths,
                       &training.debug, common.seed};
  loop.settings = settings;
  loop.lr_at = [&](int) { return lr; };
  loop.train_mode = [&] {
    net.train();
    loss_sum = 0;
    batches_trained = 0;
  };
  loop.device = common.device;
  loop.read_every = training.read_every;
  loop.graphs = training.graphs;
  loop.clip_grad_norm = training.clip_grad_norm;
  loop.accumulate = training.accumulate;
  loop.warmup_epochs = training.warmup_epochs;
  loop.program = "train_dsen2cr";
  loop.step_inputs = [&](const data::Batch& bt) {
    std::vector<Tensor> in{bt["cloudy"], bt["target"], bt["sar"], bt["mask"]};
    if (augment_on_device) in.push_back(bt["augment"]);  // the codes travel with the batch (and the graph's inputs)
    return in;
  };
  loop.step_loss = [&](const std::vector<Tensor>& t, std::vector<Tensor>&) {
    auto turned = [&](const Tensor& x) { return augment_on_device ? flip_rotate(x, t[4]) : x; };
    const Inputs in{turned(t[0]), turned(t[1]), turned(t[2]), turned(t[3])};
    return loss_of(loss_kind, lambda, predict(net, in), in);
  };
  loop.after_step = [&](const std::vector<int64_t>&, double l, const std::vector<Tensor>&) { loss_sum += l, ++batches_trained; };
  loop.note = [&] {
    char note[48];
    std::snprintf(note, sizeof note, "loss %.4f", loss_sum / double(batches_trained));
    return std::string(note);
  };
  loop.validate = [&](int) {
    v = val.empty() ? ValResult{}
                    : validate(net, val_mine, val_opt, size_t(training.batch), loss_kind, lambda, common.device);
    improved = v.images > 0 && v.loss < best;
    if (improved) best = v.loss;
    apps::EpochLoop::Validation r;
    r.improved = improved;
    r.extra = {{"best_val_loss", exact_str(best)}};
    if (v.images > 0) r.loss = v.loss;
    return r;
  };
  loop.report = [&](int epoch) {
    const ImageMetrics& m = v.metrics;
    const double nan = std::nan("");
    csv.append({double(epoch + 1), lr, loss_sum / double(batches_trained), v.loss, v.images ? m.mae : nan,
                v.images ? m.rmse : nan, v.images ? m.psnr : nan, v.images ? m.ssim : nan,
                v.images ? m.sam : nan});
    if (v.images > 0)
      std::fprintf(stderr,
                   "train_dsen2cr: epoch %d/%lld  train loss %.5f  val loss %.5f  MAE %.4f  PSNR %.2f  SAM %.2f%s\n",
                   epoch + 1, (long long)training.epochs, loss_sum / double(batches_trained), v.loss, m.mae, m.psnr, m.sam,
                   improved ? "  (best)" : "");
    else  // no validation set (said once at the start): no NaN columns on the console
      std::fprintf(stderr, "train_dsen2cr: epoch %d/%lld  train loss %.5f  (no validation)\n", epoch + 1,
                   (long long)training.epochs, loss_sum / double(batches_trained));
  };
  apps::train_epochs(loop);
  if (world().rank() == 0)
    std::printf("train_dsen2cr: done; %s in %s\n",
                val.empty() ? "no validation triplets: no best.safetensors; last.safetensors" : "checkpoints",
                paths.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return nimbus::cli::guarded_main("train_dsen2cr", run, argc, argv); }
