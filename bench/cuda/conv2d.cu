/* bench/cuda/conv2d.cu: numbered convolution-forward kernels (llm.c dev/cuda style), each checked
 * against the CPU reference (kernels/cpu/conv2d.h conv2d_forward_ref, in double), and on a GPU
 * timed against cuDNN.
 *
 *   version 1  direct: one thread per output y[n,k,p,q], the C*R*S loop from global memory
 *   version 2  the engine's kernel: im2col + the shared-memory tiled SGEMM, per image
 *              (kernels/cuda/conv2d.cu)
 *
 * Usage: bench_cuda_conv2d [version] [N C H W K R stride pad]. Under the emulator (g++ build) it only
 * validates, on small odd shapes. Built by nvcc (docs/cuda-emulator.md, "Benchmarks on a GPU") it
 * then times a DSen2-CR 3x3 conv (8x256x64x64 -> 256) by default and prints ms, GFLOP/s and the
 * fraction of cuDNN's speed (the first fp32 algorithm of cuDNN's heuristic ranking: FMA math, no
 * TF32, workspace allowed; kernels/cuda/real/reference.h, shared with the GPU test).
 */
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/cpu/conv2d.h"
#include "bench/cuda/bench_util.cuh"
#include "kernels/cuda/compat.h"
#include "kernels/cuda/conv2d.h"
#ifdef NIMBUS_BENCH_CUDNN
#include "kernels/cuda/real/reference.h"
#endif

using namespace nimbus;
using cpu::ConvGeom;

struct Dims {
  int N, C, H, W, K, R, S, P, Q, stride, pad;
};

// ---- version 1: direct --------------------------------------------------------------------------
__global__ void conv_direct_kernel(float* y, const float* x, const float* w, Dims d) {
  const long n_out = long(d.N) * d.K * d.P * d.Q;
  for (long i = long(blockIdx.x) * blockDim.x + threadIdx.x; i < n_out; i += long(gridDim.x) * blockDim.x) {
    const int q = int(i % d.Q), p = int((i / d.Q) % d.P), k = int((i / (long(d.Q) * d.P)) % d.K),
              n = int(i / (long(d.Q) * d.P * d.K));
    float acc = 0.0f;
    for (int c = 0; c < d.C; ++c)
      for (int r = 0; r < d.R; ++r) {
        const int h = p * d.stride - d.pad + r;
        if (h < 0 || h >= d.H) continue;
        for (int s = 0; s < d.S; ++s) {
          const int ww = q * d.stride - d.pad + s;
          if (ww < 0 || ww >= d.W) continue;
          acc += x[((long(n) * d.C + c) * d.H + h) * d.W + ww] * w[((long(k) * d.C + c) * d.R + r) * d.S + s];
        }
      }
    y[i] = acc;
  }
}

void conv1(float* y, const float* x, const float* w, const ConvGeom& g, float*) {
  const Dims d{int(g.N), int(g.C), int(g.H), int(g.W), int(g.K), int(g.R), int(g.S), int(g.P()), int(g.Q()),
               int(g.stride), int(g.pad)};
  const int64_t n = g.N * g.K * g.P() * g.Q();
  launch(conv_direct_kernel, cuda::grid_for(n, 256, 65535), 256, 0, nullptr, y, x, w, d);
  cuda::check_launch("conv1");
}

// ---- version 2: im2col + tiled SGEMM (the engine's) ---------------------------------------------
void conv2(float* y, const float* x, const float* w, const ConvGeom& g, float* ws) {
  cuda::conv2d_forward(y, x, w, nullptr, g, ws);
}

using ConvFn = void (*)(float*, const float*, const float*, const ConvGeom&, float*);
const ConvFn kVersions[] = {nullptr, conv1, conv2};
constexpr int kLast = 2;

// ---- driver -------------------------------------------------------------------------------------
struct Problem {
  ConvGeom g;
  std::vector<float> x, w;
  float *dx = nullptr, *dw = nullptr, *dy = nullptr, *ws = nullptr;
  explicit Problem(const ConvGeom& geom) : g(geom) {
    x.resize(size_t(g.N * g.C * g.H * g.W));
    w.resize(size_t(g.K * g.C * g.R * g.S));
    for (size_t i = 0; i < x.size(); ++i) x[i] = float((i * 37) % 17) / 8.0f - 1.0f;
    for (size_t i = 0; i < w.size(); ++i) w[i] = float((i * 53) % 19) / 9.0f - 1.0f;
    dx = upload(x), dw = upload(w);
    cudaMalloc(&dy, sizeof(float) * size_t(g.N * g.K * g.P() * g.Q()));
    cudaMalloc(&ws, sizeof(float) * size_t(cuda::conv2d_workspace(g) + 1));
  }
  ~Problem() { cudaFree(dx), cudaFree(dw), cudaFree(dy), cudaFree(ws); }
};

