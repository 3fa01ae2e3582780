// sen12mscr.cpp: SEN12MS-CR triplet discovery (nested folders or CSV list),
// the exact-ROI benchmark split, and triplet -> sample; see sen12mscr.h.
#include "data/sen12mscr.h"
#include "data/sentinel2.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string_view>
#include <tuple>

#include "data/normalize.h"
#include "engine/io/input_files.h"
#include "kernels/common/error.h"

namespace nimbus::data {

namespace fs = std::filesystem;

std::string Sen12mscrTriplet::name() const { return str("ROIs", seed, "_", season, "_", roi, "_p", patch); }

const char* split_name(Split s) { return s == Split::Train ? "train" : s == Split::Val ? "val" : "test"; }

Split benchmark_split(const std::string& season, int roi) {
  // UnCRtainTS SEN12MSCR lists (reference §5.2), as (season, ROI) pairs.
  static const std::map<std::string, std::vector<int>> test = {
      {"spring", {106, 123, 140, 31, 44}}, {"summer", {119, 73}}, {"fall", {139}}, {"winter", {108, 63}}};
  static const std::map<std::string, std::vector<int>> val = {
      {"winter", {22, 107, 130, 84}}, {"summer", {19, 80, 127, 17}}, {"fall", {65}}, {"spring", {17}}};
  auto in = [&](const std::map<std::string, std::vector<int>>& lists) {
    auto it = lists.find(season);
    return it != lists.end() && std::find(it->second.begin(), it->second.end(), roi) != it->second.end();
  };
  return in(test) ? Split::Test : in(val) ? Split::Val : Split::Train;
}

std::vector<Sen12mscrTriplet> Sen12mscrIndex::split(Split s) const {
  std::vector<Sen12mscrTriplet> out;
  for (auto& t : triplets)
    if (benchmark_split(t.season, t.roi) == s) out.push_back(t);
  return out;
}

namespace {

constexpr std::array<const char*, 4> kModalities = {"s1", "s2", "s2_cloudy", "lc"};
enum { kS1 = 0, kS2 = 1, kCloudy = 2, kLc = 3 };

int modality_index(std::string_view m) {
  for (size_t i = 0; i < kModalities.size(); ++i)
    if (m == kModalities[i]) return int(i);
  return -1;
}

const char* season_of_seed(int seed) {
  switch (seed) {
    case 1158: return "spring";
    case 1868: return "summer";
    case 1970: return "fall";
    case 2017: return "winter";
  }
  return nullptr;
}

bool all_digits(std::string_view s) {
  return !s.empty() && s.size() < 9 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}
int to_int(std::string_view s) { return std::stoi(std::string(s)); }

struct Prefix {
  int seed = 0;
  std::string season, modality;  // modality may be empty (flattened names)
};

// "ROIs1158_spring[_<modality>]" with a known seed/season pair.
std::optional<Prefix> parse_prefix(std::string_view s) {
  if (s.size() < 10 || s.substr(0, 4) != "ROIs" || !all_digits(s.substr(4, 4)) || s[8] != '_') return std::nullopt;
  Prefix p;
  p.seed = to_int(s.substr(4, 4));
  std::string_view rest = s.substr(9);
  size_t us = rest.find('_');
  p.season = std::string(rest.substr(0, us));
  if (us != std::string_view::npos) p.modality = std::string(rest.substr(us + 1));
  const char* want = season_of_seed(p.seed);
  if (!want || p.season != want) return std::nullopt;
  return p;
}

struct NameParts {
  Prefix prefix;
  int roi = 0, patch = 0;
};

// "ROIs1158_spring_s1_106_p30.tif" or the flattened "ROIs1158_spring_106_p30.tif".
std::optional<NameParts> parse_patch_name(std::string_view name) {
  if (!name.ends_with(".tif")) return std::nullopt;
  name.remove_suffix(4);
  size_t p = name.rfind("_p");
  if (p == std::string_view::npos || !all_digits(name.substr(p + 2))) return std::nullopt;
  std::string_view head = name.substr(0, p);
  size_t r = head.rfind('_');
  if (r == std::string_view::npos || !all_digits(head.substr(r + 1))) return std::nullopt;
  auto prefix = parse_prefix(head.substr(0, r));
  if (!prefix) return std::nullopt;
  return NameParts{*prefix, to_int(head.substr(r + 1)), to_int(name.substr(p + 2))};
}

using Key = std::tuple<int, int, int>;  // (seed, roi, patch)
using Members = std::array<std::string, 4>;

std::vector<fs::path> sorted_entries(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec))
    out.push_back(it->path());
  NIMBUS_CHECK(!ec, "sen12mscr: cannot list ", dir.string(), ": ", ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

// Adds every patch of the modality folders under root (only `only` when >= 0).
void scan_root(const fs::path& root, int only, std::map<Key, Members>& found) {
  std::error_code ec;  // the error_code forms: a name too long for the system is "not there", not a throw
  NIMBUS_CHECK(fs::is_directory(root, ec), "sen12mscr: ", root.string(), " is not a directory");
  for (auto& top : sorted_entries(root)) {
    const std::string tname = top.filename().string();
    if (!fs::is_directory(top, ec) || !tname.starts_with("ROIs")) continue;  // archives, READMEs, ...
    auto pre = parse_prefix(tname);
    // SEN12MS itself (where its land cover comes from) unpacks a season into one folder without a
    // modality, ROIs1158_spring/{lc,s1,s2}_<roi>/ROIs1158_spring_lc_<roi>_p<n>.tif (as torchgeo and the
    // SEN12MS toolbox read it): its land cover is taken from there; its s1/s2 are SEN12MS-CR's own
    // folders' patches again, and are left out.
    const bool sen12ms_season = pre && pre->modality.empty();
    const int m = sen12ms_season ? int(kLc) : pre ? modality_index(pre->modality) : -1;
    NIMBUS_CHECK(m >= 0, "sen12mscr: ", top.string(),
                 ": unknown folder (expected ROIs<1158|1868|1970|2017>_<season>_<s1|s2|s2_cloudy|lc>, or SEN12MS's "
                 "ROIs<seed>_<season>)");
    if (only >= 0 && m != only) continue;
    const std::string sub_prefix = std::string(kModalities[size_t(m)]) + "_";
    for (auto& sub : sorted_entries(top)) {
      const std::string sname = sub.filename().string();
      if (!fs::is_directory(sub, ec)) continue;
      // SEN12MS's own s1_<roi> and s2_<roi> (an s2_cloudy_<roi> here is SEN12MS-CR's, misplaced: named below).
      if (sen12ms_season && (sname.starts_with("s1_") || sname.starts_with("s2_")) &&
          all_digits(std::string_view(sname).substr(3)))
        continue;
      NIMBUS_CHECK(sname.starts_with(sub_prefix) && all_digits(std::string_view(sname).substr(sub_prefix.size())),
                   "sen12mscr: ", sub.string(), ": folder should be named ", sub_prefix, "<roi>",
                   sen12ms_season ? " (or s1_<roi>, s2_<roi>: left out)" : "");
      const int roi = to_int(std::string_view(sname).substr(sub_prefix.size()));
      for (auto& file : sorted_entries(sub)) {
        const std::string fname = file.filename().string();
        if (!fname.ends_with(".tif")) continue;  // e.g. GDAL .aux.xml sidecars
        auto parts = parse_patch_name(fname);
        const std::string want_modality = sen12ms_season ? "lc" : pre->modality;
        NIMBUS_CHECK(parts && parts->prefix.seed == pre->seed && parts->prefix.modality == want_modality &&
                         parts->roi == roi,
                     "sen12mscr: ", file.string(), ": file name does not match its folder (expected ", tname, "_",
                     sen12ms_season ? "lc_" : "", roi, "_p<n>.tif)");
        found[Key{pre->seed, roi, parts->patch}][size_t(m)] = file.string();
      }
    }
  }
}

// Complete triplets from the members found, counting (and warning about) the rest.
// count_empty: a key with no member at all is incomplete (a CSV line whose files
// are all gone) rather than a land-cover file without a triplet (folder scan).
Sen12mscrIndex assemble(const std::map<Key, Members>& found, const std::string& where, bool count_empty) {
  Sen12mscrIndex idx;
  std::string first_incomplete;
  for (auto& [key, m] : found) {
    const bool has[3] = {!m[kS1].empty(), !m[kS2].empty(), !m[kCloudy].empty()};
    if (!has[0] && !has[1] && !has[2] && !count_empty) continue;
    Sen12mscrTriplet t;
    t.seed = std::get<0>(key);
    t.season = season_of_seed(t.seed);
    t.roi = std::get<1>(key);
    t.patch = std::get<2>(key);
    if (!(has[0] && has[1] && has[2])) {
      ++idx.incomplete;
      idx.missing_s1 += !has[0];
      idx.missing_s2 += !has[1];
      idx.missing_s2_cloudy += !has[2];
      if (first_incomplete.empty()) first_incomplete = t.name();
      continue;
    }
    t.s1 = m[kS1];
    t.s2 = m[kS2];
    t.s2_cloudy = m[kCloudy];
    t.lc = m[kLc];
    idx.with_lc += !t.lc.empty();
    idx.triplets.push_back(std::move(t));
  }
  if (idx.incomplete) {
    idx.warning = str("sen12mscr: ", where, ": skipped ", idx.incomplete, " incomplete triplets (", idx.missing_s1,
                      " without s1, ", idx.missing_s2, " without s2, ", idx.missing_s2_cloudy,
                      " without s2_cloudy; first: ", first_incomplete, ")");
    std::fprintf(stderr, "warning: %s\n", idx.warning.c_str());
  }
  return idx;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

}  // namespace

Sen12mscrIndex scan_sen12mscr(const std::string& root, const std::string& lc_root) {
  std::map<Key, Members> found;
  scan_root(root, -1, found);
  if (!lc_root.empty() && fs::path(lc_root) != fs::path(root)) scan_root(lc_root, kLc, found);
  Sen12mscrIndex idx = assemble(found, root, false);
  NIMBUS_CHECK(!idx.triplets.empty() || idx.incomplete, "sen12mscr: ", root,
               ": no SEN12MS-CR patches found (expected ROIsXXXX_<season>_s1/s1_<roi>/... folders; files in another "
               "layout, DSen2-CR's flattened s1/, s2_cloudFree/, s2_cloudy/ say, can be listed in a CSV of "
               "s1,s2,s2_cloudy paths a line)");
  return idx;
}

Sen12mscrIndex read_sen12mscr_list(const std::string& csv_path) {
  std::ifstream in(csv_path);
  NIMBUS_CHECK(in.good(), "sen12mscr: cannot read list file ", csv_path);
  note_input(csv_path);
  const fs::path base = fs::path(csv_path).parent_path();
  std::map<Key, Members> found;
  std::string line;
  int lineno = 0;
  bool seen_data = false;
  while (std::getline(in, line)) {
    ++lineno;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> cols;
    size_t start = 0;
    for (;;) {
      size_t comma = line.find(',', start);
      cols.push_back(trim(line.substr(start, comma == std::string::npos ? std::string::npos : comma - start)));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (!seen_data && (cols[0] == "s1" || cols[0] == "S1")) continue;  // header
    seen_data = true;
    NIMBUS_CHECK(cols.size() == 3 || cols.size() == 4, "sen12mscr: ", csv_path, " line ", lineno, ": expected ",
                 "s1,s2,s2_cloudy[,lc] but found ", cols.size(), " fields");
    std::optional<NameParts> ref;
    Members m;
    for (size_t c = 0; c < cols.size(); ++c) {
      if (cols[c].empty()) continue;
      fs::path p = cols[c];
      if (p.is_relative()) p = base / p;
      auto parts = parse_patch_name(p.filename().string());
      NIMBUS_CHECK(parts || c != kS1, "sen12mscr: ", csv_path, " line ", lineno, ": cannot tell season, ROI and ",
                   "patch from the file name ", p.filename().string());
      if (parts) {
        NIMBUS_CHECK(parts->prefix.modality.empty() || parts->prefix.modality == kModalities[c], "sen12mscr: ",
                     csv_path, " line ", lineno, ": column ", kModalities[c], " holds a ", parts->prefix.modality,
                     " file (", p.filename().string(), ")");
        if (!ref) ref = parts;
        NIMBUS_CHECK(parts->prefix.seed == ref->prefix.seed && parts->roi == ref->roi && parts->patch == ref->patch,
                     "sen12mscr: ", csv_path, " line ", lineno, ": ", p.filename().string(),
                     " is not the same season/ROI/patch as ", cols[0]);
      }
      std::error_code ec;  // a name too long for the system is a missing file, not a throw (found by fuzzing)
      if (fs::exists(p, ec)) m[c] = p.string();
    }
    NIMBUS_CHECK(ref, "sen12mscr: ", csv_path, " line ", lineno, ": names no file (its fields are empty)");
    Key key{ref->prefix.seed, ref->roi, ref->patch};
    NIMBUS_CHECK(!found.count(key), "sen12mscr: ", csv_path, " line ", lineno, ": triplet ROIs", ref->prefix.seed,
                 "_", ref->prefix.season, "_", ref->roi, "_p", ref->patch, " is listed twice");
    found[key] = m;
  }
  Sen12mscrIndex idx = assemble(found, csv_path, true);
  NIMBUS_CHECK(!idx.triplets.empty() || idx.incomplete, "sen12mscr: ", csv_path, ": lists no triplets");
  return idx;
}

void check_s1_band_order(const std::string& path, const std::vector<std::string>& d) {
  const auto is = [](const std::string& s, const char* want) {
    return s.size() == 2 && std::toupper(static_cast<unsigned char>(s[0])) == want[0] &&
           std::toupper(static_cast<unsigned char>(s[1])) == want[1];
  };
  NIMBUS_CHECK(!(d.size() == 2 && is(d[0], "VH") && is(d[1], "VV")), "sen12mscr: ", path,
               ": its band descriptions say VH,VV, but S1 is read as VV, VH (SEN12MS-CR's order); write the bands "
               "as VV, VH");
}

void check_s1_in_db(const std::string& path, const float* values, size_t n) {
  size_t nonzero = 0, positive = 0;
  for (size_t i = 0; i < n; ++i) {
    const float v = values[i];
    if (!std::isfinite(v) || v == 0.f) continue;  // NaN holes and zero fill say nothing about the scale
    ++nonzero;
    positive += v > 0.f;
  }
  if (nonzero < kS1ScaleMinValues) return;
  char share[16];
  std::snprintf(share, sizeof share, "%.1f", 100.0 * double(positive) / double(nonzero));  // 90.3 is not "90"
  NIMBUS_CHECK(double(positive) <= kS1MaxPositiveShare * double(nonzero), "sen12mscr: ", path, ": ", share,
               "% of its S1 values are above 0, so they are "
               "not backscatter in dB (SEN12MS-CR's S1: 10 log10 of the linear power, mostly -30..0 dB) but linear "
               "power or amplitude, which the model's clip to [-25, 0] and [-32.5, 0] dB would flatten; write them as "
               "10 log10 of the power");
}

std::pair<int, int> check_triplet_files(const Sen12mscrTriplet& t, const RasterPack* pack) {
  struct Part {
    const std::string* path;
    int bands;
    SampleType type;
    const char* what;
  };
  const Part parts[3] = {{&t.s1, kS1Bands, SampleType::Float32, "S1 (VV, VH dB)"},
                         {&t.s2, kS2Bands, SampleType::UInt16, "cloud-free S2"},
                         {&t.s2_cloudy, kS2Bands, SampleType::UInt16, "cloudy S2"}};
  int H = 0, W = 0;
  for (const Part& p : parts) {
    TiffInfo info = read_info_via(pack, *p.path);
    NIMBUS_CHECK(info.bands == p.bands && info.type == p.type, "sen12mscr: ", *p.path, ": ", p.what, " must be ",
                 p.bands, "-band ", sample_type_name(p.type), " but is ", info.bands, "-band ",
                 sample_type_name(info.type));
    if (p.bands == kS2Bands)  // the model takes SEN12MS-CR's order and nothing reorders
      check_declared_bands(*p.path, info.band_names, sen12ms_bands(), "SEN12MS-CR's band order");
    else
      check_s1_band_order(*p.path, info.band_names);
    if (H == 0) H = info.height, W = info.width;
    NIMBUS_CHECK(info.height == H && info.width == W, "sen12mscr: ", *p.path, " is ", info.width, "x", info.height,
                 " but ", t.s1, " is ", W, "x", H);
  }
  return {H, W};
}

Sample load_triplet(const Sen12mscrTriplet& t, Rng& rng, const TripletSampleOptions& o) {
  const auto [H, W] = check_triplet_files(t, o.pack.get());
  NIMBUS_CHECK(o.augment.crop <= std::min(H, W), "sen12mscr: ", t.s2_cloudy, ": a ", o.augment.crop, "x",
               o.augment.crop, " crop does not fit its ", W, "x", H, " pixels");
  NIMBUS_CHECK(o.augment.crop > 0 || !o.augment.flip_rotate || H == W, "sen12mscr: ", t.s2_cloudy, ": a ", W, "x", H,
               " image cannot be turned a quarter (flips and quarter turns need square images or a crop)");
  const AugmentDraw d = draw_augment(rng, H, W, o.augment);
  const Window win = crop_window(d, H, W, o.augment);
  const bool on_device = o.flip_rotate_on_device;  // pixels left as read; the code travels with the batch
  const int code = 4 * d.flip + d.rot;              // kernels/common/dihedral.h's numbering
  NIMBUS_CHECK(!on_device || win.width == win.height, "sen12mscr: ", t.s2_cloudy, ": flips on the device need a ",
               "square crop, not ", win.width, "x", win.height);
  Raster r[3];
  const std::string* paths[3] = {&t.s1, &t.s2, &t.s2_cloudy};
  for (int i = 0; i < 3; ++i) {
    r[i] = read_window_via(o.pack.get(), *paths[i], win);
    if (i == 0) {  // S1 float32; the S2 integers have no NaN
      check_s1_in_db(t.s1, r[i].data.data(), r[i].data.size());
      fill_s1_nan(r[i].data.data(), size_t(r[i].width) * size_t(r[i].height));
    }
    if (!on_device) flip_rotate(r[i], d.flip, d.rot);
  }
  Raster& sar = r[0];
  Raster& target = r[1];
  Raster& cloudy = r[2];
  const int h = cloudy.height, w = cloudy.width;
  const size_t hw = size_t(h) * w;
  Sample s;
  s.path = t.s2_cloudy;
  std::vector<float> mask;
  if (o.mask_fn) {
    // On raw DN, after the geometry, before clipping (reference order). With the flips left to the
    // device the detector examines the turned crop in place, and its mask is moved back.
    mask = o.mask_fn(cloudy, on_device ? code : 0);
    NIMBUS_CHECK(mask.size() == hw, "sen12mscr: ", t.s2_cloudy, ": mask function returned ", mask.size(),
                 " values for a ", w, "x", h, " crop");
    if (on_device && code != 0) {
      std::vector<float> as_read(hw);
      undo_flip_rotate(mask.data(), as_read.data(), 1, h, w, d.flip, d.rot);
      mask = std::move(as_read);
    }
  }
  std::vector<float> raw;
  if (o.keep_raw_cloudy) raw = cloudy.data;
  normalize_s2(cloudy.data.data(), cloudy.data.size());
  normalize_s2(target.data.data(), target.data.size());
  normalize_s1(sar.data.data(), hw);
  s.add("cloudy", Shape{kS2Bands, h, w}, std::move(cloudy.data));
  s.add("target", Shape{kS2Bands, h, w}, std::move(target.data));
  s.add("sar", Shape{kS1Bands, h, w}, std::move(sar.data));
  if (o.keep_raw_cloudy) s.add("cloudy_raw", Shape{kS2Bands, h, w}, std::move(raw));
  if (o.mask_fn) s.add("mask", Shape{1, h, w}, std::move(mask));
  if (o.with_lc) {
    NIMBUS_CHECK(!t.lc.empty(), "sen12mscr: ", t.name(), " (", t.s1, ") has no land-cover file");
    TiffInfo info = read_info_via(o.pack.get(), t.lc);
    NIMBUS_CHECK(info.bands == 4 && info.height == H && info.width == W, "sen12mscr: ", t.lc, ": land cover must be ",
                 W, "x", H, " with 4 bands but is ", info.width, "x", info.height, " with ", info.bands);
    Raster lc = read_window_via(o.pack.get(), t.lc, win);
    if (!on_device) flip_rotate(lc, d.flip, d.rot);
    s.add("lc", Shape{4, h, w}, std::move(lc.data));
  }
  if (on_device) s.add("augment", Shape{}, {float(code)});
  return s;
}

SampleFn sen12mscr_sample_fn(std::vector<Sen12mscrTriplet> triplets, TripletSampleOptions options) {
  auto list = std::make_shared<const std::vector<Sen12mscrTriplet>>(std::move(triplets));
  return [list, options](size_t index, Rng& rng) {
    NIMBUS_CHECK(index < list->size(), "sen12mscr: sample ", index, " of ", list->size());
    return load_triplet((*list)[index], rng, options);
  };
}

}  // namespace nimbus::data
