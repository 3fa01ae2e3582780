/* bench_util.cuh: what every numbered-kernel benchmark in bench/cuda shares.
 *
 * Both builds (g++ + emulator, nvcc):  upload() a host vector, check() a CUDA call, split_ints(),
 * parse_bench_args() and pick_cases() (the command line every benchmark program takes), bench_main()
 * (every benchmark's main(), given its BenchProgram), count_nonfinite() (every output element
 * written: the whole output's inf/NaN, poisoned ones included).
 * nvcc only (the `--case` mode, docs/cuda-backend.md "Kernel cases"), because only a real GPU gives
 * timings and cudaDeviceProp:
 *   fill_uniform    device inputs, uniform in [-1, 1) from a hash of (seed, index): fresh per case
 *   sample_indices  ~1000 random output positions; gather() copies those elements back as float
 *   rel_err         ||out - ref|| / ||ref|| over the samples (NaN if any sample is not finite)
 *   time_runs       CUDA events around groups of back-to-back runs (~1 ms each): 2 warm-ups, then >= 5
 *                   samples, more while under a budget
 *   Row             one JSON object per line on stdout, flushed at once
 *   time_left_s     what is left of --deadline-s: a case of many layers stops early rather than be
 *                   killed by its caller's time limit with none of its rows printed
 *   require_device  exit 77 with "no CUDA device: ..." when there is none
 */
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/compat.h"

// Throw std::runtime_error naming the call when a CUDA runtime call fails.
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
#define CK(call) check((call), #call)

// True when this device runs the sm_90a versions (TMA + wgmma: gemm.cu 8 and 9, conv2d.cu 6 and 7):
// compute capability 9.0, where sm_90a code runs, and only there. The emulator models them: always true.
inline bool hopper_device() {
#ifdef __CUDACC__
  int major = 0, minor = 0;
  CK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  CK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0));
  return major == 9 && minor == 0;
#else
  return true;
#endif
}

// A device copy of h (the caller frees it with cudaFree).
inline float* upload(const std::vector<float>& h) {
  float* d = nullptr;
  CK(cudaMalloc(&d, h.size() * sizeof(float)));
  CK(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
  return d;
}

// "1,3" -> {1, 3}; an empty or malformed list -> {} (the caller reports it).
inline std::vector<int> split_ints(const char* s) {
  std::vector<int> out;
  std::string cur;
  for (const char* p = s;; ++p) {
    if (*p == ',' || *p == '\0') {
      if (cur.empty()) return {};
      out.push_back(std::atoi(cur.c_str()));
      cur.clear();
      if (*p == '\0') break;
    } else if (*p >= '0' && *p <= '9') {
      cur += *p;
    } else {
      return {};
    }
  }
  return out;
}

// ---- every output element written ---------------------------------------------------------------
// Outputs are poisoned with NaN (every byte 0xFF) before a validation run, and the sampled comparison
// sees an element the kernel never wrote only where a sample lands: 1,000 samples miss one 128 x 128
// tile of DSen2-CR's 33.5 M outputs 61% of the time. Counting the non-finite elements of the whole
// output does not miss it (nor a NaN the kernel made). By the bits: an all-ones exponent is inf or NaN,
// for fp32 (bytes 4) and bf16 (bytes 2) alike. Both builds: validate_small checks the counter itself.
template <typename Bits>
__global__ void count_nonfinite_kernel(unsigned long long* count, const Bits* p, int64_t n, Bits exponent) {
  unsigned long long mine = 0;
  for (int64_t i = grid_first(); i < n; i += grid_step()) mine += (p[i] & exponent) == exponent ? 1u : 0u;
  if (mine) atomicAdd(count, mine);
}
inline int64_t count_nonfinite(const void* p, int64_t n, int bytes) {
  unsigned long long* d = nullptr;
  CK(cudaMalloc(&d, sizeof *d));
  CK(cudaMemset(d, 0, sizeof *d));
  const dim3 grid(unsigned(std::min<int64_t>((n + 255) / 256, 4096))), block(256);
  if (bytes == 4)
    launch(count_nonfinite_kernel<uint32_t>, grid, block, 0, nullptr, d, static_cast<const uint32_t*>(p), n,
           uint32_t(0x7F800000u));
  else
    launch(count_nonfinite_kernel<uint16_t>, grid, block, 0, nullptr, d, static_cast<const uint16_t*>(p), n,
           uint16_t(0x7F80u));
  unsigned long long h = 0;
  const cudaError_t launched = cudaGetLastError();
  const cudaError_t copied = cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost);
  CK(cudaFree(d));
  CK(launched);
  CK(copied);
  return int64_t(h);
}
// The counter's own check (validate_small runs it): a poisoned buffer of each element size, then
// finite values written over all but 3 of its elements, one of them an infinity.
inline bool nonfinite_counter_works() {
  const int64_t n = 70001;  // several blocks' strides, not a multiple of 256
  void* d = nullptr;
  CK(cudaMalloc(&d, size_t(n) * 4));
  bool ok = true;
  for (int bytes : {4, 2}) {
    CK(cudaMemset(d, 0xFF, size_t(n) * size_t(bytes)));
    ok = ok && count_nonfinite(d, n, bytes) == n;
    std::vector<uint8_t> h(size_t(n) * size_t(bytes), 0);  // zeros: finite in both formats
    for (int64_t i : {int64_t(0), n / 2, n - 1}) std::memset(&h[size_t(i) * size_t(bytes)], 0xFF, size_t(bytes));
    if (bytes == 4) std::memcpy(&h[4 * 7], "\x00\x00\x80\x7F", 4);  // +inf (little-endian)
    else std::memcpy(&h[2 * 7], "\x80\x7F", 2);
    CK(cudaMemcpy(d, h.data(), h.size(), cudaMemcpyHostToDevice));
    ok = ok && count_nonfinite(d, n, bytes) == 4;
  }
  CK(cudaFree(d));
  std::printf("the whole-output non-finite counter (fp32, bf16): %s\n", ok ? "OK" : "WRONG");
  return ok;
}

