// experiment.h: the cloud-impact experiment (reference/experiment.md) as a
// library: load a SEN12MS-CR scene, run every "method" (a way to turn the
// cloudy image into something to classify), classify each result, and keep
// the accounting (accuracies with CIs, confusion matrices, cloud-cover bins,
// class distributions, cloud-removal quality). cloud_impact is a thin driver;
// the tests plug in fake classifiers and fake cloud removers.
//
// Methods. A Method maps a scene to a 13-band image in DN (13, H, W), SEN12MS
// band order. The rows of Table 1 are all methods:
//   cloudy    the cloudy input as is (the paper's baseline)
//   dsen2cr*  DSen2-CR output (DN = normalised output * 2000, not clipped)
//   pristine  the cloud-free target: the upper bound, 100% by construction
// The pristine method's predictions are the pseudo ground truth ("reference").
//
// Classification of a (13, H, W) scene with a classifier trained on 64x64
// EuroSAT tiles (the paper does not say how): ClassifyMode
//   tiles   (default) softmax averaged over the non-overlapping 64x64 tiles
//           (16 for 256x256; a remainder strip is covered by one more tile flush
//           with the far edge), then argmax: the whole scene at the scale trained on;
//   center  the centre 64x64 crop only;
//   full    the whole image at once (the ResNet's global pool accepts any
//           size, but the objects are seen at the trained scale only locally).
//
// Cloud cover of a scene = the detector's cloud fraction of the cloudy input
// (data/cloud_detector.h cloud_cover_fraction, shadow not counted). The
// quality metrics use the detector's cloud-or-shadow mask (as Meraner et al.).
#pragma once
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "apps/common/accuracy.h"
#include "apps/common/cloud_removal.h"
#include "data/cloud_detector.h"
#include "data/image_metrics.h"
#include "data/sen12mscr.h"
#include "models/classifier.h"

namespace nimbus::apps {

// One scene, everything in memory, SEN12MS band order.
struct Scene {
  std::string name;          // "ROIs1158_spring_106_p30"
  int height = 0, width = 0;
  std::vector<float> cloudy;  // (13, H, W) DN, NaN filled with the window mean, not clipped
  std::vector<float> target;  // (13, H, W) DN, cloud-free
  std::vector<float> sar;     // (2, H, W) dB (VV, VH), NaN filled; empty when not loaded
  std::vector<float> mask;    // (H, W) 1 = cloud or shadow (detector on `cloudy`), else 0
  double cloud_cover = 0;     // detector cloud fraction of `cloudy`
  int true_label = -1;        // -1: unknown
  double true_cloud_fraction = std::numeric_limits<double>::quiet_NaN();  // from the synthetic labels
};

// Reads a triplet (S2 cloudy, S2, S1) and runs the detector. Error naming the
// file when bands or sizes disagree (S2: 13 bands, S1: 2, same H x W).
Scene load_scene(const data::Sen12mscrTriplet& t, const data::CloudDetectorOptions& detector = {});
// Fills mask and cloud_cover from scene.cloudy.
void detect(Scene& scene, const data::CloudDetectorOptions& detector = {});

struct Method {
  std::string name;   // key in files: "cloudy", "dsen2cr_sar", "dsen2cr_nosar", "pristine"
  std::string label;  // for tables: "DSen2-CR with SAR"
  std::function<std::vector<float>(const Scene&)> run;  // -> (13, H, W) DN
  // The output is one of the scene's own images (cloudy, pristine): for the quality metrics it is
  // clipped to [0, 10000] DN as the references are, so the pristine row stays the cap (0 error).
  bool is_input = false;
};
Method cloudy_method();    // returns scene.cloudy (is_input)
Method pristine_method();  // returns scene.target (is_input)
// DSen2-CR over the whole scene (tiled as apps/common/cloud_removal.h). The
// model's SAR setting decides whether scene.sar is used (Error if it is empty).
Method dsen2cr_method(std::string name, std::string label, std::shared_ptr<models::DSen2CR> net,
                      TileOptions tiles);

// A classifier: DN (13, H, W) -> class probabilities (classes).
using ClassifyFn = std::function<std::vector<float>(const float* dn, int height, int width)>;
enum class ClassifyMode { Tiles, Center, Full };
ClassifyMode parse_classify_mode(const std::string& s);  // "tiles" | "center" | "full"; Error otherwise
const char* classify_mode_name(ClassifyMode m);
// Corners (y, x) of the crops a mode classifies, each tile x tile (Full: one
// crop of the whole image at (0, 0)). Error when the image is smaller than a tile
// (Tiles/Center).
std::vector<std::pair<int, int>> classify_crops(int height, int width, ClassifyMode mode, int tile = 64);
// How many crops of `crop_pixels` pixels each one forward pass takes: batch tiles' worth of pixels
// (batch x tile x tile), at least one, at most batch. Whole large images (classify --classify full)
// then go few at a time: 32 granules at once would not fit anywhere.
int64_t crops_per_pass(int64_t crop_pixels, int64_t batch, int tile);
// Mean of `probs` rows (n rows of k) -> k values. Exposed for the tests.
std::vector<float> mean_rows(const std::vector<float>& probs, int n, int k);
// The real thing: the crops of `mode` batched through the classifier (eval mode, no grad).
ClassifyFn classifier_fn(std::shared_ptr<models::Classifier> clf, ClassifyMode mode, int tile, Device device);

// What one scene gave. pred / metrics are indexed like the methods.
struct SceneResult {
  std::string name;
  double cloud_cover = 0;
  double true_cloud_fraction = std::numeric_limits<double>::quiet_NaN();
  int true_label = -1;
  std::vector<int> pred;
  std::vector<ImageMetrics> metrics;  // method output vs target / cloudy input (reflectance units)
  std::vector<std::vector<double>> band_mae_dn;  // per method: mean |output - target| per band (13), DN
};
int argmax(const std::vector<float>& p);
// Runs every method on the scene, classifies each output and computes its
// quality metrics (DN / 10000 = reflectance). outputs, when given, receives the
// method outputs (DN).
SceneResult evaluate_scene(const Scene& scene, const std::vector<Method>& methods, const ClassifyFn& classify,
                           std::vector<std::vector<float>>* outputs = nullptr);

// The accounting over all scenes.
class Experiment {
 public:
  // reference: index of the pristine method (its predictions are the labels).
  Experiment(std::vector<std::string> method_names, std::vector<std::string> method_labels, int reference,
             std::vector<std::string> class_names, std::vector<double> cover_edges = {0.0, 0.1, 0.3, 0.6, 1.0});
  void add(SceneResult r);  // Error when its pred/metrics count differs from the methods

