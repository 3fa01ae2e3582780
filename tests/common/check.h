// check.h: helpers every test uses: closeness checks that report the worst
// element, finite-difference gradients in double, and fixture paths.
//
// Tolerance rule (llm.c): |got - want| <= atol + rtol * |want| per element.
#pragma once
#include <doctest/doctest.h>

#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/io/safetensors.h"
#include "engine/random.h"
#include "engine/tensor.h"

namespace nimbus::test {

// The fixtures' folder is the source tree's at build time, or NIMBUS_FIXTURES from the environment when
// set: scripts/gpu_check.sh runs test_cuda_real, built elsewhere, in the device machine's copy of the tree.
inline std::string fixture(const std::string& name) {
  const char* moved = std::getenv("NIMBUS_FIXTURES");
  return std::string(moved && *moved ? moved : NIMBUS_FIXTURES) + "/" + name;
}

// The real Sentinel files (tests/fixtures/real/PROVENANCE.md), unpacked by CMake into the build
// tree. `rel` is the path inside the set, as SHA256SUMS names it ("eurosat_ms/...").
inline std::string real_fixture(const std::string& rel) { return std::string(NIMBUS_REAL) + "/" + rel; }
// The repository carries 27 of the full set's 33 files; a test that needs one of the others
// skips that part, naming the file (see PROVENANCE.md for what is left out).
inline bool has_real_fixture(const std::string& rel) {
  std::ifstream in(real_fixture(rel), std::ios::binary);
  return bool(in);
}
// Fixture metadata and the expected-values files name real files as they lie in the full set on
// our machines, "fixtures/real/<rel>"; this gives <rel>.
inline std::string real_rel(const std::string& key) {
  const std::string prefix = "fixtures/real/";
  REQUIRE_MESSAGE(key.rfind(prefix, 0) == 0, "not a real-fixture key: ", key);
  return key.substr(prefix.size());
}

// The whole file as bytes; empty when it cannot be read.
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The committed fixture file tests/fixtures/<name>, loaded once per test binary
// (doctest runs the cases of one binary on one thread).
inline const SafetensorsFile& fixture_file(const std::string& name) {
  static std::map<std::string, SafetensorsFile> cache;
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, load_safetensors(fixture(name))).first;
  return it->second;
}

// What a NaN on both sides means. NaN never passes by default: two computed results (CPU and CUDA, fused
// and unfused, one rank and two) that are both NaN share a bug, they do not agree. A test that means NaN
// to come out where NaN went in (propagation, a NaN metric row) says so with check_close_nan_ok.
enum class NanOnBoth { Fails, Agrees };

// Largest violation of the tolerance; 0 when everything is within it.
template <typename A, typename B>
double worst_violation(const A& got, const B& want, double atol, double rtol, size_t* where = nullptr,
                       NanOnBoth nan = NanOnBoth::Fails) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    double g = double(got[i]), w = double(want[i]);
    double excess = std::fabs(g - w) - (atol + rtol * std::fabs(w));
    if (std::isnan(g) || std::isnan(w)) excess = std::isnan(g) && std::isnan(w) && nan == NanOnBoth::Agrees ? 0 : INFINITY;
    if (std::isinf(g) || std::isinf(w)) excess = g == w ? 0 : INFINITY;  // inf - inf is no agreement
    if (excess > worst) {
      worst = excess;
      if (where) *where = i;
    }
  }
  return worst;
}

// OpenMP's thread count for a scope, put back at its end (also when a REQUIRE leaves it early).
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~ScopedOmpThreads() { omp_set_num_threads(saved_); }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  int saved_;
};

// Every value finite: what a "these must differ" check asks first (two NaN vectors differ too).
template <typename A>
bool all_finite(const A& v) {
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(double(v[i]))) return false;
  return true;
}

// The larger of worst and v, infinite when v is NaN (std::max(worst, NaN) is worst: the NaN was lost).
inline double worse(double worst, double v) { return std::isnan(v) ? INFINITY : std::max(worst, v); }

// CHECKs that got and want (any indexable containers) agree elementwise; a NaN on either side fails.
template <typename A, typename B>
void check_close(const A& got, const B& want, double atol, double rtol, const std::string& what = "",
                 NanOnBoth nan = NanOnBoth::Fails) {
  REQUIRE_MESSAGE(got.size() == want.size(), what, ": size ", got.size(), " vs ", want.size());
  size_t at = 0;
  double v = worst_violation(got, want, atol, rtol, &at, nan);
  // Read eagerly: doctest builds the message lazily, also for passing checks under -s, and an
  // empty pair of containers has no element `at`.
  const double g = got.size() > at ? double(got[at]) : 0, w = want.size() > at ? double(want[at]) : 0;
  CHECK_MESSAGE(v == 0, what, ": element ", at, " is ", g, ", expected ", w, " (atol ", atol, ", rtol ", rtol, ")");
}

inline void check_close(const Tensor& got, const Tensor& want, double atol, double rtol, const std::string& what = "",
                        NanOnBoth nan = NanOnBoth::Fails) {
  REQUIRE_MESSAGE(got.shape() == want.shape(), what, ": shape ", got.shape().str(), " vs ", want.shape().str());
  check_close(got.to_vector(), want.to_vector(), atol, rtol, what, nan);
}

// check_close where a NaN is expected in the same places on both sides (NaN propagation, NaN rows).
template <typename A, typename B>
void check_close_nan_ok(const A& got, const B& want, double atol, double rtol, const std::string& what = "") {
  check_close(got, want, atol, rtol, what, NanOnBoth::Agrees);
}

// Central finite differences of a scalar function f at x, in double:
// d f / d x_i ~ (f(x + h e_i) - f(x - h e_i)) / 2h.
inline std::vector<double> numeric_grad(const std::function<double(const std::vector<double>&)>& f,
                                        std::vector<double> x, double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double xi = x[i];
    x[i] = xi + h;
    double fp = f(x);
    x[i] = xi - h;
    double fm = f(x);
    x[i] = xi;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

inline std::vector<double> random_vec(size_t n, Rng& rng, double lo = -1, double hi = 1) {
  std::vector<double> v(n);
  for (auto& x : v) x = lo + (hi - lo) * rng.uniform();
  return v;
}

inline std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }
inline std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// sum_i a_i * b_i: turns an op's output into the scalar loss L = <y, r> whose
// gradient wrt y is r, the standard way to test a backward with a random dy.
inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace nimbus::test
