// bench_ops.cpp: timings of the compute-heavy CPU ops against the machine's FP32 peak.
//
//   bench_ops [--cases gemm2048,conv256_fwd,conv256_fwdbwd,conv256x128_fwd,conv256x128_dx,conv256x128_dw,
//              conv256x128_{fwd,dx,dw}_{direct,winograd}]
//             [--iters N] [--warmup N] [--peak GFLOPS]
//
// Each case: warm-up iterations (untimed: first-touch page faults, allocator
// cache, OpenBLAS thread start-up), then the median of N timed iterations.
// One JSON line per case: {"case":..,"median_ms":..,"gflops":..,"pct_peak":..}, plus
// cpu_ms (median CPU time of this process per iteration, all threads),
// own_cpu / foreign_cpu: CPUs kept busy by this process / by others meanwhile
// (foreign_cpu well above 0 means the timing is contaminated).
// FLOP counting as in /work/shared/reference/perf-baseline.md: 2 per multiply-add,
// conv backward = dx + dw = 2x forward (the bias is not counted), so the
// comparison with tools/torch_ref_bench.py is like for like.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include "engine/autograd.h"
#include "engine/ops/conv.h"
#include "engine/random.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/conv2d_direct.h"
#include "kernels/cpu/conv2d_winograd.h"
#include "kernels/cpu/gemm.h"

using namespace nimbus;

namespace {
// Default peak: the reference machine of perf-baseline.md (2 Zen 4 cores x 32
// FLOP/cycle x 3.6 GHz). Another machine: pass its own with --peak.
double g_peak_gflops = 230.4;

struct Case {
  const char* name;
  double flop;
  std::function<void()> setup;  // builds the inputs (untimed)
  std::function<void()> step;   // one timed iteration
};

// Busy CPU seconds of the whole machine (/proc/stat) and of this process: their
// difference over the timed loop is CPU used by OTHER processes, printed as
// "foreign_cpu" so a contaminated number can be recognised (as torch_ref_bench.py does).
double machine_busy_s() {
  FILE* f = std::fopen("/proc/stat", "r");
  if (!f) return 0;
  unsigned long long v[8] = {};
  int got = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                        &v[6], &v[7]);
  std::fclose(f);
  if (got != 8) return 0;
  unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];  // all but idle and iowait
  return double(busy) / double(sysconf(_SC_CLK_TCK));
}
double own_cpu_s() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return double(r.ru_utime.tv_sec + r.ru_stime.tv_sec) + 1e-6 * double(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void run(const Case& c, int warmup, int iters) {
  c.setup();
  for (int i = 0; i < warmup; ++i) c.step();
  std::vector<double> ms, cpu_ms;
  const double b0 = machine_busy_s(), o0 = own_cpu_s();
  const auto w0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) {
    const double c0 = own_cpu_s();
    auto t0 = std::chrono::steady_clock::now();
    c.step();
    auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    cpu_ms.push_back(1e3 * (own_cpu_s() - c0));
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count();
  const double own = (own_cpu_s() - o0) / wall, foreign = std::max(0.0, (machine_busy_s() - b0) / wall - own);
  const double med = median(ms), gflops = c.flop / (med * 1e-3) / 1e9;
  std::printf(
      "{\"case\":\"%s\",\"median_ms\":%.3f,\"min_ms\":%.3f,\"gflops\":%.1f,\"pct_peak\":%.1f,\"iters\":%d,"
      "\"cpu_ms\":%.3f,\"own_cpu\":%.2f,\"foreign_cpu\":%.2f}\n",
      c.name, med, *std::min_element(ms.begin(), ms.end()), gflops, 100.0 * gflops / g_peak_gflops, iters,
      median(cpu_ms), own, foreign);
  std::fflush(stdout);
}
}  // namespace