  int methods() const { return int(names_.size()); }
  int reference() const { return reference_; }
  int classes() const { return int(class_names_.size()); }
  const std::string& name(int m) const { return names_[size_t(m)]; }
  const std::string& label(int m) const { return labels_[size_t(m)]; }
  const std::vector<std::string>& class_names() const { return class_names_; }
  const std::vector<SceneResult>& scenes() const { return scenes_; }
  int64_t with_truth() const;  // scenes that have a true label

  // Against the pristine-derived labels (Table 1) and against the true labels
  // (only scenes that have one; n = 0 gives NaN).
  ConfusionMatrix confusion_vs_reference(int m) const;
  ConfusionMatrix confusion_vs_truth(int m) const;
  Proportion accuracy_vs_reference(int m) const { return confusion_vs_reference(m).accuracy(); }
  Proportion accuracy_vs_truth(int m) const { return confusion_vs_truth(m).accuracy(); }
  CoverBins bins_vs_reference(int m) const;
  CoverBins bins_vs_truth(int m) const;
  ClassDistribution distribution(int m) const;  // of method m's predictions
  ClassDistribution truth_distribution() const;
  MetricsMean quality(int m) const;  // NaN-skipping means over scenes
  // Mean over scenes of the per-band MAE against the target, in DN (13 values). The
  // classifier standardises each band by its training std, so an error of a few DN in a
  // near-constant band (B10: std ~3 DN in EuroSAT-like data) is many sigmas.
  std::vector<double> band_mae_dn(int m) const;

  // Files: one row per scene (predictions) / per (scene, method) (quality).
  CsvTable predictions_csv() const;
  CsvTable quality_csv() const;
  json::Value to_json() const;  // every number above, per method

 private:
  std::vector<std::string> names_, labels_;
  int reference_;
  std::vector<std::string> class_names_;
  std::vector<double> edges_;
  std::vector<SceneResult> scenes_;
};

// Synthetic labels (make_synthetic's <root>/labels.csv): scene name -> (dominant class, cloud fraction).
struct TrueLabel {
  int label = -1;
  double cloud_fraction = std::numeric_limits<double>::quiet_NaN();
};
// Error naming the file on a missing column or a malformed row.
std::map<std::string, TrueLabel> read_true_labels(const std::string& csv_path);

}  // namespace nimbus::apps
