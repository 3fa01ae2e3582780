// test_conv.cpp: conv2d: reference backward vs finite differences (double),
// the im2col + GEMM fast path vs the reference, the autograd op vs PyTorch
// fixtures, only-what-is-needed gradients, and error cases.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "backends/cuda/backend.h"
#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops/activation.h"
#include "engine/ops/arith.h"
#include "engine/ops/conv.h"
#include "engine/ops/linear.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/conv2d_direct.h"
#include "kernels/cpu/gemm.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;
using cpu::ConvGeom;

namespace {
const SafetensorsFile& conv_fixtures() { return fixture_file("ops_conv.safetensors"); }
Tensor fx(const std::string& name) { return conv_fixtures().at(name).clone(); }

size_t x_size(const ConvGeom& g) { return size_t(g.N * g.C * g.H * g.W); }
size_t w_size(const ConvGeom& g) { return size_t(g.K * g.C * g.R * g.S); }
size_t y_size(const ConvGeom& g) { return size_t(g.N * g.K * g.P() * g.Q()); }

// The odd small shapes of the brief: N=2, C=3, H=7, W=5, K=4 with the kernel sizes,
// strides and paddings ResNet and DSen2-CR use.
std::vector<ConvGeom> small_geoms() {
  std::vector<ConvGeom> gs;
  for (auto [R, stride, pad] : std::vector<std::array<int64_t, 3>>{
           {3, 1, 1}, {3, 1, 0}, {3, 2, 0}, {3, 2, 1}, {1, 1, 0}, {1, 2, 0}, {1, 1, 1}, {7, 2, 3}, {7, 1, 1}})
    gs.push_back(ConvGeom{2, 3, 7, 5, 4, R, R, stride, pad});
  gs.push_back(ConvGeom{1, 2, 6, 7, 3, 3, 2, 1, 1});  // non-square kernel
  return gs;
}
}  // namespace

TEST_CASE("conv2d reference: backward matches finite differences in double") {
  Rng rng(7);
  for (const ConvGeom& g : small_geoms()) {
    CAPTURE(g.R);
    CAPTURE(g.stride);
    CAPTURE(g.pad);
    auto x = random_vec(x_size(g), rng), w = random_vec(w_size(g), rng), b = random_vec(size_t(g.K), rng);
    auto r = random_vec(y_size(g), rng);  // dL/dy for L = <y, r>
    auto loss = [&](const std::vector<double>& xs, const std::vector<double>& ws, const std::vector<double>& bs) {
      std::vector<double> y(y_size(g));
      cpu::conv2d_forward_ref(y.data(), xs.data(), ws.data(), bs.data(), g);
      return dot(y, r);
    };
    std::vector<double> dx(x.size()), dw(w.size()), db(b.size());
    cpu::conv2d_backward_data_ref(dx.data(), r.data(), w.data(), g);
    cpu::conv2d_backward_weight_ref(dw.data(), r.data(), x.data(), g);
    cpu::bias_backward(db.data(), r.data(), g.N, g.K, g.P() * g.Q());
    check_close(dx, numeric_grad([&](const std::vector<double>& v) { return loss(v, w, b); }, x), 1e-7, 1e-6, "dx");
    check_close(dw, numeric_grad([&](const std::vector<double>& v) { return loss(x, v, b); }, w), 1e-7, 1e-6, "dw");
    check_close(db, numeric_grad([&](const std::vector<double>& v) { return loss(x, w, v); }, b), 1e-7, 1e-6, "db");
  }
}

TEST_CASE("conv2d reference: forward matches a hand-computed 1x1x3x3 example") {
  // x = 1..9 in a 3x3 image, w = all-ones 2x2 kernel, stride 1, no pad, bias 0.5:
  // each output is the sum of a 2x2 block plus 0.5.
  ConvGeom g{1, 1, 3, 3, 1, 2, 2, 1, 0};
  std::vector<double> x{1, 2, 3, 4, 5, 6, 7, 8, 9}, w{1, 1, 1, 1}, b{0.5}, y(4);
  cpu::conv2d_forward_ref(y.data(), x.data(), w.data(), b.data(), g);
  CHECK(y == std::vector<double>{12.5, 16.5, 24.5, 28.5});
}

