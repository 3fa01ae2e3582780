// sentinel2.cpp: band lists and the band order of a file (see sentinel2.h).
#include "data/sentinel2.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "data/eurosat.h"
#include "kernels/common/error.h"

namespace nimbus::data {

BandList sen12ms_bands() {
  BandList b(kS2Bands);
  for (int i = 0; i < kS2Bands; ++i) b[size_t(i)] = i;
  return b;
}

BandList eurosat_bands() { return BandList(kEuroSatFileOrder.begin(), kEuroSatFileOrder.end()); }

namespace {

std::string upper_trimmed(std::string s) {
  s.erase(std::remove_if(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); }), s.end());
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::toupper(c)); });
  return s;
}

// Canonical index of a band name ("B8A", "b08a" and "B08A" alike), or -1.
int band_index(const std::string& name) {
  std::string n = upper_trimmed(name);
  if (n.size() >= 3 && n[0] == 'B' && n[1] == '0') n.erase(1, 1);  // B01..B09, B08A: Sentinel-2 product names
  for (int i = 0; i < kS2Bands; ++i)
    if (n == kS2BandNames[size_t(i)]) return i;
  return -1;
}

}  // namespace

BandList parse_bands(const std::string& spec, const std::string& what) {
  const std::string s = upper_trimmed(spec);
  if (s == "SEN12MS") return sen12ms_bands();
  if (s == "EUROSAT") return eurosat_bands();
  BandList out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t end = std::min(s.find(',', start), s.size());
    const std::string name = s.substr(start, end - start);
    const int i = band_index(name);
    NIMBUS_CHECK(i >= 0, what, ": '", name, "' is not a Sentinel-2 band (B1..B12, B8A), in bands '", spec,
                 "' (or give sen12ms or eurosat)");
    NIMBUS_CHECK(std::find(out.begin(), out.end(), i) == out.end(), what, ": band ", kS2BandNames[size_t(i)],
                 " appears twice in '", spec, "'");
    out.push_back(i);
    start = end + 1;
  }
  return out;
}

std::string bands_csv(const BandList& bands) {
  std::string s;
  for (int b : bands) {
    NIMBUS_CHECK(b >= 0 && b < kS2Bands, "bands_csv: canonical index ", b, " is not a Sentinel-2 band");
    if (!s.empty()) s += ',';
    s += kS2BandNames[size_t(b)];
  }
  return s;
}

std::string bands_name(const BandList& bands) {
  if (bands == sen12ms_bands()) return "sen12ms";
  if (bands == eurosat_bands()) return "eurosat";
  return bands_csv(bands);
}

std::optional<BandList> s2_bands_of(const std::string& path, const std::vector<std::string>& band_descriptions,
                                    int bands) {
  if (!band_descriptions.empty() && band_index(band_descriptions[0]) >= 0) {
    BandList out;
    for (const std::string& d : band_descriptions) {
      const int i = band_index(d);
      NIMBUS_CHECK(i >= 0 && std::find(out.begin(), out.end(), i) == out.end(), path,
                   ": its band descriptions name Sentinel-2 bands but '", d, "' is not one, or repeats one");
      out.push_back(i);
    }
    NIMBUS_CHECK(int(out.size()) == bands, path, ": ", out.size(), " band descriptions for ", bands, " bands");
    return out;
  }
  const std::filesystem::path p(path);
  const std::string name = p.filename().string(), folder = p.parent_path().filename().string();
  const auto& classes = eurosat_class_names();
  const bool class_folder = std::find(classes.begin(), classes.end(), folder) != classes.end();
  if (class_folder && name.starts_with(folder + "_")) return eurosat_bands();
  // EuroSAT's own file name, <Class>_<n>.tif, out of any class folder (tiles gathered in one folder; in
  // another class's folder the two disagree and say nothing).
  const std::string stem = p.stem().string(), ext = p.extension().string();
  for (const std::string& c : classes)
    if (!class_folder && (ext == ".tif" || ext == ".tiff") && stem.size() > c.size() + 1 && stem.starts_with(c + "_") &&
        std::all_of(stem.begin() + ptrdiff_t(c.size() + 1), stem.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
      return eurosat_bands();
  if (name.starts_with("ROIs") && name.find("_s2_") != std::string::npos)  // also _s2_cloudy_
    return sen12ms_bands();
  if (folder == "s2" || folder == "s2_cloudy" || folder == "s2_cloudfree") return sen12ms_bands();
  return std::nullopt;
}

void check_declared_bands(const std::string& path, const std::vector<std::string>& band_descriptions,
                          const BandList& read_as, const std::string& how) {
  if (band_descriptions.empty() || band_index(band_descriptions[0]) < 0) return;  // says nothing
  const std::optional<BandList> said = s2_bands_of(path, band_descriptions, int(read_as.size()));
  NIMBUS_CHECK(said == read_as, path, ": its band descriptions say ", bands_csv(*said), ", but it is read as ", how,
               " (", bands_csv(read_as), ")");
}

void check_bands_cover(const BandList& from, const BandList& to, const std::string& what) {
  for (int band : to)
    NIMBUS_CHECK(std::find(from.begin(), from.end(), band) != from.end(), what, ": has no band ",
                 kS2BandNames[size_t(band)], " (it holds ", bands_csv(from), "), which the model needs");
}

std::vector<float> reorder_bands(std::vector<float> chw, size_t hw, const BandList& from, const BandList& to,
                                 const std::string& what) {
  NIMBUS_CHECK(chw.size() == from.size() * hw, what, ": ", chw.size(), " values for ", from.size(), " bands of ", hw);
  if (from == to) return chw;
  check_bands_cover(from, to, what);
  std::vector<float> out(to.size() * hw);
  for (size_t j = 0; j < to.size(); ++j) {
    const auto it = std::find(from.begin(), from.end(), to[j]);
    std::copy_n(chw.begin() + ptrdiff_t(size_t(it - from.begin()) * hw), hw, out.begin() + ptrdiff_t(j * hw));
  }
  return out;
}

}  // namespace nimbus::data
