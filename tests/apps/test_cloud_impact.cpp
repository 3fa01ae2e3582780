// test_cloud_impact.cpp: the cloud-impact experiment's accounting
// (apps/common/experiment.h, experiment_report.h) on tiny hand-made scenes:
// classification crops, labels vs pristine and vs truth, confusion matrix,
// cover bins and quality metrics against hand-computed values; a "cloud
// removal" returning the target scores 100% with PSNR at the documented cap,
// one returning the cloudy input equals the cloudy row; synthetic triplets on
// disk load with their true labels; the report files hold the same numbers.
// (SSIM and SAM themselves are checked against numpy/skimage in test_image_metrics.)
#include <doctest/doctest.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>

#include "tests/common/check.h"
#include "apps/common/experiment.h"
#include "apps/common/experiment_report.h"
#include "apps/common/figure_file.h"
#include "data/normalize.h"
#include "data/sentinel2.h"
#include "data/synthetic.h"
#include "engine/autograd.h"
#include "engine/io/json.h"

using namespace nimbus;
using namespace nimbus::apps;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& tag) {
  const fs::path d = fs::temp_directory_path() / ("nimbus_impact_" + tag + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

constexpr int kC = 13;

// A 16x16 scene whose target is flat at `level` DN in every band; the cloudy
// image adds `cloud` DN on the covered pixels (the left `covered_cols` columns),
// which are also the mask.
Scene flat_scene(const std::string& name, float level, float cloud, int covered_cols, int true_label = -1) {
  Scene s;
  s.name = name;
  s.height = s.width = 16;
  const size_t hw = 256;
  s.target.assign(kC * hw, level);
  s.cloudy = s.target;
  s.mask.assign(hw, 0.f);
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < covered_cols; ++x) {
      s.mask[size_t(y * 16 + x)] = 1.f;
      for (int c = 0; c < kC; ++c) s.cloudy[size_t(c) * hw + size_t(y * 16 + x)] += cloud;
    }
  s.cloud_cover = covered_cols / 16.0;
  s.true_label = true_label;
  return s;
}

// Fake classifier: class = mean DN of band 0 / 1000, rounded, clamped to 0..9 (one-hot "probabilities").
ClassifyFn mean_level_classifier() {
  return [](const float* dn, int h, int w) {
    double sum = 0;
    for (int i = 0; i < h * w; ++i) sum += dn[i];
    const int k = std::clamp(int(std::lround(sum / (h * w) / 1000.0)), 0, 9);
    std::vector<float> p(10, 0.f);
    p[size_t(k)] = 1.f;
    return p;
  };
}

std::vector<std::string> class_names10() {
  std::vector<std::string> v;
  for (int k = 0; k < 10; ++k) v.push_back("c" + std::to_string(k));
  return v;
}

SceneResult result(const std::string& name, double cover, int truth, std::vector<int> pred) {
  SceneResult r;
  r.name = name;
  r.cloud_cover = cover;
  r.true_label = truth;
  r.pred = std::move(pred);
  r.metrics.assign(r.pred.size(), ImageMetrics{});
  return r;
}

}  // namespace

TEST_CASE("cloud_impact: classification crops for tiles, center and full, and how many a forward pass takes") {
  auto c = classify_crops(256, 256, ClassifyMode::Tiles, 64);
  REQUIRE(c.size() == 16);
  CHECK(c.front() == std::pair<int, int>{0, 0});
  CHECK(c[1] == std::pair<int, int>{0, 64});
  CHECK(c.back() == std::pair<int, int>{192, 192});
  // 100 x 70: rows at 0 and 36 (flush with the bottom), columns at 0 and 6.
  c = classify_crops(100, 70, ClassifyMode::Tiles, 64);
  REQUIRE(c.size() == 4);
  CHECK(c[0] == std::pair<int, int>{0, 0});
  CHECK(c[1] == std::pair<int, int>{0, 6});
  CHECK(c[3] == std::pair<int, int>{36, 6});
  CHECK(classify_crops(64, 64, ClassifyMode::Tiles, 64).size() == 1);
  // Crops per forward pass: tiles fill the batch; whole images as many as hold batch tiles' pixels.
  CHECK(crops_per_pass(64 * 64, 32, 64) == 32);
  CHECK(crops_per_pass(256 * 256, 32, 64) == 2);    // 16 tiles' worth each
  CHECK(crops_per_pass(100 * 70, 32, 64) == 18);    // 131072 / 7000
  CHECK(crops_per_pass(10980 * 10980, 32, 64) == 1);
  CHECK(crops_per_pass(8 * 8, 32, 64) == 32);       // never more than the batch
  CHECK_THROWS_AS(crops_per_pass(0, 32, 64), Error);
  CHECK(classify_crops(256, 256, ClassifyMode::Center, 64) == std::vector<std::pair<int, int>>{{96, 96}});
  CHECK(classify_crops(256, 200, ClassifyMode::Full, 64) == std::vector<std::pair<int, int>>{{0, 0}});
  CHECK_THROWS_WITH_AS(classify_crops(32, 256, ClassifyMode::Tiles, 64), doctest::Contains("smaller than"), Error);
  CHECK(parse_classify_mode("center") == ClassifyMode::Center);
  CHECK_THROWS_AS(parse_classify_mode("middle"), Error);
  // mean_rows: two rows of three.
  const auto m = mean_rows({0.2f, 0.3f, 0.5f, 0.6f, 0.1f, 0.3f}, 2, 3);
  CHECK(m[0] == doctest::Approx(0.4));
  CHECK(m[1] == doctest::Approx(0.2));
  CHECK(m[2] == doctest::Approx(0.4));
  CHECK(argmax({0.1f, 0.7f, 0.2f}) == 1);
}