TEST_CASE("conv2d fast path: forward and all gradients match the reference") {
  std::vector<ConvGeom> gs = small_geoms();
  gs.push_back(ConvGeom{4, 3, 20, 20, 5, 3, 3, 1, 1});   // 3 images per GEMM group, then a group of 1
  gs.push_back(ConvGeom{5, 6, 3, 4, 7, 1, 1, 1, 0});     // pointwise, grouped (im2col is a gather)
  gs.push_back(ConvGeom{1, 17, 9, 11, 13, 1, 1, 1, 0});  // pointwise, one image: x is the matrix
  gs.push_back(ConvGeom{2, 33, 12, 10, 19, 3, 3, 2, 1}); // channel counts off every SIMD width
  gs.push_back(ConvGeom{1, 3, 40, 37, 8, 3, 3, 1, 1});   // one image, PQ > the group target: im2col
  // Stride 1 with >= 32 input channels, one image per GEMM: shifted GEMMs on the padded image.
  gs.push_back(ConvGeom{1, 32, 11, 12, 13, 3, 3, 1, 1});  // few output channels (DSen2-CR's tail)
  gs.push_back(ConvGeom{1, 64, 12, 13, 64, 3, 3, 1, 1});
  gs.push_back(ConvGeom{2, 64, 33, 32, 65, 3, 3, 1, 1});  // dw summed over 2 images
  gs.push_back(ConvGeom{1, 70, 10, 9, 64, 5, 5, 1, 2});   // 5x5, pad 2
  gs.push_back(ConvGeom{1, 64, 9, 10, 66, 3, 3, 1, 0});   // no padding
  gs.push_back(ConvGeom{1, 64, 9, 10, 64, 2, 3, 1, 1});   // non-square kernel
  // 3x3 stride 1 with rows of >= 16 outputs: the direct kernels (conv2d_direct.cpp).
  const std::vector<ConvGeom> direct = {
      {2, 15, 33, 17, 43, 3, 3, 1, 1},  // partial row vectors, 43 = 8*5+3 outputs, 3 vectors of k, 3 pixel blocks
      {1, 7, 10, 18, 13, 3, 3, 1, 0},   // no padding, 13 outputs (DSen2-CR's tail)
      {1, 5, 9, 20, 6, 3, 3, 1, 2},     // pad 2
      {3, 4, 16, 16, 64, 3, 3, 1, 1},   // rows of exactly one vector: a tile spans 3 rows
      {2, 5, 9, 14, 20, 3, 3, 1, 2},    // pad 2, dx rows of 14: dx by the k-vectorised kernel
      {2, 9, 6, 17, 100, 3, 3, 1, 1},   // dw: 7 vectors of k in lane groups of 2, 2, 3, the last one partial
      {1, 3, 3, 70, 5, 3, 3, 1, 1},     // rows of 70: dw blocks of one row
      {2, 3, 3, 130, 20, 3, 3, 1, 0},   // rows of 128 outputs (DSen2-CR's 128x128), 2 images, no padding
  };
  for (const ConvGeom& g : direct) CHECK(cpu::conv2d_path(g, true) == std::string("direct3x3"));
  gs.insert(gs.end(), direct.begin(), direct.end());
  // >= 32 outputs on rows of >= 20: the forward and dx by Winograd F(2x2, 3x3) (test_conv_winograd.cpp),
  // dw by the direct kernel; with >= 128 channels and outputs, dw by Winograd F(3x3, 2x2) too.
  const ConvGeom winograd{2, 32, 10, 41, 40, 3, 3, 1, 1}, winograd_dw{2, 128, 5, 22, 136, 3, 3, 1, 1};
  const ConvGeom winograd_dw_only{1, 128, 5, 18, 128, 3, 3, 1, 2};  // pad 2: dy's rows of 20, x's of 18
  CHECK(cpu::conv2d_path(winograd, true) == std::string("winograd"));
  CHECK(cpu::conv2d_path(winograd, false) == std::string("direct3x3, winograd dx"));
  CHECK(cpu::conv2d_path(winograd_dw, false) == std::string("winograd dx, dw"));
  CHECK(cpu::conv2d_path(winograd_dw_only, false) == std::string("direct3x3, winograd dw"));
  gs.push_back(winograd);
  gs.push_back(winograd_dw);
  gs.push_back(winograd_dw_only);
  // Batches of >= 64-pixel images: threads split the images (per-image GEMMs,
  // dW summed in fixed groups of images); and the k-vectorised forward of strided convs.
  const std::vector<std::pair<ConvGeom, std::string>> routed = {
      {{3, 6, 8, 9, 7, 1, 1, 1, 0}, "per_image"},      // pointwise: GEMMs on the NCHW planes
      {{20, 5, 9, 8, 6, 3, 3, 1, 1}, "per_image"},     // 8 groups of 2 or 3 images
      {{2, 5, 17, 16, 9, 3, 3, 2, 1}, "per_image"},    // strided 3x3: per-thread im2col
      {{5, 6, 9, 10, 5, 3, 3, 1, 1}, "per_image"},     // stride 1 but rows < 16
      {{2, 11, 15, 13, 20, 7, 7, 2, 3}, "kvec"},       // a 7x7/2 stem, 20 outputs: one partial vector
      {{1, 60, 9, 9, 70, 3, 3, 2, 1}, "kvec"},         // 70 outputs: a group of 4 vectors, then 1
      {{2, 60, 8, 8, 20, 3, 3, 1, 1}, "kvec"},         // stride 1, rows < 16 (ResNet's 8x8 stage)
      // One image, few outputs: the backward's path is the shifted GEMM, whose workspace is smaller than
      // the k-vectorised forward's (the forward wrote 1,200 floats past it).
      {{1, 64, 8, 8, 1, 3, 3, 1, 1}, "kvec"},
      {{1, 64, 6, 6, 1, 3, 3, 1, 0}, "kvec"},
      // 1x1 on planes of a multiple of 16 pixels: the q-vectorised tile with one tap.
      {{3, 20, 4, 4, 37, 1, 1, 1, 0}, "direct1x1"},    // one vector per image: a tile spans 3 images; 37 = 8*4+5
      {{2, 9, 8, 8, 16, 1, 1, 1, 0}, "direct1x1"},     // 8 vectors: tiles of 3, 3, 2
      {{1, 5, 4, 8, 3, 1, 1, 1, 0}, "direct1x1"},      // one 2-vector tile, 3 outputs
  };
  for (const auto& [g, path] : routed) {
    CHECK(cpu::conv2d_path(g, true) == path);
    gs.push_back(g);
  }
  Rng rng(11);
  for (const ConvGeom& g : gs) {
    CAPTURE(g.N);
    CAPTURE(g.C);
    CAPTURE(g.R);
    CAPTURE(g.stride);
    CAPTURE(g.pad);
    auto xd = random_vec(x_size(g), rng), wd = random_vec(w_size(g), rng), bd = random_vec(size_t(g.K), rng);
    auto dyd = random_vec(y_size(g), rng);
    // The reference runs in double on the same float-representable values.
    for (auto* v : {&xd, &wd, &bd, &dyd})
      for (double& e : *v) e = double(float(e));
    std::vector<double> y_ref(y_size(g)), dx_ref(xd.size()), dw_ref(wd.size()), db_ref(bd.size());
    cpu::conv2d_forward_ref(y_ref.data(), xd.data(), wd.data(), bd.data(), g);
    cpu::conv2d_backward_data_ref(dx_ref.data(), dyd.data(), wd.data(), g);
    cpu::conv2d_backward_weight_ref(dw_ref.data(), dyd.data(), xd.data(), g);
    cpu::bias_backward(db_ref.data(), dyd.data(), g.N, g.K, g.P() * g.Q());

    auto x = to_float(xd), w = to_float(wd), b = to_float(bd), dy = to_float(dyd);
    // The workspace, then a guard the kernels must not touch (a write past the size conv2d_workspace
    // gives lands there; ASan sees it too, this sees it in every build).
    const size_t ws_size = size_t(std::max<int64_t>(cpu::conv2d_workspace(g), 1)), guard = 8192;
    std::vector<float> ws(ws_size + guard, -12345.f);
    auto guard_intact = [&] {
      return std::all_of(ws.begin() + ptrdiff_t(ws_size), ws.end(), [](float v) { return v == -12345.f; });
    };
    std::vector<float> y(y_size(g), NAN), dx(x.size(), NAN), dw(w.size(), NAN), db(b.size(), NAN);
    cpu::conv2d_forward(y.data(), x.data(), w.data(), b.data(), g, ws.data());
    CHECK_MESSAGE(guard_intact(), "the forward wrote past its workspace of ", ws_size, " floats");
    cpu::conv2d_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), g, ws.data());
    CHECK_MESSAGE(guard_intact(), "the backward wrote past its workspace of ", ws_size, " floats");
    // A float sum of n products of O(1) values is off by ~eps*sqrt(n)*O(1) in any
    // order; the direct kernels sum in another order than the GEMMs, so the
    // absolute tolerance grows with the terms per output (1e-5 up to 64 terms).
    const double y_tol = 1e-5 * std::max(1.0, std::sqrt(double(g.C * g.R * g.S) / 64));
    const double dx_tol = 1e-5 * std::max(1.0, std::sqrt(double(g.K * g.R * g.S) / 64));
    check_close(y, y_ref, y_tol, 1e-5, "y");
    check_close(dx, dx_ref, dx_tol, 1e-5, "dx");
    check_close(dw, dw_ref, 1e-4, 1e-5, "dw");
    check_close(db, db_ref, 1e-4, 1e-5, "db");

    // Without bias, and asking for dw only / dx only.
    std::vector<float> y2(y.size(), NAN), dw2(w.size(), NAN), dx2(x.size(), NAN);
    cpu::conv2d_forward(y2.data(), x.data(), w.data(), nullptr, g, ws.data());
    std::vector<double> y2_ref(y_ref);
    const int64_t PQ = g.P() * g.Q();
    for (size_t i = 0; i < y2_ref.size(); ++i) y2_ref[i] -= bd[size_t(int64_t(i) / PQ % g.K)];
    check_close(y2, y2_ref, y_tol, 1e-5, "y without bias");
    cpu::conv2d_backward(nullptr, dw2.data(), nullptr, dy.data(), x.data(), nullptr, g, ws.data());
    check_close(dw2, dw_ref, 1e-4, 1e-5, "dw alone");
    cpu::conv2d_backward(dx2.data(), nullptr, nullptr, dy.data(), nullptr, w.data(), g, ws.data());
    check_close(dx2, dx_ref, dx_tol, 1e-5, "dx alone");
  }
}

