/* tensor_core.cpp: the emulator's models of mma.sync, ldmatrix, cp.async and vector accesses.
 *
 * Fragment layouts are the PTX ISA's ("Matrix Fragments for mma.m16n8k8" and "... mma.m16n8k16
 * with floating point type", section 9.7.14.5 in PTX ISA 8.x; "Warp-level matrix load instruction:
 * ldmatrix", 9.7.14.5.15), written with groupID g = %laneid >> 2 and threadID_in_group t = %laneid % 4:
 *
 * mma.m16n8k8 .tf32 (A 16x8 row-major, B 8x8 "col" = K x N, C/D 16x8), one element per .b32:
 *   A  a0 (g, t)   a1 (g+8, t)   a2 (g, t+4)   a3 (g+8, t+4)          (row, col) = (m, k)
 *   B  b0 (t, g)   b1 (t+4, g)                                         (row, col) = (k, n)
 *   C  c0 (g, 2t)  c1 (g, 2t+1)  c2 (g+8, 2t)  c3 (g+8, 2t+1)          (row, col) = (m, n)
 * mma.m16n8k16 .bf16, two elements per .b32, the lower-indexed element (a0 of {a0,a1}) in bits 0-15:
 *   A  a_i: row g for i in {0,1,4,5}, else g+8; col 2t + (i&1), +8 for i >= 4
 *      -> reg0 = (g, 2t..2t+1)  reg1 = (g+8, 2t..2t+1)  reg2 = (g, 2t+8..2t+9)  reg3 = (g+8, 2t+8..2t+9)
 *   B  b_i: row (k) 2t + (i&1), +8 for i >= 2; col (n) g
 *      -> reg0 = (k 2t..2t+1, n g)  reg1 = (k 2t+8..2t+9, n g)
 *   C  as for m16n8k8 (f32 accumulators: c0..c3 above).
 * (The same formulas are CUTLASS's SM80_16x8x8_F32TF32TF32F32_TN and SM80_16x8x16_F32BF16BF16F32_TN
 * traits: A layout ((4,8),(2,2)):((16,1),(8,64)), B ((4,8),2):((8,1),32), C SM80_16x8_Row.)
 *
 * Numerics of the model. Operands are taken as the hardware takes them: a .tf32 operand is the top
 * 19 bits of its register (the low 13 are ignored), a .bf16 operand is 16 bits widened exactly.
 * Each D element is C + sum over k of A*B, accumulated in float64 in ascending k (every product
 * of two tf32/bf16 values is exact in float64), rounded once to float (round to nearest even). A
 * tensor core adds in its own order and internal width, so emulator-vs-GPU comparisons of D need a
 * tolerance, unless every product and partial sum is exactly representable in fp32 (small
 * integers: bench/cuda/conformance.cu), where both are exact and must agree bit for bit. A NaN
 * result is the canonical 0x7FFFFFFF. Subnormal operands are used as they are (not flushed).
 *
 * ldmatrix .m8n8 .b16: lane 8j+i gives the address of row i of matrix j (j < num); each row is 8
 * 16-bit elements (16 bytes, 16-byte aligned). Lane l receives in register j the elements
 * (row l/4, cols 2(l%4), 2(l%4)+1) of matrix j, the lower column in bits 0-15; with .trans the
 * elements (rows 2(l%4), 2(l%4)+1, col l/4), i.e. the same fragment of the transposed matrix.
 * Bank conflicts: shared memory has 32 banks of 4 bytes; each matrix is one 128-byte phase, in
 * which a 16-byte row occupies banks 4q..4q+3, q = (address / 16) % 8. Rows with the same q but
 * different addresses serialize: the matrix takes max over q of (distinct rows with that q)
 * wavefronts (identical addresses broadcast). Counted in LaunchStats.ldmatrix_wavefronts, and the
 * excess over one per matrix in LaunchStats.smem_bank_conflicts.
 *
 * cp.async: at issue the destination is filled with 0xFF bytes (a float NaN) and the copy is
 * queued on the issuing thread; cp.async.commit_group closes the thread's current group;
 * cp.async.wait_group N completes every copy of the thread's groups except the newest N committed
 * (copies not yet committed are in no group and stay pending); wait_all = commit_group + wait_group 0.
 * The source is read when the copy completes (it must not change in between, as on a GPU). So a
 * read of the destination before the wait sees NaN. Strict mode also reports a cp.async whose
 * destination overlaps one still in flight (any thread of the block), and, at completion, a
 * destination that was written while its copy was in flight (it no longer holds the 0xFF fill).
 * The queues and counters are the emulator's bookkeeping, shared by the fibers of one OS thread
 * (which never run at once): EMU_NO_TSAN, like the scheduler, and the containers' own accesses are
 * hidden from TSan (TsanIgnore); the copies' data accesses (fill, copy) stay visible.
 */
