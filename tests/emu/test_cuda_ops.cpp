/* test_cuda_ops.cpp: the CUDA backend (kernels/cuda/{gemm,conv2d,batchnorm,pool,loss,optim,copy}.cu and the
 * engine wiring) run by the emulator, against the CPU kernels.
 *
 * Kernel tests: odd sizes, two block (or tile) sizes, forward / reversed / shuffled order; outputs must
 * be bitwise identical across orders (no float atomics anywhere in these kernels) and agree with the
 * CPU reference run in double within float tolerance. Engine tests: the same ops and a training step
 * of a tiny ResNet and a tiny DSen2-CR on Device::CUDA equal the CPU backend within tolerance.
 */
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "engine/autocast.h"
#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/nn/layers.h"
#include "engine/ops/activation.h"
#include "engine/ops/arith.h"
#include "engine/ops/batchnorm.h"
#include "engine/ops/cast.h"
#include "engine/ops/conv.h"
#include "engine/ops/linear.h"
#include "engine/ops/loss.h"
#include "engine/ops/pool.h"
#include "engine/ops/shape_ops.h"
#include "engine/optim/adam.h"
#include "engine/optim/clip_grad.h"
#include "engine/optim/nadam.h"
#include "engine/optim/sgd.h"
#include "engine/random.h"
#include "kernels/cpu/batchnorm.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/optim.h"
#include "kernels/cpu/pool.h"
#include "backends/cuda/backend.h"
#include "kernels/cuda/batchnorm.h"
#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/conv2d_wgmma.h"  // wgmma_available
#include "kernels/cuda/copy.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/loss.h"
#include "kernels/cuda/optim.h"
#include "kernels/cuda/stream.h"
#include "kernels/cuda/pool.h"
#include "models/dsen2cr.h"
#include "models/resnet.h"
#include "tests/common/check.h"
#include "tests/common/clip_grad_fixture.h"
#include "tests/emu/emu_util.h"

using namespace nimbus;
using namespace nimbus::test;
using emu::Order;

namespace {

std::vector<float> rand_floats(size_t n, uint64_t seed, double lo = -1, double hi = 1) {
  Rng rng(seed);
  return to_float(random_vec(n, rng, lo, hi));
}

std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// Runs f (which launches kernels and returns their downloaded output) in every order; the
// outputs must be bitwise equal. Returns the forward-order output.
std::vector<float> same_in_all_orders(const std::string& what, const std::function<std::vector<float>()>& f) {
  std::vector<float> first;
  for (Order o : kAllOrders) {
    ScopedOrder so(o, 5);
    std::vector<float> got = f();
    if (first.empty()) {
      first = got;
      continue;
    }
    REQUIRE(got.size() == first.size());
    CHECK_MESSAGE(std::memcmp(got.data(), first.data(), got.size() * sizeof(float)) == 0, what, ": order ",
                  emu::order_name(o), " differs from forward order");
  }
  return first;
}

void require_backend() { REQUIRE(cuda::register_cuda_backend()); }

TEST_CASE("cuda backend: registration, status sentence, tensors and copies") {
  require_backend();
  CHECK(device_available(Device::CUDA));
  CHECK(cuda_status().find(kOnEmulator ? "emulator" : "CUDA backend: ") != std::string::npos);
  std::vector<float> v = rand_floats(37, 1);
  Tensor d = Tensor::from_vector({37}, v, Device::CUDA);
  CHECK(d.device() == Device::CUDA);
  CHECK(d.to_vector() == v);
  CHECK(d.clone().to(Device::CPU).to_vector() == v);
  Tensor z = Tensor::zeros({5, 3}, Device::CUDA);
  CHECK(z.to_vector() == std::vector<float>(15, 0.0f));
  Tensor h = Tensor::zeros({37});
  h.copy_(d);
  CHECK(h.to_vector() == v);
  CHECK_THROWS_WITH_AS(add(d, Tensor::zeros({37})), doctest::Contains("devices differ"), Error);
  Tensor x = Tensor::zeros({1, 2, 4, 4}, Device::CUDA);
  CHECK_THROWS_WITH_AS(conv2d(x, Tensor::zeros({3, 2, 3, 3}), Tensor(), 1, 1),
                       doctest::Contains("are on different devices"), Error);
  CHECK_THROWS_WITH_AS(
      cross_entropy(Tensor::zeros({2, 3}, Device::CUDA), Tensor::zeros({2})),
      doctest::Contains("cross_entropy: logits (2,3) cuda and target (2) cpu are on different devices"), Error);
  // A device-side target is checked in the kernels, without a host wait: a NaN loss, not an Error
  // (tests/emu/test_cuda_work_counts.cpp; a host-side one is an Error naming the row).
  CHECK(std::isnan(cross_entropy(Tensor::zeros({2, 3}, Device::CUDA), Tensor::full({2}, 3.0f, Device::CUDA)).item()));
}

TEST_CASE("cuda backend: the bfloat16 convolution kernels: auto, mma.sync or wgmma, and the status says which") {
  require_backend();
  CHECK(cuda::parse_conv_kernels("auto") == cuda::ConvKernels::Auto);
  CHECK(cuda::parse_conv_kernels("mma") == cuda::ConvKernels::MmaSync);
  CHECK(cuda::parse_conv_kernels("wgmma") == cuda::ConvKernels::Wgmma);
  CHECK_THROWS_WITH_AS(cuda::parse_conv_kernels("hopper"),
                       doctest::Contains("NIMBUS_CUDA_CONV=hopper: expected auto, mma or wgmma"), Error);
  {
    const cuda::ConvKernelsScope mma(cuda::ConvKernels::MmaSync);
    CHECK_FALSE(cuda::convs_on_wgmma());
    CHECK(cuda_status().find("tensor-core conv2d on mma.sync") != std::string::npos);
  }
  // Auto takes wgmma only where the device runs sm_90a code: never under the emulator.
  CHECK(cuda::convs_on_wgmma() == (cuda::conv_kernels() != cuda::ConvKernels::MmaSync && cuda::wgmma_available()));
  if (kOnEmulator) CHECK_FALSE(cuda::wgmma_available());
  if (kOnEmulator || cuda::wgmma_available()) {
    const cuda::ConvKernelsScope hopper(cuda::ConvKernels::Wgmma);
    CHECK(cuda::convs_on_wgmma());
    CHECK(cuda_status().find("tensor-core conv2d on wgmma (sm_90a)") != std::string::npos);
  } else {
    CHECK_THROWS_WITH_AS(cuda::set_conv_kernels(cuda::ConvKernels::Wgmma),
                         doctest::Contains("this device does not run sm_90a code"), Error);
  }
}

TEST_CASE("cuda kernels: sgemm (tiles 8 and 16, register-blocked 64), all transposes, odd sizes, beta 0 and 0.5") {
  require_backend();
  struct Case {
    int64_t M, N, K;
  };
  for (Case c : {Case{5, 7, 3}, Case{17, 13, 19}, Case{1, 33, 40}}) {
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      const int64_t lda = (ta ? c.M : c.K) + 2, ldb = (tb ? c.K : c.N) + 1, ldc = c.N + 3;
      const std::vector<float> A = rand_floats(size_t((ta ? c.K : c.M) * lda), 3 + t);
      const std::vector<float> B = rand_floats(size_t((tb ? c.N : c.K) * ldb), 7 + t);
      const std::vector<float> C0 = rand_floats(size_t(c.M * ldc), 11 + t);
      for (float beta : {0.0f, 0.5f}) {
        std::vector<double> want = to_double(C0);
        cpu::gemm_ref<double>(ta, tb, c.M, c.N, c.K, 1.5, to_double(A).data(), lda, to_double(B).data(), ldb, beta,
                              want.data(), ldc);
        for (int tile : {8, 16, 64}) {
          CAPTURE(c.M);
          CAPTURE(c.N);
          CAPTURE(c.K);
          CAPTURE(t);
          CAPTURE(tile);
          CAPTURE(beta);
          DeviceBuffer<float> dA(A), dB(B);
          auto got = same_in_all_orders("sgemm", [&] {
            std::vector<float> init = C0;
            if (beta == 0.0f)  // write-only C: NaN must not leak in
              for (int64_t i = 0; i < c.M; ++i) init[size_t(i * ldc)] = NAN;
            DeviceBuffer<float> dC(init);
            cuda::gemm(ta, tb, c.M, c.N, c.K, 1.5f, dA.p, lda, dB.p, ldb, beta, dC.p, ldc, tile);
            return dC.download();
          });
          for (int64_t i = 0; i < c.M; ++i)  // padding columns of C stay untouched
            for (int64_t j = c.N; j < ldc; ++j) want[size_t(i * ldc + j)] = got[size_t(i * ldc + j)];
          check_close(got, want, 1e-5, 1e-5, "sgemm");
        }
      }
    }
  }
}

