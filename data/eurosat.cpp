// eurosat.cpp: EuroSAT MS folder index, splits and samples; see eurosat.h.
#include "data/eurosat.h"
#include "data/sentinel2.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "kernels/common/error.h"
#include "engine/io/safetensors.h"  // write_file_atomic
#include "engine/random.h"

namespace nimbus::data {

namespace fs = std::filesystem;

const std::array<std::string, kEuroSatClasses>& eurosat_class_names() {
  static const std::array<std::string, kEuroSatClasses> names = {
      "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
      "Pasture",    "PermanentCrop", "Residential", "River", "SeaLake"};  // alphabetical = class index
  return names;
}

namespace {
int class_index(const std::string& name) {
  auto& n = eurosat_class_names();
  auto it = std::find(n.begin(), n.end(), name);
  return it == n.end() ? -1 : int(it - n.begin());
}
std::string all_names() {
  std::string s;
  for (auto& n : eurosat_class_names()) s += (s.empty() ? "" : ", ") + n;
  return s;
}
// Where under `dir` the class folders are, when the root given is a folder above them (the
// distributed zips unpack to EuroSAT_MS/ or ds/images/remote_sensing/otherDatasets/sentinel_2/tif/):
// a hint for the error, "" when none is found within a few levels.
std::string class_folders_under(const fs::path& dir) {
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    if (it.depth() > 6) {
      it.disable_recursion_pending();
      continue;
    }
    if (it->is_directory(ec) && it->path().filename() == eurosat_class_names()[0])
      return str(" (the class folders are in ", it->path().parent_path().string(), ": give that folder as the root)");
  }
  return "";
}
bool is_tif(const fs::path& p) {
  auto e = p.extension().string();
  return e == ".tif" || e == ".tiff";
}
}  // namespace

namespace {
// The tile's header, checked to be 13-band uint16.
TiffInfo checked_info(const std::string& path, const RasterPack* pack = nullptr) {
  TiffInfo info = read_info_via(pack, path);
  NIMBUS_CHECK(info.bands == kS2Bands && info.type == SampleType::UInt16, "eurosat: ", path,
               ": a EuroSAT MS tile must be 13-band uint16 but this is ", info.bands, "-band ",
               sample_type_name(info.type));
  return info;
}
}  // namespace

int eurosat_label_of(const std::string& path) {
  const fs::path p(path);
  const std::string folder = p.parent_path().filename().string();
  const int label = class_index(folder);
  return label >= 0 && p.filename().string().starts_with(folder + "_") ? label : -1;
}

Raster load_eurosat_tile(const std::string& path) {
  checked_info(path);
  return read_geotiff(path);
}

EuroSat::EuroSat(const std::string& root, bool check_files) : root_(root) {
  NIMBUS_CHECK(fs::is_directory(root), "eurosat: ", root, " is not a directory");
  std::vector<std::vector<EuroSatItem>> by_class(kEuroSatClasses);
  std::vector<bool> seen(kEuroSatClasses, false);
  for (auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name.starts_with(".")) continue;  // READMEs, split files, hidden folders
    const int label = class_index(name);
    NIMBUS_CHECK(label >= 0, "eurosat: ", e.path().string(), ": unknown class folder '", name, "' (expected ",
                 all_names(), ")", class_folders_under(e.path()));
    seen[size_t(label)] = true;
    for (auto& f : fs::directory_iterator(e.path())) {
      if (!f.is_regular_file() || !is_tif(f.path())) continue;
      const std::string fname = f.path().filename().string();
      // A file named after another class ("River_3.tif" in Forest/) is mislabelled.
      for (int c = 0; c < kEuroSatClasses; ++c)
        NIMBUS_CHECK(c == label || !fname.starts_with(eurosat_class_names()[size_t(c)] + "_"), "eurosat: ",
                     f.path().string(), ": a ", eurosat_class_names()[size_t(c)], " file in the ", name, " folder");
      if (check_files) checked_info(f.path().string());
      by_class[size_t(label)].push_back({f.path().string(), name + "/" + fname, label});
    }
    NIMBUS_CHECK(!by_class[size_t(label)].empty(), "eurosat: ", e.path().string(), ": class folder has no .tif files");
  }
  for (int c = 0; c < kEuroSatClasses; ++c)
    NIMBUS_CHECK(seen[size_t(c)], "eurosat: ", root, ": class folder ", eurosat_class_names()[size_t(c)],
                 " is missing");
  for (auto& v : by_class) {
    std::sort(v.begin(), v.end(), [](const EuroSatItem& a, const EuroSatItem& b) { return a.rel < b.rel; });
    items_.insert(items_.end(), v.begin(), v.end());
  }
}

