// test_cloud_impact_app.cpp: the cloud_impact program end to end on a few tiny
// synthetic triplets with tiny random models: exit codes, the files it writes,
// and that results.json agrees with predictions.csv; clear errors for a wrong
// checkpoint, an empty split and a missing option.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/common/check.h"
#include "apps/common/experiment.h"
#include "apps/common/figure_file.h"
#include "app_runner.h"
#include "data/synthetic.h"
#include "engine/io/json.h"
#include "models/model_io.h"

using namespace nimbus;
namespace fs = std::filesystem;

namespace {

struct TinyRun {
  std::string dir, data, clf, cr, cr_carl;
  TinyRun() {
    dir = (fs::temp_directory_path() / ("nimbus_impact_app_" + std::to_string(getpid()))).string();
    fs::remove_all(dir);
    data = dir + "/sen12mscr";
    const data::SyntheticOptions o{.seed = 3, .patches_per_roi = 2, .size = 64};
    std::vector<std::string> rows;
    for (int i = 0; i < 4; ++i) rows.push_back(data::write_triplet(data, o, i));
    data::write_labels(data, rows);
    models::ResNetConfig rc;
    rc.block = models::BlockType::Basic;
    rc.blocks = {1, 1, 1, 1};
    rc.width = 4;
    Rng rng(1);
    clf = dir + "/clf.safetensors";
    models::SaveOptions at_epoch;
    at_epoch.epoch = 3;  // as train_resnet's best.safetensors of epoch 3
    models::save_model(clf, models::build_model(models::ModelConfig::of(rc), rng), at_epoch);
    models::DSen2CRConfig dc;
    dc.blocks = 1;
    dc.features = 4;
    cr = dir + "/cr.safetensors";
    models::SaveOptions so;
    so.extra = {{"run.loss", "l1"}, {"run.cloud-threshold", "0.3"}};  // as train_dsen2cr records them
    cr_carl = dir + "/cr_carl.safetensors";
    models::SaveOptions carl;
    carl.extra = {{"run.loss", "carl --lambda 1"}, {"run.cloud-threshold", "0.3"}};
    models::save_model(cr_carl, models::build_model(models::ModelConfig::of(dc), rng), carl);
    models::save_model(cr, models::build_model(models::ModelConfig::of(dc), rng), so);
  }
  ~TinyRun() { fs::remove_all(dir); }
};

void spit(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

}  // namespace

TEST_CASE("cloud_impact app: a tiny run writes every file and the numbers agree") {
  TinyRun t;
  const std::string out = t.dir + "/run";
  const auto r = test::run_app("cloud_impact", {"--classifier", t.clf, "--cr", t.cr, "--data", t.data, "--split", "all",
                                                "--out", out, "--threads", "1", "--examples", "2"});
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("Table 1 (4 scenes)") != std::string::npos);
  CHECK(r.output.find("4 true labels") != std::string::npos);
  // Trained with L1: its masks shaped only its validation scores, so another threshold is not noted.
  CHECK(r.output.find("was trained with --cloud-threshold") == std::string::npos);
  for (const char* f : {"report.md", "results.json", "predictions.csv", "quality.csv", "table1.md", "figures.json"})
    CHECK_MESSAGE(fs::is_regular_file(out + "/" + f), f);
  if (plot::available()) {
    for (const char* f : {"fig_class_distribution.png", "fig_class_distribution.svg", "fig_confusion_dsen2cr_sar.png",
                          "fig_confusion_dsen2cr_sar.svg", "fig_accuracy_by_cover.png", "fig_accuracy_by_cover.svg",
                          "fig_examples.png"})
      CHECK_MESSAGE(fs::is_regular_file(out + "/" + f), f);
    // plot_figures draws the same files again from figures.json (what a GPU run's folder needs here).
    fs::remove(out + "/fig_examples.png");
    fs::remove(out + "/fig_accuracy_by_cover.svg");
    const auto pf = test::run_app("plot_figures", {out});
    INFO(pf.output);
    CHECK(pf.exit_code == 0);
    CHECK(fs::is_regular_file(out + "/fig_examples.png"));
    CHECK(fs::is_regular_file(out + "/fig_accuracy_by_cover.svg"));
  }
  CHECK_FALSE(fs::exists(out + "/fig_training_curve.png"));  // no metrics.csv next to the classifier

