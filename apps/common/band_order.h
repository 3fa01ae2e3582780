// band_order.h: which Sentinel-2 bands, in which order, an app's input files hold and its model
// takes; the names, the two orders and the reordering are in data/sentinel2.h.
//
// A file's order: --bands when given, else what the file says (its GDAL band descriptions, or the
// EuroSAT / SEN12MS-CR layout its path follows: data::s2_bands_of). A file that says nothing is
// taken as SEN12MS order, with a notice naming it; never decided from the image size.
// A classifier's order: its checkpoint's "bands" metadata (train_resnet writes it). A file without
// the key (a plain torchvision-named safetensors) is taken as SEN12MS order with a one-line notice,
// and --model-bands declares otherwise.
#pragma once
#include <string>
#include <vector>

#include "apps/common/cli.h"
#include "data/sentinel2.h"
#include "models/model_io.h"

namespace nimbus::apps {

// The checkpoint metadata key and its value for a band list.
inline constexpr const char* kBandsKey = "bands";

// --bands (input files) and, for apps that read a classifier, --model-bands.
void add_bands_option(cli::Parser& p);
void add_model_bands_option(cli::Parser& p);

// Resolves each input file's band order for one run and remembers how (for the summary line).
class FileBands {
 public:
  FileBands(const std::string& option, std::string app) : option_(option), app_(std::move(app)) {}
  // The bands of `path`, a raster of `bands` bands with GDAL descriptions `names` (maybe empty).
  // Error naming the file when the order has another band count than the file.
  data::BandList of(const std::string& path, const std::vector<std::string>& names, int bands);
  // "20 eurosat (EuroSAT layout), 1 sen12ms (band descriptions)": how the run's files were read.
  std::string summary() const;

 private:
  std::string option_, app_;
  std::vector<std::pair<std::string, int>> counts_;  // "<order> (<source>)" -> files
  void count(const std::string& what);
};

// The bands a classifier checkpoint takes (see above); `option` is --model-bands ("auto" = the
// checkpoint's). Error when the option contradicts the checkpoint's key, or the list's length is
// not the classifier's input channels.
data::BandList classifier_bands(const models::LoadedModel& lm, const std::string& path, const std::string& option,
                                const std::string& app);

}  // namespace nimbus::apps
