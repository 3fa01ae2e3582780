// test_dtype.cpp: bfloat16 tensors: casts (round to nearest even, NaN kept, overflow to inf),
// storage and copies on both backends, the float32-only data() guard, and safetensors files.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "backends/cuda/backend.h"
#include "engine/io/safetensors.h"
#include "engine/random.h"
#include "engine/tensor.h"
#include "kernels/common/bfloat16.h"

using namespace nimbus;

namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Inputs with a known bf16 (hand-derived: keep the top 16 bits, add one when the dropped half is
// above 0x8000, or exactly 0x8000 with the kept lsb odd).
struct Case {
  uint32_t in;
  uint16_t want;
};
const Case kCases[] = {
    {0x3F800000u, 0x3F80},  // 1
    {0x3F808000u, 0x3F80},  // 1 + 2^-8: a tie, kept lsb even: down
    {0x3F818000u, 0x3F82},  // a tie, kept lsb odd: up
    {0x3F808001u, 0x3F81},  // just above the tie: up
    {0x3F807FFFu, 0x3F80},  // just below: down
    {0xBF818000u, 0xBF82},  // negative ties round the same way in magnitude
    {0x7F7FFFFFu, 0x7F80},  // the largest float rounds up to +inf
    {0x7F800000u, 0x7F80},  // +inf stays
    {0xFF800000u, 0xFF80},  // -inf stays
    {0x00000001u, 0x0000},  // the smallest subnormal rounds to +0
    {0x00018000u, 0x0002},  // a subnormal tie, kept lsb odd: up
    {0x80000000u, 0x8000},  // -0 stays -0
};

std::vector<float> case_inputs() {
  std::vector<float> v;
  for (const Case& c : kCases) v.push_back(from_bits(c.in));
  v.push_back(std::numeric_limits<float>::quiet_NaN());
  v.push_back(from_bits(0x7F800001u));  // a signalling NaN whose payload sits in the dropped half
  return v;
}

void check_bits(const std::vector<uint16_t>& got) {
  const size_t n = sizeof(kCases) / sizeof(kCases[0]);
  REQUIRE(got.size() == n + 2);
  for (size_t i = 0; i < n; ++i) {
    CAPTURE(i);
    CHECK(got[i] == kCases[i].want);
  }
  for (size_t i = n; i < n + 2; ++i) {  // NaN stays NaN (never becomes inf), quiet bit set
    CAPTURE(i);
    CHECK((got[i] & 0x7F80) == 0x7F80);
    CHECK((got[i] & 0x007F) != 0);
    CHECK((got[i] & 0x0040) != 0);
  }
}

std::vector<uint16_t> bits_of(const Tensor& t) {
  const Tensor h = t.to(Device::CPU);
  std::vector<uint16_t> bits(size_t(h.numel()));
  std::memcpy(bits.data(), h.data_bf16(), bits.size() * 2);  // the patterns (not the values)
  return bits;
}

}  // namespace

TEST_CASE("dtype: float32 -> bfloat16 rounds to nearest even, keeps NaN, overflows to inf (CPU)") {
  const std::vector<float> in = case_inputs();
  const Tensor b = Tensor::from_vector({int64_t(in.size())}, in).to(DType::BF16);
  CHECK(b.dtype() == DType::BF16);
  CHECK(b.nbytes() == in.size() * 2);
  check_bits(bits_of(b));
  // Back to float32: exact (the widened bits), and to_vector widens the same way.
  const std::vector<float> back = b.to(DType::F32).to_vector(), direct = b.to_vector();
  const std::vector<uint16_t> bits = bits_of(b);
  for (size_t i = 0; i < in.size(); ++i) {
    CAPTURE(i);
    const float want = from_bits(uint32_t(bits[i]) << 16);
    CHECK(std::memcmp(&back[i], &want, 4) == 0);
    CHECK(std::memcmp(&direct[i], &want, 4) == 0);
  }
}

TEST_CASE("dtype: the CUDA backend casts to the same bits and moves bfloat16 tensors between devices") {
  REQUIRE(cuda::register_cuda_backend());
  const std::vector<float> in = case_inputs();
  const Tensor x = Tensor::from_vector({int64_t(in.size())}, in);
  const Tensor on_gpu = x.to(Device::CUDA).to(DType::BF16);
  CHECK(on_gpu.device() == Device::CUDA);
  check_bits(bits_of(on_gpu));
  // Random values: both backends agree bit for bit, and a round trip through the device keeps them.
  Rng rng(5);
  const Tensor r = Tensor::randn({1001}, rng, 0.f, 30.f);
  const std::vector<uint16_t> cpu_bits = bits_of(r.to(DType::BF16));
  CHECK(bits_of(r.to(Device::CUDA).to(DType::BF16)) == cpu_bits);
  CHECK(bits_of(r.to(DType::BF16).to(Device::CUDA).to(Device::CPU)) == cpu_bits);
  const std::vector<float> widened = r.to(Device::CUDA).to(DType::BF16).to(DType::F32).to_vector();
  for (size_t i = 0; i < widened.size(); ++i) CHECK(widened[i] == bf16_to_float(cpu_bits[i]));
  CHECK(on_gpu.clone().dtype() == DType::BF16);
}

TEST_CASE("dtype: float32-only operations refuse a bfloat16 tensor by name") {
  Tensor b = Tensor::zeros({2, 3}).to(DType::BF16);
  CHECK_THROWS_WITH_AS(b.data(), doctest::Contains("(2,3) cpu bfloat16: this operation needs float32 data"), Error);
  CHECK_THROWS_WITH_AS(b.fill_(1.f), doctest::Contains("needs float32"), Error);
  CHECK_THROWS_WITH_AS(Tensor::zeros({2, 3}).data_bf16(), doctest::Contains("is not bfloat16"), Error);
  Tensor f = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(f.copy_(b), doctest::Contains("copy_: destination (2,3) cpu vs source (2,3) cpu bfloat16"),
                       Error);
  CHECK(b.to(DType::BF16).same(b));  // already bfloat16: the same tensor
}

TEST_CASE("dtype: safetensors stores bfloat16 as BF16 and reads it back widened to float32") {
  Rng rng(9);
  const Tensor w = Tensor::randn({3, 5}, rng);
  const Tensor wb = w.to(DType::BF16);
  const std::string path = "test_dtype.tmp.safetensors";
  save_safetensors(path, {{"w", w}, {"wb", wb}}, {});
  const SafetensorsFile f = load_safetensors(path);
  std::remove(path.c_str());
  CHECK(f.dtypes.at("w") == "F32");
  CHECK(f.dtypes.at("wb") == "BF16");
  REQUIRE(f.tensors.size() == 2);
  CHECK(f.tensors[0].second.to_vector() == w.to_vector());
  CHECK(f.tensors[1].second.dtype() == DType::F32);
  CHECK(f.tensors[1].second.to_vector() == wb.to_vector());
}
