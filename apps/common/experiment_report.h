// experiment_report.h: the cloud-impact run folder: tables (markdown), CSVs,
// results.json, the figures and report.md, from an Experiment (experiment.h).
//
// Files written into the run folder (docs/experiment.md explains each):
//   report.md                  tables + figures, the papers' numbers beside ours
//   results.json               every number (Experiment::to_json + run settings; the classifier's
//                              EuroSAT test score when its test.json is beside it)
//   predictions.csv            one row per scene: cover, true label, each method's class
//   quality.csv                one row per (scene, method): the 14 image metrics
//   table1.md                  Table 1 alone (also printed by cloud_impact)
//   figures.json, figure_images/  every figure as data (figure_file.h), in every build
//   fig_training_curve.png/.svg     classifier accuracy per epoch (when a metrics.csv is given)
//   fig_class_distribution.png/.svg predicted class shares: pristine, cloudy, cloud-removed
//   fig_confusion_<method>.png/.svg method vs pristine-derived labels, row-normalised
//   fig_accuracy_by_cover.png/.svg  accuracy vs pristine-derived labels per cloud-cover bin
//   fig_examples.png                example panels across the cloud-cover range
// The fig_* files only when the build has PLplot (plot.h); plot_figures draws them later otherwise.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "apps/common/experiment.h"
#include "apps/common/plot.h"
#include "data/sentinel2.h"

namespace nimbus::apps {

// Paper figures we compare with (reference/experiment.md, dsen2cr-sen12mscr.md §5.3).
inline constexpr double kPaperCloudyAccuracy = 0.3987;   // Aarnoutse & Witte, Table 1
inline constexpr double kPaperDsen2crAccuracy = 0.7565;  // same, DSen2-CR (with SAR)
inline constexpr double kPaperClassifierValAccuracy = 0.929;  // same, the classifier's best validation accuracy

// "39.87% [35.1, 44.9]" style cell.
std::string percent_ci(const Proportion& p);
// Markdown Table 1: one row per method, accuracy vs pristine-derived labels (and
// vs true labels when the scenes have them), the paper's number where it has one.
std::string table1_markdown(const Experiment& e);
// Accuracy per cloud-cover bin (vs pristine-derived labels), one column per method, counts.
std::string cover_markdown(const Experiment& e);
// Mean cloud-removal quality per method, Meraner et al. Table 1 columns, with their rows.
std::string quality_markdown(const Experiment& e);
// Per-band MAE against the target in DN per method, and (when given, 13 values in SEN12MS order) the
// classifier's input std per band in DN with each error in units of it ("-" for a band it lacks).
std::string band_error_markdown(const Experiment& e, const std::vector<double>& classifier_std_dn);
// The classifier's input_norm std (reflectance, one per band of model_bands, its input order) as DN in
// SEN12MS order, the per-band table's: NaN for a band the classifier does not take.
std::vector<double> classifier_std_dn(const std::vector<float>& std, const data::BandList& model_bands);

// train_resnet's metrics.csv -> accuracy-per-epoch chart (every *_acc column). Error naming the file.
plot::LineChart training_curve(const std::string& metrics_csv);

// The classifier's own score on the EuroSAT test split, from the test.json train_resnet writes beside
// its checkpoints. Only when that file scored this checkpoint (its "checkpoint" names the classifier's
// file name and its "epoch" is the checkpoint's, `epoch`); nullopt when there is no such file or it
// scored another (said on stderr when only the epoch differs). Error naming the file when it is malformed.
struct ClassifierTest {
  std::string path;        // the test.json read
  std::string checkpoint;  // the file it scored ("best.safetensors")
  int64_t epoch = -1;
  Proportion accuracy;
};
std::optional<ClassifierTest> read_classifier_test(const std::string& classifier_path, int64_t epoch);
// "EuroSAT test accuracy 91.2% [89.1, 93.0] on 2700 tiles (test.json: best.safetensors of epoch 37)".
std::string classifier_test_line(const ClassifierTest& t);

// One example: its panels (cloudy RGB, SAR, mask, cloud-removed RGB, target RGB) and a caption.
struct Example {
  std::string caption;
  std::vector<plot::Panel> panels;
};
Example make_example(const Scene& s, const std::vector<float>& removed_dn, const std::string& removed_title,
                     const std::string& caption);
// Indices of up to n scenes spread over the cloud-cover range (sorted by cover, evenly spaced ranks).
std::vector<size_t> pick_examples(const std::vector<double>& covers, size_t n);

struct ReportOptions {
  std::string out_dir;
  std::string classifier_metrics;  // "" = no training-curve figure
  json::Value settings;            // the run's settings, stored in results.json as "settings"
  std::string trained_with;        // under the quality table: the losses our DSen2-CR models were trained with
  std::vector<Example> examples;
  std::vector<double> classifier_std_dn;  // classifier_std_dn() (13, SEN12MS order), or empty: no input_norm
  std::optional<ClassifierTest> classifier_test;  // read_classifier_test(), or none
};
// Writes every file listed above. Returns the path of report.md.
std::string write_report(const Experiment& e, const ReportOptions& o);

}  // namespace nimbus::apps