TEST_CASE("cuda kernels: gemm_reduce sums a batch of products into one C, tiles 8, 16 and 64, all transposes") {
  require_backend();
  const int64_t M = 13, N = 11, K = 9, reduce = 3;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    const int64_t lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 1;
    const int64_t stride_a = (ta ? K : M) * lda + 5, stride_b = (tb ? N : K) * ldb + 3;
    const std::vector<float> A = rand_floats(size_t(reduce * stride_a), 21 + t);
    const std::vector<float> B = rand_floats(size_t(reduce * stride_b), 23 + t);
    const std::vector<float> C0 = rand_floats(size_t(M * ldc), 29 + t);
    for (float beta : {0.0f, 0.5f})
      for (int64_t r : {int64_t(0), int64_t(1), reduce}) {
        std::vector<double> want = to_double(C0);
        for (int64_t i = 0; i < r; ++i)
          cpu::gemm_ref<double>(ta, tb, M, N, K, 1.5, to_double(A).data() + i * stride_a, lda,
                                to_double(B).data() + i * stride_b, ldb, i == 0 ? beta : 1.0, want.data(), ldc);
        if (r == 0)
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) want[size_t(i * ldc + j)] *= beta;
        for (int tile : {8, 16, 64}) {
          CAPTURE(t);
          CAPTURE(beta);
          CAPTURE(r);
          CAPTURE(tile);
          DeviceBuffer<float> dA(A), dB(B), dC(C0);
          cuda::gemm_reduce(ta, tb, M, N, K, 1.5f, dA.p, lda, stride_a, dB.p, ldb, stride_b, beta, dC.p, ldc, r, tile);
          std::vector<float> got = dC.download();
          for (int64_t i = 0; i < M; ++i)  // padding columns of C stay untouched
            for (int64_t j = N; j < ldc; ++j) want[size_t(i * ldc + j)] = got[size_t(i * ldc + j)];
          check_close(got, want, 1e-5, 1e-5, "gemm_reduce");
        }
      }
  }
}

TEST_CASE("cuda kernels: conv2d forward, backward-data, backward-weight, bias") {
  require_backend();
  const cpu::ConvGeom geoms[] = {
      {3, 3, 7, 6, 4, 3, 3, 2, 1},  // strided, padded, odd sizes
      {1, 5, 5, 5, 3, 1, 1, 1, 0},  // pointwise: no im2col
      {2, 2, 6, 5, 3, 2, 3, 1, 2},  // rectangular kernel, pad > kernel/2
  };
  for (const cpu::ConvGeom& g : geoms) {
    const int64_t xs = g.N * g.C * g.H * g.W, wsz = g.K * g.C * g.R * g.S, ys = g.N * g.K * g.P() * g.Q();
    const std::vector<float> x = rand_floats(size_t(xs), 1), w = rand_floats(size_t(wsz), 2),
                             b = rand_floats(size_t(g.K), 3), dy = rand_floats(size_t(ys), 4);
    std::vector<double> y_ref(static_cast<size_t>(ys)), dx_ref(static_cast<size_t>(xs));
    std::vector<double> dw_ref(static_cast<size_t>(wsz)), db_ref(static_cast<size_t>(g.K));
    cpu::conv2d_forward_ref<double>(y_ref.data(), to_double(x).data(), to_double(w).data(), to_double(b).data(), g);
    cpu::conv2d_backward_data_ref<double>(dx_ref.data(), to_double(dy).data(), to_double(w).data(), g);
    cpu::conv2d_backward_weight_ref<double>(dw_ref.data(), to_double(dy).data(), to_double(x).data(), g);
    cpu::bias_backward<double>(db_ref.data(), to_double(dy).data(), g.N, g.K, g.P() * g.Q());
    DeviceBuffer<float> dX(x), dW(w), dB(b), dDY(dy);
    // group 0: automatic (all images in one im2col + batched GEMM); 1 and 2: several steps, a partial last one.
    for (int64_t group : {int64_t(0), int64_t(1), int64_t(2)})
    for (int tile : {8, 16, 64}) {
      CAPTURE(g.C);
      CAPTURE(g.stride);
      CAPTURE(group);
      CAPTURE(tile);
      DeviceBuffer<float> ws(size_t(std::max<int64_t>(cuda::conv2d_workspace(g, group), 1)));
      auto y = same_in_all_orders("conv2d_forward", [&] {
        DeviceBuffer<float> dY(static_cast<size_t>(ys));
        cuda::conv2d_forward(dY.p, dX.p, dW.p, dB.p, g, ws.p, tile, group);
        return dY.download();
      });
      check_close(y, y_ref, 1e-5, 1e-5, "conv2d forward");
      auto grads = same_in_all_orders("conv2d_backward", [&] {
        DeviceBuffer<float> gx(static_cast<size_t>(xs)), gw(static_cast<size_t>(wsz)), gb(static_cast<size_t>(g.K));
        cuda::conv2d_backward(gx.p, gw.p, gb.p, dDY.p, dX.p, dW.p, g, ws.p, tile, group);
        return download_all(gx, gw, gb);
      });
      check_close(std::vector<float>(grads.begin(), grads.begin() + xs), dx_ref, 1e-5, 1e-5, "conv2d dx");
      check_close(std::vector<float>(grads.begin() + xs, grads.begin() + xs + wsz), dw_ref, 1e-5, 1e-5, "conv2d dw");
      check_close(std::vector<float>(grads.begin() + xs + wsz, grads.end()), db_ref, 1e-5, 1e-5, "conv2d db");
    }
  }
}

