/* test_cuda_tensor_core_ops.cpp: the CUDA backend's tensor-core kernels (kernels/cuda/conv2d_tc.cu,
 * linear_tc.cu on mma_core.cuh) in every configuration the dispatch can pick, run by the emulator
 * (and by test_cuda_real on a GPU), against a float64 reference on the operands the tensor cores see.
 *
 * Configurations: all six of the menu (kernels/cuda/tc_dispatch.h: four tile shapes, 2 to 4 pipeline
 * stages), the weight gradient with 1 and 3 reduction splits and the automatic count, TF32 (float tensors) and bf16 (bfloat16
 * tensors), at the geometries of the two models (3x3 stride 1 and 2, 1x1 stride 1 and 2, the 7x7
 * stride-2 stem with 13 channels) at odd sizes, one of them spanning several tiles in M and N, and
 * strides 3 and 4 with rectangular kernels for the data gradient's phase decomposition.
 * Under the emulator each runs forward, reversed and shuffled, and the outputs must be bitwise equal.
 * The Hopper kernels (conv2d_wgmma.cu: TF32 and bf16 on wgmma and TMA) run the same geometries and bounds;
 * the warp-specialised forward must give their forward's bits.
 * Batch-norm moments from the forwards' epilogues (bn_moments.cuh): every configuration and wgmma.
 *
 * The bound, per element: the reference is the float64 sum of the products of the rounded operands
 * (tf32_round of each float, or the bfloat16 values themselves), whose products the tensor cores
 * form exactly; what remains is the fp32 accumulation, at most 2 Kred 2^-24 of sum |a b| (Kred terms,
 * 2 roundings each at worst on the hardware), plus, for bfloat16 outputs, the final rounding (2^-8
 * of |ref|). A kernel that skipped the TF32 rounding would be off by ~2^-11 of the sum and fail.
 */
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "backends/cuda/backend.h"
#include "engine/backend.h"
#include "engine/random.h"
#include "kernels/common/bfloat16.h"
#include "kernels/common/tf32.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cuda/batchnorm.h"
#include "kernels/cuda/conv2d_tc.h"
#include "kernels/cuda/conv2d_wgmma.h"
#include "kernels/cuda/linear_tc.h"
#include "tests/common/check.h"
#include "tests/emu/emu_util.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {

using V = std::vector<double>;

// Values in [-1, 1) as element type E, and what a tensor core multiplies for each.
template <typename E>
struct Operand {
  std::vector<E> values;
  V seen;  // tf32_round(float) or the bfloat16 value, in double
  V abs;   // |seen|
};

template <typename E>
Operand<E> operand(size_t n, Rng& rng) {
  Operand<E> o;
  for (size_t i = 0; i < n; ++i) {
    const float f = float(2 * rng.uniform() - 1);
    const E e = E(f);
    const double s = std::is_same_v<E, float> ? double(tf32_round(f)) : double(float(e));
    o.values.push_back(e), o.seen.push_back(s), o.abs.push_back(std::fabs(s));
  }
  return o;
}

// Whether this device lets a block have the shared memory that configuration `config` of the menu takes
// (an sm_86 or sm_89 has 99 KiB; TF32's config 1 needs 105): the loops over every configuration skip it
// where it does not, saying so (test_cuda_real on such a card). Under the emulator (227 KiB) all fit.
template <typename E>
bool config_fits(int config) {
  const bool fits = cuda::tc_config_fits_device(config, !std::is_same_v<E, float>);
  if (!fits) MESSAGE("skipped: configuration ", config, " needs more shared memory than this device gives a block");
  return fits;
}

template <typename E>
std::vector<double> download_double(const DeviceBuffer<E>& b) {
  const std::vector<E> h = b.download();
  return std::vector<double>(h.begin(), h.end());  // E -> float -> double, exactly
}

// got within the bound of ref, given mag (the reference on |operands|) and kred terms per element.
template <typename E>
void check_bound(const std::string& what, const V& got, const V& ref, const V& mag, int64_t kred) {
  REQUIRE(got.size() == ref.size());
  const double acc = 2.0 * double(kred) * std::ldexp(1.0, -24) + 1e-7;
  const double out_round = std::is_same_v<E, float> ? 0.0 : std::ldexp(1.0, -8);  // bf16: 8 significant bits
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double bound = acc * mag[i] + out_round * std::fabs(ref[i]);
    if (!(std::fabs(got[i] - ref[i]) <= bound)) {  // NaN fails
      if (bad++ == 0) first = i;
    }
  }
  CHECK_MESSAGE(bad == 0, what, ": ", bad, " of ", got.size(), " elements out of bound; first [", first, "] got ",
                got[first], ", want ", ref[first]);
}

// Runs f (it launches and returns the downloaded outputs) in every order; all must be bitwise equal.
// (Under ASan in one order: emu_util.h's kSweepOrders says why.)
V in_every_order(const std::string& what, const std::function<V()>& f) {
  V first;
  for (emu::Order o : kSweepOrders) {
    const ScopedOrder so(o, 3);
    V got = f();
    if (first.empty()) {
      first = got;
      continue;
    }
    CHECK_MESSAGE(std::memcmp(got.data(), first.data(), got.size() * sizeof(double)) == 0, what, ": order ",
                  emu::order_name(o), " differs from the forward order");
  }
  return first;
}

template <typename E>
void conv_case(const ConvGeom& g, uint64_t seed, const std::vector<int>& configs) {
  REQUIRE(cuda::register_cuda_backend());
  Rng rng(seed);
  const int64_t xs = g.N * g.C * g.H * g.W, wsz = g.K * g.C * g.R * g.S, ysz = g.N * g.K * g.P() * g.Q();
  const Operand<E> x = operand<E>(size_t(xs), rng), w = operand<E>(size_t(wsz), rng), dy = operand<E>(size_t(ysz), rng);
  const Operand<E> b = operand<E>(size_t(g.K), rng);
  // References on the operands the tensor cores see; the bias is added in fp32 (exactly representable).
  V bias(b.values.begin(), b.values.end()), abias(size_t(g.K));
  for (size_t k = 0; k < bias.size(); ++k) abias[k] = std::fabs(bias[k]);
  const size_t ny = size_t(ysz), nx = size_t(xs), nw = size_t(wsz);
  V y(ny), ym(ny), yr(ny), dx(nx), dxm(nx), dw(nw), dwm(nw);
  cpu::conv2d_forward_ref<double>(y.data(), x.seen.data(), w.seen.data(), bias.data(), g);
  cpu::conv2d_forward_ref<double>(ym.data(), x.abs.data(), w.abs.data(), abias.data(), g);
  cpu::conv2d_forward_ref<double>(yr.data(), x.seen.data(), w.seen.data(), nullptr, g);
  for (double& v : yr) v = v < 0 ? 0 : v;
  cpu::conv2d_backward_data_ref<double>(dx.data(), dy.seen.data(), w.seen.data(), g);
  cpu::conv2d_backward_data_ref<double>(dxm.data(), dy.abs.data(), w.abs.data(), g);
  cpu::conv2d_backward_weight_ref<double>(dw.data(), dy.seen.data(), x.seen.data(), g);
  cpu::conv2d_backward_weight_ref<double>(dwm.data(), dy.abs.data(), x.abs.data(), g);
  const int64_t crs = g.C * g.R * g.S, red_dx = g.K * g.R * g.S, red_dw = g.N * g.P() * g.Q();

  DeviceBuffer<E> dX(x.values), dW(w.values), dB(b.values), dDY(dy.values);
  const std::string geom = "x (" + std::to_string(g.N) + "," + std::to_string(g.C) + "," + std::to_string(g.H) +
                           "," + std::to_string(g.W) + ") w (" + std::to_string(g.K) + "," + std::to_string(g.C) +
                           "," + std::to_string(g.R) + "," + std::to_string(g.S) + ") stride " +
                           std::to_string(g.stride) + " pad " + std::to_string(g.pad) +
                           (std::is_same_v<E, float> ? " tf32" : " bf16");
  for (int config : configs) {
    if (!config_fits<E>(config)) continue;
    const std::string where = geom + ", config " + std::to_string(config) + " (" + cuda::tc_config_name(config) + ")";
    const cuda::TcPlan plan{config, 1};
    check_bound<E>(where + ": forward y", in_every_order(where + " forward", [&] {
                     DeviceBuffer<E> out(ny);
                     cuda::conv2d_tc_forward(out.p, dX.p, dW.p, dB.p, g, false, plan);
#ifndef NIMBUS_CUDA_RUNTIME
                     // The padded shared-memory rows: ldmatrix's eight rows in eight bank groups.
                     if (!std::is_same_v<E, float>) CHECK(emu::last_launch_stats().smem_bank_conflicts == 0);
#endif
                     return download_double(out);
                   }),
                   y, ym, crs);
    check_bound<E>(where + ": forward relu(y), no bias", in_every_order(where + " forward relu", [&] {
                     DeviceBuffer<E> out(ny);
                     cuda::conv2d_tc_forward(out.p, dX.p, dW.p, static_cast<const E*>(nullptr), g, true, plan);
                     return download_double(out);
                   }),
                   yr, ym, crs);
    check_bound<E>(where + ": dx", in_every_order(where + " dx", [&] {
                     DeviceBuffer<E> out(nx);
                     cuda::conv2d_tc_backward(out.p, static_cast<E*>(nullptr), static_cast<E*>(nullptr), dDY.p,
                                              static_cast<const E*>(nullptr), dW.p, g, nullptr, plan);
                     return download_double(out);
                   }),
                   dx, dxm, red_dx);
    for (int splits : {1, 3, 0}) {
      const int used = splits > 0 ? splits : cuda::conv2d_tc_splits(g, !std::is_same_v<E, float>);
      const std::string ws_where = where + ", " + std::to_string(used) + " split(s)" + (splits == 0 ? " (auto)" : "");
      DeviceBuffer<float> ws(size_t(std::max<int64_t>(cuda::conv2d_tc_workspace(g, used), 1)));
      check_bound<E>(ws_where + ": dw", in_every_order(ws_where + " dw", [&] {
                       DeviceBuffer<E> out(nw);
                       cuda::conv2d_tc_backward(static_cast<E*>(nullptr), out.p, static_cast<E*>(nullptr), dDY.p,
                                                dX.p, static_cast<const E*>(nullptr), g, ws.p, {config, splits});
                       return download_double(out);
                     }),
                     dw, dwm, red_dw);
    }
  }
}

