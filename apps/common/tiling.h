// tiling.h: cutting a large raster into overlapping tiles for a fully
// convolutional model and blending the tile outputs back without seams.
//
// Along each axis of length L with tile T and overlap O: corners 0, T-O,
// 2(T-O), ... and a last one at L-T (flush with the far edge; that overlap may
// be larger than O). L <= T gives one tile of size L. Every tile has the same
// size (min(T, H), min(T, W)), so tiles batch together.
//
// Blending: out = sum_t w_t * pred_t / sum_t w_t, w_t(y, x) = wy(y) * wx(x).
// Along an axis, at an edge shared with another tile, a pixel d pixels from
// that edge gets
//   0                         for d < margin (zero padding made these wrong),
//   (d - margin + 1) / (R+1)  in the ramp, R = O - 2 margin,
//   1                         beyond it; image borders get no ramp.
// Two tiles overlapping by exactly O have weights summing to 1 (linear cross
// fade). With margin >= the model's receptive-field radius every pixel that
// gets weight was computed with its full context, so the blended output equals
// an untiled run up to float rounding.
#pragma once
#include <cstddef>
#include <vector>

namespace nimbus::apps {

struct TilePlan {
  int height = 0, width = 0;  // image
  int tile_h = 0, tile_w = 0;
  int overlap = 0, margin = 0;
  std::vector<int> ys, xs;  // tile corners; tiles are all (y in ys) x (x in xs)
  size_t count() const { return ys.size() * xs.size(); }
};

// Error when tile < 1, overlap < 0, overlap >= tile, or when tiles overlap
// and O - 2 margin < 1 (no pixel would get weight from both).
TilePlan plan_tiles(int height, int width, int tile, int overlap, int margin);
// (tile_h * tile_w) weights of the tile with corner (y0, x0) in plan p.
std::vector<float> tile_weights(const TilePlan& p, int y0, int x0);

}  // namespace nimbus::apps
