// image_metrics.cpp: MAE, RMSE, PSNR, SAM, TF-style SSIM and their masked variants (see image_metrics.h).
#include "data/image_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/common/error.h"

namespace nimbus {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string shape_str(ImageView v) { return str("(", v.channels, ",", v.height, ",", v.width, ")"); }

void check_pair(const char* op, ImageView pred, ImageView ref, const float* mask, Region region) {
  NIMBUS_CHECK(pred.data && ref.data, op, ": null image data");
  NIMBUS_CHECK(pred.channels > 0 && pred.height > 0 && pred.width > 0, op, ": empty image ", shape_str(pred));
  NIMBUS_CHECK(pred.channels == ref.channels && pred.height == ref.height && pred.width == ref.width, op,
               ": prediction ", shape_str(pred), " and reference ", shape_str(ref), " differ in shape");
  NIMBUS_CHECK(mask || region == Region::All || region == Region::Clear, op,
               ": the covered region needs a cloud mask");
  for (const ImageView* v : {&pred, &ref})
    for (int64_t i = 0; i < v->numel(); ++i)
      NIMBUS_CHECK(std::isfinite(v->data[i]), op, ": ", v == &pred ? "prediction" : "reference",
                   " has a non-finite value (", v->data[i], ") at flat index ", i);
}

// Does pixel p belong to the region? No mask means "no known clouds": every pixel is clear.
inline bool selected(const float* mask, Region region, int64_t p) {
  if (region == Region::All) return true;
  bool covered = mask && mask[p] > 0.5f;
  return region == Region::Covered ? covered : !covered;
}

// Sum of |d| and d^2 over selected pixels and all bands, and the number of selected pixels.
struct ErrorSums {
  double abs = 0, sq = 0;
  int64_t pixels = 0;
};
ErrorSums error_sums(ImageView pred, ImageView ref, const float* mask, Region region) {
  ErrorSums s;
  const int64_t hw = int64_t(pred.height) * pred.width;
  for (int64_t p = 0; p < hw; ++p) {
    if (!selected(mask, region, p)) continue;
    ++s.pixels;
    for (int c = 0; c < pred.channels; ++c) {
      double d = double(pred.data[c * hw + p]) - double(ref.data[c * hw + p]);
      s.abs += std::fabs(d);
      s.sq += d * d;
    }
  }
  return s;
}

// The normalised 11-tap Gaussian of tf.image.ssim (sigma 1.5); the 2-D window is its outer product.
std::array<double, 11> gaussian11() {
  std::array<double, 11> g{};
  double sum = 0;
  for (int i = 0; i < 11; ++i) {
    double x = i - 5;
    g[size_t(i)] = std::exp(-x * x / (2 * 1.5 * 1.5));
    sum += g[size_t(i)];
  }
  for (double& v : g) v /= sum;
  return g;
}

// VALID 2-D filtering of an (h, w) plane with the separable window: out is (h-10, w-10).
void filter_valid(const double* in, int h, int w, const std::array<double, 11>& g, double* tmp, double* out) {
  const size_t ow = size_t(w) - 10, oh = size_t(h) - 10;  // a plane may hold more than 2^31 values
  for (size_t y = 0; y < size_t(h); ++y)
    for (size_t x = 0; x < ow; ++x) {
      double s = 0;
      for (size_t k = 0; k < 11; ++k) s += g[k] * in[y * size_t(w) + x + k];
      tmp[y * ow + x] = s;
    }
  for (size_t y = 0; y < oh; ++y)
    for (size_t x = 0; x < ow; ++x) {
      double s = 0;
      for (size_t k = 0; k < 11; ++k) s += g[k] * tmp[(y + k) * ow + x];
      out[y * ow + x] = s;
    }
}

}  // namespace

double psnr_from_rmse(double r) {
  if (std::isnan(r)) return r;
  if (r <= 0) return kPsnrCapDb;
  return std::min(kPsnrCapDb, 20.0 * std::log10(1.0 / r));
}