bool validate(int v, const ConvGeom& g) {
  Problem pr(g);
  std::vector<double> ref(size_t(g.N * g.K * g.P() * g.Q()));
  std::vector<double> xd(pr.x.begin(), pr.x.end()), wd(pr.w.begin(), pr.w.end());
  cpu::conv2d_forward_ref<double>(ref.data(), xd.data(), wd.data(), nullptr, g);
  kVersions[v](pr.dy, pr.dx, pr.dw, g, pr.ws);
  std::vector<float> y(ref.size());
  cudaMemcpy(y.data(), pr.dy, y.size() * sizeof(float), cudaMemcpyDeviceToHost);
  double worst = 0;
  for (size_t i = 0; i < y.size(); ++i)
    worst = std::fmax(worst, std::fabs(double(y[i]) - ref[i]) / (1e-4 + 1e-4 * std::fabs(ref[i])));
  std::printf("version %d: N%ld C%ld %ldx%ld K%ld %ldx%ld s%ld p%ld %s (worst error %.3g of tolerance)\n", v, long(g.N),
              long(g.C), long(g.H), long(g.W), long(g.K), long(g.R), long(g.S), long(g.stride), long(g.pad),
              worst <= 1 ? "OK" : "WRONG", worst);
  return worst <= 1;
}

#ifdef __CUDACC__
#ifdef NIMBUS_BENCH_CUDNN
float cudnn_ms(Problem& pr) {
  const cuda::ref::CudnnConv conv(pr.g);
  void* work = nullptr;
  if (conv.workspace_bytes()) cudaMalloc(&work, conv.workspace_bytes());
  const float ms = time_ms([&] { conv.forward(pr.dy, pr.dx, pr.dw, work); }, 10);
  cudaFree(work);
  return ms;
}
#endif

void benchmark(int v, const ConvGeom& g) {
  Problem pr(g);
  const double flop = 2.0 * double(g.N * g.K * g.P() * g.Q()) * double(g.C * g.R * g.S);
  const float ms = time_ms([&] { kVersions[v](pr.dy, pr.dx, pr.dw, g, pr.ws); }, 10);
  std::printf("version %d: %.3f ms  %.0f GFLOP/s", v, ms, flop / ms / 1e6);
#ifdef NIMBUS_BENCH_CUDNN
  const float ref = cudnn_ms(pr);
  std::printf("  (cuDNN %.3f ms, %.0f GFLOP/s; %.0f%% of cuDNN)", ref, flop / ref / 1e6, 100.0 * ref / ms);
#endif
  std::printf("\n");
}
#endif

int main(int argc, char** argv) {
  const int first = argc > 1 ? std::atoi(argv[1]) : 1, last = argc > 1 ? first : kLast;
  if (first < 1 || last > kLast) {
    std::fprintf(stderr, "usage: %s [version 1-%d] [N C H W K R stride pad]\n", argv[0], kLast);
    return 2;
  }
  bool ok = true;
  const ConvGeom small[] = {{2, 3, 9, 7, 5, 3, 3, 1, 1}, {1, 4, 11, 10, 3, 3, 3, 2, 1}, {2, 6, 5, 5, 7, 1, 1, 1, 0}};
  for (int v = first; v <= last; ++v)
    for (const ConvGeom& g : small) ok = validate(v, g) && ok;
#ifdef __CUDACC__
  ConvGeom g{8, 256, 64, 64, 256, 3, 3, 1, 1};
  if (argc > 9) {
    const int64_t a[8] = {atol(argv[2]), atol(argv[3]), atol(argv[4]), atol(argv[5]),
                          atol(argv[6]), atol(argv[7]), atol(argv[8]), atol(argv[9])};
    g = ConvGeom{a[0], a[1], a[2], a[3], a[4], a[5], a[5], a[6], a[7]};
  }
  for (int v = first; v <= last; ++v) benchmark(v, g);
#endif
  return ok ? 0 : 1;
}
