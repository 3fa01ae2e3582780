// test_core.cpp: tensors, the caching allocator, the RNG and the autograd walk.
#include <doctest/doctest.h>

#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/ops/accumulate.h"
#include "engine/ops/activation.h"
#include "engine/ops/arith.h"
#include "engine/ops/linear.h"
#include "engine/optim/sgd.h"
#include "engine/ops/shape_ops.h"
#include "kernels/cpu/elementwise.h"
#include "tests/common/check.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>

#include <cstdlib>
#endif

using namespace nimbus;
using namespace nimbus::test;

TEST_CASE("shape: numel, indexing, printing, errors") {
  Shape s{2, 3, 4, 5};
  CHECK(s.ndim() == 4);
  CHECK(s.numel() == 120);
  CHECK(s[-1] == 5);
  CHECK(s.str() == "(2,3,4,5)");
  CHECK(Shape{}.numel() == 1);
  CHECK_THROWS_AS(s[4], Error);
  CHECK_THROWS_AS((Shape{1, 2, 3, 4, 5, 6, 7}), Error);
}

TEST_CASE("tensor: factories, copies and views") {
  Tensor a = Tensor::from_vector({2, 2}, {1, 2, 3, 4});
  CHECK(a.to_vector() == std::vector<float>{1, 2, 3, 4});
  Tensor b = a.clone();
  b.data()[0] = 9;
  CHECK(a.data()[0] == 1);  // clone is deep
  Tensor v = a.view({4});
  v.data()[1] = 7;
  CHECK(a.data()[1] == 7);  // view shares storage
  CHECK_THROWS_AS(a.view({3}), Error);
  CHECK(Tensor::zeros({3}).to_vector() == std::vector<float>{0, 0, 0});
  CHECK(Tensor::full({2}, 2.5f).to_vector() == std::vector<float>{2.5f, 2.5f});
  CHECK_THROWS_AS(Tensor::from_vector({2}, {1, 2, 3}), Error);
  CHECK_THROWS_AS(Tensor().shape(), Error);
  // ctest runs each case in a process of its own, where nothing registered the CUDA backend; a run of
  // the whole binary registers it in an earlier case.
  if (!device_available(Device::CUDA))
    CHECK_THROWS_WITH_AS(Tensor::zeros({2}, Device::CUDA), doctest::Contains("cuda"), Error);
  else
    CHECK(Tensor::zeros({2}, Device::CUDA).device() == Device::CUDA);
}

TEST_CASE("allocator: freed blocks are reused, not returned to the system") {
  CachingAllocator& a = cpu_allocator();
  const size_t big = 3 << 20;  // 3 MiB: glibc would mmap this every time
  void* p = a.allocate(big);
  a.deallocate(p);
  AllocatorStats before = a.stats();
  void* q = a.allocate(big);
  AllocatorStats after = a.stats();
  CHECK(q == p);
  CHECK(after.system_allocs == before.system_allocs);
  CHECK(after.cache_hits == before.cache_hits + 1);
  a.deallocate(q);
  CHECK(CachingAllocator::round_size(1) == 512);
  CHECK(CachingAllocator::round_size((1 << 20) + 1) == (1 << 20) + (1 << 18));  // 1.25 MiB class
  for (size_t n : {size_t(1), size_t(1000), size_t(5) << 20, size_t(77777777), (size_t(1) << 61) + 1}) {
    size_t r = CachingAllocator::round_size(n);
    CHECK(r >= n);
    CHECK(double(r) <= 1.25 * double(n) + 512);
  }
  // Sizes no machine has are errors, not a wrapped size class (or, past 1 << 61, an endless loop),
  // and a tensor whose byte count would wrap is refused before any allocation.
  CHECK_THROWS_AS(CachingAllocator::round_size((size_t(1) << 62) + 1), Error);
  CHECK_THROWS_WITH_AS(Tensor::empty({int64_t(1) << 62}), doctest::Contains("too large"), Error);
  CHECK_THROWS_WITH_AS(Tensor::empty({int64_t(1) << 61, 2}, Device::CPU, DType::BF16), doctest::Contains("too large"),
                       Error);
}

