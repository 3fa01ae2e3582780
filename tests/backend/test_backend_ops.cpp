// test_backend_ops.cpp: every kernel of engine/kernel_list.def, on every backend, against a float64
// reference (in the manner of ggml's test-backend-ops). docs/backends.md explains the design.
//
// The table at the bottom of this file (BACKEND_CASE lines) holds one case per kernel or group of
// kernels (a forward/backward pair, batch norm's five), keyed by the kernels it covers. Each case is
// one TEST_CASE (one ctest entry), which runs:
//   1. gradient mode (pairs only): the float64 reference's backward against central finite
//      differences of the float64 reference's forward, at a few random coordinates (fd_check);
//   2. for every backend (cpu, cuda) x every element type (float32 today, kTypes): random inputs of
//      odd sizes (not multiples of 32 or of any block or tile size, so launches end with a partial
//      block) with the kernel's edge values, rounded to the type; outputs poisoned with NaN first (an
//      element a kernel forgets to write fails; in-place kernels start from values they must change);
//      the kernel run through backend(device, ...).<name>(...) on buffers of that device; the result
//      compared with the float64 reference run on the same rounded inputs (the kernels/cpu _ref
//      templates or the double instantiations of the templated kernels).
// The bound, per element i:  |got_i - ref_i| <= tol * scale_i, tol = 1e-5 for float32, and scale_i,
// unless a case says otherwise, the sum of |terms| that make up ref_i: for the multilinear kernels
// (linear, conv2d, pooling, add, scale) the same reference run on the inputs' absolute values.
// Selections and conversions (relu, max pool forward, copies, casts) must be exact. NaN never passes,
// except where the reference is NaN: there got must be NaN too (NaN positions match exactly).
// The first case lists engine/kernel_list.def and fails naming every kernel no case covers.
//
// NIMBUS_BACKEND_SEED=<n> in the environment changes every case's seed (each case derives its own
// from the base and its name); a failure prints the kernels, backend, dtype, shape and seed, and the
// first (and the worst) element out of bound with got, expected and the bound.
#include <doctest/doctest.h>

#include <algorithm>
#include <type_traits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "backends/cuda/backend.h"
#include "engine/backend.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "kernels/cpu/batchnorm.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/grad_clip.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/pool.h"
#include "tests/common/check.h"

using namespace nimbus;

namespace {

using V = std::vector<double>;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------
// Element types under test: the list's F32 kernels run in float32, its F32_BF16 kernels in both.
// A bfloat16 kernel computes in float and rounds its result once (a relative error of at most
// 2^-9); its bound, 2^-8, leaves room for the float arithmetic before that rounding and nothing
// more (an element off by one bf16 ulp of its scale fails).

//
// Float32 convolutions and linear layers on CUDA run twice, once per math mode (backend.h): fp32
// (the plain kernels, the float32 bound) and tf32 (the tensor-core kernels). TF32 rounds each
// operand to 10 mantissa bits (nearest, ties away: a relative error of at most 2^-11), so a product
// is off by at most (2^-10 + 2^-22) |a b|, and the float accumulation adds the float32 bound:
// tol = 2^-10 + 1e-5 of the sum of |terms|. A wrong element (a missed term, a swapped index) is off
// by about one term's size and fails.

struct TypeUnderTest {
  DType dtype;
  double tol;  // the base bound: |got - ref| <= tol * scale (f32: ~170 roundings of 2^-24)
  bool tf32 = false;  // float32 tensors, tensor-core math
  // What the kernel sees of a value: float32, or the bfloat16 the cast makes of that float.
  double round(double v) const {
    return dtype == DType::BF16 ? double(float(bfloat16(float(v)))) : double(float(v));
  }
  const char* name() const { return tf32 ? "float32 (tf32 math)" : dtype_name(dtype); }
};
const TypeUnderTest kF32{DType::F32, 1e-5};
const TypeUnderTest kTF32{DType::F32, 1.0 / 1024 + 1e-5, true};
const TypeUnderTest kBF16{DType::BF16, 1.0 / 256};

// ---------------------------------------------------------------------------------------------
// One case on one backend and dtype: inputs, device buffers, the failure report.

struct Run {
  std::string kernels;  // the case's kernels, for the report
  Device dev;
  const TypeUnderTest& dt;
  uint64_t seed;
  Rng rng;
  std::string shape;  // set by the case

  Run(std::string k, Device d, const TypeUnderTest& t, uint64_t s)
      : kernels(std::move(k)), dev(d), dt(t), seed(s), rng(s) {}