  // results.json vs predictions.csv: the pristine column is the reference, so count the cloudy matches.
  const json::Value res = json::parse(test::read_file(out + "/results.json"));
  CHECK(res.get("scenes")->num == 4);
  CHECK(res.get("scenes_with_true_labels")->num == 4);
  std::istringstream csv(test::read_file(out + "/predictions.csv"));
  std::string line;
  std::getline(csv, line);
  CHECK(line.rfind("scene,cloud_cover,true_cloud_fraction,true_label,true_name,pred_cloudy,", 0) == 0);
  int rows = 0, cloudy_right = 0;
  while (std::getline(csv, line)) {
    std::vector<std::string> c;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, ',');) c.push_back(cell);
    REQUIRE(c.size() == 11);  // 5 + 2 per method (cloudy, dsen2cr_sar, pristine)
    cloudy_right += c[5] == c[9];
    ++rows;
  }
  CHECK(rows == 4);
  const json::Value& cloudy = res.get("methods")->arr.at(0);
  CHECK(cloudy.get("name")->s == "cloudy");
  CHECK(cloudy.get("accuracy_vs_pristine")->get("correct")->num == cloudy_right);
  CHECK(res.get("methods")->arr.at(2).get("accuracy_vs_pristine")->get("accuracy")->num == 1.0);
  // The quality table says which of Meraner et al.'s rows our model compares with: the one of its loss.
  CHECK(res.get("settings")->get("cr_loss")->s == "l1");
  const std::string report = test::read_file(out + "/report.md");
  CHECK(report.find("| DSen2-CR, L1 (Meraner et al.) | 0.0270 | 0.0398 |") != std::string::npos);
  CHECK_MESSAGE(report.find("DSen2-CR with SAR was trained with `--loss l1`") != std::string::npos, report);
  CHECK(report.find("EuroSAT test accuracy") == std::string::npos);  // no test.json beside the classifier
  CHECK(res.get("classifier_eurosat_test") == nullptr);

  // Run again into the same folder: an earlier cloud_impact run's, so it is replaced. This time with a
  // model trained with CARL on masks of threshold 0.3, against this run's 0.2: said. And with the
  // classifier's EuroSAT test score beside it (train_resnet's test.json, for this file): reported, its
  // interval recomputed from the counts (the rate in the file is ignored).
  spit(t.dir + "/test.json", "{\"checkpoint\": \"clf.safetensors\", \"epoch\": 3, \"tiles\": 10, "
                             "\"accuracy\": {\"accuracy\": 0.1, \"correct\": 7, \"total\": 10}}\n");
  const auto again = test::run_app("cloud_impact", {"--classifier", t.clf, "--cr", t.cr_carl, "--data", t.data,
                                                    "--split", "all", "--out", out, "--threads", "1", "--examples", "1"});
  CHECK_MESSAGE(again.exit_code == 0, again.output);
  CHECK_MESSAGE(again.output.find("was trained with --cloud-threshold 0.3; this run's detector uses 0.2") !=
                    std::string::npos,
                again.output);
  const std::string report2 = test::read_file(out + "/report.md");
  CHECK(report2.find("trained with `--loss carl --lambda 1`") != std::string::npos);
  CHECK_MESSAGE(report2.find("The classifier: EuroSAT test accuracy 70.00% [39.7, 89.2] on 10 tiles (`" + t.dir +
                             "/test.json`: clf.safetensors of epoch 3); Aarnoutse & Witte report 92.90%") !=
                    std::string::npos,
                report2);
  const json::Value res2 = json::parse(test::read_file(out + "/results.json"));
  REQUIRE(res2.get("classifier_eurosat_test") != nullptr);
  CHECK(res2.get("classifier_eurosat_test")->get("accuracy")->get("correct")->num == 7);
  CHECK(res2.get("classifier_eurosat_test")->get("accuracy")->get("accuracy")->num == doctest::Approx(0.7));
}