#if defined(__SANITIZE_ADDRESS__)
// Only under AddressSanitizer (scripts/test.sh --sanitize): the poisoning allocator.h describes.
namespace {
void* aligned_host_alloc(size_t n) { return std::aligned_alloc(64, n); }
void aligned_host_free(void* p) { std::free(p); }
CachingAllocator::Pool asan_test_pool = 0;
CachingAllocator::Pool asan_test_pool_fn() { return asan_test_pool; }
bool poisoned(const char* p) { return __asan_address_is_poisoned(p) != 0; }
}  // namespace

TEST_CASE("allocator: under AddressSanitizer a block's slack and a cached block are poisoned, a private pool's never") {
  CachingAllocator a(aligned_host_alloc, aligned_host_free);
  a.set_pool_fn(asan_test_pool_fn);
  char* p = static_cast<char*>(a.allocate(100));  // a 512-byte block
  CHECK(!poisoned(p));
  CHECK(!poisoned(p + 99));
  CHECK(poisoned(p + 104));  // the slack, from the next 8-byte granule
  CHECK(poisoned(p + 511));
  a.deallocate(p);
  CHECK(poisoned(p));  // cached: a view used after its storage was freed is reported
  char* q = static_cast<char*>(a.allocate(300));
  REQUIRE(q == p);  // the same block, handed out again
  CHECK(!poisoned(q + 299));
  CHECK(poisoned(q + 304));
  a.deallocate(q);

  // A private pool (a graph capture): nothing poisoned, the replays write each block's longest use.
  const CachingAllocator::Pool priv = a.new_private_pool();
  asan_test_pool = priv;
  char* g = static_cast<char*>(a.allocate(400));
  CHECK(!poisoned(g + 399));
  a.deallocate(g);
  CHECK(!poisoned(g));
  CHECK(!poisoned(g + 511));
  char* h = static_cast<char*>(a.allocate(100));
  REQUIRE(h == g);
  CHECK(!poisoned(h + 399));
  a.deallocate(h);
  asan_test_pool = 0;
  a.release_private_pool(priv, 0);  // the graph is gone: its blocks may now be freed
  a.empty_cache();

  // Memory that is not host memory (a real GPU's) is left alone.
  CachingAllocator d(aligned_host_alloc, aligned_host_free, /*host_memory=*/false);
  char* r = static_cast<char*>(d.allocate(100));
  CHECK(!poisoned(r + 104));
  d.deallocate(r);
  CHECK(!poisoned(r));
  d.empty_cache();
}
#endif

TEST_CASE("rng: deterministic, state round trip, unbiased below()") {
  Rng a(42), b(42);
  for (int i = 0; i < 10; ++i) CHECK(a.next_u64() == b.next_u64());
  auto st = a.state();
  uint64_t x = a.next_u64();
  a.set_state(st);
  CHECK(a.next_u64() == x);
  int counts[3] = {0, 0, 0};
  for (int i = 0; i < 30000; ++i) counts[a.below(3)]++;
  for (int c : counts) CHECK(std::abs(c - 10000) < 500);
  // normal(): mean 0, variance 1, and a normal's shape, not just its first two moments (Kaiming
  // initialisation rests on it): the fourth moment 3 (a uniform of variance 1 has 1.8) and 4.55% of
  // draws beyond 2 standard deviations (the uniform: none). 20,000 draws: the fourth moment's standard
  // error is ~0.07, the tail share's ~0.15 points.
  double m = 0, m2 = 0, m4 = 0;
  int beyond2 = 0;
  for (int i = 0; i < 20000; ++i) {
    double z = a.normal();
    m += z;
    m2 += z * z;
    m4 += z * z * z * z;
    beyond2 += std::fabs(z) > 2;
  }
  CHECK(std::fabs(m / 20000) < 0.05);
  CHECK(std::fabs(m2 / 20000 - 1) < 0.05);
  CHECK(std::fabs(m4 / 20000 - 3) < 0.35);
  CHECK(std::fabs(beyond2 / 20000.0 - 0.0455) < 0.008);
}

