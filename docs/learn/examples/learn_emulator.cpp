// learn_emulator.cpp: the numbers of docs/learn/08-emulator.md. What the CUDA-on-CPU emulator does
// with a kernel: how many fibers, barriers, warp-op releases and stacks a real .cu kernel costs
// (reduce.cu's sum, elementwise.cu's fill, called through their launchers); the fragment layouts of
// mma.sync m16n8k8 .tf32 and m16n8k16 .bf16, checked by running one warp's mma on the emulator
// against a CPU product; ldmatrix's bank conflicts for three row pitches; cp.async's fill before
// the wait; and four planted mistakes with what the emulator says about each.
// docs/learn/build.py pastes this output into the page; ctest checks the page still matches.
//
// The small kernels below are compiled here exactly as a kernels/cuda/*.cu file is in the emulator
// build: by g++, with kernels/cuda/tensor_core.h -> compat.h -> kernels/emu/device.h giving
// __global__, __shared__, threadIdx, __syncthreads() and the instruction models their CPU meaning
// (the target links nimbus_cuda_emu; see docs/learn/CMakeLists.txt). Every value is a small integer
// and every setting (order, strictness, block threads) is set here, so the output is the same bytes
// on every run; file paths in the emulator's messages are printed relative to the repository.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/common/bfloat16.h"
#include "kernels/common/error.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/reduce.h"
#include "kernels/cuda/tensor_core.h"  // compat.h: the emulator under g++, real CUDA under nvcc

using namespace nimbus;
using emu::Order;

