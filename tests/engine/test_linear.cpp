// test_linear.cpp: GEMM (OpenBLAS vs the reference loops, all transpose flags),
// linear backward vs finite differences (double), the op vs PyTorch, errors.
#include <doctest/doctest.h>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops/linear.h"
#include "kernels/cpu/gemm.h"
#include "tests/common/check.h"

using namespace nimbus;
using namespace nimbus::test;

namespace {
const SafetensorsFile& linear_fixtures() { return fixture_file("ops_conv.safetensors"); }
}  // namespace

TEST_CASE("gemm reference: a hand-computed 2x2 product with alpha and beta") {
  std::vector<double> A{1, 2, 3, 4}, B{5, 6, 7, 8}, C{1, 1, 1, 1};
  cpu::gemm_ref(false, false, 2, 2, 2, 2.0, A.data(), 2, B.data(), 2, 0.5, C.data(), 2);
  CHECK(C == std::vector<double>{2 * 19 + 0.5, 2 * 22 + 0.5, 2 * 43 + 0.5, 2 * 50 + 0.5});
  std::vector<double> D(4, NAN);  // beta = 0 never reads C, even NaN
  cpu::gemm_ref(true, true, 2, 2, 2, 1.0, A.data(), 2, B.data(), 2, 0.0, D.data(), 2);
  CHECK(D == std::vector<double>{1 * 5 + 3 * 6, 1 * 7 + 3 * 8, 2 * 5 + 4 * 6, 2 * 7 + 4 * 8});  // A^T B^T
}

TEST_CASE("gemm: OpenBLAS float path matches the reference for every transpose and odd sizes") {
  Rng rng(8);
  for (auto [M, N, K] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {130, 67, 129}}) {
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      CAPTURE(M);
      CAPTURE(t);
      // Leading dimensions larger than the rows, to test lda/ldb/ldc handling.
      const int64_t lda = (ta ? M : K) + 2, ldb = (tb ? K : N) + 1, ldc = N + 3;
      auto A = to_float(random_vec(size_t((ta ? K : M) * lda), rng));
      auto B = to_float(random_vec(size_t((tb ? N : K) * ldb), rng));
      auto C0 = to_float(random_vec(size_t(M * ldc), rng));
      std::vector<float> C = C0;
      std::vector<double> Cd = to_double(C0);
      cpu::gemm<float>(ta, tb, M, N, K, 1.5f, A.data(), lda, B.data(), ldb, 0.5f, C.data(), ldc);
      cpu::gemm_ref<double>(ta, tb, M, N, K, 1.5, to_double(A).data(), lda, to_double(B).data(), ldb, 0.5, Cd.data(),
                            ldc);
      check_close(C, Cd, 1e-5, 1e-5, "C");
    }
  }
}

// gemm<float>'s tiles: 256 x 256 for a large product, sides cut to a small one's; a product of few
// tiles with enough work gets smaller ones (the longer side halved first, never below 64 or below the
// minimum work).
TEST_CASE("gemm_tiles: chosen by the shape, smaller for a product of few tiles, within their bounds") {
  const auto tiles = [](int64_t M, int64_t N, int64_t K) {
    const cpu::GemmTiles t = cpu::gemm_tiles(M, N, K);
    return std::array<int64_t, 2>{t.rows, t.cols};
  };
  CHECK(tiles(4096, 4096, 64) == std::array<int64_t, 2>{256, 256});  // 256 tiles already
  CHECK(tiles(64, 64, 64) == std::array<int64_t, 2>{64, 64});        // sides cut to the product's; one tile
  CHECK(tiles(64, 1024, 64) == std::array<int64_t, 2>{64, 256});     // 64 x 128 x 64 is under the minimum
  CHECK(tiles(100, 3, 1 << 20) == std::array<int64_t, 2>{64, 64});   // thin, long K: rows 128 -> 64, 2 tiles
  // 2 tiles -> rows 128 (4) -> cols 128 (6); a 64-row or 64-column tile would hold 2^23 < 2^24.
  CHECK(tiles(256, 320, 1024) == std::array<int64_t, 2>{128, 128});
  CHECK(tiles(512, 128, 4608) == std::array<int64_t, 2>{64, 64});    // ResNet-50's layer3 weight gradient
  for (auto [M, N, K] : std::vector<std::array<int64_t, 3>>{{1024, 512, 512}, {512, 128, 2048}, {2048, 128, 1024}}) {
    CAPTURE(M);
    CAPTURE(N);
    const auto [r, c] = tiles(M, N, K);
    CHECK(r >= cpu::kGemmMinTile);
    CHECK(c >= cpu::kGemmMinTile);
    CHECK(r * std::min(c, N) * K >= cpu::kGemmMinTileWork);
    CHECK(std::min(r, M) * c * K >= cpu::kGemmMinTileWork);
    // Enough tiles, or neither side could be halved again.
    const bool enough = ((M + r - 1) / r) * ((N + c - 1) / c) >= cpu::kGemmMinTiles;
    const bool rows_done = r == cpu::kGemmMinTile || (r / 2) * std::min(c, N) * K < cpu::kGemmMinTileWork;
    const bool cols_done = c == cpu::kGemmMinTile || std::min(r, M) * (c / 2) * K < cpu::kGemmMinTileWork;
    CHECK((enough || (rows_done && cols_done)));
    CHECK(((M + r - 1) / r) * ((N + c - 1) / c) >= 8);  // each was 2 to 8 tiles of 256 x 256
  }
}

