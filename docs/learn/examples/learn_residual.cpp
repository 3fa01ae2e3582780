// learn_residual.cpp: the numbers of docs/learn/04-residual.md. Where torchvision's bottleneck puts
// its stride and what that costs, DSen2-CR's scaled residual x + 0.1 F(x) measured on a real block,
// and the receptive field that decides how far remove_clouds' tiles must overlap, measured by
// back-propagating from one output pixel.
// docs/learn/build.py pastes this output into the page; ctest checks the page still matches.
#include <cmath>
#include <cstdio>
#include <vector>

#include "apps/common/cloud_removal.h"
#include "engine/autograd.h"
#include "engine/ops/conv.h"
#include "engine/random.h"
#include "models/dsen2cr.h"
#include "models/resnet.h"

using namespace nimbus;

namespace {

// Multiply-accumulates of a convolution: every output pixel of every output channel needs k x k x cin.
int64_t macs(int64_t cin, int64_t cout, int k, int64_t out_h, int64_t out_w) { return cin * cout * k * k * out_h * out_w; }

// The share of input pixels (any channel) whose gradient is non-zero: what the output depends on.
double share_reached(const Tensor& x) {
  const std::vector<float> g = x.grad().to_vector();
  const int64_t C = x.size(1), HW = x.size(2) * x.size(3);
  int64_t reached = 0;
  for (int64_t p = 0; p < HW; ++p) {
    bool any = false;
    for (int64_t c = 0; c < C; ++c) any = any || g[size_t(c * HW + p)] != 0.f;
    reached += any;
  }
  return double(reached) / double(HW);
}

Tensor random_tensor(const Shape& s, Rng& rng) {
  std::vector<float> v(size_t(s.numel()));
  for (float& x : v) x = rng.uniform(-1.f, 1.f);
  return Tensor::from_vector(s, v);
}

}  // namespace

int main() {
  Rng rng(1);
  // ---- 1. The bottleneck's stride: ResNet-50's layer2.0 on a 64x64 EuroSAT tile (input 256 x 16 x 16).
  const int64_t in = 256, planes = 128, out = 4 * planes, H = 16, P = H / 2;
  const int64_t tv = macs(in, planes, 1, H, H) + macs(planes, planes, 3, P, P) + macs(planes, out, 1, P, P);
  const int64_t v1 = macs(in, planes, 1, P, P) + macs(planes, planes, 3, P, P) + macs(planes, out, 1, P, P);
  std::printf("layer2.0 of ResNet-50 on a 64x64 tile, main path (the 1x1 downsample is the same in both):\n");
  std::printf("  stride on the 3x3 (torchvision): %lld multiply-adds\n", (long long)tv);
  std::printf("  stride on the first 1x1 (v1):    %lld multiply-adds (%.2f x)\n", (long long)v1, double(v1) / double(tv));
  // What each variant's main path looks at: back-propagate from every output of a small version.
  {
    const int64_t c = 4;
    Tensor x = random_tensor({1, c, 16, 16}, rng).set_requires_grad(true);
    Tensor w1 = random_tensor({c, c, 1, 1}, rng), w2 = random_tensor({c, c, 3, 3}, rng);
    Tensor w3 = random_tensor({c, c, 1, 1}, rng);
    conv2d(conv2d(conv2d(x, w1, Tensor(), 1, 0), w2, Tensor(), 2, 1), w3, Tensor()).backward(Tensor::ones({1, c, 8, 8}));
    const double tv_share = share_reached(x);
    x.zero_grad();
    conv2d(conv2d(conv2d(x, w1, Tensor(), 2, 0), w2, Tensor(), 1, 1), w3, Tensor()).backward(Tensor::ones({1, c, 8, 8}));
    std::printf("  input pixels the output depends on: stride on the 3x3 %.0f%%, stride on the 1x1 %.0f%%\n",
                100 * tv_share, 100 * share_reached(x));
  }

  // ---- 2. DSen2-CR's scaled residual, on a block with random weights.
  {
    NoGradGuard ng;
    models::DSen2CRBlock block(8, rng);
    const Tensor x = random_tensor({1, 8, 12, 12}, rng);
    const std::vector<float> y = block.forward(x).to_vector(), xv = x.to_vector();
    const std::vector<float> f = block.conv2->forward(block.conv1->forward_relu(x)).to_vector();  // F(x)
    double dot = 0, ff = 0, fx = 0, xx = 0;
    for (size_t i = 0; i < f.size(); ++i) {
      dot += (double(y[i]) - xv[i]) * f[i], ff += double(f[i]) * f[i];
      fx += std::fabs(f[i]), xx += std::fabs(xv[i]);
    }
    std::printf("DSen2-CR block (F=8, random He-uniform weights), y = block(x):\n");
    std::printf("  y - x = %.6f F(x)   (least squares over all %zu values)\n", dot / ff, f.size());
    std::printf("  mean |F(x)| / mean |x| = %.2f: the block changes x by %.1f%% of that\n", fx / xx,
                100 * double(models::kResidualScale));
  }

  // ---- 3. The receptive field: one output pixel of a whole DSen2-CR, back to the inputs.
  for (int B : {0, 2}) {
    models::DSen2CR net({B, 4, true}, rng);
    const int S = 31, mid = S / 2;
    Tensor s2 = random_tensor({1, 13, S, S}, rng).set_requires_grad(true);
    Tensor s1 = random_tensor({1, 2, S, S}, rng).set_requires_grad(true);
    std::vector<float> one(size_t(13 * S * S), 0.f);
    one[size_t((0 * S + mid) * S + mid)] = 1.f;  // band 0, the centre pixel
    net.forward(s2, s1).backward(Tensor::from_vector({1, 13, S, S}, one));
    const std::vector<float> g = s1.grad().to_vector();  // SAR: reached through the convolutions only
    int radius = 0;
    for (int c = 0; c < 2; ++c)
      for (int y = 0; y < S; ++y)
        for (int x = 0; x < S; ++x)
          if (g[size_t((c * S + y) * S + x)] != 0.f) radius = std::max({radius, std::abs(y - mid), std::abs(x - mid)});
    std::printf("DSen2-CR B=%d: one output pixel depends on inputs up to %d pixels away; receptive_radius = %d\n", B,
                radius, apps::receptive_radius({B, 4, true}));
  }
  const models::DSen2CRConfig full;  // B=16, the paper's
  std::printf("  the paper's B=%d: radius %d; remove_clouds' default overlap %d pixels (2 x radius + 32)\n", full.blocks,
              apps::receptive_radius(full), 2 * apps::receptive_radius(full) + 32);
  return 0;
}
