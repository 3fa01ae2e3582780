// test_train_resnet_test_split.cpp: train_resnet's split from files (--splits: the standard
// eurosat-{train,val,test}.txt lists of bare names, or an earlier run's split_*.txt) and its score on
// the test split at the end (test.json), checked against classify's predictions for the same tiles
// from the same checkpoint: two programs, one answer.
#include <doctest/doctest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>

#include "apps/common/accuracy.h"
#include "data/eurosat.h"
#include "data/synthetic.h"
#include "engine/io/json.h"
#include "models/model_io.h"
#include "tests/apps/app_runner.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;
namespace fs = std::filesystem;

namespace {

// 6 synthetic EuroSAT tiles per class; the standard lists' form: tiles 0-3 train, 4 val, 5 test.
struct StandardSplit {
  std::string data, lists;
  std::vector<std::string> test_paths;  // the test tiles' files
  std::vector<int> test_labels;
};
StandardSplit make_standard_split(const TempDir& d) {
  StandardSplit s{d / "eurosat", d / "lists", {}, {}};
  for (int c = 0; c < 10; ++c)
    for (int i = 0; i < 6; ++i) data::write_eurosat_tile(s.data, 42, c, i);
  fs::create_directories(s.lists);
  data::EuroSat ds(s.data);
  std::map<std::string, std::string> text;
  std::map<int, int> seen;
  for (const data::EuroSatItem& it : ds.items()) {
    const int k = seen[it.label]++;
    const std::string part = k < 4 ? "train" : k == 4 ? "val" : "test";
    text[part] += fs::path(it.rel).stem().string() + ".jpg\n";  // the RGB release's name, as the lists write it
    if (part == "test") {
      s.test_paths.push_back(it.path);
      s.test_labels.push_back(it.label);
    }
  }
  for (const auto& [part, t] : text) std::ofstream(s.lists + "/eurosat-" + part + ".txt") << t;
  return s;
}

std::vector<std::string> args(const std::string& data, const std::string& out) {
  return {"--data",   data, "--out",    out, "--epochs", "2", "--batch-size", "8", "--block",   "basic", "--blocks",
          "1,1,1,1", "--width", "4", "--threads", "1", "--workers", "1"};
}
std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& more) {
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

// A member of a JSON object (the test fails, naming it, when it is not there).
const json::Value& at(const json::Value& v, const std::string& key) {
  const json::Value* m = v.get(key);
  REQUIRE_MESSAGE(m != nullptr, "no '" << key << "'");
  return *m;
}

void spit_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream f(path);
  for (const std::string& l : lines) f << l << "\n";
}

// Lines of a file, in order.
std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> v;
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

}  // namespace

