// test_conv_winograd.cpp: the Winograd convolution (kernels/cpu/conv2d_winograd.h): its forward (bias,
// fused ReLU) and data gradient by F(2x2, 3x3) and its weight gradient by F(3x3, 2x2) against the double
// reference within the stated bound, on shapes that leave partial tiles, partial tile vectors, partial
// jobs, partial chunks and partial blocks of outputs; the same bits on 1 and 2 threads; a NaN reaching
// exactly the outputs whose window holds it (the weight gradient: its channel's or output's weights);
// and which geometries conv2d.cpp routes to it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/conv2d_winograd.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;
using cpu::ConvGeom;

namespace {
// Geometries for the kernels themselves (any 3x3 stride-1 one with pad <= 2, routed there or not).
std::vector<ConvGeom> winograd_geoms() {
  return {
      {1, 32, 8, 8, 32, 3, 3, 1, 1},     // 4 tile vectors (one a tile row) of 4 real tiles: jobs of 3 and 1
      {2, 33, 13, 37, 41, 3, 3, 1, 1},   // odd P and Q (a last tile half outside), 19 tiles a row: a second,
                                         // 3-tile vector; 41 = 8 * 5 + 1 outputs; 33 inputs
      {1, 40, 9, 70, 35, 3, 3, 1, 0},    // no padding: P = 7, Q = 68, 3 vectors a row, the last of 2 tiles
      {1, 32, 6, 5, 48, 3, 3, 1, 2},     // pad 2: P = 8, Q = 7
      {3, 64, 16, 16, 64, 3, 3, 1, 1},   // 8 tile vectors an image: jobs of 3, 3 and 2 (a 2-vector product)
      {1, 16, 14, 30, 32, 3, 3, 1, 1},   // 7 tile vectors: jobs of 3, 3 and 1 (a 1-vector product)
      {2, 5, 1, 1, 9, 3, 3, 1, 1},       // 1 x 1 images, few channels
      {1, 13, 20, 66, 40, 3, 3, 1, 1},   // DSen2-CR's 13-band head, rows of 33 tiles (3 vectors)
      {2, 256, 32, 8, 24, 3, 3, 1, 1},   // 256 channels (product tiles of 3 vectors x 4, then 2 + 2), 24 outputs
                                         // (3 blocks): the weight gradient's chunks hold 29 tile vectors
                                         // (8192 / (256 + 24)), the 2 images 32 (16 tile rows of one each):
                                         // a second chunk of 3
  };
}

// "N, C -> K, H x W, pad p": what a failure message names.
std::string describe(const ConvGeom& g) {
  return std::to_string(g.N) + ", " + std::to_string(g.C) + " -> " + std::to_string(g.K) + ", " + std::to_string(g.H) +
         " x " + std::to_string(g.W) + ", pad " + std::to_string(g.pad);
}

size_t wino_x_size(const ConvGeom& g) { return size_t(g.N * g.C * g.H * g.W); }
size_t wino_w_size(const ConvGeom& g) { return size_t(g.K * g.C * 9); }
size_t wino_y_size(const ConvGeom& g) { return size_t(g.N * g.K * g.P() * g.Q()); }

std::vector<double> magnitudes(std::vector<double> v) {
  for (double& e : v) e = std::fabs(e);
  return v;
}

// The stated error bound: Winograd's rounding (its transforms add up to 4 inputs and 9 weights, and its
// output transform 9 products) is bounded by 2^-20 of the sum of the magnitudes the direct sum adds,
// sum_{c,r,s} |w| |x| + |b|, per output. The largest ratio measured on these shapes was about 2^-22.4;
// the direct kernel's on those it runs, about 2^-22 (its longer float sums round as much). The bound
// leaves a factor 5 and still catches any wrong tap, tile or sign, which is off by a whole term.
constexpr double kWinogradBound = 1.0 / (1 << 20);

// max over outputs of |got - want| / scale; NaN when any output is not finite.
double worst_ratio(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& scale) {
  REQUIRE(got.size() == want.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return NAN;
    worst = std::max(worst, std::fabs(double(got[i]) - want[i]) / std::max(scale[i], 1e-30));
  }
  return worst;
}

// A workspace with a guard after it that the kernel must not touch.
struct GuardedWorkspace {
  explicit GuardedWorkspace(int64_t floats) : size(size_t(std::max<int64_t>(floats, 1))), v(size + 4096, -12345.f) {}
  bool intact() const {
    return std::all_of(v.begin() + ptrdiff_t(size), v.end(), [](float e) { return e == -12345.f; });
  }
  size_t size;
  std::vector<float> v;
};
}  // namespace