  template <typename T = float> const Kernels<T>& be() const { return backend<T>(dev, "test_backend"); }
  std::string where() const {
    std::ostringstream o;
    o << "[" << kernels << "] backend " << device_name(dev) << ", dtype " << dt.name() << ", shape " << shape
      << ", seed " << seed;
    return o.str();
  }
  // n values uniform in [lo, hi), rounded to the dtype (the reference sees what the kernel sees).
  V rand(size_t n, double lo = -1, double hi = 1) {
    V v(n);
    for (double& x : v) x = dt.round(lo + (hi - lo) * rng.uniform());
    return v;
  }
  // A kernel's scalar arguments are float in every dtype.
  double scalar(double v) const { return double(float(v)); }
  // Float32 values and buffers whatever the run's dtype: the statistics and parameters of kernels
  // whose activations alone are T (batch norm).
  V rand32(size_t n, double lo = -1, double hi = 1) {
    V v(n);
    for (double& x : v) x = double(float(lo + (hi - lo) * rng.uniform()));
    return v;
  }
  Tensor up32(const V& v) const {
    std::vector<float> f(v.begin(), v.end());
    return Tensor::from_vector(Shape{int64_t(v.size())}, f, dev);
  }
  Tensor poison32(size_t n) const { return Tensor::full(Shape{int64_t(n)}, NAN, dev); }
  // Plain structs (optimiser scalars, clocks) in device memory, byte for byte; raw_down reads them back.
  template <typename S>
  Tensor up_raw(const S* items, size_t count) const {
    std::vector<float> f((count * sizeof(S) + sizeof(float) - 1) / sizeof(float), 0.f);
    std::memcpy(static_cast<void*>(f.data()), static_cast<const void*>(items), count * sizeof(S));
    return Tensor::from_vector(Shape{int64_t(f.size())}, f, dev);
  }
  template <typename S>
  static std::vector<S> raw_down(const Tensor& t, size_t count) {
    const std::vector<float> f = t.to_vector();
    std::vector<S> out(count);
    std::memcpy(static_cast<void*>(out.data()), static_cast<const void*>(f.data()), count * sizeof(S));
    return out;
  }
  // A float32 scalar in device memory (a loss backward's g = dL/dloss).
  Tensor device_scalar(double v) const { return Tensor::from_vector(Shape{1}, {float(v)}, dev); }
  // A buffer of the run's dtype on its device holding v (exactly, when v came from rand or round).
  Tensor up(const V& v) const {
    std::vector<float> f(v.begin(), v.end());
    return Tensor::from_vector(Shape{int64_t(v.size())}, f, dev).to(dt.dtype);
  }
  Tensor poison(size_t n) const { return Tensor::full(Shape{int64_t(n)}, NAN, dev).to(dt.dtype); }
  static std::vector<float> down(const Tensor& t) { return t.to(DType::F32).to_vector(); }
};

V absv(const V& v) {
  V a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = std::fabs(v[i]);
  return a;
}
double max_abs(const V& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// The comparison. scale has one entry per element, or one for all.
void expect(const Run& r, const std::string& what, const std::vector<float>& got, const V& ref, const V& scale,
            double tol) {
  REQUIRE_MESSAGE(got.size() == ref.size(), r.where(), ": ", what, ": ", got.size(), " elements, expected ",
                  ref.size());
  REQUIRE((scale.size() == ref.size() || scale.size() == 1));
  size_t bad = 0, first = 0, worst = 0;
  double worst_ratio = 0;
  auto bound_at = [&](size_t i) { return tol * (scale.size() == 1 ? scale[0] : scale[i]); };
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = got[i], w = ref[i];
    bool ok;
    if (std::isnan(w) || std::isnan(g)) ok = std::isnan(w) && std::isnan(g);
    else if (std::isinf(w) || std::isinf(g)) ok = g == w;
    else ok = std::fabs(g - w) <= bound_at(i);
    if (ok) continue;
    const double ratio = std::isfinite(g - w) ? std::fabs(g - w) / std::max(bound_at(i), 1e-300) : INFINITY;
    if (bad++ == 0) first = i;
    if (ratio > worst_ratio || bad == 1) worst_ratio = ratio, worst = i;
  }
  if (bad == 0) {
    CHECK(true);
    return;
  }
  std::ostringstream o;
  o.precision(9);
  auto describe_at = [&](size_t i) {
    o << "[" << i << "]: got " << got[i] << ", expected " << ref[i] << " (|diff| " << std::fabs(got[i] - ref[i])
      << ", bound " << bound_at(i) << " = " << tol << " x scale " << (scale.size() == 1 ? scale[0] : scale[i]) << ")";
  };
  o << r.where() << ": " << what << ": " << bad << " of " << ref.size() << " elements out of bound; first ";
  describe_at(first);
  if (worst != first) {
    o << "; worst ";
    describe_at(worst);
  }
  FAIL_CHECK(o.str());
}
void expect_exact(const Run& r, const std::string& what, const std::vector<float>& got, const V& ref) {
  expect(r, what, got, ref, V{0.0}, 0.0);
}
// A device scalar (a loss) against its reference.
void expect_scalar(const Run& r, const std::string& what, const Tensor& t, double ref, double scale, double tol) {
  expect(r, what, Run::down(t), V{ref}, V{scale}, tol);
}

// ---------------------------------------------------------------------------------------------
// Gradient mode: the float64 reference's backward against central differences of its forward.
//
// f: the scalar L(x) (a loss, or <forward(x), r> for a random r, whose gradient wrt the output is r);
// analytic: dL/dx from the reference backward. Checks `count` random coordinates i where usable(i)
// (away from kinks: ReLU at 0, |.| at 0, max-pool ties):
//   |fd_i - analytic_i| <= 1e-6 * (|analytic_i| + max_j |analytic_j|),  fd_i = (L(x + h e_i) - L(x - h e_i)) / 2h,
// h = 1e-6. In double the difference quotient is good to ~1e-9 of the gradient's scale here.
void fd_check(const std::string& what, uint64_t seed, V x, const std::function<double(const V&)>& f,
              const V& analytic, Rng& rng, const std::function<bool(size_t)>& usable = nullptr, int count = 6) {
  REQUIRE(x.size() == analytic.size());
  const double h = 1e-6, tol = 1e-6, gmax = max_abs(analytic);
  int done = 0;
  for (int tries = 0; done < count && tries < 100 * count; ++tries) {
    const size_t i = size_t(rng.below(x.size()));
    if (usable && !usable(i)) continue;
    const double xi = x[i];
    x[i] = xi + h;
    const double fp = f(x);
    x[i] = xi - h;
    const double fm = f(x);
    x[i] = xi;
    const double fd = (fp - fm) / (2 * h), a = analytic[i];
    CHECK_MESSAGE(std::fabs(fd - a) <= tol * (std::fabs(a) + gmax), "gradient mode, ", what, ", seed ", seed,
                  ": d/dx[", i, "] is ", a, " by the float64 backward, ", fd, " by central differences (bound ",
                  tol * (std::fabs(a) + gmax), ")");
    ++done;
  }
  CHECK_MESSAGE(done == count, "gradient mode, ", what, ": only ", done, " usable coordinates");
}

V rvec(Rng& rng, size_t n, double lo = -1, double hi = 1) { return test::random_vec(n, rng, lo, hi); }

// ============================================================================================
// The cases. Each *_check runs on one backend and dtype; each *_grad is gradient mode (float64 only).

// ---- pointwise: n = 1037 = 4 blocks of 256 on CUDA plus a partial one of 13 (not a multiple of 32) ----
constexpr int64_t kN = 1037;

template <typename T>
void add_inplace_check(Run& r) {
  r.shape = "n=1037";
  V y = r.rand(kN), x = r.rand(kN);
  x[5] = kNaN;             // a NaN gradient must reach the accumulator
  x[kN - 1] = -y[kN - 1];  // exact cancellation, in the partial last block
  V want(kN), scale(kN);
  for (int64_t i = 0; i < kN; ++i) want[i] = y[i] + x[i], scale[i] = std::fabs(y[i]) + std::fabs(x[i]);
  Tensor Y = r.up(y), X = r.up(x);  // in place: y itself is the output (its old values would fail)
  r.be<T>().add_inplace(Y.data_as<T>(), X.data_as<T>(), kN);
  expect(r, "add_inplace y", Run::down(Y), want, scale, r.dt.tol);
}

template <typename T>
void relu_check(Run& r) {
  r.shape = "n=1037";
  V x = r.rand(kN);
  // Edge values: 0 and -0 (y = x, dx = 0: the derivative at 0 is 0), NaN (passes through), +-inf,
  // and 0 / NaN again in the partial last block.
  x[0] = 0, x[1] = -0.0, x[2] = kNaN, x[3] = kInf, x[4] = -kInf, x[kN - 1] = 0, x[kN - 2] = kNaN;
  V y(kN), dy = r.rand(kN), dx(kN);
  cpu::relu_forward<double>(y.data(), x.data(), kN);
  cpu::relu_backward<double>(dx.data(), dy.data(), y.data(), kN);
  Tensor X = r.up(x), Y = r.poison(kN);
  r.be<T>().relu_forward(Y.data_as<T>(), X.data_as<T>(), kN);
  expect_exact(r, "relu_forward y", Run::down(Y), y);
  Tensor DY = r.up(dy), Yin = r.up(y), DX = r.poison(kN);
  r.be<T>().relu_backward(DX.data_as<T>(), DY.data_as<T>(), Yin.data_as<T>(), kN);
  expect_exact(r, "relu_backward dx", Run::down(DX), dx);
}

void relu_grad(uint64_t seed) {
  Rng rng(seed);
  const size_t n = 40;
  const V x = rvec(rng, n), w = rvec(rng, n);
  auto f = [&](const V& v) {
    V y(n);
    cpu::relu_forward<double>(y.data(), v.data(), int64_t(n));
    return test::dot(y, w);
  };
  V y(n), dx(n);
  cpu::relu_forward<double>(y.data(), x.data(), int64_t(n));
  cpu::relu_backward<double>(dx.data(), w.data(), y.data(), int64_t(n));
  fd_check("relu", seed, x, f, dx, rng, [&](size_t i) { return std::fabs(x[i]) > 1e-3; });
}

template <typename T>
void add_check(Run& r) {
  r.shape = "n=1037";
  V a = r.rand(kN), b = r.rand(kN);
  a[3] = kNaN, b[kN - 1] = kInf;
  V want(kN), scale(kN);
  for (int64_t i = 0; i < kN; ++i) want[i] = a[i] + b[i], scale[i] = std::fabs(a[i]) + std::fabs(b[i]);
  Tensor A = r.up(a), B = r.up(b), Y = r.poison(kN);
  r.be<T>().add(Y.data_as<T>(), A.data_as<T>(), B.data_as<T>(), kN);
  expect(r, "add y", Run::down(Y), want, scale, r.dt.tol);
}

template <typename T>
void add_relu_check(Run& r) {
  r.shape = "n=1037";
  V a = r.rand(kN), b = r.rand(kN);
  a[0] = 0.25, b[0] = -0.25;  // a + b exactly 0
  a[1] = -0.5, b[1] = 0.5;    // the other way round
  a[2] = kNaN;                // NaN passes through
  a[kN - 1] = 0.75, b[kN - 1] = -0.75;
  V y(kN), scale(kN);
  cpu::add_relu<double>(y.data(), a.data(), b.data(), kN);
  for (int64_t i = 0; i < kN; ++i) scale[i] = std::fabs(a[i]) + std::fabs(b[i]);
  Tensor A = r.up(a), B = r.up(b), Y = r.poison(kN);
  r.be<T>().add_relu(Y.data_as<T>(), A.data_as<T>(), B.data_as<T>(), kN);
  expect(r, "add_relu y", Run::down(Y), y, scale, r.dt.tol);
}

// Backward of y = relu(a + b): relu_backward(dy, y), to both inputs.
void add_relu_grad(uint64_t seed) {
  Rng rng(seed);
  const size_t n = 40;
  const V a = rvec(rng, n), b = rvec(rng, n), w = rvec(rng, n);
  auto fwd = [&](const V& aa, const V& bb) {
    V y(n);
    cpu::add_relu<double>(y.data(), aa.data(), bb.data(), int64_t(n));
    return y;
  };
  V y = fwd(a, b), g(n);
  cpu::relu_backward<double>(g.data(), w.data(), y.data(), int64_t(n));
  auto away = [&](size_t i) { return std::fabs(a[i] + b[i]) > 1e-3; };
  fd_check("add_relu da", seed, a, [&](const V& v) { return test::dot(fwd(v, b), w); }, g, rng, away);
  fd_check("add_relu db", seed, b, [&](const V& v) { return test::dot(fwd(a, v), w); }, g, rng, away);
}

template <typename T>
void add_scaled_check(Run& r) {
  r.shape = "n=1037";
  const double s = r.scalar(0.1);  // DSen2-CR's residual scale, as the float the kernel gets
  V a = r.rand(kN), b = r.rand(kN, -3, 3);
  b[4] = kNaN;
  V y(kN), scale(kN);
  cpu::add_scaled<double>(y.data(), a.data(), b.data(), s, kN);
  for (int64_t i = 0; i < kN; ++i) scale[i] = std::fabs(a[i]) + std::fabs(s * b[i]);
  Tensor A = r.up(a), B = r.up(b), Y = r.poison(kN);
  r.be<T>().add_scaled(Y.data_as<T>(), A.data_as<T>(), B.data_as<T>(), float(s), kN);
  expect(r, "add_scaled y", Run::down(Y), y, scale, r.dt.tol);
  // scale: y = s * x (add_scaled's backward to b), out of place and in place (y may alias x).
  for (double s2 : {s, r.scalar(-2.5)}) {
    V x = r.rand(kN, -4, 4), z(kN);
    x[7] = kNaN;
    cpu::scale<double>(z.data(), x.data(), s2, kN);
    const V sc = absv(z);
    Tensor X = r.up(x), Z = r.poison(kN);
    r.be<T>().scale(Z.data_as<T>(), X.data_as<T>(), float(s2), kN);
    expect(r, "scale y (s = " + std::to_string(s2) + ")", Run::down(Z), z, sc, r.dt.tol);
    r.be<T>().scale(X.data_as<T>(), X.data_as<T>(), float(s2), kN);
    expect(r, "scale in place (s = " + std::to_string(s2) + ")", Run::down(X), z, sc, r.dt.tol);
  }
}

// The classifier's input normalisation: DN values around and beyond [0, scale], a NaN pixel.
void input_norm_check(Run& r) {
  const int64_t N = 2, C = 13, HW = 7 * 5, n = N * C * HW;
  r.shape = "N=2 C=13 HW=7x5";
  V x = r.rand32(size_t(n), -2000, 12000);
  x[11] = kNaN;
  const V mean = r.rand32(size_t(C), 0, 0.3), sd = r.rand32(size_t(C), 0.01, 0.2);
  const std::vector<float> mf(mean.begin(), mean.end()), sf(sd.begin(), sd.end());
  V y(static_cast<size_t>(n)), scale(static_cast<size_t>(n));
  cpu::input_norm<double>(y.data(), x.data(), mf.data(), sf.data(), 10000.f, N, C, HW);
  for (int64_t i = 0; i < n; ++i) scale[size_t(i)] = (1 + std::fabs(mean[size_t((i / HW) % C)])) / sd[size_t((i / HW) % C)];
  Tensor X = r.up32(x), M = r.up32(mean), S = r.up32(sd), Y = r.poison32(size_t(n));
  r.be().input_norm(Y.data(), X.data(), M.data(), S.data(), 10000.f, N, C, HW);
  expect(r, "input_norm y", Y.to_vector(), y, scale, 1e-6);
}

// flip_rotate's reference, independent of kernels/common/dihedral.h: numpy's flipud (flip 1) or fliplr
// (flip 2), then `rot` turns of np.rot90 (one turn: out[i][j] = in[j][S-1-i]), plane by plane; every
// value NaN for a code outside 0..11 or not whole.
V flip_rotate_ref(const V& x, const std::vector<float>& codes, int64_t N, int64_t C, int64_t S) {
  V y(x.size());
  for (int64_t n = 0; n < N; ++n) {
    const float code = codes[size_t(n)];
    const bool valid = code >= 0 && code < 12 && code == std::floor(code);
    const int flip = valid ? int(code) / 4 : 0, rot = valid ? int(code) % 4 : 0;
    for (int64_t c = 0; c < C; ++c) {
      const size_t at = size_t((n * C + c) * S * S);
      V plane(x.begin() + ptrdiff_t(at), x.begin() + ptrdiff_t(at + size_t(S * S))), turned(plane.size());
      for (int64_t i = 0; i < S; ++i)
        for (int64_t j = 0; j < S; ++j)
          turned[size_t(i * S + j)] = flip == 1 ? plane[size_t((S - 1 - i) * S + j)]
                                      : flip == 2 ? plane[size_t(i * S + S - 1 - j)]
                                                  : plane[size_t(i * S + j)];
      for (int t = 0; t < rot; ++t) {
        plane = turned;
        for (int64_t i = 0; i < S; ++i)
          for (int64_t j = 0; j < S; ++j) turned[size_t(i * S + j)] = plane[size_t(j * S + S - 1 - i)];
      }
      for (size_t k = 0; k < turned.size(); ++k) y[at + k] = valid ? turned[k] : kNaN;
    }
  }
  return y;
}

// flip_rotate: every code 0..11 once, then an out-of-range and a fractional code (NaN samples), on 5x5
// images (odd: the centre pixel stays) with a NaN pixel; a permutation, so exact.
void flip_rotate_check(Run& r) {
  const int64_t N = 14, C = 3, S = 5, n = N * C * S * S;
  r.shape = "N=14 C=3 S=5";
  V x = r.rand32(size_t(n), -3, 3);
  x[40] = kNaN;
  V codes(static_cast<size_t>(N));
  for (int64_t k = 0; k < 12; ++k) codes[size_t(k)] = double(k);
  codes[12] = 12, codes[13] = 2.5;
  const std::vector<float> cf(codes.begin(), codes.end());
  const V y = flip_rotate_ref(x, cf, N, C, S);
  Tensor X = r.up32(x), K = r.up32(codes), Y = r.poison32(size_t(n));
  r.be().flip_rotate(Y.data(), X.data(), K.data(), N, C, S);
  expect_exact(r, "flip_rotate y", Y.to_vector(), y);
}

// band_affine over 4 bands: DSen2-CR's S2 scaling (clip to [0, 10000], / 2000), S1's VV and VH
// (clip to [-25, 0] and [-32.5, 0], 2 (x - lo) / -lo), and the S2 inverse (x 2000, no clip: lo and hi
// infinite). Inputs across every clip edge, a NaN (stays NaN). Bound: 1e-6 of |y| + 1e-6 (three
// float roundings).
void band_affine_check(Run& r) {
  const int64_t N = 2, C = 4, HW = 7 * 5, n = N * C * HW;
  r.shape = "N=2 C=4 HW=7x5";
  V x = r.rand32(size_t(n), -40, 12000);
  for (int64_t i = 0; i < n; i += 9) x[size_t(i)] = double(float(-40 + 0.37 * double(i)));  // [-40, 0) too
  x[13] = kNaN;
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> p = {0, -25, -32.5f, -inf,      10000, 0, 0, inf,  0, -25, -32.5f, 0,
                                1, 2,   2,      2000, 2000,  25, 32.5f, 1};
  V y(static_cast<size_t>(n)), scale(static_cast<size_t>(n));
  cpu::band_affine<double>(y.data(), x.data(), p.data(), N, C, HW);
  for (int64_t i = 0; i < n; ++i) scale[size_t(i)] = std::fabs(y[size_t(i)]) + 1;
  Tensor X = r.up32(x), P = r.up32(V(p.begin(), p.end())), Y = r.poison32(size_t(n));
  r.be().band_affine(Y.data(), X.data(), P.data(), N, C, HW);
  expect(r, "band_affine y", Y.to_vector(), y, scale, 1e-6);
}

// Backward of y = a + s b: da = dy, db = scale(dy, s).
void add_scaled_grad(uint64_t seed) {
  Rng rng(seed);
  const size_t n = 40;
  const double s = double(0.1f);
  const V a = rvec(rng, n), b = rvec(rng, n), w = rvec(rng, n);
  auto fwd = [&](const V& aa, const V& bb) {
    V y(n);
    cpu::add_scaled<double>(y.data(), aa.data(), bb.data(), s, int64_t(n));
    return y;
  };
  V db(n);
  cpu::scale<double>(db.data(), w.data(), s, int64_t(n));
  fd_check("add_scaled da", seed, a, [&](const V& v) { return test::dot(fwd(v, b), w); }, w, rng);
  fd_check("add_scaled db (scale)", seed, b, [&](const V& v) { return test::dot(fwd(a, v), w); }, db, rng);
}

// ---- concat_channels' strided rows: rows of len floats; the gaps between rows must stay as they were ----
template <typename T>
void copy_rows_check(Run& r) {
  const int64_t rows = 3, len = 291, src_stride = 301, dst_stride = 333;
  r.shape = "rows=3 len=291 src_stride=301 dst_stride=333";
  const V src = r.rand(size_t(rows * src_stride));
  V dst(size_t(rows * dst_stride)), want(dst.size());
  for (int64_t i = 0; i < rows * dst_stride; ++i) {
    const bool in_row = i % dst_stride < len;
    dst[i] = in_row ? kNaN : r.dt.round(double(100 + i));  // poison where the kernel writes, sentinels in the gaps
    want[i] = in_row ? src[(i / dst_stride) * src_stride + i % dst_stride] : dst[i];
  }
  Tensor S = r.up(src), D = r.up(dst);
  r.be<T>().copy_rows(D.data_as<T>(), dst_stride, S.data_as<T>(), src_stride, rows, len);
  expect_exact(r, "copy_rows dst", Run::down(D), want);
}

// ---- the formula-defined ops (kernels/common/unary_ops.def), one generic case each ----
// Inputs: uniform in [-4, 4] with edge values 0, -0, NaN, +-inf, +-30, +-1e-30 (also in the partial
// last block). Reference: the double instantiation of the same formula (the formula itself is held
// to PyTorch by tests/engine/test_unary_ops.cpp). Bound per element: tol * (|ref_i| + 0.01 max_j
// |ref_j|), the max over the finite random part: relative, with a floor for results near a zero of
// f or f' (GELU's derivative crosses 0 at x = -0.75, where its two terms cancel).
using UnaryRef = void (*)(double*, const double*, int64_t);
using UnaryRefBackward = void (*)(double*, const double*, const double*, int64_t);

V unary_scale(const V& ref, size_t random_from) {
  double m = 0;
  for (size_t i = random_from; i < ref.size(); ++i)
    if (std::isfinite(ref[i])) m = std::max(m, std::fabs(ref[i]));
  V scale(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) scale[i] = std::fabs(ref[i]) + 0.01 * m;
  return scale;
}

template <typename T>
void unary_check(Run& r, const std::string& name, void (*const Kernels<T>::*fwd)(T*, const T*, int64_t),
                 void (*const Kernels<T>::*bwd)(T*, const T*, const T*, int64_t), UnaryRef f, UnaryRefBackward df) {
  r.shape = "n=1037";
  V x = r.rand(kN, -4, 4);
  const double edges[] = {0, -0.0, kNaN, kInf, -kInf, 30, -30, 1e-30, -1e-30};
  const size_t n_edges = sizeof(edges) / sizeof(edges[0]);
  for (size_t i = 0; i < n_edges; ++i) x[i] = r.dt.round(edges[i]);
  x[kN - 1] = kNaN, x[kN - 2] = -kInf, x[kN - 3] = 0;
  V y(kN), dy = r.rand(kN), dx(kN);
  f(y.data(), x.data(), kN);
  df(dx.data(), dy.data(), x.data(), kN);
  Tensor X = r.up(x), Y = r.poison(kN);
  (r.be<T>().*fwd)(Y.data_as<T>(), X.data_as<T>(), kN);
  expect(r, name + "_forward y", Run::down(Y), y, unary_scale(y, n_edges), r.dt.tol);
  Tensor DY = r.up(dy), DX = r.poison(kN);
  (r.be<T>().*bwd)(DX.data_as<T>(), DY.data_as<T>(), X.data_as<T>(), kN);
  expect(r, name + "_backward dx", Run::down(DX), dx, unary_scale(dx, n_edges), r.dt.tol);
}

void unary_grad(uint64_t seed, const std::string& name, UnaryRef f, UnaryRefBackward df) {
  Rng rng(seed);
  const size_t n = 40;
  const V x = rvec(rng, n, -4, 4), w = rvec(rng, n);
  auto L = [&](const V& v) {
    V y(n);
    f(y.data(), v.data(), int64_t(n));
    return test::dot(y, w);
  };
  V dx(n);
  df(dx.data(), w.data(), x.data(), int64_t(n));
  fd_check(name, seed, x, L, dx, rng);
}

// ---- linear: N=9, in=37, out=70: the CUDA GEMM's tiles (8, 16, 64) all end partial ----
template <typename T>
void linear_check(Run& r) {
  const int64_t N = 9, in = 37, out = 70;
  r.shape = "N=9 in=37 out=70";
  const V x = r.rand(N * in), w = r.rand(out * in), b = r.rand(out), dy = r.rand(N * out);
  const V ax = absv(x), aw = absv(w), ab = absv(b), ady = absv(dy);
  V y(N * out), ys(N * out), y0(N * out), ys0(N * out);
  cpu::linear_forward<double>(y.data(), x.data(), w.data(), b.data(), N, in, out);
  cpu::linear_forward<double>(ys.data(), ax.data(), aw.data(), ab.data(), N, in, out);
  cpu::linear_forward<double>(y0.data(), x.data(), w.data(), nullptr, N, in, out);
  cpu::linear_forward<double>(ys0.data(), ax.data(), aw.data(), nullptr, N, in, out);
  V dx(N * in), dw(out * in), db(out), sx(N * in), sw(out * in), sb(out);
  cpu::linear_backward<double>(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), N, in, out);
  cpu::linear_backward<double>(sx.data(), sw.data(), sb.data(), ady.data(), ax.data(), aw.data(), N, in, out);
  const Kernels<T>& be = r.be<T>();
  Tensor X = r.up(x), W = r.up(w), B = r.up(b), DY = r.up(dy);
  {
    Tensor Y = r.poison(size_t(N * out));
    be.linear_forward(Y.data_as<T>(), X.data_as<T>(), W.data_as<T>(), B.data_as<T>(), N, in, out);
    expect(r, "linear_forward y", Run::down(Y), y, ys, r.dt.tol);
    Tensor Y0 = r.poison(size_t(N * out));
    be.linear_forward(Y0.data_as<T>(), X.data_as<T>(), W.data_as<T>(), nullptr, N, in, out);
    expect(r, "linear_forward y (no bias)", Run::down(Y0), y0, ys0, r.dt.tol);
  }
  {
    Tensor DX = r.poison(size_t(N * in)), DW = r.poison(size_t(out * in)), DB = r.poison(size_t(out));
    be.linear_backward(DX.data_as<T>(), DW.data_as<T>(), DB.data_as<T>(), DY.data_as<T>(), X.data_as<T>(), W.data_as<T>(), N, in, out);
    expect(r, "linear_backward dx", Run::down(DX), dx, sx, r.dt.tol);
    expect(r, "linear_backward dw", Run::down(DW), dw, sw, r.dt.tol);
    expect(r, "linear_backward db", Run::down(DB), db, sb, r.dt.tol);
  }
  {  // what the engine passes when only some inputs need a gradient: null outputs, null unused inputs
    Tensor DW = r.poison(size_t(out * in));
    be.linear_backward(nullptr, DW.data_as<T>(), nullptr, DY.data_as<T>(), X.data_as<T>(), nullptr, N, in, out);
    expect(r, "linear_backward dw (dx, db, w null)", Run::down(DW), dw, sw, r.dt.tol);
    Tensor DX = r.poison(size_t(N * in));
    be.linear_backward(DX.data_as<T>(), nullptr, nullptr, DY.data_as<T>(), nullptr, W.data_as<T>(), N, in, out);
    expect(r, "linear_backward dx (dw, db, x null)", Run::down(DX), dx, sx, r.dt.tol);
  }
}

void linear_grad(uint64_t seed) {
  Rng rng(seed);
  const int64_t N = 3, in = 5, out = 4;
  const V x = rvec(rng, N * in), w = rvec(rng, out * in), b = rvec(rng, out), r = rvec(rng, N * out);
  auto L = [&](const V& xx, const V& ww, const V& bb) {
    V y(N * out);
    cpu::linear_forward<double>(y.data(), xx.data(), ww.data(), bb.data(), N, in, out);
    return test::dot(y, r);
  };
  V dx(N * in), dw(out * in), db(out);
  cpu::linear_backward<double>(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), N, in, out);
  fd_check("linear dx", seed, x, [&](const V& v) { return L(v, w, b); }, dx, rng);
  fd_check("linear dw", seed, w, [&](const V& v) { return L(x, v, b); }, dw, rng);
  fd_check("linear db", seed, b, [&](const V& v) { return L(x, w, v); }, db, rng, nullptr, 3);
}