// The command line of every numbered-kernel benchmark:
//   [--versions a,b] | --list | --case NAME|all [--case ...] [--versions a,b] [--budget-ms MS] [--deadline-s S]
// With no --case, the program validates every chosen version at small sizes (the ctest test).
struct BenchArgs {
  std::vector<int> versions;       // 1..last unless --versions
  std::vector<std::string> cases;  // --case names, in order
  double budget_ms = 150;          // timing budget per implementation (time_runs)
  double deadline_s = 0;           // --deadline-s: the program's time limit from its start (0: none)
  bool list = false;               // --list: print the case names and stop
};

// --deadline-s, as a point in time (none: the far future). bench_main sets it; a case made of many
// layers (gpu_bench_conv2d's) starts a layer only if time_left_s() exceeds the slowest layer so far,
// and prints rows for the layers it timed, marked partial. Killed by its caller's limit instead, it
// would print none: a case's rows sum its layers and come at its end.
inline std::chrono::steady_clock::time_point& bench_deadline() {
  static std::chrono::steady_clock::time_point d = std::chrono::steady_clock::time_point::max();
  return d;
}
inline double time_left_s() {
  return std::chrono::duration<double>(bench_deadline() - std::chrono::steady_clock::now()).count();
}
// False, after printing the usage line, when the command line is bad.
inline bool parse_bench_args(int argc, char** argv, int last, BenchArgs& a) {
  for (int v = 1; v <= last; ++v) a.versions.push_back(v);
  bool ok = true;
  for (int i = 1; i < argc && ok; ++i) {
    const std::string arg = argv[i];
    if (arg == "--list") {
      a.list = true;
    } else if (arg == "--case" && i + 1 < argc) {
      a.cases.push_back(argv[++i]);
    } else if (arg == "--versions" && i + 1 < argc) {
      a.versions = split_ints(argv[++i]);
      ok = !a.versions.empty();
      for (int v : a.versions) ok = ok && v >= 1 && v <= last;
    } else if (arg == "--budget-ms" && i + 1 < argc) {
      a.budget_ms = std::atof(argv[++i]);
    } else if (arg == "--deadline-s" && i + 1 < argc) {
      a.deadline_s = std::atof(argv[++i]);
      ok = a.deadline_s > 0 && a.deadline_s <= 1e6;  // finite, and far from the clock's overflow
    } else {
      ok = false;
    }
  }
  if (!ok)
    std::fprintf(stderr, "usage: %s [--versions 1,%d] | --list | --case NAME|all [--case ...] [--versions ...] "
                         "[--budget-ms MS] [--deadline-s S]\n", argv[0], last);
  return ok;
}