// --out holding someone else's files (a report, figures named like ours) is refused before any work:
// report.md would replace theirs and the stale-figure clean-up would remove their fig_*.png and
// figure_images/*.png. A --classifier-metrics that cannot give the training curve fails before any
// work too, leaving no half-written run.
TEST_CASE("cloud_impact app: a folder of other files and a bad metrics file are refused before any work") {
  TinyRun t;
  const std::string mine = t.dir + "/mine";
  fs::create_directories(mine + "/figure_images");
  for (const char* f : {"report.md", "fig_my_plot.png", "figure_images/holiday.png"}) spit(mine + "/" + f, "mine");
  auto r = test::run_app("cloud_impact", {"--classifier", t.clf, "--cr", t.cr, "--data", t.data, "--split", "all",
                                          "--out", mine, "--threads", "1"});
  CHECK(r.exit_code == 2);
  CHECK_MESSAGE(r.output.find("--out " + mine + " holds files that are not an earlier cloud_impact run "
                              "(fig_my_plot.png, figure_images, report.md)") != std::string::npos,
                r.output);
  for (const char* f : {"report.md", "fig_my_plot.png", "figure_images/holiday.png"})
    CHECK_MESSAGE(test::read_file(mine + "/" + f) == "mine", f);
  CHECK_FALSE(fs::exists(mine + "/results.json"));
  // Refused before the run folder is taken: nothing of theirs is touched, not even a file named like
  // our temporaries, and no lock file is left.
  spit(mine + "/scan.tmp.2024", "mine");
  r = test::run_app("cloud_impact", {"--classifier", t.clf, "--cr", t.cr, "--data", t.data, "--split", "all",
                                     "--out", mine, "--threads", "1"});
  CHECK(r.exit_code == 2);
  CHECK(test::read_file(mine + "/scan.tmp.2024") == "mine");
  CHECK_FALSE(fs::exists(mine + "/.nimbus.lock"));
  // A run stopped part-way (its first files written, no results.json) is still ours: the rerun goes on.
  const std::string stopped = t.dir + "/stopped";
  fs::create_directories(stopped);
  spit(stopped + "/predictions.csv", "scene\n");
  spit(stopped + "/quality.csv", "scene\n");
  r = test::run_app("cloud_impact", {"--classifier", t.clf, "--cr", t.cr, "--data", t.data, "--split", "all",
                                     "--out", stopped, "--threads", "1", "--examples", "1"});
  CHECK_MESSAGE(r.exit_code == 0, r.output);

  spit(t.dir + "/metrics.csv", "epoch,lr\n1,0.1\n");
  const std::string out = t.dir + "/run";
  r = test::run_app("cloud_impact", {"--classifier", t.clf, "--cr", t.cr, "--data", t.data, "--split", "all", "--out",
                                     out, "--threads", "1", "--classifier-metrics", t.dir + "/metrics.csv"});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("metrics.csv: no *_acc column") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("cloud_impact: 4 scenes") == std::string::npos, r.output);  // before the work
  for (const char* f : {"predictions.csv", "quality.csv", "results.json", "table1.md", "report.md"})
    CHECK_MESSAGE(!fs::exists(out + "/" + f), f);
  // A test.json beside the classifier that scored it but is not train_resnet's: refused before the work,
  // named. One that scored another file of the folder (last.safetensors) is not this classifier's: left out.
  fs::remove(t.dir + "/metrics.csv");  // beside the classifier it would be read (and refused) first
  spit(t.dir + "/test.json", "{\"checkpoint\": \"clf.safetensors\", \"epoch\": 3}\n");
  r = test::run_app("cloud_impact", {"--classifier", t.clf, "--cr", t.cr, "--data", t.data, "--split", "all", "--out",
                                     out, "--threads", "1"});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find(t.dir + "/test.json: no 'accuracy'") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("cloud_impact: 4 scenes") == std::string::npos, r.output);
  for (const char* bad : {"{\"checkpoint\": \"clf.safetensors\",", "{\"checkpoint\": \"clf.safetensors\", "
                          "\"epoch\": 3, \"accuracy\": {\"correct\": 0, \"total\": 0}}"}) {
    CAPTURE(bad);
    spit(t.dir + "/test.json", bad);
    r = test::run_app("cloud_impact", {"--classifier", t.clf, "--cr", t.cr, "--data", t.data, "--split", "all",
                                       "--out", out, "--threads", "1"});
    CHECK(r.exit_code == 1);
    CHECK_MESSAGE(r.output.find(t.dir + "/test.json: ") != std::string::npos, r.output);  // a syntax error too
  }
  spit(t.dir + "/test.json", "{\"checkpoint\": \"last.safetensors\", \"epoch\": 3, \"accuracy\": "
                             "{\"correct\": 1, \"total\": 2}}\n");
  r = test::run_app("cloud_impact", {"--classifier", t.clf, "--cr", t.cr, "--data", t.data, "--split", "all", "--out",
                                     out, "--threads", "1", "--examples", "0"});
  CHECK_MESSAGE(r.exit_code == 0, r.output);
  CHECK(test::read_file(out + "/report.md").find("EuroSAT test accuracy") == std::string::npos);
  // One that scored this file at another epoch (the checkpoint replaced since): not reported, said.
  spit(t.dir + "/test.json", "{\"checkpoint\": \"clf.safetensors\", \"epoch\": 2, \"accuracy\": "
                             "{\"correct\": 1, \"total\": 2}}\n");
  r = test::run_app("cloud_impact", {"--classifier", t.clf, "--cr", t.cr, "--data", t.data, "--split", "all", "--out",
                                     out, "--threads", "1", "--examples", "0"});
  CHECK_MESSAGE(r.exit_code == 0, r.output);
  CHECK_MESSAGE(r.output.find("scored clf.safetensors of epoch 2, but " + t.clf + " is of epoch 3") !=
                    std::string::npos,
                r.output);
  CHECK(test::read_file(out + "/report.md").find("EuroSAT test accuracy") == std::string::npos);
}