TEST_CASE("train_resnet --splits: trains on the standard lists and scores the test split as classify does") {
  TempDir d("resnet_splits");
  const StandardSplit s = make_standard_split(d);
  AppResult r = run_app("train_resnet", with(args(s.data, d / "run"), {"--splits", s.lists}));
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  CHECK_MESSAGE(r.output.find("40 train / 10 val tiles") != std::string::npos, r.output);
  // The run's own split files name the listed tiles, in the folder form.
  const std::vector<std::string> test_rel = lines_of(d / "run/split_test.txt");
  REQUIRE(test_rel.size() == 10);
  for (size_t i = 0; i < test_rel.size(); ++i) CHECK(s.test_paths[i].ends_with("/" + test_rel[i]));
  CHECK(lines_of(d / "run/split_train.txt").size() == 40);

  // test.json: best.safetensors's score on the 10 test tiles.
  const json::Value t = json::parse(read_file(d / "run/test.json"));
  CHECK(at(t, "checkpoint").s == "best.safetensors");
  CHECK(at(t, "tiles").num == 10);
  const int64_t correct = int64_t(at(at(t, "accuracy"), "correct").num);
  CHECK(at(at(t, "accuracy"), "total").num == 10);
  CHECK(at(at(t, "accuracy"), "accuracy").num == doctest::Approx(double(correct) / 10));
  CHECK(at(t, "epoch").num == double(models::load_model(d / "run/best.safetensors").epoch));
  CHECK_MESSAGE(r.output.find("test accuracy") != std::string::npos, r.output);

  // classify, from the same checkpoint, on the same tiles: the same correct count, and the confusion
  // matrix's rows are the labels, its columns classify's classes.
  std::vector<std::string> cargs = {"--weights", d / "run/best.safetensors", "--out", d / "p.csv", "--threads", "1"};
  cargs.insert(cargs.end(), s.test_paths.begin(), s.test_paths.end());
  AppResult c = run_app("classify", cargs);
  REQUIRE_MESSAGE(c.exit_code == 0, c.output);
  const std::vector<std::string> rows = lines_of(d / "p.csv");
  REQUIRE(rows.size() == 11);
  std::map<std::string, int> predicted;
  for (size_t i = 1; i < rows.size(); ++i) {
    const std::vector<std::string> f = csv_fields(rows[i]);
    predicted[f.at(0)] = std::stoi(f.at(1));
  }
  ConfusionMatrix want(10);
  for (size_t i = 0; i < s.test_paths.size(); ++i) want.add(s.test_labels[i], predicted.at(s.test_paths[i]));
  CHECK(want.accuracy().k == correct);
  const json::Value& m = at(at(t, "confusion"), "counts");
  REQUIRE(m.arr.size() == 10);
  for (int a = 0; a < 10; ++a)
    for (int b = 0; b < 10; ++b) CHECK(m.arr[size_t(a)].arr.at(size_t(b)).num == double(want.count(a, b)));
  // classify scores it itself from the same split file (--eurosat-split, --metrics): the same matrix.
  AppResult scored = run_app("classify", {"--weights", d / "run/best.safetensors", "--out", d / "q.csv",
                                          "--eurosat-split", s.lists + "/eurosat-test.txt", "--metrics",
                                          d / "metrics.json", "--threads", "1", s.data});
  REQUIRE_MESSAGE(scored.exit_code == 0, scored.output);
  CHECK_MESSAGE(scored.output.find("10 scored of the 10 images in EuroSAT's class folders (0 without data), of 10 "
                                   "inputs") != std::string::npos,
                scored.output);
  const json::Value cm = json::parse(read_file(d / "metrics.json"));
  CHECK(at(at(cm, "accuracy"), "correct").num == double(correct));
  const json::Value& counts = at(at(cm, "confusion"), "counts");
  REQUIRE(counts.arr.size() == 10);
  for (int a = 0; a < 10; ++a)
    for (int b = 0; b < 10; ++b) CHECK(counts.arr[size_t(a)].arr.at(size_t(b)).num == double(want.count(a, b)));
  CHECK(lines_of(d / "q.csv").size() == 11);  // the 10 listed tiles, not the 60 under the root

  // Resumed with the stratified split instead: another run, refused before any work.
  AppResult other = run_app("train_resnet", with(args(s.data, d / "run"), {"--resume", "--epochs", "3"}));
  CHECK(other.exit_code != 0);
  CHECK_MESSAGE(other.output.find("split") != std::string::npos, other.output);
  // Resumed with its own split files copied elsewhere: the same tiles, so the same run.
  fs::create_directories(d / "copy");
  for (const char* f : {"split_train.txt", "split_val.txt", "split_test.txt"})
    fs::copy_file(d / (std::string("run/") + f), d / (std::string("copy/") + f));
  AppResult same = run_app("train_resnet", with(args(s.data, d / "run"), {"--resume", "--splits", d / "copy"}));
  CHECK_MESSAGE(same.exit_code == 0, same.output);
  CHECK(fs::exists(d / "run/test.json"));
  // Resumed for more epochs and killed before the end: the earlier score is gone with the run it scored
  // (best.safetensors may have changed since), not left to be read as the new checkpoint's.
  AppResult killed = run_app("train_resnet", with(args(s.data, d / "run"), {"--resume", "--splits", d / "copy",
                                                                            "--epochs", "3",
                                                                            "--debug-sigkill-after-epoch", "3"}));
  CHECK(killed.signal == SIGKILL);
  CHECK_FALSE(fs::exists(d / "run/test.json"));
}

