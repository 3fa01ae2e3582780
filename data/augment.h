// augment.h: DSen2-CR's training augmentation (reference §4), one draw per
// sample shared by all of its rasters (S1, cloudy S2, target S2, mask).
//
//   crop:   top-left (y0, x0) uniform in {0 .. H - crop - 1} x {0 .. W - crop - 1}
//           (0..127 for a 128 crop of 256, as the reference draws it; 0 when
//           the image is exactly crop-sized or random cropping is off). The crop
//           is a window read (geotiff.h), so only those rows leave the disk.
//   flip:   0 none, 1 flip rows (vertical, numpy flipud), 2 flip columns (fliplr)
//   rotate: k in 0..3 quarter turns counter-clockwise over (h, w), like
//           numpy.rot90(x, k, axes=(1, 2)); applied after the flip.
#pragma once
#include <vector>

#include "data/geotiff.h"
#include "engine/random.h"

namespace nimbus::data {

struct AugmentConfig {
  int crop = 128;             // crop size (square); <= 0 means the whole image
  bool random_crop = true;    // false: the top-left crop (validation / prediction)
  bool flip_rotate = true;    // false: no flip, no rotation
};

struct AugmentDraw {
  int y0 = 0, x0 = 0;  // crop corner
  int flip = 0;        // 0, 1 (rows), 2 (columns)
  int rot = 0;         // quarter turns counter-clockwise
};

// Draws in a fixed order (y0, x0, flip, rot) so a seed fixes the result.
AugmentDraw draw_augment(Rng& rng, int height, int width, const AugmentConfig& cfg);
// The crop as a read window (the whole image when cfg.crop <= 0).
Window crop_window(const AugmentDraw& d, int height, int width, const AugmentConfig& cfg);

// in (C, h, w) -> out (C, h, w), or (C, w, h) when rot is odd. in != out.
void flip_rotate(const float* in, float* out, int channels, int h, int w, int flip, int rot);
// In place on a raster (its width and height swap for odd rot; geo is left as it was).
void flip_rotate(Raster& r, int flip, int rot);
// The inverse: turned is flip_rotate's output for a (C, h, w) input; out (C, h, w) gets that input
// back. For a value computed in the turned frame that must travel with pixels left as read (the
// cloud mask when the GPU does the flips). turned != out.
void undo_flip_rotate(const float* turned, float* out, int channels, int h, int w, int flip, int rot);

}  // namespace nimbus::data
