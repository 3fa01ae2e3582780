/* test_cuda_reference_switch.cpp: the A/B switch of the CUDA backend (backend.h set_reference,
 * NIMBUS_CUDA_REFERENCE) as far as it can be checked without a GPU.
 *
 * cuBLAS/cuDNN exist only in the real backend (tests/gpu/ compares them with our kernels on a GPU).
 * Here: the names parse, asking for a library this build lacks is an error rather than silently
 * ignored, and the GEMM routing hook that NIMBUS_CUDA_REFERENCE=cublas installs really carries every
 * GEMM of linear layers and convolutions (a CPU GEMM plugged in through the hook, on the emulator's
 * host-addressable device memory, must see calls and give the CPU backend's results).
 */
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "engine/backend.h"
#include "engine/ops/conv.h"
#include "engine/ops/linear.h"
#include "engine/ops/loss.h"
#include "engine/ops/shape_ops.h"
#include "engine/random.h"
#include "kernels/cpu/gemm.h"
#include "backends/cuda/backend.h"
#include "kernels/cuda/gemm.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {

int64_t hook_calls = 0;

// gemm_batched's contract on the CPU (emulated device pointers are host memory).
void cpu_gemm_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                      int64_t sa, const float* B, int64_t ldb, int64_t sb, float beta, float* C, int64_t ldc,
                      int64_t sc, int64_t batch) {
  ++hook_calls;
  for (int64_t i = 0; i < batch; ++i)
    cpu::gemm_ref<float>(ta, tb, M, N, K, alpha, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc);
}

// conv (stride 2, and 1x1) -> linear -> MSE on device d: loss and all gradients, on the CPU.
std::vector<Tensor> step(Device d) {
  Rng rng(5);
  auto leaf = [&](Shape s) { return Tensor::randn(s, rng).to(d).set_requires_grad(true); };
  Tensor x = leaf({2, 3, 9, 8}), w = leaf({4, 3, 3, 3}), w1 = leaf({6, 4, 1, 1}), fw = leaf({3, 6 * 5 * 4}),
         fb = leaf({3});
  Tensor h = conv2d(conv2d(x, w, Tensor(), 2, 1), w1, Tensor(), 1, 0);  // (2,6,5,4)
  Tensor loss = mse_loss(linear(flatten(h, 1), fw, fb), Tensor::zeros({2, 3}, d));
  loss.backward();
  std::vector<Tensor> out{loss.to(Device::CPU)};
  for (const Tensor& t : {x, w, w1, fw, fb}) out.push_back(t.grad().to(Device::CPU));
  return out;
}

}  // namespace

TEST_CASE("cuda backend: the GEMM reference hook carries every GEMM of linear and conv2d") {
  REQUIRE(cuda::register_cuda_backend());
  const bool hook_off = cuda::gemm_reference() == nullptr;
  REQUIRE(hook_off);  // never on by default
  // With the hook set, float32 convolutions take the im2col + GEMM path whatever the math mode; the
  // last comparison (our kernels, no hook) is in fp32 math, to the float32 bound.
  const cuda::MathScope fp32(cuda::Math::Fp32);
  const std::vector<Tensor> want = step(Device::CPU);
  hook_calls = 0;
  cuda::set_gemm_reference(cpu_gemm_batched);
  std::vector<Tensor> got;
  try {
    got = step(Device::CUDA);
  } catch (...) {
    cuda::set_gemm_reference(nullptr);
    throw;
  }
  cuda::set_gemm_reference(nullptr);
  // forward: 2 convs + 1 linear; backward: dx/dw of 2 convs (dw per image: 2 each), dx/dw of linear
  CHECK(hook_calls >= 3 + 2 * 3 + 2);
  const char* names[] = {"loss", "dx", "dw", "dw1", "dfw", "dfb"};
  // atol grows with each tensor's largest |value|: dw's elements are sums of 40 products whose
  // magnitudes add up to ~1000x the result (element 47: sum |terms| 2330, value 1.3504646 in double),
  // so float rounding alone puts them 2e-4 apart (the plain hook GEMM 1.35071, OpenBLAS 1.35046 with its
  // Haswell kernel, 1.35068 with its Sandybridge kernel) while max |dw| is 1881. A GEMM the hook missed
  // would differ by O(scale), far above this.
  for (size_t i = 0; i < want.size(); ++i) {
    double scale = 0;
    for (float v : want[i].to_vector()) scale = std::max(scale, double(std::fabs(v)));
    check_close(got[i], want[i], 1e-5 + 1e-6 * scale, 1e-4, names[i]);
  }
  // And off again: our kernels, no hook calls.
  const int64_t calls = hook_calls;
  const std::vector<Tensor> ours = step(Device::CUDA);
  CHECK(hook_calls == calls);
  check_close(ours[0], want[0], 1e-5, 1e-5, "loss with our kernels");
}

TEST_CASE("cuda backend: cuBLAS/cuDNN references are refused where the build has none") {
  REQUIRE(cuda::register_cuda_backend());
  CHECK_FALSE(cuda::references_available());  // the emulated backend never has them
  CHECK(cuda::parse_reference("none") == cuda::Reference::None);
  CHECK(cuda::parse_reference("cublas") == cuda::Reference::Cublas);
  CHECK(cuda::parse_reference("cudnn") == cuda::Reference::Cudnn);
  CHECK_THROWS_WITH_AS(cuda::parse_reference("cuBLAS"),
                       doctest::Contains("NIMBUS_CUDA_REFERENCE=cuBLAS: expected none, cublas or cudnn"), Error);
  const std::string status = cuda_status();
  CHECK_THROWS_WITH_AS(cuda::set_reference(cuda::Reference::Cudnn), doctest::Contains("has no cuBLAS/cuDNN"), Error);
  CHECK(cuda::reference() == cuda::Reference::None);
  cuda::set_reference(cuda::Reference::None);
  CHECK(cuda_status() == status);
}
