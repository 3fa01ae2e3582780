// experiment_report.cpp: tables, figures, results.json and report.md of a
// cloud-impact run (see experiment_report.h).
#include "apps/common/experiment_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "apps/common/figure_file.h"
#include "data/normalize.h"
#include "engine/io/safetensors.h"

namespace nimbus::apps {

namespace {

std::string fixed(double v, int decimals) {
  if (!std::isfinite(v)) return std::isnan(v) ? "n/a" : (v > 0 ? "inf" : "-inf");
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string pct(double v) { return std::isnan(v) ? "n/a" : fixed(100 * v, 2) + "%"; }

bool is_dsen2cr(const std::string& name) { return name.rfind("dsen2cr", 0) == 0; }

}  // namespace

std::string percent_ci(const Proportion& p) {
  if (p.n == 0) return "n/a (0 images)";
  return pct(p.value) + " [" + fixed(100 * p.lo, 1) + ", " + fixed(100 * p.hi, 1) + "]";
}

std::string table1_markdown(const Experiment& e) {
  const bool truth = e.with_truth() > 0;
  std::ostringstream s;
  s << "| input to the classifier | accuracy vs pristine-derived labels (95% CI) |";
  if (truth) s << " accuracy vs true labels (95% CI) |";
  s << " paper (Aarnoutse & Witte) |\n|---|---|";
  if (truth) s << "---|";
  s << "---|\n";
  for (int m = 0; m < e.methods(); ++m) {
    const std::string& n = e.name(m);
    const std::string paper = n == "cloudy" ? pct(kPaperCloudyAccuracy)
                              : n == "dsen2cr_sar" ? pct(kPaperDsen2crAccuracy)
                              : m == e.reference() ? "100% (by construction)"
                                                   : "-";
    s << "| " << e.label(m) << " | " << percent_ci(e.accuracy_vs_reference(m)) << " |";
    if (truth) s << " " << percent_ci(e.accuracy_vs_truth(m)) << " |";
    s << " " << paper << " |\n";
  }
  s << "\n" << e.scenes().size() << " scenes";
  if (truth) s << " (" << e.with_truth() << " with true labels)";
  s << ". CIs are Wilson score intervals.\n";
  return s.str();
}

std::string cover_markdown(const Experiment& e) {
  std::vector<CoverBins> bins;
  for (int m = 0; m < e.methods(); ++m) bins.push_back(e.bins_vs_reference(m));
  std::ostringstream s;
  s << "| cloud cover (detector) | images |";
  for (int m = 0; m < e.methods(); ++m)
    if (m != e.reference()) s << " " << e.label(m) << " |";
  s << "\n|---|---|";
  for (int m = 0; m < e.methods(); ++m)
    if (m != e.reference()) s << "---|";
  s << "\n";
  for (int b = 0; b < bins[0].bins(); ++b) {
    s << "| " << bins[0].label(b) << " | " << bins[0].count(b) << " |";
    for (int m = 0; m < e.methods(); ++m)
      if (m != e.reference()) s << " " << percent_ci(bins[size_t(m)].accuracy(b)) << " |";
    s << "\n";
  }
  return s.str();
}

std::string quality_markdown(const Experiment& e) {
  // How many scenes each region's mean is over: a scene without clear pixels has no reprod, one
  // without cloud or shadow no recon.
  auto count_of = [](const MetricsMean& q, const char* name) {
    const auto it = std::find_if(kMetricNames.begin(), kMetricNames.end(),
                                 [&](const char* n) { return std::string(n) == name; });
    return q.count(int(it - kMetricNames.begin()));
  };
  std::ostringstream s;
  s << "| method | MAE target | MAE reprod | MAE recon | RMSE target | PSNR (dB) | SAM target (deg) | SAM reprod | "
       "SAM recon | SSIM | images |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (int m = 0; m < e.methods(); ++m) {
    const MetricsMean q = e.quality(m);
    const ImageMetrics v = q.mean();
    s << "| " << e.label(m) << " (ours) | " << fixed(v.mae, 4) << " | " << fixed(v.mae_reprod, 4) << " | "
      << fixed(v.mae_recon, 4) << " | " << fixed(v.rmse, 4) << " | " << fixed(v.psnr, 1) << " | " << fixed(v.sam, 2)
      << " | " << fixed(v.sam_reprod, 2) << " | " << fixed(v.sam_recon, 2) << " | " << fixed(v.ssim, 3) << " | "
      << q.images() << " (reprod: " << count_of(q, "mae_reprod") << ", recon: " << count_of(q, "mae_recon") << ") |\n";
  }
  // Their four DSen2-CR rows: a model trained with L1 is compared with the L1 rows (its reprod columns
  // differ most from CARL's, which keeps the clear pixels of the input on purpose).
  s << "| DSen2-CR, CARL (Meraner et al.) | 0.0290 | 0.0204 | 0.0266 | 0.0366 | 28.7 | 8.15 | 3.94 | 8.04 | 0.875 | "
       "|\n"
       "| DSen2-CR, L1 (Meraner et al.) | 0.0270 | 0.0398 | 0.0266 | 0.0343 | 29.3 | 8.07 | 6.33 | 8.13 | 0.878 | |\n"
       "| DSen2-CR, CARL, no SAR (Meraner et al.) | 0.0306 | 0.0188 | 0.0282 | 0.0387 | 27.6 | 8.98 | 3.86 | 8.97 | "
       "0.870 | |\n"
       "| DSen2-CR, L1, no SAR (Meraner et al.) | 0.0284 | 0.0389 | 0.0281 | 0.0361 | 28.8 | 8.97 | 6.17 | 9.05 | "
       "0.873 | |\n";
  s << "\nMAE/RMSE in reflectance (DN / 10000), PSNR = 20 log10(1 / RMSE) capped at " << fixed(kPsnrCapDb, 0)
    << " dB, SAM in degrees, SSIM as tf.image.ssim (data range 1). target: vs the cloud-free image, whole scene; "
       "reprod: vs the cloudy input on clear pixels (scenes without any are skipped in that mean); recon: vs the "
       "cloud-free image on cloud/shadow pixels (scenes without any are skipped in that mean). The pristine row is "
       "the cap (identical images), except in its reprod columns, which compare the pristine image with the cloudy "
       "input.\n";
  return s.str();
}

std::vector<double> classifier_std_dn(const std::vector<float>& std, const data::BandList& model_bands) {
  NIMBUS_CHECK(std.size() == model_bands.size(), "classifier_std_dn: ", std.size(), " std values for ",
               model_bands.size(), " bands");
  std::vector<double> out(size_t(models::kS2Bands), std::nan(""));
  const data::BandList order = data::sen12ms_bands();
  for (size_t j = 0; j < order.size(); ++j)
    for (size_t k = 0; k < model_bands.size(); ++k)
      if (model_bands[k] == order[j]) out[j] = double(std[k]) * models::kReflectanceScale;
  return out;
}

std::string band_error_markdown(const Experiment& e, const std::vector<double>& std_dn) {
  static const char* kBands[] = {"B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"};
  const bool with_std = std_dn.size() == size_t(models::kS2Bands);
  std::ostringstream s;
  s << "| method |";
  for (const char* b : kBands) s << " " << b << " |";
  s << "\n|---|";
  for (int c = 0; c < models::kS2Bands; ++c) s << "---|";
  s << "\n";
  if (with_std) {
    s << "| classifier input std (DN) |";
    for (double v : std_dn) s << " " << (std::isnan(v) ? std::string("-") : fixed(v, 1)) << " |";
    s << "\n";
  }
  for (int m = 0; m < e.methods(); ++m) {
    if (m == e.reference()) continue;
    const std::vector<double> mae = e.band_mae_dn(m);
    s << "| " << e.label(m) << " |";
    for (int c = 0; c < models::kS2Bands; ++c) {
      s << " " << fixed(mae[size_t(c)], 0);
      if (with_std && std_dn[size_t(c)] > 0) s << " (" << fixed(mae[size_t(c)] / std_dn[size_t(c)], 1) << " sd)";
      s << " |";
    }
    s << "\n";
  }
  return s.str();
}

plot::LineChart training_curve(const std::string& path) {
  std::ifstream f(path);
  NIMBUS_CHECK(f.good(), path, ": cannot open the classifier's metrics.csv");
  std::string line;
  NIMBUS_CHECK(std::getline(f, line), path, ": empty file");
  const std::vector<std::string> header = csv_fields(line);
  NIMBUS_CHECK(!header.empty() && header[0] == "epoch", path, ": expected an 'epoch' first column (train_resnet's "
                                                              "metrics.csv)");
  plot::LineChart c;
  c.title = "classifier accuracy per epoch";
  c.x_label = "epoch";
  c.y_label = "accuracy";
  std::vector<size_t> cols;
  for (size_t i = 1; i < header.size(); ++i)
    if (header[i].size() > 4 && header[i].substr(header[i].size() - 4) == "_acc") {
      cols.push_back(i);
      c.series.push_back({header[i], {}, {}});
    }
  NIMBUS_CHECK(!cols.empty(), path, ": no *_acc column");
  for (int lineno = 2; std::getline(f, line); ++lineno) {
    if (line.empty()) continue;
    const std::vector<std::string> v = csv_fields(line);
    NIMBUS_CHECK(v.size() == header.size(), path, ":", lineno, ": ", v.size(), " fields, the header has ",
                 header.size());
    try {
      const double epoch = std::stod(v[0]);
      for (size_t k = 0; k < cols.size(); ++k) {
        c.series[k].x.push_back(epoch);
        c.series[k].y.push_back(v[cols[k]] == "nan" ? std::nan("") : std::stod(v[cols[k]]));
      }
    } catch (const std::exception&) {
      throw Error(str(path, ":", lineno, ": malformed number in '", line, "'"));
    }
  }
  c.y_max = 1.0;
  return c;
}

std::optional<ClassifierTest> read_classifier_test(const std::string& classifier_path, int64_t epoch) {
  namespace fs = std::filesystem;
  const fs::path file = fs::path(classifier_path).parent_path() / "test.json";
  if (!fs::is_regular_file(file)) return std::nullopt;
  const std::string path = file.string();
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  NIMBUS_CHECK(in.good() || in.eof(), path, ": cannot read the classifier's test score");
  json::Value v;
  try {
    v = json::parse(text.str());
  } catch (const Error& e) {
    throw Error(str(path, ": ", e.what()));
  }
  const auto member = [&](const json::Value& o, const char* key, json::Value::Type type) -> const json::Value& {
    const json::Value* m = o.is(json::Value::Type::Object) ? o.get(key) : nullptr;
    NIMBUS_CHECK(m && m->is(type), path, ": no '", key, "' of the right type (train_resnet's test.json has "
                 "checkpoint, epoch, tiles, accuracy{correct, total}, confusion)");
    return *m;
  };
  ClassifierTest t;
  t.path = path;
  t.checkpoint = member(v, "checkpoint", json::Value::Type::String).s;
  if (t.checkpoint != fs::path(classifier_path).filename().string()) return std::nullopt;  // it scored another file
  const double epoch_number = member(v, "epoch", json::Value::Type::Number).num;
  NIMBUS_CHECK(epoch_number >= -1 && epoch_number < 1e9 && epoch_number == std::floor(epoch_number), path, ": epoch ",
               epoch_number, " is not an epoch");
  t.epoch = int64_t(epoch_number);
  if (t.epoch != epoch) {  // the checkpoint was replaced since (a run resumed without scoring it again)
    std::fprintf(stderr, "cloud_impact: note: %s scored %s of epoch %lld, but %s is of epoch %lld: its test score "
                 "is not reported\n", path.c_str(), t.checkpoint.c_str(), (long long)t.epoch, classifier_path.c_str(),
                 (long long)epoch);
    return std::nullopt;
  }
  const json::Value& acc = member(v, "accuracy", json::Value::Type::Object);
  const double k = member(acc, "correct", json::Value::Type::Number).num,
               n = member(acc, "total", json::Value::Type::Number).num;
  NIMBUS_CHECK(k >= 0 && n >= k && n > 0 && n < 9e15 && k == std::floor(k) && n == std::floor(n), path,
               ": accuracy ", k, " correct of ", n, " is not a count of tiles");
  t.accuracy = wilson_interval(int64_t(k), int64_t(n));  // from the counts, not the file's rounded rate
  return t;
}

std::string classifier_test_line(const ClassifierTest& t) {
  return str("EuroSAT test accuracy ", percent_ci(t.accuracy), " on ", t.accuracy.n, " tiles (`", t.path, "`: ",
             t.checkpoint, t.epoch >= 0 ? str(" of epoch ", t.epoch) : std::string(), ")");
}

Example make_example(const Scene& s, const std::vector<float>& removed_dn, const std::string& removed_title,
                     const std::string& caption) {
  const int H = s.height, W = s.width, C = models::kS2Bands;
  const size_t hw = size_t(H) * size_t(W);
  Example ex;
  ex.caption = caption;
  ex.panels.push_back({"cloudy RGB", plot::s2_rgb(s.cloudy.data(), C, H, W)});
  if (s.sar.size() == 2 * hw) ex.panels.push_back({"SAR VV (dB)", plot::grey(s.sar.data(), H, W, data::kS1VVMin, 0)});
  if (s.mask.size() == hw) ex.panels.push_back({"cloud/shadow mask", plot::grey(s.mask.data(), H, W, 0, 1)});
  if (removed_dn.size() == size_t(C) * hw)
    ex.panels.push_back({removed_title, plot::s2_rgb(removed_dn.data(), C, H, W)});
  ex.panels.push_back({"target RGB", plot::s2_rgb(s.target.data(), C, H, W)});
  return ex;
}

std::vector<size_t> pick_examples(const std::vector<double>& covers, size_t n) {
  std::vector<size_t> order(covers.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return covers[a] < covers[b]; });
  if (n >= order.size()) return order;
  std::vector<size_t> out;
  for (size_t k = 0; k < n; ++k) out.push_back(order[n == 1 ? order.size() / 2 : k * (order.size() - 1) / (n - 1)]);
  return out;
}