double mae(ImageView pred, ImageView ref, const float* mask, Region region) {
  check_pair("mae", pred, ref, mask, region);
  ErrorSums s = error_sums(pred, ref, mask, region);
  return s.pixels ? s.abs / (double(s.pixels) * pred.channels) : kNaN;
}

double rmse(ImageView pred, ImageView ref, const float* mask, Region region) {
  check_pair("rmse", pred, ref, mask, region);
  ErrorSums s = error_sums(pred, ref, mask, region);
  return s.pixels ? std::sqrt(s.sq / (double(s.pixels) * pred.channels)) : kNaN;
}

double psnr(ImageView pred, ImageView ref, const float* mask, Region region) {
  return psnr_from_rmse(rmse(pred, ref, mask, region));
}

double sam_degrees(ImageView pred, ImageView ref, const float* mask, Region region) {
  check_pair("sam", pred, ref, mask, region);
  const int64_t hw = int64_t(pred.height) * pred.width;
  const double deg = 180.0 / M_PI;
  double sum = 0;
  int64_t n = 0;
  for (int64_t p = 0; p < hw; ++p) {
    if (!selected(mask, region, p)) continue;
    double tp = 0, tt = 0, pp = 0;
    for (int c = 0; c < pred.channels; ++c) {
      double a = ref.data[c * hw + p], b = pred.data[c * hw + p];
      tp += a * b;
      tt += a * a;
      pp += b * b;
    }
    double angle;
    if (tt == 0 && pp == 0) angle = 0;        // both zero: same (empty) spectrum
    else if (tt == 0 || pp == 0) angle = 90;  // one zero: orthogonal by convention
    // sqrt(tt * pp) rather than sqrt(tt) * sqrt(pp): for identical vectors it is exactly tt, so the angle is 0.
    else angle = std::acos(std::clamp(tp / std::sqrt(tt * pp), -1.0, 1.0)) * deg;
    sum += angle;
    ++n;
  }
  return n ? sum / double(n) : kNaN;
}

double ssim(ImageView pred, ImageView ref) {
  check_pair("ssim", pred, ref, nullptr, Region::All);
  const int h = pred.height, w = pred.width;
  NIMBUS_CHECK(h >= 11 && w >= 11, "ssim: image ", shape_str(pred),
               " is smaller than the 11x11 window (VALID filtering needs H, W >= 11)");
  const auto g = gaussian11();
  const double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;  // (k * data range)^2, data range 1
  const int64_t hw = int64_t(h) * w, ohw = int64_t(h - 10) * (w - 10);
  const size_t n = static_cast<size_t>(hw), on = static_cast<size_t>(ohw);
  std::vector<double> x(n), y(n), prod(n), tmp(static_cast<size_t>(h) * static_cast<size_t>(w - 10));
  std::vector<double> mx(on), my(on), mxy(on), mxx_yy(on);
  double total = 0;
  for (int c = 0; c < pred.channels; ++c) {
    for (int64_t i = 0; i < hw; ++i) {
      x[size_t(i)] = pred.data[c * hw + i];
      y[size_t(i)] = ref.data[c * hw + i];
    }
    filter_valid(x.data(), h, w, g, tmp.data(), mx.data());
    filter_valid(y.data(), h, w, g, tmp.data(), my.data());
    for (int64_t i = 0; i < hw; ++i) prod[size_t(i)] = x[size_t(i)] * y[size_t(i)];
    filter_valid(prod.data(), h, w, g, tmp.data(), mxy.data());
    for (int64_t i = 0; i < hw; ++i) prod[size_t(i)] = x[size_t(i)] * x[size_t(i)] + y[size_t(i)] * y[size_t(i)];
    filter_valid(prod.data(), h, w, g, tmp.data(), mxx_yy.data());
    // tf.image.ssim's _ssim_helper: luminance * contrast-structure.
    double s = 0;
    for (int64_t i = 0; i < ohw; ++i) {
      size_t k = size_t(i);
      double num0 = 2 * mx[k] * my[k], den0 = mx[k] * mx[k] + my[k] * my[k];
      double lum = (num0 + c1) / (den0 + c1);
      double cs = (2 * mxy[k] - num0 + c2) / (mxx_yy[k] - den0 + c2);
      s += lum * cs;
    }
    total += s / double(ohw);
  }
  return total / pred.channels;
}

