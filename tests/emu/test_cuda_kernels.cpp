/* test_cuda_kernels.cpp: every CUDA kernel (kernels/cuda/ .cu files), run by the emulator, against the CPU
 * kernels (kernels/cpu/) or a double-precision loop.
 *
 * Odd sizes (including a partial last block and n smaller than one block), two block sizes, and
 * forward / reversed / shuffled thread and block order. Pointwise kernels must equal the CPU
 * kernel bitwise (same float operation per element); reductions must agree with a double sum
 * within float tolerance and be bitwise identical across orders (no float atomics, fixed tree).
 */
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "engine/random.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cuda/cast.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/reduce.h"
#include "tests/common/check.h"
#include "tests/emu/emu_util.h"

using namespace nimbus;
using namespace nimbus::test;
using emu::Order;

namespace {

const int64_t kSizes[] = {1, 31, 257, 1000, 4099};
const int kBlocks[] = {64, 256};

// Uniform in [-2, 2], with every 7th element exactly 0 (ReLU's kink must follow the convention).
std::vector<float> random_floats(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v = to_float(random_vec(size_t(n), rng, -2, 2));
  for (size_t i = seed % 7; i < v.size(); i += 7) v[i] = 0.0f;  // zeros at different places per seed
  return v;
}

// Runs `gpu` (which writes into the device buffers) for every size, block size and order, and
// checks each output against `cpu` computed on the host copies, bitwise.
// inputs: number of random input arrays; the output buffer starts as random too (for in-place ops).
void check_pointwise(const char* name, int inputs,
                     const std::function<void(float* y, std::vector<const float*> in, int64_t n, int block)>& gpu,
                     const std::function<void(float* y, std::vector<const float*> in, int64_t n)>& cpu) {
  for (int64_t n : kSizes) {
    std::vector<std::vector<float>> host;
    for (int k = 0; k < inputs; ++k) host.push_back(random_floats(n, uint64_t(10 * n + k)));
    std::vector<float> y0 = random_floats(n, uint64_t(7 * n + 99));
    std::vector<float> want = y0;
    std::vector<const float*> hin;
    for (auto& h : host) hin.push_back(h.data());
    cpu(want.data(), hin, n);
    for (int block : kBlocks) {
      std::vector<float> first;
      for (Order o : kAllOrders) {
        ScopedOrder so(o, uint64_t(n));
        std::vector<std::unique_ptr<DeviceBuffer<float>>> din;
        std::vector<const float*> dptr;
        for (auto& h : host) din.push_back(std::make_unique<DeviceBuffer<float>>(h)), dptr.push_back(din.back()->p);
        DeviceBuffer<float> y(y0);
        gpu(y.p, dptr, n, block);
        auto got = y.download();
        CAPTURE(name);
        CAPTURE(n);
        CAPTURE(block);
        CAPTURE(emu::order_name(o));
        check_close(got, want, 0, 0, name);  // bitwise (NaN-free inputs)
        if (first.empty())
          first = got;
        else
          CHECK(std::memcmp(first.data(), got.data(), got.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("cuda kernels: fill") {
  check_pointwise(
      "fill", 0, [](float* y, auto, int64_t n, int block) { cuda::fill(y, 0.25f, n, block); },
      [](float* y, auto, int64_t n) { cpu::fill(y, 0.25f, n); });
}

TEST_CASE("cuda kernels: add_inplace") {
  check_pointwise(
      "add_inplace", 1, [](float* y, auto in, int64_t n, int block) { cuda::add_inplace(y, in[0], n, block); },
      [](float* y, auto in, int64_t n) { cpu::add_inplace(y, in[0], n); });
}

TEST_CASE("cuda kernels: relu_forward and relu_backward") {
  check_pointwise(
      "relu_forward", 1, [](float* y, auto in, int64_t n, int block) { cuda::relu_forward(y, in[0], n, block); },
      [](float* y, auto in, int64_t n) { cpu::relu_forward(y, in[0], n); });
  // in[1] plays the forward output y: random signs, so both branches are taken.
  check_pointwise(
      "relu_backward", 2,
      [](float* dx, auto in, int64_t n, int block) { cuda::relu_backward(dx, in[0], in[1], n, block); },
      [](float* dx, auto in, int64_t n) { cpu::relu_backward(dx, in[0], in[1], n); });
}

// The arithmetic kernels move 16-byte packs when every pointer is 16-byte aligned, else go element
// by element: operands one float past an aligned base (and an output at another offset) must give
// the same bits as the CPU kernels, as the aligned runs above do. Emulator: a misaligned 16-byte
// access would be an error, so this also proves the launcher chose the element path.
TEST_CASE("cuda kernels: arithmetic kernels and casts on misaligned operands take the element path, same bits") {
  const int64_t n = 1001;
  const std::vector<float> a = random_floats(n + 3, 5), b = random_floats(n + 3, 6);
  DeviceBuffer<float> da(a), db(b), dy(static_cast<size_t>(n + 3));
  std::vector<float> want(static_cast<size_t>(n));
  auto got = [&](int64_t y_off) {
    std::vector<float> all = dy.download();
    return std::vector<float>(all.begin() + y_off, all.begin() + y_off + n);
  };
  cpu::add(want.data(), a.data() + 1, b.data() + 3, n);
  cuda::add(dy.p + 2, da.p + 1, db.p + 3, n);
  check_close(got(2), want, 0, 0, "add, offsets 1, 3 -> 2");
  cpu::add_scaled(want.data(), a.data() + 1, b.data() + 1, 0.1f, n);
  cuda::add_scaled(dy.p + 1, da.p + 1, db.p + 1, 0.1f, n);
  check_close(got(1), want, 0, 0, "add_scaled, offsets 1 -> 1");
  cpu::relu_forward(want.data(), a.data() + 3, n);
  cuda::relu_forward(dy.p, da.p + 3, n);  // output aligned, input not
  check_close(got(0), want, 0, 0, "relu_forward, offset 3 -> 0");
  // The casts (8 elements a step when aligned): a float32 -> bfloat16 -> float32 round trip at odd offsets.
  DeviceBuffer<bfloat16> half(static_cast<size_t>(n + 3));
  cuda::cast_f32_to_bf16(half.p + 1, da.p + 2, n);
  cuda::cast_bf16_to_f32(dy.p + 1, half.p + 1, n);
  for (int64_t i = 0; i < n; ++i) want[size_t(i)] = float(bfloat16(a[size_t(i + 2)]));
  check_close(got(1), want, 0, 0, "casts, offsets 2 -> 1 -> 1");
}

TEST_CASE("cuda kernels: add and scale") {
  check_pointwise(
      "add", 2, [](float* y, auto in, int64_t n, int block) { cuda::add(y, in[0], in[1], n, block); },
      [](float* y, auto in, int64_t n) { cpu::add(y, in[0], in[1], n); });
  check_pointwise(
      "scale", 1, [](float* y, auto in, int64_t n, int block) { cuda::scale(y, in[0], -1.75f, n, block); },
      [](float* y, auto in, int64_t n) { cpu::scale(y, in[0], -1.75f, n); });
}

TEST_CASE("cuda kernels: scale in place (y aliases x)") {
  std::vector<float> x = random_floats(333, 5), want(x.size());
  cpu::scale(want.data(), x.data(), 3.0f, int64_t(x.size()));
  DeviceBuffer<float> d(x);
  cuda::scale(d.p, d.p, 3.0f, int64_t(x.size()), 64);
  check_close(d.download(), want, 0, 0, "scale in place");
}

TEST_CASE("cuda kernels: sum and mean (block reduction with shuffles and barriers)") {
  const int64_t sizes[] = {1, 31, 257, 1000, 4099, 70001};  // 70001 at block 64 needs > 1024 blocks: capped grid
  for (int64_t n : sizes) {
    std::vector<float> x = random_floats(n, uint64_t(n) + 3);
    double want = 0;
    for (float v : x) want += double(v);
    DeviceBuffer<float> dx(x), out(1);
    for (int block : kBlocks) {
      if (n == 70001 && block == 256) continue;  // one large case is enough for the emulator's time budget
      DeviceBuffer<float> scratch(size_t(cuda::reduce_scratch_floats(n, block)));
      float first_sum = 0, first_mean = 0;
      for (Order o : kAllOrders) {
        ScopedOrder so(o, 11);
        CAPTURE(n);
        CAPTURE(block);
        CAPTURE(emu::order_name(o));
        cuda::sum(out.p, dx.p, n, scratch.p, block);
        float s = out.download()[0];
        cuda::mean(out.p, dx.p, n, scratch.p, block);
        float m = out.download()[0];
        // float accumulation of |x| <= 2 over n terms: error well under 1e-6 * n
        CHECK(std::fabs(double(s) - want) <= 1e-5 + 1e-6 * double(n));
        CHECK(std::fabs(double(m) - want / double(n)) <= 1e-6 + 1e-6 * std::fabs(want / double(n)));
        if (o == Order::Forward) {
          first_sum = s, first_mean = m;
        } else {
          CHECK(std::memcmp(&s, &first_sum, 4) == 0);
          CHECK(std::memcmp(&m, &first_mean, 4) == 0);
        }
      }
    }
  }
}

TEST_CASE("cuda kernels: blocks in parallel on 2 OS threads give the serial results") {
  const int64_t n = 20011;
  std::vector<float> x = random_floats(n, 77), want_relu(static_cast<size_t>(n));
  cpu::relu_forward(want_relu.data(), x.data(), n);
  DeviceBuffer<float> dx(x), y(static_cast<size_t>(n)), out(1), scratch(size_t(cuda::reduce_scratch_floats(n, 64)));
  cuda::sum(out.p, dx.p, n, scratch.p, 64);
  float serial = out.download()[0];
  float parallel = 0;
  {
    ScopedBlockThreads threads(2);
    cuda::sum(out.p, dx.p, n, scratch.p, 64);
    parallel = out.download()[0];
    cuda::relu_forward(y.p, dx.p, n, 64);
  }
  CHECK(std::memcmp(&serial, &parallel, 4) == 0);
  check_close(y.download(), want_relu, 0, 0, "relu_forward with 2 block threads");
}

TEST_CASE("cuda kernels: reductions reject block sizes that are not whole warps") {
  DeviceBuffer<float> x(10), out(1), scratch(10);
  CHECK_THROWS_WITH_AS(cuda::sum(out.p, x.p, 10, scratch.p, 48), doctest::Contains("multiple of 32"), Error);
}

TEST_CASE("cuda kernels: a bad launch surfaces as nimbus::Error naming the launcher") {
  DeviceBuffer<float> y(10);
  CHECK_THROWS_WITH_AS(cuda::fill(y.p, 1.0f, 10, 2048), doctest::Contains("cuda::fill: CUDA launch failed"), Error);
}

}  // namespace