// ---- conv2d ----
std::string conv_str(const ConvGeom& g) {
  std::ostringstream o;
  o << "x (" << g.N << "," << g.C << "," << g.H << "," << g.W << ") w (" << g.K << "," << g.C << "," << g.R << ","
    << g.S << ") stride " << g.stride << " pad " << g.pad;
  return o.str();
}
// 3x3/1 pad 1 (ResNet, DSen2-CR), 1x1/2 (ResNet's downsample), 7x7/2 pad 3 with 13 input channels
// (ResNet's stem on Sentinel-2), and a pointwise 1x1/1. The last three reach the CPU backend's other
// paths (kernels/cpu/conv2d.cpp picks one by geometry; the report names it): direct 3x3 (rows of
// >= 16 outputs; 19 = a full 16-lane tile and a partial one), direct 1x1 (H*W a multiple of 16:
// that path's precondition, so H*W = 32 here), the shifted GEMMs (stride 1, >= 32 input channels) and
// Winograd F(2x2, 3x3) for the forward and dx (>= 32 outputs each way, rows of >= 20: 10 tiles of 16).
const ConvGeom kConvGeoms[] = {
    {2, 5, 9, 11, 7, 3, 3, 1, 1},   //
    {2, 6, 9, 7, 5, 1, 1, 2, 0},    //
    {2, 13, 15, 13, 6, 7, 7, 2, 3}, //
    {2, 5, 5, 7, 3, 1, 1, 1, 0},    //
    {2, 3, 5, 19, 5, 3, 3, 1, 1},   // direct3x3
    {1, 7, 4, 8, 5, 1, 1, 1, 0},    // direct1x1 forward
    {1, 33, 7, 9, 3, 3, 3, 1, 1},   // shifted
    {1, 32, 3, 20, 32, 3, 3, 1, 1}, // winograd (forward and dx)
};

struct ConvRef {
  V y, ys, yr, dx, sx, dw, sw, db, sb;  // ys, sx, ...: the same on |inputs| (the scales)
};
ConvRef conv_ref(const ConvGeom& g, const V& x, const V& w, const V& b, const V& dy) {
  const int64_t xs = g.N * g.C * g.H * g.W, wsz = g.K * g.C * g.R * g.S, ysz = g.N * g.K * g.P() * g.Q();
  ConvRef c{V(ysz), V(ysz), V(ysz), V(xs), V(xs), V(wsz), V(wsz), V(g.K), V(g.K)};
  const V ax = absv(x), aw = absv(w), ab = absv(b), ady = absv(dy);
  cpu::conv2d_forward_ref<double>(c.y.data(), x.data(), w.data(), b.data(), g);
  cpu::conv2d_forward_ref<double>(c.ys.data(), ax.data(), aw.data(), ab.data(), g);
  cpu::conv2d_forward_ref<double>(c.yr.data(), x.data(), w.data(), nullptr, g);  // no bias, then relu
  cpu::relu_forward<double>(c.yr.data(), c.yr.data(), ysz);
  cpu::conv2d_backward_data_ref<double>(c.dx.data(), dy.data(), w.data(), g);
  cpu::conv2d_backward_data_ref<double>(c.sx.data(), ady.data(), aw.data(), g);
  cpu::conv2d_backward_weight_ref<double>(c.dw.data(), dy.data(), x.data(), g);
  cpu::conv2d_backward_weight_ref<double>(c.sw.data(), ady.data(), ax.data(), g);
  cpu::bias_backward<double>(c.db.data(), dy.data(), g.N, g.K, g.P() * g.Q());
  cpu::bias_backward<double>(c.sb.data(), ady.data(), g.N, g.K, g.P() * g.Q());
  return c;
}

// A convolution's workspace of exactly `floats` float32 values on r's device, followed by a guard the
// kernels must not touch: a write past the size conv2d_workspace gives lands there. (The allocator
// rounds sizes up, so a short overrun stayed inside the block and no bounds check could see it.)
struct GuardedWorkspace {
  static constexpr int64_t kGuard = 4096;
  static constexpr double kSentinel = -12345.0;
  int64_t floats;
  Tensor t;
  GuardedWorkspace(const Run& r, int64_t n) : floats(n) {
    V init(size_t(n + kGuard), 0.0);
    std::fill(init.begin() + n, init.end(), kSentinel);
    t = r.up32(init);
  }
  float* data() { return t.data(); }
  void check(const Run& r, const char* what) const {
    const std::vector<float> all = Run::down(t);
    const int64_t touched = std::count_if(all.begin() + floats, all.end(), [](float v) { return v != float(kSentinel); });
    CHECK_MESSAGE(touched == 0, r.where(), ": ", what, " wrote ", touched, " floats past its workspace of ", floats);
  }
};

// y = r + s (conv2d(x, w) + b), DSen2-CR's residual block (s = 0.1, and -0.5 for a sign). The bound's
// scale is |r| + |s| (the convolution's scale); the CPU adds r in a second pass, so a bfloat16 result
// is rounded twice there (the bound doubles: 2 tol).
template <typename T>
void conv2d_residual_check(Run& r) {
  for (const ConvGeom& g : kConvGeoms) {
    r.shape = conv_str(g);
    const int64_t xs = g.N * g.C * g.H * g.W, wsz = g.K * g.C * g.R * g.S, ysz = g.N * g.K * g.P() * g.Q();
    const V x = r.rand(xs), w = r.rand(wsz), b = r.rand(g.K), res = r.rand(ysz);
    V conv(ysz), scale(ysz);
    cpu::conv2d_forward_ref<double>(conv.data(), x.data(), w.data(), b.data(), g);
    {
      const V ax = absv(x), aw = absv(w), ab = absv(b);
      cpu::conv2d_forward_ref<double>(scale.data(), ax.data(), aw.data(), ab.data(), g);
    }
    const Kernels<T>& be = r.be<T>();
    GuardedWorkspace WS(r, r.be().conv2d_workspace(g));
    Tensor X = r.up(x), W = r.up(w), B = r.up(b), R = r.up(res);
    for (const double s : {0.1, -0.5}) {
      V y(ysz), sc(ysz);
      for (int64_t i = 0; i < ysz; ++i) y[i] = res[i] + r.scalar(s) * conv[i], sc[i] = std::fabs(res[i]) + std::fabs(s) * scale[i];
      Tensor Y = r.poison(ysz);
      be.conv2d_residual_forward(Y.data_as<T>(), X.data_as<T>(), W.data_as<T>(), B.data_as<T>(), R.data_as<T>(),
                                 float(s), g, WS.data());
      expect(r, "conv2d_residual_forward y (s = " + std::to_string(s) + ")", Run::down(Y), y, sc, 2 * r.dt.tol);
    }
    WS.check(r, "conv2d_residual_forward");
  }
}

// The workspace size (float32 in every dtype, so a case of its own): non-negative for every
// geometry; that it is enough is conv2d_check's part (it runs each geometry with exactly this many,
// followed by a guard).
void conv2d_workspace_check(Run& r) {
  for (const ConvGeom& g : kConvGeoms) {
    r.shape = conv_str(g);
    const int64_t n = r.be().conv2d_workspace(g);
    CHECK_MESSAGE(n >= 0, r.where(), ": conv2d_workspace ", n);
  }
}

template <typename T>
void conv2d_check(Run& r) {
  for (const ConvGeom& g : kConvGeoms) {
    r.shape = conv_str(g);
    if (r.dev == Device::CPU)
      r.shape += std::string(" (cpu paths: forward ") + cpu::conv2d_path(g, true) + ", backward " +
                 cpu::conv2d_path(g, false) + ")";
    const int64_t xs = g.N * g.C * g.H * g.W, wsz = g.K * g.C * g.R * g.S, ysz = g.N * g.K * g.P() * g.Q();
    const V x = r.rand(xs), w = r.rand(wsz), b = r.rand(g.K), dy = r.rand(ysz);
    const ConvRef c = conv_ref(g, x, w, b, dy);
    V ysr(ysz);  // the relu variant's scale: no bias
    {
      const V ax = absv(x), aw = absv(w);
      cpu::conv2d_forward_ref<double>(ysr.data(), ax.data(), aw.data(), nullptr, g);
    }
    const Kernels<T>& be = r.be<T>();
    const int64_t ws_floats = r.be().conv2d_workspace(g);  // float32 in every dtype
    REQUIRE_MESSAGE(ws_floats >= 0, r.where(), ": conv2d_workspace ", ws_floats);
    GuardedWorkspace WS(r, ws_floats);
    Tensor X = r.up(x), W = r.up(w), B = r.up(b), DY = r.up(dy);
    Tensor Y = r.poison(ysz);
    be.conv2d_forward(Y.data_as<T>(), X.data_as<T>(), W.data_as<T>(), B.data_as<T>(), g, WS.data(), false);
    expect(r, "conv2d_forward y", Run::down(Y), c.y, c.ys, r.dt.tol);
    Tensor YR = r.poison(ysz);  // the fused ReLU, without a bias (conv2d(x, w, Tensor()) then relu)
    be.conv2d_forward(YR.data_as<T>(), X.data_as<T>(), W.data_as<T>(), nullptr, g, WS.data(), true);
    expect(r, "conv2d_forward y (relu, no bias)", Run::down(YR), c.yr, ysr, r.dt.tol);
    {  // a NaN input reaches every output whose window holds it, through the ReLU (relu_forward's rule)
      V xn = x;
      xn[size_t(xs / 2 + 1)] = kNaN;
      V yn(ysz);
      cpu::conv2d_forward_ref<double>(yn.data(), xn.data(), w.data(), b.data(), g);
      cpu::relu_forward<double>(yn.data(), yn.data(), ysz);
      Tensor XN = r.up(xn), YN = r.poison(ysz);
      be.conv2d_forward(YN.data_as<T>(), XN.data_as<T>(), W.data_as<T>(), B.data_as<T>(), g, WS.data(), true);
      expect(r, "conv2d_forward y (relu, a NaN in x)", Run::down(YN), yn, c.ys, r.dt.tol);
    }
    Tensor DX = r.poison(xs), DW = r.poison(wsz), DB = r.poison(g.K);
    be.conv2d_backward(DX.data_as<T>(), DW.data_as<T>(), DB.data_as<T>(), DY.data_as<T>(), X.data_as<T>(), W.data_as<T>(), g, WS.data());
    expect(r, "conv2d_backward dx", Run::down(DX), c.dx, c.sx, r.dt.tol);
    expect(r, "conv2d_backward dw", Run::down(DW), c.dw, c.sw, r.dt.tol);
    expect(r, "conv2d_backward db", Run::down(DB), c.db, c.sb, r.dt.tol);
    // The first layer (input needs no gradient: dx and w null) and a frozen layer (only dx).
    Tensor DW2 = r.poison(wsz), DB2 = r.poison(g.K);
    be.conv2d_backward(nullptr, DW2.data_as<T>(), DB2.data_as<T>(), DY.data_as<T>(), X.data_as<T>(), nullptr, g, WS.data());
    expect(r, "conv2d_backward dw (dx, w null)", Run::down(DW2), c.dw, c.sw, r.dt.tol);
    expect(r, "conv2d_backward db (dx, w null)", Run::down(DB2), c.db, c.sb, r.dt.tol);
    Tensor DX2 = r.poison(xs);
    be.conv2d_backward(DX2.data_as<T>(), nullptr, nullptr, DY.data_as<T>(), nullptr, W.data_as<T>(), g, WS.data());
    expect(r, "conv2d_backward dx (dw, db, x null)", Run::down(DX2), c.dx, c.sx, r.dt.tol);
    WS.check(r, "conv2d_forward or conv2d_backward");
  }
}

// A conv -> batch norm pair in training (conv2d_forward_bn_stats): y as conv2d_forward's (with and
// without a bias; biases of 1 to 3 put the mean well above the spread), and the batch-norm statistics
// of y as stored, bound as batchnorm_check bounds batchnorm_train_stats' (float32 whatever y's dtype:
// they are float32 sums of the stored values). The CUDA tensor-core kernels fold them into the epilogue.
template <typename T>
void conv2d_bn_stats_check(Run& r) {
  for (const ConvGeom& g : kConvGeoms) {
    r.shape = conv_str(g);
    const int64_t xs = g.N * g.C * g.H * g.W, wsz = g.K * g.C * g.R * g.S, ysz = g.N * g.K * g.P() * g.Q();
    const int64_t PQ = g.P() * g.Q(), M = g.N * PQ;
    const V x = r.rand(xs), w = r.rand(wsz), b = r.rand(g.K, 1, 3);
    const Kernels<T>& be = r.be<T>();
    const int64_t ws_floats = r.be().conv2d_bn_workspace(g);
    REQUIRE_MESSAGE(ws_floats >= 0, r.where(), ": conv2d_bn_workspace ", ws_floats);
    GuardedWorkspace WS(r, ws_floats);
    Tensor X = r.up(x), W = r.up(w), B = r.up(b);
    for (const bool bias : {true, false}) {
      const std::string tag = bias ? "" : " (no bias)";
      V y(ysz), ys(ysz);
      cpu::conv2d_forward_ref<double>(y.data(), x.data(), w.data(), bias ? b.data() : nullptr, g);
      {
        const V ax = absv(x), aw = absv(w), ab = absv(b);
        cpu::conv2d_forward_ref<double>(ys.data(), ax.data(), aw.data(), bias ? ab.data() : nullptr, g);
      }
      const double eps = r.scalar(1e-5), mom = r.scalar(0.1);
      const V rm = r.rand32(g.K), rv = r.rand32(g.K, 0.5, 2);
      Tensor Y = r.poison(ysz), MEAN = r.poison32(g.K), IS = r.poison32(g.K), RM = r.up32(rm), RV = r.up32(rv);
      Tensor COUNT = r.up32(V{41});
      be.conv2d_forward_bn_stats(Y.data_as<T>(), X.data_as<T>(), W.data_as<T>(), bias ? B.data_as<T>() : nullptr, g,
                                 WS.data(), MEAN.data(), IS.data(), RM.data(), RV.data(), COUNT.data(), float(mom),
                                 float(eps));
      const std::vector<float> got_y = Run::down(Y);
      expect(r, "conv2d_forward_bn_stats y" + tag, got_y, y, ys, r.dt.tol);
      // The statistics of the y it stored, in float64.
      const V yq(got_y.begin(), got_y.end());
      V mean(g.K), var(g.K), invstd(g.K), mean_s(g.K, 0.0), var_s(g.K, 0.0), invstd_s(g.K);
      cpu::batchnorm_stats_ref<double>(mean.data(), var.data(), yq.data(), g.N, g.K, PQ);
      for (int64_t k = 0; k < ysz; ++k) {
        const int64_t c = (k / PQ) % g.K;
        mean_s[c] += std::fabs(yq[k]) / double(M);
        var_s[c] += yq[k] * yq[k] / double(M);
      }
      cpu::batchnorm_invstd<double>(invstd.data(), var.data(), eps, g.K);
      for (int64_t c = 0; c < g.K; ++c) invstd_s[c] = invstd[c] + 0.5 * std::pow(invstd[c], 3) * var_s[c];
      V rm_want = rm, rv_want = rv, rm_s = absv(rm), rv_s = rv;
      cpu::batchnorm_update_running<double>(rm_want.data(), rv_want.data(), mean.data(), var.data(), mom, M, g.K);
      const V am = absv(mean);
      cpu::batchnorm_update_running<double>(rm_s.data(), rv_s.data(), am.data(), var_s.data(), mom, M, g.K);
      const double tol = kF32.tol;
      expect(r, "conv2d_forward_bn_stats mean" + tag, Run::down(MEAN), mean, mean_s, tol);
      expect(r, "conv2d_forward_bn_stats invstd" + tag, Run::down(IS), invstd, invstd_s, tol);
      expect(r, "conv2d_forward_bn_stats running_mean" + tag, Run::down(RM), rm_want, rm_s, tol);
      expect(r, "conv2d_forward_bn_stats running_var" + tag, Run::down(RV), rv_want, rv_s, tol);
      expect_exact(r, "conv2d_forward_bn_stats count" + tag, Run::down(COUNT), V{42.0});
    }
    // Outputs near 10 with a spread near 2e-3 (biases of 10, weights of 1e-3): invstd to 1e-3 of itself
    // (var to 2e-3). A one-pass E[y^2] - E[y]^2 in float32 loses it all (y^2 ~ 100 rounds by ~1e-5, the
    // variance is ~4e-6); the epilogue's two passes per chunk and Chan's merge keep it. (Not much further:
    // with outputs near 1e3, each chunk's float32 mean is off by a hundredth of this spread, and the
    // merge by 0.1% to 1% of the variance; the CPU sums deviations from a shift and keeps it.)
    // float32 only: bfloat16 cannot hold such a spread at 10.
    if constexpr (std::is_same_v<T, float>) {
      V wl = w, bl(g.K);
      for (double& v : wl) v = double(float(v * 1e-3));
      for (double& v : bl) v = double(float(10 + r.rng.uniform()));
      Tensor WL = r.up(wl), BL = r.up(bl), Y = r.poison(ysz), MEAN = r.poison32(g.K), IS = r.poison32(g.K);
      Tensor RM = r.up32(V(g.K, 0.0)), RV = r.up32(V(g.K, 1.0));
      const double eps_l = r.scalar(1e-12);  // invstd then follows var alone
      be.conv2d_forward_bn_stats(Y.data_as<T>(), X.data_as<T>(), WL.data_as<T>(), BL.data_as<T>(), g, WS.data(),
                                 MEAN.data(), IS.data(), RM.data(), RV.data(), nullptr, 0.1f, float(eps_l));
      const std::vector<float> got_y = Run::down(Y);
      const V yq(got_y.begin(), got_y.end());
      V mean(g.K), var(g.K), invstd(g.K);
      cpu::batchnorm_stats_ref<double>(mean.data(), var.data(), yq.data(), g.N, g.K, PQ);
      cpu::batchnorm_invstd<double>(invstd.data(), var.data(), eps_l, g.K);
      expect(r, "conv2d_forward_bn_stats mean (outputs near 10, spread 2e-3)", Run::down(MEAN), mean, V{10.0}, 1e-6);
      expect(r, "conv2d_forward_bn_stats invstd (outputs near 10, spread 2e-3)", Run::down(IS), invstd, invstd, 1e-3);
    }
    WS.check(r, "conv2d_forward_bn_stats");
  }
}