TEST_CASE("cloud_impact: the tiles classifier averages tile probabilities of a real classifier") {
  // A tiny real Classifier: the tiles mode must equal the mean of the softmax of each 64x64 crop.
  models::ResNetConfig rc;
  rc.block = models::BlockType::Basic;
  rc.blocks = {1, 1, 1, 1};
  rc.width = 4;
  Rng rng(3);
  auto clf = std::make_shared<models::Classifier>(rc, rng);
  std::vector<float> dn(size_t(kC) * 128 * 128);
  for (size_t i = 0; i < dn.size(); ++i) dn[i] = float((i * 2654435761u) % 4000);
  const auto p = classifier_fn(clf, ClassifyMode::Tiles, 64, Device::CPU)(dn.data(), 128, 128);
  REQUIRE(p.size() == 10);
  std::vector<double> want(10, 0.0);
  for (auto [y0, x0] : classify_crops(128, 128, ClassifyMode::Tiles, 64)) {
    std::vector<float> crop;
    for (int c = 0; c < kC; ++c)
      for (int y = 0; y < 64; ++y)
        for (int x = 0; x < 64; ++x) crop.push_back(dn[size_t(c) * 128 * 128 + size_t(y0 + y) * 128 + size_t(x0 + x)]);
    // The softmax by hand from the model's logits for this crop alone (not the batch classifier_fn builds).
    NoGradGuard ng;
    const std::vector<float> z = clf->logits(Tensor::from_vector({1, kC, 64, 64}, crop)).to_vector();
    REQUIRE(z.size() == 10);
    const double zmax = *std::max_element(z.begin(), z.end());
    double sum = 0;
    for (float v : z) sum += std::exp(double(v) - zmax);
    for (int k = 0; k < 10; ++k) want[size_t(k)] += std::exp(double(z[size_t(k)]) - zmax) / sum / 4.0;
  }
  for (int k = 0; k < 10; ++k) CHECK(p[size_t(k)] == doctest::Approx(want[size_t(k)]).epsilon(1e-5));
}

