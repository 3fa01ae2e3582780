/* test_emu_tensor_core.cpp: the emulator's tensor-core instruction models (kernels/cuda/tensor_core.h,
 * kernels/emu/tensor_core.cpp) and kernels/common/bfloat16.h.
 *
 * Expected values come from the PTX ISA's documented layouts, written out again here independently
 * of the models (fragment_* below), and from hand-computed conversions:
 *   - bf16 and tf32 conversions: ties, NaN, inf, subnormals, overflow;
 *   - mma m16n8k8 tf32 / m16n8k16 bf16: every lane's fragments filled from full matrices, D against a
 *     float64 product, all three orders; tf32 operands with nonzero low 13 bits; warp misuse reported;
 *   - ldmatrix x1/x2/x4 [.trans]: every lane's registers, bank-conflict counts, refused addresses;
 *   - cp.async: poison before the wait, data after it, zero-fill, group counting, misuse;
 *   - 8/16-byte vector accesses; dynamic shared memory above 48 KiB only after cudaFuncSetAttribute;
 *   - the worked example: a one-warp GEMM with cp.async + ldmatrix + mma (bf16) and with tf32.
 */
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/common/bfloat16.h"
#include "kernels/common/error.h"
#include "kernels/cuda/compat.h"  // allow_dynamic_smem
#include "kernels/cuda/tensor_core.h"
#include "tests/emu/emu_util.h"

using namespace nimbus;
using namespace nimbus::test;
using emu::Order;

