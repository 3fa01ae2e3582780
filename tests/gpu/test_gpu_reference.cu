/* test_gpu_reference.cu: on a real GPU, our hand-written GEMM and convolution kernels against cuBLAS
 * and cuDNN (kernels/cuda/real/reference.h), and one training step of a tiny ResNet with each
 * NIMBUS_CUDA_REFERENCE setting (none, cublas, cudnn) against the others.
 *
 * Built only with the real backend and cuBLAS/cuDNN (tests/gpu/CMakeLists.txt). Without a usable
 * device it prints "skipped: no CUDA device (<cuda_status()>)" and exits 77 (ctest: skipped).
 * Otherwise one line per comparison and exit 0 (all within tolerance) or 1.
 *
 * Tolerance: both sides are fp32 sums of `terms` products in different orders (and cuDNN may pick
 * Winograd or FFT algorithms), so the difference grows like sqrt(terms) times the size of the
 * result. Kernels: max |ours - ref| <= 1e-6 + 1e-5 * sqrt(terms) * max |ref|; a training step,
 * per tensor: 1e-6 + 1e-4 * max |ref| (as test_emu's step tests). An indexing bug gives errors of
 * the size of the result. On an H200 (2026-12-04, docs/gpu-results.md) every comparison passed.
 * Everything here runs in fp32 math (backend.h set_math): the plain kernels.
 */
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend.h"
#include "engine/ops/loss.h"
#include "engine/optim/sgd.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "backends/cuda/backend.h"
#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/real/reference.h"
#include "kernels/cuda/stream.h"
#include "models/resnet.h"

using namespace nimbus;
using cpu::ConvGeom;