// The geometries: each model's kinds of layer at odd sizes, and one over several tiles both ways
// (K = 130 output channels: two 128-row tiles; N*P*Q = 3*12*11 = 396 columns: four 128-column tiles).
const ConvGeom kGeoms[] = {
    {2, 5, 9, 11, 7, 3, 3, 1, 1},     // 3x3 stride 1 pad 1 (DSen2-CR, ResNet)
    {2, 6, 9, 7, 5, 1, 1, 1, 0},      // 1x1 stride 1 (bottlenecks)
    {2, 12, 13, 15, 20, 3, 3, 2, 1},  // 3x3 stride 2 (a stage's first block)
    {2, 6, 9, 7, 5, 1, 1, 2, 0},      // 1x1 stride 2 (downsample)
    {2, 13, 15, 13, 6, 7, 7, 2, 3},   // the stem: 7x7 stride 2 pad 3, 13 bands (C*R*S = 637)
    {3, 8, 12, 11, 130, 3, 3, 1, 1},  // several tiles in M and N
    {2, 3, 10, 7, 4, 2, 3, 3, 2},     // the data gradient's phases: stride 3, a 2x3 kernel, pad 2
    {1, 2, 2, 5, 3, 3, 3, 4, 1},      // stride 4 over a 2-row image: phases without rows or taps
};

// Every configuration of the menu (tc_dispatch.h), in two halves per precision (two ctest entries).
TEST_CASE("cuda tensor cores: conv2d forward, dgrad, wgrad in tf32, configs 0-2 (128-row tiles), every split, all orders") {
  uint64_t seed = 1;
  for (const ConvGeom& g : kGeoms) conv_case<float>(g, seed++, {0, 1, 2});
}
TEST_CASE("cuda tensor cores: conv2d forward, dgrad, wgrad in tf32, configs 3-5 (64-row tiles), every split, all orders") {
  uint64_t seed = 11;
  for (const ConvGeom& g : kGeoms) conv_case<float>(g, seed++, {3, 4, 5});
}
TEST_CASE("cuda tensor cores: conv2d forward, dgrad, wgrad in bf16, configs 0-2 (128-row tiles), every split, all orders") {
  uint64_t seed = 101;
  for (const ConvGeom& g : kGeoms) conv_case<bfloat16>(g, seed++, {0, 1, 2});
}
TEST_CASE("cuda tensor cores: conv2d forward, dgrad, wgrad in bf16, configs 3-5 (64-row tiles), every split, all orders") {
  uint64_t seed = 111;
  for (const ConvGeom& g : kGeoms) conv_case<bfloat16>(g, seed++, {3, 4, 5});
}

template <typename E>
void linear_case(int64_t N, int64_t in, int64_t out, uint64_t seed) {
  REQUIRE(cuda::register_cuda_backend());
  Rng rng(seed);
  const Operand<E> x = operand<E>(size_t(N * in), rng), w = operand<E>(size_t(out * in), rng),
                   dy = operand<E>(size_t(N * out), rng), b = operand<E>(size_t(out), rng);
  V bias(b.values.begin(), b.values.end()), abias(bias.size());
  for (size_t i = 0; i < bias.size(); ++i) abias[i] = std::fabs(bias[i]);
  const size_t ny = size_t(N * out), nx = size_t(N * in), nw = size_t(out * in);
  V y(ny), ym(ny), dx(nx), dxm(nx), dw(nw), dwm(nw);
  cpu::linear_forward<double>(y.data(), x.seen.data(), w.seen.data(), bias.data(), N, in, out);
  cpu::linear_forward<double>(ym.data(), x.abs.data(), w.abs.data(), abias.data(), N, in, out);
  cpu::linear_backward<double>(dx.data(), dw.data(), nullptr, dy.seen.data(), x.seen.data(), w.seen.data(), N, in, out);
  cpu::linear_backward<double>(dxm.data(), dwm.data(), nullptr, dy.abs.data(), x.abs.data(), w.abs.data(), N, in, out);
  DeviceBuffer<E> dX(x.values), dW(w.values), dB(b.values), dDY(dy.values);
  const std::string shape = "N=" + std::to_string(N) + " in=" + std::to_string(in) + " out=" + std::to_string(out) +
                            (std::is_same_v<E, float> ? " tf32" : " bf16");
  for (int config = 0; config < cuda::kTcConfigCount; ++config) {
    if (!config_fits<E>(config)) continue;
    const cuda::TcPlan plan{config, 1};
    const std::string where = shape + ", config " + std::to_string(config);
    check_bound<E>(where + ": y", in_every_order(where + " y", [&] {
                     DeviceBuffer<E> o(ny);
                     cuda::linear_tc_forward(o.p, dX.p, dW.p, dB.p, N, in, out, plan);
                     return download_double(o);
                   }),
                   y, ym, in);
    V grads = in_every_order(where + " dx, dw", [&] {
      DeviceBuffer<E> gx(nx), gw(nw);
      cuda::linear_tc_backward(gx.p, gw.p, static_cast<E*>(nullptr), dDY.p, dX.p, dW.p, N, in, out, plan);
      V all = download_double(gx), part = download_double(gw);
      all.insert(all.end(), part.begin(), part.end());
      return all;
    });
    check_bound<E>(where + ": dx", V(grads.begin(), grads.begin() + N * in), dx, dxm, out);
    check_bound<E>(where + ": dw", V(grads.begin() + N * in, grads.end()), dw, dwm, N);
  }
}

TEST_CASE("cuda tensor cores: linear forward and backward in tf32 and bf16, every configuration, all orders") {
  linear_case<float>(9, 37, 70, 7);
  linear_case<float>(130, 45, 140, 8);  // several tiles in every GEMM
  linear_case<bfloat16>(9, 37, 70, 9);
  linear_case<bfloat16>(130, 45, 140, 10);
}