EuroSatSplit EuroSat::stratified_split(uint64_t seed, double train_frac, double val_frac) const {
  NIMBUS_CHECK(train_frac >= 0 && val_frac >= 0 && train_frac + val_frac <= 1 + 1e-9, "eurosat: split fractions ",
               train_frac, " (train) and ", val_frac, " (val) must be >= 0 and sum to at most 1");
  std::vector<std::vector<size_t>> by_class(kEuroSatClasses);
  for (size_t i = 0; i < items_.size(); ++i) by_class[size_t(items_[i].label)].push_back(i);
  Rng rng(seed);
  EuroSatSplit s;
  for (auto& idx : by_class) {
    for (size_t i = idx.size(); i > 1; --i) std::swap(idx[i - 1], idx[rng.below(i)]);
    const size_t n = idx.size();
    const size_t nt = std::min(n, size_t(std::llround(train_frac * double(n))));
    const size_t nv = std::min(n - nt, size_t(std::llround(val_frac * double(n))));
    s.train.insert(s.train.end(), idx.begin(), idx.begin() + long(nt));
    s.val.insert(s.val.end(), idx.begin() + long(nt), idx.begin() + long(nt + nv));
    s.test.insert(s.test.end(), idx.begin() + long(nt + nv), idx.end());
  }
  for (auto* v : {&s.train, &s.val, &s.test}) std::sort(v->begin(), v->end());
  return s;
}

// A line is a tile's path under the root ("Forest/Forest_3.tif", what write_split_file writes) or a
// bare file name ("Forest_3.jpg"): the split lists of Neumann et al. 2019 that torchgeo and most
// EuroSAT benchmarks use (eurosat-{train,val,test}.txt) name the RGB release's .jpg files, so a
// bare name is matched by its stem, whatever its extension (.jpg, .tif, .tiff).
std::vector<size_t> EuroSat::read_split_file(const std::string& path) const {
  std::ifstream in(path);
  NIMBUS_CHECK(in.good(), "eurosat: cannot read split file ", path);
  std::map<std::string, size_t> by_rel, by_stem;
  std::map<std::string, std::string> stem_clash;  // a stem that two class folders hold: its second path
  for (size_t i = 0; i < items_.size(); ++i) {
    by_rel[items_[i].rel] = i;
    const std::string stem = fs::path(items_[i].rel).stem().string();
    if (!by_stem.emplace(stem, i).second) stem_clash.emplace(stem, items_[i].rel);
  }
  std::vector<size_t> out;
  std::vector<bool> taken(items_.size(), false);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    size_t a = line.find_first_not_of(" \t");
    if (a == std::string::npos || line[a] == '#') continue;
    line = line.substr(a);
    const std::string where = str("eurosat: ", path, " line ", lineno, ": '", line, "'");
    size_t index = 0;
    if (line.find('/') != std::string::npos) {
      auto it = by_rel.find(line);
      NIMBUS_CHECK(it != by_rel.end(), where, " is not a tile under ", root_);
      index = it->second;
    } else {
      const fs::path name(line);
      std::string ext = name.extension().string();
      for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));  // "Forest_3.JPG" too
      NIMBUS_CHECK(ext == ".jpg" || ext == ".tif" || ext == ".tiff", where,
                   " is neither <Class>/<file>.tif nor a file name ending in .tif, .tiff or .jpg");
      const std::string stem = name.stem().string();
      auto it = by_stem.find(stem);
      NIMBUS_CHECK(it != by_stem.end(), where, ": no tile named ", stem, ".tif under ", root_);
      auto clash = stem_clash.find(stem);
      NIMBUS_CHECK(clash == stem_clash.end(), where, " is ambiguous: both ", items_[it->second].rel, " and ",
                   clash->second, " are under ", root_, " (write the class folder: <Class>/<file>.tif)");
      index = it->second;
    }
    NIMBUS_CHECK(!taken[index], where, " is listed twice");
    taken[index] = true;
    out.push_back(index);
  }
  return out;
}

// Written atomically and checked to the end (write_file_atomic: temporary, fsync, rename): an
// ofstream's close went unchecked, so a full disk left an empty split file and no error.
void EuroSat::write_split_file(const std::string& path, const std::vector<size_t>& indices) const {
  std::string text;
  for (size_t i : indices) {
    NIMBUS_CHECK(i < items_.size(), "eurosat: index ", i, " out of ", items_.size());
    text += items_[i].rel + "\n";
  }
  write_file_atomic(path, text);
}