// Training's weights must not depend on --threads. Every CPU path, with 1 and 2 threads: the same
// bits. (The per-image path summed dW per thread, and OpenBLAS split its GEMMs by the thread count.)
TEST_CASE("conv2d fast paths: forward and gradients the same bits on 1 and 2 threads") {
  const std::vector<ConvGeom> gs = {
      {20, 5, 9, 8, 6, 3, 3, 1, 1},      // per_image: 8 groups of images
      {16, 24, 16, 16, 32, 1, 1, 1, 0},  // per_image, pointwise
      {8, 16, 12, 12, 24, 3, 3, 2, 1},   // im2col, grouped images
      {2, 64, 20, 20, 128, 3, 3, 1, 1},  // winograd (forward and dx), direct3x3 (dw)
      {2, 128, 6, 24, 128, 3, 3, 1, 1},  // winograd (forward, dx and dw)
      {2, 64, 16, 16, 128, 3, 3, 1, 1},  // direct3x3
      {1, 64, 12, 13, 64, 3, 3, 1, 1},   // shifted
      {4, 64, 8, 8, 96, 3, 3, 1, 1},     // kvec forward, rows < 16
  };
  Rng rng(31);
  for (const ConvGeom& g : gs) {
    const std::string path = cpu::conv2d_path(g, true);
    CAPTURE(path);
    const auto x = to_float(random_vec(x_size(g), rng)), w = to_float(random_vec(w_size(g), rng));
    const auto b = to_float(random_vec(size_t(g.K), rng)), dy = to_float(random_vec(y_size(g), rng));
    std::vector<float> out[2][4];
    for (int threads : {1, 2}) {
      const ScopedOmpThreads scope(threads);
      std::vector<float> ws(size_t(std::max<int64_t>(cpu::conv2d_workspace(g), 1)));
      auto& o = out[threads - 1];
      o[0].assign(y_size(g), NAN), o[1].assign(x.size(), NAN), o[2].assign(w.size(), NAN), o[3].assign(b.size(), NAN);
      cpu::conv2d_forward(o[0].data(), x.data(), w.data(), b.data(), g, ws.data());
      cpu::conv2d_backward(o[1].data(), o[2].data(), o[3].data(), dy.data(), x.data(), w.data(), g, ws.data());
    }
    const std::string what[4] = {"y", "dx", "dw", "db"};
    for (int i = 0; i < 4; ++i) {
      CAPTURE(what[i]);
      CHECK(out[0][i] == out[1][i]);
      CHECK(std::all_of(out[0][i].begin(), out[0][i].end(), [](float v) { return std::isfinite(v); }));
    }
  }
}