TEST_CASE("train_resnet --splits: contradicting options, the run's own folder and a bad list are refused") {
  TempDir d("resnet_splits_bad");
  const StandardSplit s = make_standard_split(d);
  AppResult both = run_app("train_resnet", with(args(s.data, d / "a"), {"--splits", s.lists, "--val-fraction", "0.2"}));
  CHECK(both.exit_code == 2);
  CHECK_MESSAGE(both.output.find("--train-fraction and --val-fraction do not apply") != std::string::npos, both.output);
  // A run's split files given back as --splits of the same --out would be rewritten while read.
  fs::create_directories(d / "b");
  for (const char* part : {"train", "val", "test"})
    fs::copy_file(s.lists + "/eurosat-" + part + ".txt", d / ("b/split_" + std::string(part) + ".txt"));
  AppResult over = run_app("train_resnet", with(args(s.data, d / "b"), {"--splits", d / "b"}));
  CHECK(over.exit_code == 2);
  CHECK_MESSAGE(over.output.find("--splits") != std::string::npos, over.output);
  // A listed tile that is not there: the list and its line named, nothing written.
  std::ofstream(s.lists + "/eurosat-val.txt", std::ios::app) << "Forest_999.jpg\n";
  AppResult missing = run_app("train_resnet", with(args(s.data, d / "c"), {"--splits", s.lists}));
  CHECK(missing.exit_code == 1);
  CHECK_MESSAGE(missing.output.find("eurosat-val.txt line 11") != std::string::npos, missing.output);
  CHECK_FALSE(fs::exists(d / "c/last.safetensors"));
}