namespace {

uint32_t fbits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float bitsf(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---------------------------------------------------------------------------------------------
// Conversions.
TEST_CASE("tensor core: bf16_from_float_rne / bf16_to_float against hand-computed cases") {
  struct Case {
    uint32_t f;
    uint16_t h;
    const char* what;
  };
  const Case cases[] = {
      {0x3F800000, 0x3F80, "1.0 exact"},
      {0x3F808000, 0x3F80, "tie, kept lsb even: down"},
      {0x3F818000, 0x3F82, "tie, kept lsb odd: up"},
      {0x3F808001, 0x3F81, "just above the tie: up"},
      {0x3F807FFF, 0x3F80, "just below the tie: down"},
      {0xBF818000, 0xBF82, "negative tie to even (magnitude up)"},
      {0xBF808000, 0xBF80, "negative tie to even (magnitude down)"},
      {0x7F800000, 0x7F80, "+inf"},
      {0xFF800000, 0xFF80, "-inf"},
      {0x7F7FFFFF, 0x7F80, "FLT_MAX overflows to inf"},
      {0x7F7F8000, 0x7F80, "tie at the top, odd: overflows to inf"},
      {0x7F7F7FFF, 0x7F7F, "largest value that stays finite"},
      {0x00008000, 0x0000, "subnormal tie, even: to zero"},
      {0x00018000, 0x0002, "subnormal tie, odd: up"},
      {0x00010000, 0x0001, "smallest bf16 subnormal, exact"},
      {0x80008001, 0x8001, "negative subnormal above the tie"},
      {0x007F8000, 0x0080, "largest subnormal rounds up to the smallest normal"},
      {0x80000000, 0x8000, "-0"},
      {0x7FC00000, 0x7FC0, "quiet NaN"},
      {0x7F800001, 0x7FC0, "signalling NaN with payload in the low bits only: stays NaN, quiet"},
      {0xFF800001, 0xFFC0, "negative signalling NaN"},
      {0x7FA00000, 0x7FE0, "NaN payload's top bits kept"},
  };
  for (const Case& c : cases) {
    CHECK_MESSAGE(bf16_from_float_rne(bitsf(c.f)) == c.h, c.what);
  }
  CHECK(bf16_to_float(0x3F80) == 1.0f);
  CHECK(fbits(bf16_to_float(0x0001)) == 0x00010000u);
  CHECK(fbits(bf16_to_float(0xFF80)) == 0xFF800000u);
  CHECK(std::isnan(bf16_to_float(0x7FC0)));
  CHECK(bf16x2_pack(0x1234, 0xABCD) == 0xABCD1234u);
  CHECK(bf16x2_lo(0xABCD1234u) == 0x1234);
  CHECK(bf16x2_hi(0xABCD1234u) == 0xABCD);
  // Round trip: every bf16 that is not NaN converts back to itself.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = bf16_to_float(uint16_t(h));
    if (!std::isnan(f)) REQUIRE(bf16_from_float_rne(f) == h);
  }
}

__global__ void cvt_kernel(const float* x, uint32_t* out, int n) {
  int i = int(threadIdx.x);
  if (i < n) out[i] = cvt_rna_tf32(x[i]);
}

TEST_CASE("tensor core: cvt_rna_tf32 rounds to nearest, ties away from zero") {
  struct Case {
    uint32_t f, tf32;
    const char* what;
  };
  const Case cases[] = {
      {0x3F800000, 0x3F800000, "1.0 exact"},
      {0x3F801000, 0x3F802000, "tie with an even kept lsb: away (RNE would go down)"},
      {0x3F803000, 0x3F804000, "tie with an odd kept lsb: away"},
      {0x3F800FFF, 0x3F800000, "below the tie"},
      {0x3F801001, 0x3F802000, "above the tie"},
      {0xBF801000, 0xBF802000, "negative tie: away from zero"},
      {0x7F7FF000, 0x7F800000, "tie at the top overflows to inf"},
      {0x7F7FEFFF, 0x7F7FE000, "largest finite stays"},
      {0x00001000, 0x00002000, "subnormal tie: away"},
      {0x7F800000, 0x7F800000, "+inf"},
      {0xFF800000, 0xFF800000, "-inf"},
      {0x7F800001, 0x7FFFFFFF, "NaN: canonical NaN"},
  };
  std::vector<float> x;
  for (const Case& c : cases) {
    CHECK_MESSAGE(emu::cvt_rna_tf32(bitsf(c.f)) == c.tf32, c.what);
    x.push_back(bitsf(c.f));
  }
  DeviceBuffer<float> dx(x);
  DeviceBuffer<uint32_t> out(x.size());
  launch(cvt_kernel, 1, 32, 0, nullptr, dx.p, out.p, int(x.size()));
  auto h = out.download();
  for (size_t i = 0; i < x.size(); ++i) CHECK_MESSAGE(h[i] == cases[i].tf32, cases[i].what);
}

// ---------------------------------------------------------------------------------------------
// mma. The PTX ISA's fragment layouts, written out again (groupID g, threadID_in_group t).
struct RC {
  int row, col;
};
RC frag_a_tf32(int lane, int i) { return {(lane >> 2) + 8 * (i & 1), (lane & 3) + 4 * (i >> 1)}; }  // a0..a3
RC frag_b_tf32(int lane, int i) { return {(lane & 3) + 4 * i, lane >> 2}; }                        // (k, n)
RC frag_c(int lane, int i) { return {(lane >> 2) + 8 * (i >> 1), 2 * (lane & 3) + (i & 1)}; }       // c0..c3
// bf16 element e of A (a0..a7; register e/2, bits 16*(e%2)) and of B (b0..b3).
RC frag_a_bf16(int lane, int e) { return {(lane >> 2) + 8 * ((e >> 1) & 1), 2 * (lane & 3) + (e & 1) + 8 * (e >> 2)}; }
RC frag_b_bf16(int lane, int e) { return {2 * (lane & 3) + (e & 1) + 8 * (e >> 1), lane >> 2}; }

// Two warps, each its own problem (offsets by warp): lane l of warp w reads its fragments at
// [(w*32 + l) * 4 + i] (A, C, D) and [(w*32 + l) * 2 + i] (B).
__global__ void mma_kernel(int bf16, const uint32_t* a, const uint32_t* b, const float* c, float* d) {
  int id = int(threadIdx.x);
  uint32_t fa[4], fb[2];
  float fc[4], fd[4];
  for (int i = 0; i < 4; ++i) fa[i] = a[id * 4 + i], fc[i] = c[id * 4 + i];
  for (int i = 0; i < 2; ++i) fb[i] = b[id * 2 + i];
  if (bf16)
    mma_m16n8k16_bf16(fd, fa, fb, fc);
  else
    mma_m16n8k8_tf32(fd, fa, fb, fc);
  for (int i = 0; i < 4; ++i) d[id * 4 + i] = fd[i];
}

struct MmaProblem {
  int K;
  std::vector<float> A, B, C;  // A 16xK, B Kx8, C 16x8 row-major (A, B as the operands' values)
  std::vector<uint32_t> fa, fb;
  std::vector<float> fc;
};

// Random operands with distinct values; tf32 operands keep random low 13 bits in their registers.
MmaProblem make_problem(bool bf16, int warps, std::mt19937& rng) {
  MmaProblem p;
  p.K = bf16 ? 16 : 8;
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  p.fa.resize(size_t(warps) * 128), p.fb.resize(size_t(warps) * 64), p.fc.resize(size_t(warps) * 128);
  for (int w = 0; w < warps; ++w) {
    std::vector<uint32_t> A(size_t(16 * p.K)), B(size_t(p.K * 8));
    std::vector<float> C(128);
    for (auto& v : A) v = bf16 ? bf16_from_float_rne(u(rng)) : (fbits(u(rng)) | 0x1555u);  // low bits set
    for (auto& v : B) v = bf16 ? bf16_from_float_rne(u(rng)) : (fbits(u(rng)) | 0x0AAAu);
    for (auto& v : C) v = u(rng);
    for (int l = 0; l < 32; ++l) {
      size_t base = size_t(w * 32 + l);
      if (bf16) {
        uint32_t ra[4] = {}, rb[2] = {};
        for (int e = 0; e < 8; ++e) {
          RC rc = frag_a_bf16(l, e);
          ra[e / 2] |= A[size_t(rc.row * 16 + rc.col)] << (16 * (e % 2));
        }
        for (int e = 0; e < 4; ++e) {
          RC rc = frag_b_bf16(l, e);
          rb[e / 2] |= B[size_t(rc.row * 8 + rc.col)] << (16 * (e % 2));
        }
        for (int i = 0; i < 4; ++i) p.fa[base * 4 + size_t(i)] = ra[i];
        for (int i = 0; i < 2; ++i) p.fb[base * 2 + size_t(i)] = rb[i];
      } else {
        for (int i = 0; i < 4; ++i) {
          RC rc = frag_a_tf32(l, i);
          p.fa[base * 4 + size_t(i)] = A[size_t(rc.row * 8 + rc.col)];
        }
        for (int i = 0; i < 2; ++i) {
          RC rc = frag_b_tf32(l, i);
          p.fb[base * 2 + size_t(i)] = B[size_t(rc.row * 8 + rc.col)];
        }
      }
      for (int i = 0; i < 4; ++i) {
        RC rc = frag_c(l, i);
        p.fc[base * 4 + size_t(i)] = C[size_t(rc.row * 8 + rc.col)];
      }
    }
    // Operand values as the hardware sees them: bf16 widened, tf32 = the register's top 19 bits.
    for (uint32_t v : A) p.A.push_back(bf16 ? bf16_to_float(uint16_t(v)) : bitsf(v & 0xFFFFE000u));
    for (uint32_t v : B) p.B.push_back(bf16 ? bf16_to_float(uint16_t(v)) : bitsf(v & 0xFFFFE000u));
    for (float v : C) p.C.push_back(v);
  }
  return p;
}

TEST_CASE("tensor core: mma m16n8k8 tf32 and m16n8k16 bf16 against a float64 product, every lane") {
  std::mt19937 rng(2024);
  const int warps = 2;
  for (bool bf16 : {false, true}) {
    MmaProblem p = make_problem(bf16, warps, rng);
    const int K = p.K;
    DeviceBuffer<uint32_t> da(p.fa), db(p.fb);
    DeviceBuffer<float> dc(p.fc), dd(size_t(warps) * 128);
    std::vector<float> first;
    for (Order o : kAllOrders) {
      ScopedOrder so(o, 5);
      launch(mma_kernel, 1, 32 * warps, 0, nullptr, int(bf16), da.p, db.p, dc.p, dd.p);
      auto h = dd.download();
      CHECK(emu::last_launch_stats().mma == warps);
      int truncation_mattered = 0;
      for (int w = 0; w < warps; ++w)
        for (int l = 0; l < 32; ++l)
          for (int i = 0; i < 4; ++i) {
            RC rc = frag_c(l, i);
            double acc = p.C[size_t(w * 128 + rc.row * 8 + rc.col)];
            for (int k = 0; k < K; ++k)
              acc += double(p.A[size_t(w * 16 * K + rc.row * K + k)]) * double(p.B[size_t(w * K * 8 + k * 8 + rc.col)]);
            float got = h[size_t((w * 32 + l) * 4 + i)];
            REQUIRE_MESSAGE(got == float(acc), (bf16 ? "bf16" : "tf32"), " warp ", w, " lane ", l, " d", i,
                            " (row ", rc.row, ", col ", rc.col, "): ", got, " vs ", float(acc));
            if (!bf16) {  // the same product with the full fp32 registers differs somewhere
              double full = p.C[size_t(w * 128 + rc.row * 8 + rc.col)];
              for (int k = 0; k < K; ++k) {
                RC ra{}, rb{};
                for (int ll = 0; ll < 32; ++ll)
                  for (int j = 0; j < 4; ++j) {
                    RC x = frag_a_tf32(ll, j);
                    if (x.row == rc.row && x.col == k) ra = {ll, j};
                    if (j < 2) {
                      RC y = frag_b_tf32(ll, j);
                      if (y.row == k && y.col == rc.col) rb = {ll, j};
                    }
                  }
                full += double(bitsf(p.fa[size_t((w * 32 + ra.row) * 4 + ra.col)])) *
                        double(bitsf(p.fb[size_t((w * 32 + rb.row) * 2 + rb.col)]));
              }
              truncation_mattered += float(full) != got;
            }
          }
      if (!bf16) CHECK(truncation_mattered > 100);  // the low 13 bits really are ignored
      if (first.empty())
        first = h;
      else
        CHECK(h == first);  // bitwise the same in every order
    }
  }
}

// Lanes 0-15 and 16-31 reach mma from different lines: .aligned is violated.
__global__ void mma_divergent_kernel(float* d) {
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float c[4] = {0, 0, 0, 0};
  if (threadIdx.x < 16)
    mma_m16n8k8_tf32(c, a, b, c);
  else
    mma_m16n8k8_tf32(c, a, b, c);
  d[threadIdx.x] = c[0];
}
// Lanes 24-31 return before the mma: a partial warp.
__global__ void mma_partial_kernel(float* d) {
  if (threadIdx.x >= 24) return;
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float c[4] = {1, 1, 1, 1};
  mma_m16n8k16_bf16(c, a, b, c);
  d[threadIdx.x] = c[0];
}

TEST_CASE("tensor core: mma from a divergent or partial warp is an error") {
  DeviceBuffer<float> d(64);
  for (bool strict : {true, false}) {
    ScopedOrder so(Order::Forward, 1, strict);
    std::string m = launch_error([&] { launch(mma_divergent_kernel, 1, 32, 0, nullptr, d.p); });
    CHECK_MESSAGE(m.find("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32") != std::string::npos, m);
    CHECK_MESSAGE(m.find("all 32 lanes must execute the same instruction") != std::string::npos, m);
    m = launch_error([&] { launch(mma_partial_kernel, 1, 32, 0, nullptr, d.p); });
    CHECK_MESSAGE(m.find("Threads 0-23 wait in mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32") != std::string::npos,
                  m);
    CHECK_MESSAGE(m.find("for threads 24-31 of its mask, which exited") != std::string::npos, m);
  }
  CHECK(launch_error([&] { launch(mma_partial_kernel, 1, 40, 0, nullptr, d.p); }).find("multiple of 32") !=
        std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// ldmatrix. Four logical 8x8 matrices M[j][r][c] = 0x1000*(j+1) + r*16 + c (all distinct), row r of
// matrix j stored at shared-memory slot slot(j, r) of `stride` 16-bit elements.
constexpr int kSlots = 32;
// Row r of matrix j lives in slot (8j + r) * 5 % 32: a permutation (5 is odd), so lane order != memory order.
uint16_t mat_value(int j, int r, int c) { return uint16_t(0x1000 * (j + 1) + r * 16 + c); }

__global__ void ldmatrix_kernel(uint32_t* out, int num, int trans, int stride, int misalign_lane) {
  __shared__ __align__(16) uint16_t s[kSlots * 64];
  int lane = int(threadIdx.x);
  int j = lane / 8, r = lane % 8;  // lane writes row r of matrix j into its slot, and gives its address
  uint16_t* row = s + ((j * 8 + r) * 5 % kSlots) * stride;
  for (int c = 0; c < 8; ++c) row[c] = uint16_t(0x1000 * (j + 1) + r * 16 + c);
  __syncwarp();
  if (lane >= 8 * num) row = s + 1;  // unused lanes: a misaligned address that must be ignored
  if (lane == misalign_lane) row = s + 4;
  uint32_t reg[4] = {0, 0, 0, 0};
  switch (num * 2 + trans) {
    case 2: ldmatrix_x1(reinterpret_cast<uint32_t(&)[1]>(reg), row); break;
    case 3: ldmatrix_x1_trans(reinterpret_cast<uint32_t(&)[1]>(reg), row); break;
    case 4: ldmatrix_x2(reinterpret_cast<uint32_t(&)[2]>(reg), row); break;
    case 5: ldmatrix_x2_trans(reinterpret_cast<uint32_t(&)[2]>(reg), row); break;
    case 8: ldmatrix_x4(reg, row); break;
    default: ldmatrix_x4_trans(reg, row); break;
  }
  for (int i = 0; i < 4; ++i) out[lane * 4 + i] = reg[i];
}

TEST_CASE("tensor core: ldmatrix x1/x2/x4 and .trans follow the PTX layout, and bank conflicts are counted") {
  DeviceBuffer<uint32_t> out(128);
  for (int stride : {8, 64}) {  // 16-byte rows packed (conflict-free), or 128 bytes apart (8-way conflicts)
    for (int num : {1, 2, 4})
      for (int trans : {0, 1})
        for (Order o : kAllOrders) {
          ScopedOrder so(o, 3);
          launch(ldmatrix_kernel, 1, 32, 0, nullptr, out.p, num, trans, stride, -1);
          auto h = out.download();
          for (int l = 0; l < 32; ++l)
            for (int j = 0; j < 4; ++j) {
              // PTX: lane l holds (row l/4, cols 2(l%4), 2(l%4)+1) of matrix j; .trans: of its transpose.
              int r = l / 4, c = 2 * (l % 4);
              uint32_t want = j >= num ? 0u
                              : trans  ? uint32_t(mat_value(j, c, r)) | uint32_t(mat_value(j, c + 1, r)) << 16
                                       : uint32_t(mat_value(j, r, c)) | uint32_t(mat_value(j, r, c + 1)) << 16;
              REQUIRE_MESSAGE(h[size_t(l * 4 + j)] == want, "x", num, trans ? ".trans" : "", " stride ", stride,
                              " lane ", l, " reg ", j);
            }
          const auto st = emu::last_launch_stats();
          CHECK(st.ldmatrix == 1);
          // Packed rows: each matrix's 8 rows cover all 32 banks once (1 wavefront). Rows 128 bytes
          // apart all map to banks 0-3: 8 wavefronts per matrix, 7 extra.
          CHECK(st.ldmatrix_wavefronts == (stride == 8 ? num : 8 * num));
          CHECK(st.smem_bank_conflicts == (stride == 8 ? 0 : 7 * num));
        }
  }
  std::string m = launch_error([&] { launch(ldmatrix_kernel, 1, 32, 0, nullptr, out.p, 4, 0, 8, 13); });
  CHECK_MESSAGE(m.find("lane 13 gives row address") != std::string::npos, m);
  CHECK_MESSAGE(m.find("not 16-byte aligned") != std::string::npos, m);
  CHECK_MESSAGE(m.find("ldmatrix.sync.aligned.m8n8.x4.shared.b16 at") != std::string::npos, m);
}

__global__ void ldmatrix_global_kernel(const uint16_t* g, uint32_t* out) {
  uint32_t r[1];
  ldmatrix_x1(r, g + (threadIdx.x % 8) * 8);
  out[threadIdx.x] = r[0];
}

TEST_CASE("tensor core: ldmatrix refuses global memory") {
  DeviceBuffer<uint16_t> g(64);
  DeviceBuffer<uint32_t> out(32);
  std::string m = launch_error([&] { launch(ldmatrix_global_kernel, 1, 32, 0, nullptr, g.p, out.p); });
  CHECK_MESSAGE(m.find("global memory") != std::string::npos, m);
}

// ---------------------------------------------------------------------------------------------
// cp.async. Each thread copies 16 bytes (4 floats) of its own.
enum CpMode { kBasic, kGroups, kZeroFill, kCa, kUncommitted };

__global__ void cp_async_kernel(const float* src, float* out, int mode) {
  DYNAMIC_SMEM(float, s);
  int t = int(threadIdx.x), n = int(blockDim.x);
  float* a = s + 4 * t;          // first buffer
  float* b = s + 4 * (n + t);    // second buffer
  float* o = out + 16 * t;       // 16 observations per thread
  if (mode == kBasic) {
    cp_async_cg16(a, src + 4 * t);
    cp_async_commit();
    o[0] = a[0];  // before the wait: poison
    cp_async_wait_group<0>();
    __syncthreads();
    const float* other = s + 4 * ((t + 1) % n);  // another thread's copy, after its wait + barrier
    for (int i = 0; i < 4; ++i) o[1 + i] = other[i];
  } else if (mode == kGroups) {
    cp_async_cg16(a, src + 4 * t);
    cp_async_commit();
    cp_async_cg16(b, src + 4 * (n + t));
    cp_async_commit();
    cp_async_wait_group<1>();  // the older group is complete, the newer may still be in flight
    o[0] = a[0], o[1] = b[0];
    cp_async_wait_group<0>();
    o[2] = b[0];
  } else if (mode == kZeroFill) {
    cp_async_cg16(a, src + 4 * t, 8);   // 8 bytes copied, 8 zero-filled
    cp_async_cg16(b, src + 4 * t, 0);   // nothing read, all zeros
    cp_async_wait_all();
    for (int i = 0; i < 4; ++i) o[i] = a[i], o[4 + i] = b[i];
  } else if (mode == kCa) {
    cp_async_ca<4>(a, src + 4 * t + 1);
    cp_async_ca<8>(a + 2, src + 4 * t + 2);
    cp_async_ca<16>(b, src + 4 * t, 12);
    cp_async_commit();
    cp_async_wait_group<0>();
    for (int i = 0; i < 4; ++i) o[i] = a[i], o[4 + i] = b[i];
  } else {  // kUncommitted: wait_group 0 does not wait for a copy in no group; wait_all does
    cp_async_cg16(a, src + 4 * t);
    cp_async_wait_group<0>();
    o[0] = a[0];
    cp_async_wait_all();
    o[1] = a[0];
  }
}

TEST_CASE("tensor core: cp.async poisons until the matching wait, zero-fills, counts groups") {
  const int n = 64;
  std::vector<float> src(size_t(8 * n));
  for (size_t i = 0; i < src.size(); ++i) src[i] = float(i) + 0.5f;
  DeviceBuffer<float> dsrc(src), out(size_t(16 * n));
  const size_t smem = size_t(8 * n) * sizeof(float);
  for (Order o : kAllOrders) {
    ScopedOrder so(o, 9);
    launch(cp_async_kernel, 1, n, smem, nullptr, dsrc.p, out.p, int(kBasic));
    auto h = out.download();
    CHECK(emu::last_launch_stats().cp_async == n);
    for (int t = 0; t < n; ++t) {
      CHECK(std::isnan(h[size_t(16 * t)]));
      for (int i = 0; i < 4; ++i) REQUIRE(h[size_t(16 * t + 1 + i)] == src[size_t(4 * ((t + 1) % n) + i)]);
    }
    launch(cp_async_kernel, 1, n, smem, nullptr, dsrc.p, out.p, int(kGroups));
    h = out.download();
    for (int t = 0; t < n; ++t) {
      CHECK(h[size_t(16 * t)] == src[size_t(4 * t)]);
      CHECK(std::isnan(h[size_t(16 * t + 1)]));  // wait_group 1 left the newest group pending
      CHECK(h[size_t(16 * t + 2)] == src[size_t(4 * (n + t))]);
    }
    launch(cp_async_kernel, 1, n, smem, nullptr, dsrc.p, out.p, int(kZeroFill));
    h = out.download();
    for (int t = 0; t < n; ++t) {
      const float* r = &h[size_t(16 * t)];
      CHECK(r[0] == src[size_t(4 * t)]);
      CHECK(r[1] == src[size_t(4 * t + 1)]);
      CHECK(fbits(r[2]) == 0u);
      CHECK(fbits(r[3]) == 0u);
      for (int i = 4; i < 8; ++i) CHECK(fbits(r[i]) == 0u);
    }
    launch(cp_async_kernel, 1, n, smem, nullptr, dsrc.p, out.p, int(kCa));
    h = out.download();
    for (int t = 0; t < n; ++t) {
      const float* r = &h[size_t(16 * t)];
      CHECK(r[0] == src[size_t(4 * t + 1)]);
      CHECK(std::isnan(r[1]));  // never written: the dynamic shared memory's poison
      CHECK(r[2] == src[size_t(4 * t + 2)]);
      CHECK(r[3] == src[size_t(4 * t + 3)]);
      for (int i = 0; i < 3; ++i) CHECK(r[4 + i] == src[size_t(4 * t + i)]);
      CHECK(fbits(r[7]) == 0u);
    }
    launch(cp_async_kernel, 1, n, smem, nullptr, dsrc.p, out.p, int(kUncommitted));
    h = out.download();
    for (int t = 0; t < n; ++t) {
      CHECK(std::isnan(h[size_t(16 * t)]));
      CHECK(h[size_t(16 * t + 1)] == src[size_t(4 * t)]);
    }
  }
}

enum CpMisuse { kOverlap, kStoreInFlight, kMisaligned, kFromShared, kToGlobal };
__global__ void cp_async_misuse_kernel(const float* src, float* dst, int mode) {
  DYNAMIC_SMEM(float, s);
  float* a = s + 4 * threadIdx.x;
  switch (mode) {
    case kOverlap:  // thread 1 copies over thread 0's destination while it is in flight
      cp_async_cg16(s + 4 * (threadIdx.x / 2), src);
      break;
    case kStoreInFlight:
      cp_async_cg16(a, src + 4 * threadIdx.x);
      a[1] = 3.0f;  // a plain store into the copy's destination before the wait
      break;
    case kMisaligned: cp_async_cg16(a + 1, src); break;
    case kFromShared: cp_async_cg16(a, s + 4 * (threadIdx.x + 32)); break;
    default: cp_async_cg16(dst + 4 * threadIdx.x, src); break;
  }
  __syncthreads();  // every thread issues before any waits
  cp_async_wait_all();
  dst[threadIdx.x] = a[0];
}

TEST_CASE("tensor core: cp.async misuse is reported") {
  DeviceBuffer<float> src(256), dst(256);
  auto run = [&](int mode) {
    return launch_error([&] { launch(cp_async_misuse_kernel, 1, 32, 4096, nullptr, src.p, dst.p, mode); });
  };
  std::string m = run(kOverlap);
  CHECK_MESSAGE(m.find("overlaps the destination of a cp.async still in flight") != std::string::npos, m);
  m = run(kStoreInFlight);
  CHECK_MESSAGE(m.find("was written while the copy was in flight") != std::string::npos, m);
  m = run(kMisaligned);
  CHECK_MESSAGE(m.find("must be 16-byte aligned") != std::string::npos, m);
  m = run(kFromShared);
  CHECK_MESSAGE(m.find("cp.async reads global memory") != std::string::npos, m);
  m = run(kToGlobal);
  CHECK_MESSAGE(m.find("cp.async writes shared memory") != std::string::npos, m);
  ScopedOrder lax(Order::Forward, 1, false);  // EMU_STRICT=0: the overlap and in-flight store are not checked
  launch(cp_async_misuse_kernel, 1, 32, 4096, nullptr, src.p, dst.p, int(kStoreInFlight));
}

// ---------------------------------------------------------------------------------------------
// 16-byte vectors.
__global__ void vector_kernel(const float* in, float* out, unsigned* uout, int offset) {
  __shared__ float4 s[32];
  int t = int(threadIdx.x);
  s[t] = reinterpret_cast<const float4*>(in)[t];  // plain vector access, global -> shared
  __syncthreads();
  float4 v = load_vector<float4>(reinterpret_cast<const float*>(s) + 4 * ((t + 1) % 32) + offset);
  v.x += 1.0f;
  store_vector(out + 4 * t, v);
  uint4 u = load_vector<uint4>(reinterpret_cast<const unsigned*>(in) + 4 * t);
  reinterpret_cast<uint4*>(uout)[t] = make_uint4(u.w, u.z, u.y, u.x);
  float2 f2 = load_vector<float2>(in + 2 * t);
  out[128 + t] = f2.x + f2.y;
}

TEST_CASE("tensor core: float4/uint4 vector loads and stores, alignment checked") {
  std::vector<float> in(128);
  for (size_t i = 0; i < in.size(); ++i) in[i] = float(i) * 0.25f;
  DeviceBuffer<float> din(in), out(160);
  DeviceBuffer<unsigned> uout(128);
  launch(vector_kernel, 1, 32, 0, nullptr, din.p, out.p, uout.p, 0);
  auto h = out.download();
  auto u = uout.download();
  for (int t = 0; t < 32; ++t) {
    int src = 4 * ((t + 1) % 32);
    CHECK(h[size_t(4 * t)] == in[size_t(src)] + 1.0f);
    for (int i = 1; i < 4; ++i) CHECK(h[size_t(4 * t + i)] == in[size_t(src + i)]);
    for (int i = 0; i < 4; ++i) CHECK(u[size_t(4 * t + i)] == fbits(in[size_t(4 * t + 3 - i)]));
    CHECK(h[size_t(128 + t)] == in[size_t(2 * t)] + in[size_t(2 * t + 1)]);
  }
  std::string m = launch_error([&] { launch(vector_kernel, 1, 32, 0, nullptr, din.p, out.p, uout.p, 2); });
  CHECK_MESSAGE(m.find("16-byte vector load from") != std::string::npos, m);
  CHECK_MESSAGE(m.find("not 16-byte aligned") != std::string::npos, m);
}

// ---------------------------------------------------------------------------------------------
// Dynamic shared memory above 48 KiB.
__global__ void big_smem_kernel(float* out, int n) {
  DYNAMIC_SMEM(float, s);
  for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) s[i] = float(i);
  __syncthreads();
  if (threadIdx.x == 0) out[0] = s[n - 1];
}

TEST_CASE("tensor core: dynamic shared memory above 48 KiB needs cudaFuncSetAttribute") {
  DeviceBuffer<float> out(1);
  const int n = 64 * 1024 / 4;  // 64 KiB
  cudaGetLastError();
  launch(big_smem_kernel, 1, 64, size_t(n) * 4, nullptr, out.p, n);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  CHECK(emu::last_error_detail().find("cudaFuncSetAttribute") != std::string::npos);
  CHECK(cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 * 1024) ==
        cudaErrorInvalidValue);
  cudaGetLastError();
  REQUIRE(cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) ==
          cudaSuccess);
  launch(big_smem_kernel, 1, 64, size_t(n) * 4, nullptr, out.p, n);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  CHECK(out.download()[0] == float(n - 1));
  launch(big_smem_kernel, 1, 64, size_t(n) * 4 + 4, nullptr, out.p, n);  // past the attribute
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  REQUIRE(cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024) ==
          cudaSuccess);
  launch(big_smem_kernel, 1, 64, 227 * 1024, nullptr, out.p, 227 * 256);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  CHECK(out.download()[0] == float(227 * 256 - 1));
  // Other kernels keep the 48 KiB default.
  launch(big_smem_kernel, 1, 64, size_t(n) * 4, nullptr, out.p, n);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(cudaFuncSetAttribute(cvt_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 0) == cudaSuccess);
  launch(cvt_kernel, 1, 32, 49 * 1024, nullptr, static_cast<const float*>(nullptr), static_cast<uint32_t*>(nullptr), 0);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
}