TEST_CASE("conv2d op: forward and gradients match PyTorch") {
  int cases = 0;
  for (int i = 0; conv_fixtures().find(str("conv", i, ".x")); ++i, ++cases) {
    const std::string c = str("conv", i, ".");
    CAPTURE(c);
    Tensor x = fx(c + "x"), w = fx(c + "w"), cfg = fx(c + "cfg");
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    Tensor b;
    if (conv_fixtures().find(c + "b")) {
      b = fx(c + "b");
      b.set_requires_grad(true);
    }
    Tensor y = conv2d(x, w, b, int(cfg.to_vector()[0]), int(cfg.to_vector()[1]));
    check_close(y, conv_fixtures().at(c + "y"), 1e-5, 1e-4, "y");
    y.backward(conv_fixtures().at(c + "dy"));
    check_close(x.grad(), conv_fixtures().at(c + "dx"), 1e-5, 1e-4, "dx");
    check_close(w.grad(), conv_fixtures().at(c + "dw"), 1e-4, 1e-4, "dw");
    if (b.defined()) check_close(b.grad(), conv_fixtures().at(c + "db"), 1e-4, 1e-4, "db");
  }
  CHECK(cases == 6);
}

TEST_CASE("conv2d_relu equals relu(conv2d) on every path: output, gradients, NaN") {
  // Direct 3x3 and 1x1 (ReLU fused into the store), k-vectorised, per-image GEMM
  // and im2col geometries (ReLU as a second pass): results must be identical.
  Rng rng(23);
  struct Case {
    std::vector<int64_t> x, w;
    int stride, pad;
  };
  for (const Case& c : {Case{{2, 5, 9, 20}, {7, 5, 3, 3}, 1, 1}, Case{{2, 60, 8, 8}, {20, 60, 3, 3}, 1, 1},
                        Case{{3, 6, 8, 9}, {7, 6, 1, 1}, 1, 0}, Case{{1, 3, 9, 7}, {4, 3, 3, 3}, 2, 1},
                        Case{{2, 6, 4, 8}, {11, 6, 1, 1}, 1, 0}}) {  // the last: direct 1x1, ReLU fused
    CAPTURE(c.x[1]);
    CAPTURE(c.stride);
    Tensor x1 = Tensor::randn(Shape(c.x), rng).set_requires_grad(true);
    Tensor w1 = Tensor::randn(Shape(c.w), rng).set_requires_grad(true);
    Tensor b1 = Tensor::randn({c.w[0]}, rng).set_requires_grad(true);
    Tensor x2 = x1.detach().clone().set_requires_grad(true), w2 = w1.detach().clone().set_requires_grad(true);
    Tensor b2 = b1.detach().clone().set_requires_grad(true);
    Tensor y1 = conv2d_relu(x1, w1, b1, c.stride, c.pad), y2 = relu(conv2d(x2, w2, b2, c.stride, c.pad));
    const std::vector<float> v1 = y1.to_vector();
    CHECK(v1 == y2.to_vector());
    CHECK(std::count(v1.begin(), v1.end(), 0.f) > int64_t(v1.size() / 4));  // the ReLU really cuts
    Tensor dy = Tensor::randn(y1.shape(), rng);
    y1.backward(dy);
    y2.backward(dy);
    check_close(x1.grad(), x2.grad(), 0, 0, "dx");
    check_close(w1.grad(), w2.grad(), 0, 0, "dw");
    check_close(b1.grad(), b2.grad(), 0, 0, "db");
  }
  // A NaN passes the fused ReLU, as it passes relu().
  std::vector<float> xv(64, 0.f);
  xv[20] = NAN;
  Tensor x = Tensor::from_vector({1, 1, 4, 16}, xv), w = Tensor::ones({1, 1, 3, 3});
  const std::vector<float> y = conv2d_relu(x, w, Tensor(), 1, 1).to_vector();
  CHECK(std::isnan(y[20]));
  CHECK(y[63] == 0.f);
}

