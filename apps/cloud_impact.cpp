// cloud_impact: the experiment of Aarnoutse & Witte (reference/experiment.md),
// end to end: how much does DSen2-CR cloud removal help a land-cover classifier?
//
//   cloud_impact --classifier resnet/best.safetensors --cr dsen2cr/best.safetensors
//                [--cr-nosar dsen2cr_nosar/best.safetensors] --data SEN12MS-CR/ --split test --out runs/impact
//
// For every scene of the split: the classifier labels the pristine S2 image
// (the reference), the cloudy image as is, and each cloud-removed image; each
// method's output is also scored against the target (MAE, RMSE, PSNR, SSIM,
// SAM; Meraner et al. units). Results go into the run folder (report.md,
// results.json, CSVs, PNG figures: apps/common/experiment_report.h,
// docs/experiment.md). Table 1 is printed at the end.
//
// True labels: when <data>/labels.csv exists (make_synthetic writes it) or
// --labels is given, every table is also computed against the true classes.
// Band order: SEN12MS-CR files and DSen2-CR output are in SEN12MS order; each
// image is moved into the order the classifier takes (its checkpoint's "bands"
// metadata, or --model-bands: apps/common/band_order.h) before it is classified.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "apps/common/band_order.h"
#include "apps/common/device.h"
#include "apps/common/experiment.h"
#include "apps/common/experiment_report.h"
#include "apps/common/progress.h"
#include "apps/common/run_folder.h"
#include "apps/common/training.h"
#include "data/eurosat.h"
#include "models/model_io.h"

using namespace nimbus;
namespace fs = std::filesystem;

namespace {

std::vector<data::Sen12mscrTriplet> select_split(const std::string& data_root, const std::string& split,
                                                 int64_t limit) {
  const bool csv = data_root.size() > 4 && data_root.substr(data_root.size() - 4) == ".csv";
  const data::Sen12mscrIndex index = csv ? data::read_sen12mscr_list(data_root) : data::scan_sen12mscr(data_root);
  std::vector<data::Sen12mscrTriplet> t = split == "all"     ? index.triplets
                                          : split == "train" ? index.split(data::Split::Train)
                                          : split == "val"   ? index.split(data::Split::Val)
                                                             : index.split(data::Split::Test);
  NIMBUS_CHECK(!t.empty(), data_root, ": no complete triplets in split '", split, "' (", index.triplets.size(),
               " in all; synthetic data has no benchmark test ROIs unless it is large: use --split all)");
  if (limit > 0 && size_t(limit) < t.size()) {  // evenly spread, deterministic
    std::vector<data::Sen12mscrTriplet> v;
    for (int64_t k = 0; k < limit; ++k) v.push_back(t[size_t(k) * t.size() / size_t(limit)]);
    t = std::move(v);
  }
  return t;
}

// A DSen2-CR checkpoint and the loss train_dsen2cr trained it with ("l1", "carl --lambda 1", ...; "" when
// the file does not say: a converted model): its quality compares with Meraner et al.'s row of that loss.
struct CrModel {
  std::shared_ptr<models::DSen2CR> net;
  std::string loss;
  std::string cloud_threshold;  // train_dsen2cr's --cloud-threshold (run.cloud-threshold), "" when not said
};
CrModel load_cr(const std::string& path, bool want_sar) {
  models::LoadedModel lm = models::load_model(path);
  NIMBUS_CHECK(lm.model.dsen2cr, path, ": holds ", lm.model.config.str(), ", not a DSen2-CR model");
  NIMBUS_CHECK(lm.model.dsen2cr->config().sar == want_sar, path, ": is ", lm.model.config.str(), " but ",
               want_sar ? "--cr expects a model with SAR" : "--cr-nosar expects a model without SAR");
  const auto said = [&](const char* key) {
    const auto it = lm.metadata.find(std::string(apps::kRunSettingPrefix) + key);
    return it == lm.metadata.end() ? std::string() : it->second;
  };
  return {lm.model.dsen2cr, said("loss"), said("cloud-threshold")};
}

// --out belongs to this experiment: a new or empty folder, or an earlier cloud_impact run's (its files
// are replaced, its figures that this run does not draw removed). A folder of other files is refused
// before any work: report.md and the other files would replace theirs, and the clean-up of stale
// figures would remove their fig_*.png and figure_images/*.png.
// What cloud_impact writes into its folder (experiment_report.h), temporaries included: a folder holding
// nothing else is an earlier run's, finished or stopped part-way.
bool ours(const std::string& name) {
  static const std::set<std::string> files = {"results.json", "predictions.csv", "quality.csv", "table1.md",
                                              "report.md",    "figures.json",    "figure_images", ".nimbus.lock"};
  const auto ends = [&](const char* s) { return name.size() > std::strlen(s) && name.rfind(s) == name.size() - std::strlen(s); };
  return files.count(name) || (name.rfind("fig_", 0) == 0 && (ends(".png") || ends(".svg"))) ||
         name.find(".tmp") != std::string::npos;
}

void refuse_foreign_folder(const std::string& out) {
  std::vector<std::string> names;
  bool all_ours = true;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(out, ec)) {
    const std::string name = e.path().filename().string();
    if (name == ".nimbus.lock") continue;  // the RunFolder's own lock
    names.push_back(name);
    all_ours = all_ours && ours(name);
  }
  if (names.empty()) return;
  // Stopped part-way: only our names, and one that only cloud_impact writes (its first file is predictions.csv).
  const bool distinctive = std::any_of(names.begin(), names.end(), [](const std::string& n) {
    return n == "predictions.csv" || n == "quality.csv" || n == "results.json" || n == "figures.json";
  });
  if (all_ours && distinctive) return;
  const std::string results = out + "/results.json";
  if (fs::is_regular_file(results)) {
    std::ifstream f(results);
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (text.find("\"aarnoutse_witte_accuracy_cloudy\"") != std::string::npos) return;  // written by cloud_impact
  }
  std::sort(names.begin(), names.end());
  std::string some;
  for (size_t i = 0; i < names.size() && i < 3; ++i) some += (i ? ", " : "") + names[i];
  throw cli::UsageError(str("--out ", out, " holds files that are not an earlier cloud_impact run (", some,
                            names.size() > 3 ? ", ..." : "", "): choose a new or empty folder"));
}