TEST_CASE("cuda kernels: batch norm statistics, forward, backward (training and eval)") {
  require_backend();
  // HW 7: element by element; HW 8: the forward and dx kernels move 16-byte packs (a pack in one channel);
  // HW 15: M = 45 values a channel, so one block per channel runs 2 warps at block 64 (a channel of 21
  // or 24 runs on one warp whatever the block: batchnorm.cu's channel_block).
  for (const int64_t HW : {int64_t(7), int64_t(8), int64_t(15)}) {
    CAPTURE(HW);
    const int64_t N = 3, C = 5, M = N * HW, n = N * C * HW;
    const std::vector<float> x = rand_floats(size_t(n), 21, 1, 3), dy = rand_floats(size_t(n), 22),
                             w = rand_floats(size_t(C), 23), b = rand_floats(size_t(C), 24);
    std::vector<double> mean(static_cast<size_t>(C)), var(static_cast<size_t>(C)), invstd(static_cast<size_t>(C)),
        y(static_cast<size_t>(n));
    cpu::batchnorm_stats_ref<double>(mean.data(), var.data(), to_double(x).data(), N, C, HW);
    cpu::batchnorm_invstd<double>(invstd.data(), var.data(), 1e-5, C);
    const std::vector<float> rm0 = rand_floats(size_t(C), 30), rv0 = rand_floats(size_t(C), 31, 0.5, 2);
    DeviceBuffer<float> dX(x), dDY(dy), dW(w), dB(b);
    // splits > 1: each channel's M values over 2 or 3 blocks (HW 7: chunks of 11 and 10, or 7), combined after.
    // The scratch is exactly batchnorm_scratch_floats long, then a guard of sentinels that no kernel may
    // touch (with 2 splits the backward's coefficients once ran C floats past it).
    for (int splits : {1, 2, 3})
    for (int block : {32, 64}) {
      CAPTURE(splits);
      CAPTURE(block);
      const size_t need = size_t(cuda::batchnorm_scratch_floats(C, splits)), guard = 64;
      constexpr float kSentinel = 12345.0f;
      DeviceBuffer<float> scratch(std::vector<float>(need + guard, kSentinel));
      auto guard_intact = [&] {
        const std::vector<float> all = scratch.download();
        return std::all_of(all.begin() + std::ptrdiff_t(need), all.end(), [&](float v) { return v == kSentinel; });
      };
      // Training statistics in one launch: mean, invstd, the running statistics (unbiased variance,
      // momentum 0.1) and the batch counter.
      std::vector<double> want_rm(rm0.begin(), rm0.end()), want_rv(rv0.begin(), rv0.end());
      cpu::batchnorm_update_running<double>(want_rm.data(), want_rv.data(), mean.data(), var.data(), 0.1, M, C);
      auto stats = same_in_all_orders("batchnorm_train_stats", [&] {
        DeviceBuffer<float> m(static_cast<size_t>(C)), is(static_cast<size_t>(C)), rm(rm0), rv(rv0),
            count(std::vector<float>{7.0f});
        cuda::batchnorm_train_stats(m.p, is.p, rm.p, rv.p, count.p, dX.p, N, C, HW, 0.1f, 1e-5f, scratch.p, splits,
                                    block);
        return download_all(m, is, rm, rv, count);
      });
      CHECK_MESSAGE(guard_intact(), "batchnorm_train_stats wrote past its scratch");
      auto part = [&](size_t k) { return std::vector<float>(stats.begin() + k * C, stats.begin() + (k + 1) * C); };
      check_close(part(0), mean, 1e-6, 1e-5, "mean");
      check_close(part(1), invstd, 1e-6, 1e-5, "invstd");
      check_close(part(2), want_rm, 1e-6, 1e-5, "running_mean");
      check_close(part(3), want_rv, 1e-6, 1e-5, "running_var");
      CHECK(stats.back() == 8.0f);
      // The rest from the double statistics rounded to float, so only the kernel under test differs.
      const std::vector<float> fm(mean.begin(), mean.end()), fi(invstd.begin(), invstd.end());
      DeviceBuffer<float> dM(fm), dI(fi);
      cpu::batchnorm_forward_ref<double>(y.data(), to_double(x).data(), to_double(fm).data(), to_double(fi).data(),
                                         to_double(w).data(), to_double(b).data(), N, C, HW);
      auto got_y = same_in_all_orders("batchnorm_forward", [&] {
        DeviceBuffer<float> dY(static_cast<size_t>(n));
        cuda::batchnorm_forward(dY.p, dX.p, dM.p, dI.p, dW.p, dB.p, N, C, HW, false, block);
        return dY.download();
      });
      check_close(got_y, y, 1e-5, 1e-5, "batchnorm forward");
      for (bool training : {true, false}) {
        CAPTURE(training);
        std::vector<double> dx(static_cast<size_t>(n)), dw(static_cast<size_t>(C)), db(static_cast<size_t>(C));
        cpu::batchnorm_backward_ref<double>(dx.data(), dw.data(), db.data(), to_double(dy).data(), to_double(x).data(),
                                            to_double(fm).data(), to_double(fi).data(), to_double(w).data(), N, C, HW,
                                            training);
        auto g = same_in_all_orders("batchnorm_backward", [&] {
          DeviceBuffer<float> gx(static_cast<size_t>(n)), gw(static_cast<size_t>(C)), gb(static_cast<size_t>(C));
          cuda::batchnorm_backward<float>(gx.p, gw.p, gb.p, dDY.p, dX.p, dM.p, dI.p, dW.p, nullptr, N, C, HW, training,
                                          scratch.p, splits, block);
          return download_all(gx, gw, gb);
        });
        CHECK_MESSAGE(guard_intact(), "batchnorm_backward wrote past its scratch");
        check_close(std::vector<float>(g.begin(), g.begin() + n), dx, 1e-5, 1e-4, "batchnorm dx");
        check_close(std::vector<float>(g.begin() + n, g.begin() + n + C), dw, 1e-5, 1e-5, "batchnorm dweight");
        check_close(std::vector<float>(g.begin() + n + C, g.end()), db, 1e-5, 1e-5, "batchnorm dbias");
      }
    }
  }
}