// ---- Hopper: the wgmma kernels (conv2d_wgmma.cu), bf16 and TF32 -----------------------------------------
// The same geometries, bounds and orders as the mma.sync kernels above: forward with bias, with ReLU and
// no bias, with the residual epilogue (y = r + s (conv + b)); the data gradient; the weight gradient
// with 1, 3 and the automatic number of splits. The workspace is exactly conv2d_wgmma_workspace(g,
// splits) floats. Under the emulator the launches must also issue the TMA copies, wgmma and mbarrier
// phases their tiling implies. On a real GPU without sm_90a code the case says so and skips.
// The emulator runs the wgmma kernels; a real GPU without sm_90a code says so, and its cases skip.
static bool wgmma_runs_here() {
  REQUIRE(cuda::register_cuda_backend());
#ifdef NIMBUS_CUDA_RUNTIME
  if (!cuda::wgmma_available()) {
    MESSAGE("wgmma convolution skipped: this device does not run sm_90a code");
    return false;
  }
#endif
  return true;
}

template <typename E>
void wgmma_conv_case(const ConvGeom& g, uint64_t seed, const std::vector<int>& split_counts = {1, 3, 0}) {
  if (!wgmma_runs_here()) return;
  REQUIRE(cuda::conv2d_wgmma_supported(g));
  Rng rng(seed);
  const int64_t xs = g.N * g.C * g.H * g.W, wsz = g.K * g.C * g.R * g.S, ysz = g.N * g.K * g.P() * g.Q();
  constexpr bool tf32 = std::is_same_v<E, float>;
  const Operand<E> x = operand<E>(size_t(xs), rng), w = operand<E>(size_t(wsz), rng), dy = operand<E>(size_t(ysz), rng);
  const Operand<E> b = operand<E>(size_t(g.K), rng), res = operand<E>(size_t(ysz), rng);
  V bias(b.values.begin(), b.values.end()), abias(size_t(g.K));
  for (size_t k = 0; k < bias.size(); ++k) abias[k] = std::fabs(bias[k]);
  const size_t ny = size_t(ysz), nx = size_t(xs), nw = size_t(wsz);
  V y(ny), ym(ny), yr(ny), yres(ny), ymres(ny), dx(nx), dxm(nx), dw(nw), dwm(nw);
  cpu::conv2d_forward_ref<double>(y.data(), x.seen.data(), w.seen.data(), bias.data(), g);
  cpu::conv2d_forward_ref<double>(ym.data(), x.abs.data(), w.abs.data(), abias.data(), g);
  cpu::conv2d_forward_ref<double>(yr.data(), x.seen.data(), w.seen.data(), nullptr, g);
  for (double& v : yr) v = v < 0 ? 0 : v;
  const float scale = 0.1f;  // DSen2-CR's residual scaling
  // The residual is added in fp32, not multiplied: its own value, not TF32-rounded.
  for (size_t i = 0; i < ny; ++i) {
    const double r = double(res.values[i]);
    yres[i] = r + double(scale) * y[i], ymres[i] = std::fabs(r) + double(scale) * ym[i];
  }
  cpu::conv2d_backward_data_ref<double>(dx.data(), dy.seen.data(), w.seen.data(), g);
  cpu::conv2d_backward_data_ref<double>(dxm.data(), dy.abs.data(), w.abs.data(), g);
  cpu::conv2d_backward_weight_ref<double>(dw.data(), dy.seen.data(), x.seen.data(), g);
  cpu::conv2d_backward_weight_ref<double>(dwm.data(), dy.abs.data(), x.abs.data(), g);
  const int64_t crs = g.C * g.R * g.S, red_dx = g.K * g.R * g.S, red_dw = g.N * g.P() * g.Q();

  DeviceBuffer<E> dX(x.values), dW(w.values), dB(b.values), dDY(dy.values), dR(res.values);
  const std::string where = "wgmma: x (" + std::to_string(g.N) + "," + std::to_string(g.C) + "," +
                            std::to_string(g.H) + "," + std::to_string(g.W) + ") w (" + std::to_string(g.K) + "," +
                            std::to_string(g.C) + "," + std::to_string(g.R) + "," + std::to_string(g.S) +
                            ") stride " + std::to_string(g.stride) + " pad " + std::to_string(g.pad) +
                            (tf32 ? " tf32" : " bf16");
  DeviceBuffer<float> ws(size_t(std::max<int64_t>(cuda::conv2d_wgmma_workspace(g, 1), 1)));
  check_bound<E>(where + ": forward y", in_every_order(where + " forward", [&] {
                   DeviceBuffer<E> out(ny);
                   cuda::conv2d_wgmma_forward(out.p, dX.p, dW.p, dB.p, g, false, static_cast<const E*>(nullptr), 1.0f,
                                              ws.p);
#ifndef NIMBUS_CUDA_RUNTIME
                   const emu::LaunchStats st = emu::last_launch_stats();
                   const cuda::WgmmaConvCounts want = cuda::conv2d_wgmma_forward_counts(g, tf32);
                   CHECK(st.tma == want.tma);
                   CHECK(st.wgmma == want.wgmma);
                   CHECK(st.mbarrier_phases == want.phases);
#endif
                   return download_double(out);
                 }),
                 y, ym, crs);
  check_bound<E>(where + ": forward relu(y), no bias", in_every_order(where + " forward relu", [&] {
                   DeviceBuffer<E> out(ny);
                   cuda::conv2d_wgmma_forward(out.p, dX.p, dW.p, static_cast<const E*>(nullptr), g, true,
                                              static_cast<const E*>(nullptr), 1.0f, ws.p);
                   return download_double(out);
                 }),
                 yr, ym, crs);
  // The residual: r + s (conv + b), one rounding of the fp32 value (its reference bound: the sum's
  // accumulation error scaled by s, plus the output's rounding).
  check_bound<E>(where + ": forward r + s (y + b)", in_every_order(where + " forward residual", [&] {
                   DeviceBuffer<E> out(ny);
                   cuda::conv2d_wgmma_forward(out.p, dX.p, dW.p, dB.p, g, true, dR.p, scale, ws.p);
                   return download_double(out);
                 }),
                 yres, ymres, crs);
  // The warp-specialised forward (bench versions 10 and 11): the three epilogues give the plain kernel's
  // bits, in every order. Its copies and wgmma are the plain kernel's; its mbarrier phases add the
  // consumers' releases (empty[s]: every k-tile but a block's last).
  for (const int variant : {0, 1, 2}) {  // bias; ReLU without a bias; the residual sum
    const E* bias = variant == 1 ? nullptr : dB.p;
    const E* r = variant == 2 ? dR.p : nullptr;
    const float rs = variant == 2 ? scale : 1.0f;
    DeviceBuffer<E> plain_out(ny);
    cuda::conv2d_wgmma_forward(plain_out.p, dX.p, dW.p, bias, g, variant == 1, r, rs, ws.p);
    const V plain = download_double(plain_out);
    const std::string what = where + ": specialised forward (" + (variant == 0 ? "bias" : variant == 1 ? "relu" : "residual") + ")";
    const V got = in_every_order(what, [&] {
      DeviceBuffer<E> out(ny);
      cuda::conv2d_wgmma_forward_specialised(out.p, dX.p, dW.p, bias, g, variant == 1, r, rs, ws.p);
#ifndef NIMBUS_CUDA_RUNTIME
      const emu::LaunchStats st = emu::last_launch_stats();
      const cuda::WgmmaConvCounts want = cuda::conv2d_wgmma_forward_counts(g, tf32);
      const int64_t blocks = ((g.N * g.P() * g.Q() + 127) / 128) * ((g.K + 127) / 128);
      CHECK(st.tma == want.tma);
      CHECK(st.wgmma == want.wgmma);
      CHECK(st.mbarrier_phases == 2 * want.phases - blocks);
#endif
      return download_double(out);
    });
    CHECK_MESSAGE(std::memcmp(got.data(), plain.data(), ny * sizeof(double)) == 0, what, ": differs from conv2d_wgmma_forward");
  }
  check_bound<E>(where + ": dx", in_every_order(where + " dx", [&] {
                   DeviceBuffer<E> out(nx);
                   cuda::conv2d_wgmma_backward(out.p, static_cast<E*>(nullptr), static_cast<E*>(nullptr), dDY.p,
                                               static_cast<const E*>(nullptr), dW.p, g, ws.p, 1);
                   return download_double(out);
                 }),
                 dx, dxm, red_dx);
  for (int splits : split_counts) {
    const int used = splits > 0 ? splits : cuda::conv2d_wgmma_splits(g, tf32);
    const std::string ws_where = where + ", " + std::to_string(used) + " split(s)" + (splits == 0 ? " (auto)" : "");
    DeviceBuffer<float> wsp(size_t(std::max<int64_t>(cuda::conv2d_wgmma_workspace(g, used), 1)));
    check_bound<E>(ws_where + ": dw", in_every_order(ws_where + " dw", [&] {
                     DeviceBuffer<E> out(nw);
#ifndef NIMBUS_CUDA_RUNTIME
                     const emu::LaunchStats before = emu::all_launch_stats();
#endif
                     cuda::conv2d_wgmma_backward(static_cast<E*>(nullptr), out.p, static_cast<E*>(nullptr), dDY.p, dX.p,
                                                 static_cast<const E*>(nullptr), g, wsp.p, splits);
#ifndef NIMBUS_CUDA_RUNTIME
                     // Every split's k-tiles together are all of them: the same counts for any split count.
                     const emu::LaunchStats st = emu::all_launch_stats();
                     const cuda::WgmmaConvCounts want = cuda::conv2d_wgmma_wgrad_counts(g, tf32);
                     CHECK(st.wgmma - before.wgmma == want.wgmma);
                     CHECK(st.tma - before.tma == want.tma);
                     CHECK(st.mbarrier_phases - before.mbarrier_phases == want.phases);
#endif
                     return download_double(out);
                   }),
                   dw, dwm, red_dw);
  }
}

