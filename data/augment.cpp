// augment.cpp: crop draw, flips and numpy-style rot90; see augment.h.
#include "data/augment.h"

#include <utility>

#include "kernels/common/dihedral.h"
#include "kernels/common/error.h"

namespace nimbus::data {

AugmentDraw draw_augment(Rng& rng, int height, int width, const AugmentConfig& cfg) {
  NIMBUS_CHECK(cfg.crop <= 0 || (cfg.crop <= height && cfg.crop <= width), "augment: crop ", cfg.crop,
               " is larger than the ", width, "x", height, " image");
  AugmentDraw d;
  if (cfg.crop > 0 && cfg.random_crop) {
    // {0 .. H - crop - 1}, as the reference draws it (never the last offset).
    if (height > cfg.crop) d.y0 = int(rng.below(uint64_t(height - cfg.crop)));
    if (width > cfg.crop) d.x0 = int(rng.below(uint64_t(width - cfg.crop)));
  }
  if (cfg.flip_rotate) {
    d.flip = int(rng.below(3));
    d.rot = int(rng.below(4));
  }
  return d;
}

Window crop_window(const AugmentDraw& d, int height, int width, const AugmentConfig& cfg) {
  if (cfg.crop <= 0) return Window{0, 0, width, height};
  return Window{d.x0, d.y0, cfg.crop, cfg.crop};
}

namespace {

// Moves every pixel along the dihedral rule (kernels/common/dihedral.h): a gather from the h x w
// image into the turned frame, or (undo) the same pairs of places read backwards, a scatter.
void dihedral_move(const float* in, float* out, int channels, int h, int w, int flip, int rot, bool undo,
                   const char* what) {
  NIMBUS_CHECK(flip >= 0 && flip <= 2 && rot >= 0 && rot <= 3, what, ": flip ", flip, " rot ", rot,
               " (flip must be 0..2, rot 0..3)");
  const bool swap = rot % 2 == 1;
  const int oh = swap ? w : h, ow = swap ? h : w;
  for (int c = 0; c < channels; ++c) {
    const float* src = in + size_t(c) * h * w;
    float* dst = out + size_t(c) * h * w;
    for (int i = 0; i < oh; ++i)
      for (int j = 0; j < ow; ++j) {
        int64_t y, x;  // the input pixel that lands on output (i, j): the rule the GPU kernels share
        dihedral_source(4 * flip + rot, h, w, i, j, y, x);
        const size_t turned = size_t(i) * ow + j, as_read = size_t(y) * w + size_t(x);
        if (undo)
          dst[as_read] = src[turned];
        else
          dst[turned] = src[as_read];
      }
  }
}

}  // namespace

void flip_rotate(const float* in, float* out, int channels, int h, int w, int flip, int rot) {
  dihedral_move(in, out, channels, h, w, flip, rot, false, "flip_rotate");
}

void undo_flip_rotate(const float* turned, float* out, int channels, int h, int w, int flip, int rot) {
  dihedral_move(turned, out, channels, h, w, flip, rot, true, "undo_flip_rotate");
}

void flip_rotate(Raster& r, int flip, int rot) {
  if (flip == 0 && rot == 0) return;
  std::vector<float> out(r.data.size());
  flip_rotate(r.data.data(), out.data(), r.bands, r.height, r.width, flip, rot);
  r.data = std::move(out);
  if (rot % 2 == 1) std::swap(r.width, r.height);
}

}  // namespace nimbus::data