// conv2d_residual is add_scaled(r, conv2d(x, w, b), s) in one op: the same float operations in the
// same order on every backend (the CPU's second pass; CUDA's tensor-core epilogue computes r + s v
// from the stored sum v, as add_scaled does), so output and all four gradients are bitwise equal, in
// TF32 and fp32 math on CUDA alike. (In bfloat16 the CUDA epilogue rounds r + s v once where add_scaled
// rounds v first: bounded, not bitwise, in the bfloat16 test below.)
TEST_CASE("conv2d_residual equals add_scaled(r, conv2d(x, w, b), s): output and every gradient, CPU and CUDA") {
  std::vector<Device> devices{Device::CPU};
  if (cuda::register_cuda_backend()) devices.push_back(Device::CUDA);
  for (Device d : devices)
    for (cuda::Math m : {cuda::Math::Tf32, cuda::Math::Fp32}) {
      if (d == Device::CPU && m == cuda::Math::Fp32) continue;
      const cuda::MathScope math(m);
      const std::string dev = str(device_name(d), " ", cuda::math_name(m));
      CAPTURE(dev);
      Rng rng(31);
      auto leaf = [&](Shape s) { return Tensor::randn(s, rng).to(d).set_requires_grad(true); };
      const Tensor x1 = leaf({2, 8, 9, 7}), w1 = leaf({8, 8, 3, 3}), b1 = leaf({8}), r1 = leaf({2, 8, 9, 7});
      auto twin = [](const Tensor& t) { return t.detach().clone().set_requires_grad(true); };
      const Tensor x2 = twin(x1), w2 = twin(w1), b2 = twin(b1), r2 = twin(r1);
      const Tensor y1 = conv2d_residual(x1, w1, b1, r1, 0.1f, 1, 1), y2 = add_scaled(r2, conv2d(x2, w2, b2, 1, 1), 0.1f);
      CHECK(y1.to_vector() == y2.to_vector());
      const Tensor dy = Tensor::randn(y1.shape(), rng).to(d);
      y1.backward(dy);
      y2.backward(dy);
      CHECK(x1.grad().to_vector() == x2.grad().to_vector());
      CHECK(w1.grad().to_vector() == w2.grad().to_vector());
      CHECK(b1.grad().to_vector() == b2.grad().to_vector());
      CHECK(r1.grad().to_vector() == r2.grad().to_vector());
    }
  CHECK_THROWS_WITH_AS(conv2d_residual(Tensor::ones({1, 2, 5, 5}), Tensor::ones({3, 2, 3, 3}), Tensor(),
                                       Tensor::ones({1, 2, 5, 5}), 0.1f, 1, 1),
                       doctest::Contains("must have the output's shape (1,3,5,5)"), Error);
}