namespace {

constexpr int kSkipped = 77;
int failures = 0;

// One comparison line; counts a failure.
void compare(const std::string& what, const std::vector<float>& got, const std::vector<float>& ref, double terms,
             double rel = 1e-5, bool print_ok = true) {
  double worst = 0, scale = 0;
  for (float v : ref) scale = std::max(scale, double(std::fabs(v)));
  bool same_size = got.size() == ref.size();
  for (size_t i = 0; same_size && i < got.size(); ++i) {
    const double d = std::fabs(double(got[i]) - double(ref[i]));
    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
  }
  const double tol = 1e-6 + rel * std::sqrt(std::max(terms, 1.0)) * scale;
  const bool ok = same_size && worst <= tol;
  if (!ok || print_ok)
    std::printf("%-4s %s: max diff %.3g, tolerance %.3g\n", ok ? "OK" : "FAIL", what.c_str(), worst, tol);
  if (!ok) ++failures;
}

std::vector<float> random_vector(size_t n, uint64_t seed) {
  Rng rng(seed);
  return Tensor::uniform({int64_t(n)}, rng, -1.0f, 1.0f).to_vector();
}

Tensor device_tensor(size_t n, uint64_t seed) {
  return Tensor::from_vector({int64_t(n)}, random_vector(n, seed), Device::CUDA);
}

// ---- GEMM: cuda::gemm_batched (tiles 16 and 64) vs cublasSgemm[StridedBatched] ------------------
void gemm_case(int64_t M, int64_t N, int64_t K, bool ta, bool tb, int64_t batch) {
  const int64_t lda = ta ? M : K, ldb = tb ? K : N, sa = (ta ? K : M) * lda, sb = (tb ? N : K) * ldb;
  const Tensor A = device_tensor(size_t(sa * batch), 1), B = device_tensor(size_t(sb * batch), 2);
  Tensor C_ref = Tensor::full({batch * M * N}, NAN, Device::CUDA);  // beta 0: C must not be read
  cuda::ref::cublas_gemm_batched(ta, tb, M, N, K, 1.5f, A.data(), lda, sa, B.data(), ldb, sb, 0.0f, C_ref.data(), N,
                                 M * N, batch);
  const std::vector<float> want = C_ref.to_vector();
  for (int tile : {16, 64}) {
    Tensor C = Tensor::full({batch * M * N}, NAN, Device::CUDA);
    cuda::gemm_batched(ta, tb, M, N, K, 1.5f, A.data(), lda, sa, B.data(), ldb, sb, 0.0f, C.data(), N, M * N, batch,
                       tile);
    char what[128];
    std::snprintf(what, sizeof what, "gemm %ldx%ldx%ld %c%c batch %ld, tile %d vs cuBLAS", long(M), long(N), long(K),
                  ta ? 'T' : 'N', tb ? 'T' : 'N', long(batch), tile);
    compare(what, C.to_vector(), want, double(K));
  }
}

// ---- conv2d: cuda::conv2d_forward/backward vs cuDNN forward, backward-data, backward-filter --------
void conv_case(const ConvGeom& g) {
  const int64_t nx = g.N * g.C * g.H * g.W, nw = g.K * g.C * g.R * g.S, ny = g.N * g.K * g.P() * g.Q();
  const Tensor x = device_tensor(size_t(nx), 3), w = device_tensor(size_t(nw), 4), dy = device_tensor(size_t(ny), 5);
  char geom[128];
  std::snprintf(geom, sizeof geom, "N%ld C%ld %ldx%ld -> K%ld %ldx%ld stride %ld pad %ld", long(g.N), long(g.C),
                long(g.H), long(g.W), long(g.K), long(g.R), long(g.S), long(g.stride), long(g.pad));
  // cuDNN
  cuda::ref::CudnnConv plan(g);
  Tensor ws_ref = Tensor::empty({int64_t(plan.workspace_bytes() / sizeof(float)) + 1}, Device::CUDA);
  Tensor y_ref = Tensor::empty({ny}, Device::CUDA), dx_ref = Tensor::empty({nx}, Device::CUDA),
               dw_ref = Tensor::empty({nw}, Device::CUDA);
  plan.forward(y_ref.data(), x.data(), w.data(), ws_ref.data());
  plan.backward_data(dx_ref.data(), dy.data(), w.data(), ws_ref.data());
  plan.backward_filter(dw_ref.data(), dy.data(), x.data(), ws_ref.data());
  // ours
  Tensor ws = Tensor::empty({cuda::conv2d_workspace(g) + 1}, Device::CUDA);
  Tensor y = Tensor::empty({ny}, Device::CUDA), dx = Tensor::empty({nx}, Device::CUDA),
               dw = Tensor::empty({nw}, Device::CUDA);
  cuda::conv2d_forward(y.data(), x.data(), w.data(), nullptr, g, ws.data());
  cuda::conv2d_backward(dx.data(), dw.data(), nullptr, dy.data(), x.data(), w.data(), g, ws.data());
  const double taps = double(g.R * g.S);
  compare(std::string("conv forward ") + geom, y.to_vector(), y_ref.to_vector(), double(g.C) * taps);
  compare(std::string("conv backward-data ") + geom, dx.to_vector(), dx_ref.to_vector(), double(g.K) * taps);
  compare(std::string("conv backward-weight ") + geom, dw.to_vector(), dw_ref.to_vector(),
          double(g.N * g.P() * g.Q()));
}

// ---- one training step of a tiny bottleneck ResNet (7x7 stem, 1x1 and strided 3x3 convs, fc) -----
// Returns the loss, every gradient and every parameter/buffer after an SGD step, named, on the CPU.
using Named = std::vector<std::pair<std::string, Tensor>>;
Named resnet_step(Device d) {
  const models::ResNetConfig cfg{
      .block = models::BlockType::Bottleneck, .blocks = {1, 1, 1, 1}, .width = 8, .in_channels = 13, .classes = 10};
  Rng model_rng(11), data_rng(3);
  models::ResNet m(cfg, model_rng);
  const Tensor x = Tensor::randn({4, 13, 64, 64}, data_rng), y = Tensor::from_vector({4}, {4, 1, 0, 9});
  m.to(d);
  m.train();
  SGD opt(m.named_parameters(), SGDOptions{0.1, 0.9});
  Tensor loss = cross_entropy(m.forward(x.to(d)), y.to(d));
  loss.backward();
  opt.step();
  Named out{{"loss", loss.to(Device::CPU)}};
  for (const auto& [name, t] : m.named_parameters()) out.emplace_back("grad of " + name, t.grad().to(Device::CPU));
  for (const auto& [name, t] : m.state_dict()) out.emplace_back(name + " after the step", t.to(Device::CPU));
  return out;
}

void compare_steps(const std::string& what, const Named& got, const Named& want) {
  if (got.size() != want.size()) {
    std::printf("FAIL %s: %zu tensors vs %zu\n", what.c_str(), got.size(), want.size());
    ++failures;
    return;
  }
  // Whole-network tolerance: errors pass through batch norms and ~20 layers; 1e-4 of each tensor's scale.
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const int before = failures;
    compare(what + ": " + want[i].first, got[i].second.to_vector(), want[i].second.to_vector(), 1.0, 1e-4, false);
    bad += failures - before;
  }
  std::printf("%-4s %s: %zu tensors (loss, gradients, parameters and buffers after the step)\n",
              bad ? "FAIL" : "OK", what.c_str(), got.size());
}

}  // namespace