// OpenBLAS split a call over the threads OpenMP allowed, and the split changed the rounding: 18% of a
// 64 x 1024 x 64 product's outputs differed between 1 and 2 threads, and a training run's weights with
// them. gemm<float> cuts C into tiles fixed by the shape, each a serial sgemm: the same bits on any
// number of threads, and when called from inside a parallel region (the per-image convolution paths).
TEST_CASE("gemm<float>: the same bits on 1 and 2 threads and inside a parallel region, sizes across tiles") {
  Rng rng(21);
  for (auto [M, N, K] : std::vector<std::array<int64_t, 3>>{{64, 1024, 64},
                                                             {300, 700, 129},
                                                             {1024, 64, 512},
                                                             {257, 513, 33},
                                                             {cpu::kGemmMaxTile, 2, 3000},
                                                             {256, 320, 1024}}) {  // 128 x 128 tiles
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      CAPTURE(M);
      CAPTURE(N);
      CAPTURE(t);
      const int64_t lda = ta ? M : K, ldb = tb ? K : N;
      const auto A = to_float(random_vec(size_t(M * K), rng)), B = to_float(random_vec(size_t(K * N), rng));
      const auto C0 = to_float(random_vec(size_t(M * N), rng));
      auto run = [&](int threads, bool in_region) {
        const ScopedOmpThreads scope(threads);
        std::vector<float> C = C0;
        if (in_region) {
#pragma omp parallel num_threads(2)
#pragma omp single
          cpu::gemm<float>(ta, tb, M, N, K, 1.5f, A.data(), lda, B.data(), ldb, 0.5f, C.data(), N);
        } else {
          cpu::gemm<float>(ta, tb, M, N, K, 1.5f, A.data(), lda, B.data(), ldb, 0.5f, C.data(), N);
        }
        return C;
      };
      const std::vector<float> one = run(1, false), two = run(2, false), nested = run(2, true);
      CHECK(one == two);
      CHECK(one == nested);
      // And the product it is, for every transpose: a tile's operand offsets differ with them.
      std::vector<double> Cd = to_double(C0);
      cpu::gemm_ref<double>(ta, tb, M, N, K, 1.5, to_double(A).data(), lda, to_double(B).data(), ldb, 0.5, Cd.data(), N);
      check_close(one, Cd, 1e-4, 1e-5, "C");
    }
  }
}

TEST_CASE("linear kernel: backward matches finite differences in double") {
  Rng rng(9);
  const int64_t N = 3, in = 7, out = 5;
  auto x = random_vec(size_t(N * in), rng), w = random_vec(size_t(out * in), rng), b = random_vec(size_t(out), rng);
  auto r = random_vec(size_t(N * out), rng);
  auto loss = [&](const std::vector<double>& xs, const std::vector<double>& ws, const std::vector<double>& bs) {
    std::vector<double> y(r.size());
    cpu::linear_forward(y.data(), xs.data(), ws.data(), bs.data(), N, in, out);
    return dot(y, r);
  };
  std::vector<double> dx(x.size()), dw(w.size()), db(b.size());
  cpu::linear_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), N, in, out);
  check_close(dx, numeric_grad([&](const std::vector<double>& v) { return loss(v, w, b); }, x), 1e-8, 1e-6, "dx");
  check_close(dw, numeric_grad([&](const std::vector<double>& v) { return loss(x, v, b); }, w), 1e-8, 1e-6, "dw");
  check_close(db, numeric_grad([&](const std::vector<double>& v) { return loss(x, w, v); }, b), 1e-8, 1e-6, "db");
}