TEST_CASE("cloud_impact: accounting vs pristine and true labels, confusion, bins, distributions by hand") {
  // Methods: cloudy, cr, pristine (reference). Six scenes.
  Experiment e({"cloudy", "cr", "pristine"}, {"cloudy", "cr", "pristine"}, 2, class_names10());
  //               name  cover truth  cloudy cr pristine
  e.add(result("a", 0.05, 1, {1, 1, 1}));
  e.add(result("b", 0.20, 2, {3, 2, 2}));
  e.add(result("c", 0.50, 2, {3, 2, 1}));
  e.add(result("d", 0.70, -1, {3, 4, 4}));
  e.add(result("e", 1.00, 4, {3, 3, 4}));
  e.add(result("f", 0.95, 4, {0, 4, 4}));
  CHECK(e.with_truth() == 5);
  // vs pristine labels: cloudy right on a only (1/6); cr right on a, b, d, f (4/6); pristine 6/6.
  CHECK(e.accuracy_vs_reference(0).k == 1);
  CHECK(e.accuracy_vs_reference(0).n == 6);
  CHECK(e.accuracy_vs_reference(1).k == 4);
  CHECK(e.accuracy_vs_reference(2).k == 6);
  CHECK(e.accuracy_vs_reference(2).value == 1.0);
  // vs truth (d has none): cloudy a = 1/5; cr a, b, c, f = 4/5; pristine a, b, e, f = 4/5.
  CHECK(e.accuracy_vs_truth(0).k == 1);
  CHECK(e.accuracy_vs_truth(0).n == 5);
  CHECK(e.accuracy_vs_truth(1).k == 4);
  CHECK(e.accuracy_vs_truth(2).k == 4);
  CHECK(e.accuracy_vs_truth(2).lo == doctest::Approx(wilson_interval(4, 5).lo));
  // Confusion of cr vs pristine: rows = pristine label.
  const ConfusionMatrix cm = e.confusion_vs_reference(1);
  CHECK(cm.count(1, 1) == 1);
  CHECK(cm.count(1, 2) == 1);  // c: pristine 1, cr 2
  CHECK(cm.count(2, 2) == 1);
  CHECK(cm.count(4, 4) == 2);
  CHECK(cm.count(4, 3) == 1);  // e
  CHECK(cm.total() == 6);
  // Bins [0,.1) [.1,.3) [.3,.6) [.6,1]: counts 1,1,1,3; cr correct 1,1,0,2.
  const CoverBins b = e.bins_vs_reference(1);
  CHECK(b.count(0) == 1);
  CHECK(b.count(1) == 1);
  CHECK(b.count(2) == 1);
  CHECK(b.count(3) == 3);
  CHECK(b.accuracy(2).k == 0);
  CHECK(b.accuracy(3).k == 2);
  const CoverBins bt = e.bins_vs_truth(0);  // d not counted: last bin has e, f; cloudy wrong on both
  CHECK(bt.count(3) == 2);
  CHECK(bt.accuracy(3).k == 0);
  // Distributions: cloudy predicts 3 four times.
  CHECK(e.distribution(0).counts[3] == 4);
  CHECK(e.distribution(0).fractions[3] == doctest::Approx(4.0 / 6));
  CHECK(e.truth_distribution().counts[4] == 2);
  // CSV rows and the errors.
  CHECK(e.predictions_csv().rows() == 6);
  CHECK(e.quality_csv().rows() == 18);
  CHECK_THROWS_WITH_AS(e.add(result("g", 0.1, 1, {1, 1})), doctest::Contains("3 methods"), Error);
  CHECK_THROWS_WITH_AS(e.add(result("h", 0.1, 1, {1, 12, 1})), doctest::Contains("class 12"), Error);
  CHECK_THROWS_WITH_AS(e.add(result("i", 1.5, 1, {1, 1, 1})), doctest::Contains("cloud cover 1.5"), Error);
}

// The metrics' references are clipped to [0, 10000] DN as DSen2-CR's pipeline clips its target and cloudy
// input; a model's output is not (DSen2-CR's predictions are not), the cloudy and pristine rows' are. A target at 12000 DN (snow, glint):
// a remover that returns 10000 is exact, one that returns the raw 12000 is off by 0.2 in reflectance.
TEST_CASE("cloud_impact: the metrics' references are clipped to 10000 DN, the outputs are not") {
  const Scene s = flat_scene("bright", 12000, 0, 0);  // no cloud: cloudy = target = 12000 DN
  const Method raw{"raw", "returns the target as read", [](const Scene& sc) { return sc.target; }};
  const Method clipped{"clipped", "returns 10000 DN", [](const Scene& sc) {
                         return std::vector<float>(sc.target.size(), 10000.f);
                       }};
  const SceneResult r = evaluate_scene(s, {raw, clipped}, mean_level_classifier());
  CHECK(r.metrics[0].mae == doctest::Approx(0.2).epsilon(1e-6));
  CHECK(r.metrics[0].mae_reprod == doctest::Approx(0.2).epsilon(1e-6));  // vs the clipped cloudy input
  CHECK(r.metrics[1].mae == 0);
  CHECK(r.metrics[1].mae_reprod == 0);
  CHECK(r.metrics[1].psnr == kPsnrCapDb);
  // The built-in rows return the scene's own images, clipped alike: pristine stays the cap.
  const SceneResult own = evaluate_scene(s, {cloudy_method(), pristine_method()}, mean_level_classifier());
  for (const ImageMetrics& m : own.metrics) {
    CHECK(m.mae == 0);
    CHECK(m.psnr == kPsnrCapDb);
  }
}