TEST_CASE("conv2d Winograd F(2x2,3x3): forward (bias, ReLU) and data gradient within 2^-20 of sum |w||x| of the double reference") {
  Rng rng(23);
  double worst_y = 0, worst_dx = 0;
  for (const ConvGeom& g : winograd_geoms()) {
    const std::string shape = describe(g);
    INFO(shape);
    auto xd = random_vec(wino_x_size(g), rng), wd = random_vec(wino_w_size(g), rng), bd = random_vec(size_t(g.K), rng);
    auto dyd = random_vec(wino_y_size(g), rng);
    for (auto* v : {&xd, &wd, &bd, &dyd})
      for (double& e : *v) e = double(float(e));
    std::vector<double> y_ref(wino_y_size(g)), y_mag(wino_y_size(g)), dx_ref(wino_x_size(g)), dx_mag(wino_x_size(g));
    cpu::conv2d_forward_ref(y_ref.data(), xd.data(), wd.data(), bd.data(), g);
    cpu::conv2d_forward_ref(y_mag.data(), magnitudes(xd).data(), magnitudes(wd).data(), magnitudes(bd).data(), g);
    cpu::conv2d_backward_data_ref(dx_ref.data(), dyd.data(), wd.data(), g);
    cpu::conv2d_backward_data_ref(dx_mag.data(), magnitudes(dyd).data(), magnitudes(wd).data(), g);

    const auto x = to_float(xd), w = to_float(wd), b = to_float(bd), dy = to_float(dyd);
    GuardedWorkspace ws(cpu::conv2d_winograd_workspace(g));
    std::vector<float> y(wino_y_size(g), NAN), dx(wino_x_size(g), NAN);
    cpu::conv2d_winograd_forward(y.data(), x.data(), w.data(), b.data(), g, ws.v.data());
    CHECK_MESSAGE(ws.intact(), "the forward wrote past its workspace of ", ws.size, " floats");
    const double ry = worst_ratio(y, y_ref, y_mag);
    CHECK(ry <= kWinogradBound);  // false for NaN
    worst_y = std::max(worst_y, ry);

    cpu::conv2d_winograd_backward_data(dx.data(), dy.data(), w.data(), g, ws.v.data());
    CHECK_MESSAGE(ws.intact(), "the data gradient wrote past its workspace of ", ws.size, " floats");
    const double rdx = worst_ratio(dx, dx_ref, dx_mag);
    CHECK(rdx <= kWinogradBound);
    worst_dx = std::max(worst_dx, rdx);

    // Without bias; and with the fused ReLU, which is max(y, 0) of the same sums.
    std::vector<float> y_nb(y.size(), NAN), y_relu(y.size(), NAN);
    cpu::conv2d_winograd_forward(y_nb.data(), x.data(), w.data(), nullptr, g, ws.v.data());
    const int64_t PQ = g.P() * g.Q();
    std::vector<double> y_nb_ref(y_ref);
    for (size_t i = 0; i < y_nb_ref.size(); ++i) y_nb_ref[i] -= bd[size_t(int64_t(i) / PQ % g.K)];
    CHECK(worst_ratio(y_nb, y_nb_ref, y_mag) <= kWinogradBound);
    cpu::conv2d_winograd_forward(y_relu.data(), x.data(), w.data(), b.data(), g, ws.v.data(), true);
    size_t relu_wrong = 0, zeroed = 0;
    for (size_t i = 0; i < y.size(); ++i) {
      relu_wrong += y_relu[i] != std::max(y[i], 0.f);
      zeroed += y[i] < 0;
    }
    CHECK(relu_wrong == 0);
    CHECK(zeroed > 0);  // the ReLU had something to do
  }
  MESSAGE("largest error / sum |w||x|: forward 2^", std::log2(worst_y), ", data gradient 2^", std::log2(worst_dx));
}

