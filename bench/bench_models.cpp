// bench_models.cpp: whole-model timings, the same cases as
// /work/shared/tools/torch_ref_bench.py so the numbers compare side by side
// with perf-baseline.md (PyTorch 1.13 / oneDNN / OpenBLAS on this machine).
//
//   bench_models [--device cpu|cuda] [--cases a,b,...] [--iters N] [--warmup N] [--list]
//
//   resnet50_train                 ResNet-50 (13 in, 10 classes), b32 x 13x64x64: fwd + CE + bwd + Adam(1e-4)
//   resnet50_infer_b32_64          same model, eval, no grad, b32 x 13x64x64
//   dsen2cr_train_B4_F64_b8_64     DSen2-CR B=4 F=64 (SAR), b8 x 15x64x64: fwd + L1 + bwd + Adam(1e-4)
//   dsen2cr_train_B16_F256_b1_128  DSen2-CR B=16 F=256, b1 x 15x128x128 (forward only if a step > 60 s)
//   dsen2cr_infer_B16_F256_b1_128  same model, eval, no grad
// Like the script: random inputs (the same batch every step), the script's
// warm-up and default iteration counts, median of the timed iterations. Each
// case runs in its own forked process so that its peak RSS (getrusage
// ru_maxrss) is its own. One JSON line per case:
//   {"case","name","median_ms","min_ms","iters","img_per_s","gflops","peak_rss_mib","own_cpu","foreign_cpu"}
// (own_cpu / foreign_cpu: CPUs used by this process / by others during the timed loop).
// Threads: the engine's OpenMP loops and OpenBLAS (its OpenMP build) share one
// libgomp pool. The bench sets nothing itself: it measures the engine as it is
// (docs/perf-notes.md, "Threads").
// FLOP counts (conv + linear, 2 per MAC, training = 3 fwd - 2 first-conv MACs)
// are perf-baseline.md's, hard-coded per case.
//
// --device cuda runs the GPU cases (the models phase of scripts/gpu_check.sh, next to
// bench/torch/gpu_reference.py on the same GPU):
//   resnet50_train_b256_64[_graph|_nofold|_prologue]  resnet50_infer_b256_64
//   dsen2cr_train_B16F256_b16_128[_graph]  dsen2cr_infer_B16F256_b1_256
// (_graph: the same step captured once as a CUDA graph and replayed; _nofold: batch norm's statistics by its
// own kernels, not in the convolutions' epilogue: backends/cuda/backend.h bn_fold; _prologue: each
// bottleneck's batch norm + ReLU applied by the next convolution as it reads its input, engine/nn/layers.h
// bn_relu_prologue). Each step ends with a device synchronisation (host clock around step + sync). The row adds, per
// step, the kernel launches, host waits and memcpys the backend counted (kernels/cuda/stream.h; the closing
// synchronisation is not counted), the peak memory the CUDA caching allocator held (in use +
// cached: PyTorch's max_memory_reserved), and, from one extra step under the op profiler
// (backends/cuda/op_profile.h), the device time per engine op. Built with the real backend
// (-DNIMBUS_CUDA_BACKEND=ON) it runs on the GPU; in a CPU build on the CUDA emulator (slow: only
// for checking the wiring).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/device.h"
#include "engine/graph.h"
#include "engine/nn/layers.h"  // bn_relu_prologue
#include "engine/ops/loss.h"
#include "engine/optim/adam.h"
#include "models/classifier.h"
#include "models/dsen2cr.h"
#include "backends/cuda/backend.h"
#include "backends/cuda/op_profile.h"
#include "backends/cuda/upload.h"  // staging_bytes
#include "kernels/cuda/stream.h"

using namespace nimbus;
using namespace nimbus::models;

namespace {
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Busy CPU seconds of the whole machine (/proc/stat) and of this process: during
// the timed loop, machine - own = what other processes used (the script's
// contamination check; numbers with foreign_cpu > 0.1 are not comparable).
double machine_busy_s() {
  unsigned long long v[8] = {};
  FILE* f = std::fopen("/proc/stat", "r");
  if (!f) return 0;
  int got = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                        &v[6], &v[7]);
  std::fclose(f);
  if (got != 8) return 0;
  unsigned long long busy = 0;
  for (int i = 0; i < 8; ++i)
    if (i != 3 && i != 4) busy += v[i];  // all but idle and iowait
  return double(busy) / double(sysconf(_SC_CLK_TCK));
}