// A smaller device (an sm_86: 99 KiB a block at most): the attribute reports it, an opt-in above it is
// refused, and a kernel that opted in to more before may launch with no more than it.
TEST_CASE("tensor core: a device of 99 KiB of shared memory a block reports, refuses and enforces it") {
  int bytes = 0;
  REQUIRE(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) == cudaSuccess);
  CHECK(bytes == 227 * 1024);
  DeviceBuffer<float> out(1);
  REQUIRE(cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024) ==
          cudaSuccess);
  struct Restore {
    ~Restore() { emu::set_smem_opt_in_limit(227 * 1024); }
  } restore;
  emu::set_smem_opt_in_limit(99 * 1024);
  REQUIRE(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) == cudaSuccess);
  CHECK(bytes == 99 * 1024);
  CHECK(cudaDeviceGetAttribute(&bytes, cudaDeviceAttr(16), 0) == cudaErrorInvalidValue);  // not emulated
  cudaGetLastError();
  CHECK(cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024) ==
        cudaErrorInvalidValue);
  CHECK(emu::last_error_detail().find("101376") != std::string::npos);
  cudaGetLastError();
  launch(big_smem_kernel, 1, 64, 100 * 1024, nullptr, out.p, 100 * 256);  // opted in to 200 KiB before
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  launch(big_smem_kernel, 1, 64, 99 * 1024, nullptr, out.p, 99 * 256);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  CHECK(out.download()[0] == float(99 * 256 - 1));
  CHECK_THROWS_AS(emu::set_smem_opt_in_limit(228 * 1024), Error);
  CHECK_THROWS_AS(emu::set_smem_opt_in_limit(47 * 1024), Error);
}