namespace {

// ---- host helpers ------------------------------------------------------------------------------
void cuda_ok(cudaError_t e, const char* what) {
  NIMBUS_CHECK(e == cudaSuccess, what, ": ", cudaGetErrorString(e));
}

// A cudaMalloc'd array (the emulator's registry: new memory is NaN bytes), freed on scope exit.
template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t count) : n(count) { cuda_ok(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc"); }
  explicit Dev(const std::vector<T>& host) : Dev(host.size()) {
    cuda_ok(cudaMemcpy(p, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  std::vector<T> get() const {
    std::vector<T> host(n);
    cuda_ok(cudaMemcpy(host.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
    return host;
  }
};

void set_order(Order o, uint64_t seed = 1) { emu::set_order({o, seed}); }

// The emulator names call sites by the path the compiler was given (absolute under CMake): print
// them relative to the repository root, which is where this file's own path ends.
std::string relative(std::string msg) {
  const std::string self = __FILE__, tail = "docs/learn/examples/learn_emulator.cpp";
  const std::string root = self.size() >= tail.size() ? self.substr(0, self.size() - tail.size()) : "";
  if (root.empty()) return msg;
  for (size_t at; (at = msg.find(root)) != std::string::npos;) msg.erase(at, root.size());
  return msg;
}

// Prints text wrapped at 100 columns, every line indented by `indent`.
void wrapped(const std::string& text, const char* indent) {
  std::string line;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find(' ', i);
    if (j == std::string::npos) j = text.size();
    std::string word = text.substr(i, j - i);
    if (!line.empty() && std::strlen(indent) + line.size() + 1 + word.size() > 100) {
      std::printf("%s%s\n", indent, line.c_str());
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
    i = j + 1;
  }
  if (!line.empty()) std::printf("%s%s\n", indent, line.c_str());
}

// Runs a launch that must fail and prints the emulator's message.
void print_error_of(const std::function<void()>& f) {
  try {
    f();
    std::printf("     (no error: the emulator let it pass)\n");
  } catch (const Error& e) {
    wrapped(relative(e.what()), "     ");
  }
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// ---- the PTX ISA's fragment layouts (g = lane / 4, t = lane % 4), written out from the ISA ---------
// Each gives the (row, column) of a lane's element e. tf32: one element per register (e = register).
// bf16: element e of A lives in register e / 2, bits 16 (e % 2) and up; likewise for B.
struct RC {
  int row, col;
};
RC tf32_a(int lane, int e) { return {lane / 4 + 8 * (e & 1), lane % 4 + 4 * (e >> 1)}; }  // (m, k)
RC tf32_b(int lane, int e) { return {lane % 4 + 4 * e, lane / 4}; }                        // (k, n)
RC acc_c(int lane, int e) { return {lane / 4 + 8 * (e >> 1), 2 * (lane % 4) + (e & 1)}; }  // (m, n), both
RC bf16_a(int lane, int e) { return {lane / 4 + 8 * ((e >> 1) & 1), 2 * (lane % 4) + (e & 1) + 8 * (e >> 2)}; }
RC bf16_b(int lane, int e) { return {2 * (lane % 4) + (e & 1) + 8 * (e >> 1), lane / 4}; }  // (k, n)

struct Layout {
  char name;              // 'a', 'b' or 'c': the PTX operand
  int rows, cols, elems;  // matrix shape, elements per lane
  RC (*at)(int, int);
};
constexpr Layout kTf32A{'a', 16, 8, 4, tf32_a}, kTf32B{'b', 8, 8, 2, tf32_b}, kAccC{'c', 16, 8, 4, acc_c};
constexpr Layout kBf16A{'a', 16, 16, 8, bf16_a}, kBf16B{'b', 16, 8, 4, bf16_b};

// cell[row][col] = "5a2" (lane 5, element a2); false if an element is held twice or not at all.
bool cells(const Layout& L, std::vector<std::vector<std::string>>& cell) {
  cell.assign(size_t(L.rows), std::vector<std::string>(size_t(L.cols)));
  bool once = true;
  for (int lane = 0; lane < 32; ++lane)
    for (int e = 0; e < L.elems; ++e) {
      RC rc = L.at(lane, e);
      std::string& c = cell[size_t(rc.row)][size_t(rc.col)];
      once = once && c.empty();
      c = std::to_string(lane) + L.name + std::to_string(e);
    }
  for (const auto& row : cell)
    for (const std::string& c : row) once = once && !c.empty();
  return once;
}

// One printed row of a table: a label, then the cells 5 wide.
std::string table_row(const char* label, int index, const std::vector<std::string>& row) {
  char head[16];
  std::snprintf(head, sizeof head, "%s%-3d", label, index);
  std::string s = head;
  for (const std::string& c : row) {
    char cell[16];
    std::snprintf(cell, sizeof cell, "%5s", c.c_str());
    s += cell;
  }
  return s;
}
std::string table_header(const char* label, int cols) {
  std::string s = std::string(label) + ":   ";
  for (int c = 0; c < cols; ++c) {
    char cell[16];
    std::snprintf(cell, sizeof cell, "%5d", c);
    s += cell;
  }
  return s;
}
// B printed one line per column n (k across): the lanes of one group g hold one column.
std::vector<std::vector<std::string>> transposed(const std::vector<std::vector<std::string>>& m) {
  std::vector<std::vector<std::string>> t(m[0].size(), std::vector<std::string>(m.size()));
  for (size_t r = 0; r < m.size(); ++r)
    for (size_t c = 0; c < m[0].size(); ++c) t[c][r] = m[r][c];
  return t;
}

// ---- kernels ----------------------------------------------------------------------------------------
// Shared-memory tree sum of 128 values; with sync == 0 the barrier inside the loop is missing.
__global__ void tree_sum_kernel(float* out, const float* x, int sync) {
  __shared__ float s[128];
  const int t = int(threadIdx.x);
  s[t] = x[t];
  __syncthreads();
  for (int stride = int(blockDim.x) / 2; stride > 0; stride /= 2) {
    if (t < stride) s[t] += s[t + stride];
    if (sync) __syncthreads();
  }
  if (t == 0) out[0] = s[0];
}

// Threads 0-9 return early: they never reach the barrier the others wait at.
__global__ void early_return_kernel(float* out) {
  if (threadIdx.x < 10) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// One warp, one mma: lane l reads its fragments at a[4l..4l+3], b[2l..2l+1], c[4l..4l+3].
__global__ void mma_kernel(int bf16, const uint32_t* a, const uint32_t* b, const float* c, float* d) {
  const int l = int(threadIdx.x);
  uint32_t fa[4] = {a[4 * l], a[4 * l + 1], a[4 * l + 2], a[4 * l + 3]}, fb[2] = {b[2 * l], b[2 * l + 1]};
  float fc[4] = {c[4 * l], c[4 * l + 1], c[4 * l + 2], c[4 * l + 3]}, fd[4];
  if (bf16)
    mma_m16n8k16_bf16(fd, fa, fb, fc);
  else
    mma_m16n8k8_tf32(fd, fa, fb, fc);
  for (int i = 0; i < 4; ++i) d[4 * l + i] = fd[i];
}

// Lanes 0-15 and 16-31 reach the mma from two different lines.
__global__ void divergent_mma_kernel(float* d) {
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float c[4] = {0, 0, 0, 0};
  if (threadIdx.x < 16)
    mma_m16n8k8_tf32(c, a, b, c);
  else
    mma_m16n8k8_tf32(c, a, b, c);
  d[threadIdx.x] = c[0];
}

// A 16 x 16 bf16 tile (element (m, k) = the bits m * 16 + k) stored with rows `pitch` elements apart,
// read back by ldmatrix.x4 as the m16n8k16 A fragment: lane 8j + i addresses row i of matrix j
// (matrices: rows 0-7 / 8-15 x columns 0-7 / 8-15, in the order of registers a0a1, a2a3, a4a5, a6a7).
__global__ void ldmatrix_kernel(uint32_t* out, int pitch) {
  __shared__ __align__(16) uint16_t s[16 * 64];
  const int lane = int(threadIdx.x);
  for (int e = lane; e < 256; e += 32) s[(e / 16) * pitch + e % 16] = uint16_t(e);
  __syncwarp();
  const int j = lane / 8, i = lane % 8;
  uint32_t r[4];
  ldmatrix_x4(r, s + (i + 8 * (j & 1)) * pitch + 8 * (j >> 1));
  for (int q = 0; q < 4; ++q) out[4 * lane + q] = r[q];
}

// cp.async: each lane copies 16 bytes into shared memory and reads its first float before and
// after cp.async.wait_group 0.
__global__ void cp_async_kernel(const float* src, float* before, float* after) {
  DYNAMIC_SMEM(float, s);
  const int lane = int(threadIdx.x);
  cp_async_cg16(s + 4 * lane, src + 4 * lane);
  cp_async_commit();
  before[lane] = s[4 * lane];  // too early: the copy is still in flight
  cp_async_wait_group<0>();
  after[lane] = s[4 * lane];
}

// ---- sections ----------------------------------------------------------------------------------------
void fibers_and_barriers() {
  const int n = 100, block = 128;
  std::vector<float> x(n);
  double want = 0;
  for (int i = 0; i < n; ++i) x[size_t(i)] = float(i % 7 + 1), want += x[size_t(i)];
  Dev<float> dx(x), out(1), scratch(size_t(cuda::reduce_scratch_floats(n, block)));
  cuda::sum(out.p, dx.p, n, scratch.p, block);
  emu::LaunchStats st = emu::last_launch_stats();
  std::printf("reduce.cu's sum_kernel (cuda::sum), x[i] = i %% 7 + 1 for i < %d, blocks of %d threads:\n", n, block);
  std::printf("  sum on the emulator %.0f, CPU loop %.0f\n", double(out.get()[0]), want);
  std::printf("  blocks %lld, threads (= fibers) %lld, barrier releases %lld, warp-op releases %lld, most stacks "
              "in use %lld\n", (long long)st.blocks, (long long)st.threads, (long long)st.barriers,
              (long long)st.warp_syncs, (long long)st.max_stacks);
  cuda::fill(out.p, 0.0f, 1, block);
  st = emu::last_launch_stats();
  std::printf("elementwise.cu's fill_kernel (cuda::fill, no barrier), threads %lld: most stacks in use %lld\n",
              (long long)st.threads, (long long)st.max_stacks);
}

void tensor_core_layouts() {
  std::vector<std::vector<std::string>> a, b, c;
  bool once = cells(kTf32A, a) & cells(kTf32B, b) & cells(kAccC, c);
  std::printf("mma.sync m16n8k8 .tf32, which lane holds which element (\"5a2\": lane 5, register a2):\n");
  std::printf("  A (16 x 8), row m, column k%22s C and D (16 x 8), row m, column n\n", "");
  std::printf("  %s  %s\n", table_header("k", 8).c_str(), table_header("n", 8).c_str());
  for (int m = 0; m < 16; ++m)
    std::printf("  %s  %s\n", table_row("m", m, a[size_t(m)]).c_str(), table_row("m", m, c[size_t(m)]).c_str());
  std::printf("  B (8 x 8), one line per column n, k across\n  %s\n", table_header("k", 8).c_str());
  const auto bt = transposed(b);
  for (int n = 0; n < 8; ++n) std::printf("  %s\n", table_row("n", n, bt[size_t(n)]).c_str());
  std::printf("  every element of A, B and C in exactly one register of one lane: %s\n", once ? "yes" : "NO");

  once = cells(kBf16A, a) & cells(kBf16B, b);
  std::printf("mma.sync m16n8k16 .bf16, two per register: a0 (bits 0-15) and a1 in register 0, a2 and a3 in 1, ...\n");
  std::printf("  A (16 x 16), row m, column k\n  %s\n", table_header("k", 16).c_str());
  for (int m = 0; m < 16; ++m) std::printf("  %s\n", table_row("m", m, a[size_t(m)]).c_str());
  std::printf("  B (16 x 8), one line per column n, k across\n  %s\n", table_header("k", 16).c_str());
  const auto bt16 = transposed(b);
  for (int n = 0; n < 8; ++n) std::printf("  %s\n", table_row("n", n, bt16[size_t(n)]).c_str());
  std::printf("  C and D as for m16n8k8; every element of A and B in exactly one place: %s\n", once ? "yes" : "NO");
}

// Fills one warp's fragments from whole matrices by the layouts above, runs the emulator's mma and
// compares D with the CPU's A B + C. Every element of A (and of B) is a different small integer, so
// an element in the wrong place shows; all are exact in bf16 and tf32, every product and sum in fp32.
void mma_against_cpu(bool bf16) {
  const int K = bf16 ? 16 : 8;
  std::vector<float> A(size_t(16 * K)), B(size_t(K * 8)), C(128), want(128);
  for (int m = 0; m < 16; ++m)
    for (int k = 0; k < K; ++k) A[size_t(m * K + k)] = float(m * K + k - 8 * K);  // all different
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < 8; ++n) B[size_t(k * 8 + n)] = float(k * 8 + n - 4 * K);
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double acc = C[size_t(m * 8 + n)] = float(m - n);
      for (int k = 0; k < K; ++k) acc += double(A[size_t(m * K + k)]) * double(B[size_t(k * 8 + n)]);
      want[size_t(m * 8 + n)] = float(acc);
    }
  const Layout& LA = bf16 ? kBf16A : kTf32A;
  const Layout& LB = bf16 ? kBf16B : kTf32B;
  auto operand = [&](float v) { return bf16 ? uint32_t(bf16_from_float_rne(v)) : emu::cvt_rna_tf32(v); };
  std::vector<uint32_t> fa(128, 0), fb(64, 0);
  std::vector<float> fc(128);
  for (int l = 0; l < 32; ++l) {
    for (int e = 0; e < LA.elems; ++e) {
      RC rc = LA.at(l, e);
      uint32_t v = operand(A[size_t(rc.row * K + rc.col)]);
      if (bf16) fa[size_t(4 * l + e / 2)] |= v << (16 * (e % 2));
      else fa[size_t(4 * l + e)] = v;
    }
    for (int e = 0; e < LB.elems; ++e) {
      RC rc = LB.at(l, e);
      uint32_t v = operand(B[size_t(rc.row * 8 + rc.col)]);
      if (bf16) fb[size_t(2 * l + e / 2)] |= v << (16 * (e % 2));
      else fb[size_t(2 * l + e)] = v;
    }
    for (int e = 0; e < 4; ++e) {
      RC rc = acc_c(l, e);
      fc[size_t(4 * l + e)] = C[size_t(rc.row * 8 + rc.col)];
    }
  }
  Dev<uint32_t> da(fa), db(fb);
  Dev<float> dc(fc), dd(128);
  launch(mma_kernel, 1, 32, 0, nullptr, int(bf16), da.p, db.p, dc.p, dd.p);
  const std::vector<float> fd = dd.get();
  int equal = 0;
  for (int l = 0; l < 32; ++l)
    for (int e = 0; e < 4; ++e) {
      RC rc = acc_c(l, e);
      equal += fd[size_t(4 * l + e)] == want[size_t(rc.row * 8 + rc.col)];
    }
  std::printf("%s, one warp, small integers: D = the CPU's A B + C in %d of 128 elements (%lld mma.sync)\n",
              bf16 ? "m16n8k16 .bf16" : "m16n8k8 .tf32", equal,
              (long long)emu::last_launch_stats().mma);
}

void ldmatrix_bank_conflicts() {
  std::printf("ldmatrix.x4 of a 16 x 16 bf16 tile in shared memory (4 matrices of 8 rows of 16 bytes):\n");
  for (int pitch : {16, 24, 64}) {
    Dev<uint32_t> out(128);
    launch(ldmatrix_kernel, 1, 32, 0, nullptr, out.p, pitch);
    const emu::LaunchStats st = emu::last_launch_stats();
    const std::vector<uint32_t> r = out.get();
    int lanes = 0;  // lanes whose four registers are exactly their m16n8k16 A fragment
    for (int l = 0; l < 32; ++l) {
      bool ok = true;
      for (int e = 0; e < 8; ++e) {
        RC rc = bf16_a(l, e);
        ok = ok && (r[size_t(4 * l + e / 2)] >> (16 * (e % 2)) & 0xffffu) == uint32_t(rc.row * 16 + rc.col);
      }
      lanes += ok;
    }
    std::printf("  rows %3d bytes apart: %2lld wavefronts, %2lld bank conflicts; = the A fragment in %d of 32 lanes\n",
                pitch * 2, (long long)st.ldmatrix_wavefronts, (long long)st.smem_bank_conflicts, lanes);
  }
}

void cp_async_poison() {
  std::vector<float> src(128);
  for (size_t i = 0; i < src.size(); ++i) src[i] = float(i) + 0.5f;
  Dev<float> dsrc(src), before(32), after(32);
  launch(cp_async_kernel, 1, 32, 32 * 16, nullptr, dsrc.p, before.p, after.p);
  const std::vector<float> b = before.get(), a = after.get();
  int nan_before = 0, right_after = 0;
  for (int l = 0; l < 32; ++l) nan_before += std::isnan(b[size_t(l)]), right_after += a[size_t(l)] == src[size_t(4 * l)];
  std::printf("cp.async of 16 bytes per lane (%lld copies), each lane reads its first float:\n",
              (long long)emu::last_launch_stats().cp_async);
  std::printf("  before cp.async.wait_group 0: bits 0x%08X (a NaN) in %d of 32 lanes\n", bits_of(b[0]), nan_before);
  std::printf("  after it: lane 0 reads %.1f, the source's value in %d of 32 lanes\n", double(a[0]), right_after);
}

void planted_mistakes() {
  std::printf("planted mistakes:\n");
  std::vector<float> x(128);
  float want = 0;
  for (int i = 0; i < 128; ++i) x[size_t(i)] = float(i % 7 + 1), want += x[size_t(i)];
  Dev<float> dx(x), out(128);
  auto tree_sum = [&](Order o, int sync) {
    set_order(o, 3);
    launch(tree_sum_kernel, 1, 128, 0, nullptr, out.p, dx.p, sync);
    return double(out.get()[0]);
  };
  std::printf("  1. tree sum of 128 values (right answer %.0f), the barrier in its loop removed:\n", double(want));
  std::printf("     forward order %.0f, reverse %.0f, shuffled (seed 3) %.0f; with the barrier %.0f, %.0f, %.0f\n",
              tree_sum(Order::Forward, 0), tree_sum(Order::Reverse, 0), tree_sum(Order::Shuffle, 0),
              tree_sum(Order::Forward, 1), tree_sum(Order::Reverse, 1), tree_sum(Order::Shuffle, 1));
  set_order(Order::Forward);
  std::printf("  2. threads 0-9 of a 64-thread block return before __syncthreads():\n");
  print_error_of([&] { launch(early_return_kernel, 1, 64, 0, nullptr, out.p); });
  std::printf("  3. lanes 0-15 and 16-31 reach mma.sync from two different lines:\n");
  print_error_of([&] { launch(divergent_mma_kernel, 1, 32, 0, nullptr, out.p); });
  std::printf("  4. a read of a cp.async destination before cp.async.wait_group: the NaN above\n");
}

}  // namespace

int main() {
  // Everything the output depends on is set here, whatever EMU_ORDER / EMU_STRICT / EMU_THREADS say.
  set_order(Order::Forward);
  emu::set_strict(true);
  emu::set_block_threads(1);
  fibers_and_barriers();
  tensor_core_layouts();
  mma_against_cpu(false);
  mma_against_cpu(true);
  ldmatrix_bank_conflicts();
  cp_async_poison();
  planted_mistakes();
  return 0;
}