TEST_CASE("classify --eurosat-split and --metrics: what they take and what they refuse") {
  TempDir d("classify_split");
  const StandardSplit s = make_standard_split(d);
  Rng rng(2);
  models::ResNetConfig rc;
  rc.block = models::BlockType::Basic;
  rc.blocks = {1, 1, 1, 1};
  rc.width = 4;
  models::save_model(d / "clf.safetensors", models::build_model(models::ModelConfig::of(rc), rng));
  // Two inputs with a split file; metrics for images outside EuroSAT's class folders: usage errors.
  AppResult two = run_app("classify", {"--weights", d / "clf.safetensors", "--out", d / "a.csv", "--eurosat-split",
                                       s.lists + "/eurosat-test.txt", s.data, s.data});
  CHECK(two.exit_code == 2);
  CHECK_MESSAGE(two.output.find("one input, a EuroSAT MS root") != std::string::npos, two.output);
  fs::create_directories(d / "flat");
  fs::copy_file(s.test_paths[0], d / "flat/tile.tif");
  AppResult none = run_app("classify", {"--weights", d / "clf.safetensors", "--out", d / "b.csv", "--metrics",
                                        d / "m.json", d / "flat"});
  CHECK(none.exit_code == 2);
  CHECK_MESSAGE(none.output.find("nothing to score") != std::string::npos, none.output);
  CHECK_FALSE(fs::exists(d / "b.csv"));
  // Without --metrics, a folder outside EuroSAT's layout is classified and not scored.
  AppResult plain = run_app("classify", {"--weights", d / "clf.safetensors", "--out", d / "c.csv", d / "flat"});
  REQUIRE_MESSAGE(plain.exit_code == 0, plain.output);
  CHECK(plain.output.find("accuracy") == std::string::npos);
  // A folder and a folder inside it: each tile classified and scored once.
  AppResult nested = run_app("classify", {"--weights", d / "clf.safetensors", "--out", d / "n.csv", "--metrics",
                                          d / "n.json", "--threads", "1", s.data, s.data + "/Forest"});
  REQUIRE_MESSAGE(nested.exit_code == 0, nested.output);
  CHECK_MESSAGE(nested.output.find("6 inputs named more than once are classified once") != std::string::npos,
                nested.output);
  CHECK(lines_of(d / "n.csv").size() == 61);
  const json::Value n = json::parse(read_file(d / "n.json"));
  CHECK(at(at(n, "accuracy"), "total").num == 60);
  CHECK(at(n, "inputs").num == 60);
  // A tile of a class folder under another name: labelled by its folder, as train_resnet labels it.
  fs::rename(s.test_paths[0], fs::path(s.test_paths[0]).parent_path() / "renamed.tif");
  spit_lines(d / "one.txt", {fs::path(s.test_paths[0]).parent_path().filename().string() + "/renamed.tif"});
  AppResult renamed = run_app("classify", {"--weights", d / "clf.safetensors", "--out", d / "r.csv", "--metrics",
                                           d / "r.json", "--eurosat-split", d / "one.txt", "--threads", "1", s.data});
  REQUIRE_MESSAGE(renamed.exit_code == 0, renamed.output);
  CHECK(at(at(json::parse(read_file(d / "r.json")), "accuracy"), "total").num == 1);
  // --metrics over a map: refused before any work.
  data::Raster big;
  big.width = big.height = 130, big.bands = 13;
  big.data.assign(size_t(13) * 130 * 130, 1200.f);
  data::write_geotiff(d / "big.tif", big, data::WriteOptions{});
  AppResult over_map = run_app("classify", {"--weights", d / "clf.safetensors", "--out", d / "m.csv", "--map-dir",
                                            d / "maps", "--metrics", d / "maps/big_classes.tif", d / "big.tif",
                                            s.data + "/Forest"});
  CHECK(over_map.exit_code == 2);
  CHECK_MESSAGE(over_map.output.find("two outputs cannot share one file") != std::string::npos, over_map.output);
}

TEST_CASE("train_resnet: without test tiles no test.json, and an earlier run's is removed") {
  TempDir d("resnet_no_test");
  const StandardSplit s = make_standard_split(d);
  fs::create_directories(d / "run");
  std::ofstream(d / "run/test.json") << "{\"from\": \"an earlier run\"}\n";
  AppResult r = run_app("train_resnet",
                        with(args(s.data, d / "run"), {"--train-fraction", "0.8", "--val-fraction", "0.2", "--overwrite"}));
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  CHECK_MESSAGE(r.output.find("no test tiles: the test split is not scored") != std::string::npos, r.output);
  CHECK_FALSE(fs::exists(d / "run/test.json"));
}

#ifdef NIMBUS_MPIEXEC
TEST_CASE("data parallel: rank 0 alone scores the test split, once, from the checkpoint it wrote") {
  TempDir d("dp_resnet_test_split");
  const StandardSplit s = make_standard_split(d);  // 40 training tiles: 5 global batches of 8
  std::vector<std::string> a = with(args(s.data, d / "run"), {"--splits", s.lists});
  a[7] = "4";  // --batch-size, per rank
  AppResult r = run_app_mpi(2, "train_resnet", a);
  REQUIRE_MESSAGE(r.exit_code == 0, r.output);
  const std::string marker = "train_resnet: test accuracy ";
  const size_t first = r.output.find(marker);
  REQUIRE_MESSAGE(first != std::string::npos, r.output);
  CHECK(r.output.find(marker, first + 1) == std::string::npos);
  const json::Value t = json::parse(read_file(d / "run/test.json"));
  CHECK(at(t, "tiles").num == 10);  // every test tile, not one rank's share
  CHECK(at(at(t, "accuracy"), "total").num == 10);
}
#endif
