// cloud_removal.cpp: tiled, batched DSen2-CR inference (see cloud_removal.h).
#include "apps/common/cloud_removal.h"

#include <algorithm>

#include "apps/common/tiling.h"
#include "engine/autograd.h"

namespace nimbus::apps {

int receptive_radius(const models::DSen2CRConfig& c) { return 2 * c.blocks + 2; }

std::vector<float> remove_clouds_tiled(models::DSen2CR& net, const float* s2_dn, const float* s1_db, int H, int W,
                                       const TileOptions& o) {
  const bool sar = net.config().sar;
  NIMBUS_CHECK(!sar || s1_db, "remove_clouds: the model (", net.config().str(), ") needs S1 SAR input; none given");
  NIMBUS_CHECK(o.batch >= 1, "remove_clouds: batch size must be >= 1, got ", o.batch);
  // The margin is the receptive radius when the overlap leaves room for it (exact tiling), else what fits.
  const int radius = receptive_radius(net.config());
  const int overlap = o.overlap >= 0 ? o.overlap : std::min(o.tile - 1, 2 * radius + 32);
  const int margin = std::max(0, std::min(radius, (overlap - 1) / 2));
  const TilePlan plan = plan_tiles(H, W, o.tile, overlap, margin);
  const int th = plan.tile_h, tw = plan.tile_w;
  const size_t thw = size_t(th) * size_t(tw), hw = size_t(H) * size_t(W);
  constexpr int C2 = models::kS2Bands, C1 = models::kS1Bands;

  std::vector<float> acc(size_t(C2) * hw, 0.f), wsum(hw, 0.f);
  std::vector<std::pair<int, int>> tiles;
  for (int y : plan.ys)
    for (int x : plan.xs) tiles.emplace_back(y, x);
  NoGradGuard ng;
  net.eval();
  auto cut = [&](const float* src, int C, int y0, int x0, float* dst) {
    for (int c = 0; c < C; ++c)
      for (int y = 0; y < th; ++y)
        std::copy_n(src + size_t(c) * hw + size_t(y0 + y) * size_t(W) + size_t(x0), size_t(tw),
                    dst + size_t(c) * thw + size_t(y) * size_t(tw));
  };
  for (size_t t0 = 0; t0 < tiles.size(); t0 += size_t(o.batch)) {
    const size_t n = std::min(size_t(o.batch), tiles.size() - t0);
    std::vector<float> in2(n * size_t(C2) * thw), in1(sar ? n * size_t(C1) * thw : 0);
    for (size_t i = 0; i < n; ++i) {
      cut(s2_dn, C2, tiles[t0 + i].first, tiles[t0 + i].second, in2.data() + i * size_t(C2) * thw);
      if (sar) cut(s1_db, C1, tiles[t0 + i].first, tiles[t0 + i].second, in1.data() + i * size_t(C1) * thw);
    }
    const int64_t N = int64_t(n);
    Tensor s2 = Tensor::from_vector({N, C2, th, tw}, in2).to(o.device);
    Tensor s1 = sar ? Tensor::from_vector({N, C1, th, tw}, in1).to(o.device) : Tensor();
    const std::vector<float> pred = net.forward_dn(s2, s1).to_vector();  // scaled and back on the device
    for (size_t i = 0; i < n; ++i) {
      const auto [y0, x0] = tiles[t0 + i];
      const std::vector<float> w = tile_weights(plan, y0, x0);
      for (int y = 0; y < th; ++y)
        for (int x = 0; x < tw; ++x) {
          const size_t k = size_t(y) * size_t(tw) + size_t(x), g = size_t(y0 + y) * size_t(W) + size_t(x0 + x);
          if (w[k] == 0.f) continue;
          wsum[g] += w[k];
          const float* pk = pred.data() + i * size_t(C2) * thw + k;
          for (int c = 0; c < C2; ++c) acc[size_t(c) * hw + g] += w[k] * pk[size_t(c) * thw];
        }
    }
    if (o.on_tiles) o.on_tiles(t0 + n, tiles.size());
  }
  for (size_t g = 0; g < hw; ++g) {
    NIMBUS_CHECK(wsum[g] > 0, "remove_clouds: internal: pixel ", g, " got no tile weight");
    for (int c = 0; c < C2; ++c) acc[size_t(c) * hw + g] /= wsum[g];
  }
  return acc;
}

}  // namespace nimbus::apps