#include "kernels/emu/tensor_core.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "kernels/common/error.h"
#include "kernels/emu/device.h"
#include "kernels/emu/tsan_ignore.h"

namespace nimbus::emu {
namespace {

std::string site(const char* file, int line) { return str(file, ":", line); }

float f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
double tf32_operand(uint32_t r) { return double(f32(r & 0xffffe000u)); }  // the top 19 bits
double bf16_operand(uint16_t h) { return double(f32(uint32_t(h) << 16)); }

float round_result(double acc) {
  float f = float(acc);  // one rounding, to nearest even
  return std::isnan(f) ? f32(0x7fffffffu) : f;
}

// ---------------------------------------------------------------------------------------------
// mma.sync
struct MmaLane {
  uint32_t a[4], b[2];
  float c[4], d[4];
};

// The C/D fragment of lane (g, t): element i at (row, col).
int c_row(int g, int i) { return g + (i >= 2 ? 8 : 0); }
int c_col(int t, int i) { return 2 * t + (i & 1); }

// Full matrices from the fragments, D = C + A B in float64, back to the fragments.
template <int K>
EMU_NO_TSAN std::string mma_compute(void* const* lanes, double (&A)[16][K], double (&B)[K][8]) {
  double C[16][8];
  for (int l = 0; l < 32; ++l) {
    const auto* x = static_cast<const MmaLane*>(lanes[l]);
    for (int i = 0; i < 4; ++i) C[c_row(l >> 2, i)][c_col(l & 3, i)] = double(x->c[i]);
  }
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double acc = C[m][n];
      for (int k = 0; k < K; ++k) acc += A[m][k] * B[k][n];
      C[m][n] = acc;
    }
  for (int l = 0; l < 32; ++l) {
    auto* x = static_cast<MmaLane*>(lanes[l]);
    for (int i = 0; i < 4; ++i) x->d[i] = round_result(C[c_row(l >> 2, i)][c_col(l & 3, i)]);
  }
  ++current_block_stats().mma;
  return "";
}

std::string mma_tf32_model(void* const* lanes) {
  double A[16][8], B[8][8];
  for (int l = 0; l < 32; ++l) {
    const auto* x = static_cast<const MmaLane*>(lanes[l]);
    int g = l >> 2, t = l & 3;
    A[g][t] = tf32_operand(x->a[0]);
    A[g + 8][t] = tf32_operand(x->a[1]);
    A[g][t + 4] = tf32_operand(x->a[2]);
    A[g + 8][t + 4] = tf32_operand(x->a[3]);
    B[t][g] = tf32_operand(x->b[0]);
    B[t + 4][g] = tf32_operand(x->b[1]);
  }
  return mma_compute<8>(lanes, A, B);
}

std::string mma_bf16_model(void* const* lanes) {
  double A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const auto* x = static_cast<const MmaLane*>(lanes[l]);
    int g = l >> 2, t = l & 3;
    for (int r = 0; r < 4; ++r) {  // reg r holds a_{2r} (bits 0-15) and a_{2r+1}
      int row = g + ((r & 1) ? 8 : 0), col = 2 * t + ((r & 2) ? 8 : 0);
      A[row][col] = bf16_operand(uint16_t(x->a[r]));
      A[row][col + 1] = bf16_operand(uint16_t(x->a[r] >> 16));
    }
    for (int r = 0; r < 2; ++r) {  // reg r holds b_{2r} (bits 0-15) and b_{2r+1}
      int k = 2 * t + 8 * r;
      B[k][g] = bf16_operand(uint16_t(x->b[r]));
      B[k + 1][g] = bf16_operand(uint16_t(x->b[r] >> 16));
    }
  }
  return mma_compute<16>(lanes, A, B);
}

void run_mma(const char* name, CollectiveFn fn, float* d, const uint32_t* a, const uint32_t* b, const float* c,
             const char* file, int line) {
  MmaLane lane;
  std::memcpy(lane.a, a, sizeof lane.a);
  std::memcpy(lane.b, b, sizeof lane.b);
  std::memcpy(lane.c, c, sizeof lane.c);  // copied first: d may alias c (accumulate in place)
  warp_collective(name, fn, &lane, file, line);
  std::memcpy(d, lane.d, sizeof lane.d);
}