double own_cpu_s() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return double(r.ru_utime.tv_sec + r.ru_stime.tv_sec) + 1e-6 * double(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

struct Load {
  double own = 0, foreign = 0;  // CPUs kept busy during the timed loop
};
Load g_load;
Device g_device = Device::CPU;
int g_warmup = -1;  // -1: the case's default

// Waits for the device (a no-op on the CPU): a step's time includes its device work.
void sync_device() {
  if (g_device == Device::CUDA) device_runtime(Device::CUDA).synchronize();
}

// Per-step figures of a CUDA case, filled by time_it() and profile_step().
struct CudaStep {
  double launches = 0, host_waits = 0, copies = 0, graph_launches = 0;
  double busy = -1;  // device busy time / step wall time (graph cases; -1: not measured)
  size_t peak_reserved = 0;
  std::vector<cuda::OpTime> ops;
};
CudaStep g_cuda;

double peak_rss_mib() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return double(r.ru_maxrss) / 1024.0;  // Linux: KiB
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[size_t(p * double(v.size() - 1) + 0.5)];
}

void report(const std::string& key, const std::string& name, const std::vector<double>& ms, int batch,
            double gflop_per_img) {
  const double med = median(ms);
  if (g_device == Device::CUDA) {  // the results.jsonl row of scripts/gpu_check.sh
    std::string ops = "[";
    for (size_t i = 0; i < g_cuda.ops.size() && i < 12; ++i)
      ops += str(i ? "," : "", "{\"name\":\"", g_cuda.ops[i].op, "\",\"ms\":", g_cuda.ops[i].ms,
                 ",\"calls\":", g_cuda.ops[i].calls, "}");
    ops += "]";
    std::printf("{\"case\":\"%s\",\"name\":\"%s\",\"impl\":\"nimbus\",\"precision\":\"%s\",\"ok\":true,"
                "\"nimbus_ms\":%.3f,\"median_ms\":%.3f,\"p10_ms\":%.3f,\"p90_ms\":%.3f,\"iters\":%zu,"
                "\"img_per_s\":%.2f,\"flops\":%.6g,\"launches_per_step\":%.0f,\"host_waits_per_step\":%.0f,"
                "\"copies_per_step\":%.0f,\"graph_launches_per_step\":%.0f,\"gpu_busy_fraction\":%.4f,\"peak_mem_bytes\":%zu,\"ops\":%s,\"conv_kernels\":\"%s\",\"bn_fold\":%s,\"bn_prologue\":%s,\"status\":\"%s\"}\n",
                key.c_str(), name.c_str(), cuda::math_name(cuda::math()), med, med, percentile(ms, 0.1),
                percentile(ms, 0.9), ms.size(),
                batch / (med * 1e-3), batch * gflop_per_img * 1e9, g_cuda.launches, g_cuda.host_waits,
                g_cuda.copies, g_cuda.graph_launches, g_cuda.busy, g_cuda.peak_reserved, ops.c_str(),
                cuda::convs_on_wgmma() ? "wgmma" : "mma.sync", cuda::bn_fold() ? "true" : "false",
                bn_relu_prologue() ? "true" : "false", cuda_status().c_str());
    std::fflush(stdout);
    return;
  }
  std::printf("{\"case\":\"%s\",\"name\":\"%s\",\"median_ms\":%.2f,\"min_ms\":%.2f,\"iters\":%zu,"
              "\"img_per_s\":%.3f,\"gflops\":%.1f,\"peak_rss_mib\":%.1f,\"own_cpu\":%.2f,\"foreign_cpu\":%.2f}\n",
              key.c_str(), name.c_str(), med, *std::min_element(ms.begin(), ms.end()), ms.size(),
              batch / (med * 1e-3), batch * gflop_per_img / (med * 1e-3), peak_rss_mib(), g_load.own,
              g_load.foreign);
  std::fflush(stdout);
}

