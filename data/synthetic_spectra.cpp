// synthetic_spectra.cpp: the measured EuroSAT class spectra and their Cholesky factors.
#include "data/synthetic_spectra.h"

#include <cmath>

#include "kernels/common/error.h"

namespace nimbus::data {
namespace {

struct RawCluster {
  double weight;
  std::array<double, kS2Bands> mean;
  std::array<double, kS2Bands * kS2Bands> cov;
};
struct RawClass {
  const char* name;
  int tiles, pixels;
  std::array<double, kS2Bands> mean;
  std::array<double, kS2Bands * kS2Bands> cov;
  RawCluster background, feature;
};

const RawClass kTable[kNumClasses] = {
#include "data/eurosat_spectra_table.inc"
};

SpectrumCluster make_cluster(const RawCluster& r) {
  SpectrumCluster k;
  k.weight = r.weight;
  k.mean = r.mean;
  k.cov = r.cov;
  std::vector<double> l = cholesky(std::vector<double>(r.cov.begin(), r.cov.end()), kS2Bands);
  std::copy(l.begin(), l.end(), k.chol.begin());
  for (size_t i = 0; i < k.chol.size(); ++i) k.chol_f[i] = float(k.chol[i]);
  for (size_t i = 0; i < k.mean.size(); ++i) k.mean_f[i] = float(k.mean[i]);
  return k;
}

}  // namespace

std::vector<double> cholesky(const std::vector<double>& a, int n) {
  NIMBUS_CHECK(a.size() == size_t(n) * n, "cholesky: matrix has ", a.size(), " entries, expected ", n, "x", n);
  double trace = 0;
  for (int i = 0; i < n; ++i) trace += a[size_t(i) * n + i];
  const double jitter = 1e-9 * trace / n;
  std::vector<double> l(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j <= i; ++j) {
      double s = a[size_t(i) * n + j] + (i == j ? jitter : 0.0);
      for (int k = 0; k < j; ++k) s -= l[size_t(i) * n + k] * l[size_t(j) * n + k];
      if (i == j) {
        NIMBUS_CHECK(s > 0, "cholesky: matrix is not positive definite (pivot ", i, " is ", s, ")");
        l[size_t(i) * n + i] = std::sqrt(s);
      } else {
        l[size_t(i) * n + j] = s / l[size_t(j) * n + j];
      }
    }
  }
  return l;
}

const SpectrumCluster& ClassSpectrum::textured() const {
  bool water = name == "River" || name == "SeaLake";
  bool feature_first = water ? feature.mean[B8] < background.mean[B8] : feature.mean[B4] > background.mean[B4];
  return feature_first ? feature : background;
}

const SpectrumCluster& ClassSpectrum::untextured() const {
  return &textured() == &feature ? background : feature;
}

const std::vector<ClassSpectrum>& eurosat_spectra() {
  static const std::vector<ClassSpectrum> table = [] {
    std::vector<ClassSpectrum> t;
    for (const RawClass& r : kTable) {
      ClassSpectrum c;
      c.name = r.name;
      c.tiles = r.tiles;
      c.pixels = r.pixels;
      c.mean = r.mean;
      c.cov = r.cov;
      c.background = make_cluster(r.background);
      c.feature = make_cluster(r.feature);
      t.push_back(std::move(c));
    }
    return t;
  }();
  return table;
}

const std::string& class_name(int c) {
  NIMBUS_CHECK(c >= 0 && c < kNumClasses, "class_name: class index ", c, " is outside 0..9");
  return eurosat_spectra()[size_t(c)].name;
}

}  // namespace nimbus::data