// ---------------------------------------------------------------------------------------------
// ldmatrix
struct LdmatrixLane {
  const void* row;
  uint32_t r[4];
};

const char* where(MemSpace s) {
  return s == MemSpace::Global ? "global memory (a cudaMalloc allocation)" : "local memory (a thread's stack)";
}

template <int Num, bool Trans>
EMU_NO_TSAN std::string ldmatrix_model(void* const* lanes) {
  uint16_t M[Num][8][8];
  int64_t wavefronts = 0;
  for (int j = 0; j < Num; ++j) {
    uintptr_t addr[8];
    for (int i = 0; i < 8; ++i) {
      const void* p = static_cast<const LdmatrixLane*>(lanes[8 * j + i])->row;
      addr[i] = reinterpret_cast<uintptr_t>(p);
      if (addr[i] % 16)
        return str("lane ", 8 * j + i, " gives row address ", p, " for row ", i, " of matrix ", j,
                   ", which is not 16-byte aligned");
      MemSpace s = classify_address(p, 16);
      if (s == MemSpace::Global || s == MemSpace::Local)
        return str("lane ", 8 * j + i, " gives row address ", p, " in ", where(s), "; ldmatrix reads shared memory");
      std::memcpy(M[j][i], p, 16);
    }
    int most = 0;
    for (int q = 0; q < 8; ++q) {  // distinct rows in bank group q
      uintptr_t seen[8];
      int n = 0;
      for (int i = 0; i < 8; ++i)
        if ((addr[i] >> 4) % 8 == uintptr_t(q) && std::find(seen, seen + n, addr[i]) == seen + n) seen[n++] = addr[i];
      most = std::max(most, n);
    }
    wavefronts += most;
  }
  for (int l = 0; l < 32; ++l) {
    auto* x = static_cast<LdmatrixLane*>(lanes[l]);
    for (int j = 0; j < Num; ++j) {
      uint16_t lo = Trans ? M[j][2 * (l % 4)][l / 4] : M[j][l / 4][2 * (l % 4)];
      uint16_t hi = Trans ? M[j][2 * (l % 4) + 1][l / 4] : M[j][l / 4][2 * (l % 4) + 1];
      x->r[j] = uint32_t(lo) | uint32_t(hi) << 16;
    }
  }
  LaunchStats& s = current_block_stats();
  ++s.ldmatrix;
  s.ldmatrix_wavefronts += wavefronts;
  s.smem_bank_conflicts += wavefronts - Num;
  return "";
}

// ---------------------------------------------------------------------------------------------
// cp.async: per-thread queues, per block, on this OS thread.
struct AsyncCopy {
  unsigned char* dst;
  const unsigned char* src;
  int bytes, src_bytes;
  uint64_t group;  // the thread's commit count when it was issued
  const char* file;
  int line;
};
struct ThreadCopies {
  std::vector<AsyncCopy> pending;
  uint64_t committed = 0;
};
struct BlockCopies {
  uint64_t serial = ~uint64_t(0);
  std::vector<ThreadCopies> threads;
  std::map<uintptr_t, uintptr_t> inflight;  // destination start -> end, every thread of the block
  // inflight's nodes, kept for reuse: a map node per cp.async was a heap allocation per copy (under
  // AddressSanitizer, with its stack trace, ~a fifth of a tensor-core test's time).
  std::vector<std::map<uintptr_t, uintptr_t>::node_type> spare;

  void add(uintptr_t start, uintptr_t end) {
    if (spare.empty()) {
      inflight.insert_or_assign(start, end);
      return;
    }
    auto node = std::move(spare.back());
    spare.pop_back();
    node.key() = start;
    node.mapped() = end;
    auto r = inflight.insert(std::move(node));
    if (!r.inserted) {  // the same destination twice (only when not strict): the later copy's end
      r.position->second = end;
      spare.push_back(std::move(r.node));
    }
  }
  void remove(uintptr_t start) {
    if (auto node = inflight.extract(start)) spare.push_back(std::move(node));
  }
};
thread_local BlockCopies tls_copies;

EMU_NO_TSAN ThreadCopies& my_copies() {
  BlockCopies& b = tls_copies;
  if (b.serial != current_block_serial()) {  // a new block: what an earlier one left is gone
    b.serial = current_block_serial();
    for (ThreadCopies& t : b.threads) t.pending.clear(), t.committed = 0;
    while (!b.inflight.empty()) b.spare.push_back(b.inflight.extract(b.inflight.begin()));
  }
  size_t tid = size_t(current_thread_id());
  if (b.threads.size() <= tid) b.threads.resize(tid + 1);
  return b.threads[tid];
}