TEST_CASE("cuda wgmma: conv2d forward (bias, ReLU, residual), dgrad, wgrad in bf16, every split, all orders") {
  uint64_t seed = 201;
  for (const ConvGeom& g : kGeoms) wgmma_conv_case<bfloat16>(g, seed++);
}
TEST_CASE("cuda wgmma: conv2d forward (bias, ReLU, residual), dgrad, wgrad in tf32, every split, all orders") {
  uint64_t seed = 211;
  for (const ConvGeom& g : kGeoms) wgmma_conv_case<float>(g, seed++);
}
// Output grids of a multiple of 64 positions: the weight gradient takes dy by TMA in bf16 (3-D boxes of
// one image, several k-tiles per image, two row tiles of channels); TF32 still gathers there.
const ConvGeom kGeomsTmaDy[] = {
    {2, 6, 8, 8, 5, 3, 3, 1, 1},       // 8x8: one k-tile per image
    {2, 5, 16, 16, 7, 3, 3, 2, 1},     // stride 2 -> 8x8
    {3, 4, 16, 16, 130, 1, 1, 1, 0},   // 16x16, four k-tiles per image, two row tiles
};
// A swizzled tensor map's base must be 128-byte aligned: w and dy 64 bytes past such a boundary make
// the forward copy w into the workspace and the weight gradient gather dy instead of mapping it (what
// the copy engine would take from a 128-aligned w and dy), with the same bits.
TEST_CASE("cuda wgmma: w and dy off a 128-byte boundary take the copy and gather paths, with the same bits") {
  if (!wgmma_runs_here()) return;
  using E = bfloat16;
  const ConvGeom g{2, 8, 8, 8, 16, 3, 3, 1, 1};  // C*R*S = 72 (whole 16-byte rows), P*Q = 64 (dy by TMA)
  REQUIRE(cuda::conv2d_wgmma_supported(g));
  Rng rng(231);
  const size_t nx = size_t(g.N * g.C * g.H * g.W), nw = size_t(g.K * g.C * g.R * g.S), ny = size_t(g.N * g.K * 64);
  const Operand<E> x = operand<E>(nx, rng), w = operand<E>(nw, rng), dy = operand<E>(ny, rng);
  constexpr size_t kOff = 32;  // 64 bytes of bfloat16
  std::vector<E> w_off(kOff), dy_off(kOff);
  w_off.insert(w_off.end(), w.values.begin(), w.values.end());
  dy_off.insert(dy_off.end(), dy.values.begin(), dy.values.end());
  DeviceBuffer<E> dX(x.values), dW(w.values), dDY(dy.values), dWo(w_off), dDYo(dy_off);
  REQUIRE(reinterpret_cast<uintptr_t>(dW.p) % 128 == 0);
  REQUIRE(reinterpret_cast<uintptr_t>(dWo.p + kOff) % 128 == 64);
  DeviceBuffer<float> ws(size_t(std::max<int64_t>(cuda::conv2d_wgmma_workspace(g, 1), 1)));
  const auto forward = [&](const E* wp) {
    DeviceBuffer<E> out(ny);
    cuda::conv2d_wgmma_forward(out.p, dX.p, wp, static_cast<const E*>(nullptr), g, false,
                               static_cast<const E*>(nullptr), 1.0f, ws.p);
    return download_double(out);
  };
  const auto wgrad = [&](const E* dyp, int64_t* tma) {
    DeviceBuffer<E> out(nw);
#ifndef NIMBUS_CUDA_RUNTIME
    const int64_t before = emu::all_launch_stats().tma;
#endif
    cuda::conv2d_wgmma_backward(static_cast<E*>(nullptr), out.p, static_cast<E*>(nullptr), dyp, dX.p,
                                static_cast<const E*>(nullptr), g, ws.p, 1);
#ifndef NIMBUS_CUDA_RUNTIME
    *tma = emu::all_launch_stats().tma - before;
#else
    *tma = 0;
#endif
    return download_double(out);
  };
  const V y_aligned = forward(dW.p), y_off = forward(dWo.p + kOff);
  CHECK(all_finite(y_aligned));
  CHECK(std::memcmp(y_aligned.data(), y_off.data(), ny * sizeof(double)) == 0);
  int64_t tma_aligned = 0, tma_off = 0;
  const V dw_aligned = wgrad(dDY.p, &tma_aligned), dw_off = wgrad(dDYo.p + kOff, &tma_off);
  CHECK(all_finite(dw_aligned));
  CHECK(std::memcmp(dw_aligned.data(), dw_off.data(), nw * sizeof(double)) == 0);
#ifndef NIMBUS_CUDA_RUNTIME
  CHECK(tma_off < tma_aligned);  // dy by TMA only when aligned (x comes by TMA in neither)
#endif
}

TEST_CASE("cuda wgmma: the weight gradient with dy by TMA (P*Q a multiple of 64), bf16 and tf32") {
  uint64_t seed = 221;
  for (const ConvGeom& g : kGeomsTmaDy) {
    CHECK(cuda::conv2d_wgmma_wgrad_counts(g, false).tma > 0);
    CHECK(cuda::conv2d_wgmma_wgrad_counts(g, true).tma == 0);
    // Splits of 2 and 5 as well: with 5, the 16x16 grid's 12 k-tiles split 3 to a split, so splits start
    // inside an image (at position 192 of 256) and box coordinates come from the global position.
    wgmma_conv_case<bfloat16>(g, seed++, {1, 2, 5, 0});
    wgmma_conv_case<float>(g, seed++, {1, 2, 5, 0});
  }
}

// The most dynamic shared memory a block may have on an sm_90 (H100, H200) and on an sm_86 or sm_89.
constexpr int64_t kSm90Smem = 227 * 1024, kSm86Smem = 99 * 1024;