// The cases of `all` that `names` asks for ("all": every one), in the order of `all`; an empty list,
// after a message, when none matches.
template <typename Case>
std::vector<Case> pick_cases(const std::vector<std::string>& names, const std::vector<Case>& all) {
  std::vector<Case> todo;
  for (const std::string& nm : names)
    for (const Case& c : all)
      if (nm == "all" || nm == c.name) todo.push_back(c);
  if (todo.empty()) std::fprintf(stderr, "unknown case; --list prints the names\n");
  return todo;
}

// One case on a GPU: validate and time the chosen versions and the library's, print the JSON rows;
// false if any failed.
template <typename Case>
using RunCase = bool (*)(const Case& c, const std::vector<int>& versions, double budget_ms, const std::string& device);

// A numbered-kernel benchmark program, as bench_main() runs it.
template <typename Case>
struct BenchProgram {
  const char* name;         // "gpu_bench_gemm", for messages
  const char* library;      // "cuBLAS": what `--case` needs in the nvcc build
  int last;                 // the highest version number
  std::vector<Case> cases;  // what --list prints and --case picks from
  bool (*validate_small)(const std::vector<int>& versions);  // no --case: every chosen version at small sizes
  RunCase<Case> run_case;   // --case; null in a build without the library (the emulator's)
};

// Pass bounds on rel_err, by the precision of the arithmetic (inputs are uniform in [-1, 1), sums of
// 10^2..3x10^5 products: the ResNet stem's weight gradient). fp32: 1e-4 leaves ~10x headroom over
// sqrt(terms) * 2^-24 accumulation error. TF32 (10-bit mantissa inputs, rel. rounding 2^-11 ~ 5e-4):
// 5e-3. bf16 (7-bit mantissa inputs, 2^-9 ~ 2e-3 each when rounded; the convolutions' outputs are bf16
// too, 2^-9 again; GEMM's C is fp32): 2e-2. These catch a wrong kernel, not a wrong precision: TF32
// and bf16 errors overlap at full size (the first device run: library TF32 rows 2.5e-4 to 8.8e-4,
// bf16 1.6e-3 to 2.9e-3). The small validations (no --case) check each version against its own
// rounded operands, which does tell them apart.
inline double bound(const std::string& precision) {
  return precision == "fp32" ? 1e-4 : precision == "tf32" ? 5e-3 : 2e-2;
}

#ifdef __CUDACC__
#include <algorithm>
#include <cmath>
#include <functional>
#include <random>

// Exit 77 (ctest's "skipped") with a clear message when the process sees no CUDA device.
inline void require_device() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    std::fprintf(stderr, "no CUDA device: cudaGetDeviceCount returned %s (%s), %d device(s)\n", cudaGetErrorName(e),
                 cudaGetErrorString(e), n);
    std::exit(77);
  }
}

inline std::string device_name() {
  cudaDeviceProp p{};
  CK(cudaGetDeviceProperties(&p, 0));
  return p.name;
}

// ---- inputs: uniform in [-1, 1) from splitmix64(seed + i), so every element differs ----------------
__global__ void fill_uniform_kernel(float* p, int64_t n, uint64_t seed) {
  for (int64_t i = grid_first(); i < n; i += grid_step()) {
    uint64_t z = seed + uint64_t(i) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    p[i] = float(z >> 40) * (2.0f / 16777216.0f) - 1.0f;  // 24 random bits -> [-1, 1)
  }
}
inline void fill_uniform(float* p, int64_t n, uint64_t seed) {
  launch(fill_uniform_kernel, nimbus::cuda::grid_for(n, 256, 65535), 256, 0, nullptr, p, n, seed);
  CK(cudaGetLastError());
}