TEST_CASE("cloud_impact: a remover returning the target scores 100% and the PSNR cap - half a cloud by hand") {
  // Targets at 2000 / 5000 / 8000 DN (classes 2, 5, 8); clouds add 6400 DN on 4, 8, 16 of 16 columns.
  std::vector<Scene> scenes = {flat_scene("s1", 2000, 6400, 4, 2), flat_scene("s2", 5000, 6400, 8, 5),
                               flat_scene("s3", 8000, 6400, 16, 8)};
  const Method perfect{"perfect", "returns the target", [](const Scene& s) { return s.target; }};
  // Removes half of each cloud: target + 3200 DN on the covered pixels, clear pixels untouched.
  const Method half{"half", "removes half the cloud", [](const Scene& s) {
                      std::vector<float> v = s.cloudy;
                      for (size_t i = 0; i < v.size(); ++i) v[i] -= (v[i] - s.target[i]) / 2;
                      return v;
                    }};
  const std::vector<Method> methods = {cloudy_method(), perfect, half, pristine_method()};
  Experiment e({"cloudy", "perfect", "half", "pristine"}, {"a", "b", "c", "d"}, 3, class_names10());
  for (const Scene& s : scenes) e.add(evaluate_scene(s, methods, mean_level_classifier()));

  // Hand: cloudy mean band-0 DN = level + 6400 * cols/16 -> 3600 (4), 8200 (8), 14400 (9): all wrong;
  // half a cloud: level + 3200 * cols/16 -> 2800 (3), 6600 (7), 11200 (9).
  CHECK(e.scenes()[0].pred == std::vector<int>{4, 2, 3, 2});
  CHECK(e.scenes()[1].pred == std::vector<int>{8, 5, 7, 5});
  CHECK(e.scenes()[2].pred == std::vector<int>{9, 8, 9, 8});
  CHECK(e.accuracy_vs_reference(2).k == 0);
  CHECK(e.accuracy_vs_reference(0).k == 0);
  CHECK(e.accuracy_vs_reference(1).k == 3);
  CHECK(e.accuracy_vs_reference(1).value == 1.0);
  CHECK(e.accuracy_vs_truth(1).value == 1.0);
  CHECK(e.accuracy_vs_truth(3).value == 1.0);

  const ImageMetrics perfect_mean = e.quality(1).mean();
  CHECK(perfect_mean.mae == 0);
  CHECK(perfect_mean.rmse == 0);
  CHECK(perfect_mean.psnr == kPsnrCapDb);
  CHECK(perfect_mean.ssim == doctest::Approx(1.0));
  CHECK(perfect_mean.sam == 0);
  CHECK(perfect_mean.mae_recon == 0);

  // Cloudy and half-cloud metrics by hand (reflectance = DN / 1e4, the cloud adds a = 0.64, or 0.32 after half
  // is removed, on a fraction f of pixels): MAE target = a f, RMSE = a sqrt(f), PSNR = 20 log10(1 / RMSE), MAE
  // recon = a, MAE reprod = 0 (clear pixels equal the cloudy input), and reprod is NaN for s3, which has no clear
  // pixel. The cloudy row is the scene's own image, clipped to 10000 DN for the metrics as the references are:
  // its cloud adds min(level + 6400, 10000) - level DN, a = 0.64, 0.5, 0.2; the half remover's is a model's
  // output, unclipped (s3's 11200 DN stays).
  const double f[3] = {0.25, 0.5, 1.0}, cloudy_a[3] = {0.64, 0.5, 0.2};
  for (int method : {0, 2}) {
    for (int i = 0; i < 3; ++i) {
      const double a = method == 0 ? cloudy_a[i] : 0.32;
      CAPTURE(method);
      CAPTURE(i);
      const ImageMetrics& m = e.scenes()[size_t(i)].metrics[size_t(method)];
      CHECK(m.mae == doctest::Approx(a * f[i]).epsilon(1e-6));
      CHECK(m.rmse == doctest::Approx(a * std::sqrt(f[i])).epsilon(1e-6));
      CHECK(m.psnr == doctest::Approx(20 * std::log10(1 / (a * std::sqrt(f[i])))).epsilon(1e-6));
      CHECK(m.mae_recon == doctest::Approx(a).epsilon(1e-6));
      CHECK(m.sam == doctest::Approx(0).epsilon(1e-6));  // flat spectra scaled: same direction
      CHECK(m.cloud_fraction == doctest::Approx(f[i]));
      if (i < 2) CHECK(m.mae_reprod == 0);
      else CHECK(std::isnan(m.mae_reprod));
    }
  }
  // Per-band MAE in DN: the cloud adds 6400 DN on a fraction f, in every band; the perfect remover has none.
  const std::vector<double> band = e.band_mae_dn(0);
  REQUIRE(band.size() == 13);
  for (double v : band) CHECK(v == doctest::Approx(6400 * (0.25 + 0.5 + 1.0) / 3).epsilon(1e-6));
  for (double v : e.band_mae_dn(1)) CHECK(v == 0);
  for (double v : e.band_mae_dn(2)) CHECK(v == doctest::Approx(3200 * (0.25 + 0.5 + 1.0) / 3).epsilon(1e-6));
  std::vector<double> std_dn(13, 100.0);
  std_dn[10] = 3.2;
  const std::string md = band_error_markdown(e, std_dn);
  CHECK(md.find("| classifier input std (DN) | 100.0 |") != std::string::npos);
  CHECK(md.find("3733 (37.3 sd)") != std::string::npos);   // 6400 * 1.75 / 3 = 3733.3 over std 100
  CHECK(md.find("3733 (1166.7 sd)") != std::string::npos);  // the same error in B10 (std 3.2)
  // Dataset means skip NaN: reprod over 2 scenes, MAE over 3.
  const MetricsMean q = e.quality(0);
  CHECK(q.count(5) == 2);
  CHECK(q.mean().mae == doctest::Approx((0.64 * 0.25 + 0.5 * 0.5 + 0.2 * 1.0) / 3).epsilon(1e-6));
  // The pristine row against the cloudy input on clear pixels is 0 too here (clear pixels are untouched).
  CHECK(e.quality(3).mean().mae_reprod == 0);
}

