// test_keras_import.cpp: scripts/import_keras_dsen2cr.py, the published DSen2-CR weights (Keras HDF5)
// as a nimbus model file.
//
// The fixtures (tests/fixtures/keras/, written by tests/torch/gen_keras_dsen2cr.py with h5py in Keras
// 2.2.4's layout: Keras itself is not in Debian) are two small DSen2-CRs, a whole-model checkpoint with
// SAR (B=5, F=4: conv2d_10 sorts before conv2d_2), the same as Keras's multi_gpu_model saves it (the
// network one layer of another), and a save_weights file without SAR (its layer list
// split in two, as Keras splits a long one), and the Keras network's float64 outputs on one input. The
// converted file, loaded as the apps load a model, must give those outputs: a kernel transposed wrongly,
// a layer taken out of order or a bias misplaced moves them by far more than float32's rounding. Then
// the refusals: each defective fixture exits 1 naming the file and what is wrong, writing nothing.
// Needs Debian's python3-h5py and python3-numpy (scripts/install_deps.sh --tests).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "models/model_io.h"
#include "tests/apps/app_runner.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;
namespace fs = std::filesystem;

namespace {

const fs::path kKerasRepoRoot = fs::path(NIMBUS_FIXTURES).parent_path().parent_path();
const std::string kKerasImporter = (kKerasRepoRoot / "scripts/import_keras_dsen2cr.py").string();
const fs::path kKerasFixtures = fs::path(NIMBUS_FIXTURES) / "keras";
// Debian's python, where apt installs h5py (a python3 earlier on the PATH may be another one).
const std::string kDebianPython = "/usr/bin/python3";

void require_debian_h5py() {
  const AppResult r = run_program(kDebianPython, {"-c", "import h5py, numpy"});
  REQUIRE_MESSAGE(r.exit_code == 0, "/usr/bin/python3 cannot import h5py and numpy: scripts/install_deps.sh --tests "
                                    "installs python3-h5py and python3-numpy\n" << r.output);
}

AppResult run_keras_import(const std::vector<std::string>& args) {
  std::vector<std::string> all = {kKerasImporter};
  all.insert(all.end(), args.begin(), args.end());
  return run_program(kDebianPython, all);
}

const Tensor& keras_expected(const SafetensorsFile& f, const std::string& name) {
  const Tensor* t = f.find(name);
  REQUIRE_MESSAGE(t != nullptr, "expected.safetensors has no ", name);
  return *t;
}

std::vector<std::string> keras_folder_listing(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("import_keras_dsen2cr.py: the converted model computes what the Keras network computes") {
  require_debian_h5py();
  TempDir d("keras_import");
  const SafetensorsFile expected = load_safetensors((kKerasFixtures / "expected.safetensors").string());
  const Tensor &s2 = keras_expected(expected, "s2"), &s1 = keras_expected(expected, "s1");
  struct Case {
    const char* file;
    const char* config;
    bool sar;
    const char* out;
  };
  for (const Case& c : {Case{"dsen2cr_B5_F4_sar.hdf5", "dsen2cr(B=5, F=4, SAR)", true, "out_sar"},
                        Case{"dsen2cr_B5_F4_sar_multigpu.hdf5", "dsen2cr(B=5, F=4, SAR)", true, "out_sar"},
                        Case{"dsen2cr_B1_F4_nosar_weights.h5", "dsen2cr(B=1, F=4, no SAR)", false, "out_nosar"}}) {
    const std::string file = c.file;
    CAPTURE(file);
    const std::string out = d / (file + ".safetensors");
    const AppResult r = run_keras_import({(kKerasFixtures / c.file).string(), out, "--loss", "carl"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.output);
    CHECK_MESSAGE(r.output.find(c.config) != std::string::npos, r.output);
    models::LoadedModel lm = models::load_model(out);
    REQUIRE(lm.model.dsen2cr);
    CHECK(lm.from_pytorch);
    CHECK(lm.model.config.str() == c.config);  // B, F and SAR inferred from the shapes
    // What cloud_impact reads from a train_dsen2cr checkpoint, so that its report names the paper's row.
    CHECK(lm.metadata["run.loss"] == "carl --lambda 1");
    CHECK(lm.metadata["run.cloud-threshold"] == "0.2");
    CHECK(lm.metadata["converted_from"] == c.file);
    NoGradGuard ng;
    const Tensor got = lm.model.dsen2cr->forward(s2, c.sar ? s1 : Tensor());
    // float32 through 4 or 12 convolutions of at most 135 terms each, values of order 1: the largest
    // difference is about 1e-6 (some exceed 1e-6 without SAR); a kernel transposed (kh <-> kw) moves
    // outputs by more than 2.
    check_close(got, keras_expected(expected, c.out), 1e-5, 1e-5, c.out);
  }
  // --loss l1 records the plain loss; without --loss the file says none (cloud_impact: "a loss its
  // file does not name").
  const std::string nosar = (kKerasFixtures / "dsen2cr_B1_F4_nosar_weights.h5").string();
  const AppResult l1 = run_keras_import({nosar, d / "l1.safetensors", "--loss", "l1"});
  REQUIRE_MESSAGE(l1.exit_code == 0, l1.output);
  models::LoadedModel lm1 = models::load_model(d / "l1.safetensors");
  CHECK(lm1.metadata["run.loss"] == "l1");
  CHECK(lm1.metadata.count("run.cloud-threshold") == 0);
  const AppResult plain = run_keras_import({nosar, d / "plain.safetensors"});
  REQUIRE_MESSAGE(plain.exit_code == 0, plain.output);
  CHECK(models::load_model(d / "plain.safetensors").metadata.count("run.loss") == 0);
}

TEST_CASE("import_keras_dsen2cr.py: what is not a DSen2-CR Keras checkpoint is refused, naming the file, writing nothing") {
  require_debian_h5py();
  TempDir d("keras_refusals");
  struct Bad {
    const char* file;
    const char* why;
  };
  const std::string not_hdf5 = d / "not.h5";
  std::ofstream(not_hdf5) << "a text file, not HDF5\n";
  for (const Bad& b : {Bad{"bad_theano.h5", "saved by Keras's theano backend"},
                       Bad{"bad_nan.h5", "weight \"conv2d_2/kernel:0\" of layer \"conv2d_2\" holds NaN or infinity"},
                       Bad{"bad_tail.h5", "convolution \"conv2d_4\" maps 4 -> 3 channels where DSen2-CR"},
                       Bad{"bad_missing_conv.h5", "3 convolutions: DSen2-CR has 2B + 2"},
                       Bad{"bad_no_version.h5", "saved by Keras 1; Keras 1 laid its weights out otherwise"},
                       Bad{"bad_dense.h5", "layer \"dense_1\": kernel (4, 4) and bias (4,) are not a 3x3 convolution's"},
                       Bad{"expected.safetensors", "not an HDF5 file"}}) {
    const std::string file = b.file;
    CAPTURE(file);
    const std::string in = (kKerasFixtures / b.file).string();
    const AppResult r = run_keras_import({in, d / "out.safetensors"});
    CHECK(r.exit_code == 1);
    CHECK_MESSAGE(r.output.find(in + ": " + b.why) != std::string::npos, r.output);
  }
  const AppResult text = run_keras_import({not_hdf5, d / "out.safetensors"});
  CHECK(text.exit_code == 1);
  CHECK_MESSAGE(text.output.find(not_hdf5 + ": not an HDF5 file") != std::string::npos, text.output);
  // No output: every refusal comes before the temporary file is made.
  CHECK(keras_folder_listing(d.path) == std::vector<std::string>{"not.h5"});
  // A write that fails (OUT a folder: the rename cannot replace it): exit 1, the temporary file removed.
  fs::create_directory(d / "a_folder.safetensors");
  const AppResult onto = run_keras_import({(kKerasFixtures / "dsen2cr_B1_F4_nosar_weights.h5").string(),
                                           d / "a_folder.safetensors", "--overwrite"});
  CHECK(onto.exit_code == 1);
  CHECK_MESSAGE(onto.output.find("a_folder.safetensors: cannot write it") != std::string::npos, onto.output);
  CHECK(keras_folder_listing(d.path) == std::vector<std::string>{"a_folder.safetensors", "not.h5"});
  fs::remove(d / "a_folder.safetensors");

  // An existing output is replaced only with --overwrite; the input never.
  const std::string good = (kKerasFixtures / "dsen2cr_B1_F4_nosar_weights.h5").string(), out = d / "model.safetensors";
  std::ofstream(out) << "someone's file";
  const AppResult kept = run_keras_import({good, out});
  CHECK(kept.exit_code == 2);
  CHECK_MESSAGE(kept.output.find(out + ": exists; pass --overwrite to replace it") != std::string::npos, kept.output);
  CHECK(keras_folder_listing(d.path) == std::vector<std::string>{"model.safetensors", "not.h5"});
  CHECK(fs::file_size(out) == std::string("someone's file").size());
  const AppResult replaced = run_keras_import({good, out, "--overwrite"});
  REQUIRE_MESSAGE(replaced.exit_code == 0, replaced.output);
  CHECK(models::load_model(out).model.dsen2cr);
  fs::copy_file(good, d / "copy.h5");
  const AppResult self = run_keras_import({d / "copy.h5", d / "copy.h5", "--overwrite"});
  CHECK(self.exit_code == 2);
  CHECK_MESSAGE(self.output.find("is the input; choose another output") != std::string::npos, self.output);
  CHECK(fs::file_size(d / "copy.h5") == fs::file_size(good));
  // Without h5py (python -S: no site packages, where Debian's python3-h5py lives): how to install it.
  const AppResult no_h5py = run_program(kDebianPython, {"-S", kKerasImporter, good, d / "m.safetensors"});
  CHECK(no_h5py.exit_code == 1);
  CHECK_MESSAGE(no_h5py.output.find("scripts/install_deps.sh --keras installs python3-h5py") != std::string::npos,
                no_h5py.output);
  const AppResult absent = run_keras_import({d / "no_such.h5", d / "m.safetensors"});
  CHECK(absent.exit_code == 2);
  CHECK_MESSAGE(absent.output.find(d / "no_such.h5" + ": no such file") != std::string::npos, absent.output);
  const AppResult nowhere = run_keras_import({good, d / "no_such_folder/m.safetensors"});
  CHECK(nowhere.exit_code == 2);
  CHECK_MESSAGE(nowhere.output.find("its folder does not exist") != std::string::npos, nowhere.output);
}