// Completes the copies of `t` whose group is below `limit` (in issue order).
EMU_NO_TSAN void complete_copies(ThreadCopies& t, uint64_t limit, const char* file, int line) {
  std::string msg;
  const bool check = strict();
  auto keep = t.pending.begin();
  for (auto it = t.pending.begin(); it != t.pending.end(); ++it) {
    if (it->group >= limit) {
      *keep++ = *it;
      continue;
    }
    const AsyncCopy& c = *it;
    if (check && msg.empty())
      for (int i = 0; i < c.bytes; ++i)
        if (c.dst[i] != 0xFF) {
          msg = str("cp.async.wait_group at ", site(file, line), ": shared memory at ",
                    static_cast<const void*>(c.dst + i), ", destination of the cp.async issued at ",
                    site(c.file, c.line), ", was written while the copy was in flight");
          break;
        }
    TsanIgnore::pause();  // the data movement itself is the kernel's, visible to TSan
    std::memcpy(c.dst, c.src, size_t(c.src_bytes));
    std::memset(c.dst + c.src_bytes, 0, size_t(c.bytes - c.src_bytes));
    TsanIgnore::resume();
    tls_copies.remove(reinterpret_cast<uintptr_t>(c.dst));
  }
  t.pending.erase(keep, t.pending.end());
  if (!msg.empty()) kernel_fault(std::move(msg));
}

}  // namespace

void mma_m16n8k8_tf32(float* d, const uint32_t* a, const uint32_t* b, const float* c, const char* file, int line) {
  run_mma("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32", mma_tf32_model, d, a, b, c, file, line);
}
void mma_m16n8k16_bf16(float* d, const uint32_t* a, const uint32_t* b, const float* c, const char* file, int line) {
  run_mma("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", mma_bf16_model, d, a, b, c, file, line);
}

void ldmatrix(uint32_t* r, int num, bool trans, const void* row, const char* file, int line) {
  LdmatrixLane lane{row, {0, 0, 0, 0}};
  CollectiveFn fn = nullptr;
  const char* name = nullptr;
  switch (num * 2 + int(trans)) {
    case 2: fn = ldmatrix_model<1, false>, name = "ldmatrix.sync.aligned.m8n8.x1.shared.b16"; break;
    case 3: fn = ldmatrix_model<1, true>, name = "ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16"; break;
    case 4: fn = ldmatrix_model<2, false>, name = "ldmatrix.sync.aligned.m8n8.x2.shared.b16"; break;
    case 5: fn = ldmatrix_model<2, true>, name = "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16"; break;
    case 8: fn = ldmatrix_model<4, false>, name = "ldmatrix.sync.aligned.m8n8.x4.shared.b16"; break;
    case 9: fn = ldmatrix_model<4, true>, name = "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"; break;
    default: {  // the message is built in its own statement: kernel_fault never returns, so the
                // temporaries of its own full-expression (site()'s string) would never be freed
      std::string msg = str("ldmatrix at ", site(file, line), ": .x", num, " is not .x1, .x2 or .x4");
      kernel_fault(std::move(msg));
    }
  }
  warp_collective(name, fn, &lane, file, line);
  std::memcpy(r, lane.r, sizeof(uint32_t) * size_t(num));
}

// What is wrong with a cp.async. The check is cheap and inline; the message is built out of line
// (cold: its streams would otherwise give cp_async, which runs once per thread per copy, a frame ASan
// poisons on every call).
enum class CpAsyncFault { None, Size, CgSize, SrcSize, Alignment, NotShared, SourceNotDevice, Overlap };

