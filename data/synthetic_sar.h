// synthetic_sar.h: Sentinel-1 VV/VH backscatter (dB) for a synthetic scene.
//
// The mean backscatter follows the land cover (open water dark, ~-20 dB VV;
// built-up bright, ~-3 dB; vegetation in between; VH 6..9 dB below VV), the
// texture adds a little structure, and speckle is multiplicative: intensity
// times Gamma(L, 1/L) with L = 4.4 looks (SEN12MS GRD). Values are clipped at
// 0 dB like the real patches. Clouds never enter: SAR sees through them.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/random.h"

namespace nimbus::data {

// label: (H, W) class index; water: (H, W) 1 where the pixel is open water (the
// water cluster of River/SeaLake); texture: (H, W) standardised, or empty.
// Returns (2, H, W): VV then VH, dB.
std::vector<float> make_sar(const std::vector<uint8_t>& label, const std::vector<uint8_t>& water,
                            const std::vector<float>& texture, int h, int w, Rng& rng);

// Mean VV and VH (dB) of a class (water: its open-water value).
void sar_class_db(int cls, bool water, float* vv, float* vh);

}  // namespace nimbus::data