// The weight gradient by F(3x3, 2x2) sums over every 2x2 tile of dy of every image in float, as the
// direct kernel sums over the pixels; per weight, against the sum of the magnitudes the direct sum adds,
// sum_{n,p,q} |dy| |x|, the same 2^-20 bound (measured: 2^-22.05 at worst here, the direct kernel
// 2^-22.09 on the same shapes). The shapes: partial tiles and tile
// vectors, chunks over images (the last geometry: 2 chunks, the second partial, so Mw is added to),
// channels not a multiple of 16 (13, 33, 5) or of a product tile's 48, outputs not a multiple of 8.
TEST_CASE("conv2d Winograd F(3x3,2x2): the weight gradient within the stated bound of sum |dy||x| of the double reference") {
  Rng rng(29);
  double worst = 0;
  for (const ConvGeom& g : winograd_geoms()) {
    const std::string shape = describe(g);
    INFO(shape);
    auto xd = random_vec(wino_x_size(g), rng), dyd = random_vec(wino_y_size(g), rng);
    for (auto* v : {&xd, &dyd})
      for (double& e : *v) e = double(float(e));
    std::vector<double> dw_ref(wino_w_size(g)), dw_mag(wino_w_size(g));
    cpu::conv2d_backward_weight_ref(dw_ref.data(), dyd.data(), xd.data(), g);
    cpu::conv2d_backward_weight_ref(dw_mag.data(), magnitudes(dyd).data(), magnitudes(xd).data(), g);
    const auto x = to_float(xd), dy = to_float(dyd);
    GuardedWorkspace ws(cpu::conv2d_winograd_workspace(g));
    std::vector<float> dw(wino_w_size(g), NAN);
    cpu::conv2d_winograd_backward_weight(dw.data(), dy.data(), x.data(), g, ws.v.data());
    CHECK_MESSAGE(ws.intact(), "the weight gradient wrote past its workspace of ", ws.size, " floats");
    const double r = worst_ratio(dw, dw_ref, dw_mag);
    CHECK(r <= kWinogradBound);  // false for NaN
    worst = std::max(worst, r);
  }
  MESSAGE("largest error / sum |dy||x|: weight gradient 2^", std::log2(worst));
}

TEST_CASE("conv2d Winograd: the same bits on 1 and 2 threads") {
  Rng rng(5);
  for (const ConvGeom& g : {ConvGeom{2, 33, 13, 37, 41, 3, 3, 1, 1}, ConvGeom{3, 64, 16, 16, 64, 3, 3, 1, 1},
                            ConvGeom{2, 256, 32, 8, 24, 3, 3, 1, 1}}) {  // the last: 2 chunks of the weight gradient
    const auto x = to_float(random_vec(wino_x_size(g), rng)), w = to_float(random_vec(wino_w_size(g), rng));
    const auto b = to_float(random_vec(size_t(g.K), rng)), dy = to_float(random_vec(wino_y_size(g), rng));
    std::vector<float> y[2], dx[2], dw[2];
    for (int threads : {1, 2}) {
      const ScopedOmpThreads scope(threads);
      std::vector<float> ws(size_t(cpu::conv2d_winograd_workspace(g)));
      y[threads - 1].assign(wino_y_size(g), NAN);
      dx[threads - 1].assign(wino_x_size(g), NAN);
      dw[threads - 1].assign(wino_w_size(g), NAN);
      cpu::conv2d_winograd_forward(y[threads - 1].data(), x.data(), w.data(), b.data(), g, ws.data());
      cpu::conv2d_winograd_backward_data(dx[threads - 1].data(), dy.data(), w.data(), g, ws.data());
      cpu::conv2d_winograd_backward_weight(dw[threads - 1].data(), dy.data(), x.data(), g, ws.data());
    }
    CHECK(y[0] == y[1]);
    CHECK(dx[0] == dx[1]);
    CHECK(dw[0] == dw[1]);
    CHECK(std::all_of(y[0].begin(), y[0].end(), [](float v) { return std::isfinite(v); }));
    CHECK(std::all_of(dw[0].begin(), dw[0].end(), [](float v) { return std::isfinite(v); }));
  }
}

