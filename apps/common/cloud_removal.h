// cloud_removal.h: DSen2-CR over a whole raster of any size, in overlapping
// tiles blended with apps/common/tiling.h, batched.
//
// Inputs and output are raw values: s2_dn (13, H, W) Sentinel-2 DN, s1_db (2, H, W) VV and VH in dB
// or null for a model without SAR, both free of NaN; each tile is scaled (data/normalize.h) and back
// on the model's device (DSen2CR::forward_dn). Returns the cloud-free estimate (13, H, W) in DN.
#pragma once
#include <functional>
#include <vector>

#include "engine/device.h"
#include "models/dsen2cr.h"

namespace nimbus::apps {

struct TileOptions {
  int tile = 256;    // tile side; images up to this size run in one piece
  int overlap = -1;  // -1: automatic, 2 * margin + 32 (capped at tile - 1)
  int batch = 4;     // tiles per forward pass
  Device device = Device::CPU;
  std::function<void(size_t done, size_t total)> on_tiles;  // optional: called after each batch of tiles
};

// Radius in pixels of the model's receptive field: one per 3x3 conv (head, 2 per block, tail).
int receptive_radius(const models::DSen2CRConfig& c);

// Error when the model needs SAR and s1_db is null. Prints nothing.
std::vector<float> remove_clouds_tiled(models::DSen2CR& net, const float* s2_dn, const float* s1_db, int height,
                                       int width, const TileOptions& options);

}  // namespace nimbus::apps
