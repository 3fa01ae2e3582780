// image.cpp: RGB images and their PNG files (see image.h). libpng's simplified API does the
// encoding and decoding, whatever the file's colour type and depth.
#include "apps/common/image.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "engine/io/safetensors.h"
#include "kernels/common/error.h"

namespace nimbus::plot {

Image::Image(int width, int height, Rgb fill) : w_(width), h_(height) {
  NIMBUS_CHECK(width > 0 && height > 0 && int64_t(width) * height <= (int64_t(1) << 28), "image: size ", width,
               "x", height, " is not usable");
  px_.resize(size_t(width) * size_t(height) * 3);
  for (size_t i = 0; i < px_.size(); i += 3) px_[i] = fill.r, px_[i + 1] = fill.g, px_[i + 2] = fill.b;
}

Rgb Image::get(int x, int y) const {
  NIMBUS_CHECK(x >= 0 && y >= 0 && x < w_ && y < h_, "image: pixel (", x, ", ", y, ") outside ", w_, "x", h_);
  const uint8_t* p = &px_[(size_t(y) * size_t(w_) + size_t(x)) * 3];
  return {p[0], p[1], p[2]};
}

void Image::set(int x, int y, Rgb c) {
  NIMBUS_CHECK(x >= 0 && y >= 0 && x < w_ && y < h_, "image: pixel (", x, ", ", y, ") outside ", w_, "x", h_);
  uint8_t* p = &px_[(size_t(y) * size_t(w_) + size_t(x)) * 3];
  p[0] = c.r, p[1] = c.g, p[2] = c.b;
}

namespace {
uint8_t to_byte(double v) { return std::isfinite(v) ? uint8_t(std::lround(std::clamp(v, 0.0, 1.0) * 255)) : 0; }
}  // namespace

Image s2_rgb(const float* chw, int channels, int height, int width, float white) {
  NIMBUS_CHECK(chw && channels >= 4 && height > 0 && width > 0, "s2_rgb: need a (C>=4, H, W) Sentinel-2 image, got (",
               channels, ",", height, ",", width, ")");
  NIMBUS_CHECK(white > 0, "s2_rgb: white point ", white, " must be positive");
  const size_t hw = size_t(height) * size_t(width);
  const float *r = chw + 3 * hw, *g = chw + 2 * hw, *b = chw + 1 * hw;  // B4, B3, B2 (1-based)
  Image im(width, height);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      size_t i = size_t(y) * size_t(width) + size_t(x);
      im.set(x, y, {to_byte(r[i] / white), to_byte(g[i] / white), to_byte(b[i] / white)});
    }
  return im;
}

Image grey(const float* hw, int height, int width, float lo, float hi) {
  NIMBUS_CHECK(hw && height > 0 && width > 0 && hi > lo, "grey: need an (H, W) plane and lo < hi, got ", height,
               "x", width, " [", lo, ", ", hi, "]");
  Image im(width, height);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      uint8_t v = to_byte((double(hw[size_t(y) * size_t(width) + size_t(x)]) - lo) / (double(hi) - lo));
      im.set(x, y, {v, v, v});
    }
  return im;
}

void write_png(const std::string& path, const Image& im) {
  NIMBUS_CHECK(!im.empty(), path, ": no image to write");
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  img.width = png_uint_32(im.width());
  img.height = png_uint_32(im.height());
  img.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  NIMBUS_CHECK(png_image_write_get_memory_size(img, size, 0, im.bytes().data(), 0, nullptr), path,
               ": PNG encoding failed: ", img.message);
  std::string bytes(size, '\0');
  NIMBUS_CHECK(png_image_write_to_memory(&img, bytes.data(), &size, 0, im.bytes().data(), 0, nullptr), path,
               ": PNG encoding failed: ", img.message);
  bytes.resize(size);
  write_file_atomic(path, bytes);
}

Image read_png(const std::string& path) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  NIMBUS_CHECK(png_image_begin_read_from_file(&img, path.c_str()), path, ": not a readable PNG (", img.message, ")");
  img.format = PNG_FORMAT_RGB;
  if (img.width == 0 || img.height == 0 || uint64_t(img.width) * img.height > (uint64_t(1) << 28)) {
    png_image_free(&img);
    throw Error(str(path, ": PNG size ", img.width, "x", img.height, " is not usable"));
  }
  // Deflate shrinks data at most ~1032 times, and a PNG row holds at least a filter byte and a bit a
  // pixel: a file too small for the size its header claims is refused before the pixels are allocated
  // (a 69-byte file claiming 16384 x 16384 took 1.5 GB before libpng found the data short).
  std::error_code ec;
  const uint64_t file_bytes = std::filesystem::file_size(path, ec);
  const uint64_t least_raw = uint64_t(img.height) * (1 + (uint64_t(img.width) + 7) / 8);
  if (!ec && least_raw > 1032 * file_bytes + 4096) {
    png_image_free(&img);
    throw Error(str(path, ": PNG header claims ", img.width, "x", img.height, " pixels, more than its ", file_bytes,
                    " bytes can hold (truncated or corrupt)"));
  }
  Image im(int(img.width), int(img.height));
  std::vector<uint8_t> px(PNG_IMAGE_SIZE(img));
  NIMBUS_CHECK(png_image_finish_read(&img, nullptr, px.data(), 0, nullptr), path, ": PNG decoding failed (",
               img.message, ")");
  for (int y = 0; y < im.height(); ++y)
    for (int x = 0; x < im.width(); ++x) {
      const uint8_t* p = &px[(size_t(y) * img.width + size_t(x)) * 3];
      im.set(x, y, {p[0], p[1], p[2]});
    }
  return im;
}

}  // namespace nimbus::plot