TEST_CASE("cloud_impact: a method returning the wrong size, or a NaN, is an error naming it and the scene") {
  const Method bad{"bad", "bad", [](const Scene&) { return std::vector<float>(5); }};
  CHECK_THROWS_WITH_AS(evaluate_scene(flat_scene("s", 1000, 0, 0), {bad}, mean_level_classifier()),
                       doctest::Contains("method bad returned 5 values"), Error);
  const Method diverged{"dsen2cr_sar", "DSen2-CR", [](const Scene& s) {
                          std::vector<float> v = s.cloudy;
                          v[v.size() / 2] = NAN;  // in the middle band
                          return v;
                        }};
  const Scene s = flat_scene("ROIs1158_spring_1_p2", 1000, 0, 0);
  CHECK_THROWS_WITH_AS(evaluate_scene(s, {diverged}, mean_level_classifier()),
                       doctest::Contains("method dsen2cr_sar returned a non-finite value (nan) for ROIs1158_spring_1_p2 "
                                         "at band 6"),
                       Error);
}

TEST_CASE("cloud_impact: DSen2-CR method equals the model on normalised input, rescaled to DN") {
  models::DSen2CRConfig dc;
  dc.blocks = 1;
  dc.features = 4;
  Rng rng(5);
  auto net = std::make_shared<models::DSen2CR>(dc, rng);
  Scene s = flat_scene("s", 3000, 4000, 6);
  s.sar.assign(2 * 256, -12.f);
  for (size_t i = 0; i < s.cloudy.size(); ++i) s.cloudy[i] += float(i % 97);
  const std::vector<float> out = dsen2cr_method("cr", "cr", net, TileOptions{}).run(s);
  std::vector<float> s2n = s.cloudy, s1n = s.sar;
  data::normalize_s2(s2n.data(), s2n.size());
  data::normalize_s1(s1n.data(), 256);
  net->eval();
  const std::vector<float> want =
      net->forward(Tensor::from_vector({1, kC, 16, 16}, s2n), Tensor::from_vector({1, 2, 16, 16}, s1n)).to_vector();
  REQUIRE(out.size() == want.size());
  std::vector<double> want_dn(want.size());  // every output, not a sample of them: a tile's edge too
  for (size_t i = 0; i < want.size(); ++i) want_dn[i] = double(want[i]) * 2000.0;
  test::check_close(out, want_dn, 1e-3, 1e-5, "DSen2-CR method output (DN)");
  s.sar.clear();
  CHECK_THROWS_WITH_AS(dsen2cr_method("cr", "cr", net, TileOptions{}).run(s), doctest::Contains("S1"), Error);
}