// The dispatch table's lines (tc_dispatch.h): a line naming an mma.sync configuration moves that
// direction of that shape off wgmma; a kTcWgmma line keeps it and sets the weight gradient's splits.
TEST_CASE("cuda wgmma: the dispatch table's lines choose the kernel family and the splits") {
  using cuda::TcKind;
  const ConvGeom g{2, 5, 9, 11, 7, 3, 3, 1, 1};
  const cuda::TcGemmShape fwd = cuda::conv2d_tc_gemms(g, TcKind::ConvForward)[0];
  const cuda::TcGemmShape wgr = cuda::conv2d_tc_gemms(g, TcKind::ConvWeightGrad)[0];
  for (TcKind kind : {TcKind::ConvForward, TcKind::ConvDataGrad, TcKind::ConvWeightGrad})
    for (bool tf32 : {false, true}) CHECK(cuda::conv2d_wgmma_preferred(g, kind, tf32));  // no lines
  const cuda::TcTableLine lines[] = {
      {TcKind::ConvForward, true, fwd.M, fwd.N, fwd.K, 2, 0},                  // mma.sync config 2 won (bf16)
      {TcKind::ConvWeightGrad, true, wgr.M, wgr.N, wgr.K, cuda::kTcWgmma, 3},  // wgmma, 3 splits (bf16)
      {TcKind::ConvWeightGrad, false, wgr.M, wgr.N, wgr.K, 1, 2}};             // mma.sync config 1, 2 splits (TF32)
  const cuda::TcTableScope table(lines, 3);
  CHECK_FALSE(cuda::conv2d_wgmma_preferred(g, TcKind::ConvForward, false));
  CHECK(cuda::conv2d_wgmma_preferred(g, TcKind::ConvForward, true));  // no TF32 forward line
  CHECK(cuda::conv2d_wgmma_preferred(g, TcKind::ConvWeightGrad, false));
  CHECK_FALSE(cuda::conv2d_wgmma_preferred(g, TcKind::ConvWeightGrad, true));
  CHECK(cuda::conv2d_wgmma_splits(g, false) == 3);  // the kTcWgmma line's
  CHECK(cuda::conv2d_wgmma_splits(g, true) == 1);   // the rule (7 k-tiles): the TF32 line is mma.sync's
  CHECK(cuda::conv2d_tc_splits(g, false) == 2);     // mma.sync lines feed the mma.sync kernels...
  CHECK(cuda::conv2d_tc_splits(g, true) == 1);      // ...and a kTcWgmma line does not (the rule)
  CHECK(cuda::tc_pick_config(TcKind::ConvForward, true, fwd.M, fwd.N, fwd.K, 1, kSm90Smem) == 2);
  CHECK(cuda::tc_pick_config(TcKind::ConvWeightGrad, true, wgr.M, wgr.N, wgr.K, 3, kSm90Smem) == 4);  // the rule
  CHECK(cuda::tc_table_config(TcKind::ConvWeightGrad, true, wgr.M, wgr.N, wgr.K) == cuda::kTcWgmma);
  CHECK(std::string(cuda::tc_config_name(cuda::kTcWgmma)) == "wgmma 128x128 3 stages (sm_90a)");
  CHECK_FALSE(cuda::conv2d_wgmma_specialised_preferred(g, false));
  // A forward line naming the warp-specialised wgmma kernel: wgmma stays preferred, the variant is chosen,
  // and mma.sync's pick falls back to its rule.
  const cuda::TcTableLine special[] = {{TcKind::ConvForward, true, fwd.M, fwd.N, fwd.K, cuda::kTcWgmmaSpecialised, 0}};
  const cuda::TcTableScope table2(special, 1);
  CHECK(cuda::conv2d_wgmma_preferred(g, TcKind::ConvForward, false));
  CHECK(cuda::conv2d_wgmma_specialised_preferred(g, false));
  CHECK_FALSE(cuda::conv2d_wgmma_specialised_preferred(g, true));  // the line is bf16's
  CHECK(cuda::tc_pick_config(TcKind::ConvForward, true, fwd.M, fwd.N, fwd.K, 1, kSm90Smem) ==
        cuda::tc_pick_config(TcKind::ConvForward, false, fwd.M, fwd.N, fwd.K, 1, kSm90Smem));
  CHECK(std::string(cuda::tc_config_name(cuda::kTcWgmmaSpecialised)) ==
        "wgmma 128x128 warp-specialised 4 stages (sm_90a)");
}

// A table line whose configuration needs more shared memory than the device gives a block (TF32
// config 1: 107,520 bytes, over an sm_86's 101,376) gives way to the rule, and a TcPlan naming it is a
// clear Error there; bf16's config 1 (56,832 bytes) fits and is kept. The rule's configurations (0, 4)
// fit every device from sm_80 on.
TEST_CASE("cuda tensor cores: a table line over the device's shared memory gives way to the rule, a plan over it is an Error") {
  using cuda::TcKind;
  CHECK(cuda::tc_config_smem_bytes(1, false) == 107520);
  CHECK(cuda::tc_config_smem_bytes(1, true) == 56832);
  CHECK(cuda::tc_config_smem_bytes(0, false) <= kSm86Smem);
  CHECK(cuda::tc_config_smem_bytes(4, false) <= kSm86Smem);
  const ConvGeom g{2, 5, 9, 11, 7, 3, 3, 1, 1};
  const cuda::TcGemmShape fwd = cuda::conv2d_tc_gemms(g, TcKind::ConvForward)[0];
  const cuda::TcTableLine lines[] = {{TcKind::ConvForward, false, fwd.M, fwd.N, fwd.K, 1, 0},
                                     {TcKind::ConvForward, true, fwd.M, fwd.N, fwd.K, 1, 0}};
  const cuda::TcTableScope table(lines, 2);
  CHECK(cuda::tc_pick_config(TcKind::ConvForward, false, fwd.M, fwd.N, fwd.K, 1, kSm90Smem) == 1);
  CHECK(cuda::tc_pick_config(TcKind::ConvForward, false, fwd.M, fwd.N, fwd.K, 1, 107520) == 1);
  CHECK(cuda::tc_pick_config(TcKind::ConvForward, false, fwd.M, fwd.N, fwd.K, 1, kSm86Smem) == 4);  // the rule
  CHECK(cuda::tc_pick_config(TcKind::ConvForward, true, fwd.M, fwd.N, fwd.K, 1, kSm86Smem) == 1);
#ifndef NIMBUS_CUDA_RUNTIME
  // Through the launcher on an emulated sm_86: the blocks launched show the configuration (config 1's
  // 128x128 tiles: 1 x 2 blocks for these 7 x 198 outputs; config 4's 64x64: 1 x 4).
  REQUIRE(cuda::register_cuda_backend());
  Rng rng(91);
  DeviceBuffer<float> x(operand<float>(size_t(g.N * g.C * g.H * g.W), rng).values),
      w(operand<float>(size_t(g.K * g.C * g.R * g.S), rng).values), b(operand<float>(size_t(g.K), rng).values),
      y(size_t(g.N * g.K * g.P() * g.Q()));
  auto forward = [&](cuda::TcPlan plan) { cuda::conv2d_tc_forward(y.p, x.p, w.p, b.p, g, false, plan); };
  forward({-1, 1});
  CHECK(emu::last_launch_stats().blocks == 2);  // the table's config 1
  const std::vector<float> y1 = y.download();
  struct Restore {
    ~Restore() { emu::set_smem_opt_in_limit(kSm90Smem); }
  } restore;
  emu::set_smem_opt_in_limit(kSm86Smem);
  forward({-1, 1});
  CHECK(emu::last_launch_stats().blocks == 4);  // the rule's config 4
  const std::vector<float> y4 = y.download();
  for (size_t i = 0; i < y1.size(); ++i) REQUIRE(std::fabs(y4[i] - y1[i]) <= 1e-5f * (1 + std::fabs(y1[i])));
  const std::string e = launch_error([&] { forward({1, 1}); });
  CHECK_MESSAGE(e.find("needs 107520 bytes of shared memory, more than this device's 101376") != std::string::npos, e);
  // A weight-gradient line's split count goes with its configuration: the rule's where that does not fit.
  const cuda::TcGemmShape wgr = cuda::conv2d_tc_gemms(g, TcKind::ConvWeightGrad)[0];
  const int rule = cuda::conv2d_tc_splits(g, false);
  const cuda::TcTableLine split_line[] = {{TcKind::ConvWeightGrad, false, wgr.M, wgr.N, wgr.K, 1, rule + 1}};
  const cuda::TcTableScope table3(split_line, 1);
  REQUIRE(rule + 1 <= cuda::conv2d_tc_max_splits(g));
  CHECK(cuda::conv2d_tc_splits(g, false) == rule);  // on the sm_86
  emu::set_smem_opt_in_limit(kSm90Smem);
  CHECK(cuda::conv2d_tc_splits(g, false) == rule + 1);
#endif
}