int main() {
  try {
    if (!cuda::register_cuda_backend()) {
      std::printf("skipped: no CUDA device (%s)\n", cuda_status().c_str());
      return kSkipped;
    }
    std::printf("%s\n", cuda_status().c_str());
    cuda::set_reference(cuda::Reference::None);  // our kernels, whatever NIMBUS_CUDA_REFERENCE says
    // fp32 math: our plain kernels, to the float32 bounds above. The tensor-core kernels (TF32, bf16)
    // are held to float64 on their rounded operands by test_cuda_real (test_cuda_tensor_core_ops.cpp).
    cuda::set_math(cuda::Math::Fp32);

    // Odd sizes, all transposes, a vector-like and a long-K case, and batched with a shared A.
    for (int t = 0; t < 4; ++t) gemm_case(67, 45, 33, t & 1, t & 2, 1);
    gemm_case(130, 70, 19, false, true, 1);
    gemm_case(1, 257, 129, true, false, 1);
    gemm_case(257, 129, 511, false, false, 1);
    gemm_case(33, 100, 64, false, false, 3);

    // Odd 3x3, stride 2, 1x1 (im2col-free) and 1x1 stride 2, the 7x7 stride-2 stem, a wider 3x3.
    conv_case(ConvGeom{2, 3, 9, 7, 5, 3, 3, 1, 1});
    conv_case(ConvGeom{1, 4, 11, 10, 3, 3, 3, 2, 1});
    conv_case(ConvGeom{2, 6, 5, 5, 7, 1, 1, 1, 0});
    conv_case(ConvGeom{2, 8, 9, 9, 6, 1, 1, 2, 0});
    conv_case(ConvGeom{2, 3, 23, 21, 8, 7, 7, 2, 3});
    conv_case(ConvGeom{4, 32, 17, 17, 48, 3, 3, 1, 1});

    // The same training step through the engine with each reference setting.
    const Named cpu = resnet_step(Device::CPU), ours = resnet_step(Device::CUDA);
    cuda::set_reference(cuda::Reference::Cublas);
    const Named cublas = resnet_step(Device::CUDA);
    cuda::set_reference(cuda::Reference::Cudnn);
    const Named cudnn = resnet_step(Device::CUDA);
    cuda::set_reference(cuda::Reference::None);
    compare_steps("resnet step: our kernels vs the CPU backend", ours, cpu);
    compare_steps("resnet step: NIMBUS_CUDA_REFERENCE=cublas vs our kernels", cublas, ours);
    compare_steps("resnet step: NIMBUS_CUDA_REFERENCE=cudnn vs our kernels", cudnn, ours);
  } catch (const std::exception& e) {
    std::printf("FAIL test_gpu_reference: %s\n", e.what());
    return 1;
  }
  std::printf("%s\n", failures ? "test_gpu_reference: FAILED" : "test_gpu_reference: all comparisons passed");
  return failures ? 1 : 0;
}