TEST_CASE("cloud_impact: synthetic triplets on disk load with their true labels and detector cover") {
  const std::string root = temp_dir("synth");
  const data::SyntheticOptions o{.seed = 9, .patches_per_roi = 2, .size = 64};
  std::vector<std::string> rows;
  for (int i = 0; i < 3; ++i) rows.push_back(data::write_triplet(root, o, i));
  data::write_labels(root, rows);
  const auto labels = read_true_labels(root + "/labels.csv");
  const data::Sen12mscrIndex index = data::scan_sen12mscr(root);
  REQUIRE(index.triplets.size() == 3);
  for (const auto& t : index.triplets) {
    const Scene s = load_scene(t);
    CHECK(s.height == 64);
    CHECK(s.cloudy.size() == size_t(kC) * 64 * 64);
    CHECK(s.sar.size() == 2u * 64 * 64);
    CHECK(s.cloud_cover == doctest::Approx(data::cloud_cover_fraction(s.cloudy.data(), kC, 64, 64)));
    REQUIRE(labels.count(s.name) == 1);  // the labels file's keys are the triplet names
    CHECK(labels.at(s.name).label >= 0);
    CHECK(labels.at(s.name).label < 10);
  }
  // A cloudy image stored in EuroSAT's order (B8A last), saying so in its band descriptions, loads as
  // the same scene: every band in SEN12MS order, the same detector cover.
  const data::Sen12mscrTriplet& t0 = index.triplets[0];
  const Scene plain = load_scene(t0);
  data::Raster r = data::read_geotiff(t0.s2_cloudy);
  r.data = data::reorder_bands(r.data, size_t(r.width) * size_t(r.height), data::sen12ms_bands(),
                               data::eurosat_bands(), t0.s2_cloudy);
  r.band_names.clear();
  for (int b : data::eurosat_bands()) r.band_names.emplace_back(data::kS2BandNames[size_t(b)]);
  data::WriteOptions wo;
  wo.type = r.type;
  data::write_geotiff(t0.s2_cloudy, r, wo);
  const Scene reordered = load_scene(t0);
  CHECK(reordered.cloudy == plain.cloudy);
  CHECK(reordered.cloud_cover == plain.cloud_cover);
  // Malformed files name themselves.
  { std::ofstream(root + "/bad.csv") << "season,roi\nx,1\n"; }
  CHECK_THROWS_WITH_AS(read_true_labels(root + "/bad.csv"), doctest::Contains("bad.csv: no column 'patch'"), Error);
  { std::ofstream(root + "/bad2.csv") << data::labels_header() << "\nROIs1158_spring,1,x,2,a,1,1,1,1,1,a,b,c,d\n"; }
  CHECK_THROWS_WITH_AS(read_true_labels(root + "/bad2.csv"), doctest::Contains("bad2.csv:2: malformed"), Error);
  fs::remove_all(root);
}

TEST_CASE("cloud_impact: the classifier's input std is put in SEN12MS order beside the per-band errors") {
  // A classifier in EuroSAT order (B8A last): std k is band eurosat_bands()[k].
  std::vector<float> std13;
  for (int k = 0; k < 13; ++k) std13.push_back(0.01f * float(k + 1));
  const std::vector<double> s = classifier_std_dn(std13, data::eurosat_bands());
  REQUIRE(s.size() == 13);
  CHECK(s[8] == doctest::Approx(1300));   // B8A: the classifier's last
  CHECK(s[9] == doctest::Approx(900));    // B9: its 9th
  CHECK(s[10] == doctest::Approx(1000));  // B10
  CHECK(s[0] == doctest::Approx(100));
  // An RGB classifier: its three bands, the others unknown.
  const std::vector<double> rgb = classifier_std_dn({0.1f, 0.2f, 0.3f}, data::BandList{data::B4, data::B3, data::B2});
  CHECK(rgb[3] == doctest::Approx(1000));
  CHECK(rgb[1] == doctest::Approx(3000));
  CHECK(std::isnan(rgb[0]));
  CHECK_THROWS_AS(classifier_std_dn({0.1f}, data::eurosat_bands()), Error);
  // The table: "-" where the classifier has no std, no "(sd)" there.
  Experiment e({"cloudy", "pristine"}, {"cloudy S2", "pristine S2"}, 1, class_names10());
  e.add(result("a", 0.5, 1, {1, 1}));
  const std::string md = band_error_markdown(e, rgb);
  CHECK_MESSAGE(md.find("| classifier input std (DN) | - | 3000.0 | 2000.0 | 1000.0 | - |") != std::string::npos, md);
}