// allow_dynamic_smem (kernels/cuda/launch.cu), what every launcher above 48 KiB calls: the opt-in is
// made (a launch of that size then runs), a larger one later is made again, and a device that refuses is
// an Error naming the op and the size, with no CUDA error left pending. Its once-per-device memo cannot
// be seen here: the emulator has one device. A kernel of its own: the tests above set big_smem_kernel's
// attribute directly. Its last float of shared memory is written and read back (an emulated launch
// checks every access against the size launched with).
__global__ void opt_in_kernel(float* out, int n) {
  DYNAMIC_SMEM(float, s);
  if (threadIdx.x == 0) s[n - 1] = float(n), out[0] = s[n - 1];
}

TEST_CASE("tensor core: allow_dynamic_smem opts a kernel in, raises it later, and names the op when refused") {
  DeviceBuffer<float> out(1);
  cudaGetLastError();
  cuda::allow_dynamic_smem(opt_in_kernel, 64 * 1024, "test op");
  launch(opt_in_kernel, 1, 64, 64 * 1024, nullptr, out.p, 16 * 1024);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  CHECK(out.download()[0] == float(16 * 1024));
  cuda::allow_dynamic_smem(opt_in_kernel, 32 * 1024, "test op");  // less than made: nothing to do
  launch(opt_in_kernel, 1, 64, 64 * 1024, nullptr, out.p, 16 * 1024);  // still allowed: not lowered
  REQUIRE(cudaGetLastError() == cudaSuccess);
  launch(opt_in_kernel, 1, 64, 96 * 1024, nullptr, out.p, 24 * 1024);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);  // not opted in to that much yet
  cuda::allow_dynamic_smem(opt_in_kernel, 96 * 1024, "test op");
  launch(opt_in_kernel, 1, 64, 96 * 1024, nullptr, out.p, 24 * 1024);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  CHECK(out.download()[0] == float(24 * 1024));
  struct Restore {
    ~Restore() { emu::set_smem_opt_in_limit(227 * 1024); }
  } restore;
  emu::set_smem_opt_in_limit(99 * 1024);
  std::string m;
  try {
    cuda::allow_dynamic_smem(opt_in_kernel, 100 * 1024, "test op");
  } catch (const Error& e) {
    m = e.what();
  }
  CHECK_MESSAGE(m.find("test op: cudaFuncSetAttribute (102400 bytes of dynamic shared memory on device 0)") !=
                    std::string::npos,
                m);
  CHECK(cudaGetLastError() == cudaSuccess);
}

