// band_order.cpp: the band order of an app's input files and of its classifier (band_order.h).
#include "apps/common/band_order.h"

#include <cstdio>

#include "kernels/common/error.h"

namespace nimbus::apps {

void add_bands_option(cli::Parser& p) {
  p.add_string("bands", "auto",
               "band order of the input files: auto = what each file says (GDAL band descriptions, or the EuroSAT "
               "MS / SEN12MS-CR layout of its path; SEN12MS order with a notice when it says nothing), eurosat = "
               "B1..B8,B9..B12,B8A (EuroSAT MS files), sen12ms = B1..B8,B8A,B9..B12 (SEN12MS-CR), or band names "
               "separated by commas",
               "ORDER");
}

void add_model_bands_option(cli::Parser& p) {
  p.add_string("model-bands", "auto",
               "band order the classifier takes: auto = its checkpoint's \"bands\" metadata (SEN12MS order, with a "
               "notice, when it has none, e.g. a torchvision-named file); eurosat, sen12ms or band names otherwise",
               "ORDER");
}

void FileBands::count(const std::string& what) {
  for (auto& [k, n] : counts_)
    if (k == what) {
      ++n;
      return;
    }
  counts_.emplace_back(what, 1);
}

data::BandList FileBands::of(const std::string& path, const std::vector<std::string>& names, int bands) {
  data::BandList b;
  std::string source;
  if (option_ != "auto") {
    b = data::parse_bands(option_, "--bands");
    source = "--bands";
  } else if (std::optional<data::BandList> said = data::s2_bands_of(path, names, bands)) {
    b = *said;
    source = names.empty() ? "dataset layout" : "band descriptions";
  } else {
    b = data::sen12ms_bands();
    source = "assumed";
    std::fprintf(stderr,
                 "%s: %s has no band descriptions and is in neither the EuroSAT nor the SEN12MS-CR layout: read as "
                 "SEN12MS order (B1..B8, B8A, B9..B12); --bands says otherwise\n",
                 app_.c_str(), path.c_str());
  }
  NIMBUS_CHECK(int(b.size()) == bands, path, ": has ", bands, " bands but its band order (", source, ") names ",
               b.size(), ": ", data::bands_csv(b));
  count(data::bands_name(b) + " (" + source + ")");
  return b;
}

std::string FileBands::summary() const {
  std::string s;
  for (const auto& [k, n] : counts_) s += (s.empty() ? "" : ", ") + std::to_string(n) + " " + k;
  return s;
}

data::BandList classifier_bands(const models::LoadedModel& lm, const std::string& path, const std::string& option,
                                const std::string& app) {
  NIMBUS_CHECK(lm.model.classifier, path, ": not a classifier");
  const int channels = lm.model.classifier->config().in_channels;
  std::optional<data::BandList> from_file;
  if (auto it = lm.metadata.find(kBandsKey); it != lm.metadata.end())
    from_file = data::parse_bands(it->second, path + ": metadata \"bands\"");
  else if (auto old = lm.metadata.find("band_order"); old != lm.metadata.end() && old->second == "sen12ms")
    from_file = data::sen12ms_bands();  // nimbus checkpoints written before the "bands" key
  data::BandList b;
  if (option != "auto") {
    b = data::parse_bands(option, "--model-bands");
    NIMBUS_CHECK(!from_file || *from_file == b, path, ": its metadata says it takes bands ", data::bands_csv(*from_file),
                 " but --model-bands says ", data::bands_csv(b));
  } else if (from_file) {
    b = *from_file;
  } else {
    b = data::sen12ms_bands();
    std::fprintf(stderr,
                 "%s: %s does not say which bands it takes (no \"bands\" metadata): taken as SEN12MS order "
                 "(B1..B8, B8A, B9..B12); --model-bands says otherwise\n",
                 app.c_str(), path.c_str());
  }
  NIMBUS_CHECK(int(b.size()) == channels, path, ": takes ", channels, " input channels but its bands are ",
               data::bands_csv(b), " (", b.size(), ")");
  return b;
}

}  // namespace nimbus::apps