TEST_CASE("relu kernel: backward matches finite differences in double") {
  Rng rng(1);
  const int n = 37;
  auto x = random_vec(n, rng);
  for (auto& v : x)
    if (std::fabs(v) < 1e-3) v = 0.5;  // keep away from the kink
  auto r = random_vec(n, rng);
  auto loss = [&](const std::vector<double>& xs) {
    std::vector<double> y(n);
    cpu::relu_forward(y.data(), xs.data(), n);
    return dot(y, r);
  };
  std::vector<double> y(n), dx(n);
  cpu::relu_forward(y.data(), x.data(), n);
  cpu::relu_backward(dx.data(), r.data(), y.data(), n);
  check_close(dx, numeric_grad(loss, x), 1e-7, 1e-6, "relu dx");
}

TEST_CASE("relu propagates NaN like PyTorch (a diverged net must not look finite)") {
  Tensor y = relu(Tensor::from_vector({3}, {NAN, -1.f, 2.f}));
  std::vector<float> v = y.to_vector();
  CHECK(std::isnan(v[0]));
  CHECK(v[1] == 0.f);
  CHECK(v[2] == 2.f);
}

TEST_CASE("autograd: leaf gradients accumulate until zero_grad") {
  Tensor x = Tensor::from_vector({4}, {-1, 2, -3, 4});
  x.set_requires_grad(true);
  Tensor dy = Tensor::from_vector({4}, {1, 1, 1, 1});
  relu(x).backward(dy);
  CHECK(x.grad().to_vector() == std::vector<float>{0, 1, 0, 1});
  relu(x).backward(dy);
  CHECK(x.grad().to_vector() == std::vector<float>{0, 2, 0, 2});
  x.zero_grad();
  CHECK(!x.grad().defined());
}

TEST_CASE("autograd: a tensor used twice gets the sum of both gradients") {
  // h = relu(x) has two consumers, a = relu(h) and b = mul_scalar(h, 3), joined in y = a + b: one
  // backward must add their contributions at h (1 + 3 where x > 0). A walk that assigned instead of
  // adding would leave 1 or 3, whichever consumer ran last.
  Tensor x = Tensor::from_vector({3}, {1, -1, 2});
  x.set_requires_grad(true);
  Tensor h = relu(x);
  Tensor y = add(relu(h), mul_scalar(h, 3.f));
  y.backward(Tensor::ones({3}));
  CHECK(x.grad().to_vector() == std::vector<float>{4, 0, 4});
  // And across backward() calls, leaves accumulate: a second graph over x adds 2 more where x > 0.
  relu(x).backward(Tensor::full({3}, 2.f));
  CHECK(x.grad().to_vector() == std::vector<float>{6, 0, 6});
}