TEST_CASE("cuda kernels: max pool (ties, padding) and global average pool") {
  require_backend();
  const cpu::PoolGeom geoms[] = {{2, 3, 7, 6, 3, 2, 1}, {1, 2, 5, 5, 2, 2, 0}, {1, 1, 6, 7, 3, 1, 1}};
  for (const cpu::PoolGeom& g : geoms) {
    const int64_t xs = g.N * g.C * g.H * g.W, ys = g.N * g.C * g.P() * g.Q();
    std::vector<float> x = rand_floats(size_t(xs), 41);
    for (float& v : x) v = std::round(v * 3) / 3;  // many ties: the first max must win
    const std::vector<float> dy = rand_floats(size_t(ys), 42);
    std::vector<float> y_want(static_cast<size_t>(ys)), dx_want(static_cast<size_t>(xs));
    cpu::max_pool2d_forward<float>(y_want.data(), x.data(), g);
    cpu::max_pool2d_backward<float>(dx_want.data(), dy.data(), x.data(), g);
    DeviceBuffer<float> dX(x), dDY(dy);
    for (int block : {32, 128}) {
      CAPTURE(g.kernel);
      CAPTURE(block);
      auto y = same_in_all_orders("max_pool2d_forward", [&] {
        DeviceBuffer<float> dY(static_cast<size_t>(ys));
        cuda::max_pool2d_forward(dY.p, dX.p, g, block);
        return dY.download();
      });
      check_close(y, y_want, 0, 0, "max_pool2d forward");
      auto dx = same_in_all_orders("max_pool2d_backward", [&] {
        DeviceBuffer<float> gx(static_cast<size_t>(xs));
        cuda::max_pool2d_backward(gx.p, dDY.p, dX.p, g, block);
        return gx.download();
      });
      check_close(dx, dx_want, 0, 0, "max_pool2d backward (same sums in the same order)");
    }
  }
  const int64_t planes = 7, hw = 13;
  const std::vector<float> x = rand_floats(size_t(planes * hw), 43), dy = rand_floats(size_t(planes), 44);
  std::vector<double> y(static_cast<size_t>(planes)), dx(static_cast<size_t>(planes * hw));
  cpu::global_avg_pool_forward<double>(y.data(), to_double(x).data(), planes, hw);
  cpu::global_avg_pool_backward<double>(dx.data(), to_double(dy).data(), planes, hw);
  DeviceBuffer<float> dX(x), dDY(dy);
  for (int block : {32, 64}) {
    auto gy = same_in_all_orders("gap forward", [&] {
      DeviceBuffer<float> o(static_cast<size_t>(planes));
      cuda::global_avg_pool_forward(o.p, dX.p, planes, hw, block);
      return o.download();
    });
    check_close(gy, y, 1e-6, 1e-5, "global_avg_pool forward");
    auto gx = same_in_all_orders("gap backward", [&] {
      DeviceBuffer<float> o(static_cast<size_t>(planes * hw));
      cuda::global_avg_pool_backward(o.p, dDY.p, planes, hw, block);
      return o.download();
    });
    check_close(gx, dx, 1e-7, 1e-6, "global_avg_pool backward");
  }
}

TEST_CASE("cuda kernels: softmax, cross-entropy, L1, MSE, CARL") {
  require_backend();
  const int64_t N = 3, C = 2, HW = 37, n = N * C * HW, Nc = 5, K = 7;
  const std::vector<float> p = rand_floats(size_t(n), 51), t = rand_floats(size_t(n), 52),
                           ci = rand_floats(size_t(n), 53);
  std::vector<float> m = rand_floats(size_t(N * HW), 54, 0, 1);
  for (size_t i = 0; i < m.size(); i += 3) m[i] = std::round(m[i]);  // binary and soft mask values
  const std::vector<float> logits = rand_floats(size_t(Nc * K), 55, -3, 3);
  const std::vector<float> target = {0, 6, 3, 3, 1};
  DeviceBuffer<float> dP(p), dT(t), dI(ci), dMk(m), dL(logits), dTg(target), loss(1);
  for (int block : {32, 64}) {
    CAPTURE(block);
    DeviceBuffer<float> scratch(static_cast<size_t>(cuda::loss_scratch_floats(n)));
    auto run_loss = [&](const char* what, const std::function<void()>& f) {
      return same_in_all_orders(what, [&] {
        f();
        return loss.download();
      })[0];
    };
    CHECK(run_loss("l1", [&] { cuda::l1_forward(loss.p, dP.p, dT.p, n, scratch.p, block); }) ==
          doctest::Approx(cpu::l1_forward<double>(to_double(p).data(), to_double(t).data(), n)).epsilon(1e-5));
    CHECK(run_loss("mse", [&] { cuda::mse_forward(loss.p, dP.p, dT.p, n, scratch.p, block); }) ==
          doctest::Approx(cpu::mse_forward<double>(to_double(p).data(), to_double(t).data(), n)).epsilon(1e-5));
    CHECK(run_loss("carl",
                   [&] { cuda::carl_forward(loss.p, dP.p, dT.p, dI.p, dMk.p, 1.0f, N, C, HW, scratch.p, block); }) ==
          doctest::Approx(cpu::carl_forward<double>(to_double(p).data(), to_double(t).data(), to_double(ci).data(),
                                                    to_double(m).data(), 1.0, N, C, HW))
              .epsilon(1e-5));
    std::vector<double> prob_ref(static_cast<size_t>(Nc * K));
    const double ce_ref = cpu::cross_entropy_forward<double>(prob_ref.data(), to_double(logits).data(),
                                                             to_double(target).data(), Nc, K);
    DeviceBuffer<float> prob(static_cast<size_t>(Nc * K));
    CHECK(run_loss("ce", [&] { cuda::cross_entropy_forward(loss.p, prob.p, dL.p, dTg.p, Nc, K, scratch.p, block); }) ==
          doctest::Approx(ce_ref).epsilon(1e-5));
    check_close(prob.download(), prob_ref, 1e-6, 1e-5, "cross_entropy prob");
    DeviceBuffer<float> sm(static_cast<size_t>(Nc * K));
    cuda::softmax_forward(sm.p, dL.p, Nc, K, block);
    check_close(sm.download(), prob_ref, 1e-6, 1e-5, "softmax");
    // Backward kernels: the CPU float kernels do the same float operations.
    std::vector<float> want(static_cast<size_t>(n));
    DeviceBuffer<float> g(static_cast<size_t>(n)), dy(std::vector<float>{0.7f});  // dy: g = dL/dloss on the device
    cpu::l1_backward<float>(want.data(), p.data(), t.data(), 0.7f, n);
    cuda::l1_backward(g.p, dP.p, dT.p, dy.p, n, block);
    check_close(g.download(), want, 0, 0, "l1 backward");
    cpu::mse_backward<float>(want.data(), p.data(), t.data(), 0.7f, n);
    cuda::mse_backward(g.p, dP.p, dT.p, dy.p, n, block);
    check_close(g.download(), want, 0, 0, "mse backward");
    cpu::carl_backward<float>(want.data(), p.data(), t.data(), ci.data(), m.data(), 1.0f, 0.7f, N, C, HW);
    cuda::carl_backward(g.p, dP.p, dT.p, dI.p, dMk.p, 1.0f, dy.p, N, C, HW, block);
    check_close(g.download(), want, 0, 0, "carl backward");
    std::vector<float> prob_f(prob_ref.begin(), prob_ref.end()), dl_want(static_cast<size_t>(Nc * K));
    cpu::cross_entropy_backward<float>(dl_want.data(), prob_f.data(), target.data(), 0.7f, Nc, K);
    DeviceBuffer<float> dprob(prob_f), dl(static_cast<size_t>(Nc * K));
    cuda::cross_entropy_backward(dl.p, dprob.p, dTg.p, dy.p, Nc, K, block);
    check_close(dl.download(), dl_want, 0, 0, "cross_entropy backward");
  }
}