std::vector<double> time_it(const std::function<void()>& f, int warmup, int iters) {
  if (g_warmup >= 0) warmup = g_warmup;
  for (int i = 0; i < warmup; ++i) f(), sync_device();
  if (g_device == Device::CUDA) device_runtime(Device::CUDA).allocator->reset_peaks();
  std::vector<double> ms;
  const double b0 = machine_busy_s(), o0 = own_cpu_s();
  const auto w0 = Clock::now();
  for (int i = 0; i < iters; ++i) {
    auto t0 = Clock::now();
    const cuda::WorkCounts c0 = cuda::work_counts();
    f();
    if (i == 0 && g_device == Device::CUDA) {  // what one step launches and how often the host waits in it
      const cuda::WorkCounts c1 = cuda::work_counts();
      g_cuda.launches = double(c1.launches - c0.launches);
      g_cuda.host_waits = double(c1.host_waits - c0.host_waits);
      g_cuda.copies = double(c1.copies - c0.copies);
      g_cuda.graph_launches = double(c1.graph_launches - c0.graph_launches);
    }
    sync_device();
    ms.push_back(ms_since(t0));
  }
  const double wall = ms_since(w0) / 1e3, own = own_cpu_s() - o0;
  g_load = {own / wall, std::max(0.0, machine_busy_s() - b0 - own) / wall};
  if (g_device == Device::CUDA) {  // then one more step under the per-op profiler
    // The caching allocator's peak and the upload staging slots (device memory outside it).
    g_cuda.peak_reserved = device_runtime(Device::CUDA).allocator->stats().peak_reserved + cuda::staging_bytes();
    cuda::start_op_profile();
    f();
    g_cuda.ops = cuda::stop_op_profile();
  }
  return ms;
}

// ResNet-50 at 13x64x64: 0.7316 GFLOP/img forward, 2.111 training (perf-baseline.md).
constexpr double kResNet50Fwd64 = 0.7316, kResNet50Train64 = 2.111;

// A training step timed as it is (eager: every kernel launched by the host), or, with `graph`, run
// once, captured as a CUDA graph (engine/graph.h) and timed as replays (one launch a step).
void report_step(const std::string& key, const std::string& tag, const std::function<void()>& step, bool graph,
                 int warmup, int iters, int batch, double gflop_per_img) {
  if (!graph) return report(key, tag, time_it(step, warmup, iters), batch, gflop_per_img);
  step();
  sync_device();
  const DeviceGraph g = DeviceGraph::capture(Device::CUDA, step);
  const std::vector<double> ms = time_it([&] { g.replay(); }, warmup, iters);
  // Busy fraction: the device time of the step's ops (events around each op of one eager step, so
  // launch gaps between ops are not counted) over the replayed step's wall time.
  cuda::start_op_profile();
  step();
  g_cuda.ops = cuda::stop_op_profile();
  double busy_ms = 0;
  for (const cuda::OpTime& t : g_cuda.ops) busy_ms += t.ms;
  g_cuda.busy = busy_ms / median(ms);
  report(key, tag + " as a CUDA graph", ms, batch, gflop_per_img);
  g_cuda.busy = -1;
}

// ResNet-50 (13 in, 10 classes) at N x 13xHxH, on g_device: a training step (fwd + CE + bwd + Adam
// 1e-4), eager or replayed as a graph, or inference (eval, no grad).
void resnet50(const std::string& key, int N, bool train, int iters, bool graph = false) {
  Rng rng(0);
  ResNet net(resnet50_config(13, 10), rng);
  Tensor x = Tensor::randn({N, 13, 64, 64}, rng).to(g_device);
  const std::string tag = str("resnet50(13ch,10cls) ", train ? "train step" : "inference eval/no_grad", " b", N,
                              " 13x64x64", train ? " (fwd+CE+bwd+Adam)" : "");
  net.to(g_device);
  if (!train) {
    net.eval();
    auto f = [&] {
      NoGradGuard no_grad;
      net.forward(x);
    };
    report(key, tag, time_it(f, 2, iters ? iters : 10), N, kResNet50Fwd64);
    return;
  }
  net.train();
  Adam adam(net.named_parameters(), AdamOptions{1e-4});
  std::vector<float> labels(static_cast<size_t>(N));
  for (auto& l : labels) l = float(rng.below(10));
  Tensor y = Tensor::from_vector({N}, labels).to(g_device);
  auto step = [&] {
    adam.zero_grad();
    cross_entropy(net.forward(x), y).backward();
    adam.step();
  };
  report_step(key, tag, step, graph, 2, iters ? iters : 5, N, kResNet50Train64);
}