TEST_CASE("linear kernel: float (OpenBLAS) matches double (reference) forward and backward") {
  Rng rng(10);
  const int64_t N = 9, in = 37, out = 11;
  auto xd = to_double(to_float(random_vec(size_t(N * in), rng)));
  auto wd = to_double(to_float(random_vec(size_t(out * in), rng)));
  auto bd = to_double(to_float(random_vec(size_t(out), rng)));
  auto dyd = to_double(to_float(random_vec(size_t(N * out), rng)));
  std::vector<double> y_ref(size_t(N * out)), dx_ref(xd.size()), dw_ref(wd.size()), db_ref(bd.size());
  cpu::linear_forward(y_ref.data(), xd.data(), wd.data(), bd.data(), N, in, out);
  cpu::linear_backward(dx_ref.data(), dw_ref.data(), db_ref.data(), dyd.data(), xd.data(), wd.data(), N, in, out);
  auto x = to_float(xd), w = to_float(wd), b = to_float(bd), dy = to_float(dyd);
  std::vector<float> y(y_ref.size()), dx(x.size()), dw(w.size()), db(b.size());
  cpu::linear_forward(y.data(), x.data(), w.data(), b.data(), N, in, out);
  cpu::linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), N, in, out);
  check_close(y, y_ref, 1e-5, 1e-5, "y");
  check_close(dx, dx_ref, 1e-5, 1e-5, "dx");
  check_close(dw, dw_ref, 1e-5, 1e-5, "dw");
  check_close(db, db_ref, 1e-5, 1e-5, "db");
}

TEST_CASE("linear op: forward and gradients match PyTorch, with and without bias") {
  for (int i = 0; i < 2; ++i) {
    const std::string c = str("linear", i, ".");
    CAPTURE(c);
    Tensor x = linear_fixtures().at(c + "x").clone(), w = linear_fixtures().at(c + "w").clone();
    x.set_requires_grad(true);
    w.set_requires_grad(true);
    Tensor b;
    if (linear_fixtures().find(c + "b")) {
      b = linear_fixtures().at(c + "b").clone();
      b.set_requires_grad(true);
    }
    CHECK(b.defined() == (i == 0));
    Tensor y = linear(x, w, b);
    check_close(y, linear_fixtures().at(c + "y"), 1e-5, 1e-4, "y");
    y.backward(linear_fixtures().at(c + "dy"));
    check_close(x.grad(), linear_fixtures().at(c + "dx"), 1e-5, 1e-4, "dx");
    check_close(w.grad(), linear_fixtures().at(c + "dw"), 1e-5, 1e-4, "dw");
    if (b.defined()) check_close(b.grad(), linear_fixtures().at(c + "db"), 1e-5, 1e-4, "db");
  }
}

TEST_CASE("linear op: only needed gradients, and errors naming the op and shapes") {
  Rng rng(4);
  Tensor x = Tensor::randn({3, 4}, rng), w = Tensor::randn({2, 4}, rng);
  w.set_requires_grad(true);
  linear(x, w, Tensor()).backward(Tensor::ones({3, 2}));
  CHECK(w.grad().defined());
  CHECK(!x.grad().defined());
  CHECK_THROWS_WITH_AS(linear(Tensor::zeros({3, 5}), w, Tensor()),
                       "linear: input (3,5) has 5 features but weight (2,4) expects 4", Error);
  CHECK_THROWS_WITH_AS(linear(Tensor::zeros({3, 4, 1}), w, Tensor()), doctest::Contains("linear: input (3,4,1)"),
                       Error);
  CHECK_THROWS_WITH_AS(linear(x, Tensor::zeros({2, 4, 1}), Tensor()), doctest::Contains("linear: weight (2,4,1)"),
                       Error);
  CHECK_THROWS_WITH_AS(linear(x, w, Tensor::zeros({3})), doctest::Contains("linear: bias (3)"), Error);
}