TEST_CASE("cuda kernels: strided row copy and fused optimiser updates, two blocks, all orders") {
  require_backend();
  const int64_t rows = 3, len = 37, dst_stride = 50, src_stride = 41;
  const std::vector<float> src = rand_floats(static_cast<size_t>(rows * src_stride), 61);
  const std::vector<float> dst0 = rand_floats(static_cast<size_t>(rows * dst_stride), 62);
  std::vector<float> want = dst0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < len; ++i) want[size_t(r * dst_stride + i)] = src[size_t(r * src_stride + i)];
  const int64_t n = 301;
  const std::vector<float> p0 = rand_floats(size_t(n), 63), m0 = rand_floats(size_t(n), 64),
                           v0 = rand_floats(size_t(n), 65, 0, 1), g = rand_floats(size_t(n), 66);
  // The CPU loops (kernels/cpu/optim.cpp), compiled in the library as the emulated kernels are: both
  // evaluate kernels/common/optim_update.h's element updates, so the compiler contracts them alike.
  const cuda::AdamScalars a{0.9f, 0.999f, 0.1f, 0.001f, 0.01f, 1e-8f, 0.05f, 0.3f, 0.999f};  // both decays, to compare
  const cuda::NadamScalars na{0.9f, 0.999f, 0.1f, 0.001f, 1.2f, 1.1f, 1.3f, 0.2f, 0.8f, 0.01f, 1e-8f};
  const cuda::SgdScalars sg{0.1f, 0.001f, 0.9f, 1.0f, false, true, true};
  std::vector<float> pa = p0, ma = m0, va = v0, pn = p0, mn = m0, vn = v0, ps = p0, bs = m0;
  {
    AdamBatch ab;
    ab.t[ab.count++] = {pa.data(), ma.data(), va.data(), g.data(), n, &a};
    NadamBatch nb;
    nb.t[nb.count++] = {pn.data(), mn.data(), vn.data(), g.data(), n, &na};
    SgdBatch sb;
    sb.t[sb.count++] = {ps.data(), bs.data(), g.data(), n, &sg};
    cpu::adam_update(ab);
    cpu::nadam_update(nb);
    cpu::sgd_update(sb);
  }
  // An independent check of the CPU loops' Adam element, in double: what the bitwise check relies on.
  {
    const size_t i = 7;
    const double p_kept = double(p0[i]) * a.keep;  // AdamW's decay first, then (here also) L2 in the gradient
    const double gi = double(g[i]) + double(a.wd) * p_kept, mi = double(m0[i]) * a.b1 + double(a.one_m_b1) * gi,
                 vi = double(v0[i]) * a.b2 + double(a.one_m_b2) * gi * gi;
    const double pi = p_kept - double(a.step_size) * mi / (std::sqrt(vi) / a.bc2_sqrt + a.eps);
    CHECK(std::fabs(pa[i] - pi) <= 1e-6 * (std::fabs(p0[i]) + std::fabs(pi - p0[i])));
    CHECK(pa[i] != p0[i]);
  }
  for (int block : {32, 128}) {
    CAPTURE(block);
    auto got = same_in_all_orders("copy_rows", [&] {
      DeviceBuffer<float> s(src), d(dst0);
      cuda::copy_rows(d.p, dst_stride, s.p, src_stride, rows, len, block);
      return d.download();
    });
    check_close(got, want, 0, 0, "copy_rows");
    auto opt = same_in_all_orders("optimisers", [&] {
      DeviceBuffer<float> dg(g), P(p0), M(m0), V(v0), Pn(p0), Mn(m0), Vn(v0), Ps(p0), Bs(m0);
      // The scalars live in device memory (a step's prepare writes them there).
      DeviceBuffer<cuda::AdamScalars> da(std::vector<cuda::AdamScalars>{a});
      DeviceBuffer<cuda::NadamScalars> dna(std::vector<cuda::NadamScalars>{na});
      DeviceBuffer<cuda::SgdScalars> dsg(std::vector<cuda::SgdScalars>{sg});
      AdamBatch ab;
      ab.t[ab.count++] = {P.p, M.p, V.p, dg.p, n, da.p};
      NadamBatch nb;
      nb.t[nb.count++] = {Pn.p, Mn.p, Vn.p, dg.p, n, dna.p};
      SgdBatch sb;
      sb.t[sb.count++] = {Ps.p, Bs.p, dg.p, n, dsg.p};
      cuda::adam_update(ab, block);
      cuda::nadam_update(nb, block);
      cuda::sgd_update(sb, block);
      std::vector<float> r;
      for (auto* b : {&P, &M, &V, &Pn, &Mn, &Vn, &Ps, &Bs}) {
        std::vector<float> h = b->download();
        r.insert(r.end(), h.begin(), h.end());
      }
      return r;
    });
    std::vector<float> all;
    for (auto* h : {&pa, &ma, &va, &pn, &mn, &vn, &ps, &bs}) all.insert(all.end(), h->begin(), h->end());
    // Bitwise under the emulator (the same C++ expressions, compiled with the same flags). nvcc contracts
    // a*b+c into one FMA (one rounding instead of two) where g++ may not: on a GPU, within 2 ulp (seen:
    // 1 ulp, H200).
    const double ulps = kOnEmulator ? 0 : 2.4e-7;
    check_close(opt, all, ulps * 1e-3, ulps, "adam, nadam, sgd (same float expressions as the CPU loops)");
  }
}

// ---------------------------------------------------------------------------------------------
// Engine level: the same computation on Device::CPU and Device::CUDA.

Tensor on(const Tensor& t, Device d) { return t.to(d).detach().set_requires_grad(t.requires_grad()); }

TEST_CASE("cuda engine: a small graph of every op, forward and gradients, equals the CPU") {
  require_backend();
  const cuda::MathScope fp32(cuda::Math::Fp32);  // the float32 bound below; TF32: the training-step cases
  Rng rng(7);
  auto leaf = [&](Shape s) { return Tensor::randn(s, rng).set_requires_grad(true); };
  Tensor x = leaf({2, 3, 9, 8}), w1 = leaf({4, 3, 3, 3}), b1 = leaf({4}), gamma = leaf({4}), beta = leaf({4});
  Tensor w2 = leaf({5, 7, 1, 1}), fw = leaf({3, 5}), fb = leaf({3}), extra = leaf({2, 3, 5, 4});
  Tensor target = Tensor::from_vector({2}, {2, 0});
  const std::vector<Tensor> leaves = {x, w1, b1, gamma, beta, w2, fw, fb, extra};
  auto run = [&](Device d, std::vector<Tensor>& grads, Tensor& rm_out) {
    std::vector<Tensor> L;
    for (const Tensor& t : leaves) L.push_back(on(t, d));
    Tensor rm = Tensor::zeros({4}, d), rv = Tensor::ones({4}, d);
    Tensor h = conv2d(L[0], L[1], L[2], 2, 1);                                   // (2,4,5,4)
    h = relu(batch_norm2d(h, L[3], L[4], rm, rv, true, 0.1f, 1e-5f));            //
    Tensor cat = concat_channels({h, L[8]});                                     // (2,7,5,4)
    Tensor p = max_pool2d(conv2d(cat, L[5], Tensor(), 1, 0), 3, 2, 1);           // (2,5,3,2)
    Tensor logits = linear(global_avg_pool(mul_scalar(p, 1.5f)), L[6], L[7]);    // (2,3)
    Tensor loss = add(reshape(cross_entropy(logits, target.to(d)), {1}),
                      reshape(mse_loss(p, Tensor::zeros(p.shape(), d)), {1}));
    loss = add(loss, reshape(l1_loss(h, Tensor::full(h.shape(), 0.25f, d)), {1}));
    reshape(loss, Shape{}).backward();
    for (const Tensor& t : L) grads.push_back(t.grad().to(Device::CPU));
    rm_out = rm.to(Device::CPU);
    return loss.to(Device::CPU);
  };
  std::vector<Tensor> g_cpu, g_cuda;
  Tensor rm_cpu, rm_cuda;
  Tensor l_cpu = run(Device::CPU, g_cpu, rm_cpu), l_cuda = run(Device::CUDA, g_cuda, rm_cuda);
  check_close(l_cuda, l_cpu, 1e-5, 1e-5, "loss");
  check_close(rm_cuda, rm_cpu, 1e-6, 1e-5, "running_mean");
  const char* names[] = {"x", "w1", "b1", "gamma", "beta", "w2", "fw", "fb", "extra"};
  for (size_t i = 0; i < g_cpu.size(); ++i) check_close(g_cuda[i], g_cpu[i], 1e-5, 1e-4, names[i]);
}