TEST_CASE("cloud_impact app: wrong checkpoint, empty split and missing options are clear errors") {
  TinyRun t;
  auto r = test::run_app("cloud_impact", {"--classifier", t.clf, "--cr", t.clf, "--data", t.data, "--split", "all",
                                          "--out", t.dir + "/a"});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("not a DSen2-CR model") != std::string::npos);
  r = test::run_app("cloud_impact", {"--classifier", t.cr, "--cr", t.cr, "--data", t.data, "--out", t.dir + "/b"});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("not a land-cover classifier") != std::string::npos);
  r = test::run_app("cloud_impact", {"--classifier", t.clf, "--cr", t.cr, "--data", t.data, "--split", "test",
                                     "--out", t.dir + "/c"});
  CHECK(r.exit_code == 1);
  CHECK(r.output.find("no complete triplets in split 'test'") != std::string::npos);
  r = test::run_app("cloud_impact", {"--classifier", t.clf, "--data", t.data, "--out", t.dir + "/d"});
  CHECK(r.exit_code == 2);
  CHECK(r.output.find("--cr FILE") != std::string::npos);
  // Tiles too small for an exact margin (radius 4 for one block; --tile 16 gives 3): said, and the run goes on.
  r = test::run_app("cloud_impact", {"--classifier", t.clf, "--cr", t.cr, "--data", t.data, "--split", "all",
                                     "--out", t.dir + "/small_tiles", "--tile", "16", "--limit", "1", "--threads", "1"});
  CHECK_MESSAGE(r.exit_code == 0, r.output);
  CHECK_MESSAGE(r.output.find("--tile 16 cuts tiles with a margin of 3 px, below the model's receptive radius 4") !=
                    std::string::npos,
                r.output);
  r = test::run_app("cloud_impact", {"--help"});
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("--classify") != std::string::npos);
}