TEST_CASE("conv2d op: computes only the gradients that are needed") {
  Rng rng(3);
  Tensor x = Tensor::randn({2, 3, 7, 5}, rng), w = Tensor::randn({4, 3, 3, 3}, rng), b = Tensor::randn({4}, rng);
  w.set_requires_grad(true);  // x is data: the first conv of a network needs no dx
  Tensor y = conv2d(x, w, b, 1, 1);
  y.backward(Tensor::ones(y.shape()));
  CHECK(w.grad().defined());
  CHECK(!x.grad().defined());
  CHECK(!b.grad().defined());
  {
    NoGradGuard ng;
    Tensor x2 = x.clone().set_requires_grad(true);
    CHECK(!conv2d(x2, w, b, 1, 1).requires_grad());  // nothing recorded in no-grad mode
  }
}

TEST_CASE("conv2d op: bad shapes raise errors that name the op and the shapes") {
  Tensor x = Tensor::zeros({2, 3, 8, 8}), w = Tensor::zeros({4, 5, 3, 3});
  CHECK_THROWS_WITH_AS(conv2d(x, w, Tensor()),
                       "conv2d: input (2,3,8,8) has 3 channels but weight (4,5,3,3) expects 5", Error);
  CHECK_THROWS_WITH_AS(conv2d(Tensor::zeros({3, 8, 8}), Tensor::zeros({4, 3, 3, 3}), Tensor()),
                       doctest::Contains("conv2d: input (3,8,8) must be 4-D"), Error);
  CHECK_THROWS_WITH_AS(conv2d(x, Tensor::zeros({4, 3, 3}), Tensor()), doctest::Contains("conv2d: weight (4,3,3)"),
                       Error);
  CHECK_THROWS_WITH_AS(conv2d(Tensor::zeros({1, 3, 4, 4}), Tensor::zeros({2, 3, 7, 7}), Tensor(), 1, 1),
                       doctest::Contains("conv2d: kernel 7x7"), Error);
  CHECK_THROWS_WITH_AS(conv2d(x, Tensor::zeros({4, 3, 3, 3}), Tensor::zeros({5})),
                       doctest::Contains("conv2d: bias (5)"), Error);
  CHECK_THROWS_WITH_AS(conv2d(x, Tensor::zeros({4, 3, 3, 3}), Tensor(), 0), doctest::Contains("conv2d: stride 0"),
                       Error);
  // A kernel exactly as large as the padded input is fine: one output pixel.
  CHECK(conv2d(Tensor::zeros({1, 3, 5, 5}), Tensor::zeros({2, 3, 7, 7}), Tensor(), 1, 1).shape() ==
        Shape{1, 2, 1, 1});
}