int main(int argc, char** argv) {
  std::string cases = "gemm2048,conv256_fwd,conv256_fwdbwd";
  int iters = 10, warmup = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--cases" && i + 1 < argc) cases = argv[++i];
    else if (a == "--iters" && i + 1 < argc) iters = std::max(1, std::atoi(argv[++i]));
    else if (a == "--warmup" && i + 1 < argc) warmup = std::max(0, std::atoi(argv[++i]));
    else if (a == "--peak" && i + 1 < argc) g_peak_gflops = std::atof(argv[++i]);
    else {
      std::fprintf(stderr,
                   "usage: %s [--cases gemm2048,conv256_fwd,conv256_fwdbwd,conv256x128_fwd,conv256x128_dx,"
                   "conv256x128_dw,conv256x128_{fwd,dx,dw}_{direct,winograd}] [--iters N] [--warmup N] [--peak GFLOPS]\n",
                   argv[0]);
      return 2;
    }
  }

  Rng rng(0);
  // gemm2048: C = A B, 2048^3, through nimbus's gemm (OpenBLAS sgemm).
  const int64_t n = 2048;
  Tensor A, B, C;
  // conv256: Conv2d(256, 256, 3, padding=1) on 1x256x64x64, with bias (as the torch reference).
  Tensor x, w, b, gy;
  auto conv_setup = [&] {
    x = Tensor::randn({1, 256, 64, 64}, rng);
    w = Tensor::randn({256, 256, 3, 3}, rng, 0.f, 0.02f);
    b = Tensor::randn({256}, rng);
    gy = Tensor::randn({1, 256, 64, 64}, rng);
  };
  const double conv_fwd_flop = 2.0 * 256 * 256 * 9 * 64 * 64;
  // conv256x128_*: DSen2-CR F256's layer (1x256x128x128), one kernel per case
  // (forward, dx alone, dw alone) through cpu::conv2d_* with its workspace.
  const cpu::ConvGeom g128{1, 256, 128, 128, 256, 3, 3, 1, 1};
  std::vector<float> ws;
  auto conv128_setup = [&] {
    x = Tensor::randn({1, 256, 128, 128}, rng);
    w = Tensor::randn({256, 256, 3, 3}, rng, 0.f, 0.02f);
    b = Tensor::randn({256}, rng);
    gy = Tensor::randn({1, 256, 128, 128}, rng);
    C = Tensor::empty({1, 256, 128, 128});  // y or dx
    A = Tensor::empty({256, 256, 3, 3});    // dw
    ws.assign(size_t(std::max(cpu::conv2d_workspace(g128), cpu::conv2d_winograd_workspace(g128))), 0.f);
  };
  const double conv128_flop = 2.0 * 256 * 256 * 9 * 128 * 128;
  std::vector<Case> all = {
      {"gemm2048", 2.0 * n * n * n,
       [&] {
         A = Tensor::randn({n, n}, rng);
         B = Tensor::randn({n, n}, rng);
         C = Tensor::empty({n, n});
       },
       [&] { cpu::gemm<float>(false, false, n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(), n); }},
      {"conv256_fwd", conv_fwd_flop, conv_setup,
       [&] {
         NoGradGuard no_grad;
         Tensor y = conv2d(x, w, b, 1, 1);
       }},
      {"conv256_fwdbwd", 3 * conv_fwd_flop,
       [&] {
         conv_setup();
         for (Tensor* t : {&x, &w, &b}) t->set_requires_grad(true);
       },
       [&] {
         for (Tensor* t : {&x, &w, &b}) t->zero_grad();
         Tensor y = conv2d(x, w, b, 1, 1);
         y.backward(gy);
       }},
      {"conv256x128_fwd", conv128_flop, conv128_setup,
       [&] { cpu::conv2d_forward(C.data(), x.data(), w.data(), b.data(), g128, ws.data()); }},
      {"conv256x128_dx", conv128_flop, conv128_setup,
       [&] { cpu::conv2d_backward(C.data(), nullptr, nullptr, gy.data(), x.data(), w.data(), g128, ws.data()); }},
      {"conv256x128_dw", conv128_flop, conv128_setup,
       [&] { cpu::conv2d_backward(nullptr, A.data(), nullptr, gy.data(), x.data(), w.data(), g128, ws.data()); }},
      // The two 3x3 algorithms side by side (conv2d_forward picks one): gflops counts the direct
      // convolution's multiply-adds for both, so Winograd's figure is the direct rate it equals.
      {"conv256x128_fwd_direct", conv128_flop, conv128_setup,
       [&] { cpu::conv2d_direct_forward(C.data(), x.data(), w.data(), b.data(), g128, ws.data()); }},
      {"conv256x128_fwd_winograd", conv128_flop, conv128_setup,
       [&] { cpu::conv2d_winograd_forward(C.data(), x.data(), w.data(), b.data(), g128, ws.data()); }},
      {"conv256x128_dx_direct", conv128_flop, conv128_setup,
       [&] { cpu::conv2d_direct_backward(C.data(), nullptr, nullptr, gy.data(), x.data(), w.data(), g128, ws.data()); }},
      {"conv256x128_dx_winograd", conv128_flop, conv128_setup,
       [&] { cpu::conv2d_winograd_backward_data(C.data(), gy.data(), w.data(), g128, ws.data()); }},
      {"conv256x128_dw_direct", conv128_flop, conv128_setup,
       [&] { cpu::conv2d_direct_backward(nullptr, A.data(), nullptr, gy.data(), x.data(), w.data(), g128, ws.data()); }},
      {"conv256x128_dw_winograd", conv128_flop, conv128_setup,
       [&] { cpu::conv2d_winograd_backward_weight(A.data(), gy.data(), x.data(), g128, ws.data()); }},
  };
  bool any = false;
  for (const Case& c : all)
    if (("," + cases + ",").find(std::string(",") + c.name + ",") != std::string::npos) {
      run(c, warmup, iters);
      any = true;
    }
  if (!any) {
    std::fprintf(stderr, "bench_ops: no case matches --cases %s\n", cases.c_str());
    return 2;
  }
  return 0;
}
