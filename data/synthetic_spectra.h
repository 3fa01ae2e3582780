// synthetic_spectra.h: per-class Sentinel-2 spectra measured on the real EuroSAT
// tiles (data/eurosat_spectra_table.inc, written by data/spectra/measure_spectra.py),
// and drawing pixels from them with a Cholesky factor.
//
// Every class has a whole-class mean / covariance and two clusters (background
// and feature, e.g. verge and road, bank and water); the generator draws a pixel
// as mean_k + L_k z, z ~ N(0, I), from the cluster k its texture puts there.
// Bands are in the SEN12MS-CR order B1..B8, B8A, B9..B12 (DN).
#pragma once
#include <array>
#include <string>
#include <vector>

#include "data/sentinel2.h"

namespace nimbus::data {

constexpr int kNumClasses = 10;

struct SpectrumCluster {
  double weight = 0;                    // share of the class's pixels
  std::array<double, kS2Bands> mean{};  // DN
  std::array<double, kS2Bands * kS2Bands> cov{};
  std::array<double, kS2Bands * kS2Bands> chol{};  // lower-triangular L, L L^T = cov (+ tiny jitter)
  std::array<float, kS2Bands> mean_f{};             // float copies for the per-pixel draw
  std::array<float, kS2Bands * kS2Bands> chol_f{};
};

struct ClassSpectrum {
  std::string name;
  int tiles = 0, pixels = 0;
  std::array<double, kS2Bands> mean{};
  std::array<double, kS2Bands * kS2Bands> cov{};
  SpectrumCluster background, feature;
  // Which cluster the class texture's high values get (water for River/SeaLake,
  // the redder, impervious one otherwise); its weight is that cluster's weight.
  const SpectrumCluster& textured() const;
  const SpectrumCluster& untextured() const;
};

// The 10 EuroSAT classes in alphabetical (= class index) order.
const std::vector<ClassSpectrum>& eurosat_spectra();
const std::string& class_name(int c);

// Lower Cholesky factor of a symmetric positive (semi)definite n x n matrix;
// a tiny diagonal jitter keeps near-singular covariances factorable.
std::vector<double> cholesky(const std::vector<double>& a, int n);

// out[b] = mean[b] + sum_j L[b][j] z[j], in float (DN to ~1e-3, far below uint16 rounding).
inline void draw_pixel(const SpectrumCluster& k, const float* z, float* out) {
  for (int b = 0; b < kS2Bands; ++b) {
    float v = k.mean_f[b];
    for (int j = 0; j <= b; ++j) v += k.chol_f[b * kS2Bands + j] * z[j];
    out[b] = v;
  }
}

}  // namespace nimbus::data
