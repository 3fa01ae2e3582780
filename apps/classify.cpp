// classify: land-cover class of Sentinel-2 GeoTIFFs with a trained classifier.
//
//   classify --weights best.safetensors --out predictions.csv a.tif dir/ ...
// Folders are searched recursively for .tif/.tiff files (sorted). One CSV row
// per image: path, class_index, class_name, then one probability per class
// (columns p_<ClassName>). The checkpoint's input_norm is applied (DN ->
// clip/10000 -> standardise), as in training.
//
// Band order (apps/common/band_order.h): each file is read in the order it says it holds (GDAL band
// descriptions, or its EuroSAT / SEN12MS-CR layout; --bands overrides) and moved into the order the
// classifier takes (its checkpoint's "bands" metadata; --model-bands for a file without it).
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "apps/common/accuracy.h"
#include "apps/common/band_order.h"
#include "apps/common/device.h"
#include "apps/common/progress.h"
#include "data/eurosat.h"
#include "engine/autograd.h"
#include "models/model_io.h"

using namespace nimbus;
namespace fs = std::filesystem;

namespace {

bool is_tif(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return e == ".tif" || e == ".tiff";
}

std::vector<std::string> collect_inputs(const std::vector<std::string>& args) {
  std::vector<std::string> files;
  for (const std::string& a : args) {
    std::error_code ec;
    if (fs::is_directory(a, ec)) {
      std::vector<std::string> found;
      for (const auto& e : fs::recursive_directory_iterator(a))
        if (e.is_regular_file() && is_tif(e.path())) found.push_back(e.path().string());
      std::sort(found.begin(), found.end());
      NIMBUS_CHECK(!found.empty(), a, ": folder has no .tif files");
      files.insert(files.end(), found.begin(), found.end());
    } else {
      NIMBUS_CHECK(fs::is_regular_file(a, ec), a, ": no such file or folder");
      files.push_back(a);
    }
  }
  return files;
}

std::string class_name(int k, int classes) {
  if (classes == data::kEuroSatClasses) return data::eurosat_class_names()[size_t(k)];
  return "class" + std::to_string(k);
}

int run(int argc, char** argv) {
  cli::Parser p("classify",
                "Classify Sentinel-2 GeoTIFFs (13 bands, DN) with a trained land-cover classifier; one CSV row per "
                "image with the predicted class and every class probability.");
  p.add_string("weights", "", "classifier checkpoint (train_resnet's, or a torchvision-named safetensors)", "FILE");
  p.add_string("out", "", "output CSV (written atomically)", "FILE");
  apps::add_bands_option(p);
  apps::add_model_bands_option(p);
  p.add_int("batch-size", 32, "images per forward pass (consecutive images of the same size are batched)").range(1, 65536);
  p.add_positional("inputs", "GeoTIFF files, or folders searched recursively for .tif files");
  cli::add_common_options(p);
  apps::add_precision_option(p);
  p.parse_or_exit(argc, argv);
  const std::string weights = p.get_string("weights"), out = p.get_string("out");
  const int64_t batch = p.get_int("batch-size");
  if (weights.empty() || out.empty()) throw cli::UsageError("--weights FILE and --out FILE are required");
  if (p.positionals().empty()) throw cli::UsageError("give at least one GeoTIFF or folder");
  if (batch < 1) throw cli::UsageError("--batch-size must be >= 1");
  const cli::CommonOptions common = apps::setup_device(p);
  const std::vector<std::string> files = collect_inputs(p.positionals());
  {
    std::vector<std::pair<std::string, std::string>> inputs = {{"--weights", weights}};
    for (const std::string& f : files) inputs.emplace_back("an input image", f);
    cli::refuse_output_over_input("--out", p.get_string("out"), inputs);
  }

  models::LoadedModel lm = models::load_model(weights);
  NIMBUS_CHECK(lm.model.classifier, weights, ": holds ", lm.model.config.str(), ", not a land-cover classifier");
  models::Classifier& clf = *lm.model.classifier;
  if (!lm.has_input_norm)
    std::fprintf(stderr, "classify: %s has no input_norm.mean/std: using plain reflectance (mean 0, std 1)\n",
                 weights.c_str());
  clf.to(common.device);
  clf.eval();
  const int C = clf.config().in_channels, K = clf.config().classes;
  const data::BandList model_bands = apps::classifier_bands(lm, weights, p.get_string("model-bands"), "classify");
  apps::FileBands file_bands(p.get_string("bands"), "classify");

  std::vector<std::string> header = {"path", "class_index", "class_name"};
  for (int k = 0; k < K; ++k) header.push_back("p_" + class_name(k, K));
  CsvTable csv(header);  // RFC 4180: a path with a comma is quoted
  NoGradGuard ng;
  Progress bar("classify", int64_t(files.size()), stderr, Progress::Mode::Auto, "img");
  for (size_t i0 = 0; i0 < files.size();) {
    // One batch: consecutive images of the first one's size.
    std::vector<float> dn;
    std::vector<std::string> names;
    int H = 0, W = 0;
    size_t i = i0;
    for (; i < files.size() && names.size() < size_t(batch); ++i) {
      data::Raster r = data::read_geotiff(files[i]);
      data::check_finite(r, files[i]);  // a NaN pixel would make this image's probabilities NaN
      if (names.empty()) H = r.height, W = r.width;
      if (r.height != H || r.width != W) break;  // starts the next batch
      const data::BandList bands = file_bands.of(files[i], r.band_names, r.bands);
      const std::vector<float> x = data::reorder_bands(std::move(r.data), size_t(r.height) * size_t(r.width), bands,
                                                       model_bands, files[i]);
      dn.insert(dn.end(), x.begin(), x.end());
      names.push_back(files[i]);
    }
    const int64_t n = int64_t(names.size());
    const std::vector<float> prob =
        clf.probabilities(Tensor::from_vector({n, C, H, W}, dn).to(common.device)).to_vector();
    for (int64_t b = 0; b < n; ++b) {
      const float* row = prob.data() + b * K;
      const int best = int(std::max_element(row, row + K) - row);
      std::vector<std::string> cells = {names[size_t(b)], std::to_string(best), class_name(best, K)};
      for (int k = 0; k < K; ++k) cells.push_back(fmt_num(double(row[k]), 9));
      csv.add_row(std::move(cells));
    }
    i0 = i0 + size_t(n);
    bar.update(int64_t(i0));
  }
  bar.finish();
  csv.write(out);
  std::printf("classify: %zu images, bands read as %s; the classifier takes %s -> %s\n", files.size(),
              file_bands.summary().c_str(), data::bands_name(model_bands).c_str(), out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return nimbus::cli::guarded_main("classify", run, argc, argv); }
