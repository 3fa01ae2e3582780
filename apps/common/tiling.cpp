// tiling.cpp: overlapping tiles and their blend weights (see tiling.h).
#include "apps/common/tiling.h"

#include <algorithm>

#include "kernels/common/error.h"

namespace nimbus::apps {

namespace {

std::vector<int> corners(int length, int tile, int overlap) {
  if (length <= tile) return {0};
  std::vector<int> c;
  for (int pos = 0; pos + tile < length; pos += tile - overlap) c.push_back(pos);
  c.push_back(length - tile);
  return c;
}

// Weights along one axis for the tile [a, a + t) of an axis of length L.
std::vector<float> axis_weights(int a, int t, int length, int overlap, int margin) {
  const int ramp = overlap - 2 * margin;
  auto w = [&](int d) { return d < margin ? 0.f : std::min(1.f, float(d - margin + 1) / float(ramp + 1)); };
  std::vector<float> out(size_t(t), 1.f);
  for (int i = 0; i < t; ++i) {
    if (a > 0) out[size_t(i)] = std::min(out[size_t(i)], w(i));
    if (a + t < length) out[size_t(i)] = std::min(out[size_t(i)], w(t - 1 - i));
  }
  return out;
}

}  // namespace

TilePlan plan_tiles(int height, int width, int tile, int overlap, int margin) {
  NIMBUS_CHECK(height > 0 && width > 0, "tiling: empty image ", width, "x", height);
  NIMBUS_CHECK(tile >= 1, "tiling: tile size must be positive, got ", tile);
  NIMBUS_CHECK(overlap >= 0 && overlap < tile, "tiling: overlap ", overlap, " must be in [0, tile ", tile, ")");
  NIMBUS_CHECK(margin >= 0, "tiling: margin must be >= 0, got ", margin);
  TilePlan p;
  p.height = height;
  p.width = width;
  p.tile_h = std::min(tile, height);
  p.tile_w = std::min(tile, width);
  p.overlap = overlap;
  p.margin = margin;
  p.ys = corners(height, tile, overlap);
  p.xs = corners(width, tile, overlap);
  NIMBUS_CHECK(p.count() == 1 || overlap - 2 * margin >= 1, "tiling: overlap ", overlap, " leaves no blending ramp",
               " after the ", margin, "-pixel margins on both sides (need overlap >= 2 * margin + 1)");
  return p;
}

std::vector<float> tile_weights(const TilePlan& p, int y0, int x0) {
  const std::vector<float> wy = axis_weights(y0, p.tile_h, p.height, p.overlap, p.margin);
  const std::vector<float> wx = axis_weights(x0, p.tile_w, p.width, p.overlap, p.margin);
  std::vector<float> w(size_t(p.tile_h) * size_t(p.tile_w));
  for (int y = 0; y < p.tile_h; ++y)
    for (int x = 0; x < p.tile_w; ++x) w[size_t(y) * size_t(p.tile_w) + size_t(x)] = wy[size_t(y)] * wx[size_t(x)];
  return w;
}

}  // namespace nimbus::apps