// ---------------------------------------------------------------------------------------------
// The worked example: one warp computes C (16x8) = A (16xK) B (Kx8), A and B row-major in global
// memory. bf16: per 16-deep k-step, cp.async brings the A tile (16x16, 512 bytes: one 16-byte chunk
// per lane) and the B tile (16x8, 256 bytes: lanes 0-15) into shared memory; ldmatrix.x4 gives the
// A fragment (matrices: rows 0-7/8-15 x k 0-7/8-15, in the register order a0a1, a2a3, a4a5, a6a7),
// ldmatrix.x2.trans the B fragment (B's rows are k, so the transpose gives each lane (k, n = g)).
__global__ void gemm_bf16_kernel(const uint16_t* A, const uint16_t* B, float* C, int K) {
  // A rows padded to 24 elements (48 bytes): the 8 rows of each ldmatrix phase start in 8 different
  // 4-bank groups (q = 3r mod 8), so no bank conflicts; unpadded (32 bytes) rows r and r+4 would collide.
  __shared__ __align__(16) uint16_t sa[16 * 24], sb[16 * 8];
  const int lane = int(threadIdx.x);
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int k0 = 0; k0 < K; k0 += 16) {
    const int r = lane / 2, half = lane % 2;  // A tile: row r, columns 8*half..8*half+7
    cp_async_cg16(sa + r * 24 + 8 * half, A + r * K + k0 + 8 * half);
    if (lane < 16) cp_async_cg16(sb + lane * 8, B + (k0 + lane) * 8);
    cp_async_wait_all();
    __syncwarp();
    uint32_t a[4], b[2];
    const int j = lane / 8, i = lane % 8;
    ldmatrix_x4(a, sa + (i + 8 * (j & 1)) * 24 + 8 * (j >> 1));
    ldmatrix_x2_trans(b, sb + (lane % 16) * 8);  // lanes 0-7: k rows 0-7, 8-15: k rows 8-15
    mma_m16n8k16_bf16(acc, a, b, acc);
    __syncwarp();  // before the next step's copies overwrite the tiles
  }
  const int g = lane / 4, t = lane % 4;
  C[g * 8 + 2 * t] = acc[0], C[g * 8 + 2 * t + 1] = acc[1];
  C[(g + 8) * 8 + 2 * t] = acc[2], C[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

// tf32: fragments straight from global memory by the documented layout, rounded with cvt.rna.
__global__ void gemm_tf32_kernel(const float* A, const float* B, float* C, int K) {
  const int lane = int(threadIdx.x), g = lane / 4, t = lane % 4;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int k0 = 0; k0 < K; k0 += 8) {
    uint32_t a[4] = {cvt_rna_tf32(A[g * K + k0 + t]), cvt_rna_tf32(A[(g + 8) * K + k0 + t]),
                     cvt_rna_tf32(A[g * K + k0 + t + 4]), cvt_rna_tf32(A[(g + 8) * K + k0 + t + 4])};
    uint32_t b[2] = {cvt_rna_tf32(B[(k0 + t) * 8 + g]), cvt_rna_tf32(B[(k0 + t + 4) * 8 + g])};
    mma_m16n8k8_tf32(acc, a, b, acc);
  }
  const int r0 = g * 8 + 2 * t, r1 = (g + 8) * 8 + 2 * t;
  store_vector(C + r0, make_float2(acc[0], acc[1]));
  store_vector(C + r1, make_float2(acc[2], acc[3]));
}