TEST_CASE("autograd: a kept (not copied) first gradient is never shared with another tensor") {
  // add() hands the same dy to both inputs, and the caller's grad_output is the caller's: backward
  // keeps a first gradient only when nothing else holds it, so later accumulation into one leaf's
  // gradient leaves the other leaf's, and the caller's tensor, alone.
  Tensor a = Tensor::from_vector({3}, {1, 2, 3}), b = Tensor::from_vector({3}, {4, 5, 6});
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  const Tensor dy = Tensor::from_vector({3}, {1, 10, 100});
  add(a, b).backward(dy);
  CHECK(a.grad().to_vector() == std::vector<float>{1, 10, 100});
  CHECK(b.grad().to_vector() == std::vector<float>{1, 10, 100});
  relu(a).backward(Tensor::ones({3}));  // accumulates into a.grad only
  CHECK(a.grad().to_vector() == std::vector<float>{2, 11, 101});
  CHECK(b.grad().to_vector() == std::vector<float>{1, 10, 100});
  CHECK(dy.to_vector() == std::vector<float>{1, 10, 100});
  // A gradient that is a view of another tensor's storage (flatten's backward reshapes dy).
  Tensor c = Tensor::from_vector({1, 3}, {1, 2, 3});
  c.set_requires_grad(true);
  const Tensor dflat = Tensor::from_vector({1, 3}, {7, 8, 9});
  flatten(c).backward(dflat);
  relu(c).backward(Tensor::ones({1, 3}));
  CHECK(c.grad().to_vector() == std::vector<float>{8, 9, 10});
  CHECK(dflat.to_vector() == std::vector<float>{7, 8, 9});
  // A leaf whose backward is its own seed: the seed tensor stays the caller's.
  Tensor d = Tensor::from_vector({2}, {1, 2});
  d.set_requires_grad(true);
  const Tensor seed = Tensor::from_vector({2}, {5, 6});
  d.backward(seed);
  d.backward(seed);
  CHECK(d.grad().to_vector() == std::vector<float>{10, 12});
  CHECK(seed.to_vector() == std::vector<float>{5, 6});
}

TEST_CASE("autograd: no-grad mode records nothing - a used graph cannot be reused") {
  Tensor x = Tensor::from_vector({2}, {1, 2});
  x.set_requires_grad(true);
  {
    NoGradGuard ng;
    Tensor y = relu(x);
    CHECK(!y.requires_grad());
    CHECK(!y.grad_fn());
  }
  Tensor y = relu(x);
  CHECK(y.grad_fn());
  CHECK(y.grad_fn()->op == "relu");
  y.backward(Tensor::ones({2}));
  CHECK(!y.grad_fn()->backward);  // saved tensors freed after use
  CHECK_THROWS_WITH_AS(y.backward(Tensor::ones({2})), doctest::Contains("already"), Error);
  CHECK_THROWS_AS(relu(x).backward(), Error);  // 2 elements: no implicit gradient
  CHECK_THROWS_AS(relu(x).backward(Tensor::ones({3})), Error);
}

// A gradient has its tensor's shape, dtype and device, whoever gives it: the implicit seed of a
// bfloat16 output was float32 (a float32 .grad on a bfloat16 leaf, and the next accumulation threw).
TEST_CASE("autograd: gradients given or seeded have the tensor's dtype, a mismatch is an error naming both") {
  Tensor x = Tensor::from_vector({1}, {2.f}).to(DType::BF16);
  x.set_requires_grad(true);
  reshape(x, Shape{}).backward();  // reshape passes the seed through to the leaf
  REQUIRE(x.grad().defined());
  CHECK(x.grad().dtype() == DType::BF16);
  CHECK_NOTHROW(relu(x).backward(Tensor::ones({1}).to(DType::BF16)));  // accumulates into it
  CHECK(x.grad().to(DType::F32).to_vector() == std::vector<float>{2.f});
  CHECK_THROWS_WITH_AS(relu(x).backward(Tensor::ones({1})), doctest::Contains("bfloat16"), Error);
  CHECK_THROWS_WITH_AS(x.set_grad(Tensor::ones({1})), doctest::Contains("set_grad"), Error);
  CHECK_THROWS_AS(x.set_grad(Tensor::ones({2}).to(DType::BF16)), Error);
  CHECK_NOTHROW(x.set_grad(Tensor()));  // clearing is always allowed
}