// The script's _dsen2cr(): analytic FLOPs, one warm-up step that also decides
// whether training is affordable (> 60 s: forward only), a second warm-up
// unless the first took > 10 s.
void dsen2cr(const std::string& key, int B, int F, int N, int H, bool train, int iters, bool graph = false) {
  const double fwd = 2.0 * 9 * H * H * (15.0 * F + 2.0 * B * F * F + 13.0 * F) / 1e9;
  const double trn = 3 * fwd - 2.0 * 9 * H * H * 15.0 * F / 1e9;
  const int default_iters = F == 64 ? (train ? 10 : 20) : 5;
  const bool chosen = iters > 0;  // else the default; a paper-size train step also looks at its first step
  iters = chosen ? iters : default_iters;
  Rng rng(0);
  DSen2CR net(DSen2CRConfig{B, F, true}, rng);
  Tensor s2 = Tensor::randn({N, 13, H, H}, rng).to(g_device), s1 = Tensor::randn({N, 2, H, H}, rng).to(g_device);
  Tensor target = Tensor::randn({N, 13, H, H}, rng).to(g_device);
  net.to(g_device);
  const std::string tag = "dsen2cr(B=" + std::to_string(B) + ",F=" + std::to_string(F) + ") b" + std::to_string(N) +
                          " 15x" + std::to_string(H) + "x" + std::to_string(H);
  auto infer = [&] {
    NoGradGuard no_grad;
    net.forward(s2, s1);
  };
  if (!train) {
    net.eval();
    report(key, tag + " inference (no_grad)", time_it(infer, 1, iters), N, fwd);
    return;
  }
  net.train();
  Adam adam(net.named_parameters(), AdamOptions{1e-4});
  auto step = [&] {
    adam.zero_grad();
    l1_loss(net.forward(s2, s1), target).backward();
    adam.step();
  };
  auto t0 = Clock::now();
  step();
  sync_device();
  const double first_s = ms_since(t0) / 1e3;
  if (first_s > 60) {
    net.eval();
    report(key, tag + " FORWARD ONLY (train step > 60 s)", time_it(infer, 1, iters), N, fwd);
    return;
  }
  // The paper's size: 5 timed steps (a median, not the mean of two) unless the first took over 3 s (the
  // fp32 kernels of the first device run: 7 s a step), where 2 keep the case inside its time limit.
  if (!chosen && F == 256) iters = first_s > 3 ? 2 : 5;
  report_step(key, tag + " train step (fwd+L1+bwd+Adam)", step, graph, first_s > 10 ? 0 : 1, iters, N, trn);
}

struct Case {
  const char* key;
  std::function<void(int)> run;
};

// The CPU cases (PyTorch's CPU reference script's) and the GPU cases (--device cuda).
const std::vector<Case>& cpu_cases() {
  static const std::vector<Case> all = {
      {"resnet50_train", [](int it) { resnet50("resnet50_train", 32, true, it); }},
      {"resnet50_infer_b32_64", [](int it) { resnet50("resnet50_infer_b32_64", 32, false, it); }},
      {"dsen2cr_train_B4_F64_b8_64", [](int it) { dsen2cr("dsen2cr_train_B4_F64_b8_64", 4, 64, 8, 64, true, it); }},
      {"dsen2cr_train_B16_F256_b1_128",
       [](int it) { dsen2cr("dsen2cr_train_B16_F256_b1_128", 16, 256, 1, 128, true, it); }},
      {"dsen2cr_infer_B16_F256_b1_128",
       [](int it) { dsen2cr("dsen2cr_infer_B16_F256_b1_128", 16, 256, 1, 128, false, it); }},
  };
  return all;
}