[[gnu::noinline, gnu::cold]] std::string cp_async_message(CpAsyncFault f, void* smem_dst, const void* gmem_src,
                                                         int cp_size, int src_size, bool cg, const char* file,
                                                         int line, uintptr_t overlapped) {
  const char* kind = cg ? "cp.async.cg.shared.global" : "cp.async.ca.shared.global";
  const std::string at = str(kind, " at ", site(file, line), ": ");
  switch (f) {
    case CpAsyncFault::Size: return str(at, "cp-size ", cp_size, " is not 4, 8 or 16");
    case CpAsyncFault::CgSize: return str(at, ".cg copies 16 bytes only, not ", cp_size);
    case CpAsyncFault::SrcSize: return str(at, "src-size ", src_size, " is not in [0, ", cp_size, "]");
    case CpAsyncFault::Alignment:
      return str(at, "destination ", smem_dst, " and source ", gmem_src, " must be ", cp_size, "-byte aligned");
    case CpAsyncFault::NotShared:
      return str(at, "destination ", smem_dst, " is in ",
                 where(classify_address(smem_dst, size_t(cp_size))), "; cp.async writes shared memory");
    case CpAsyncFault::SourceNotDevice:
      return str(at, "source ", gmem_src, " (", src_size,
                 " bytes) is not inside one cudaMalloc allocation; cp.async reads global memory");
    case CpAsyncFault::Overlap:
      return str(at, "destination ", smem_dst, " (", cp_size,
                 " bytes) overlaps the destination of a cp.async still in flight at ",
                 reinterpret_cast<const void*>(overlapped),
                 " (wait for it with cp.async.wait_group before reusing the buffer)");
    case CpAsyncFault::None: break;
  }
  return "";
}

EMU_NO_TSAN void cp_async(void* smem_dst, const void* gmem_src, int cp_size, int src_size, bool cg, const char* file,
                          int line) {
  TsanIgnore ignore;
  ThreadCopies& t = my_copies();
  auto* dst = static_cast<unsigned char*>(smem_dst);
  const auto* src = static_cast<const unsigned char*>(gmem_src);
  const uintptr_t d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
  CpAsyncFault fault = CpAsyncFault::None;
  uintptr_t overlapped = 0;
  const MemSpace dspace = classify_address(dst, size_t(cp_size > 0 ? cp_size : 0));
  if (cp_size != 4 && cp_size != 8 && cp_size != 16)
    fault = CpAsyncFault::Size;
  else if (cg && cp_size != 16)
    fault = CpAsyncFault::CgSize;
  else if (src_size < 0 || src_size > cp_size)
    fault = CpAsyncFault::SrcSize;
  else if (d % unsigned(cp_size) || s % unsigned(cp_size))
    fault = CpAsyncFault::Alignment;
  else if (dspace == MemSpace::Global || dspace == MemSpace::Local)
    fault = CpAsyncFault::NotShared;
  else if (src_size > 0 && !is_device_range(src, size_t(src_size)))
    fault = CpAsyncFault::SourceNotDevice;
  else if (strict()) {
    auto& inflight = tls_copies.inflight;
    auto it = inflight.upper_bound(d + unsigned(cp_size) - 1);  // first start past our end
    if (it != inflight.begin() && std::prev(it)->second > d) {
      fault = CpAsyncFault::Overlap;
      overlapped = std::prev(it)->first;
    }
  }
  if (fault != CpAsyncFault::None) {  // the message in its own statement: kernel_fault never returns
    std::string msg = cp_async_message(fault, smem_dst, gmem_src, cp_size, src_size, cg, file, line, overlapped);
    kernel_fault(std::move(msg));
  }
  TsanIgnore::pause();
  std::memset(dst, 0xFF, size_t(cp_size));  // poison until the matching wait
  TsanIgnore::resume();
  t.pending.push_back({dst, src, cp_size, src_size, t.committed, file, line});
  tls_copies.add(d, d + unsigned(cp_size));
  ++current_block_stats().cp_async;
}

EMU_NO_TSAN void cp_async_commit() {
  TsanIgnore ignore;
  ++my_copies().committed;
}

EMU_NO_TSAN void cp_async_wait_group(int n, const char* file, int line) {
  TsanIgnore ignore;
  ThreadCopies& t = my_copies();
  if (n < 0) {
    std::string msg = str("cp.async.wait_group at ", site(file, line), ": N = ", n, " is negative");
    kernel_fault(std::move(msg));
  }
  uint64_t limit = t.committed > uint64_t(n) ? t.committed - uint64_t(n) : 0;
  complete_copies(t, limit, file, line);
}

EMU_NO_TSAN void cp_async_wait_all(const char* file, int line) {
  TsanIgnore ignore;
  ThreadCopies& t = my_copies();
  ++t.committed;
  complete_copies(t, t.committed, file, line);
}

void check_vector_access(const void* p, size_t bytes, bool store, const char* file, int line) {
  if (reinterpret_cast<uintptr_t>(p) % bytes == 0) return;
  std::string msg = str(bytes, "-byte vector ", store ? "store to " : "load from ", p, " at ", site(file, line),
                        ": the address is not ", bytes, "-byte aligned (a GPU faults: misaligned address)");
  kernel_fault(std::move(msg));
}

}  // namespace nimbus::emu