// The pair reading relu(batch_norm(x)) of the previous layer (bnrelu_conv2d_forward_bn_stats; on CUDA the
// tensor-core kernels' prologue). Its definition is the two kernels it replaces, so y, the statistics, the
// running statistics and the count must be those of batchnorm_forward (ReLU) then conv2d_forward_bn_stats on
// the same backend, bit for bit; y is also held to the float64 reference (the activation rounded to the
// dtype, as stored), which a poisoned or empty output cannot pass. With and without the previous layer's
// affine parameters; its mean spans the values so the ReLU cuts about half of them, and x's padding must
// stay 0 after the prologue (a kernel that applied it to the padding would add relu(shift) there).
template <typename T>
void bnrelu_conv2d_bn_stats_check(Run& r) {
  for (const ConvGeom& g : kConvGeoms) {
    r.shape = conv_str(g);
    const int64_t xs = g.N * g.C * g.H * g.W, wsz = g.K * g.C * g.R * g.S, ysz = g.N * g.K * g.P() * g.Q();
    const int64_t HW = g.H * g.W;
    const V x = r.rand(xs, -2, 2), w = r.rand(wsz), b = r.rand(g.K);
    const V im = r.rand32(g.C, -0.5, 0.5), is = r.rand32(g.C, 0.5, 2), iw = r.rand32(g.C, 0.5, 1.5),
            ib = r.rand32(g.C, 0.2, 0.6);
    const Kernels<T>& be = r.be<T>();
    GuardedWorkspace WS(r, r.be().conv2d_bn_workspace(g));
    Tensor X = r.up(x), W = r.up(w), B = r.up(b), IM = r.up32(im), IS = r.up32(is), IW = r.up32(iw), IB = r.up32(ib);
    for (const bool affine : {true, false}) {
      const std::string tag = affine ? "" : " (no affine)";
      const float* iwp = affine ? IW.data() : nullptr;
      const float* ibp = affine ? IB.data() : nullptr;
      // The float64 reference: the activation as stored (rounded to the dtype), then the convolution.
      V a(xs), aa(xs), y(ysz), ys(ysz);
      for (int64_t i = 0; i < xs; ++i) {
        const int64_t c = (i / HW) % g.C;
        const double v = (x[i] - im[c]) * is[c] * (affine ? iw[c] : 1.0) + (affine ? ib[c] : 0.0);
        a[i] = r.dt.round(v > 0 ? v : 0.0), aa[i] = std::fabs(a[i]);
      }
      const V aw = absv(w), ab = absv(b);
      cpu::conv2d_forward_ref<double>(y.data(), a.data(), w.data(), b.data(), g);
      cpu::conv2d_forward_ref<double>(ys.data(), aa.data(), aw.data(), ab.data(), g);
      const V rm = r.rand32(g.K), rv = r.rand32(g.K, 0.5, 2);
      // Both ways, each from the same running statistics and count.
      Tensor Y[2], MEAN[2], INV[2], RM[2], RV[2], COUNT[2];
      for (int way = 0; way < 2; ++way) {
        Y[way] = r.poison(ysz), MEAN[way] = r.poison32(g.K), INV[way] = r.poison32(g.K);
        RM[way] = r.up32(rm), RV[way] = r.up32(rv), COUNT[way] = r.up32(V{6});
      }
      be.bnrelu_conv2d_forward_bn_stats(Y[0].data_as<T>(), X.data_as<T>(), IM.data(), IS.data(), iwp, ibp,
                                        W.data_as<T>(), B.data_as<T>(), g, WS.data(), MEAN[0].data(), INV[0].data(),
                                        RM[0].data(), RV[0].data(), COUNT[0].data(), 0.1f, 1e-5f);
      Tensor A = r.poison(xs);
      be.batchnorm_forward(A.data_as<T>(), X.data_as<T>(), IM.data(), IS.data(), iwp, ibp, g.N, g.C, HW, true);
      be.conv2d_forward_bn_stats(Y[1].data_as<T>(), A.data_as<T>(), W.data_as<T>(), B.data_as<T>(), g, WS.data(),
                                 MEAN[1].data(), INV[1].data(), RM[1].data(), RV[1].data(), COUNT[1].data(), 0.1f,
                                 1e-5f);
      const std::vector<float> got = Run::down(Y[0]);
      expect(r, "bnrelu_conv2d_forward_bn_stats y against float64" + tag, got, y, ys, r.dt.tol);
      // The two kernels wrote their statistics (NaN would match the poison of a fused path that did not).
      for (const Tensor* t : {&MEAN[1], &INV[1]})
        for (float v : Run::down(*t)) REQUIRE_MESSAGE(std::isfinite(v), r.where(), ": the pair left a statistic unwritten");
      auto same = [&](const char* what, const Tensor& fused, const Tensor& pair) {
        const std::vector<float> p = Run::down(pair);
        expect_exact(r, std::string("bnrelu_conv2d_forward_bn_stats ") + what + " = the two kernels'" + tag,
                     Run::down(fused), V(p.begin(), p.end()));
      };
      same("y", Y[0], Y[1]);
      same("mean", MEAN[0], MEAN[1]);
      same("invstd", INV[0], INV[1]);
      same("running_mean", RM[0], RM[1]);
      same("running_var", RV[0], RV[1]);
      expect_exact(r, "bnrelu_conv2d_forward_bn_stats count" + tag, Run::down(COUNT[0]), V{7.0});
    }
    WS.check(r, "bnrelu_conv2d_forward_bn_stats or the pair");
  }
}

// Its workspace size: at least conv2d_workspace's (the forward's own part comes first); that it is
// enough is conv2d_bn_stats_check's part.
void conv2d_bn_workspace_check(Run& r) {
  for (const ConvGeom& g : kConvGeoms) {
    r.shape = conv_str(g);
    const int64_t n = r.be().conv2d_bn_workspace(g);
    CHECK_MESSAGE(n >= r.be().conv2d_workspace(g), r.where(), ": conv2d_bn_workspace ", n, " < conv2d_workspace ",
                  r.be().conv2d_workspace(g));
  }
}

void conv2d_grad(uint64_t seed) {
  Rng rng(seed);
  for (ConvGeom g : kConvGeoms) {
    g.N = 1;  // smaller, same geometry
    const int64_t xs = g.N * g.C * g.H * g.W, wsz = g.K * g.C * g.R * g.S, ysz = g.N * g.K * g.P() * g.Q();
    const V x = rvec(rng, xs), w = rvec(rng, wsz), b = rvec(rng, g.K), r = rvec(rng, ysz);
    auto L = [&](const V& xx, const V& ww, const V& bb) {
      V y(ysz);
      cpu::conv2d_forward_ref<double>(y.data(), xx.data(), ww.data(), bb.data(), g);
      return test::dot(y, r);
    };
    const ConvRef c = conv_ref(g, x, w, b, r);
    const std::string what = "conv2d " + conv_str(g);
    fd_check(what + " dx", seed, x, [&](const V& v) { return L(v, w, b); }, c.dx, rng, nullptr, 4);
    fd_check(what + " dw", seed, w, [&](const V& v) { return L(x, v, b); }, c.dw, rng, nullptr, 4);
    fd_check(what + " db", seed, b, [&](const V& v) { return L(x, w, v); }, c.db, rng, nullptr, 2);
  }
}

// ---- batch norm over (N, C, HW) = (3, 5, 97): M = 291 values per channel, more than one CUDA block ----
struct BnShape {
  int64_t N, C, HW;
  int64_t n() const { return N * C * HW; }
};
constexpr BnShape kBn{3, 5, 97};

// Eval's invstd = 1 / sqrt(running_var + eps), float32 only: a variance with a constant channel.
void batchnorm_invstd_check(Run& r) {
  const int64_t C = 7;
  r.shape = "C=7";
  const double eps = r.scalar(1e-5);
  V varq = r.rand32(C, 0, 3), invstdq(C);
  varq[C - 1] = 0;  // a constant channel: 1/sqrt(eps)
  cpu::batchnorm_invstd<double>(invstdq.data(), varq.data(), eps, C);
  Tensor VAR = r.up32(varq), IS = r.poison32(C);
  r.be().batchnorm_invstd(IS.data(), VAR.data(), float(eps), C);
  expect(r, "batchnorm_invstd", Run::down(IS), invstdq, absv(invstdq), r.dt.tol);
}

// Activations (x, y, dy, dx, relu_y) in the run's dtype; statistics and parameters float32.
template <typename T>
void batchnorm_check(Run& r) {
  const int64_t N = kBn.N, C = kBn.C, HW = kBn.HW, n = kBn.n(), M = N * HW;
  r.shape = "N=3 C=5 HW=97";
  const Kernels<T>& be = r.be<T>();
  V x = r.rand(n, 1, 3);  // mean ~2 >> std ~0.6: a one-pass variance would lose digits
  // stats: mean to 1e-5 of mean |x|; var to 1e-5 of mean x^2 (the scale of a one-pass sum).
  V mean(C), var(C), mean_s(C, 0.0), var_s(C, 0.0);
  cpu::batchnorm_stats_ref<double>(mean.data(), var.data(), x.data(), N, C, HW);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t c = (k / HW) % C;
    mean_s[c] += std::fabs(x[k]) / double(M);
    var_s[c] += x[k] * x[k] / double(M);
  }
  Tensor X = r.up(x);
  // invstd = 1 / sqrt(var + eps); the training statistics in one call: mean, invstd, the running
  // statistics in place ((1 - momentum) r + momentum b, unbiased: var * M / (M - 1)) and count + 1.
  const double eps = r.scalar(1e-5), mom = r.scalar(0.1);
  V invstd(C), invstd_s(C);
  cpu::batchnorm_invstd<double>(invstd.data(), var.data(), eps, C);
  // invstd's scale: its own size, plus what var's bound moves it by (d invstd / d var = -invstd^3 / 2).
  for (int64_t c = 0; c < C; ++c) invstd_s[c] = invstd[c] + 0.5 * std::pow(invstd[c], 3) * var_s[c];
  {
    V rm = r.rand32(C), rv = r.rand32(C, 0.5, 2);
    V rm_want = rm, rv_want = rv, rm_s = absv(rm), rv_s = rv;
    cpu::batchnorm_update_running<double>(rm_want.data(), rv_want.data(), mean.data(), var.data(), mom, M, C);
    const V am = absv(mean);
    cpu::batchnorm_update_running<double>(rm_s.data(), rv_s.data(), am.data(), var_s.data(), mom, M, C);
    for (bool counted : {true, false}) {
      const std::string tag = counted ? "" : " (no counter)";
      // The statistics are float32 in every dtype (accumulated from the rounded x): held to float32's bound.
      Tensor MEAN = r.poison32(C), IS = r.poison32(C), RM = r.up32(rm), RV = r.up32(rv), COUNT = r.up32(V{41});
      be.batchnorm_train_stats(MEAN.data(), IS.data(), RM.data(), RV.data(), counted ? COUNT.data() : nullptr,
                               X.data_as<T>(), N, C, HW, float(mom), float(eps));
      expect(r, "batchnorm_train_stats mean" + tag, Run::down(MEAN), mean, mean_s, kF32.tol);
      expect(r, "batchnorm_train_stats invstd" + tag, Run::down(IS), invstd, invstd_s, kF32.tol);
      expect(r, "batchnorm_train_stats running_mean" + tag, Run::down(RM), rm_want, rm_s, kF32.tol);
      expect(r, "batchnorm_train_stats running_var" + tag, Run::down(RV), rv_want, rv_s, kF32.tol);
      expect_exact(r, "batchnorm_train_stats count" + tag, Run::down(COUNT), V{counted ? 42.0 : 41.0});
    }
  }
  // A NaN among a channel's values makes its statistics NaN (a diverged activation must not look finite),
  // and only that channel's.
  {
    V xn = x;
    xn[5] = kNaN;  // channel 0
    V mn(C), vn(C), isn(C);
    cpu::batchnorm_stats_ref<double>(mn.data(), vn.data(), xn.data(), N, C, HW);
    cpu::batchnorm_invstd<double>(isn.data(), vn.data(), eps, C);
    REQUIRE(std::isnan(isn[0]));
    Tensor XN = r.up(xn), MN = r.poison32(C), ISN = r.poison32(C), RM = r.up32(V(C, 0.0)), RV = r.up32(V(C, 1.0));
    be.batchnorm_train_stats(MN.data(), ISN.data(), RM.data(), RV.data(), nullptr, XN.data_as<T>(), N, C, HW,
                             float(mom), float(eps));
    expect(r, "batchnorm_train_stats mean (a NaN in channel 0)", Run::down(MN), mn, mean_s, kF32.tol);
    expect(r, "batchnorm_train_stats invstd (a NaN in channel 0)", Run::down(ISN), isn, invstd_s, kF32.tol);
  }

  // A large mean over a small spread (1e4 and 1e-2: DN-scale values that nothing normalised): invstd to
  // 1e-3 of itself, so var to 2e-3 of itself. A one-pass E[x^2] - E[x]^2 in float32 loses it all (x^2
  // ~ 1e8 rounds by ~4, the variance is 3e-5); a shifted or two-pass sum keeps it. float32 only: in
  // bfloat16, 1e4 +- 1e-2 is a single value.
  if constexpr (std::is_same_v<T, float>) {
    V xl(static_cast<size_t>(n));
    for (double& v : xl) v = double(float(1e4 + 1e-2 * (2 * r.rng.uniform() - 1)));
    V ml(C), vl(C), isl(C);
    cpu::batchnorm_stats_ref<double>(ml.data(), vl.data(), xl.data(), N, C, HW);
    const double eps_l = r.scalar(1e-12);  // invstd then follows var alone
    cpu::batchnorm_invstd<double>(isl.data(), vl.data(), eps_l, C);
    Tensor XL = r.up(xl), ML = r.poison32(C), ISL = r.poison32(C), RM = r.up32(V(C, 0.0)), RV = r.up32(V(C, 1.0));
    be.batchnorm_train_stats(ML.data(), ISL.data(), RM.data(), RV.data(), nullptr, XL.data_as<T>(), N, C, HW,
                             float(mom), float(eps_l));
    expect(r, "batchnorm_train_stats mean (mean 1e4, spread 1e-2)", Run::down(ML), ml, V{1e4}, 1e-6);
    expect(r, "batchnorm_train_stats invstd (mean 1e4, spread 1e-2)", Run::down(ISL), isl, isl, 1e-3);
  }

  // forward and backward from the statistics rounded to float, so only the kernel under test differs.
  V meanq(C), isq(C);
  for (int64_t c = 0; c < C; ++c) meanq[c] = r.scalar(mean[c]), isq[c] = r.scalar(invstd[c]);

  const V w = r.rand32(C, 0.5, 1.5), b = r.rand32(C), dy = r.rand(n);
  Tensor MEAN = r.up32(meanq), IS = r.up32(isq), W = r.up32(w), B = r.up32(b), DY = r.up(dy);
  for (bool affine : {true, false}) {
    const V one(C, 1.0), zero(C, 0.0);
    const V& wa = affine ? w : one;
    const V& ba = affine ? b : zero;
    V xf = x, y(n), scale(n);
    xf[7] = kNaN, xf[size_t(n - 1)] = kNaN;  // NaN passes through the forward, with and without the ReLU
    cpu::batchnorm_forward_ref<double>(y.data(), xf.data(), meanq.data(), isq.data(), wa.data(), ba.data(), N, C, HW);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t c = (k / HW) % C;
      scale[k] = (std::fabs(x[k]) + std::fabs(meanq[c])) * isq[c] * std::fabs(wa[c]) + std::fabs(ba[c]);
    }
    for (bool relu : {false, true}) {
      V want = y;
      if (relu) cpu::relu_forward<double>(want.data(), want.data(), n);
      Tensor Y = r.poison(n), XF = r.up(xf);
      be.batchnorm_forward(Y.data_as<T>(), XF.data_as<T>(), MEAN.data(), IS.data(), affine ? W.data() : nullptr,
                           affine ? B.data() : nullptr, N, C, HW, relu);
      expect(r, std::string("batchnorm_forward y (") + (affine ? "affine" : "no weight, no bias") +
                    (relu ? ", relu)" : ")"),
             Run::down(Y), want, scale, r.dt.tol);
    }
    for (bool training : {true, false}) {
      V dx(n), dwt(C), dbs(C);
      cpu::batchnorm_backward_ref<double>(dx.data(), dwt.data(), dbs.data(), dy.data(), x.data(), meanq.data(),
                                          isq.data(), wa.data(), N, C, HW, training);
      // scales: the sums of |terms| of the formulas in kernels/cpu/batchnorm.h
      V sdy(C, 0.0), sdyx(C, 0.0), sx(n), sw(C), sb(C);
      auto xhat_s = [&](int64_t k) { return (std::fabs(x[k]) + std::fabs(meanq[(k / HW) % C])) * isq[(k / HW) % C]; };
      for (int64_t k = 0; k < n; ++k) {
        const int64_t c = (k / HW) % C;
        sdy[c] += std::fabs(dy[k]);
        sdyx[c] += std::fabs(dy[k]) * xhat_s(k);
      }
      for (int64_t k = 0; k < n; ++k) {
        const int64_t c = (k / HW) % C;
        const double gk = std::fabs(wa[c]) * isq[c];
        sx[k] = training ? gk * (std::fabs(dy[k]) + sdy[c] / double(M) + xhat_s(k) * sdyx[c] / double(M))
                         : gk * std::fabs(dy[k]);
      }
      const std::string tag = std::string(training ? " (training" : " (eval") + (affine ? ")" : ", no weight)");
      // dweight and dbias are float32 sums of the rounded dy and x in every dtype: float32's bound.
      Tensor DX = r.poison(n), DWT = r.poison32(C), DBS = r.poison32(C);
      be.batchnorm_backward(DX.data_as<T>(), DWT.data(), DBS.data(), DY.data_as<T>(), X.data_as<T>(), MEAN.data(), IS.data(),
                            affine ? W.data() : nullptr, nullptr, N, C, HW, training);
      expect(r, "batchnorm_backward dx" + tag, Run::down(DX), dx, sx, r.dt.tol);
      expect(r, "batchnorm_backward dweight" + tag, Run::down(DWT), dwt, sdyx, kF32.tol);
      expect(r, "batchnorm_backward dbias" + tag, Run::down(DBS), dbs, sdy, kF32.tol);
      // dx null: the input needs no gradient; the parameter gradients are still written.
      Tensor DWT2 = r.poison32(C), DBS2 = r.poison32(C);
      be.batchnorm_backward(nullptr, DWT2.data(), DBS2.data(), DY.data_as<T>(), X.data_as<T>(), MEAN.data(), IS.data(),
                            affine ? W.data() : nullptr, nullptr, N, C, HW, training);
      expect(r, "batchnorm_backward dweight (dx null)" + tag, Run::down(DWT2), dwt, sdyx, kF32.tol);
      expect(r, "batchnorm_backward dbias (dx null)" + tag, Run::down(DBS2), dbs, sdy, kF32.tol);
      // Through a ReLU (relu_y = relu(bn(x)), whose forward is checked above): the reference is the
      // plain backward of dy masked by relu_backward; the scales above still bound it.
      V ry(n), dym(n), dxr(n), dwr(C), dbr(C);
      cpu::batchnorm_forward_ref<double>(ry.data(), x.data(), meanq.data(), isq.data(), wa.data(), ba.data(), N, C, HW);
      cpu::relu_forward<double>(ry.data(), ry.data(), n);
      for (int64_t k = 0; k < n; ++k) ry[k] = r.dt.round(ry[k]);
      ry[0] = 0;  // exactly 0: the ReLU's derivative there is 0
      cpu::relu_backward<double>(dym.data(), dy.data(), ry.data(), n);
      cpu::batchnorm_backward_ref<double>(dxr.data(), dwr.data(), dbr.data(), dym.data(), x.data(), meanq.data(),
                                          isq.data(), wa.data(), N, C, HW, training);
      Tensor RY = r.up(ry), DX3 = r.poison(n), DWT3 = r.poison32(C), DBS3 = r.poison32(C);
      be.batchnorm_backward(DX3.data_as<T>(), DWT3.data(), DBS3.data(), DY.data_as<T>(), X.data_as<T>(), MEAN.data(), IS.data(),
                            affine ? W.data() : nullptr, RY.data_as<T>(), N, C, HW, training);
      expect(r, "batchnorm_backward dx (through the relu)" + tag, Run::down(DX3), dxr, sx, r.dt.tol);
      expect(r, "batchnorm_backward dweight (through the relu)" + tag, Run::down(DWT3), dwr, sdyx, kF32.tol);
      expect(r, "batchnorm_backward dbias (through the relu)" + tag, Run::down(DBS3), dbr, sdy, kF32.tol);
    }
  }
}