const std::vector<Case>& cuda_cases() {
  static const std::vector<Case> all = {
      {"resnet50_train_b256_64", [](int it) { resnet50("resnet50_train_b256_64", 256, true, it ? it : 10); }},
      {"resnet50_train_b256_64_graph",
       [](int it) { resnet50("resnet50_train_b256_64_graph", 256, true, it ? it : 10, true); }},
      {"resnet50_train_b256_64_nofold",  // batch norm's statistics kernels instead of the conv epilogue's
       [](int it) {
         const cuda::BnFoldScope no_fold(false);
         resnet50("resnet50_train_b256_64_nofold", 256, true, it ? it : 10);
       }},
      {"resnet50_train_b256_64_prologue",  // each batch norm + ReLU in the next convolution's prologue
       [](int it) {
         const BnReluPrologueScope prologue(true);
         resnet50("resnet50_train_b256_64_prologue", 256, true, it ? it : 10);
       }},
      {"resnet50_infer_b256_64", [](int it) { resnet50("resnet50_infer_b256_64", 256, false, it ? it : 20); }},
      {"dsen2cr_train_B16F256_b16_128",
       [](int it) { dsen2cr("dsen2cr_train_B16F256_b16_128", 16, 256, 16, 128, true, it); }},
      {"dsen2cr_train_B16F256_b16_128_graph",
       [](int it) { dsen2cr("dsen2cr_train_B16F256_b16_128_graph", 16, 256, 16, 128, true, it, true); }},
      {"dsen2cr_infer_B16F256_b1_256",
       [](int it) { dsen2cr("dsen2cr_infer_B16F256_b1_256", 16, 256, 1, 256, false, it ? it : 5); }},
  };
  return all;
}
}  // namespace

int main(int argc, char** argv) {
  std::string want;
  int iters = 0;  // 0: the script's default per case
  bool list = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--cases" && i + 1 < argc) want = argv[++i];
    else if (a == "--iters" && i + 1 < argc) iters = std::max(1, std::atoi(argv[++i]));
    else if (a == "--warmup" && i + 1 < argc) g_warmup = std::max(0, std::atoi(argv[++i]));
    else if (a == "--device" && i + 1 < argc) {
      try {
        g_device = parse_device(argv[++i]);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_models: %s\n", e.what());
        return 2;
      }
    } else if (a == "--list") list = true;
    else {
      std::fprintf(stderr, "usage: %s [--device cpu|cuda] [--cases a,b,...] [--iters N] [--warmup N] [--list]\n",
                   argv[0]);
      return 2;
    }
  }
  const std::vector<Case>& cases = g_device == Device::CUDA ? cuda_cases() : cpu_cases();
  if (list) {
    for (const Case& c : cases) std::printf("%s\n", c.key);
    return 0;
  }
  int failed = 0, ran = 0;
  for (const Case& c : cases) {
    if (!want.empty() && ("," + want + ",").find(std::string(",") + c.key + ",") == std::string::npos) continue;
    ++ran;
    std::fflush(stdout);
    pid_t pid = fork();  // own process per case: its own peak RSS, no allocator cache carried over
    if (pid == 0) {
      try {
        // In the child: CUDA must not be initialised before fork().
        if (g_device == Device::CUDA && !cuda::register_cuda_backend()) {
          std::fprintf(stderr, "bench_models: --device cuda: %s\n", cuda_status().c_str());
          _exit(77);
        }
        c.run(iters);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_models: %s: %s\n", c.key, e.what());
        _exit(1);
      }
      _exit(0);
    }
    int status = 0;
    const bool waited = pid > 0 && waitpid(pid, &status, 0) == pid;
    if (waited && WIFEXITED(status) && WEXITSTATUS(status) == 77) return 77;  // no CUDA device: skipped
    if (!waited || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "bench_models: case %s failed\n", c.key);
      ++failed;
    }
  }
  if (!ran) {
    std::fprintf(stderr, "bench_models: no case matches --cases %s (see --list)\n", want.c_str());
    return 2;
  }
  return failed ? 1 : 0;
}