std::string write_report(const Experiment& e, const ReportOptions& o) {
  namespace fs = std::filesystem;
  fs::create_directories(o.out_dir);
  const std::string dir = o.out_dir + "/";
  const std::vector<std::string>& cls = e.class_names();

  // Data files.
  e.predictions_csv().write(dir + "predictions.csv");
  e.quality_csv().write(dir + "quality.csv");
  json::Value results = e.to_json();
  results.obj.insert(results.obj.begin(), {"settings", o.settings});
  if (!o.classifier_std_dn.empty()) {  // by band name: the classifier's own order may be another
    json::Value by_band = json::object({});
    for (size_t c = 0; c < o.classifier_std_dn.size() && c < data::kS2BandNames.size(); ++c)
      by_band.obj.push_back({std::string(data::kS2BandNames[c]), json::number(o.classifier_std_dn[c])});
    results.obj.push_back({"classifier_input_std_dn", by_band});
  }
  if (o.classifier_test)
    results.obj.push_back({"classifier_eurosat_test",
                           json::object({{"file", json::string(o.classifier_test->path)},
                                         {"checkpoint", json::string(o.classifier_test->checkpoint)},
                                         {"epoch", json::number(double(o.classifier_test->epoch))},
                                         {"accuracy", to_json(o.classifier_test->accuracy)}})});
  results.obj.push_back(
      {"paper", json::object({{"aarnoutse_witte_accuracy_cloudy", json::number(kPaperCloudyAccuracy)},
                              {"aarnoutse_witte_accuracy_dsen2cr", json::number(kPaperDsen2crAccuracy)},
                              {"aarnoutse_witte_classifier_best_val_accuracy",
                               json::number(kPaperClassifierValAccuracy)}})});
  json::write(dir + "results.json", results);
  const std::string t1 = table1_markdown(e);
  write_file_atomic(dir + "table1.md", t1);

  // Figures: first as data (figures.json, every build), then drawn when this build has PLplot.
  std::vector<plot::Figure> figures;
  std::ostringstream figs;
  auto figure = [&](const std::string& stem, plot::Spec spec, const std::string& heading, const std::string& note) {
    figures.push_back({stem, std::move(spec)});
    std::string alt = stem.substr(4);  // "fig_class_distribution" -> "class distribution"
    std::replace(alt.begin(), alt.end(), '_', ' ');
    figs << "### " << heading << "\n\n![" << alt << "](" << stem << ".png)\n\n" << note;
  };
  if (!o.classifier_metrics.empty())
    figure("fig_training_curve", training_curve(o.classifier_metrics), "Classifier training curve",
           "From " + o.classifier_metrics + ".\n\n");
  plot::BarChart dist;
  dist.title = "predicted classes";
  dist.y_label = "share of scenes";
  dist.categories = cls;
  if (e.with_truth() > 0) dist.groups.push_back({"true label", e.truth_distribution().fractions});
  dist.groups.push_back({e.name(e.reference()), e.distribution(e.reference()).fractions});
  for (int m = 0; m < e.methods(); ++m)
    if (m != e.reference()) dist.groups.push_back({e.name(m), e.distribution(m).fractions});
  figure("fig_class_distribution", dist, "Class distributions (paper: Figure 6)", "");

  for (int m = 0; m < e.methods(); ++m) {
    if (m == e.reference()) continue;
    const ConfusionMatrix cm = e.confusion_vs_reference(m);
    plot::Heatmap h;
    h.title = e.label(m) + " vs pristine-derived labels";
    h.x_label = "predicted (" + e.name(m) + ")";
    h.y_label = "pristine-derived label";
    h.row_labels = h.col_labels = cls;
    h.values = cm.row_normalised();
    for (int t = 0; t < cm.classes(); ++t)
      for (int p = 0; p < cm.classes(); ++p) h.cell_text.push_back(std::to_string(cm.count(t, p)));
    const std::string stem = "fig_confusion_" + e.name(m);
    if (is_dsen2cr(e.name(m)) || e.name(m) == "cloudy")
      figure(stem, h, "Confusion: " + e.label(m) + " (paper: Figure 7)",
             "Rows: pristine-derived label, columns: prediction; colour = row share, text = count.\n\n");
    else
      figures.push_back({stem, h});
  }

  plot::BarChart cover;
  cover.title = "accuracy vs pristine-derived labels by cloud cover";
  cover.y_label = "accuracy";
  const CoverBins b0 = e.bins_vs_reference(0);
  for (int b = 0; b < b0.bins(); ++b) cover.categories.push_back(b0.label(b) + " (n=" + std::to_string(b0.count(b)) + ")");
  for (int m = 0; m < e.methods(); ++m) {
    if (m == e.reference()) continue;
    const CoverBins bins = e.bins_vs_reference(m);
    std::vector<double> v;
    for (int b = 0; b < bins.bins(); ++b)  // an empty bin has no accuracy: no bar (NaN), not a bar at 0
      v.push_back(bins.count(b) ? bins.accuracy(b).value : std::nan(""));
    cover.groups.push_back({e.name(m), v});
  }
  figure("fig_accuracy_by_cover", cover, "Accuracy by cloud cover", "");

  if (!o.examples.empty()) {
    plot::PanelGrid grid;
    for (const Example& ex : o.examples) grid.rows.push_back({ex.caption, ex.panels});
    figure("fig_examples", grid, "Examples across the cloud-cover range (paper: Figure 4)", "");
  }
  plot::write_figures(o.out_dir, figures);
  const std::vector<std::string> drawn =
      plot::available() ? plot::draw_figures(o.out_dir, figures) : std::vector<std::string>{};
  const std::vector<std::string> stale = plot::remove_stale_figures(o.out_dir, drawn);
  if (!stale.empty())
    std::fprintf(stderr, "cloud_impact: removed %zu figure files of an earlier run in %s (%s%s)\n", stale.size(),
                 o.out_dir.c_str(), stale.front().c_str(), stale.size() > 1 ? ", ..." : "");
  if (!plot::available())
    figs << "*This build draws no figures (NIMBUS_PLOTS=OFF, the GPU bundle): every figure is kept as data in "
            "`figures.json`; `plot_figures " << o.out_dir << "` draws them where PLplot is installed.*\n\n";

  // report.md
  std::ostringstream r;
  r << "# Cloud impact on land-cover classification\n\n"
    << "Does DSen2-CR cloud removal help a land-cover classifier? Replication of Aarnoutse & Witte (2021): the "
       "classifier labels the pristine (cloud-free) scene, and those labels are the reference for the cloudy "
       "scene and for the cloud-removed one. Settings: `results.json` (\"settings\").\n\n"
    << "## Table 1: classification accuracy\n\n"
    << (o.classifier_test ? "The classifier: " + classifier_test_line(*o.classifier_test) +
                                "; Aarnoutse & Witte report " + pct(kPaperClassifierValAccuracy) +
                                " best validation accuracy on EuroSAT (13 bands), and no test accuracy.\n\n"
                          : std::string())
    << t1 << "\n"
    << "## Accuracy by cloud cover of the input\n\n"
    << "Cover = fraction of the cloudy scene the DSen2-CR detector calls cloud; accuracy vs pristine-derived "
       "labels.\n\n"
    << cover_markdown(e) << "\n"
    << "## Cloud-removal quality (Meraner et al. Table 1 units)\n\n"
    << quality_markdown(e) << "\n"
    << (o.trained_with.empty() ? "" : o.trained_with + "\n\n")
    << "Per scene: `quality.csv`; per-scene predictions: `predictions.csv`.\n\n"
    << "## Per-band error against the target (DN)\n\n"
    << "Mean absolute error per band over whole scenes. The classifier standardises each band by its "
       "training std (first row), so what it sees of an error is the error in units of that std (in "
       "brackets): a band that is nearly constant in the training tiles (B10, cirrus) turns a small error "
       "into a large input shift.\n\n"
    << band_error_markdown(e, o.classifier_std_dn) << "\n"
    << "## Figures\n\n"
    << figs.str();
  const std::string report = dir + "report.md";
  write_file_atomic(report, r.str());
  return report;
}

}  // namespace nimbus::apps