// Training: L(x, w, b) = <bn(x; mean(x), invstd(var(x))), r>: the gradient flows through the batch
// statistics. Eval: the statistics are constants (running ones).
void batchnorm_grad(uint64_t seed) {
  Rng rng(seed);
  const int64_t N = 2, C = 3, HW = 5, n = N * C * HW;
  const double eps = 1e-5;
  const V x = rvec(rng, n, 1, 3), w = rvec(rng, C, 0.5, 1.5), b = rvec(rng, C), r = rvec(rng, n);
  const V rm = rvec(rng, C, 1.5, 2.5), rv = rvec(rng, C, 0.2, 0.5);
  for (bool training : {true, false}) {
    auto stats = [&](const V& xx, V& mean, V& invstd) {
      V var(C);
      if (training) cpu::batchnorm_stats_ref<double>(mean.data(), var.data(), xx.data(), N, C, HW);
      else mean = rm, var = rv;
      cpu::batchnorm_invstd<double>(invstd.data(), var.data(), eps, C);
    };
    auto L = [&](const V& xx, const V& ww, const V& bb) {
      V mean(C), invstd(C), y(n);
      stats(xx, mean, invstd);
      cpu::batchnorm_forward_ref<double>(y.data(), xx.data(), mean.data(), invstd.data(), ww.data(), bb.data(), N, C,
                                         HW);
      return test::dot(y, r);
    };
    V mean(C), invstd(C), dx(n), dw(C), db(C);
    stats(x, mean, invstd);
    cpu::batchnorm_backward_ref<double>(dx.data(), dw.data(), db.data(), r.data(), x.data(), mean.data(),
                                        invstd.data(), w.data(), N, C, HW, training);
    const std::string what = training ? "batchnorm (training)" : "batchnorm (eval)";
    fd_check(what + " dx", seed, x, [&](const V& v) { return L(v, w, b); }, dx, rng);
    fd_check(what + " dweight", seed, w, [&](const V& v) { return L(x, v, b); }, dw, rng, nullptr, 3);
    fd_check(what + " dbias", seed, b, [&](const V& v) { return L(x, w, v); }, db, rng, nullptr, 3);
  }
}

// ---- max pool ----
std::string pool_str(const PoolGeom& g) {
  std::ostringstream o;
  o << "x (" << g.N << "," << g.C << "," << g.H << "," << g.W << ") kernel " << g.kernel << " stride " << g.stride
    << " pad " << g.pad;
  return o.str();
}
// ResNet's 3x3/2 pad 1 on odd planes, 2x2/2 with a dropped last row/column, 3x3/1 pad 1 (every cell in
// up to 9 windows).
const PoolGeom kPoolGeoms[] = {{2, 3, 9, 11, 3, 2, 1}, {1, 2, 8, 7, 2, 2, 0}, {1, 2, 7, 9, 3, 1, 1}};

template <typename T>
void max_pool2d_check(Run& r) {
  for (const PoolGeom& g : kPoolGeoms) {
    r.shape = pool_str(g);
    const int64_t HW = g.H * g.W, xs = g.N * g.C * HW, ysz = g.N * g.C * g.P() * g.Q();
    V x = r.rand(xs);
    for (double& v : x) v = std::round(v * 4) / 4;  // values on a grid of 1/4: many ties (the first max wins)
    for (int64_t i = 0; i < HW; ++i) x[i] -= 5;     // plane 0 all negative: a padded cell (-inf) never wins
    x[HW + 2 * g.W + 3] = kNaN;                     // plane 1: a NaN wins its windows
    const V dy = r.rand(ysz);
    V y(ysz), dx(xs), sdx(xs);
    cpu::max_pool2d_forward_ref<double>(y.data(), x.data(), g);
    cpu::max_pool2d_backward_ref<double>(dx.data(), dy.data(), x.data(), g);
    const V ady = absv(dy);
    cpu::max_pool2d_backward_ref<double>(sdx.data(), ady.data(), x.data(), g);
    Tensor X = r.up(x), DY = r.up(dy), Y = r.poison(ysz), DX = r.poison(xs);
    r.be<T>().max_pool2d_forward(Y.data_as<T>(), X.data_as<T>(), g);
    expect_exact(r, "max_pool2d_forward y", Run::down(Y), y);
    r.be<T>().max_pool2d_backward(DX.data_as<T>(), DY.data_as<T>(), X.data_as<T>(), g);
    expect(r, "max_pool2d_backward dx", Run::down(DX), dx, sdx, r.dt.tol);  // sums of up to 9 dy
  }
}

void max_pool2d_grad(uint64_t seed) {
  Rng rng(seed);
  for (const PoolGeom& g : kPoolGeoms) {
    const int64_t xs = g.N * g.C * g.H * g.W, ysz = g.N * g.C * g.P() * g.Q();
    const V x = rvec(rng, xs), r = rvec(rng, ysz);  // continuous values: no ties within h
    auto L = [&](const V& v) {
      V y(ysz);
      cpu::max_pool2d_forward_ref<double>(y.data(), v.data(), g);
      return test::dot(y, r);
    };
    V dx(xs);
    cpu::max_pool2d_backward_ref<double>(dx.data(), r.data(), x.data(), g);
    fd_check("max_pool2d " + pool_str(g), seed, x, L, dx, rng);
  }
}

// ---- global average pool: 7 planes of 17 x 19 = 323 > 256 values ----
template <typename T>
void global_avg_pool_check(Run& r) {
  const int64_t planes = 7, hw = 323;
  r.shape = "planes=7 hw=323";
  const V x = r.rand(planes * hw), dy = r.rand(planes);
  V y(planes), sy(planes), dx(planes * hw);
  const V ax = absv(x);
  cpu::global_avg_pool_forward<double>(y.data(), x.data(), planes, hw);
  cpu::global_avg_pool_forward<double>(sy.data(), ax.data(), planes, hw);
  cpu::global_avg_pool_backward<double>(dx.data(), dy.data(), planes, hw);
  Tensor X = r.up(x), DY = r.up(dy), Y = r.poison(planes), DX = r.poison(planes * hw);
  r.be<T>().global_avg_pool_forward(Y.data_as<T>(), X.data_as<T>(), planes, hw);
  expect(r, "global_avg_pool_forward y", Run::down(Y), y, sy, r.dt.tol);
  r.be<T>().global_avg_pool_backward(DX.data_as<T>(), DY.data_as<T>(), planes, hw);
  expect(r, "global_avg_pool_backward dx", Run::down(DX), dx, absv(dx), r.dt.tol);
}

void global_avg_pool_grad(uint64_t seed) {
  Rng rng(seed);
  const int64_t planes = 3, hw = 13;
  const V x = rvec(rng, planes * hw), r = rvec(rng, planes);
  auto L = [&](const V& v) {
    V y(planes);
    cpu::global_avg_pool_forward<double>(y.data(), v.data(), planes, hw);
    return test::dot(y, r);
  };
  V dx(planes * hw);
  cpu::global_avg_pool_backward<double>(dx.data(), r.data(), planes, hw);
  fd_check("global_avg_pool", seed, x, L, dx, rng);
}

// ---- losses: a forward writes the mean loss to loss[0] on the device, with a scratch of
// loss_scratch_floats(n) floats (n: rows for cross-entropy, elements otherwise) ----
Tensor scratch_for(const Run& r, int64_t n) {
  const int64_t k = r.be().loss_scratch_floats(n);
  REQUIRE_MESSAGE(k >= 1, r.where(), ": loss_scratch_floats(", n, ") = ", k);
  return r.poison(size_t(k));  // scratch: the kernel must not read it before writing
}

// softmax and cross-entropy, (N, K) = (300, 7) (rows over two CUDA blocks of 256) and (3, 300)
// (long rows). Row 0: equal logits; row 1: logits near 100 (exp overflows without the max subtracted);
// row 2: one logit 30 above the rest (probabilities near 1 and near 0). Targets include 0 and K - 1.
void softmax_cross_entropy_check(Run& r) {
  struct Shape2 {
    int64_t N, K;
  };
  for (Shape2 s : {Shape2{300, 7}, Shape2{3, 300}}) {
    const int64_t N = s.N, K = s.K, n = N * K;
    r.shape = "N=" + std::to_string(N) + " K=" + std::to_string(K);
    V x = r.rand(n, -3, 3);
    for (int64_t k = 0; k < K; ++k) x[k] = 0.5, x[K + k] = r.dt.round(100 + x[K + k]);
    x[2 * K + 1] = 30;
    V t(N);
    for (int64_t i = 0; i < N; ++i) t[i] = double(r.rng.below(uint64_t(K)));
    t[0] = 0, t[1] = double(K - 1), t[2] = 1, t[N - 1] = double(K - 1);
    V prob(n), sm(n);
    const double loss = cpu::cross_entropy_forward<double>(prob.data(), x.data(), t.data(), N, K);
    cpu::softmax_forward<double>(sm.data(), x.data(), N, K);
    // scales: the largest probability of the row (1e-5 absolute on probabilities, whatever their size);
    // the loss: mean (|logsumexp| + |x[target]|) (lse - x_t cancels when the target's probability is ~1).
    V row_scale(n);
    double loss_scale = 0;
    for (int64_t i = 0; i < N; ++i) {
      double m = 0, mx = x[i * K];
      for (int64_t k = 0; k < K; ++k) m = std::max(m, prob[i * K + k]), mx = std::max(mx, x[i * K + k]);
      for (int64_t k = 0; k < K; ++k) row_scale[i * K + k] = m;
      double se = 0;
      for (int64_t k = 0; k < K; ++k) se += std::exp(x[i * K + k] - mx);
      loss_scale += (std::fabs(mx + std::log(se)) + std::fabs(x[i * K + int64_t(t[i])])) / double(N);
    }
    const Kernels<float>& be = r.be();
    Tensor X = r.up(x), T = r.up(t);
    Tensor SM = r.poison(n);
    be.softmax_forward(SM.data(), X.data(), N, K);
    expect(r, "softmax_forward y", Run::down(SM), sm, row_scale, r.dt.tol);
    Tensor LOSS = r.poison(1), PROB = r.poison(n), SCR = scratch_for(r, N);
    be.cross_entropy_forward(LOSS.data(), PROB.data(), X.data(), T.data(), N, K, SCR.data());
    expect_scalar(r, "cross_entropy_forward loss", LOSS, loss, loss_scale, r.dt.tol);
    expect(r, "cross_entropy_forward prob", Run::down(PROB), prob, row_scale, r.dt.tol);
    // backward from the probabilities rounded to the dtype: dlogits = g / N (prob - onehot)
    const double g = r.scalar(0.7);
    V probq(n), dl(n), dls(n);
    for (int64_t i = 0; i < n; ++i) probq[i] = r.dt.round(prob[i]);
    cpu::cross_entropy_backward<double>(dl.data(), probq.data(), t.data(), g, N, K);
    for (int64_t i = 0; i < n; ++i) dls[i] = std::fabs(g / double(N)) * (probq[i] + 1);
    Tensor PQ = r.up(probq), DL = r.poison(n);
    be.cross_entropy_backward(DL.data(), PQ.data(), T.data(), r.device_scalar(g).data(), N, K);
    expect(r, "cross_entropy_backward dlogits", Run::down(DL), dl, dls, r.dt.tol);
  }
  // Targets that are no class index (K, -1, 2.5, NaN, inf): their rows' terms are NaN, so the loss
  // is, and their dlogits rows are NaN; row 0's target is valid and its row as above.
  const int64_t N = 6, K = 4;
  r.shape = "N=6 K=4, 5 invalid targets";
  const V x = r.rand(N * K, -3, 3), t = {1, double(K), -1, 2.5, kNaN, kInf};
  V prob(N * K), dl(N * K);
  CHECK(std::isnan(cpu::cross_entropy_forward<double>(prob.data(), x.data(), t.data(), N, K)));
  const double g = r.scalar(0.7);
  cpu::cross_entropy_backward<double>(dl.data(), prob.data(), t.data(), g, N, K);
  const Kernels<float>& be = r.be();
  Tensor X = r.up(x), T = r.up(t), LOSS = r.poison(1), PROB = r.poison(N * K), SCR = scratch_for(r, N);
  LOSS.fill_(0.f);  // NaN poison would pass for a kernel that never writes the loss
  be.cross_entropy_forward(LOSS.data(), PROB.data(), X.data(), T.data(), N, K, SCR.data());
  expect_scalar(r, "cross_entropy_forward loss (invalid targets)", LOSS, kNaN, 1, r.dt.tol);
  Tensor DL = r.poison(N * K);
  DL.fill_(0.f);
  be.cross_entropy_backward(DL.data(), PROB.data(), T.data(), r.device_scalar(g).data(), N, K);
  V dls(N * K);
  for (int64_t i = 0; i < N * K; ++i) dls[i] = std::fabs(g / double(N)) * (std::fabs(prob[i]) + 1);
  expect(r, "cross_entropy_backward dlogits (invalid targets)", Run::down(DL), dl, dls, r.dt.tol);
}