// What an op saved for backward and was written in place before backward ran gave a wrong gradient in
// silence (relu's mask from overwritten outputs; linear's dx from weights an optimiser step had moved).
// As in PyTorch, each in-place write counts, and backward refuses a saved tensor written since.
TEST_CASE("autograd: a tensor saved for backward and written in place since is an error naming the op") {
  Tensor x = Tensor::from_vector({3}, {-1, 2, 3});
  x.set_requires_grad(true);
  Tensor y = relu(x);
  const uint64_t v = y.version();
  y.fill_(-5.f);
  CHECK(y.version() == v + 1);
  CHECK_THROWS_WITH_AS(y.backward(Tensor::ones({3})), doctest::Contains("relu saved"), Error);
  CHECK_FALSE(x.grad().defined());  // nothing delivered
  // Checked before any node runs: a stale node deep in the graph leaves every .grad as it was.
  Tensor left = Tensor::from_vector({2}, {1, -1}), right = Tensor::from_vector({2}, {0.5f, 2});
  left.set_requires_grad(true), right.set_requires_grad(true);
  Tensor s = add(relu(left), gelu(right));
  right.detach().fill_(0.f);  // gelu saved right
  CHECK_THROWS_WITH_AS(s.backward(Tensor::ones({2})), doctest::Contains("gelu saved"), Error);
  CHECK_FALSE(left.grad().defined());
  CHECK_FALSE(right.grad().defined());

  // An optimiser step between a forward and its backward (the parameter linear saved for dx moved).
  Tensor w = Tensor::from_vector({1, 2}, {1, 1}), a = Tensor::from_vector({1, 2}, {1, 1});
  w.set_requires_grad(true), a.set_requires_grad(true);
  SGD sgd({{"w", w}}, SGDOptions{0.1});
  w.set_grad(Tensor::ones({1, 2}));
  Tensor z = linear(a, w, Tensor());
  sgd.step();
  CHECK_THROWS_WITH_AS(z.backward(Tensor::ones({1, 1})), doctest::Contains("linear saved"), Error);

  // copy_ and add_inplace count too; a write into a clone, or into an input the op did not save, does not.
  for (int how = 0; how < 2; ++how) {
    CAPTURE(how);
    Tensor p = Tensor::from_vector({2}, {0.5f, -1});
    p.set_requires_grad(true);
    Tensor q = gelu(p);  // saves its input
    Tensor pd = p.detach();  // the same storage
    if (how == 0) pd.copy_(Tensor::from_vector({2}, {3, 3}));
    else add_inplace(pd, Tensor::ones({2}));
    CHECK_THROWS_WITH_AS(q.backward(Tensor::ones({2})), doctest::Contains("gelu saved"), Error);
  }
  Tensor b = Tensor::from_vector({2}, {1, 2}), c = Tensor::from_vector({2}, {3, 4});
  b.set_requires_grad(true);
  Tensor sum = add(b, c);  // saves nothing: its gradient is dy for both
  c.fill_(0.f);
  Tensor r = relu(b);
  Tensor rc = r.clone();
  rc.fill_(-1.f);
  CHECK_NOTHROW(sum.backward(Tensor::ones({2})));
  CHECK_NOTHROW(r.backward(Tensor::ones({2})));
  CHECK(b.grad().to_vector() == std::vector<float>{2, 2});
}

// Only a leaf's requires_grad can be set, either way: switching it off on an op's output cut the
// gradient to everything before it in silence (PyTorch refuses both too).
TEST_CASE("autograd: requires_grad of a tensor an op made cannot be changed") {
  Tensor x = Tensor::from_vector({2}, {1, 2});
  x.set_requires_grad(true);
  Tensor h = relu(x);
  CHECK_THROWS_WITH_AS(h.set_requires_grad(false), doctest::Contains("detach()"), Error);
  CHECK_THROWS_WITH_AS(h.set_requires_grad(true), doctest::Contains("relu"), Error);
  CHECK(h.requires_grad());
  x.set_requires_grad(false);  // a leaf may be switched off
  CHECK_FALSE(relu(x).requires_grad());
}
