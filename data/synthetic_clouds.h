// synthetic_clouds.h: clouds for the synthetic SEN12MS-CR-like scenes.
//
// Thick clouds: a fractal noise field thresholded so that exactly the requested
// fraction of pixels has opacity >= 0.1 (the generator's own cloud mask), with
// soft edges (opacity 0.1 at the mask edge, 1 inside); bright in every band,
// strongest in B1..B4, raised in B10 (cirrus).
// Thin cirrus: a faint, large-scale veil that shows mostly in B10.
// Shadows: the thick-cloud opacity shifted by (dx, dy) (sun direction), hidden
// under the clouds themselves, darkening every band, NIR and SWIR the most.
#pragma once
#include <cstdint>
#include <vector>

#include "data/synthetic_texture.h"
#include "engine/random.h"

namespace nimbus::data {

struct CloudLayer {
  int height = 0, width = 0;
  Field opacity;        // (H, W) thick-cloud opacity in [0, 1]
  Field cirrus;         // (H, W) cirrus opacity in [0, ~0.3]
  Field shadow;         // (H, W) shadow strength in [0, 1] (0 under clouds)
  // The generator's own mask: 1 cloud (opacity >= 0.1), 2 shadow (shifted
  // opacity >= 0.1, not cloud), 0 clear.
  std::vector<uint8_t> mask;
  double cloud_fraction = 0, shadow_fraction = 0;
  int shadow_dx = 0, shadow_dy = 0;
};

// cover in [0, 1]: the fraction of pixels that will be mask == 1.
CloudLayer make_clouds(int h, int w, double cover, Rng& rng);

// Composites the layer over a clear (13, H, W) scene in SEN12MS-CR band order
// (DN), in place: shadows darken, cirrus adds a veil, thick clouds replace.
void apply_clouds(const CloudLayer& clouds, float* s2, Rng& rng);

}  // namespace nimbus::data