void softmax_cross_entropy_grad(uint64_t seed) {
  Rng rng(seed);
  const int64_t N = 4, K = 5;
  const double g = 0.7;
  const V x = rvec(rng, N * K, -3, 3), t = {0, 4, 2, 2};
  auto L = [&](const V& v) {
    V prob(N * K);
    return g * cpu::cross_entropy_forward<double>(prob.data(), v.data(), t.data(), N, K);
  };
  V prob(N * K), dl(N * K), sm(N * K);
  cpu::cross_entropy_forward<double>(prob.data(), x.data(), t.data(), N, K);
  cpu::cross_entropy_backward<double>(dl.data(), prob.data(), t.data(), g, N, K);
  fd_check("cross_entropy dlogits", seed, x, L, dl, rng);
  // softmax (no backward kernel of its own) is cross_entropy's prob
  cpu::softmax_forward<double>(sm.data(), x.data(), N, K);
  CHECK_MESSAGE(test::worst_violation(sm, prob, 0, 1e-15) == 0, "softmax_forward<double> != cross_entropy prob");
}

// L1 and MSE over n = 1037 elements; p == t at a few places (sign 0: gradient 0).
void l1_mse_inputs(Run& r, V& p, V& t) {
  p = r.rand(kN), t = r.rand(kN);
  t[0] = p[0], t[300] = p[300], t[kN - 1] = p[kN - 1];
}

void l1_check(Run& r) {
  r.shape = "n=1037";
  V p, t;
  l1_mse_inputs(r, p, t);
  const double g = r.scalar(0.7);
  const double loss = cpu::l1_forward<double>(p.data(), t.data(), kN);
  V dp(kN);
  cpu::l1_backward<double>(dp.data(), p.data(), t.data(), g, kN);
  Tensor P = r.up(p), T = r.up(t), LOSS = r.poison(1), SCR = scratch_for(r, kN), DP = r.poison(kN);
  r.be().l1_forward(LOSS.data(), P.data(), T.data(), kN, SCR.data());
  expect_scalar(r, "l1_forward loss", LOSS, loss, loss, r.dt.tol);  // terms |p - t| >= 0
  r.be().l1_backward(DP.data(), P.data(), T.data(), r.device_scalar(g).data(), kN);
  expect(r, "l1_backward dp", Run::down(DP), dp, V{std::fabs(g) / double(kN)}, r.dt.tol);
}

void mse_check(Run& r) {
  r.shape = "n=1037";
  V p, t;
  l1_mse_inputs(r, p, t);
  const double g = r.scalar(0.7);
  const double loss = cpu::mse_forward<double>(p.data(), t.data(), kN);
  V dp(kN), sdp(kN);
  cpu::mse_backward<double>(dp.data(), p.data(), t.data(), g, kN);
  for (int64_t i = 0; i < kN; ++i) sdp[i] = 2 * std::fabs(g) / double(kN) * (std::fabs(p[i]) + std::fabs(t[i]));
  Tensor P = r.up(p), T = r.up(t), LOSS = r.poison(1), SCR = scratch_for(r, kN), DP = r.poison(kN);
  r.be().mse_forward(LOSS.data(), P.data(), T.data(), kN, SCR.data());
  expect_scalar(r, "mse_forward loss", LOSS, loss, loss, r.dt.tol);  // terms (p - t)^2 >= 0
  r.be().mse_backward(DP.data(), P.data(), T.data(), r.device_scalar(g).data(), kN);
  expect(r, "mse_backward dp", Run::down(DP), dp, sdp, r.dt.tol);
}

template <typename Fwd, typename Bwd>
void pointwise_loss_grad(const std::string& what, uint64_t seed, Fwd fwd, Bwd bwd) {
  Rng rng(seed);
  const int64_t n = 30;
  const double g = 0.7;
  const V p = rvec(rng, n), t = rvec(rng, n);
  V dp(n);
  bwd(dp.data(), p.data(), t.data(), g, n);
  fd_check(what, seed, p, [&](const V& v) { return g * fwd(v.data(), t.data(), n); }, dp, rng,
           [&](size_t i) { return std::fabs(p[i] - t[i]) > 1e-3; });
}
void l1_grad(uint64_t seed) { pointwise_loss_grad("l1", seed, cpu::l1_forward<double>, cpu::l1_backward<double>); }
void mse_grad(uint64_t seed) { pointwise_loss_grad("mse", seed, cpu::mse_forward<double>, cpu::mse_backward<double>); }

// CARL: P, Tg, I (N, C, HW) = (2, 3, 173), mask (N, HW) with exact 0s and 1s.
void carl_check(Run& r) {
  const int64_t N = 2, C = 3, HW = 173, n = N * C * HW;
  r.shape = "N=2 C=3 HW=173";
  V P = r.rand(n), Tg = r.rand(n), I = r.rand(n), M = r.rand(N * HW, 0, 1);
  for (int64_t i = 0; i < N * HW; i += 5) M[i] = 0;
  for (int64_t i = 1; i < N * HW; i += 5) M[i] = 1;
  Tg[0] = P[0], I[1] = P[1], Tg[n - 1] = P[n - 1], I[n - 1] = P[n - 1];  // |.| at 0: subgradient 0
  for (double lambda : {r.scalar(1.0), r.scalar(0.3)}) {
    const double g = r.scalar(0.7);
    const double loss = cpu::carl_forward<double>(P.data(), Tg.data(), I.data(), M.data(), lambda, N, C, HW);
    V dp(n), sdp(n);
    cpu::carl_backward<double>(dp.data(), P.data(), Tg.data(), I.data(), M.data(), lambda, g, N, C, HW);
    for (int64_t k = 0; k < n; ++k) {
      const double m = M[(k / (C * HW)) * HW + k % HW];
      sdp[k] = std::fabs(g) / double(n) * (std::fabs(m + lambda) + std::fabs(1 - m));
    }
    const std::string tag = " (lambda " + std::to_string(lambda) + ")";
    Tensor dP = r.up(P), dT = r.up(Tg), dI = r.up(I), dM = r.up(M), LOSS = r.poison(1), SCR = scratch_for(r, n),
           DP = r.poison(n);
    r.be().carl_forward(LOSS.data(), dP.data(), dT.data(), dI.data(), dM.data(), float(lambda), N, C, HW, SCR.data());
    expect_scalar(r, "carl_forward loss" + tag, LOSS, loss, loss, r.dt.tol);  // terms >= 0
    r.be().carl_backward(DP.data(), dP.data(), dT.data(), dI.data(), dM.data(), float(lambda),
                         r.device_scalar(g).data(), N, C, HW);
    expect(r, "carl_backward dP" + tag, Run::down(DP), dp, sdp, r.dt.tol);
  }
}

void carl_grad(uint64_t seed) {
  Rng rng(seed);
  const int64_t N = 2, C = 3, HW = 5, n = N * C * HW;
  const double lambda = 0.3, g = 0.7;
  const V P = rvec(rng, n), Tg = rvec(rng, n), I = rvec(rng, n), M = rvec(rng, N * HW, 0, 1);
  V dp(n);
  cpu::carl_backward<double>(dp.data(), P.data(), Tg.data(), I.data(), M.data(), lambda, g, N, C, HW);
  auto L = [&](const V& v) {
    return g * cpu::carl_forward<double>(v.data(), Tg.data(), I.data(), M.data(), lambda, N, C, HW);
  };
  fd_check("carl", seed, P, L, dp, rng,
           [&](size_t i) { return std::fabs(P[i] - Tg[i]) > 1e-3 && std::fabs(P[i] - I[i]) > 1e-3; });
}

// ---- dtype casts, bit-exact (bf16 is the top half of a float32; a bf16 buffer is its bit patterns) ----
// The reference, written independently of kernels/common/bfloat16.h from the fields of the format:
// |x| rounds to the nearer of the two bf16 magnitudes around it (the truncation t and t + 1; the one
// after the largest finite bf16 is 2^128, i.e. overflow to inf), ties to the even one; a NaN keeps its
// sign and top payload bits and gets the quiet bit.
double bf16_magnitude(uint32_t m) {  // |value| of a bf16 pattern without its sign bit, finite or 0x7f80
  const int e = int(m >> 7);
  const double f = double(m & 0x7fu);
  return e == 0 ? std::ldexp(f, -133) : std::ldexp(128 + f, e - 134);  // subnormal | (1 + f/128) 2^(e-127)
}
uint16_t bf16_ref(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return uint16_t((u >> 16) | 0x40u);
  const uint32_t sign = (u >> 16) & 0x8000u, t = (u >> 16) & 0x7fffu;
  if (t == 0x7f80u) return uint16_t(u >> 16);  // +-inf
  const double a = std::fabs(double(x)), lo = bf16_magnitude(t), hi = bf16_magnitude(t + 1);
  const bool up = a - lo > hi - a || (a - lo == hi - a && (t & 1u));  // (exact in double)
  return uint16_t(sign | (up ? t + 1 : t));
}
double bf16_value_ref(uint16_t h) {
  const uint32_t m = h & 0x7fffu;
  const double v = m > 0x7f80u ? kNaN : m == 0x7f80u ? kInf : bf16_magnitude(m);
  return (h & 0x8000u) ? -v : v;
}
float float_of_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// A bf16 buffer on the run's device holding `bits`.
Tensor bf16_buffer(const Run& r, const std::vector<uint16_t>& bits) {
  Tensor h = Tensor::empty(Shape{int64_t(bits.size())}, Device::CPU, DType::BF16);
  std::memcpy(h.data_bf16(), bits.data(), bits.size() * 2);
  return h.to(r.dev);
}
std::vector<uint16_t> bf16_bits(const Tensor& t) {
  const Tensor h = t.to(Device::CPU);
  std::vector<uint16_t> bits(size_t(h.numel()));
  std::memcpy(bits.data(), h.data_bf16(), bits.size() * 2);  // the patterns (not the values)
  return bits;
}

void cast_check(Run& r) {
  r.shape = "f32 -> bf16: n=4133, bf16 -> f32: all 65536 patterns + 37";
  // float32 -> bfloat16: special values, ties (low half exactly 0x8000, kept lsb even and odd), either side
  // of a tie, the largest floats (overflow to inf), subnormals, NaNs (quiet and signalling, both signs),
  // then random bit patterns (every exponent) and random near-ties.
  std::vector<uint32_t> in = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u,
                              0x7f800001u, 0xff812345u, 0x7fbfffffu, 0x3f808000u, 0x3f818000u, 0x3f807fffu,
                              0x3f808001u, 0xbf818000u, 0x7f7fffffu, 0xff7fffffu, 0x7f7f7fffu, 0x7f7f8000u,
                              0x7f7e8000u, 0x00000001u, 0x00008000u, 0x00018000u, 0x80008000u, 0x007fffffu,
                              0x00800000u, 0x3f800000u};
  while (in.size() < 4133) {
    const uint32_t u = uint32_t(r.rng.next_u64());
    const uint32_t tails[] = {u & 0xffffu, 0x8000u, 0x7fffu, 0x8001u};
    in.push_back((u & 0xffff0000u) | tails[r.rng.below(4)]);
  }
  std::vector<float> x(in.size());
  V want(in.size());
  for (size_t i = 0; i < in.size(); ++i) x[i] = float_of_bits(in[i]), want[i] = double(bf16_ref(x[i]));
  // Poison: 0x7fa5, a signalling-NaN pattern the cast never writes (its NaNs are quiet).
  Tensor X = Tensor::from_vector(Shape{int64_t(x.size())}, x, r.dev);  // bytes copied: payloads kept
  Tensor Y = bf16_buffer(r, std::vector<uint16_t>(x.size(), 0x7fa5u));
  r.be().cast_f32_to_bf16(Y.data_bf16(), X.data(), int64_t(x.size()));
  const std::vector<uint16_t> y = bf16_bits(Y);
  expect_exact(r, "cast_f32_to_bf16 (bit patterns)", std::vector<float>(y.begin(), y.end()), want);

  // bfloat16 -> float32: exact, every pattern, NaN payloads kept.
  std::vector<uint16_t> h(65536 + 37);
  for (size_t i = 0; i < h.size(); ++i) h[i] = i < 65536 ? uint16_t(i) : uint16_t(r.rng.below(65536));
  V vwant(h.size());
  for (size_t i = 0; i < h.size(); ++i) vwant[i] = bf16_value_ref(h[i]);
  Tensor H = bf16_buffer(r, h), F = r.poison(h.size());
  r.be().cast_bf16_to_f32(F.data(), H.data_bf16(), int64_t(h.size()));
  const std::vector<float> f = Run::down(F);
  expect_exact(r, "cast_bf16_to_f32", f, vwant);
  size_t payload_bad = 0, first_bad = 0;
  for (size_t i = 0; i < h.size() && i < f.size(); ++i) {
    uint32_t u;
    std::memcpy(&u, &f[i], 4);
    if (std::isnan(f[i]) && u != uint32_t(h[i]) << 16 && payload_bad++ == 0) first_bad = i;
  }
  CHECK_MESSAGE(payload_bad == 0, r.where(), ": cast_bf16_to_f32: ", payload_bad, " NaN payloads changed; first [",
                first_bad, "] from bf16 ", h[first_bad]);
}

// ---- optimisers: one call updates a batch of tensors in place (sizes 1037 and odd others, each with
// its own scalars), the reference being kernels/common/optim_update.h's float expressions evaluated in
// double (from the same float scalars). A NaN gradient at the end must make the parameter NaN (a
// diverged run must show), and g = 0 exactly at one place. Scales: the sum of |terms| of each update.
// A last call fills a whole batch (kOptimBatch tensors of 1..32 elements): every entry is updated. ----
struct OptimState {
  V p, m, v, g;
};
OptimState optim_inputs(Run& r, int64_t n) {
  OptimState s{r.rand(n), r.rand(n), r.rand(n, 0, 1), r.rand(n)};
  s.g[std::min<int64_t>(3, n - 1)] = 0;
  s.g[n - 1] = kNaN;
  return s;
}
int64_t optim_size(size_t k) { return k == 0 ? kN : int64_t(291 + 2 * k); }

// Adam's reference for one tensor: p, m, v updated in place; sp, sm, sv their scales.
void adam_ref(const AdamScalars& a, const V& g, V& p, V& m, V& v, V& sp, V& sm, V& sv) {
  for (size_t i = 0; i < p.size(); ++i) {
    if (a.keep != 1.f) p[i] = double(float(p[i]) * a.keep);  // AdamW's decay, rounded as the kernels do
    const double gi = a.wd != 0.f ? g[i] + double(a.wd) * p[i] : g[i];
    sm[i] = std::fabs(m[i] * a.b1) + std::fabs(a.one_m_b1 * gi);
    m[i] = m[i] * a.b1 + double(a.one_m_b1) * gi;
    sv[i] = std::fabs(v[i] * a.b2) + std::fabs(a.one_m_b2 * gi * gi);
    v[i] = v[i] * a.b2 + double(a.one_m_b2) * (gi * gi);
    const double denom = std::sqrt(v[i]) / a.bc2_sqrt + a.eps;
    const double step = -double(a.step_size) * (m[i] / denom);
    sp[i] = std::fabs(p[i]) + std::fabs(step);
    p[i] += step;
  }
}

// Nadam's reference for one tensor, as adam_ref.
void nadam_ref(const NadamScalars& a, const V& g, V& p, V& m, V& v, V& sp, V& sm, V& sv) {
  for (size_t i = 0; i < p.size(); ++i) {
    sm[i] = std::fabs(a.b1 * m[i]) + std::fabs(a.one_m_b1 * g[i]);
    m[i] = double(a.b1) * m[i] + double(a.one_m_b1) * g[i];
    sv[i] = std::fabs(a.b2 * v[i]) + std::fabs(a.one_m_b2 * g[i] * g[i]);
    v[i] = double(a.b2) * v[i] + double(a.one_m_b2) * (g[i] * g[i]);
    const double denom = std::sqrt(v[i] * a.v_scale) + a.eps;
    const double m_bar = double(a.c_g) * (g[i] * a.g_scale) + double(a.c_m) * (m[i] * a.m_scale);
    sp[i] = std::fabs(p[i]) + double(a.lr) * (std::fabs(a.c_g * g[i] * a.g_scale) + std::fabs(a.c_m * m[i] * a.m_scale)) / denom;
    p[i] -= double(a.lr) * m_bar / denom;
  }
}

// SGD's reference for one tensor: p and buf updated in place (buf untouched without momentum).
void sgd_ref(const SgdScalars& c, const V& g, V& p, V& buf, V& sp, V& sb) {
  for (size_t i = 0; i < p.size(); ++i) {
    double d = c.wd != 0.f ? g[i] + double(c.wd) * p[i] : g[i];
    double sd = std::fabs(g[i]) + std::fabs(double(c.wd) * p[i]);
    if (c.use_mom) {
      sb[i] = c.first ? sd : std::fabs(buf[i] * c.mom) + std::fabs(c.keep * d);
      buf[i] = c.first ? d : buf[i] * c.mom + double(c.keep) * d;
      sd = c.nesterov ? sd + std::fabs(c.mom * buf[i]) : sb[i];
      d = c.nesterov ? d + double(c.mom) * buf[i] : buf[i];
    }
    sp[i] = std::fabs(p[i]) + std::fabs(c.lr) * sd;
    p[i] += -double(c.lr) * d;
  }
}

