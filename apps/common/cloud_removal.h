// cloud_removal.h: DSen2-CR over a raster of any size, in overlapping tiles blended with
// apps/common/tiling.h, batched, and streamed: the raster is visited in vertical stripes of at most
// TileOptions::stripe columns, each from top to bottom one row of tiles at a time, so that only the
// tiles in flight and their overlaps are in memory. Output pixels are handed on as soon as no later
// tile touches them.
//
// Values are raw: s2 (13, H, W) Sentinel-2 DN in SEN12MS order, s1 (2, H, W) VV and VH in dB (a
// model without SAR takes none), free of NaN; each tile is scaled (data/normalize.h) and back on the
// model's device (DSen2CR::forward_dn). The output is the cloud-free estimate (13, H, W) in DN.
//
// Exactness: a pixel's value is the blend of the tiles of the whole-image plan that cover it, added
// in the same (row-major) order whatever the stripes, so every stripe width gives the same bits.
#pragma once
#include <functional>
#include <vector>

#include "engine/device.h"
#include "models/dsen2cr.h"

namespace nimbus::apps {

struct TileOptions {
  int tile = 256;    // tile side; images up to this size run in one piece
  int overlap = -1;  // -1: default_overlap(); else in [1, tile / 2]
  int batch = 4;     // tiles per forward pass
  int stripe = 0;    // output columns blended at once (0: the whole width); memory ~ (stripe + 2 tile) x tile
  Device device = Device::CPU;
  std::function<void(size_t done, size_t total)> on_tiles;  // optional: called after each batch of tiles
};

// Where tiles come from and where finished pixels go.
struct TileIO {
  // Fills s2 (13, h, w) DN and, for a SAR model, s1 (2, h, w) dB with the image window whose top-left
  // corner is (x0, y0); band-major, row-major.
  std::function<void(int x0, int y0, int w, int h, float* s2, float* s1)> read;
  // Receives finished output: (13, h, w) DN of the window at (x0, y0). Windows come stripe by stripe
  // (left to right), each stripe from top to bottom, and cover the image exactly once.
  std::function<void(int x0, int y0, int w, int h, const float* dn)> write;
};

// Radius in pixels of the model's receptive field: one per 3x3 conv (head, 2 per block, tail).
int receptive_radius(const models::DSen2CRConfig& c);
// The overlap of --overlap -1: 2 x the receptive radius + 32, at most half a tile. (Capped at tile - 1
// it made a tile at or below 2r + 32 step by one pixel: 37,249 tiles for a 256 x 256 image at --tile 64.)
int default_overlap(const models::DSen2CRConfig& c, int tile);
// Tiles cut with this margin (the receptive radius when the overlap leaves room for it, else what
// fits): a margin of the full radius makes the tiled output the whole image's (exact tiling).
int tile_margin(const models::DSen2CRConfig& c, int overlap);

// Streams the (height x width) image through the model. Error when the model needs SAR and
// io.read cannot give it (the caller checks), or on a bad option.
void remove_clouds_streamed(models::DSen2CR& net, int height, int width, const TileIO& io, const TileOptions& options);

// The same over arrays in memory: s1_db null for a model without SAR (Error when it needs one).
std::vector<float> remove_clouds_tiled(models::DSen2CR& net, const float* s2_dn, const float* s1_db, int height,
                                       int width, const TileOptions& options);

}  // namespace nimbus::apps