// A NaN input is in 4 of a 4x4 tile's transformed rows and columns; the output transform combines only
// those of the outputs whose 3x3 window holds it (conv2d_winograd.h): the NaN outputs are exactly the
// direct convolution's, with the ReLU too (relu_forward's rule: NaN passes).
TEST_CASE("conv2d Winograd: a NaN input makes exactly the outputs whose window holds it NaN, ReLU or not") {
  const ConvGeom g{1, 32, 9, 35, 32, 3, 3, 1, 1};
  Rng rng(8);
  for (const auto& [h, w0] : std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {4, 17}, {8, 34}, {3, 32}}) {
    CAPTURE(h);
    CAPTURE(w0);
    auto x = to_float(random_vec(wino_x_size(g), rng));
    const auto w = to_float(random_vec(wino_w_size(g), rng)), b = to_float(random_vec(size_t(g.K), rng));
    x[size_t((5 * g.H + h) * g.W + w0)] = NAN;  // channel 5
    std::vector<float> ws(size_t(cpu::conv2d_winograd_workspace(g)));
    for (bool relu : {false, true}) {
      CAPTURE(relu);
      std::vector<float> y(wino_y_size(g), 0.f);
      cpu::conv2d_winograd_forward(y.data(), x.data(), w.data(), b.data(), g, ws.data(), relu);
      size_t wrong = 0, nans = 0;
      for (int64_t k = 0; k < g.K; ++k)
        for (int64_t p = 0; p < g.P(); ++p)
          for (int64_t q = 0; q < g.Q(); ++q) {
            const bool in_window = std::abs(p - h) <= 1 && std::abs(q - w0) <= 1;  // pad 1: output (p, q) reads p-1..p+1
            const bool is_nan = std::isnan(y[size_t((k * g.P() + p) * g.Q() + q)]);
            wrong += in_window != is_nan;
            nans += is_nan;
          }
      CHECK(wrong == 0);
      CHECK(nans > 0);
    }
  }
}

// The weight gradient's output transform mixes all 16 positions of (k, c)'s Mw, so a NaN does not keep
// the direct kernel's pattern of taps; what holds is which weights it reaches: a NaN in channel c of x
// makes NaN some taps of dW[k, c] for every k and nothing outside channel c; a NaN in output k of dy,
// some taps of dW[k, c] for every c and nothing outside output k. Never a finite result.
TEST_CASE("conv2d Winograd: a NaN in x or dy reaches the weight gradient of its channel or output, and only those") {
  const ConvGeom g{2, 20, 9, 35, 12, 3, 3, 1, 1};
  Rng rng(9);
  const auto x0 = to_float(random_vec(wino_x_size(g), rng)), dy0 = to_float(random_vec(wino_y_size(g), rng));
  std::vector<float> ws(size_t(cpu::conv2d_winograd_workspace(g)));
  for (int where = 0; where < 4; ++where) {
    CAPTURE(where);
    auto x = x0, dy = dy0;
    const bool in_x = where < 2;
    const int64_t ch = in_x ? 7 : 5;  // x's channel 7 or dy's output 5
    if (in_x)
      x[size_t(((where * g.C + ch) * g.H + 4 * where) * g.W + 17 * where)] = NAN;  // image 0 at (0, 0), image 1 at (4, 17)
    else
      dy[size_t((((where - 2) * g.K + ch) * g.P() + 8) * g.Q() + 34 * (where - 2))] = NAN;  // the last row, at q 0 and 34
    std::vector<float> dw(wino_w_size(g), 0.f);
    cpu::conv2d_winograd_backward_weight(dw.data(), dy.data(), x.data(), g, ws.data());
    size_t outside = 0, pairs_reached = 0;
    for (int64_t k = 0; k < g.K; ++k)
      for (int64_t c = 0; c < g.C; ++c) {
        bool any = false;
        for (int t = 0; t < 9; ++t) any |= std::isnan(dw[size_t((k * g.C + c) * 9 + t)]);
        const bool in_reach = in_x ? c == ch : k == ch;
        outside += any && !in_reach;
        pairs_reached += any && in_reach;
      }
    CHECK(outside == 0);
    CHECK(pairs_reached == size_t(in_x ? g.K : g.C));
  }
}