TEST_CASE("cuda engine: fused Adam, AdamW, Nadam and SGD updates equal the CPU loops") {
  require_backend();
  Rng rng(9);
  Tensor p0 = Tensor::randn({3, 37}, rng), g0 = Tensor::randn({3, 37}, rng);
  auto steps = [&](Device d, int which) {
    Tensor p = p0.to(d).clone().set_requires_grad(true);
    std::unique_ptr<Optimizer> opt;
    if (which == 0) opt = std::make_unique<Adam>(NamedTensors{{"p", p}}, AdamOptions{1e-2, 0.9, 0.999, 1e-8, 0.01});
    if (which == 1) opt = std::make_unique<Nadam>(NamedTensors{{"p", p}}, NadamOptions{});
    if (which == 2) opt = std::make_unique<SGD>(NamedTensors{{"p", p}}, SGDOptions{0.1, 0.9, 0, 1e-3, true});
    if (which == 3) opt = std::make_unique<Adam>(NamedTensors{{"p", p}}, AdamOptions{1e-2, 0.9, 0.999, 1e-8, 0.1, true});
    for (int s = 0; s < 3; ++s) {
      p.set_grad(mul_scalar(g0.to(d), float(s + 1)));
      opt->step();
    }
    return p.to(Device::CPU);
  };
  for (int which = 0; which < 4; ++which) {
    CAPTURE(which);
    check_close(steps(Device::CUDA, which), steps(Device::CPU, which), 1e-7, 1e-6, "parameter after 3 steps");
  }
}

TEST_CASE("cuda engine: clip_grad_norm matches torch.nn.utils.clip_grad_norm_, alone and before six Adam steps") {
  require_backend();
  const uint64_t waits = cuda::work_counts().host_waits;
  check_clip_cases_against_torch(Device::CUDA);
  check_clipped_adam_against_torch(Device::CUDA);
  CHECK(cuda::work_counts().host_waits > waits);  // sanity: the counter counts (the checks read back)
}

TEST_CASE("cuda engine: clip_grad_norm queues its launches and never waits for the device") {
  require_backend();
  Rng rng(4);
  std::vector<Tensor> params;
  for (int i = 0; i < 40; ++i) {  // two batches of gradients
    Tensor p = Tensor::zeros({int64_t(5 + 11 * i)}, Device::CUDA).set_requires_grad(true);
    p.set_grad(Tensor::randn({int64_t(5 + 11 * i)}, rng).to(Device::CUDA));
    params.push_back(p);
  }
  const cuda::WorkCounts before = cuda::work_counts();
  const Tensor norm = clip_grad_norm(params, 0.1);
  const cuda::WorkCounts after = cuda::work_counts();
  CHECK(after.host_waits == before.host_waits);
  CHECK(after.launches - before.launches == 5);  // 2 sums, 1 coefficient, 2 scalings
  CHECK(norm.item() > 0.1f);
}

// One training step (forward, loss, backward, optimiser) of a module on `d`; returns its
// gradients, then its parameters and buffers after the step, on the CPU.
template <typename Model, typename Step>
std::vector<Tensor> train_step(Model& model, Device d, Step step, bool batch_stats = true) {
  model.to(d);
  if (batch_stats)
    model.train();
  else
    model.eval();  // batch norms use their running statistics (gradients still flow)
  step(model, d);
  std::vector<Tensor> out;
  for (const auto& [name, t] : model.named_parameters()) out.push_back(t.grad().to(Device::CPU));
  for (const auto& [name, t] : model.state_dict()) out.push_back(t.to(Device::CPU));
  return out;
}

// Model(cfg) built twice from Rng(seed), one training step (train_step) on the CPU backend and one
// on CUDA in math mode `m`: every tensor within atol = rel * its largest |value| (+1e-12): gradients
// of weights differ in scale by orders of magnitude between layers, and float sums in another order
// differ relatively. The bounds are each model's measured worst (every OpenBLAS core type here) times
// 3-7: an element below rel * scale goes unchecked, so rel is kept as low as the agreement allows.
template <typename Model, typename Config, typename Step>
void check_step_matches_cpu(const Config& cfg, uint64_t seed, Step step, cuda::Math m,
                            double rel, bool batch_stats = true) {
  const cuda::MathScope math(m);
  // On a GPU, nvcc's fused multiply-adds round otherwise than the emulator's host code, and these
  // bounds are the emulator's: a real device keeps the bounds it had before they were measured here
  // (1e-4 in fp32, 1e-2 in TF32) until a device run measures its own.
  if (!kOnEmulator) rel = std::max(rel, m == cuda::Math::Fp32 ? 1e-4 : 1e-2);
  Rng r1(seed), r2(seed);
  Model cpu_model(cfg, r1), cuda_model(cfg, r2);
  const std::vector<Tensor> want = train_step(cpu_model, Device::CPU, step, batch_stats);
  const std::vector<Tensor> got = train_step(cuda_model, Device::CUDA, step, batch_stats);
  REQUIRE(got.size() == want.size());
  std::vector<std::string> names;
  for (const auto& [name, t] : cuda_model.named_parameters()) names.push_back("grad of " + name);
  for (const auto& [name, t] : cuda_model.state_dict()) names.push_back(name + " after the step");
  double worst = 0;
  std::string worst_name;
  for (size_t i = 0; i < got.size(); ++i) {
    double scale = 0;
    for (float v : want[i].to_vector()) scale = std::max(scale, double(std::fabs(v)));
    const std::vector<float> g = got[i].to_vector(), w = want[i].to_vector();
    for (size_t j = 0; j < g.size(); ++j) {
      const double r = std::fabs(double(g[j]) - w[j]) / (scale + 1e-30);
      if (!(r <= worst)) worst = r, worst_name = names[i];
    }
    check_close(got[i], want[i], 1e-12 + rel * scale, rel, names[i]);
  }
  MESSAGE("math ", std::string(cuda::math_name(m)), ": worst |cuda - cpu| / scale ", worst, " (", worst_name, ")");
}