// A full batch (kOptimBatch tensors of n = 1..kOptimBatch, the configurations in turn): every entry is
// updated, each with its own scalars. `add(batch, keep, k, n)` appends tensor k's entry (its device
// tensors pushed on `keep`, the parameter first) and returns the expected parameter; `update` runs
// the kernel.
template <typename Batch, typename Add, typename Update>
void full_batch_check(Run& r, const char* what, Add add, Update update) {
  Batch full;
  std::vector<Tensor> keep, params;
  std::vector<V> want;
  for (int k = 0; k < kOptimBatch; ++k) {
    const size_t first = keep.size();
    want.push_back(add(full, keep, k, int64_t(k + 1)));
    params.push_back(keep.at(first));
  }
  REQUIRE(full.count == kOptimBatch);
  r.shape = "full batch: 32 tensors of n=1..32";
  update(full);
  for (int k = 0; k < kOptimBatch; ++k) {
    V scale(want[size_t(k)].size());
    for (size_t i = 0; i < scale.size(); ++i) scale[i] = 1 + std::fabs(want[size_t(k)][i]);
    expect(r, str(what, " p (full batch, tensor ", k, ")"), Run::down(params[size_t(k)]), want[size_t(k)], scale,
           r.dt.tol);
  }
}

// full_batch_check for the two optimisers with moments (Adam, Nadam: p, m, v, g and the scalars).
template <typename Batch, typename Scalars, typename Ref, typename Update>
void moments_full_batch(Run& r, const char* what, const Scalars* configs, const Scalars* dev_configs, int ncfg, Ref ref,
                        Update update) {
  full_batch_check<Batch>(
      r, what,
      [&](Batch& full, std::vector<Tensor>& keep, int k, int64_t n) {
        OptimState s = optim_inputs(r, n);
        Tensor P = r.up(s.p), M = r.up(s.m), Vt = r.up(s.v), G = r.up(s.g);
        full.t[full.count++] = {P.data(), M.data(), Vt.data(), G.data(), n, dev_configs + k % ncfg};
        keep.insert(keep.end(), {P, M, Vt, G});
        V p = s.p, mm = s.m, vv = s.v, a(static_cast<size_t>(n)), b(static_cast<size_t>(n)), c(static_cast<size_t>(n));
        ref(configs[k % ncfg], s.g, p, mm, vv, a, b, c);
        return p;
      },
      update);
}

void adam_check(Run& r) {
  r.shape = "batch of 3: n=1037, 293, 295";
  // Plain, L2 weight decay, and AdamW's decoupled decay (keep = 1 - lr * weight_decay).
  const AdamScalars configs[] = {{0.9f, 0.999f, 0.1f, 0.001f, 0.0f, 1e-8f, 0.05f, 0.3f, 1.0f},
                                 {0.9f, 0.999f, 0.1f, 0.001f, 0.01f, 1e-8f, 0.05f, 0.3f, 1.0f},
                                 {0.8f, 0.99f, 0.2f, 0.01f, 0.0f, 1e-6f, 0.01f, 0.7f, 0.998f}};
  const Tensor S = r.up_raw(configs, 3);  // the scalars live in device memory (a step's prepare writes them)
  const auto* dev_configs = reinterpret_cast<const AdamScalars*>(S.data());
  std::vector<V> p, m, v, sp, sm, sv;
  std::vector<Tensor> P, M, Vv, G;
  AdamBatch batch;
  for (size_t k = 0; k < 3; ++k) {
    const int64_t n = optim_size(k);
    OptimState s = optim_inputs(r, n);
    P.push_back(r.up(s.p)), M.push_back(r.up(s.m)), Vv.push_back(r.up(s.v)), G.push_back(r.up(s.g));
    batch.t[batch.count++] = {P[k].data(), M[k].data(), Vv[k].data(), G[k].data(), n, dev_configs + k};
    p.push_back(s.p), m.push_back(s.m), v.push_back(s.v), sp.emplace_back(n), sm.emplace_back(n), sv.emplace_back(n);
    adam_ref(configs[k], s.g, p[k], m[k], v[k], sp[k], sm[k], sv[k]);
  }
  r.be().adam_update(batch);
  for (size_t k = 0; k < 3; ++k) {
    const std::string tag = " (tensor " + std::to_string(k) + ")";
    expect(r, "adam_update p" + tag, Run::down(P[k]), p[k], sp[k], r.dt.tol);
    expect(r, "adam_update m" + tag, Run::down(M[k]), m[k], sm[k], r.dt.tol);
    expect(r, "adam_update v" + tag, Run::down(Vv[k]), v[k], sv[k], r.dt.tol);
  }
  moments_full_batch<AdamBatch>(r, "adam_update", configs, dev_configs, 3, adam_ref,
                                [&](const AdamBatch& full) { r.be().adam_update(full); });
}

void nadam_check(Run& r) {
  r.shape = "batch of 2: n=1037, 293";
  const NadamScalars configs[] = {{0.9f, 0.999f, 0.1f, 0.001f, 1.2f, 1.1f, 1.3f, 0.2f, 0.8f, 0.01f, 1e-8f},
                                  {0.8f, 0.99f, 0.2f, 0.01f, 1.5f, 1.4f, 2.0f, 0.3f, 0.7f, 0.002f, 1e-7f}};
  const Tensor S = r.up_raw(configs, 2);
  const auto* dev_configs = reinterpret_cast<const NadamScalars*>(S.data());
  std::vector<V> p, m, v, sp, sm, sv;
  std::vector<Tensor> P, M, Vv, G;
  NadamBatch batch;
  for (size_t k = 0; k < 2; ++k) {
    const NadamScalars& a = configs[k];
    const int64_t n = optim_size(k);
    OptimState s = optim_inputs(r, n);
    P.push_back(r.up(s.p)), M.push_back(r.up(s.m)), Vv.push_back(r.up(s.v)), G.push_back(r.up(s.g));
    batch.t[batch.count++] = {P[k].data(), M[k].data(), Vv[k].data(), G[k].data(), n, dev_configs + k};
    p.push_back(s.p), m.push_back(s.m), v.push_back(s.v), sp.emplace_back(n), sm.emplace_back(n), sv.emplace_back(n);
    nadam_ref(a, s.g, p[k], m[k], v[k], sp[k], sm[k], sv[k]);
  }
  r.be().nadam_update(batch);
  for (size_t k = 0; k < 2; ++k) {
    const std::string tag = " (tensor " + std::to_string(k) + ")";
    expect(r, "nadam_update p" + tag, Run::down(P[k]), p[k], sp[k], r.dt.tol);
    expect(r, "nadam_update m" + tag, Run::down(M[k]), m[k], sm[k], r.dt.tol);
    expect(r, "nadam_update v" + tag, Run::down(Vv[k]), v[k], sv[k], r.dt.tol);
  }
  moments_full_batch<NadamBatch>(r, "nadam_update", configs, dev_configs, 2, nadam_ref,
                                 [&](const NadamBatch& full) { r.be().nadam_update(full); });
}

void sgd_check(Run& r) {
  r.shape = "batch of 3: n=1037, 293, 295";
  // One batch: a first step with Nesterov momentum, a later step with plain momentum (dampened), and
  // no momentum (then buf is not touched: it stays NaN).
  const SgdScalars configs[] = {
      {0.1f, 0.001f, 0.9f, 1.0f, true, true, true},
      {0.1f, 0.0f, 0.9f, 0.8f, false, true, false},
      {0.05f, 0.01f, 0.0f, 1.0f, false, false, false},
  };
  const Tensor S = r.up_raw(configs, 3);
  const auto* dev_configs = reinterpret_cast<const SgdScalars*>(S.data());
  std::vector<V> p, buf, sp, sb;
  std::vector<Tensor> P, B, G;
  SgdBatch batch;
  for (size_t k = 0; k < 3; ++k) {
    const SgdScalars& c = configs[k];
    const int64_t n = optim_size(k);
    OptimState s = optim_inputs(r, n);
    p.push_back(s.p), buf.push_back(s.m), sp.emplace_back(n), sb.emplace_back(n);
    if (!c.use_mom) std::fill(buf[k].begin(), buf[k].end(), kNaN);
    P.push_back(r.up(s.p)), B.push_back(r.up(buf[k])), G.push_back(r.up(s.g));
    batch.t[batch.count++] = {P[k].data(), B[k].data(), G[k].data(), n, dev_configs + k};
    sgd_ref(c, s.g, p[k], buf[k], sp[k], sb[k]);
  }
  r.be().sgd_update(batch);
  for (size_t k = 0; k < 3; ++k) {
    const SgdScalars& c = configs[k];
    const std::string tag = std::string(" (") + (c.use_mom ? (c.nesterov ? "nesterov" : "momentum") : "no momentum") +
                            (c.first ? ", first step)" : ")");
    expect(r, "sgd_update p" + tag, Run::down(P[k]), p[k], sp[k], r.dt.tol);
    if (c.use_mom) expect(r, "sgd_update buf" + tag, Run::down(B[k]), buf[k], sb[k], r.dt.tol);
    else expect_exact(r, "sgd_update buf untouched" + tag, Run::down(B[k]), buf[k]);
  }
  full_batch_check<SgdBatch>(
      r, "sgd_update",
      [&](SgdBatch& full, std::vector<Tensor>& keep, int k, int64_t n) {
        const SgdScalars& c = configs[size_t(k) % 3];
        OptimState s = optim_inputs(r, n);
        if (!c.use_mom) std::fill(s.m.begin(), s.m.end(), kNaN);
        Tensor P = r.up(s.p), B = r.up(s.m), G = r.up(s.g);
        full.t[full.count++] = {P.data(), B.data(), G.data(), n, dev_configs + k % 3};
        keep.insert(keep.end(), {P, B, G});
        V p = s.p, bb = s.m, a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
        sgd_ref(c, s.g, p, bb, a, b);
        return p;
      },
      [&](const SgdBatch& full) { r.be().sgd_update(full); });
}

// ---- gradient-norm clipping: 35 gradients (more than one kOptimBatch batch, so slots past 32 are
// written by a second call) of odd sizes, the largest crossing many CUDA grid strides. The partial sums
// (poisoned with NaN first) must add up to each tensor's sum of squares in double (bound: 1e-12 of the
// sum, far below one float32 rounding); the norm must be the reference sqrt(sum) rounded to float32
// (within one float32 rounding, 2^-23 relative); the coefficient exactly kernels/common/grad_clip.h's
// formula from that norm; grad_scale exactly float(g * coef). Both ways round: clipping (max_norm half
// the norm) and not (twice the norm: coef exactly 1, gradients unchanged). A NaN gradient makes the norm
// and every gradient NaN; an infinite one makes the norm infinite, coef 0, itself NaN and the rest 0. ----
void grad_clip_check(Run& r) {
  std::vector<int64_t> sizes = {40013, 1037, 1, 8193, 31, 0};
  while (sizes.size() < 35) sizes.push_back(int64_t(3 + 7 * sizes.size()));
  r.shape = "35 gradients: n = 40013, 1037, 1, 8193, 31, 0, 45, 52, ...";
  const int64_t count = int64_t(sizes.size());
  auto check_close = [&](const std::string& what, double got, double want, double bound) {
    const bool ok = std::isnan(want) ? std::isnan(got) : (std::isinf(want) ? got == want : std::fabs(got - want) <= bound);
    REQUIRE_MESSAGE(ok, r.where(), ": ", what, ": got ", got, ", expected ", want, " (bound ", bound, ")");
  };
  enum class Special { none, nan, inf };
  for (const Special special : {Special::none, Special::nan, Special::inf}) {
    for (const double ratio : {0.5, 2.0}) {
      if (special != Special::none && ratio != 0.5) continue;
      std::vector<V> g;
      for (int64_t n : sizes) g.push_back(r.rand(size_t(n)));
      if (special == Special::nan) g[3][17] = kNaN;
      if (special == Special::inf) g[33][2] = -kInf;
      std::vector<Tensor> G;
      for (const V& v : g) G.push_back(r.up32(v));
      Tensor partial = r.poison32(size_t(2 * count * kGradChunks));
      double* sums = reinterpret_cast<double*>(partial.data());
      Tensor norm = r.poison32(1), coef = r.poison32(1);
      auto batches = [&](auto kernel) {
        GradBatch b;
        for (int64_t i = 0; i < count; ++i) {
          b.t[b.count++] = {G[size_t(i)].data(), sizes[size_t(i)], i};
          if (b.count == kOptimBatch || i == count - 1) kernel(b), b.count = 0;
        }
      };
      batches([&](const GradBatch& b) { r.be().grad_sumsq(b, sums); });
      const std::vector<double> got_sums = Run::raw_down<double>(partial, size_t(count * kGradChunks));
      double total = 0;
      for (int64_t i = 0; i < count; ++i) {
        const double want = cpu::grad_sumsq_ref(g[size_t(i)].data(), sizes[size_t(i)]);
        double got = 0;
        for (int c = 0; c < kGradChunks; ++c) got += got_sums[size_t(i * kGradChunks + c)];
        check_close(str("grad_sumsq of gradient ", i, " (n = ", sizes[size_t(i)], ")"), got, want, 1e-12 * want);
        total += want;
      }
      const double max_norm = special == Special::none ? ratio * std::sqrt(total) : 1.0;
      r.be().grad_clip_coef(norm.data(), coef.data(), sums, count, float(max_norm));
      const float got_norm = Run::down(norm)[0], got_coef = Run::down(coef)[0];
      const double want_norm = double(float(std::sqrt(total)));
      check_close("grad_clip_coef norm", got_norm, want_norm, std::ldexp(want_norm, -23));
      float norm_of_got = 0, want_coef = 0;
      clip_coefficient(double(got_norm) * double(got_norm), float(max_norm), &norm_of_got, &want_coef);
      REQUIRE((norm_of_got == got_norm || (std::isnan(norm_of_got) && std::isnan(got_norm))));  // a float's square is exact in double, and its sqrt that float
      expect_exact(r, "grad_clip_coef coefficient", {got_coef}, {double(want_coef)});
      // What the coefficient must be, said without the formula: about the ratio's inverse, or exactly 1,
      // NaN for a NaN gradient (PyTorch's clamp keeps it), 0 for an infinite one.
      const bool as_said = special == Special::nan   ? std::isnan(got_coef)
                           : special == Special::inf ? got_coef == 0.f
                           : ratio > 1               ? got_coef == 1.f
                                                     : got_coef > 0.49f && got_coef < 0.51f;
      CHECK_MESSAGE(as_said, r.where(), ": coefficient ", got_coef, " (max_norm ", max_norm, ")");
      batches([&](const GradBatch& b) { r.be().grad_scale(b, coef.data()); });
      for (int64_t i = 0; i < count; ++i) {
        V want(g[size_t(i)].size());
        for (size_t j = 0; j < want.size(); ++j) want[j] = double(float(g[size_t(i)][j]) * got_coef);
        expect_exact(r, str("grad_scale of gradient ", i), Run::down(G[size_t(i)]), want);
      }
    }
  }
}

// ============================================================================================
// The table.

struct Case {
  std::string name;
  std::vector<std::string> kernels;
  void (*check_f32)(Run&);   // one backend in float32
  void (*check_bf16)(Run&);  // one backend in bfloat16, or null (the kernels are F32 only)
  void (*grad)(uint64_t);    // gradient mode, or null
};

std::vector<Case>& table() {
  static std::vector<Case> t;
  return t;
}