TEST_CASE("conv2d, conv2d_relu, conv2d_residual and linear in bfloat16: the float32 op on the same rounded inputs, rounded once") {
  // Operands rounded to bfloat16; the bfloat16 ops compute in float32 and round their results once
  // (2^-9 relative), so against the float32 op on the same rounded values 2^-8 relative bounds every
  // output and gradient, plus an absolute floor of 2^-8 of the output's scale for results near 0.
  // conv2d_residual r + s v rounds twice on the CPU (v stored, then the sum) and once in the CUDA
  // epilogue: 2^-9 |s v| + 2^-9 |y| stays inside the same bound. On CUDA the float32 op runs in TF32
  // math, which holds bfloat16 operands exactly.
  std::vector<Device> devices{Device::CPU};
  if (cuda::register_cuda_backend()) devices.push_back(Device::CUDA);
  for (const Device d : devices) {
  const std::string dev = device_name(d);
  CAPTURE(dev);
  Rng rng(17);
  auto bf = [&](const Shape& s) { return Tensor::randn(s, rng).to(DType::BF16).to(d); };
  struct Layer {
    const char* what;
    Tensor x, w, b, r;
    int kind;  // 0 conv2d, 1 conv2d_relu, 2 linear, 3 conv2d_residual
  };
  const Layer layers[] = {{"conv2d 3x3/1 pad 1", bf({2, 5, 9, 7}), bf({6, 5, 3, 3}), bf({6}), Tensor(), 0},
                          {"conv2d_relu 3x3/2", bf({2, 4, 9, 9}), bf({3, 4, 3, 3}), bf({3}), Tensor(), 1},
                          {"linear", bf({5, 37}), bf({11, 37}), bf({11}), Tensor(), 2},
                          {"conv2d_residual 3x3/1 pad 1, s 0.1", bf({2, 8, 9, 7}), bf({8, 8, 3, 3}), bf({8}),
                           bf({2, 8, 9, 7}), 3}};
  for (const Layer& L : layers) {
    CAPTURE(L.what);
    std::vector<Tensor> got, want;
    for (DType dt : {DType::BF16, DType::F32}) {
      Tensor x = L.x.to(dt).clone().set_requires_grad(true), w = L.w.to(dt).clone().set_requires_grad(true),
             b = L.b.to(dt).clone().set_requires_grad(true);
      Tensor r = L.r.defined() ? L.r.to(dt).clone().set_requires_grad(true) : Tensor();
      Tensor y = L.kind == 3   ? conv2d_residual(x, w, b, r, 0.1f, 1, 1)
                 : L.kind == 2 ? linear(x, w, b)
                 : L.kind == 1 ? conv2d_relu(x, w, b, 2, 0)
                               : conv2d(x, w, b, 1, 1);
      CHECK(y.dtype() == dt);
      Rng dy_rng(5);  // the same dy for both runs, rounded to bfloat16
      y.backward(Tensor::randn(y.shape(), dy_rng).to(DType::BF16).to(d).to(dt));
      for (const Tensor& t : {y, x.grad(), w.grad(), b.grad()}) (dt == DType::BF16 ? got : want).push_back(t);
      if (r.defined()) (dt == DType::BF16 ? got : want).push_back(r.grad());
    }
    const char* names[] = {"y", "dx", "dw", "db", "dr"};
    for (size_t i = 0; i < got.size(); ++i) {
      CAPTURE(names[i]);
      CHECK(got[i].dtype() == DType::BF16);
      const std::vector<float> w32 = want[i].to_vector();
      double scale = 0;
      for (float v : w32) scale = std::max(scale, double(std::fabs(v)));
      check_close(got[i].to(DType::F32).to_vector(), w32, scale / 256, 1.0 / 256, names[i]);
    }
  }
  }
}