EuroSatSplit EuroSat::read_split_folder(const std::string& dir, std::vector<std::string>* files) const {
  NIMBUS_CHECK(fs::is_directory(dir), "eurosat: split folder ", dir, " is not a folder");
  const std::array<std::string, 3> parts = {"train", "val", "test"};
  const auto set_of = [&](const std::string& prefix) {
    std::vector<std::string> paths;
    for (const std::string& part : parts) paths.push_back((fs::path(dir) / (prefix + part + ".txt")).string());
    return paths;
  };
  const std::vector<std::string> standard = set_of("eurosat-"), ours = set_of("split_");
  const auto count_there = [](const std::vector<std::string>& paths) {
    return std::count_if(paths.begin(), paths.end(), [](const std::string& f) { return fs::exists(f); });
  };
  const long n_standard = count_there(standard), n_ours = count_there(ours);
  NIMBUS_CHECK(n_standard == 0 || n_ours == 0, "eurosat: ", dir, " holds both eurosat-*.txt and split_*.txt ",
               "split files: give a folder with one set");
  NIMBUS_CHECK(n_standard + n_ours > 0, "eurosat: ", dir, " holds no split files (eurosat-train.txt, eurosat-val.txt, ",
               "eurosat-test.txt, or an earlier run's split_train.txt, split_val.txt, split_test.txt)");
  const std::vector<std::string>& chosen = n_standard > 0 ? standard : ours;
  for (const std::string& f : chosen)
    NIMBUS_CHECK(fs::exists(f), "eurosat: ", f, " is missing (the split needs its three files, ",
                 fs::path(chosen[0]).filename().string(), ", ", fs::path(chosen[1]).filename().string(), " and ",
                 fs::path(chosen[2]).filename().string(), "; an empty file for an empty part)");
  EuroSatSplit s;
  std::vector<int> part_of(items_.size(), -1);
  std::vector<size_t>* out[3] = {&s.train, &s.val, &s.test};
  for (int k = 0; k < 3; ++k) {
    *out[k] = read_split_file(chosen[size_t(k)]);
    for (size_t i : *out[k]) {
      NIMBUS_CHECK(part_of[i] < 0, "eurosat: ", items_[i].rel, " is listed in both ", chosen[size_t(part_of[i])],
                   " and ", chosen[size_t(k)]);
      part_of[i] = k;
    }
    std::sort(out[k]->begin(), out[k]->end());
  }
  if (files) *files = chosen;
  return s;
}

SampleFn eurosat_sample_fn(const EuroSat& ds, std::vector<size_t> indices, EuroSatSampleOptions options) {
  for (size_t i : indices) NIMBUS_CHECK(i < ds.size(), "eurosat: index ", i, " out of ", ds.size());
  auto items = std::make_shared<const std::vector<EuroSatItem>>(ds.items());
  auto idx = std::make_shared<const std::vector<size_t>>(std::move(indices));
  return [items, idx, options](size_t k, Rng& rng) {
    NIMBUS_CHECK(k < idx->size(), "eurosat: sample ", k, " of ", idx->size());
    const EuroSatItem& item = (*items)[(*idx)[k]];
    const TiffInfo info = checked_info(item.path, options.pack.get());
    if (!options.file_bands.empty())
      check_declared_bands(item.path, info.band_names, options.file_bands, options.file_bands_from);
    NIMBUS_CHECK(options.augment.crop > 0 || !options.augment.flip_rotate || info.width == info.height, "eurosat: ",
                 item.path, ": a ", info.width, "x", info.height, " tile cannot be turned a quarter (the training ",
                 "flips and quarter turns need square tiles)");
    const AugmentDraw d = draw_augment(rng, info.height, info.width, options.augment);
    Raster r = read_window_via(options.pack.get(), item.path, crop_window(d, info.height, info.width, options.augment));
    if (!options.flip_rotate_on_device) flip_rotate(r, d.flip, d.rot);
    if (options.transform) options.transform(r.data, r.height, r.width);
    Sample s;
    s.path = item.path;
    s.label = item.label;
    s.add("image", Shape{kS2Bands, r.height, r.width}, std::move(r.data));
    if (options.flip_rotate_on_device) s.add("augment", Shape{}, {float(4 * d.flip + d.rot)});
    return s;
  };
}

}  // namespace nimbus::data
