// experiment.cpp: scenes, methods, classification and the accounting of the
// cloud-impact experiment (see experiment.h).
#include "apps/common/experiment.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "data/geotiff.h"
#include "data/normalize.h"
#include "data/sentinel2.h"
#include "engine/autograd.h"
#include "engine/io/input_files.h"

namespace nimbus::apps {

// ---- scenes -------------------------------------------------------------------

void detect(Scene& s, const data::CloudDetectorOptions& detector) {
  const data::CloudShadowMasks m = data::detect_clouds(s.cloudy.data(), models::kS2Bands, s.height, s.width, detector);
  s.mask = m.binary();
  s.cloud_cover = m.cloud_fraction();
}

Scene load_scene(const data::Sen12mscrTriplet& t, const data::CloudDetectorOptions& detector) {
  Scene s;
  s.name = t.name();
  data::Raster cloudy = data::read_geotiff(t.s2_cloudy);
  data::Raster target = data::read_geotiff(t.s2);
  data::Raster sar = data::read_geotiff(t.s1);
  NIMBUS_CHECK(cloudy.bands == models::kS2Bands, "cloud_impact: ", t.s2_cloudy, ": cloudy S2 has ", cloudy.bands,
               " bands, expected ", models::kS2Bands);
  NIMBUS_CHECK(target.bands == models::kS2Bands, "cloud_impact: ", t.s2, ": cloud-free S2 has ", target.bands,
               " bands, expected ", models::kS2Bands);
  NIMBUS_CHECK(sar.bands == models::kS1Bands, "cloud_impact: ", t.s1, ": S1 has ", sar.bands,
               " bands, expected 2 (VV, VH)");
  data::check_s1_band_order(t.s1, sar.band_names);
  data::check_s1_in_db(t.s1, sar.data.data(), sar.data.size());
  for (const auto* r : {&target, &sar}) {
    const std::string& path = r == &target ? t.s2 : t.s1;
    NIMBUS_CHECK(r->height == cloudy.height && r->width == cloudy.width, "cloud_impact: ", path, " is ", r->width,
                 "x", r->height, " but ", t.s2_cloudy, " is ", cloudy.width, "x", cloudy.height);
    const std::string grid = data::grid_mismatch(cloudy.geo, r->geo);
    NIMBUS_CHECK(grid.empty(), "cloud_impact: ", path, " and ", t.s2_cloudy, " are not on the same grid (", grid, ")");
  }
  // Both S2 images in SEN12MS order, whatever order they say they hold (band descriptions, layout): the
  // detector, DSen2-CR and the classifier's input all take that order. A file that says nothing is
  // taken as SEN12MS order, as the dataset distributes it.
  for (auto* r : {&cloudy, &target}) {
    const std::string& path = r == &cloudy ? t.s2_cloudy : t.s2;
    if (const std::optional<data::BandList> said = data::s2_bands_of(path, r->band_names, r->bands))
      r->data = data::reorder_bands(std::move(r->data), size_t(r->width) * size_t(r->height), *said,
                                    data::sen12ms_bands(), path);
  }
  // NaN as DSen2-CR reads them: the window mean (integer S2 files have none, but a float one may).
  for (auto* r : {&cloudy, &target}) data::fill_nan_with_mean(r->data.data(), r->data.size());
  data::fill_s1_nan(sar.data.data(), size_t(sar.width) * size_t(sar.height));
  s.height = cloudy.height;
  s.width = cloudy.width;
  s.cloudy = std::move(cloudy.data);
  s.target = std::move(target.data);
  s.sar = std::move(sar.data);
  detect(s, detector);
  return s;
}

// ---- methods ------------------------------------------------------------------

Method cloudy_method() {
  return {"cloudy", "cloudy S2 (as is)", [](const Scene& s) { return s.cloudy; }, true};
}

Method pristine_method() {
  return {"pristine", "pristine S2 (upper bound)", [](const Scene& s) { return s.target; }, true};
}

Method dsen2cr_method(std::string name, std::string label, std::shared_ptr<models::DSen2CR> net, TileOptions tiles) {
  NIMBUS_CHECK(net != nullptr, "dsen2cr_method: ", name, ": no model");
  return {std::move(name), std::move(label), [net, tiles](const Scene& s) {
            const size_t hw = size_t(s.height) * size_t(s.width);
            if (net->config().sar)
              NIMBUS_CHECK(s.sar.size() == 2 * hw, "cloud_impact: ", s.name,
                           ": DSen2-CR with SAR needs the S1 image, which is missing");
            // DN in and out: the model scales its inputs and output on its device (DSen2CR::forward_dn).
            return remove_clouds_tiled(*net, s.cloudy.data(), net->config().sar ? s.sar.data() : nullptr, s.height,
                                       s.width, tiles);
          }};
}

// ---- classification -----------------------------------------------------------

ClassifyMode parse_classify_mode(const std::string& s) {
  if (s == "tiles") return ClassifyMode::Tiles;
  if (s == "center") return ClassifyMode::Center;
  if (s == "full") return ClassifyMode::Full;
  throw Error(str("classify mode: expected tiles, center or full, got '", s, "'"));
}

const char* classify_mode_name(ClassifyMode m) {
  return m == ClassifyMode::Tiles ? "tiles" : m == ClassifyMode::Center ? "center" : "full";
}

int64_t crops_per_pass(int64_t crop_pixels, int64_t batch, int tile) {
  NIMBUS_CHECK(crop_pixels > 0 && batch > 0 && tile > 0, "crops_per_pass: ", crop_pixels, " pixels, batch ", batch,
               ", tile ", tile);
  return std::clamp<int64_t>(batch * tile * tile / crop_pixels, 1, batch);
}

std::vector<std::pair<int, int>> classify_crops(int height, int width, ClassifyMode mode, int tile) {
  NIMBUS_CHECK(height > 0 && width > 0 && tile > 0, "classify_crops: bad size ", height, "x", width, " tile ", tile);
  if (mode == ClassifyMode::Full) return {{0, 0}};
  NIMBUS_CHECK(height >= tile && width >= tile, "classify_crops: a ", width, "x", height,
               " image is smaller than the classifier's ", tile, "x", tile, " tile (use --classify full)");
  if (mode == ClassifyMode::Center) return {{(height - tile) / 2, (width - tile) / 2}};
  // Non-overlapping corners, plus one flush with the far edge when a strip is left over.
  auto axis = [tile](int len) {
    std::vector<int> v;
    for (int c = 0; c + tile <= len; c += tile) v.push_back(c);
    if (v.back() + tile < len) v.push_back(len - tile);
    return v;
  };
  std::vector<std::pair<int, int>> out;
  for (int y : axis(height))
    for (int x : axis(width)) out.emplace_back(y, x);
  return out;
}

std::vector<float> mean_rows(const std::vector<float>& probs, int n, int k) {
  NIMBUS_CHECK(n > 0 && probs.size() == size_t(n) * size_t(k), "mean_rows: ", probs.size(), " values for ", n, " x ",
               k);
  std::vector<double> acc(size_t(k), 0.0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < k; ++j) acc[size_t(j)] += probs[size_t(i) * size_t(k) + size_t(j)];
  std::vector<float> mean(static_cast<size_t>(k));
  for (int j = 0; j < k; ++j) mean[size_t(j)] = float(acc[size_t(j)] / n);
  return mean;
}

ClassifyFn classifier_fn(std::shared_ptr<models::Classifier> clf, ClassifyMode mode, int tile, Device device) {
  NIMBUS_CHECK(clf != nullptr, "classifier_fn: no classifier");
  clf->to(device);
  clf->eval();
  return [clf, mode, tile, device](const float* dn, int H, int W) {
    const int C = clf->config().in_channels, K = clf->config().classes;
    const auto crops = classify_crops(H, W, mode, tile);
    const int th = mode == ClassifyMode::Full ? H : tile, tw = mode == ClassifyMode::Full ? W : tile;
    const size_t hw = size_t(H) * size_t(W), thw = size_t(th) * size_t(tw);
    std::vector<float> batch(crops.size() * size_t(C) * thw);
    float* dst = batch.data();
    for (const auto& [y0, x0] : crops)
      for (int c = 0; c < C; ++c)
        for (int y = 0; y < th; ++y, dst += tw)
          std::copy_n(dn + size_t(c) * hw + size_t(y0 + y) * size_t(W) + size_t(x0), size_t(tw), dst);
    NoGradGuard ng;
    const int64_t n = int64_t(crops.size());
    const std::vector<float> p = clf->probabilities(Tensor::from_vector({n, C, th, tw}, batch).to(device)).to_vector();
    return mean_rows(p, int(n), K);
  };
}

// ---- one scene ----------------------------------------------------------------

int argmax(const std::vector<float>& p) {
  NIMBUS_CHECK(!p.empty(), "argmax: no values");
  return int(std::max_element(p.begin(), p.end()) - p.begin());
}

SceneResult evaluate_scene(const Scene& s, const std::vector<Method>& methods, const ClassifyFn& classify,
                           std::vector<std::vector<float>>* outputs) {
  const size_t n = size_t(models::kS2Bands) * size_t(s.height) * size_t(s.width);
  NIMBUS_CHECK(s.cloudy.size() == n && s.target.size() == n, "cloud_impact: ", s.name, ": cloudy/target hold ",
               s.cloudy.size(), "/", s.target.size(), " values, expected ", models::kS2Bands, " x ", s.height, " x ", s.width);
  SceneResult r;
  r.name = s.name;
  r.cloud_cover = s.cloud_cover;
  r.true_label = s.true_label;
  r.true_cloud_fraction = s.true_cloud_fraction;
  if (outputs) outputs->clear();
  // Reflectance copies for the metrics (rho = DN / 10000). The references (target, cloudy input) are
  // clipped to [0, 10000] DN first, as DSen2-CR's data pipeline clips both before its metrics see them;
  // a model's output is not (DSen2-CR does not clip its predictions): reference/dsen2cr-sen12mscr.md §4.
  // The cloudy and pristine rows' outputs are those inputs, so they are clipped alike.
  auto rho = [](const std::vector<float>& dn, bool clip) {
    std::vector<float> v(dn.size());
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = (clip ? std::clamp(dn[i], 0.f, models::kReflectanceScale) : dn[i]) / models::kReflectanceScale;
    return v;
  };
  const std::vector<float> target = rho(s.target, true), cloudy = rho(s.cloudy, true);
  const ImageView tv{target.data(), models::kS2Bands, s.height, s.width};
  const ImageView cv{cloudy.data(), models::kS2Bands, s.height, s.width};
  for (const Method& m : methods) {
    std::vector<float> out = m.run(s);
    NIMBUS_CHECK(out.size() == n, "cloud_impact: method ", m.name, " returned ", out.size(), " values for ", s.name,
                 ", expected ", models::kS2Bands, " x ", s.height, " x ", s.width);
    // A diverged model's NaN would stop the run in the metrics, naming neither the scene nor the method.
    const auto bad = std::find_if(out.begin(), out.end(), [](float v) { return !std::isfinite(v); });
    NIMBUS_CHECK(bad == out.end(), "cloud_impact: method ", m.name, " returned a non-finite value (", *bad, ") for ",
                 s.name, " at band ", (bad - out.begin()) / int64_t(size_t(s.height) * size_t(s.width)),
                 " (a diverged cloud-removal model?)");
    r.pred.push_back(argmax(classify(out.data(), s.height, s.width)));
    const std::vector<float> o = rho(out, m.is_input);
    r.metrics.push_back(image_metrics({o.data(), models::kS2Bands, s.height, s.width}, tv, cv,
                                      s.mask.empty() ? nullptr : s.mask.data()));
    std::vector<double> band(models::kS2Bands, 0.0);
    const size_t hw = size_t(s.height) * size_t(s.width);
    for (int c = 0; c < models::kS2Bands; ++c) {
      const float* a = out.data() + size_t(c) * hw;
      const float* t = s.target.data() + size_t(c) * hw;
      for (size_t i = 0; i < hw; ++i) band[size_t(c)] += std::fabs(double(a[i]) - double(t[i]));
      band[size_t(c)] /= double(hw);
    }
    r.band_mae_dn.push_back(std::move(band));
    if (outputs) outputs->push_back(std::move(out));
  }
  return r;
}

// ---- accounting ---------------------------------------------------------------

Experiment::Experiment(std::vector<std::string> method_names, std::vector<std::string> method_labels, int reference,
                       std::vector<std::string> class_names, std::vector<double> cover_edges)
    : names_(std::move(method_names)),
      labels_(std::move(method_labels)),
      reference_(reference),
      class_names_(std::move(class_names)),
      edges_(std::move(cover_edges)) {
  NIMBUS_CHECK(!names_.empty() && labels_.size() == names_.size(), "Experiment: ", names_.size(), " method names and ",
               labels_.size(), " labels");
  NIMBUS_CHECK(reference_ >= 0 && reference_ < int(names_.size()), "Experiment: reference method ", reference_,
               " out of range (", names_.size(), " methods)");
  NIMBUS_CHECK(!class_names_.empty(), "Experiment: no classes");
  CoverBins check(edges_);  // validates the edges now
  (void)check;
}

void Experiment::add(SceneResult r) {
  NIMBUS_CHECK(r.pred.size() == names_.size() && r.metrics.size() == names_.size(), "Experiment: scene ", r.name,
               " has ", r.pred.size(), " predictions and ", r.metrics.size(), " metric sets for ", names_.size(),
               " methods");
  NIMBUS_CHECK(r.band_mae_dn.empty() || r.band_mae_dn.size() == names_.size(), "Experiment: scene ", r.name, " has ",
               r.band_mae_dn.size(), " per-band error sets for ", names_.size(), " methods");
  for (const auto& b : r.band_mae_dn)
    NIMBUS_CHECK(b.size() == size_t(models::kS2Bands), "Experiment: scene ", r.name, ": ", b.size(),
                 " per-band errors, expected ", models::kS2Bands);
  for (int p : r.pred)
    NIMBUS_CHECK(p >= 0 && p < classes(), "Experiment: scene ", r.name, ": class ", p, " outside 0..", classes() - 1);
  NIMBUS_CHECK(r.cloud_cover >= edges_.front() && r.cloud_cover <= edges_.back(), "Experiment: scene ", r.name,
               ": cloud cover ", r.cloud_cover, " outside [", edges_.front(), ", ", edges_.back(), "]");
  NIMBUS_CHECK(r.true_label >= -1 && r.true_label < classes(), "Experiment: scene ", r.name, ": true label ",
               r.true_label, " outside 0..", classes() - 1);
  scenes_.push_back(std::move(r));
}

int64_t Experiment::with_truth() const {
  return std::count_if(scenes_.begin(), scenes_.end(), [](const SceneResult& s) { return s.true_label >= 0; });
}

ConfusionMatrix Experiment::confusion_vs_reference(int m) const {
  ConfusionMatrix cm(classes());
  for (const auto& s : scenes_) cm.add(s.pred[size_t(reference_)], s.pred[size_t(m)]);
  return cm;
}

ConfusionMatrix Experiment::confusion_vs_truth(int m) const {
  ConfusionMatrix cm(classes());
  for (const auto& s : scenes_)
    if (s.true_label >= 0) cm.add(s.true_label, s.pred[size_t(m)]);
  return cm;
}

CoverBins Experiment::bins_vs_reference(int m) const {
  CoverBins b(edges_);
  for (const auto& s : scenes_) b.add(s.cloud_cover, s.pred[size_t(m)] == s.pred[size_t(reference_)]);
  return b;
}

CoverBins Experiment::bins_vs_truth(int m) const {
  CoverBins b(edges_);
  for (const auto& s : scenes_)
    if (s.true_label >= 0) b.add(s.cloud_cover, s.pred[size_t(m)] == s.true_label);
  return b;
}

ClassDistribution Experiment::distribution(int m) const {
  std::vector<int> v;
  for (const auto& s : scenes_) v.push_back(s.pred[size_t(m)]);
  return class_distribution(v, classes());
}

ClassDistribution Experiment::truth_distribution() const {
  std::vector<int> v;
  for (const auto& s : scenes_)
    if (s.true_label >= 0) v.push_back(s.true_label);
  return class_distribution(v, classes());
}

std::vector<double> Experiment::band_mae_dn(int m) const {
  std::vector<double> mean(models::kS2Bands, 0.0);
  int64_t n = 0;
  for (const auto& s : scenes_) {
    if (s.band_mae_dn.size() != names_.size()) continue;  // hand-made results without band errors
    for (int c = 0; c < models::kS2Bands; ++c) mean[size_t(c)] += s.band_mae_dn[size_t(m)][size_t(c)];
    ++n;
  }
  for (double& v : mean) v = n ? v / double(n) : std::nan("");
  return mean;
}

MetricsMean Experiment::quality(int m) const {
  MetricsMean mean;
  for (const auto& s : scenes_) mean.add(s.metrics[size_t(m)]);
  return mean;
}

CsvTable Experiment::predictions_csv() const {
  std::vector<std::string> header = {"scene", "cloud_cover", "true_cloud_fraction", "true_label", "true_name"};
  for (const auto& n : names_) {
    header.push_back("pred_" + n);
    header.push_back("name_" + n);
  }
  CsvTable t(header);
  for (const auto& s : scenes_) {
    std::vector<std::string> row = {s.name, fmt_num(s.cloud_cover), fmt_num(s.true_cloud_fraction),
                                    std::to_string(s.true_label),
                                    s.true_label >= 0 ? class_names_[size_t(s.true_label)] : ""};
    for (int p : s.pred) {
      row.push_back(std::to_string(p));
      row.push_back(class_names_[size_t(p)]);
    }
    t.add_row(row);
  }
  return t;
}

CsvTable Experiment::quality_csv() const {
  std::vector<std::string> header = {"scene", "method", "cloud_cover"};
  for (const char* n : kMetricNames) header.push_back(n);
  CsvTable t(header);
  for (const auto& s : scenes_)
    for (size_t m = 0; m < names_.size(); ++m) {
      std::vector<std::string> row = {s.name, names_[m], fmt_num(s.cloud_cover)};
      for (double v : s.metrics[m].values()) row.push_back(fmt_num(v));
      t.add_row(row);
    }
  return t;
}

namespace {
json::Value metrics_json(const MetricsMean& q) {
  const auto v = q.mean().values();
  std::vector<std::pair<std::string, json::Value>> means, counts;
  for (int i = 0; i < ImageMetrics::kCount; ++i) {
    means.emplace_back(kMetricNames[size_t(i)], json::number(v[size_t(i)]));
    counts.emplace_back(kMetricNames[size_t(i)], json::number(double(q.count(i))));
  }
  return json::object({{"mean", json::object(std::move(means))}, {"images", json::object(std::move(counts))}});
}
}  // namespace

json::Value Experiment::to_json() const {
  std::vector<json::Value> methods;
  const bool truth = with_truth() > 0;
  for (int m = 0; m < this->methods(); ++m) {
    std::vector<std::pair<std::string, json::Value>> o = {
        {"name", json::string(names_[size_t(m)])},
        {"label", json::string(labels_[size_t(m)])},
        {"accuracy_vs_pristine", nimbus::to_json(accuracy_vs_reference(m))},
        {"accuracy_vs_pristine_by_cover", nimbus::to_json(bins_vs_reference(m))},
        {"confusion_vs_pristine", nimbus::to_json(confusion_vs_reference(m), class_names_)},
        {"prediction_distribution", nimbus::to_json(distribution(m), class_names_)},
        {"quality", metrics_json(quality(m))},
        {"band_mae_dn", json::numbers(band_mae_dn(m))}};
    if (truth) {
      o.emplace_back("accuracy_vs_truth", nimbus::to_json(accuracy_vs_truth(m)));
      o.emplace_back("accuracy_vs_truth_by_cover", nimbus::to_json(bins_vs_truth(m)));
      o.emplace_back("confusion_vs_truth", nimbus::to_json(confusion_vs_truth(m), class_names_));
    }
    methods.push_back(json::object(std::move(o)));
  }
  std::vector<std::pair<std::string, json::Value>> top = {
      {"scenes", json::number(double(scenes_.size()))},
      {"scenes_with_true_labels", json::number(double(with_truth()))},
      {"reference_method", json::string(names_[size_t(reference_)])},
      {"cover_bin_edges", json::numbers(edges_)},
      {"methods", json::array(std::move(methods))}};
  if (truth) top.emplace_back("true_label_distribution", nimbus::to_json(truth_distribution(), class_names_));
  return json::object(std::move(top));
}

// ---- true labels ----------------------------------------------------------------

std::map<std::string, TrueLabel> read_true_labels(const std::string& path) {
  std::ifstream f(path);
  NIMBUS_CHECK(f.good(), path, ": cannot open the labels file");
  note_input(path);
  std::string line;
  NIMBUS_CHECK(std::getline(f, line), path, ": empty labels file");
  const std::vector<std::string> header = csv_fields(line);
  auto col = [&](const std::string& name) {
    auto it = std::find(header.begin(), header.end(), name);
    NIMBUS_CHECK(it != header.end(), path, ": no column '", name, "' in the header (make_synthetic's labels.csv)");
    return size_t(it - header.begin());
  };
  const size_t cs = col("season"), cr = col("roi"), cp = col("patch"), cl = col("dominant_class"),
               cf = col("cloud_fraction");
  std::map<std::string, TrueLabel> out;
  for (int lineno = 2; std::getline(f, line); ++lineno) {
    if (line.empty()) continue;
    const std::vector<std::string> c = csv_fields(line);
    NIMBUS_CHECK(c.size() == header.size(), path, ":", lineno, ": ", c.size(), " fields, the header has ",
                 header.size());
    TrueLabel t;
    try {
      t.label = std::stoi(c[cl]);
      t.cloud_fraction = std::stod(c[cf]);
      out[c[cs] + "_" + std::to_string(std::stoi(c[cr])) + "_p" + std::to_string(std::stoi(c[cp]))] = t;
    } catch (const std::exception&) {
      throw Error(str(path, ":", lineno, ": malformed number in '", line, "'"));
    }
    NIMBUS_CHECK(t.label >= 0, path, ":", lineno, ": negative class ", t.label);
  }
  return out;
}

}  // namespace nimbus::apps
