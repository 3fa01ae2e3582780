// synthetic_texture.h: random fields for the synthetic scenes: value noise,
// class-specific spatial textures, and the layout of class regions in a scene.
//
// All fields are (H, W) float row-major, drawn from an Rng the caller seeds, so
// a scene is a pure function of its seed.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "engine/random.h"

namespace nimbus::data {

using Field = std::vector<float>;

// N(0, 1) draws from a fixed 64k table: ~10x faster than Box-Muller and just as
// deterministic; good enough for texture and speckle.
float fast_normal(Rng& rng);

// Smooth noise: a grid of N(0,1) values every `scale` pixels, interpolated with
// smoothstep weights, standardised to mean 0, std 1 over the field.
Field value_noise(int h, int w, float scale, Rng& rng);
// Sum of `octaves` value noises at scale, scale/2, ... with amplitudes 1, 1/2, ...; standardised.
Field fractal_noise(int h, int w, float scale, int octaves, Rng& rng);
// Shift to mean 0, scale to std 1 (over the pixels where mask != 0, or all when mask is empty).
void standardise(Field& f, const std::vector<uint8_t>& mask = {});

// The value v such that a `fraction` of f's pixels (where mask != 0) are >= v.
// fraction <= 0 gives +inf, fraction >= 1 the minimum.
float threshold_for_fraction(const Field& f, double fraction, const std::vector<uint8_t>& mask = {});

// Class texture: high values where the class's "textured" cluster goes (roads,
// roofs, water, bare parcels, canopy gaps), standardised. Per class:
// crops: field parcels (PermanentCrop with row stripes); Forest: canopy blobs;
// Highway: road lines; Industrial / Residential: building blocks (big / small);
// River: a meandering channel; SeaLake: open water with a shore; Pasture and
// HerbaceousVegetation: smooth fields.
Field class_texture(int cls, int h, int w, Rng& rng);

struct SceneLayout {
  int height = 0, width = 0;
  std::vector<uint8_t> label;              // (H, W) class index
  std::array<double, 10> fractions{};      // share of pixels per class
  int dominant = 0;                        // the class with the largest share
};
// Class regions (noise-warped Voronoi cells); the `dominant` class covers about
// `dominant_share` of the scene (>= 0.5 keeps it dominant), the rest goes to
// 1..3 other classes. dominant_share >= 1 gives a one-class scene.
SceneLayout make_layout(int h, int w, int dominant, double dominant_share, Rng& rng);

}  // namespace nimbus::data