void tiny_resnet_step_matches_cpu(cuda::Math m, double rel, bool batch_stats = true) {
  require_backend();
  const models::ResNetConfig cfg{
      .block = models::BlockType::Basic, .blocks = {1, 1, 1, 1}, .width = 4, .in_channels = 3, .classes = 5};
  Rng data_rng(3);
  // 3 images of 64x64: layer4 sees 12 values per channel in batch norm. Not 32x32 (3 values, 1x1
  // planes): there the gradients that flow back through the batch norms of layer4 and layer3 are so
  // ill-conditioned that the CPU backend alone moves grad of layer2.0.downsample.0.weight by 1.5e-4 of
  // its largest |value| between OpenBLAS's Haswell, SkylakeX and Sandybridge kernels (each GEMM is
  // accurate to ~1e-7 against a double reference); at 64x64 every tensor agrees within 6e-6 of its
  // scale across those kernels and the CUDA backend, for data seeds 3, 4, 5 and 7.
  const Tensor x = Tensor::randn({3, 3, 64, 64}, data_rng), y = Tensor::from_vector({3}, {4, 1, 0});
  auto step = [&](models::ResNet& m, Device d) {
    SGD opt(m.named_parameters(), SGDOptions{0.1, 0.9});
    Tensor loss = cross_entropy(m.forward(x.to(d)), y.to(d));
    loss.backward();
    opt.step();
  };
  check_step_matches_cpu<models::ResNet>(cfg, 11, step, m, rel, batch_stats);
}

void tiny_dsen2cr_step_matches_cpu(cuda::Math m, double rel, bool smooth = false) {
  require_backend();
  models::DSen2CRConfig cfg;
  cfg.blocks = 2;
  cfg.features = 8;
  Rng data_rng(4);
  const Tensor s2 = Tensor::randn({2, 13, 6, 5}, data_rng), s1 = Tensor::randn({2, 2, 6, 5}, data_rng);
  const Tensor target = Tensor::randn({2, 13, 6, 5}, data_rng);
  const Tensor mask = Tensor::uniform({2, 1, 6, 5}, data_rng, 0, 1);
  auto step = [&](models::DSen2CR& m, Device d) {
    if (smooth) {  // MSE and plain SGD: no sign() in the loss gradient or the first update
      SGD opt(m.named_parameters(), SGDOptions{0.1});
      mse_loss(m.forward(s2.to(d), s1.to(d)), target.to(d)).backward();
      opt.step();
      return;
    }
    Nadam opt(m.named_parameters(), NadamOptions{7e-3});
    Tensor loss = carl_loss(m.forward(s2.to(d), s1.to(d)), target.to(d), s2.to(d), mask.to(d), 1.0f);
    loss.backward();
    opt.step();
  };
  check_step_matches_cpu<models::DSen2CR>(cfg, 12, step, m, rel);
}

// fp32 math: measured worst 5.5e-6 of the scale (ResNet, grad of bn1.weight) and 3.1e-7 (DSen2-CR)
// over OpenBLAS's Haswell, SkylakeX, Sandybridge and Cooperlake kernels; bounds 3e-5 and 5e-6 on the
// emulator (check_step_matches_cpu keeps a real GPU's looser).
TEST_CASE("cuda engine: one training step of a tiny ResNet equals the CPU backend") {
  tiny_resnet_step_matches_cpu(cuda::Math::Fp32, 3e-5);
}

TEST_CASE("cuda engine: one training step of a tiny DSen2-CR (CARL, Nadam) equals the CPU backend") {
  tiny_dsen2cr_step_matches_cpu(cuda::Math::Fp32, 5e-6);
}

// TF32 math (the default): convolutions and linear layers on the tensor cores, operands rounded to
// 10 mantissa bits, each product off by up to 2^-10 of itself. The whole step then parts from the
// CPU's by a few 2^-10 of each tensor's scale, if the step is well conditioned. These tiny models'
// usual steps are not: batch norm over 12 values per channel (the ResNet's layer4) and the sign()
// in CARL's L1 gradient and in Nadam's first update turn a 1e-3 perturbation into 0.1-0.4 of a
// gradient's scale (measured). So the TF32 runs take the ResNet with its batch norms in eval mode
// (running statistics: an affine map) and DSen2-CR with MSE and SGD; measured worst 3.0e-3
// (ResNet, grad of layer1.0.bn2.weight) and 7.2e-4 (DSen2-CR); bounds 1e-2 and 4e-3 of the scale. A
// kernel that drops or misplaces a term is off by about a term's size, far above them.
TEST_CASE("cuda engine: one training step of a tiny ResNet in TF32 is within the TF32 bound of the CPU") {
  tiny_resnet_step_matches_cpu(cuda::Math::Tf32, 1e-2, false);
}

TEST_CASE("cuda engine: one training step of a tiny DSen2-CR in TF32 is within the TF32 bound of the CPU") {
  tiny_dsen2cr_step_matches_cpu(cuda::Math::Tf32, 4e-3, true);
}

// The same steps with the convolutions on Hopper's wgmma kernels (conv2d_wgmma.cu, TF32), which the
// emulator runs when asked (on a GPU: where it runs sm_90a code). Same bounds.
TEST_CASE("cuda engine: tiny ResNet and DSen2-CR TF32 steps with the convolutions on wgmma, within the TF32 bound") {
  require_backend();
  if (!kOnEmulator && !cuda::wgmma_available()) {
    MESSAGE("skipped: this device does not run sm_90a code");
    return;
  }
  const cuda::ConvKernelsScope hopper(cuda::ConvKernels::Wgmma);
#ifndef NIMBUS_CUDA_RUNTIME
  const int64_t before = emu::all_launch_stats().wgmma;
#endif
  tiny_resnet_step_matches_cpu(cuda::Math::Tf32, 1e-2, false);
  tiny_dsen2cr_step_matches_cpu(cuda::Math::Tf32, 4e-3, true);
#ifndef NIMBUS_CUDA_RUNTIME
  CHECK(emu::all_launch_stats().wgmma > before);  // they ran on wgmma
#endif
}

}  // namespace