// Through the backend's op table with ConvKernels::Wgmma (what Auto is on an sm_90a device): each
// direction on the family its table line names, the results within the bounds of each, and the
// emulator's instruction counts showing which ran. Skipped on a GPU (the counts are the emulator's).
template <typename E>
void mixed_dispatch_case() {
#ifdef NIMBUS_CUDA_RUNTIME
  MESSAGE("skipped on a GPU: the check counts the emulator's instructions");
#else
  using cuda::TcKind;
  REQUIRE(cuda::register_cuda_backend());
  constexpr bool tf32 = std::is_same_v<E, float>;
  const ConvGeom g{2, 12, 13, 15, 20, 3, 3, 2, 1};  // stride 2: the data gradient runs 4 phases
  Rng rng(tf32 ? 71 : 72);
  const int64_t xs = g.N * g.C * g.H * g.W, wsz = g.K * g.C * g.R * g.S, ysz = g.N * g.K * g.P() * g.Q();
  const Operand<E> x = operand<E>(size_t(xs), rng), w = operand<E>(size_t(wsz), rng), dy = operand<E>(size_t(ysz), rng);
  V y(static_cast<size_t>(ysz)), ym(y.size()), dx(static_cast<size_t>(xs)), dxm(dx.size()),
      dw(static_cast<size_t>(wsz)), dwm(dw.size());
  cpu::conv2d_forward_ref<double>(y.data(), x.seen.data(), w.seen.data(), nullptr, g);
  cpu::conv2d_forward_ref<double>(ym.data(), x.abs.data(), w.abs.data(), nullptr, g);
  cpu::conv2d_backward_data_ref<double>(dx.data(), dy.seen.data(), w.seen.data(), g);
  cpu::conv2d_backward_data_ref<double>(dxm.data(), dy.abs.data(), w.abs.data(), g);
  cpu::conv2d_backward_weight_ref<double>(dw.data(), dy.seen.data(), x.seen.data(), g);
  cpu::conv2d_backward_weight_ref<double>(dwm.data(), dy.abs.data(), x.abs.data(), g);
  const cuda::TcGemmShape fwd = cuda::conv2d_tc_gemms(g, TcKind::ConvForward)[0];
  const cuda::TcGemmShape dgr = cuda::conv2d_tc_gemms(g, TcKind::ConvDataGrad)[0];
  const cuda::TcGemmShape wgr = cuda::conv2d_tc_gemms(g, TcKind::ConvWeightGrad)[0];
  const cuda::MathScope math(cuda::Math::Tf32);
  const cuda::ConvKernelsScope hopper(cuda::ConvKernels::Wgmma);
  const Kernels<E>& k = backend<E>(Device::CUDA, "test");
  DeviceBuffer<E> dX(x.values), dW(w.values), dDY(dy.values);
  const std::string what = tf32 ? "tf32" : "bf16";
  // Run 0: the forward and the weight gradient on mma.sync, the data gradient on wgmma.
  // Run 1: the opposite. Run 2: as run 1 with the forward on the warp-specialised wgmma kernel.
  for (int run = 0; run < 3; ++run) {
    const int fwd_config = run == 0 ? 2 : run == 1 ? cuda::kTcWgmma : cuda::kTcWgmmaSpecialised;
    const cuda::TcTableLine lines[] = {
        {TcKind::ConvForward, !tf32, fwd.M, fwd.N, fwd.K, fwd_config, 0},
        {TcKind::ConvDataGrad, !tf32, dgr.M, dgr.N, dgr.K, run == 0 ? cuda::kTcWgmma : 0, 0},
        {TcKind::ConvWeightGrad, !tf32, wgr.M, wgr.N, wgr.K, run == 0 ? 1 : cuda::kTcWgmma, 2}};
    const cuda::TcTableScope table(lines, 3);
    DeviceBuffer<float> ws(size_t(std::max<int64_t>(backend(Device::CUDA, "test").conv2d_workspace(g), 1)));
    DeviceBuffer<E> out_y(static_cast<size_t>(ysz)), out_dx(static_cast<size_t>(xs)), out_dw(static_cast<size_t>(wsz));
    const emu::LaunchStats s0 = emu::all_launch_stats();
    k.conv2d_forward(out_y.p, dX.p, dW.p, nullptr, g, ws.p, false);
    const emu::LaunchStats s1 = emu::all_launch_stats();
    k.conv2d_backward(out_dx.p, out_dw.p, nullptr, dDY.p, dX.p, dW.p, g, ws.p);
    const emu::LaunchStats s2 = emu::all_launch_stats();
    const std::string where = what + " run " + std::to_string(run);
    check_bound<E>(where + ": y", download_double(out_y), y, ym, g.C * g.R * g.S);
    check_bound<E>(where + ": dx", download_double(out_dx), dx, dxm, g.K * g.R * g.S);
    check_bound<E>(where + ": dw", download_double(out_dw), dw, dwm, g.N * g.P() * g.Q());
    const int64_t fwd_wgmma = s1.wgmma - s0.wgmma, bwd_wgmma = s2.wgmma - s1.wgmma;
    const int64_t fwd_mma = s1.mma - s0.mma, bwd_mma = s2.mma - s1.mma;
    CAPTURE(where);
    if (run == 0) {
      CHECK(fwd_wgmma == 0);
      CHECK(fwd_mma > 0);
      CHECK(bwd_wgmma > 0);  // the data gradient
      CHECK(bwd_mma > 0);    // the weight gradient
    } else {
      const cuda::WgmmaConvCounts want = cuda::conv2d_wgmma_forward_counts(g, tf32);
      const int64_t blocks = ((g.N * g.P() * g.Q() + 127) / 128) * ((g.K + 127) / 128);
      CHECK(fwd_wgmma == want.wgmma);
      CHECK(fwd_mma == 0);
      // The warp-specialised forward: its consumers' releases add a phase per block and k-tile but the last.
      CHECK(s1.mbarrier_phases - s0.mbarrier_phases == (run == 2 ? 2 * want.phases - blocks : want.phases));
      CHECK(bwd_wgmma == cuda::conv2d_wgmma_wgrad_counts(g, tf32).wgmma);  // the weight gradient alone
      CHECK(bwd_mma > 0);                                           // the data gradient
    }
  }
#endif
}

TEST_CASE("cuda wgmma: the backend runs each direction on the family the dispatch table names") {
  mixed_dispatch_case<bfloat16>();
  mixed_dispatch_case<float>();
}

TEST_CASE("cuda wgmma: the weight gradient's splits and the workspace") {
  const ConvGeom big{16, 256, 128, 128, 256, 3, 3, 1, 1}, small{2, 5, 9, 11, 7, 3, 3, 1, 1};
  // DSen2-CR's layer: 2 x 18 tiles of 128 x 128, so splits for two blocks per SM of an H200.
  CHECK(cuda::conv2d_wgmma_splits(big) == 8);
  CHECK(cuda::conv2d_wgmma_workspace(big) == 8 * 256 * 2304);
  CHECK(cuda::conv2d_wgmma_splits(small) == 1);  // 198 positions: under 4 k-tiles
  // One split: the larger of the padded forward weights (K rows of C*R*S = 45 -> 48) and the data
  // gradient's packed ones (one phase at stride 1: C rows of K*R*S = 63 -> 64); in TF32 a float each
  // (bf16 needs half of that).
  CHECK(cuda::conv2d_wgmma_workspace(small, 1) == std::max(7 * 48, 5 * 64));
  CHECK(cuda::conv2d_wgmma_splits(big, true) == 8);
  CHECK(cuda::conv2d_wgmma_supported(big));
  CHECK_FALSE(cuda::conv2d_wgmma_supported(ConvGeom{70000, 64, 224, 224, 64, 7, 7, 2, 3}));  // 2^31+ elements
  CHECK_FALSE(cuda::conv2d_wgmma_supported(ConvGeom{2, 4, 20, 20, 4, 5, 5, 5, 2}));        // stride 5
}

TEST_CASE("cuda tensor cores: the weight gradient's automatic splits fit the workspace the backend reserves") {
  // A large reduction over few outputs splits; a small one does not; the workspace holds every split.
  const ConvGeom big{256, 64, 56, 56, 64, 3, 3, 1, 1}, small{2, 5, 9, 11, 7, 3, 3, 1, 1};
  CHECK(cuda::conv2d_tc_splits(big) > 1);
  CHECK(cuda::conv2d_tc_splits(small) == 1);
  CHECK(cuda::conv2d_tc_workspace(big) == int64_t(cuda::conv2d_tc_splits(big)) * 64 * 64 * 9);
  CHECK(cuda::conv2d_tc_workspace(small) == 0);
  CHECK(cuda::conv2d_tc_supported(big));
  CHECK_FALSE(cuda::conv2d_tc_supported(ConvGeom{70000, 64, 224, 224, 64, 7, 7, 2, 3}));  // 2^31+ elements
}