// A device buffer of n floats, freed on scope exit (bench code only: errors throw, nothing leaks
// across cases).
struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t b = 0) : bytes(b) {
    if (b) CK(cudaMalloc(&p, b));
  }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  float* f() const { return static_cast<float*>(p); }
  // Every byte 0xFF: a NaN in fp32 and in bf16, so an output the run never writes is caught.
  void poison() const { CK(cudaMemset(p, 0xFF, bytes)); }
};

inline std::vector<float> download(const float* d, int64_t n) {
  std::vector<float> h(static_cast<size_t>(n));
  CK(cudaMemcpy(h.data(), d, size_t(n) * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

// ---- validation on sampled outputs -------------------------------------------------------------
constexpr int kSamples = 1000;

// kSamples distinct-enough flat indices into an output of n elements (with replacement; fixed seed).
inline std::vector<int64_t> sample_indices(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> pick(0, n - 1);
  std::vector<int64_t> idx(kSamples);
  for (auto& i : idx) i = pick(rng);
  return idx;
}

// out[j] = float(src[idx[j]]): the sampled outputs, whatever the element type (float or bf16).
template <typename T>
__global__ void gather_kernel(float* out, const T* src, const int64_t* idx, int n) {
  const int j = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (j < n) out[j] = float(src[idx[j]]);
}
template <typename T>
std::vector<float> gather(const T* src, const std::vector<int64_t>& idx) {
  DevBuf d_idx(idx.size() * sizeof(int64_t)), d_out(idx.size() * sizeof(float));
  CK(cudaMemcpy(d_idx.p, idx.data(), idx.size() * sizeof(int64_t), cudaMemcpyHostToDevice));
  const int n = int(idx.size());
  launch(gather_kernel<T>, dim3(unsigned((n + 255) / 256)), dim3(256), 0, nullptr, d_out.f(), src,
         static_cast<const int64_t*>(d_idx.p), n);
  CK(cudaGetLastError());
  return download(d_out.f(), n);
}

// ||got - ref|| / ||ref|| over the samples; NaN when any sample is NaN or infinite.
inline double rel_err(const std::vector<float>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t j = 0; j < ref.size(); ++j) {
    if (!std::isfinite(got[j])) return NAN;
    num += (double(got[j]) - ref[j]) * (double(got[j]) - ref[j]);
    den += ref[j] * ref[j];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}


// ---- timing ------------------------------------------------------------------------------------
struct Timing {
  double p10 = 0, median = 0, p90 = 0;
  int runs = 0;
};

// CUDA events around groups of back-to-back calls of f: 2 warm-ups, then at least 5 samples, more
// while the total stays under budget_ms (and at most max_runs samples); a sample is a group's time
// over its calls. A group holds enough calls to last ~1 ms (at most 32): the host queues the next call
// while the GPU runs this one, so a library's host-side cost per call (cuDNN's legacy API, its
// descriptor checks) is hidden as in a real step, instead of idling the GPU between two events, which
// made short cuDNN layers look several times slower than PyTorch's queued cuDNN. Ours and the
// libraries are timed alike. Percentiles by nearest rank.
inline Timing time_runs(const std::function<void()>& f, double budget_ms, int max_runs = 100) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 2; ++i) f();
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  auto group = [&](int calls) {
    CK(cudaEventRecord(a));
    for (int i = 0; i < calls; ++i) f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    CK(cudaGetLastError());
    float t = 0;
    CK(cudaEventElapsedTime(&t, a, b));
    return double(t) / calls;
  };
  const double one = group(1);
  const int calls = int(std::clamp(std::ceil(1.0 / std::max(one, 1e-3)), 1.0, 32.0));
  std::vector<double> ms;
  double total = 0;
  while (ms.size() < 5 || (total < budget_ms && int(ms.size()) < max_runs)) {
    const double t = group(calls);
    ms.push_back(t);
    total += t * calls;
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  const auto at = [&](double q) { return ms[size_t(q * double(ms.size() - 1) + 0.5)]; };
  return Timing{at(0.1), at(0.5), at(0.9), int(ms.size())};
}

// ---- output: one JSON object per line ------------------------------------------------------------
struct Row {
  std::string s;
  Row& raw(const char* key, const std::string& value) {
    s.append(s.empty() ? "{\"" : ", \"").append(key).append("\": ").append(value);  // appends: g++ 12 -Wrestrict
    return *this;
  }
  Row& str(const char* key, const std::string& v) { return raw(key, std::string("\"").append(v).append("\"")); }  // no escaping needed
  Row& num(const char* key, double v) {
    if (!std::isfinite(v)) return raw(key, "null");
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.8g", v);
    return raw(key, buf);
  }
  Row& boolean(const char* key, bool v) { return raw(key, v ? "true" : "false"); }
  Row& null(const char* key) { return raw(key, "null"); }
  void print() const {
    std::printf("%s}\n", s.c_str());
    std::fflush(stdout);
  }
};

inline std::string json_escape(const std::string& in) {
  std::string out;
  for (char c : in) {
    if (c == '"' || c == '\\') out += '\\';
    out += (c == '\n' || c == '\t') ? ' ' : c;
  }
  return out;
}

// ---- one implementation across the layers of a case ----------------------------------------------
// A case is one or more layers (a GEMM: one; ResNet-50: its unique conv geometries, each with a
// count). Every implementation is validated on each layer, then timed; its case time is the sum over
// layers of count x per-layer median (p10 and p90 summed the same way: an approximation, they are
// per-layer percentiles). rel_err is the worst layer's. The first failure stops it: no more timing.
struct Impl {
  std::string name, precision;  // "nimbus_v2" / "cudnn" / "cublas";  "fp32" / "tf32" / "bf16"
  bool ours = false;            // a numbered version of ours (else a library reference)
  bool ok = true;
  double err = 0, median = 0, p10 = 0, p90 = 0, bytes = 0;
  std::vector<int> algos;  // cuDNN algorithm id per layer
  std::string error;
  Impl(std::string n, std::string p, bool our = false) : name(std::move(n)), precision(std::move(p)), ours(our) {}
  std::string tag() const { return name + "_" + precision; }  // "cudnn_fp32"
};

// Validate `im` on one layer (poison the output, run once, count the whole output's non-finite
// elements, compare the sampled outputs with `ref`), then time it. prepare() (cuDNN's algorithm search, bf16 copies) runs first and is not timed.
inline void measure(Impl& im, int count, const std::string& label, const std::function<void()>& prepare,
                    const std::function<void()>& poison, const std::function<void()>& run,
                    const std::function<std::vector<float>()>& sampled, const std::vector<double>& ref,
                    const std::function<int64_t()>& nonfinite, double budget_ms) {
  if (!im.ok) return;
  try {
    prepare();
    poison();
    run();
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    if (const int64_t bad = nonfinite(); bad > 0) {  // unwritten (still poisoned) or NaN/inf, anywhere
      im.ok = false;
      im.err = NAN;
      im.error = std::to_string(bad) + " outputs not finite (unwritten or NaN/inf)";
      std::fprintf(stderr, "%s: %s %s FAILED: %s\n", label.c_str(), im.name.c_str(), im.precision.c_str(),
                   im.error.c_str());
      return;
    }
    const double e = rel_err(sampled(), ref);
    im.err = std::isfinite(e) ? std::max(im.err, e) : NAN;
    if (!(e <= bound(im.precision))) {
      im.ok = false;
      im.error = std::isfinite(e) ? "rel_err above the bound" : "non-finite output (NaN/inf) among the samples";
      std::fprintf(stderr, "%s: %s %s FAILED: rel_err %.3g (bound %.0e)\n", label.c_str(), im.name.c_str(),
                   im.precision.c_str(), e, bound(im.precision));
      return;
    }
    const Timing t = time_runs(run, budget_ms);
    im.median += count * t.median, im.p10 += count * t.p10, im.p90 += count * t.p90;
    std::fprintf(stderr, "%s: %-9s %s rel_err %.2e  median %.4f ms (p10 %.4f, p90 %.4f, %d runs)\n", label.c_str(),
                 im.name.c_str(), im.precision.c_str(), e, t.median, t.p10, t.p90, t.runs);
  } catch (const std::exception& ex) {
    im.ok = false;
    im.error = ex.what();
    std::fprintf(stderr, "%s: %s %s FAILED: %s\n", label.c_str(), im.name.c_str(), im.precision.c_str(), ex.what());
  }
}

// One JSON row per implementation. Ours name `reference_tag` (e.g. "cudnn_fp32") and its median as
// reference_ms; a reference row names itself. layers_total > layers: the case stopped at --deadline-s,
// and the rows say "partial": true with both counts (their times, FLOPs and bytes are of the layers
// timed, every implementation over the same ones). Returns false if any implementation failed.
inline bool print_rows(const std::string& case_name, const std::vector<Impl>& impls, double flops, int layers,
                       const std::string& device, const std::string& reference_tag, int layers_total = 0) {
  const Impl* reference = nullptr;
  for (const Impl& im : impls)
    if (!im.ours && im.tag() == reference_tag && im.ok) reference = &im;
  bool all_ok = true;
  for (const Impl& im : impls) {
    all_ok = all_ok && im.ok;
    Row r;
    r.str("case", case_name).str("impl", im.name).str("precision", im.precision).boolean("ok", im.ok);
    r.num("rel_err", im.err);
    const double nan = NAN;
    r.num("median_ms", im.ok ? im.median : nan).num("p10_ms", im.ok ? im.p10 : nan).num("p90_ms", im.ok ? im.p90 : nan);
    r.num("flops", flops).num("bytes", im.bytes).str("device", json_escape(device));
    if (im.algos.empty()) {
      r.null("algo");
    } else if (im.algos.size() == 1) {
      r.num("algo", im.algos[0]);
    } else {
      std::string a = "[";
      for (size_t i = 0; i < im.algos.size(); ++i) a += (i ? ", " : "") + std::to_string(im.algos[i]);
      r.raw("algo", a + "]");
    }
    if (im.ours) {
      r.num("nimbus_ms", im.ok ? im.median : nan).str("reference", reference_tag);
      r.num("reference_ms", reference ? reference->median : nan);
    } else {
      r.null("nimbus_ms").str("reference", im.tag()).num("reference_ms", im.ok ? im.median : nan);
    }
    r.num("layers", layers);
    if (layers_total > layers) r.num("layers_total", layers_total).boolean("partial", true);
    if (!im.ok) r.str("error", json_escape(im.error));
    r.print();
  }
  return all_ok;
}
#endif  // __CUDACC__

// ---- main ---------------------------------------------------------------------------------------
// The main() of every numbered-kernel benchmark: parse the command line; --list prints the case
// names; no --case validates the chosen versions at small sizes (exit 0 or 1); --case runs the
// picked cases one after the other, all of them even after a failure (nvcc build with the library:
// exit 0, 1 a failure, 77 no device; elsewhere a message and exit 2).
template <typename Case>
int bench_main(int argc, char** argv, const BenchProgram<Case>& program) {
  BenchArgs args;
  if (!parse_bench_args(argc, argv, program.last, args)) return 2;
  if (args.list) {
    for (const Case& c : program.cases) std::printf("%s\n", c.name);
    return 0;
  }
  if (args.deadline_s > 0)
    bench_deadline() = std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                           std::chrono::duration<double>(args.deadline_s));
  if (args.cases.empty()) return program.validate_small(args.versions) ? 0 : 1;
  const std::vector<Case> todo = pick_cases(args.cases, program.cases);
  if (todo.empty()) return 2;
#ifdef __CUDACC__
  if (program.run_case) {
    require_device();
    const std::string device = device_name();
    bool ok = true;
    try {
      for (const Case& c : todo) ok = program.run_case(c, args.versions, args.budget_ms, device) && ok;
    } catch (const std::exception& e) {  // outside any one implementation: allocation, inputs, copies
      std::fprintf(stderr, "%s: %s\n", program.name, e.what());
      return 1;
    }
    return ok ? 0 : 1;
  }
#endif
  std::fprintf(stderr, "--case needs the nvcc build with %s (%s, bench/cuda/gpu.cmake)\n", program.library,
               program.name);
  return 2;
}
