// synthetic.cpp: assembling and writing synthetic scenes (see synthetic.h).
//
// A clear scene: class regions (make_layout); per class a texture field decides
// which of its two measured spectral clusters each pixel takes (exactly the
// measured cluster share of the class's pixels), and the pixel is mean + L z
// with z spatially smooth noise whose first component carries the texture, so
// the class's measured mean and covariance come back. Clouds and SAR are added
// for the SEN12MS-CR-like triplets.
#include "data/synthetic.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "data/synthetic_sar.h"
#include "data/synthetic_spectra.h"
#include "engine/io/safetensors.h"
#include "kernels/common/error.h"

namespace nimbus::data {
namespace {

namespace fs = std::filesystem;

// One independent stream per (seed, kind, index).
Rng item_rng(uint64_t seed, uint64_t kind, uint64_t index) {
  Rng mix(seed ^ (kind * 0x9E3779B97F4A7C15ull));
  uint64_t s = mix.next_u64() ^ (index * 0xD1B54A32D192ED03ull + kind);
  return Rng(s);
}
enum : uint64_t { kEuroSat = 1, kTriplet = 2, kCover = 3, kRoi = 4 };

const char* kSeasons[4] = {"ROIs1158_spring", "ROIs1868_summer", "ROIs1970_fall", "ROIs2017_winter"};

// UTM GeoTIFF keys: projected, pixel-is-area, EPSG code, with a citation.
GeoInfo utm_geo(int epsg, double easting, double northing, double sx, double sy) {
  GeoInfo g;
  g.pixel_scale = {sx, sy, 0.0};
  g.tiepoints = {0, 0, 0, easting, northing, 0};
  int zone = epsg % 100;
  bool north = epsg / 100 == 326;
  g.geo_ascii_params = str("WGS 84 / UTM zone ", zone, north ? "N" : "S", "|");
  g.geokeys = {1, 1, 0, 4,                                                      // header: 4 keys
               1024, 0, 1, 1,                                                   // GTModelType: projected
               1025, 0, 1, 1,                                                   // GTRasterType: PixelIsArea
               1026, 34737, uint16_t(g.geo_ascii_params.size()), 0,             // GTCitation
               3072, 0, 1, uint16_t(epsg)};                                     // ProjectedCSType
  return g;
}

void write(const std::string& path, const Raster& r, SampleType type) {
  fs::create_directories(fs::path(path).parent_path());
  WriteOptions o;
  o.type = type;
  write_geotiff(path, r, o);
}

}  // namespace

OpticalScene make_optical_scene(int h, int w, int dominant, double dominant_share, Rng& rng) {
  const auto& spectra = eurosat_spectra();
  OpticalScene sc;
  sc.height = h;
  sc.width = w;
  sc.layout = make_layout(h, w, dominant, dominant_share, rng);
  const size_t n = size_t(h) * w;
  sc.texture.assign(n, 0.f);
  sc.water.assign(n, 0);
  std::vector<uint8_t> textured(n, 0);
  Field within(n, 0.f);
  for (int c = 0; c < kNumClasses; ++c) {
    if (sc.layout.fractions[size_t(c)] == 0) continue;
    std::vector<uint8_t> in(n);
    for (size_t i = 0; i < n; ++i) in[i] = sc.layout.label[i] == c;
    Field t = class_texture(c, h, w, rng);
    standardise(t, in);
    const float q = threshold_for_fraction(t, spectra[size_t(c)].textured().weight, in);
    const bool water_class = c == 8 || c == 9;
    for (size_t i = 0; i < n; ++i)
      if (in[i]) {
        sc.texture[i] = t[i];
        textured[i] = t[i] >= q;
        sc.water[i] = water_class && textured[i];
      }
    // Within each cluster, the texture re-standardised: it feeds z's first
    // component, which must stay mean 0, variance 1 there to keep the cluster's
    // mean and covariance.
    double sum[2] = {0, 0}, sum2[2] = {0, 0}, cnt[2] = {0, 0};
    for (size_t i = 0; i < n; ++i)
      if (in[i]) {
        int k = textured[i];
        sum[k] += t[i], sum2[k] += double(t[i]) * t[i], cnt[k] += 1;
      }
    float mean[2], inv_sd[2];
    for (int k = 0; k < 2; ++k) {
      double m = cnt[k] > 0 ? sum[k] / cnt[k] : 0, var = cnt[k] > 0 ? sum2[k] / cnt[k] - m * m : 1;
      mean[k] = float(m);
      inv_sd[k] = float(1.0 / std::sqrt(std::max(var, 1e-12)));
    }
    for (size_t i = 0; i < n; ++i)
      if (in[i]) within[i] = (t[i] - mean[textured[i]]) * inv_sd[textured[i]];
  }
  // z: 13 unit-variance fields, smooth (0.95) plus white (0.31, sensor-like); the first one
  // carries the texture half of its variance, so structure shows in every band
  // through L's first column while z stays N(0, I) per pixel.
  std::vector<Field> z(kS2Bands);
  for (int b = 0; b < kS2Bands; ++b) {
    z[size_t(b)] = value_noise(h, w, 5.f, rng);
    for (float& v : z[size_t(b)]) v = 0.95f * v + 0.312f * fast_normal(rng);
  }
  const float rho = std::sqrt(0.5f);
  sc.s2.resize(size_t(kS2Bands) * n);
  float zp[kS2Bands], px[kS2Bands];
  for (size_t i = 0; i < n; ++i) {
    const ClassSpectrum& cs = spectra[sc.layout.label[i]];
    const SpectrumCluster& k = textured[i] ? cs.textured() : cs.untextured();
    for (int b = 0; b < kS2Bands; ++b) zp[b] = z[size_t(b)][i];
    zp[0] = rho * within[i] + rho * zp[0];
    draw_pixel(k, zp, px);
    for (int b = 0; b < kS2Bands; ++b) sc.s2[size_t(b) * n + i] = std::max(px[b], 1.f);
  }
  return sc;
}

Raster make_eurosat_tile(uint64_t seed, int cls, int index) {
  NIMBUS_CHECK(cls >= 0 && cls < kNumClasses, "make_eurosat_tile: class ", cls, " is outside 0..9");
  Rng rng = item_rng(seed, kEuroSat, uint64_t(cls) * 1000003ull + uint64_t(index));
  OpticalScene sc = make_optical_scene(64, 64, cls, 1.0, rng);
  Raster r;
  r.width = r.height = 64;
  r.bands = kS2Bands;
  r.type = SampleType::UInt16;
  r.data.resize(sc.s2.size());
  const size_t n = 64 * 64;
  for (int fb = 0; fb < kS2Bands; ++fb)
    std::copy_n(sc.s2.data() + size_t(kEuroSatFileOrder[size_t(fb)]) * n, n, r.data.data() + size_t(fb) * n);
  // Real EuroSAT pixels are close to, not exactly, 10 m (reprojected tiles).
  const int epsg = 32630 + int(rng.below(6));
  r.geo = utm_geo(epsg, 300000 + 640.0 * double(rng.below(600)), 5000000 + 640.0 * double(rng.below(1500)),
                  10.0 + rng.uniform(-0.03f, 0.03f), 10.0 + rng.uniform(-0.03f, 0.03f));
  return r;
}

double triplet_cover(uint64_t seed, int index, double lo, double hi) {
  Rng rng = item_rng(seed, kCover, uint64_t(index));
  return lo + (hi - lo) * rng.uniform();
}

SyntheticTriplet make_triplet(uint64_t seed, int index, double cover, int size, int patches_per_roi) {
  NIMBUS_CHECK(patches_per_roi > 0, "make_triplet: patches_per_roi must be positive, got ", patches_per_roi);
  Rng rng = item_rng(seed, kTriplet, uint64_t(index));
  const int dominant = int(rng.below(kNumClasses));
  const double share = 0.55 + 0.35 * rng.uniform();
  OpticalScene sc = make_optical_scene(size, size, dominant, share, rng);
  const size_t n = size_t(size) * size;
  SyntheticTriplet t;
  t.layout = sc.layout;
  t.requested_cover = cover;
  // Location: the ROI fixes the UTM zone and an origin; its patches tile the
  // ROI side by side (8 per row, 256 px = 2.56 km apart), 10 m pixels.
  const int roi_index = index / patches_per_roi, patch = index % patches_per_roi;
  Rng roi_rng = item_rng(seed, kRoi, uint64_t(roi_index));
  const int zone = 29 + int(roi_rng.below(8));
  const int epsg = (roi_rng.uniform() < 0.8 ? 32600 : 32700) + zone;
  const double east = 200000 + 2560.0 * double(roi_rng.below(100));
  const double north = 1000000 + 2560.0 * double(roi_rng.below(2000));
  GeoInfo geo = utm_geo(epsg, east + 10.0 * size * (patch % 8), north - 10.0 * size * (patch / 8), 10.0, 10.0);
  auto raster = [&](int bands, SampleType type) {
    Raster r;
    r.width = r.height = size;
    r.bands = bands;
    r.type = type;
    r.geo = geo;
    return r;
  };
  t.s2 = raster(kS2Bands, SampleType::UInt16);
  t.s2.data = sc.s2;
  // SAR before any cloud draw: it depends on the land cover only, never on the clouds.
  t.s1 = raster(2, SampleType::Float32);
  t.s1.data = make_sar(sc.layout.label, sc.water, sc.texture, size, size, rng);
  // The cloudy acquisition: a different day, so a small radiometric change, then clouds.
  t.s2_cloudy = raster(kS2Bands, SampleType::UInt16);
  t.s2_cloudy.data = sc.s2;
  for (int b = 0; b < kS2Bands; ++b) {
    const float gain = 1.f + 0.02f * fast_normal(rng);
    float* p = t.s2_cloudy.data.data() + size_t(b) * n;
    for (size_t i = 0; i < n; ++i) p[i] *= gain;
  }
  CloudLayer clouds = make_clouds(size, size, cover, rng);
  apply_clouds(clouds, t.s2_cloudy.data.data(), rng);
  t.cloud_fraction = clouds.cloud_fraction;
  t.shadow_fraction = clouds.shadow_fraction;
  for (float c : clouds.cirrus) t.cirrus = std::max(t.cirrus, double(c));
  t.mask = raster(1, SampleType::UInt8);
  t.mask.data.assign(clouds.mask.begin(), clouds.mask.end());
  return t;
}

TripletName triplet_name(int index, int patches_per_roi) {
  NIMBUS_CHECK(patches_per_roi > 0, "triplet_name: patches_per_roi must be positive, got ", patches_per_roi);
  TripletName t;
  const int roi_index = index / patches_per_roi;
  t.season = kSeasons[roi_index % 4];
  t.roi = 1 + roi_index / 4;
  t.patch = 1 + index % patches_per_roi;
  auto path = [&](const std::string& mod) {
    return str(t.season, "_", mod, "/", mod, "_", t.roi, "/", t.season, "_", mod, "_", t.roi, "_p", t.patch, ".tif");
  };
  t.s1 = path("s1");
  t.s2 = path("s2");
  t.s2_cloudy = path("s2_cloudy");
  t.mask = str("masks/", t.season, "_mask_", t.roi, "_p", t.patch, ".tif");
  return t;
}

void write_eurosat_tile(const std::string& root, uint64_t seed, int cls, int index) {
  const std::string& name = class_name(cls);
  write(str(root, "/", name, "/", name, "_", index + 1, ".tif"), make_eurosat_tile(seed, cls, index),
        SampleType::UInt16);
}

std::string labels_header() {
  // Not the s1,s2,s2_cloudy list form of sen12mscr.h on purpose: these are labels, not inputs.
  return "season,roi,patch,dominant_class,dominant_name,dominant_fraction,requested_cover,cloud_fraction,"
         "shadow_fraction,cirrus_max,s1,s2,s2_cloudy,mask";
}

void write_labels(const std::string& root, const std::vector<std::string>& rows) {
  std::string csv = labels_header() + "\n";
  for (const std::string& r : rows) csv += r + "\n";
  write_file_atomic(root + "/labels.csv", csv);
}

std::string write_triplet(const std::string& root, const SyntheticOptions& o, int index) {
  const double cover = triplet_cover(o.seed, index, o.cover_lo, o.cover_hi);
  SyntheticTriplet t = make_triplet(o.seed, index, cover, o.size, o.patches_per_roi);
  TripletName nm = triplet_name(index, o.patches_per_roi);
  write(root + "/" + nm.s1, t.s1, SampleType::Float32);
  write(root + "/" + nm.s2, t.s2, SampleType::UInt16);
  write(root + "/" + nm.s2_cloudy, t.s2_cloudy, SampleType::UInt16);
  write(root + "/" + nm.mask, t.mask, SampleType::UInt8);
  const int d = t.layout.dominant;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%.6f,%.6f,%.6f,%.6f,%.4f", t.layout.fractions[size_t(d)], t.requested_cover,
                t.cloud_fraction, t.shadow_fraction, t.cirrus);
  return str(nm.season, ",", nm.roi, ",", nm.patch, ",", d, ",", class_name(d), ",", buf, ",", nm.s1, ",", nm.s2, ",",
             nm.s2_cloudy, ",", nm.mask);
}

}  // namespace nimbus::data