std::vector<std::string> split(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool register_case(const char* name, const char* kernels, void (*check_f32)(Run&), void (*check_bf16)(Run&),
                   void (*grad)(uint64_t)) {
  table().push_back(Case{name, split(kernels), check_f32, check_bf16, grad});
  return true;
}

// The list's kernels with their dtypes column ("F32" or "F32_BF16").
std::vector<std::pair<std::string, std::string>> kernel_list() {
  std::vector<std::pair<std::string, std::string>> names;
#define NIMBUS_KERNEL(name, dtypes, ret, params, args) names.emplace_back(#name, #dtypes);
#include "engine/kernel_list.def"
#undef NIMBUS_KERNEL
  return names;
}

// A fresh seed per case: FNV-1a of its name, mixed with NIMBUS_BACKEND_SEED when set.
uint64_t case_seed(const std::string& name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  if (const char* env = std::getenv("NIMBUS_BACKEND_SEED")) h ^= std::strtoull(env, nullptr, 0) * 0x9e3779b97f4a7c15ull;
  return h % 1000000007ull;  // short enough to read in a report
}

std::vector<Device> backends() {
  REQUIRE_MESSAGE(cuda::register_cuda_backend(), cuda_status());
  return {Device::CPU, Device::CUDA};
}

void run_case(const char* name) {
  const Case* found = nullptr;
  for (const Case& c : table())
    if (c.name == name) found = &c;
  REQUIRE(found);
  const uint64_t seed = case_seed(found->name);
  std::string kernels;
  for (const std::string& k : found->kernels) kernels += (kernels.empty() ? "" : " ") + k;
  if (found->grad) {
    try {
      found->grad(seed);
    } catch (const std::exception& e) {
      FAIL_CHECK("gradient mode [", kernels, "] seed ", seed, ": ", e.what());
    }
  }
  // The kernels whose float32 result depends on the CUDA math mode.
  bool math_dependent = false;
  for (const std::string& k : found->kernels)
    math_dependent = math_dependent || k == "linear_forward" || k == "conv2d_forward" ||
                     k == "conv2d_residual_forward" || k == "conv2d_forward_bn_stats" ||
                     k == "bnrelu_conv2d_forward_bn_stats";
  for (Device d : backends())
    for (const TypeUnderTest* dt : {&kF32, &kTF32, &kBF16}) {
      void (*check)(Run&) = dt->dtype == DType::F32 ? found->check_f32 : found->check_bf16;
      if (!check) continue;  // an F32-only case (the table test holds this to the list's dtypes)
      const bool on_cuda_math = d == Device::CUDA && math_dependent;
      if (dt->tf32 && !on_cuda_math) continue;  // one float32 run where the mode changes nothing
      const cuda::MathScope math(dt->tf32 || !on_cuda_math ? cuda::Math::Tf32 : cuda::Math::Fp32);
      Run r(kernels, d, *dt, seed);
      try {
        check(r);
      } catch (const std::exception& e) {
        FAIL_CHECK(r.where(), ": threw: ", e.what());
      }
    }
}

TEST_CASE("every kernel of engine/kernel_list.def has a case in each of its dtypes, and every case names kernels of the list") {
  const auto listed = kernel_list();
  std::map<std::string, std::string> dtypes_of(listed.begin(), listed.end());
  std::set<std::string> covered;
  std::string unknown, wrong_dtypes;
  for (const Case& c : table())
    for (const std::string& k : c.kernels) {
      covered.insert(k);
      const auto it = dtypes_of.find(k);
      if (it == dtypes_of.end()) {
        unknown += " " + k + " (case " + c.name + ")";
        continue;
      }
      // A case runs bfloat16 exactly when its kernels exist in bfloat16.
      if ((it->second == "F32_BF16") != (c.check_bf16 != nullptr))
        wrong_dtypes += " " + k + " (" + it->second + ", case " + c.name +
                        (c.check_bf16 ? " runs bfloat16)" : " has no bfloat16 run)");
    }
  std::string missing;
  for (const auto& [k, dt] : listed)
    if (!covered.count(k)) missing += " " + k;
  CHECK_MESSAGE(missing.empty(),
                "kernels of engine/kernel_list.def with no case in tests/backend/test_backend_ops.cpp:", missing);
  CHECK_MESSAGE(unknown.empty(), "cases naming kernels that are not in engine/kernel_list.def:", unknown);
  CHECK_MESSAGE(wrong_dtypes.empty(), "cases whose dtypes differ from the list's:", wrong_dtypes);
  CHECK(listed.size() == dtypes_of.size());  // no kernel listed twice
  CHECK(covered.size() == dtypes_of.size());
}

// The step's prepare (kernels/common/optim_scalars.h): the clock advances once, each masked
// parameter's count advances and gets its scalars, the others are untouched; optim_set_lr writes the
// rate. Reference: the formulas of engine/optim/{adam,nadam,sgd}.h in double, rounded to float once.
void optim_prepare_check(Run& r) {
  r.shape = "5 parameters, mask {0, 2, 3}, counts 0, 4, 1, 9, 2";
  const double counts[] = {0, 4, 1, 9, 2};
  const bool stepping[] = {true, false, true, true, false};
  StepMask mask;
  mask.count = 5;
  for (int i = 0; i < 5; ++i)
    if (stepping[i]) mask.bits[0] |= 1u << i;
  auto check_counts = [&](const char* what, const Tensor& steps) {
    const std::vector<double> got = Run::raw_down<double>(steps, 5);
    V ref(5), g(5);
    for (int i = 0; i < 5; ++i) ref[size_t(i)] = counts[i] + (stepping[i] ? 1 : 0), g[size_t(i)] = got[size_t(i)];
    expect_exact(r, str(what, " counts").c_str(), std::vector<float>(g.begin(), g.end()), ref);
  };
  auto close = [&](const std::string& what, float got, double want) {
    expect(r, what, {got}, {double(float(want))}, {std::fabs(want) + 1e-30}, 1e-6);
  };
  OptimClock c0;
  c0.lr = 0.003;
  c0.step = 6;
  c0.m_schedule = 0.25f;
  // A parameter outside the mask keeps its scalars (here the poison: every float NaN).
  auto check_untouched = [&](const char* what, const Tensor& sc, size_t floats_per_param) {
    const std::vector<float> all = Run::down(sc);
    for (int i = 0; i < 5; ++i) {
      if (stepping[i]) continue;
      const auto first = all.begin() + ptrdiff_t(size_t(i) * floats_per_param);
      CHECK_MESSAGE(std::all_of(first, first + ptrdiff_t(floats_per_param), [](float v) { return std::isnan(v); }),
                    r.where(), ": ", what, " wrote the scalars of parameter ", i, ", outside the mask");
    }
  };
  // Adam: per-parameter bias corrections. The step's first call advances the clock; a later chunk's
  // (advance false) reads it as it is.
  for (const bool advance : {true, false}) {
    const std::string tag = advance ? "" : " (no advance)";
    Tensor clock = r.up_raw(&c0, 1), steps = r.up_raw(counts, 5), sc = r.poison32(5 * sizeof(AdamScalars) / 4);
    r.be().optim_set_lr(reinterpret_cast<OptimClock*>(clock.data()), 0.002);
    const AdamHyper h{0.9, 0.999, 1e-8, 0.01, false};
    r.be().adam_prepare({reinterpret_cast<OptimClock*>(clock.data()), reinterpret_cast<double*>(steps.data()),
                         reinterpret_cast<AdamScalars*>(sc.data()), h, advance, mask});
    const OptimClock c = Run::raw_down<OptimClock>(clock, 1)[0];
    expect_exact(r, "adam_prepare clock step, optim_set_lr" + tag, {float(c.step), float(c.lr)},
                 {advance ? 7.0 : 6.0, double(float(0.002))});
    check_counts("adam_prepare", steps);
    check_untouched("adam_prepare", sc, sizeof(AdamScalars) / 4);
    const std::vector<AdamScalars> s = Run::raw_down<AdamScalars>(sc, 5);
    for (int i = 0; i < 5; ++i) {
      if (!stepping[i]) continue;
      const double t = counts[i] + 1;
      close(str("adam_prepare step_size (parameter ", i, ")", tag), s[size_t(i)].step_size, 0.002 / (1 - std::pow(0.9, t)));
      close(str("adam_prepare bc2_sqrt (parameter ", i, ")", tag), s[size_t(i)].bc2_sqrt, std::sqrt(1 - std::pow(0.999, t)));
      close(str("adam_prepare wd (parameter ", i, ")", tag), s[size_t(i)].wd, 0.01);
      close(str("adam_prepare keep (parameter ", i, ")", tag), s[size_t(i)].keep, 1.0);
    }
    // AdamW: the decay is the parameter's (keep = 1 - lr * weight_decay), none in the gradient.
    Tensor steps_w = r.up_raw(counts, 5), sc_w = r.poison32(5 * sizeof(AdamScalars) / 4);
    r.be().adam_prepare({reinterpret_cast<OptimClock*>(clock.data()), reinterpret_cast<double*>(steps_w.data()),
                         reinterpret_cast<AdamScalars*>(sc_w.data()), AdamHyper{0.9, 0.999, 1e-8, 0.01, true}, false,
                         mask});
    const std::vector<AdamScalars> w = Run::raw_down<AdamScalars>(sc_w, 5);
    for (int i = 0; i < 5; ++i) {
      if (!stepping[i]) continue;
      close(str("adamw prepare wd (parameter ", i, ")", tag), w[size_t(i)].wd, 0.0);
      // Exact: a keep off by a part of the 2e-5 decay would hide in a tolerance on keep itself.
      expect_exact(r, str("adamw prepare keep (parameter ", i, ")", tag).c_str(), {w[size_t(i)].keep},
                   {double(float(1 - 0.002 * 0.01))});
    }
  }
  // Nadam: the clock carries the schedule; every parameter gets the same scalars. Advancing: t = 7 and
  // the schedule's next values from m_schedule; not advancing: the clock's values as they are.
  for (const bool advance : {true, false}) {
    const std::string tag = advance ? "" : " (no advance)";
    OptimClock start = c0;
    if (!advance) start.s_t = 0.3, start.s_next = 0.2, start.mu_t = 0.85, start.mu_next = 0.86;
    Tensor clock = r.up_raw(&start, 1), steps = r.up_raw(counts, 5), sc = r.poison32(5 * sizeof(NadamScalars) / 4);
    const NadamHyper h{0.9, 0.999, 1e-8, 0.004};
    r.be().nadam_prepare({reinterpret_cast<OptimClock*>(clock.data()), reinterpret_cast<double*>(steps.data()),
                          reinterpret_cast<NadamScalars*>(sc.data()), h, advance, mask});
    const double t = advance ? 7 : 6;
    const double mu_t = advance ? 0.9 * (1 - 0.5 * std::pow(0.96, t * 0.004)) : start.mu_t;
    const double mu_n = advance ? 0.9 * (1 - 0.5 * std::pow(0.96, (t + 1) * 0.004)) : start.mu_next;
    const double s_t = advance ? 0.25 * mu_t : start.s_t, s_n = advance ? s_t * mu_n : start.s_next;
    const OptimClock c = Run::raw_down<OptimClock>(clock, 1)[0];
    expect_exact(r, "nadam_prepare clock step" + tag, {float(c.step)}, {t});
    close("nadam_prepare m_schedule" + tag, c.m_schedule, advance ? s_t : 0.25);
    check_counts("nadam_prepare", steps);
    check_untouched("nadam_prepare", sc, sizeof(NadamScalars) / 4);
    const std::vector<NadamScalars> s = Run::raw_down<NadamScalars>(sc, 5);
    for (int i = 0; i < 5; ++i) {
      if (!stepping[i]) continue;
      close(str("nadam_prepare g_scale (parameter ", i, ")", tag), s[size_t(i)].g_scale, 1 / (1 - s_t));
      close(str("nadam_prepare m_scale (parameter ", i, ")", tag), s[size_t(i)].m_scale, 1 / (1 - s_n));
      close(str("nadam_prepare v_scale (parameter ", i, ")", tag), s[size_t(i)].v_scale, 1 / (1 - std::pow(0.999, t)));
      close(str("nadam_prepare c_g, c_m (parameter ", i, ")", tag), s[size_t(i)].c_g + s[size_t(i)].c_m,
            double(float(1 - mu_t)) + double(float(mu_n)));
      close(str("nadam_prepare lr (parameter ", i, ")", tag), s[size_t(i)].lr, 0.003);
    }
  }
  // SGD: `first` marks a parameter's first update; a later chunk (advance false) leaves the clock.
  {
    Tensor clock = r.up_raw(&c0, 1), steps = r.up_raw(counts, 5), sc = r.poison32(5 * sizeof(SgdScalars) / 4);
    const SgdHyper h{0.9, 0.1, 0.0, false};
    r.be().sgd_prepare({reinterpret_cast<OptimClock*>(clock.data()), reinterpret_cast<double*>(steps.data()),
                        reinterpret_cast<SgdScalars*>(sc.data()), h, false, mask});
    const OptimClock c = Run::raw_down<OptimClock>(clock, 1)[0];
    expect_exact(r, "sgd_prepare without advance keeps the clock", {float(c.step)}, {6.0});
    check_counts("sgd_prepare", steps);
    check_untouched("sgd_prepare", sc, sizeof(SgdScalars) / 4);
    const std::vector<SgdScalars> s = Run::raw_down<SgdScalars>(sc, 5);
    for (int i = 0; i < 5; ++i) {
      if (!stepping[i]) continue;
      const bool first = counts[i] == 0;
      expect_exact(r, str("sgd_prepare first, use_mom, nesterov (parameter ", i, ")"),
                   {float(s[size_t(i)].first), float(s[size_t(i)].use_mom), float(s[size_t(i)].nesterov)},
                   {first ? 1.0 : 0.0, 1.0, 0.0});
      close(str("sgd_prepare lr, keep (parameter ", i, ")"), s[size_t(i)].lr + s[size_t(i)].keep, double(float(0.003)) + double(float(0.9)));
    }
  }
}

}  // namespace

// One line per case: its id, the kernels it covers (space-separated), the per-backend check in
// float32 and in bfloat16 (nullptr for F32 kernels), and the gradient-mode check (or nullptr). Each
// line is one TEST_CASE (one ctest entry).
#define BACKEND_CASE(id, kernels, check_f32, check_bf16, grad)                                \
  namespace {                                                                                 \
  const bool id##_registered = register_case(#id, kernels, check_f32, check_bf16, grad);      \
  }                                                                                           \
  TEST_CASE("kernels " kernels ": cpu and cuda against the float64 reference") { run_case(#id); }
// F32_BF16 kernels: a check templated on the element type, run in both.
#define BACKEND_CASE_BF16(id, kernels, check, grad) BACKEND_CASE(id, kernels, check<float>, check<bfloat16>, grad)

BACKEND_CASE_BF16(add_inplace, "add_inplace", add_inplace_check, nullptr)
BACKEND_CASE_BF16(relu, "relu_forward relu_backward", relu_check, relu_grad)
BACKEND_CASE_BF16(add, "add", add_check, nullptr)
BACKEND_CASE_BF16(add_relu, "add_relu", add_relu_check, add_relu_grad)
BACKEND_CASE_BF16(add_scaled, "add_scaled scale", add_scaled_check, add_scaled_grad)
BACKEND_CASE_BF16(copy_rows, "copy_rows", copy_rows_check, nullptr)
BACKEND_CASE(input_norm, "input_norm", input_norm_check, nullptr, nullptr)
BACKEND_CASE(band_affine, "band_affine", band_affine_check, nullptr, nullptr)
BACKEND_CASE(flip_rotate, "flip_rotate", flip_rotate_check, nullptr, nullptr)
BACKEND_CASE_BF16(linear, "linear_forward linear_backward", linear_check, linear_grad)
BACKEND_CASE_BF16(conv2d, "conv2d_forward conv2d_backward", conv2d_check, conv2d_grad)
BACKEND_CASE(conv2d_workspace, "conv2d_workspace", conv2d_workspace_check, nullptr, nullptr)
BACKEND_CASE_BF16(conv2d_residual, "conv2d_residual_forward", conv2d_residual_check, nullptr)
BACKEND_CASE_BF16(conv2d_bn_stats, "conv2d_forward_bn_stats", conv2d_bn_stats_check, nullptr)
BACKEND_CASE_BF16(bnrelu_conv2d_bn_stats, "bnrelu_conv2d_forward_bn_stats", bnrelu_conv2d_bn_stats_check, nullptr)
BACKEND_CASE(conv2d_bn_workspace, "conv2d_bn_workspace", conv2d_bn_workspace_check, nullptr, nullptr)
BACKEND_CASE_BF16(batchnorm, "batchnorm_train_stats batchnorm_forward batchnorm_backward", batchnorm_check,
                  batchnorm_grad)
BACKEND_CASE(batchnorm_invstd, "batchnorm_invstd", batchnorm_invstd_check, nullptr, nullptr)
BACKEND_CASE_BF16(max_pool2d, "max_pool2d_forward max_pool2d_backward", max_pool2d_check, max_pool2d_grad)
BACKEND_CASE_BF16(global_avg_pool, "global_avg_pool_forward global_avg_pool_backward", global_avg_pool_check,
                  global_avg_pool_grad)
BACKEND_CASE(cross_entropy, "loss_scratch_floats softmax_forward cross_entropy_forward cross_entropy_backward",
             softmax_cross_entropy_check, nullptr, softmax_cross_entropy_grad)
BACKEND_CASE(l1, "l1_forward l1_backward", l1_check, nullptr, l1_grad)
BACKEND_CASE(mse, "mse_forward mse_backward", mse_check, nullptr, mse_grad)
BACKEND_CASE(carl, "carl_forward carl_backward", carl_check, nullptr, carl_grad)
BACKEND_CASE(adam, "adam_update", adam_check, nullptr, nullptr)
BACKEND_CASE(nadam, "nadam_update", nadam_check, nullptr, nullptr)
BACKEND_CASE(sgd, "sgd_update", sgd_check, nullptr, nullptr)
BACKEND_CASE(grad_clip, "grad_sumsq grad_clip_coef grad_scale", grad_clip_check, nullptr, nullptr)
BACKEND_CASE(optim_prepare, "adam_prepare nadam_prepare sgd_prepare optim_set_lr", optim_prepare_check, nullptr, nullptr)
BACKEND_CASE(cast, "cast_f32_to_bf16 cast_bf16_to_f32", cast_check, nullptr, nullptr)

// The formula-defined ops of kernels/common/unary_ops.def: a case each, generated from the same list.
#define NIMBUS_UNARY(name, f, df)                                                                       \
  namespace {                                                                                           \
  template <typename T>                                                                                 \
  void name##_unary_check(Run& r) {                                                                     \
    unary_check<T>(r, #name, &Kernels<T>::name##_forward, &Kernels<T>::name##_backward,                 \
                   cpu::name##_forward<double>, cpu::name##_backward<double>);                          \
  }                                                                                                     \
  void name##_unary_grad(uint64_t seed) {                                                               \
    unary_grad(seed, #name, cpu::name##_forward<double>, cpu::name##_backward<double>);                 \
  }                                                                                                     \
  }                                                                                                     \
  BACKEND_CASE_BF16(name, #name "_forward " #name "_backward", name##_unary_check, name##_unary_grad)
#include "kernels/common/unary_ops.def"
#undef NIMBUS_UNARY
