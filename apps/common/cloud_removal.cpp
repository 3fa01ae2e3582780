// cloud_removal.cpp: tiled, batched, streamed DSen2-CR inference (see cloud_removal.h).
#include "apps/common/cloud_removal.h"

#include <algorithm>

#include "apps/common/tiling.h"
#include "engine/autograd.h"

namespace nimbus::apps {

int receptive_radius(const models::DSen2CRConfig& c) { return 2 * c.blocks + 2; }
int default_overlap(const models::DSen2CRConfig& c, int tile) {
  return std::max(1, std::min(tile / 2, 2 * receptive_radius(c) + 32));
}
int tile_margin(const models::DSen2CRConfig& c, int overlap) {
  return std::max(0, std::min(receptive_radius(c), (overlap - 1) / 2));
}

void remove_clouds_streamed(models::DSen2CR& net, int H, int W, const TileIO& io, const TileOptions& o) {
  const bool sar = net.config().sar;
  NIMBUS_CHECK(o.batch >= 1, "remove_clouds: batch size must be >= 1, got ", o.batch);
  NIMBUS_CHECK(o.stripe >= 0, "remove_clouds: stripe width must be >= 0, got ", o.stripe);
  NIMBUS_CHECK(o.overlap < 0 || (o.overlap >= 1 && o.overlap <= o.tile / 2), "remove_clouds: overlap ", o.overlap,
               " must be -1 (the default) or in [1, ", o.tile / 2, "] (half of the tile ", o.tile, ")");
  const int overlap = o.overlap >= 0 ? o.overlap : default_overlap(net.config(), o.tile);
  const int margin = tile_margin(net.config(), overlap);
  const TilePlan plan = plan_tiles(H, W, o.tile, overlap, margin);
  const int th = plan.tile_h, tw = plan.tile_w;
  const size_t thw = size_t(th) * size_t(tw);
  constexpr int C2 = models::kS2Bands, C1 = models::kS1Bands;

  // Stripes of output columns [c0, c1); each needs the tile columns that touch it.
  const int stripe = o.stripe == 0 ? W : std::min(o.stripe, W);
  struct Stripe {
    int c0, c1;
    size_t j0, j1;  // tile columns [j0, j1)
  };
  std::vector<Stripe> stripes;
  size_t total = 0;
  for (int c0 = 0; c0 < W; c0 += stripe) {
    Stripe s{c0, std::min(W, c0 + stripe), 0, 0};
    while (s.j0 < plan.xs.size() && plan.xs[s.j0] + tw <= s.c0) ++s.j0;
    s.j1 = s.j0;
    while (s.j1 < plan.xs.size() && plan.xs[s.j1] < s.c1) ++s.j1;
    total += (s.j1 - s.j0) * plan.ys.size();
    stripes.push_back(s);
  }

  NoGradGuard ng;
  net.eval();
  size_t done = 0;
  for (const Stripe& s : stripes) {
    const int wx0 = plan.xs[s.j0], ww = plan.xs[s.j1 - 1] + tw - wx0;  // the window the stripe's tiles cover
    const size_t wplane = size_t(th) * size_t(ww);
    // Blend accumulators for the rows [acc_y0, acc_y0 + th) of the window; rows carried from one row
    // of tiles to the next are the vertical overlap.
    std::vector<float> acc(size_t(C2) * wplane, 0.f), wsum(wplane, 0.f);
    std::vector<float> win2(size_t(C2) * wplane), win1(sar ? size_t(C1) * wplane : 0), out;
    for (size_t i = 0; i < plan.ys.size(); ++i) {
      const int y0 = plan.ys[i];  // == the accumulators' first row
      io.read(wx0, y0, ww, th, win2.data(), sar ? win1.data() : nullptr);
      auto cut = [&](const std::vector<float>& src, int C, int x0, float* dst) {
        for (int c = 0; c < C; ++c)
          for (int y = 0; y < th; ++y)
            std::copy_n(src.data() + size_t(c) * wplane + size_t(y) * size_t(ww) + size_t(x0 - wx0), size_t(tw),
                        dst + size_t(c) * thw + size_t(y) * size_t(tw));
      };
      for (size_t j0 = s.j0; j0 < s.j1; j0 += size_t(o.batch)) {
        const size_t n = std::min(size_t(o.batch), s.j1 - j0);
        std::vector<float> in2(n * size_t(C2) * thw), in1(sar ? n * size_t(C1) * thw : 0);
        for (size_t k = 0; k < n; ++k) {
          cut(win2, C2, plan.xs[j0 + k], in2.data() + k * size_t(C2) * thw);
          if (sar) cut(win1, C1, plan.xs[j0 + k], in1.data() + k * size_t(C1) * thw);
        }
        const int64_t N = int64_t(n);
        Tensor t2 = Tensor::from_vector({N, C2, th, tw}, in2).to(o.device);
        Tensor t1 = sar ? Tensor::from_vector({N, C1, th, tw}, in1).to(o.device) : Tensor();
        const std::vector<float> pred = net.forward_dn(t2, t1).to_vector();  // scaled and back on the device
        for (size_t k = 0; k < n; ++k) {
          const int x0 = plan.xs[j0 + k];
          const std::vector<float> w = tile_weights(plan, y0, x0);
          for (int y = 0; y < th; ++y)
            for (int x = 0; x < tw; ++x) {
              const size_t t = size_t(y) * size_t(tw) + size_t(x), g = size_t(y) * size_t(ww) + size_t(x0 - wx0 + x);
              if (w[t] == 0.f) continue;
              wsum[g] += w[t];
              const float* pk = pred.data() + k * size_t(C2) * thw + t;
              for (int c = 0; c < C2; ++c) acc[size_t(c) * wplane + g] += w[t] * pk[size_t(c) * thw];
            }
        }
        done += n;
        if (o.on_tiles) o.on_tiles(done, total);
      }
      // Rows [y0, y1) are finished: no later row of tiles reaches above y1.
      const int y1 = i + 1 < plan.ys.size() ? plan.ys[i + 1] : H, rows = y1 - y0, cw = s.c1 - s.c0;
      out.assign(size_t(C2) * size_t(rows) * size_t(cw), 0.f);
      for (int y = 0; y < rows; ++y)
        for (int x = 0; x < cw; ++x) {
          const size_t g = size_t(y) * size_t(ww) + size_t(s.c0 - wx0 + x);
          NIMBUS_CHECK(wsum[g] > 0, "remove_clouds: internal: pixel (", y0 + y, ", ", s.c0 + x, ") got no tile weight");
          for (int c = 0; c < C2; ++c)
            out[(size_t(c) * size_t(rows) + size_t(y)) * size_t(cw) + size_t(x)] = acc[size_t(c) * wplane + g] / wsum[g];
        }
      io.write(s.c0, y0, cw, rows, out.data());
      // Carry the overlap rows [y1, y0 + th) to the top; the rest starts again from zero.
      const size_t keep = size_t(std::max(0, y0 + th - y1)) * size_t(ww), shift = size_t(rows) * size_t(ww);
      for (int c = 0; c <= C2; ++c) {
        float* p = c < C2 ? acc.data() + size_t(c) * wplane : wsum.data();
        if (rows < th) std::copy(p + shift, p + shift + keep, p);
        std::fill(p + keep, p + wplane, 0.f);
      }
    }
  }
}

std::vector<float> remove_clouds_tiled(models::DSen2CR& net, const float* s2_dn, const float* s1_db, int H, int W,
                                       const TileOptions& o) {
  const bool sar = net.config().sar;
  NIMBUS_CHECK(!sar || s1_db, "remove_clouds: the model (", net.config().str(), ") needs S1 SAR input; none given");
  constexpr int C2 = models::kS2Bands, C1 = models::kS1Bands;
  const size_t hw = size_t(H) * size_t(W);
  std::vector<float> result(size_t(C2) * hw);
  // Copies a (C, h, w) window out of / into a (C, H, W) array.
  auto window = [&](const float* from, float* to, int C, int x0, int y0, int w, int h, bool into_image) {
    for (int c = 0; c < C; ++c)
      for (int y = 0; y < h; ++y) {
        const size_t img = size_t(c) * hw + size_t(y0 + y) * size_t(W) + size_t(x0);
        const size_t win = (size_t(c) * size_t(h) + size_t(y)) * size_t(w);
        if (into_image) std::copy_n(from + win, size_t(w), to + img);
        else std::copy_n(from + img, size_t(w), to + win);
      }
  };
  TileIO io;
  io.read = [&](int x0, int y0, int w, int h, float* s2, float* s1) {
    window(s2_dn, s2, C2, x0, y0, w, h, false);
    if (s1) window(s1_db, s1, C1, x0, y0, w, h, false);
  };
  io.write = [&](int x0, int y0, int w, int h, const float* dn) { window(dn, result.data(), C2, x0, y0, w, h, true); };
  remove_clouds_streamed(net, H, W, io, o);
  return result;
}

}  // namespace nimbus::apps