const std::array<const char*, ImageMetrics::kCount> kMetricNames = {
    "mae",        "rmse",       "psnr",        "ssim",      "sam",         "mae_reprod",     "rmse_reprod",
    "psnr_reprod", "sam_reprod", "mae_recon",  "rmse_recon", "psnr_recon", "sam_recon", "cloud_fraction"};

std::array<double, ImageMetrics::kCount> ImageMetrics::values() const {
  return {mae,         rmse,       psnr, ssim, sam, mae_reprod, rmse_reprod,
          psnr_reprod, sam_reprod, mae_recon, rmse_recon, psnr_recon, sam_recon, cloud_fraction};
}

ImageMetrics ImageMetrics::from_values(const std::array<double, kCount>& v) {
  ImageMetrics m;
  m.mae = v[0], m.rmse = v[1], m.psnr = v[2], m.ssim = v[3], m.sam = v[4];
  m.mae_reprod = v[5], m.rmse_reprod = v[6], m.psnr_reprod = v[7], m.sam_reprod = v[8];
  m.mae_recon = v[9], m.rmse_recon = v[10], m.psnr_recon = v[11], m.sam_recon = v[12];
  m.cloud_fraction = v[13];
  return m;
}

ImageMetrics image_metrics(ImageView pred, ImageView target, ImageView cloudy, const float* mask) {
  ImageMetrics m;
  m.mae = mae(pred, target);
  m.rmse = rmse(pred, target);
  m.psnr = psnr_from_rmse(m.rmse);
  m.ssim = ssim(pred, target);
  m.sam = sam_degrees(pred, target);
  m.mae_reprod = mae(pred, cloudy, mask, Region::Clear);
  m.rmse_reprod = rmse(pred, cloudy, mask, Region::Clear);
  m.psnr_reprod = psnr_from_rmse(m.rmse_reprod);
  m.sam_reprod = sam_degrees(pred, cloudy, mask, Region::Clear);
  const int64_t hw = int64_t(pred.height) * pred.width;
  int64_t covered = 0;
  for (int64_t p = 0; mask && p < hw; ++p) covered += mask[p] > 0.5f;
  m.cloud_fraction = double(covered) / double(hw);
  if (mask) {
    m.mae_recon = mae(pred, target, mask, Region::Covered);
    m.rmse_recon = rmse(pred, target, mask, Region::Covered);
    m.psnr_recon = psnr_from_rmse(m.rmse_recon);
    m.sam_recon = sam_degrees(pred, target, mask, Region::Covered);
  } else {
    m.mae_recon = m.rmse_recon = m.psnr_recon = m.sam_recon = kNaN;
  }
  return m;
}

void MetricsMean::add(const ImageMetrics& m) {
  auto v = m.values();
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isnan(v[i])) sum_[i] += v[i], ++count_[i];
  ++images_;
}

ImageMetrics MetricsMean::mean() const {
  std::array<double, ImageMetrics::kCount> v{};
  for (size_t i = 0; i < v.size(); ++i) v[i] = count_[i] ? sum_[i] / double(count_[i]) : kNaN;
  return ImageMetrics::from_values(v);
}

std::vector<double> MetricsMean::sums() const {
  std::vector<double> v(sum_.begin(), sum_.end());
  for (int64_t c : count_) v.push_back(double(c));
  v.push_back(double(images_));
  return v;
}

MetricsMean MetricsMean::from_sums(const std::vector<double>& v) {
  constexpr size_t K = ImageMetrics::kCount;
  NIMBUS_CHECK(v.size() == 2 * K + 1, "MetricsMean::from_sums: ", v.size(), " numbers, expected ",
               2 * ImageMetrics::kCount + 1);
  MetricsMean m;
  for (size_t i = 0; i < K; ++i) {
    m.sum_[i] = v[i];
    m.count_[i] = int64_t(v[K + i]);
  }
  m.images_ = int64_t(v.back());
  return m;
}

}  // namespace nimbus