// ---- batch-norm statistics from the forward's epilogue (kernels/cuda/bn_moments.cuh) --------------------
// Each configuration of the menu and the wgmma kernel, with and without a bias: the forward that writes
// moments stores y bit for bit as the plain forward does, returns the chunk count its tiling implies, and
// writes every chunk (the buffer starts as NaN); batchnorm_stats_from_moments then gives the batch
// statistics of that y (mean to 1e-5 of mean |y|, the variance inside invstd to 1e-5 of itself with biases near 100, the
// float64 two-pass values as reference), the running update and the count, the same bits in every order.
// `all`: every configuration, with and without a bias; else configs 0 and 4 and wgmma, with a bias (the
// large layer: the merge's many chunks, at a cost the sanitizer builds can bear).
template <typename E>
void bn_moments_case(const ConvGeom& g, uint64_t seed, bool all = true) {
  REQUIRE(cuda::register_cuda_backend());
  Rng rng(seed);
  const int64_t xs = g.N * g.C * g.H * g.W, wsz = g.K * g.C * g.R * g.S, PQ = g.P() * g.Q(), M = g.N * PQ;
  const size_t ny = size_t(g.N * g.K * PQ), K = size_t(g.K);
  const Operand<E> x = operand<E>(size_t(xs), rng), w = operand<E>(size_t(wsz), rng);
  std::vector<E> b;
  for (size_t k = 0; k < K; ++k) b.push_back(E(float(100 + rng.uniform())));  // a mean far above the spread
  std::vector<float> rm0, rv0;
  for (size_t k = 0; k < K; ++k) rm0.push_back(float(rng.uniform())), rv0.push_back(float(0.5 + rng.uniform()));
  DeviceBuffer<E> dX(x.values), dW(w.values), dB(b);
  DeviceBuffer<float> ws(size_t(std::max<int64_t>(cuda::conv2d_wgmma_workspace(g, 1), 1)));
  const float momentum = 0.1f, eps = 1e-5f;
  std::vector<int> families = all ? std::vector<int>{0, 1, 2, 3, 4, 5} : std::vector<int>{0, 4};
  bool wgmma = cuda::conv2d_wgmma_supported(g);
#ifdef NIMBUS_CUDA_RUNTIME
  wgmma = wgmma && cuda::wgmma_available();
#endif
  if (wgmma) families.push_back(cuda::kTcWgmma);
  const int cols = int(M);
  for (const int config : families)
    for (const bool bias : {true, false}) {
      if ((!all && !bias) || !config_fits<E>(config)) continue;
      const bool hopper = config == cuda::kTcWgmma;
      const std::string where = std::string(std::is_same_v<E, float> ? "tf32" : "bf16") + " K=" +
                                std::to_string(g.K) + " N*P*Q=" + std::to_string(M) + " " +
                                cuda::tc_config_name(config) + (bias ? "" : " (no bias)");
      const E* bp = bias ? dB.p : nullptr;
      DeviceBuffer<E> plain(ny);
      if (hopper)
        cuda::conv2d_wgmma_forward(plain.p, dX.p, dW.p, bp, g, false, static_cast<const E*>(nullptr), 1.0f, ws.p);
      else
        cuda::conv2d_tc_forward(plain.p, dX.p, dW.p, bp, g, false, {config, 1});
      const std::vector<E> y_plain = plain.download();
      const cuda::TcConfig& tile = cuda::kTcConfigs[hopper ? 0 : config];
      const int want_chunks = hopper ? (cols + 127) / 128 : (cols + tile.bn - 1) / tile.bn * tile.warps_n;
      const V got = in_every_order(where, [&] {
        DeviceBuffer<E> out(ny);
        DeviceBuffer<float> moments(std::vector<float>(size_t(cuda::conv2d_bn_moments_floats(g)), NAN));
        const int chunks = hopper ? cuda::conv2d_wgmma_forward_bn_moments(out.p, dX.p, dW.p, bp, g, ws.p, moments.p)
                                  : cuda::conv2d_tc_forward_bn_moments(out.p, dX.p, dW.p, bp, g, moments.p, {config, 1});
        CHECK_MESSAGE(chunks == want_chunks, where, ": ", chunks, " chunks per channel, want ", want_chunks);
        const std::vector<E> y = out.download();
        CHECK_MESSAGE(std::memcmp(y.data(), y_plain.data(), ny * sizeof(E)) == 0, where,
                      ": y differs from the plain forward's");
        DeviceBuffer<float> mean(K), invstd(K), rm(rm0), rv(rv0), count(std::vector<float>{41});
        cuda::batchnorm_stats_from_moments(mean.p, invstd.p, rm.p, rv.p, count.p, moments.p, g.K, chunks, M, momentum,
                                           eps);
        V all;
        for (const DeviceBuffer<float>* t : {&mean, &invstd, &rm, &rv, &count})
          for (float v : t->download()) all.push_back(v);
        return all;
      });
      REQUIRE(got.size() == 4 * K + 1);
      for (size_t k = 0; k < K; ++k) {
        double sum = 0, abs_sum = 0, sq = 0, dev = 0;
        for (int64_t n = 0; n < g.N; ++n)
          for (int64_t i = 0; i < PQ; ++i) {
            const double v = double(float(y_plain[size_t((n * g.K + int64_t(k)) * PQ + i)]));
            sum += v, abs_sum += std::fabs(v), sq += v * v;
          }
        const double mean = sum / double(M);
        for (int64_t n = 0; n < g.N; ++n)
          for (int64_t i = 0; i < PQ; ++i) {
            const double d = double(float(y_plain[size_t((n * g.K + int64_t(k)) * PQ + i)])) - mean;
            dev += d * d;
          }
        const double var = dev / double(M), var_s = sq / double(M), invstd = 1 / std::sqrt(var + double(eps));
        // The variance to 1e-5 of itself, not of the mean square (~1,000 times larger here): a one-pass
        // E[y^2] - E[y]^2 in float would be off by ~1e-4 of it.
        const double mean_tol = 1e-5 * abs_sum / double(M), var_tol = 1e-5 * var + 1e-12 * var_s;
        const double invstd_tol = 0.5 * std::pow(invstd, 3) * var_tol + 1e-6 * invstd;
        const double rm_want = (1 - momentum) * rm0[k] + momentum * mean;
        const double rv_want = (1 - momentum) * rv0[k] + momentum * var * double(M) / double(M - 1);
        auto near = [&](const char* what, double g_, double want, double tol) {
          CHECK_MESSAGE(std::fabs(g_ - want) <= tol, where, ": ", std::string(what), "[", k, "] = ", g_, ", want ", want,
                        " (bound ", tol, ")");  // NaN fails
        };
        near("mean", got[k], mean, mean_tol);
        near("invstd", got[K + k], invstd, invstd_tol);
        near("running_mean", got[2 * K + k], rm_want, 1e-6 + momentum * mean_tol);
        near("running_var", got[3 * K + k], rv_want, 1e-6 * rv_want + momentum * 2 * var_tol);
      }
      CHECK(got[4 * K] == 42.0);
    }
}

const ConvGeom kBnGeoms[] = {
    {2, 5, 9, 11, 7, 3, 3, 1, 1},     // 198 positions: a partial last chunk in every tiling
    {3, 8, 12, 11, 130, 3, 3, 1, 1},  // two row tiles (130 channels), 396 positions
    {2, 13, 15, 13, 6, 7, 7, 2, 3},   // the stem: 112 positions, fewer than one wgmma tile
    {2, 6, 9, 7, 5, 1, 1, 2, 0},      // 1x1 stride 2
};
const ConvGeom kBnLarge{4, 3, 40, 40, 5, 3, 3, 1, 1};  // 6,400 positions: 100-200 chunks (mma.sync), 50 (wgmma)
TEST_CASE("cuda tensor cores: batch-norm statistics from the conv forward's epilogue in tf32, every configuration and wgmma, all orders") {
  uint64_t seed = 301;
  for (const ConvGeom& g : kBnGeoms) bn_moments_case<float>(g, seed++);
  bn_moments_case<float>(kBnLarge, seed, false);
}
TEST_CASE("cuda tensor cores: batch-norm statistics from the conv forward's epilogue in bf16, every configuration and wgmma, all orders") {
  uint64_t seed = 311;
  for (const ConvGeom& g : kBnGeoms) bn_moments_case<bfloat16>(g, seed++);
  bn_moments_case<bfloat16>(kBnLarge, seed, false);
}

