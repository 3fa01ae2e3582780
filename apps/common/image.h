// image.h: small 8-bit RGB images for the experiment's example panels, made from Sentinel-2 and
// SAR planes, and their PNG files (libpng). Row 0 is the top row. The figures (plot.h) draw them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nimbus::plot {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};

// (height, width, 3) bytes, row-major, top row first.
class Image {
 public:
  Image() = default;
  Image(int width, int height, Rgb fill = {255, 255, 255});
  int width() const { return w_; }
  int height() const { return h_; }
  bool empty() const { return w_ == 0; }
  Rgb get(int x, int y) const;  // Error outside the image
  void set(int x, int y, Rgb c);  // Error outside the image
  const std::vector<uint8_t>& bytes() const { return px_; }
  bool operator==(const Image&) const = default;

 private:
  int w_ = 0, h_ = 0;
  std::vector<uint8_t> px_;
};

// RGB from Sentinel-2 bands 4, 3, 2 (1-based: B4 red, B3 green, B2 blue) of a (C >= 4, H, W) array,
// each value / `white` clipped to [0, 1]: white = 2000 for DN (the DSen2-CR figures' stretch), 0.2
// for reflectance. NaN is black.
Image s2_rgb(const float* chw, int channels, int height, int width, float white = 2000.f);
// One plane in grey: lo -> black, hi -> white (SAR VV in dB: lo -25, hi 0).
Image grey(const float* hw, int height, int width, float lo, float hi);

void write_png(const std::string& path, const Image& im);  // 8-bit RGB; temp file + rename
Image read_png(const std::string& path);  // any PNG, converted to 8-bit RGB; Error naming the file

}  // namespace nimbus::plot