namespace {
// The batch-norm statistics folded into the convolutions (backends/cuda/backend.h bn_fold), in TF32
// training steps (batch statistics) with the fold and without. The convolutions' outputs are the same
// bits either way; the statistics differ in their float summation order only (~1e-7 relative).
// - A bottleneck block with a projection (four conv -> bn pairs, two deep) and SGD: every gradient and
//   state tensor within 1e-5 of its scale.
//   (Measured: 1.9e-7.)
// - A whole tiny ResNet: its logits within 5e-3 of their scale (measured: 7e-4). Not 1e-5, and its
//   gradients are not compared: TF32 rounds each convolution's operands to 10 bits, so a 1e-7 change
//   in an activation can move an operand by 2^-11 of itself, five layers deep, and batch norm over the
//   32 values per channel of layer4 amplifies that (a 1e-7 change of the input alone moves these
//   gradients by 0.1 of their scale: measured). A statistic that is wrong, not rounded, moves the
//   logits by their own size. At 2
//   images of 128x128 the stem's batch norm (8,192 values per channel) splits over two blocks without
//   the fold (batchnorm_splits), so the folded step queues fewer launches: the fold ran.
template <typename Model, typename Step>
std::vector<Tensor> step_with_fold(bool fold, Model& model, Step step, uint64_t& launches) {
  const cuda::BnFoldScope scope(fold);
  CHECK((cuda_status().find("batch-norm statistics in its epilogue") != std::string::npos) == fold);
  model.to(Device::CUDA);
  const uint64_t before = cuda::work_counts().launches;
  std::vector<Tensor> out = train_step(model, Device::CUDA, step);
  launches = cuda::work_counts().launches - before;
  return out;
}

// Whether an op named `op` produced t or anything t was computed from (the autograd graph, before backward).
bool graph_has(const Tensor& t, const std::string& op) {
  std::vector<const Node*> todo{t.grad_fn().get()}, seen;
  while (!todo.empty()) {
    const Node* n = todo.back();
    todo.pop_back();
    if (!n || std::find(seen.begin(), seen.end(), n) != seen.end()) continue;
    if (n->op == op) return true;
    seen.push_back(n);
    for (const Edge& e : n->edges) todo.push_back(e.fn.get());
  }
  return false;
}

// The batch norm + ReLU in the next convolution's prologue (engine/nn/layers.h bn_relu_prologue): a tiny
// bottleneck ResNet's training step (SGD with momentum) with it and without, on the wgmma kernels and on
// mma.sync, in TF32 and under bfloat16 autocast. The prologue gathers the bits batchnorm_forward would have
// stored and the backward makes that activation again with batchnorm_forward, so every gradient, weight
// and running statistic is the same bits either way. The graph's forward launches one kernel fewer per
// fused pair (no batch norm apply) and its backward one more (the activation made again): the same count.
TEST_CASE("cuda engine: training steps with the batch norm + ReLU prologue are the steps without it, bit for bit") {
  require_backend();
  const models::ResNetConfig cfg{
      .block = models::BlockType::Bottleneck, .blocks = {1, 1, 1, 1}, .width = 4, .in_channels = 3, .classes = 5};
  Rng data_rng(9);
  const Tensor x = Tensor::randn({2, 3, 32, 32}, data_rng), y = Tensor::from_vector({2}, {4, 1});
  std::vector<cuda::ConvKernels> kernels{cuda::ConvKernels::MmaSync};
#ifdef NIMBUS_CUDA_RUNTIME
  if (cuda::wgmma_available()) kernels.push_back(cuda::ConvKernels::Wgmma);
#else
  kernels.push_back(cuda::ConvKernels::Wgmma);  // the emulator runs sm_90a code
#endif
  for (const cuda::ConvKernels k : kernels)
    for (const bool bf16 : {false, true}) {
      const std::string kernel_name = cuda::conv_kernels_name(k);
      CAPTURE(kernel_name);
      CAPTURE(bf16);
      const cuda::ConvKernelsScope conv(k);
      const cuda::MathScope math(cuda::Math::Tf32);
      std::vector<Tensor> got[2];
      uint64_t launches[2] = {};
      for (const bool prologue : {true, false}) {
        const BnReluPrologueScope scope(prologue);
        Rng r(13);
        models::ResNet model(cfg, r);
        auto step = [&](models::ResNet& m, Device d) {
          SGD opt(m.named_parameters(), SGDOptions{0.1, 0.9});
          Tensor logits;
          {
            const AutocastScope autocast(bf16 ? DType::BF16 : DType::F32);
            logits = m.forward(x.to(d));
          }
          CHECK(graph_has(logits, "bn_relu_conv2d_bn_stats") == prologue);  // the fused op ran, or did not
          cross_entropy(cast(logits, DType::F32), y.to(d)).backward();
          opt.step();
        };
        const uint64_t before = cuda::work_counts().launches;
        got[prologue ? 0 : 1] = train_step(model, Device::CUDA, step);
        launches[prologue ? 0 : 1] = cuda::work_counts().launches - before;
      }
      REQUIRE(got[0].size() == got[1].size());
      size_t differ = 0, nan = 0;
      for (size_t i = 0; i < got[0].size(); ++i) {
        const std::vector<float> a = got[0][i].to_vector(), b = got[1][i].to_vector();
        REQUIRE(a.size() == b.size());
        differ += std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) != 0;
        nan += size_t(std::count_if(a.begin(), a.end(), [](float v) { return std::isnan(v); }));
      }
      CHECK_MESSAGE(differ == 0, differ, " of ", got[0].size(), " gradients and state tensors differ");
      CHECK(nan == 0);
      CHECK(launches[0] == launches[1]);
    }
}

TEST_CASE("cuda engine: TF32 training steps with batch-norm statistics in the conv epilogue agree with the steps without") {
  require_backend();
  const cuda::MathScope math(cuda::Math::Tf32);
  Rng data_rng(5);
  uint64_t with = 0, without = 0;
  {
    const Tensor x = Tensor::randn({2, 8, 12, 10}, data_rng), dy = Tensor::randn({2, 16, 6, 5}, data_rng);
    auto step = [&](models::ResidualBlock& b, Device d) {
      SGD opt(b.named_parameters(), SGDOptions{0.1, 0.9});
      b.forward(x.to(d)).backward(dy.to(d));
      opt.step();
    };
    Rng r1(13), r2(13);
    models::ResidualBlock b1(models::BlockType::Bottleneck, 8, 4, 2, r1), b2(models::BlockType::Bottleneck, 8, 4, 2, r2);
    const std::vector<Tensor> folded = step_with_fold(true, b1, step, with), plain = step_with_fold(false, b2, step, without);
    REQUIRE(folded.size() == plain.size());
    double worst = 0;
    for (size_t i = 0; i < folded.size(); ++i) {
      double scale = 0;
      for (float v : plain[i].to_vector()) scale = std::max(scale, double(std::fabs(v)));
      const std::vector<float> f = folded[i].to_vector(), p = plain[i].to_vector();
      for (size_t j = 0; j < f.size(); ++j) worst = std::max(worst, std::fabs(double(f[j]) - p[j]) / (scale + 1e-30));
      check_close(folded[i], plain[i], 1e-7 + 1e-5 * scale, 1e-5, "block tensor " + std::to_string(i));
    }
    MESSAGE("bottleneck block: worst |fold - no fold| / scale ", worst);
  }
  const models::ResNetConfig cfg{
      .block = models::BlockType::Bottleneck, .blocks = {1, 1, 1, 1}, .width = 4, .in_channels = 3, .classes = 5};
  const Tensor x = Tensor::randn({2, 3, 128, 128}, data_rng), y = Tensor::from_vector({2}, {4, 1});
  Tensor logits[2];
  for (const bool fold : {true, false}) {
    Rng r(13);
    models::ResNet model(cfg, r);
    auto step = [&](models::ResNet& m, Device d) {
      SGD opt(m.named_parameters(), SGDOptions{0.1, 0.9});
      logits[fold] = m.forward(x.to(d));
      cross_entropy(logits[fold], y.to(d)).backward();
      opt.step();
    };
    step_with_fold(fold, model, step, fold ? with : without);
  }
  double scale = 0;
  for (float v : logits[0].to(Device::CPU).to_vector()) scale = std::max(scale, double(std::fabs(v)));
  check_close(logits[1].to(Device::CPU), logits[0].to(Device::CPU), 5e-3 * scale, 5e-3, "tiny ResNet logits");
  CHECK(with < without);
  MESSAGE("tiny ResNet launches per step: ", with, " with the fold, ", without, " without");
}
}  // namespace