TEST_CASE("cloud_impact: report files hold the accounting's numbers") {
  const std::string dir = temp_dir("report");
  Experiment e({"cloudy", "dsen2cr_sar", "pristine"}, {"cloudy S2", "DSen2-CR with SAR", "pristine S2"}, 2,
               class_names10());
  // Each scene and method gets its own quality numbers: metric k of scene i, method m = m + i / 10 + k / 100;
  // scene c has no clear pixel (reprod NaN), scene a no cloud (recon NaN).
  const std::vector<std::tuple<std::string, double, int, std::vector<int>>> scenes = {
      {"a", 0.05, 1, {1, 1, 1}}, {"b", 0.40, 2, {3, 2, 2}}, {"c", 0.90, 3, {3, 2, 3}}};
  auto metric_value = [](int m, int i, int k) { return m + i / 10.0 + k / 100.0; };
  auto is_nan = [](int i, int k) { return (i == 2 && k >= 5 && k <= 8) || (i == 0 && k >= 9 && k <= 12); };
  for (int i = 0; i < 3; ++i) {
    const auto& [name, cover, truth, pred] = scenes[size_t(i)];
    SceneResult r = result(name, cover, truth, pred);
    for (int m = 0; m < 3; ++m) {
      std::array<double, ImageMetrics::kCount> v{};
      for (int k = 0; k < ImageMetrics::kCount; ++k) v[size_t(k)] = is_nan(i, k) ? std::nan("") : metric_value(m, i, k);
      r.metrics[size_t(m)] = ImageMetrics::from_values(v);
    }
    e.add(std::move(r));
  }
  { std::ofstream(dir + "/metrics.csv") << "epoch,lr,train_loss,train_acc,val_loss,val_acc\n1,0.001,1,0.5,1,0.6\n"
                                           "2,0.001,0.5,0.8,0.7,0.75\n"; }
  Scene s = flat_scene("a", 1000, 3000, 5);
  s.sar.assign(512, -10.f);
  ReportOptions ro;
  ro.out_dir = dir + "/run";
  ro.classifier_metrics = dir + "/metrics.csv";
  ro.settings = json::object({{"split", json::string("all")}});
  ro.examples.push_back(make_example(s, s.target, "cloud-removed", "example"));
  std::vector<float> std13(13, 0.05f);
  std13[12] = 0.2f;  // B8A, last in EuroSAT order
  ro.classifier_std_dn = classifier_std_dn(std13, data::eurosat_bands());
  // An earlier run in the same folder drew a figure this one has not (a method it left out).
  fs::create_directories(ro.out_dir);
  { std::ofstream(ro.out_dir + "/fig_confusion_dsen2cr_nosar.png") << "earlier run"; }
  const std::string report = write_report(e, ro);
  CHECK_FALSE(fs::exists(ro.out_dir + "/fig_confusion_dsen2cr_nosar.png"));
  for (const char* f : {"report.md", "results.json", "predictions.csv", "quality.csv", "table1.md", "figures.json"})
    CHECK_MESSAGE(fs::is_regular_file(ro.out_dir + "/" + f), f);
  // The figures: as data in every build, drawn (PNG + SVG, the examples PNG only) when PLplot is in.
  const std::vector<plot::Figure> figs = plot::read_figures(ro.out_dir);
  std::vector<std::string> stems;
  for (const plot::Figure& f : figs) stems.push_back(f.stem);
  CHECK(stems == std::vector<std::string>{"fig_training_curve", "fig_class_distribution", "fig_confusion_cloudy",
                                          "fig_confusion_dsen2cr_sar", "fig_accuracy_by_cover", "fig_examples"});
  // No scene has 10-30% cover: that bin has no bar (null in figures.json), not a bar at 0% accuracy.
  const auto& cover = std::get<plot::BarChart>(figs[4].spec);
  REQUIRE(cover.categories.size() == 4);
  CHECK(cover.categories[1] == "10-30% (n=0)");
  CHECK(std::isnan(cover.groups[0].values[1]));
  CHECK(cover.groups[0].values[0] == 1.0);  // a: cloudy right
  const auto& dist = std::get<plot::BarChart>(figs[1].spec);
  REQUIRE(dist.groups.size() == 4);  // true label, pristine, cloudy, dsen2cr_sar
  CHECK(dist.groups[0].name == "true label");
  CHECK(dist.groups[1].name == "pristine");
  if (plot::available()) {
    for (const std::string& stem : stems) {
      CHECK_MESSAGE(fs::is_regular_file(ro.out_dir + "/" + stem + ".png"), stem);
      CHECK_MESSAGE(fs::is_regular_file(ro.out_dir + "/" + stem + ".svg") == (stem != "fig_examples"), stem);
    }
  }
  const json::Value r = json::parse(test::read_file(ro.out_dir + "/results.json"));
  const json::Value* by_band = r.get("classifier_input_std_dn");
  REQUIRE(by_band != nullptr);
  REQUIRE(by_band->get("B8A") != nullptr);
  CHECK(by_band->get("B8A")->num == doctest::Approx(2000));
  CHECK(by_band->get("B12")->num == doctest::Approx(500));
  const json::Value* methods = r.get("methods");
  REQUIRE(methods != nullptr);
  REQUIRE(methods->arr.size() == 3);
  // cloudy right on a, c (2/3) vs pristine; dsen2cr right on a, b (2/3) vs pristine and vs truth.
  CHECK(methods->arr[0].get("accuracy_vs_pristine")->get("correct")->num == 2);
  CHECK(methods->arr[1].get("accuracy_vs_pristine")->get("correct")->num == 2);
  CHECK(methods->arr[1].get("accuracy_vs_truth")->get("correct")->num == 2);
  CHECK(methods->arr[2].get("accuracy_vs_pristine")->get("accuracy")->num == 1.0);
  // Quality means skip the NaN scenes and say over how many images each is.
  for (int m = 0; m < 3; ++m) {
    const json::Value* q = methods->arr[size_t(m)].get("quality");
    REQUIRE(q != nullptr);
    for (int k = 0; k < ImageMetrics::kCount; ++k) {
      double sum = 0;
      int n = 0;
      for (int i = 0; i < 3; ++i)
        if (!is_nan(i, k)) sum += metric_value(m, i, k), ++n;
      CAPTURE(m);
      CAPTURE(kMetricNames[size_t(k)]);
      CHECK(q->get("mean")->get(kMetricNames[size_t(k)])->num == doctest::Approx(sum / n).epsilon(1e-12));
      CHECK(q->get("images")->get(kMetricNames[size_t(k)])->num == n);
    }
  }
  // quality.csv: a row per scene and method with that scene's numbers ("nan" where none), in metric order.
  const std::string qcsv = test::read_file(ro.out_dir + "/quality.csv");
  CHECK_MESSAGE(qcsv.find("b,dsen2cr_sar,0.4,1.1,1.11,1.12,") != std::string::npos, qcsv);
  // The report's table: dsen2cr_sar's MAE target over a, b, c = 1 + (0 + 0.1 + 0.2) / 3 = 1.1000; MAE reprod
  // (k = 5) over a and b = 1 + 0.05 + 0.05 = 1.1000; MAE recon (k = 9) over b and c = 1 + 0.15 + 0.09 = 1.2400.
  const std::string rep = test::read_file(report);
  CHECK_MESSAGE(rep.find("| DSen2-CR with SAR (ours) | 1.1000 | 1.1000 | 1.2400 |") != std::string::npos, rep);
  CHECK(rep.find("| 3 (reprod: 2, recon: 2) |") != std::string::npos);
  CHECK(r.get("settings")->get("split")->s == "all");
  const std::string t1 = test::read_file(ro.out_dir + "/table1.md");
  CHECK(t1.find("| DSen2-CR with SAR | 66.67% [") != std::string::npos);
  CHECK(t1.find("75.65%") != std::string::npos);  // the paper's number beside ours
  CHECK(test::read_file(report).find("![examples](fig_examples.png)") != std::string::npos);
  // Training curve: two series (train_acc, val_acc), two epochs.
  const plot::LineChart c = training_curve(dir + "/metrics.csv");
  REQUIRE(c.series.size() == 2);
  CHECK(c.series[1].name == "val_acc");
  CHECK(c.series[1].y == std::vector<double>{0.6, 0.75});
  fs::remove_all(dir);
}

TEST_CASE("cloud_impact: examples are picked evenly over the cover range") {
  const std::vector<double> covers = {0.9, 0.1, 0.5, 0.3, 0.7, 0.0, 1.0};
  // Sorted: 5 (0.0), 1, 3, 2, 4, 0, 6 (1.0); 3 picks -> ranks 0, 3, 6.
  CHECK(pick_examples(covers, 3) == std::vector<size_t>{5, 2, 6});
  CHECK(pick_examples(covers, 10).size() == 7);
  CHECK(pick_examples(covers, 0).empty());
}
