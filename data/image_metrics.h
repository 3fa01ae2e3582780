// image_metrics.h: cloud-removal quality metrics, computed as Meraner et al. (DSen2-CR) do.
//
// Units. Images are (C, H, W) row-major float32 in top-of-atmosphere
// reflectance rho = DN / 10000 (so 0..1 for valid data; C = 13 for Sentinel-2,
// any C >= 1 works). MAE and RMSE are in rho, PSNR in dB with peak 1
// (= 20 log10(1 / RMSE)), SSIM with data range 1, SAM in degrees. These are the
// units of Meraner et al. 2020, Table 1 (reference/dsen2cr-sen12mscr.md §5.3-5.4),
// so our numbers compare with theirs directly. (DSen2-CR's code works in DN/2000;
// divide its MAE/RMSE by 5 to get ours.) As there, the references (target, cloudy input)
// are clipped to [0, 1] by the caller (apps/common/experiment.cpp) and predictions are not.
//
// Mask. Optional (H, W) floats, 1 = cloud or shadow, 0 = clear (the detector's
// cloud_shadow_mask); a pixel counts as covered when mask > 0.5.
// Regions and the three variants of the paper:
//   "target" (All)     prediction vs cloud-free target over the whole image;
//   "reprod" (Clear)   prediction vs cloudy input on clear pixels (mask 0);
//   "recon"  (Covered) prediction vs cloud-free target on cloud/shadow pixels (mask 1).
// Masked MAE divides by (selected pixels x bands); masked RMSE likewise; masked
// SAM is the mean angle over the selected pixels (the mask-weighted mean).
// An empty region (a cloud-free image has no "recon" pixels) gives NaN, and
// MetricsMean skips NaN per metric, so dataset means are over the images where
// the metric exists (the count per metric is kept). DSen2-CR also yields NaN there.
//
// Conventions:
//   PSNR: 20 log10(1 / RMSE), capped at kPsnrCapDb = 100 dB (RMSE <= 1e-5,
//         including the identical-image case RMSE = 0).
//   SAM:  per pixel arccos(clip(<t,p> / (|t| |p|), -1, 1)) over the C bands, in
//         degrees. DSen2-CR has no epsilon, so an all-zero pixel gives NaN there;
//         we define: both vectors zero -> 0 deg, exactly one zero -> 90 deg.
//   SSIM: exactly tf.image.ssim as DSen2-CR calls it: 11x11 Gaussian window,
//         sigma 1.5, k1 0.01, k2 0.03, data range 1, VALID filtering (the map is
//         (H-10) x (W-10), no padding), mean over the map, then over channels.
//         Whole image only (no masked variant). H and W must be >= 11.
// All sums run in double. Non-finite inputs are an Error naming which image (prediction or
// reference) and the flat index; the caller names the scene.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace nimbus {

// A (channels, height, width) float32 image in reflectance; does not own data.
struct ImageView {
  const float* data = nullptr;
  int channels = 0, height = 0, width = 0;
  int64_t numel() const { return int64_t(channels) * height * width; }
};

enum class Region { All, Clear, Covered };  // all pixels, mask 0, mask 1

inline constexpr double kPsnrCapDb = 100.0;

// Each: pred vs ref over `region` (mask may be null only for Region::All).
double mae(ImageView pred, ImageView ref, const float* mask = nullptr, Region region = Region::All);
double rmse(ImageView pred, ImageView ref, const float* mask = nullptr, Region region = Region::All);
double psnr(ImageView pred, ImageView ref, const float* mask = nullptr, Region region = Region::All);
double sam_degrees(ImageView pred, ImageView ref, const float* mask = nullptr, Region region = Region::All);
double ssim(ImageView pred, ImageView ref);
double psnr_from_rmse(double rmse);  // capped, NaN stays NaN

// Every metric of one image. Field order = kMetricNames order.
struct ImageMetrics {
  double mae = 0, rmse = 0, psnr = 0, ssim = 0, sam = 0;                  // target (whole image)
  double mae_reprod = 0, rmse_reprod = 0, psnr_reprod = 0, sam_reprod = 0;  // vs cloudy input, clear pixels
  double mae_recon = 0, rmse_recon = 0, psnr_recon = 0, sam_recon = 0;      // vs target, cloud/shadow pixels
  double cloud_fraction = 0;                                              // share of mask-1 pixels

  static constexpr int kCount = 14;
  std::array<double, kCount> values() const;
  static ImageMetrics from_values(const std::array<double, kCount>& v);
};
// Column names for CSV/JSON: "mae", "rmse", ..., "sam_recon", "cloud_fraction".
extern const std::array<const char*, ImageMetrics::kCount> kMetricNames;

// pred, target and cloudy share one shape; mask is (H, W) or null (no clouds known:
// reprod uses every pixel, recon is NaN).
ImageMetrics image_metrics(ImageView pred, ImageView target, ImageView cloudy, const float* mask);

// Running mean over a dataset, per metric, skipping NaN.
class MetricsMean {
 public:
  void add(const ImageMetrics& m);
  ImageMetrics mean() const;  // NaN for a metric no image had
  int64_t count(int metric) const { return count_[size_t(metric)]; }
  int64_t images() const { return images_; }
  // The running sums as numbers (sums, counts, images), and back: to add up several ranks' means.
  std::vector<double> sums() const;
  static MetricsMean from_sums(const std::vector<double>& v);

 private:
  std::array<double, ImageMetrics::kCount> sum_{};
  std::array<int64_t, ImageMetrics::kCount> count_{};
  int64_t images_ = 0;
};

}  // namespace nimbus