TEST_CASE("tensor core: a one-warp mma GEMM (bf16 with cp.async + ldmatrix, tf32) vs float64") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (bool bf16 : {true, false}) {
    const int K = bf16 ? 48 : 40;
    std::vector<float> A(size_t(16 * K)), B(size_t(K * 8));
    for (auto& v : A) v = u(rng);
    for (auto& v : B) v = u(rng);
    // Bound: each operand is rounded to bf16 (relative 2^-9) or tf32 (2^-11), so each product is off
    // by at most about twice that; accumulation adds a few fp32 ulps.
    const double rel = bf16 ? 2.0 * std::ldexp(1.0, -9) : 2.0 * std::ldexp(1.0, -11);
    DeviceBuffer<float> dc(128);
    std::vector<float> first;
    for (Order o : kAllOrders) {
      ScopedOrder so(o, 11);
      if (bf16) {
        std::vector<uint16_t> ha(A.size()), hb(B.size());
        for (size_t i = 0; i < A.size(); ++i) ha[i] = bf16_from_float_rne(A[i]);
        for (size_t i = 0; i < B.size(); ++i) hb[i] = bf16_from_float_rne(B[i]);
        DeviceBuffer<uint16_t> da(ha), db(hb);
        launch(gemm_bf16_kernel, 1, 32, 0, nullptr, da.p, db.p, dc.p, K);
        CHECK(emu::last_launch_stats().smem_bank_conflicts == 0);
        CHECK(emu::last_launch_stats().ldmatrix == 2 * K / 16);
      } else {
        DeviceBuffer<float> da(A), db(B);
        launch(gemm_tf32_kernel, 1, 32, 0, nullptr, da.p, db.p, dc.p, K);
      }
      CHECK(emu::last_launch_stats().mma == (bf16 ? K / 16 : K / 8));
      auto h = dc.download();
      double worst = 0;
      for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 8; ++n) {
          double ref = 0, mag = 0;
          for (int k = 0; k < K; ++k) {
            ref += double(A[size_t(m * K + k)]) * double(B[size_t(k * 8 + n)]);
            mag += std::fabs(double(A[size_t(m * K + k)]) * double(B[size_t(k * 8 + n)]));
          }
          double err = std::fabs(double(h[size_t(m * 8 + n)]) - ref), bound = rel * mag + 1e-6 * mag;
          REQUIRE_MESSAGE(err <= bound, "m ", m, " n ", n, ": ", h[size_t(m * 8 + n)], " vs ", ref);
          worst = std::max(worst, err / mag);
        }
      MESSAGE((bf16 ? "bf16" : "tf32"), " GEMM 16x8x", K, ": worst error / sum|a*b| = ", worst);
      if (first.empty())
        first = h;
      else
        CHECK(h == first);
    }
  }
}

}  // namespace