TEST_CASE("conv2d routing: Winograd for DSen2-CR's convolutions, the direct kernels elsewhere, none when switched off") {
  const ConvGeom body{1, 256, 128, 128, 256, 3, 3, 1, 1}, head{1, 13, 128, 128, 256, 3, 3, 1, 1};
  const ConvGeom tail{1, 256, 128, 128, 13, 3, 3, 1, 1}, resnet_layer1{32, 64, 16, 16, 64, 3, 3, 1, 1};
  const ConvGeom small_body{8, 64, 64, 64, 64, 3, 3, 1, 1}, wide_rows{2, 256, 16, 16, 256, 3, 3, 1, 1};
  CHECK(cpu::conv2d_path(body, true) == std::string("winograd"));
  CHECK(cpu::conv2d_path(body, false) == std::string("winograd dx, dw"));
  CHECK(cpu::conv2d_path(head, true) == std::string("winograd"));
  CHECK(cpu::conv2d_path(head, false) == std::string("direct3x3"));  // dx has 13 outputs, dw 13 channels
  CHECK(cpu::conv2d_path(tail, true) == std::string("direct3x3"));  // 13 outputs
  CHECK(cpu::conv2d_path(tail, false) == std::string("direct3x3, winograd dx"));  // dw: 13 outputs
  CHECK(cpu::conv2d_path(small_body, false) == std::string("direct3x3, winograd dx"));  // dw: 64 channels
  CHECK(cpu::conv2d_path(wide_rows, false) == std::string("direct3x3"));  // rows of 16
  const ConvGeom pad2{1, 128, 6, 18, 128, 3, 3, 1, 2};  // dy's rows of 20, x's of 18: dw by Winograd, dx not
  CHECK(cpu::conv2d_path(pad2, false) == std::string("direct3x3, winograd dw"));
  CHECK(cpu::conv2d_path(resnet_layer1, true) == std::string("direct3x3"));  // rows of 16
  CHECK(cpu::conv2d_path(resnet_layer1, false) == std::string("direct3x3"));
  REQUIRE(cpu::winograd_enabled());
  cpu::set_winograd_enabled(false);
  CHECK(cpu::conv2d_path(body, true) == std::string("direct3x3"));
  CHECK(cpu::conv2d_path(body, false) == std::string("direct3x3"));
  cpu::set_winograd_enabled(true);

  // Through conv2d_forward / conv2d_backward both ways: the routed results within the bound of each other
  // (db comes from bias_backward either way: the same bits).
  const ConvGeom g{2, 128, 10, 40, 128, 3, 3, 1, 1};
  REQUIRE(cpu::conv2d_path(g, true) == std::string("winograd"));
  REQUIRE(cpu::conv2d_path(g, false) == std::string("winograd dx, dw"));
  Rng rng(2);
  const auto xd = random_vec(wino_x_size(g), rng), wd = random_vec(wino_w_size(g), rng), dyd = random_vec(wino_y_size(g), rng);
  const auto x = to_float(xd), w = to_float(wd), dy = to_float(dyd);
  std::vector<double> y_mag(wino_y_size(g)), dx_mag(wino_x_size(g)), dw_mag(wino_w_size(g));
  cpu::conv2d_forward_ref(y_mag.data(), magnitudes(xd).data(), magnitudes(wd).data(), static_cast<const double*>(nullptr), g);
  cpu::conv2d_backward_data_ref(dx_mag.data(), magnitudes(dyd).data(), magnitudes(wd).data(), g);
  cpu::conv2d_backward_weight_ref(dw_mag.data(), magnitudes(dyd).data(), magnitudes(xd).data(), g);
  std::vector<float> out[2][4];
  for (bool on : {true, false}) {
    cpu::set_winograd_enabled(on);
    std::vector<float> ws(size_t(cpu::conv2d_workspace(g)));
    auto& o = out[on ? 0 : 1];
    o[0].assign(wino_y_size(g), NAN), o[1].assign(wino_x_size(g), NAN), o[2].assign(wino_w_size(g), NAN);
    o[3].assign(size_t(g.K), NAN);
    cpu::conv2d_forward(o[0].data(), x.data(), w.data(), nullptr, g, ws.data());
    cpu::conv2d_backward(o[1].data(), o[2].data(), o[3].data(), dy.data(), x.data(), w.data(), g, ws.data());
  }
  cpu::set_winograd_enabled(true);
  auto as_double = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  CHECK(worst_ratio(out[0][0], as_double(out[1][0]), y_mag) <= kWinogradBound);
  CHECK(worst_ratio(out[0][1], as_double(out[1][1]), dx_mag) <= kWinogradBound);
  CHECK(worst_ratio(out[0][2], as_double(out[1][2]), dw_mag) <= kWinogradBound);
  for (int i = 0; i < 3; ++i) CHECK(out[0][i] != out[1][i]);  // the two algorithms did run
  CHECK(out[0][3] == out[1][3]);
}