int run(int argc, char** argv) {
  cli::Parser p("cloud_impact",
                "The cloud-impact experiment: classify pristine, cloudy and cloud-removed SEN12MS-CR scenes with a "
                "land-cover classifier, score them against the pristine-derived (and true) labels, measure the "
                "cloud-removal quality, and write a report (report.md, results.json, CSVs, figures).");
  p.add_string("classifier", "", "classifier checkpoint (train_resnet's best.safetensors)", "FILE");
  p.add_string("cr", "", "DSen2-CR checkpoint with SAR (train_dsen2cr's)", "FILE");
  p.add_string("cr-nosar", "", "optional DSen2-CR checkpoint without SAR (train_dsen2cr --no-sar)", "FILE");
  p.add_string("data", "", str("SEN12MS-CR root (nested layout) or ", data::kTripletListHelp), "PATH");
  p.add_choice("split", "test", {"test", "val", "train", "all"}, "benchmark split (by ROI) to evaluate; all = every triplet");
  p.add_string("out", "", "run folder for the report, tables and figures", "DIR");
  p.add_string("labels", "", "true labels CSV (default: <data>/labels.csv when it exists)", "FILE");
  p.add_string("classifier-metrics", "", "train_resnet's metrics.csv for the training-curve figure (default: "
                                        "metrics.csv next to --classifier when it exists)", "FILE");
  p.add_choice("classify", "tiles", {"tiles", "center", "full"},
               "how a scene larger than the classifier's tiles is classified: tiles = softmax averaged over the "
               "non-overlapping tiles, center = the centre tile only, full = the whole scene at once");
  p.add_int("classifier-tile", 64, "the classifier's training tile size (EuroSAT: 64)").range(8, 4096);
  p.add_int("limit", 0, "evaluate at most this many scenes, spread evenly over the split (0 = all)").range(0, 1e9);
  p.add_int("examples", 4, "example panels across the cloud-cover range").range(0, 100);
  p.add_double("cloud-threshold", 0.2, "cloud score threshold of the detector (DSen2-CR: 0.2)").range(0, 1);
  p.add_int("tile", 256, "DSen2-CR tile size (scenes up to this size run in one piece)").range(16, 8192);
  p.add_int("batch-size", 4, "DSen2-CR tiles per forward pass").range(1, 4096);
  apps::add_model_bands_option(p);
  cli::add_common_options(p);
  apps::add_precision_option(p);
  p.parse_or_exit(argc, argv);
  const std::string classifier = p.get_string("classifier"), cr = p.get_string("cr"),
                    cr_nosar = p.get_string("cr-nosar"), data_root = p.get_string("data"), out = p.get_string("out");
  if (classifier.empty() || data_root.empty() || out.empty())
    throw cli::UsageError("--classifier FILE, --data PATH and --out DIR are required");
  if (cr.empty() && cr_nosar.empty()) throw cli::UsageError("give --cr FILE (and/or --cr-nosar FILE)");
  const cli::CommonOptions common = apps::setup_device(p);
  // The run owns --out from here: created now (not after all the work), locked against a second run.
  if (fs::exists(out)) refuse_foreign_folder(out);  // before the RunFolder writes its lock and clears temporaries
  const apps::RunFolder folder(out, "cloud_impact");
  refuse_foreign_folder(out);  // again, now that no other run can write there

  // Models.
  models::LoadedModel lm = models::load_model(classifier);
  NIMBUS_CHECK(lm.model.classifier, classifier, ": holds ", lm.model.config.str(), ", not a land-cover classifier");
  const data::BandList model_bands = apps::classifier_bands(lm, classifier, p.get_string("model-bands"), "cloud_impact");
  if (!lm.has_input_norm)
    std::fprintf(stderr, "cloud_impact: %s has no input_norm.mean/std: using plain reflectance\n", classifier.c_str());
  const int K = lm.model.classifier->config().classes;
  std::vector<std::string> class_names;
  for (int k = 0; k < K; ++k)
    class_names.push_back(K == data::kEuroSatClasses ? data::eurosat_class_names()[size_t(k)] : "class" + str(k));
  const apps::ClassifyMode mode = apps::parse_classify_mode(p.get_string("classify"));
  apps::ClassifyFn classify =
      apps::classifier_fn(lm.model.classifier, mode, int(p.get_int("classifier-tile")), common.device);
  if (model_bands != data::sen12ms_bands())
    classify = [inner = classify, model_bands](const float* dn, int h, int w) {
      const size_t hw = size_t(h) * size_t(w);
      const std::vector<float> x = data::reorder_bands(std::vector<float>(dn, dn + data::kS2Bands * hw), hw,
                                                       data::sen12ms_bands(), model_bands, "a SEN12MS-CR scene");
      return inner(x.data(), h, w);
    };

  apps::TileOptions tiles;
  tiles.tile = int(p.get_int("tile"));
  tiles.batch = int(p.get_int("batch-size"));
  tiles.device = common.device;
  std::vector<apps::Method> methods = {apps::cloudy_method()};
  json::Value cr_json = json::string(""), cr_nosar_json = json::string("");
  auto note_tiling = [&](const std::string& path, const models::DSen2CRConfig& c) {  // --tile too small to be exact
    const int radius = apps::receptive_radius(c), margin = apps::tile_margin(c, apps::default_overlap(c, tiles.tile));
    if (margin < radius)
      std::fprintf(stderr, "cloud_impact: note: %s: --tile %d cuts tiles with a margin of %d px, below the model's "
                   "receptive radius %d: scenes larger than a tile are blended, not exact (--tile %d is exact)\n",
                   path.c_str(), tiles.tile, margin, radius, 2 * (2 * radius + 1));
  };
  // Each DSen2-CR model given: loaded, its tiling said, its method added.
  CrModel cr_model, cr_nosar_model;
  const auto add_cr = [&](const std::string& path, bool sar, CrModel& m, json::Value& config) {
    if (path.empty()) return;
    m = load_cr(path, sar);
    note_tiling(path, m.net->config());
    config = json::string(m.net->config().str());
    methods.push_back(apps::dsen2cr_method(sar ? "dsen2cr_sar" : "dsen2cr_nosar",
                                           sar ? "DSen2-CR with SAR" : "DSen2-CR without SAR", m.net, tiles));
  };
  add_cr(cr, true, cr_model, cr_json);
  add_cr(cr_nosar, false, cr_nosar_model, cr_nosar_json);
  const std::string &cr_loss = cr_model.loss, &cr_nosar_loss = cr_nosar_model.loss;
  methods.push_back(apps::pristine_method());
  const int reference = int(methods.size()) - 1;

  // Scenes and labels.
  const std::string split = p.get_string("split");
  const std::vector<data::Sen12mscrTriplet> triplets = select_split(data_root, split, p.get_int("limit"));
  std::string labels_path = p.get_string("labels");
  if (labels_path.empty() && fs::is_directory(data_root) && fs::is_regular_file(data_root + "/labels.csv"))
    labels_path = data_root + "/labels.csv";
  std::map<std::string, apps::TrueLabel> labels;
  if (!labels_path.empty()) labels = apps::read_true_labels(labels_path);
  for (const auto& [name, t] : labels)
    NIMBUS_CHECK(t.label < K, labels_path, ": scene ", name, " has class ", t.label, " but the classifier has ", K);
  std::string metrics_csv = p.get_string("classifier-metrics");
  if (metrics_csv.empty()) {
    const fs::path guess = fs::path(classifier).parent_path() / "metrics.csv";
    if (fs::is_regular_file(guess)) metrics_csv = guess.string();
  }
  if (!metrics_csv.empty()) (void)apps::training_curve(metrics_csv);  // a bad file fails now, not after the work
  const std::optional<apps::ClassifierTest> classifier_test = apps::read_classifier_test(classifier, lm.epoch);  // so does this
  data::CloudDetectorOptions det;
  det.cloud_threshold = p.get_double("cloud-threshold");
  // A model trained with CARL on masks of another threshold (its clear pixels): worth a line, not a
  // refusal. (With L1 the mask only shaped the validation scores.)
  for (const auto& [path, m] : {std::pair{cr, &cr_model}, std::pair{cr_nosar, &cr_nosar_model}})
    if (const std::string& trained = m->cloud_threshold;
        !trained.empty() && trained != exact_str(det.cloud_threshold) && m->loss.rfind("carl", 0) == 0)
      std::fprintf(stderr, "cloud_impact: note: %s was trained with --cloud-threshold %s; this run's detector uses %s "
                   "(the cover table and the quality's reprod/recon masks)\n", path.c_str(), trained.c_str(),
                   exact_str(det.cloud_threshold).c_str());

  std::vector<std::string> names, method_labels;
  for (const auto& m : methods) names.push_back(m.name), method_labels.push_back(m.label);
  apps::Experiment exp(names, method_labels, reference, class_names);
  std::fprintf(stderr, "cloud_impact: %zu scenes (split %s), methods:", triplets.size(), split.c_str());
  for (const auto& m : methods) std::fprintf(stderr, " %s", m.name.c_str());
  std::fprintf(stderr, "; classify %s; %zu true labels from %s\n", apps::classify_mode_name(mode), labels.size(),
               labels_path.empty() ? "(none)" : labels_path.c_str());

  size_t labelled = 0;
  auto load = [&](const data::Sen12mscrTriplet& t) {
    apps::Scene s = apps::load_scene(t, det);
    if (auto it = labels.find(s.name); it != labels.end()) {
      s.true_label = it->second.label;
      s.true_cloud_fraction = it->second.cloud_fraction;
    }
    return s;
  };
  {
    Progress bar("cloud_impact", int64_t(triplets.size()), stderr, Progress::Mode::Auto, "scene");
    for (const auto& t : triplets) {
      apps::Scene s = load(t);
      labelled += s.true_label >= 0;
      exp.add(apps::evaluate_scene(s, methods, classify));
      bar.advance();
    }
    bar.finish();
  }
  if (!labels.empty() && labelled < triplets.size())
    std::fprintf(stderr, "cloud_impact: warning: %zu of %zu scenes have no row in %s\n", triplets.size() - labelled,
                 triplets.size(), labels_path.c_str());

  // Example panels: re-run the first cloud-removal method on a few scenes spread over the cover range.
  apps::ReportOptions ro;
  ro.out_dir = out;
  ro.classifier_metrics = metrics_csv;
  ro.classifier_test = classifier_test;
  if (lm.has_input_norm)  // in SEN12MS order, as the per-band errors (the classifier's may be another)
    ro.classifier_std_dn = apps::classifier_std_dn(lm.model.classifier->input_norm().std.to_vector(), model_bands);
  std::vector<double> covers;
  for (const auto& s : exp.scenes()) covers.push_back(s.cloud_cover);
  const std::vector<size_t> picks = apps::pick_examples(covers, size_t(p.get_int("examples")));
  if (!picks.empty()) {
    Progress bar("examples", int64_t(picks.size()), stderr, Progress::Mode::Auto, "scene");
    for (size_t i : picks) {
      const apps::Scene s = load(triplets[i]);
      const apps::SceneResult& r = exp.scenes()[i];
      const std::vector<float> removed = methods[1].run(s);
      std::string caption = str(s.name, ": cloud cover ", int(100 * s.cloud_cover + 0.5), "%, pristine -> ",
                                class_names[size_t(r.pred[size_t(reference)])], ", cloudy -> ",
                                class_names[size_t(r.pred[0])], ", ", methods[1].name, " -> ",
                                class_names[size_t(r.pred[1])]);
      if (s.true_label >= 0) caption += ", true " + class_names[size_t(s.true_label)];
      ro.examples.push_back(apps::make_example(s, removed, methods[1].label, caption));
      bar.advance();
    }
    bar.finish();
  }
  // Which of Meraner et al.'s rows each of our DSen2-CR rows compares with.
  const auto loss_text = [](const std::string& loss) {
    return loss.empty() ? std::string("a loss its file does not name") : "`--loss " + loss + "`";
  };
  if (!cr.empty() || !cr_nosar.empty())
    ro.trained_with = "Compare each of our rows with Meraner et al.'s row of the same loss: " +
                      (cr.empty() ? std::string() : "DSen2-CR with SAR was trained with " + loss_text(cr_loss)) +
                      (!cr.empty() && !cr_nosar.empty() ? "; " : "") +
                      (cr_nosar.empty() ? std::string() : "DSen2-CR without SAR with " + loss_text(cr_nosar_loss)) +
                      ".";
  ro.settings = json::object({{"classifier", json::string(classifier)},
                              {"classifier_config", json::string(lm.model.config.str())},
                              {"cr", json::string(cr)},
                              {"cr_config", cr_json},
                              {"cr_loss", json::string(cr_loss)},
                              {"cr_nosar", json::string(cr_nosar)},
                              {"cr_nosar_config", cr_nosar_json},
                              {"cr_nosar_loss", json::string(cr_nosar_loss)},
                              {"data", json::string(data_root)},
                              {"split", json::string(split)},
                              {"labels", json::string(labels_path)},
                              {"classify", json::string(apps::classify_mode_name(mode))},
                              {"classifier_tile", json::number(double(p.get_int("classifier-tile")))},
                              {"cloud_threshold", json::number(det.cloud_threshold)},
                              {"limit", json::number(double(p.get_int("limit")))},
                              {"seed", json::number(double(common.seed))}});
  const std::string report = apps::write_report(exp, ro);
  std::printf("\nTable 1 (%zu scenes):\n\n%s\n", triplets.size(), apps::table1_markdown(exp).c_str());
  std::printf("Report: %s (results.json, predictions.csv, quality.csv, figures in %s)\n", report.c_str(),
              out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return nimbus::cli::guarded_main("cloud_impact", run, argc, argv); }