// ---- the previous layer's batch norm + ReLU in the forward's gather (the prologue, bn_apply.cuh) ----------
// Each configuration of the menu (kSweepConfigs) and the wgmma kernel: the forward that reads x through a batch norm + ReLU
// stores the y, and writes the moments, of the forward with moments run on batchnorm_forward's output
// (ReLU) of the same x, bit for bit, in every order. The previous layer's mean spans x so the ReLU cuts
// about half its values, and its shift is positive so that a prologue applied to the padding (which must
// stay 0: it is the activation's) would show. With and without that layer's affine parameters.
template <typename E>
void bn_prologue_case(const ConvGeom& g, uint64_t seed) {
  REQUIRE(cuda::register_cuda_backend());
  Rng rng(seed);
  const int64_t xs = g.N * g.C * g.H * g.W, wsz = g.K * g.C * g.R * g.S;
  const size_t ny = size_t(g.N * g.K * g.P() * g.Q()), C = size_t(g.C);
  const size_t nmom = size_t(cuda::conv2d_bn_moments_floats(g));
  const Operand<E> x = operand<E>(size_t(xs), rng), w = operand<E>(size_t(wsz), rng);
  std::vector<float> im, is, iw, ib;
  for (size_t c = 0; c < C; ++c) {
    im.push_back(float(rng.uniform() - 0.5)), is.push_back(float(0.5 + 1.5 * rng.uniform()));
    iw.push_back(float(0.5 + rng.uniform())), ib.push_back(float(0.2 + 0.4 * rng.uniform()));
  }
  DeviceBuffer<E> dX(x.values), dW(w.values), dA{size_t(xs)};
  DeviceBuffer<float> dM(im), dS(is), dG(iw), dBb(ib);
  DeviceBuffer<float> ws(size_t(std::max<int64_t>(cuda::conv2d_wgmma_workspace(g, 1), 1)));
  std::vector<int> families(std::begin(kSweepConfigs), std::end(kSweepConfigs));
  bool wgmma = cuda::conv2d_wgmma_supported(g);
#ifdef NIMBUS_CUDA_RUNTIME
  wgmma = wgmma && cuda::wgmma_available();
#endif
  if (wgmma) families.push_back(cuda::kTcWgmma);
  for (const bool affine : {true, false}) {
    const cuda::BnReluIn in{dM.p, dS.p, affine ? dG.p : nullptr, affine ? dBb.p : nullptr};
    cuda::batchnorm_forward(dA.p, static_cast<const E*>(dX.p), in.mean, in.invstd, in.weight, in.bias, g.N, g.C,
                            g.H * g.W, true);
    for (const int config : families) {
      if (!config_fits<E>(config)) continue;
      const bool hopper = config == cuda::kTcWgmma;
      const std::string where = std::string(std::is_same_v<E, float> ? "tf32" : "bf16") + " C=" + std::to_string(g.C) +
                                " K=" + std::to_string(g.K) + " " + std::to_string(g.R) + "x" + std::to_string(g.S) +
                                " stride " + std::to_string(g.stride) + " " + cuda::tc_config_name(config) +
                                (affine ? "" : " (no affine)");
      // y then the moments, as floats: the forward with moments on the written activation ...
      auto run = [&](const E* input, const cuda::BnReluIn& prologue) {
        DeviceBuffer<E> out(std::vector<E>(ny, E(NAN)));
        DeviceBuffer<float> moments(std::vector<float>(nmom, NAN));
        const int chunks =
            hopper ? cuda::conv2d_wgmma_forward_bn_moments<E>(out.p, input, dW.p, nullptr, g, ws.p, moments.p, prologue)
                   : cuda::conv2d_tc_forward_bn_moments<E>(out.p, input, dW.p, nullptr, g, moments.p, {config, 1},
                                                           prologue);
        V all;
        for (E v : out.download()) all.push_back(double(float(v)));
        const std::vector<float> m = moments.download();
        for (size_t i = 0; i < size_t(chunks) * size_t(g.K) * 3; ++i) all.push_back(m[i]);
        return all;
      };
      const V want = run(dA.p, {});
      size_t nan = 0;
      for (double v : want) nan += std::isnan(v);
      REQUIRE_MESSAGE(nan == 0, where, ": the reference forward left ", nan, " values unwritten");
      // ... and the prologue on x, which must give the same bits.
      const V got = in_every_order(where + " prologue", [&] { return run(dX.p, in); });
      REQUIRE(got.size() == want.size());
      size_t bad = 0, first = 0;
      for (size_t i = 0; i < got.size(); ++i)
        if (std::memcmp(&got[i], &want[i], sizeof(double)) != 0 && bad++ == 0) first = i;
      CHECK_MESSAGE(bad == 0, where, ": ", bad, " of ", got.size(), " values (y, then moments) differ from the ",
                    "forward on batchnorm_forward's output; first [", first, "] ", got[first], " against ", want[first]);
    }
  }
}

TEST_CASE("cuda tensor cores: the batch norm + ReLU prologue reads what batchnorm_forward writes, every configuration and wgmma, tf32 and bf16, all orders") {
  uint64_t seed = 331;
  for (const ConvGeom& g : kBnGeoms) {
    bn_prologue_case<float>(g, seed++);
    bn_prologue_case<bfloat16>(g, seed++);
  }
}

// The merge alone (batchnorm_stats_from_moments): 3 channels of 1,000 chunks (every thread of the merge's
// block takes several in order, and the whole tree runs), every 17th chunk empty, chunk sizes 1 to 64,
// values with a mean of 1,000 and a spread of 1, their chunk moments rounded to float as an epilogue
// writes them. Reference: the same float chunk moments merged in float64. The mean must come out within
// 1e-6 of itself, the variance (read back from invstd) within 1e-5 of itself.
TEST_CASE("cuda kernels: batchnorm_stats_from_moments merges 1,000 chunks a channel, empty ones too") {
  REQUIRE(cuda::register_cuda_backend());
  const int C = 3, S = 1000;
  Rng rng(401);
  std::vector<float> part(size_t(C) * S * 3);
  std::vector<double> want_mean(C), want_var(C);
  int64_t M = 0;
  for (int c = 0; c < C; ++c) {
    double n = 0, mean = 0, m2 = 0;  // the float chunks merged in float64 (Chan)
    for (int s = 0; s < S; ++s) {
      const int k = s % 17 == 0 ? 0 : 1 + (s * 37) % 64;  // the same sizes in every channel: one M
      std::vector<double> v;
      for (int i = 0; i < k; ++i) v.push_back(double(float(1000.0 + c + 2 * rng.uniform() - 1)));
      double cm = 0, cm2 = 0;
      for (double x : v) cm += x;
      if (k) cm /= k;
      for (double x : v) cm2 += (x - cm) * (x - cm);
      float* p = &part[(size_t(c) * S + size_t(s)) * 3];
      p[0] = float(k), p[1] = float(cm), p[2] = float(cm2);
      if (k == 0) continue;
      const double nb = p[0], mb = p[1], tot = n + nb, delta = mb - mean;
      mean += delta * nb / tot;
      m2 += double(p[2]) + delta * delta * n * nb / tot;
      n = tot;
    }
    want_mean[size_t(c)] = mean, want_var[size_t(c)] = m2 / n;
    M = int64_t(n);
  }
  DeviceBuffer<float> dpart(part), mean(static_cast<size_t>(C)), invstd(static_cast<size_t>(C)), rm(std::vector<float>(size_t(C), 0.0f)),
      rv(std::vector<float>(size_t(C), 1.0f)), count(std::vector<float>{0});
  const float eps = 1e-5f;
  cuda::batchnorm_stats_from_moments(mean.p, invstd.p, rm.p, rv.p, count.p, dpart.p, C, S, M, 0.1f, eps);
  const std::vector<float> m = mean.download(), is = invstd.download(), r = rv.download();
  for (int c = 0; c < C; ++c) {
    CAPTURE(c);
    CHECK(std::fabs(m[size_t(c)] - want_mean[size_t(c)]) <= 1e-6 * want_mean[size_t(c)]);
    const double var = 1.0 / (double(is[size_t(c)]) * is[size_t(c)]) - eps;
    CHECK(std::fabs(var - want_var[size_t(c)]) <= 1e-5 * want_var[size_t(c)]);
    const double rv_want = 0.9 + 0.1 * want_var[size_t(c)] * double(M) / double(M - 1);
    CHECK(std::fabs(r[size_t(c)] - rv_want) <= 1e-5 * rv_want);
  }
  CHECK(count.download()[0] == 1.0f);
}

}  // namespace
