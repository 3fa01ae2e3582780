/* hopper.cpp: the emulator's models of the Hopper instructions a wgmma kernel is built from: mbarrier
 * with transaction counts, tensor maps and cp.async.bulk.tensor (TMA), fence.proxy.async, and wgmma.
 * Sources: the PTX ISA (mbarrier, cp.async.bulk.tensor, wgmma sections), cuda.h's documentation of
 * cuTensorMapEncodeTiled, and CUTLASS's cute/arch/{mma,copy}_sm90*.hpp and mma_traits_sm90_gmma.hpp
 * for the descriptor layouts and the swizzles (read, not copied).
 *
 * Shared memory. The emulator's shared window is the block's dynamic shared memory, 1024-byte aligned:
 * a "shared address" is an offset in it (descriptors hold 18 bits of one). TMA destinations, wgmma
 * operands and their descriptors must lie there; an mbarrier may also be a static __shared__ object.
 *
 * mbarrier. State per object (kept here, keyed by address, per block): expected and pending arrival
 * counts, tx-count, phase number. arrive (count c) lowers pending by c; expect_tx raises tx-count,
 * complete_tx lowers it; when pending = 0 and tx-count = 0 the phase completes: phase + 1, pending =
 * expected, tx-count = 0, and waiting threads wake. try_wait.parity(p) is true when the current phase's
 * parity is not p (the phase of parity p, the current or the one before it, completed). Checked:
 * init count in [1, 2^20 - 1]; use before init; use by another thread before any __syncthreads() since
 * the init, or __syncwarp() of its warp for a thread of that warp (the init is a plain shared-memory
 * write: others see it after a barrier; a shuffle or vote orders no memory);
 * arrive count above the pending arrivals; tx-count outside [-(2^20 - 1), 2^20 - 1]; re-init or inval
 * while copies are in flight or threads wait; a bulk copy signalling an mbarrier whose init no fence
 * has made visible to the async proxy since (fence.mbarrier_init by the thread that initialised it, or
 * fence.proxy.async by a thread that has seen the init: that thread, as the CUDA Programming Guide's
 * TMA examples do before their __syncthreads(), or another after a sync): on a GPU the copy engine may
 * see the barrier's old bytes. A wait that can never end is a deadlock report naming
 * the call site, the phase, the pending arrivals and the tx-count.
 *
 * The copy engine is lazy, on purpose: a cp.async.bulk.tensor fills its destination with 0xFF (NaN)
 * at issue and queues on its mbarrier; it reads global memory and performs its complete_tx only when
 * some thread waits on that mbarrier, and its data lands in shared memory only when the phase
 * completes. So a thread that reads the box before waiting sees NaN in every order. Strict mode also
 * refuses a destination overlapping one in flight, and a destination written while in flight.
 *
 * The box. A tensor map holds dtype, rank (1-5), the global address, dims, byte strides of dims
 * 1..rank-1, box dims, element strides, swizzle, OOB fill. The box has n_0 = box_0 elements along
 * dim 0 (its element stride is ignored, as the driver documents) and n_i = ceil(box_i / es_i) along
 * dim i; element (i_0..i_r-1) comes from coordinate c_0 + i_0 and c_i + i_i * es_i, is zero when any
 * coordinate lies outside [0, dim), and goes to byte offset o = E * (i_0 + n_0 (i_1 + n_1 (...)))
 * of the destination, then swizzled. complete_tx counts the whole box, out-of-bounds part included.
 *
 * Swizzles (TMA and wgmma alike, CUTLASS Swizzle<B,4,3>): a function of the shared address, bits
 * [7, 7+B) XORed into bits [4, 4+B): the 16-byte chunk index within a 128-byte line XOR the line index
 * mod 8 (128B, B = 3; repeats every 1024 bytes), its low 2 bits (64B, B = 2; 512) or 1 bit (32B, B = 1;
 * 256). The model refuses what it cannot make exact: a swizzled TMA destination not aligned to the
 * repeat (plain ones need 128 bytes), a swizzled box whose inner dimension is not exactly the swizzle
 * span (the driver accepts less), NaN-request OOB fill, the F32_FTZ / TF32 / TF32_FTZ data types (the
 * copy would flush or round; the model copies bits), a wgmma descriptor with a base offset or a
 * start address not at a pattern row boundary (bits [7, 7+B) set).
 *
 * fence.proxy.async. Plain stores are the generic proxy; TMA and wgmma's operand reads the async
 * proxy. The model keeps the async proxy's view of the dynamic shared memory (a copy): TMA writes both,
 * fence.proxy.async (by any thread) copies the memory into the view, and a wgmma operand byte that
 * differs from the view was stored without a fence since: an error. Lenient where PTX is strict: the
 * fence of one thread covers every thread's earlier stores, and a store of the value already there is
 * not seen.
 *
 * wgmma descriptors (64 bits): start address >> 4 in bits 0-13, leading byte offset >> 4 in 16-29,
 * stride byte offset >> 4 in 32-45, base offset in 49-51, layout in 62-63 (0 none/interleave, 1 128B,
 * 2 64B, 3 32B swizzle). Canonical layouts in 16-byte units (T elements per unit, W = 1, 2, 4, 8 units
 * per swizzle row), then the swizzle of the resulting address:
 *   K-major   none     ((8,n),2):((1,SBO),LBO)     row mn = r0 + 8 r1, k unit kc
 *             swizzled ((8,n),2):((W,SBO),1)
 *   MN-major  none     ((1,n),(8,k)):((-,SBO),(1,LBO))   (bf16) mn unit c, k = k0 + 8 k1
 *             swizzled ((W,n),(8,k)):((1,LBO),(W,SBO))
 * An operand is 64 x K (A) or N x K (B), K = 32 bytes (16 bf16, 8 tf32).
 *
 * wgmma fragments (PTX "Register fragments", per warpgroup thread: warp w = tid/32 of the
 * warpgroup, g = lane/4, t = lane%4):
 *   D (f32, N/2 per thread)  d[4j+i] at (row 16w + g + 8(i>>1), col 8j + 2t + (i&1)), j < N/8
 *   A bf16 registers         reg r holds (row 16w + g + 8(r&1), cols 2t + 8(r>>1) + {0 in bits 0-15, 1})
 *   A tf32 registers         reg r holds (row 16w + g + 8(r&1), col t + 4(r>>1))
 * (the mma.m16n8 fragments of each warp's 16 rows; CUTLASS's CLayout_64xN and ALayout_64x16/64x8).
 * Numerics as the mma model: bf16 exact, tf32 = the top 19 bits of the 32-bit word, D = scale_d * C +
 * sum_k (scale_a A)(scale_b B) in float64, k ascending, rounded once: the one inexact part.
 *
 * setmaxnreg. Each warpgroup's count is kept: .inc below it or .dec above it is an error. The block's
 * register pool is its launch count times its threads (PTX: per CTA; .inc takes from what .dec
 * released). ptxas' launch count is not known here, so its upper bound stands for it: the SM's 65,536
 * registers over the block's threads, in steps of 8, at most 256 (168 for 384 threads, what ptxas gives
 * a __launch_bounds__(384, 1) kernel). Errors, each certain on a GPU: counts that, summed over the
 * warpgroups (24 for one without a setmaxnreg yet: it may still .dec) x 128, exceed the pool; and at
 * the block's end, the same sum with the launch count for a warpgroup that never ran setmaxnreg (it
 * held its registers all along, so some .inc waited forever).
 *
 * wgmma ordering. fence, mma_async, commit_group and wait_group are warpgroup-collective (.aligned).
 * mma_async needs a wgmma.fence since the warpgroup's last wait_group (stricter than PTX, which
 * exempts accumulator-only chains across a wait; CUTLASS fences before every batch). The result is
 * computed at issue and the accumulators are set to NaN; the wait that covers the op's group checks
 * that the accumulators still hold that NaN, that the A registers and the shared-memory operand bytes
 * did not change, then writes D. An mma_async whose accumulators belong to one in flight chains on
 * its result (the PTX exemption for same-shape accumulator chains).
 *
 * Bookkeeping is per block on the OS thread (fibers of a block never run at once) and hidden from
 * TSan, data movement included: TSan does not check these models.
 */
#include "kernels/emu/hopper.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "kernels/common/error.h"
#include "kernels/emu/device.h"
#include "kernels/emu/tsan_ignore.h"

namespace nimbus::emu {
namespace {

std::string site(const char* file, int line) { return str(file, ":", line); }

constexpr int64_t kTxLimit = (int64_t(1) << 20) - 1;  // tx-count range and the largest arrival count
constexpr uint64_t kMapMagic = 0x4E494D4255535431ull;   // "NIMBUST1": a map written by encode_tensor_map

float f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// ---------------------------------------------------------------------------------------------
// Per-block state.
struct MapModel {  // what the emulator keeps in a CUtensorMap's 128 bytes
  uint64_t magic;
  uint64_t global;
  uint64_t dims[5];
  uint64_t strides[4];  // bytes, of dims 1..rank-1
  uint32_t box[5];
  uint8_t estride[5], dtype, rank, swizzle, oob, elem;
};
static_assert(sizeof(MapModel) <= sizeof(CUtensorMap), "the model's tensor map must fit in 128 bytes");

struct BulkCopy {  // a cp.async.bulk.tensor in flight
  unsigned char* dst;
  uint32_t bytes;
  MapModel map;
  int32_t coords[5];
  bool arrived = false;  // the engine ran it: image read, complete_tx done; lands when the phase completes
  std::vector<unsigned char> image;
  const char* file;
  int line;
};

struct Mbarrier {
  uintptr_t addr = 0;
  uint32_t expected = 0, pending = 0;
  int64_t tx = 0;
  uint64_t phase = 0;
  int init_tid = 0;
  uint64_t init_barriers = 0, init_syncwarps = 0;  // the block's barriers and the init warp's __syncwarps then
  const char* init_file = "";
  int init_line = 0;
  int waiters = 0;
  bool init_visible = false;  // a fence since the init made it visible to the async proxy (TMA)
  std::vector<BulkCopy> copies;
  // TSan sync objects (addresses), by the parity of the phase arrived at: a late waiter of phase p
  // must not acquire arrivals for p + 1, which a pipeline's producer makes while it still reads p.
  char parity_token[2] = {};
};

struct WgmmaOp {  // an mma_async not yet covered by a wait_group
  uint64_t group;
  int n;
  float* acc[128];
  std::vector<float> result;                              // 128 x N/2, by thread
  const uint32_t* a_regs[128];                            // RS: each thread's A registers, and their values at issue
  uint32_t a_values[128][4];
  bool a_in_registers;
  std::vector<std::pair<uint32_t, unsigned char>> operand;  // shared bytes read (offset, value at issue)
  const char* file;
  int line;
};
struct Warpgroup {
  bool fenced = false;
  uint64_t committed = 0;
  std::vector<WgmmaOp> pending;
};

struct HopperBlock {
  uint64_t serial = ~uint64_t(0);
  std::map<uintptr_t, Mbarrier> bars;
  std::vector<unsigned char> view;          // the async proxy's view of the dynamic shared memory
  std::map<uintptr_t, uintptr_t> inflight;  // TMA destinations in flight: start -> end
  std::map<int, Warpgroup> groups;
  std::map<int, int> maxnreg;  // warpgroup -> its register count from its last setmaxnreg
};
thread_local HopperBlock tls_h;

EMU_NO_TSAN HopperBlock& block() {
  HopperBlock& h = tls_h;
  if (h.serial != current_block_serial()) {  // a new block: what an earlier one left is gone
    h.serial = current_block_serial();
    h.bars.clear();
    h.inflight.clear();
    h.groups.clear();
    h.maxnreg.clear();
    h.view.assign(dynamic_smem_bytes(), 0xFF);  // the launch's fill, as the memory itself
  }
  return h;
}

// Has thread `tid` seen the init? Its own; another thread's after a __syncthreads() since, or after a
// __syncwarp() of the initialising thread's warp when it is in that warp. (A shuffle, vote or warp
// collective orders no memory: the init, a plain shared-memory write, stays unseen.)
bool init_seen_by(const Mbarrier& m, int tid) {
  if (m.init_tid == tid || block_barriers() > m.init_barriers) return true;
  return tid / 32 == m.init_tid / 32 && block_syncwarps(m.init_tid / 32) > m.init_syncwarps;
}

const char* space_name(MemSpace s) {
  return s == MemSpace::Global ? "global memory (a cudaMalloc allocation)" : "local memory (a thread's stack)";
}

// ---------------------------------------------------------------------------------------------
// mbarrier.
std::string describe_bar(const void* key) {
  const auto& m = *static_cast<const Mbarrier*>(key);
  size_t queued = 0, arrived = 0;
  for (const BulkCopy& c : m.copies) (c.arrived ? arrived : queued) += 1;
  return str("the mbarrier at ", reinterpret_cast<const void*>(m.addr), " is in phase ", m.phase, " (parity ",
             m.phase & 1, ") with ", m.pending, " of ", m.expected, " arrivals pending and tx-count ", m.tx,
             m.tx > 0   ? " (bytes announced by expect_tx that no copy delivers)"
             : m.tx < 0 ? " (more bytes arrived than expect_tx announced)"
                        : "",
             queued + arrived ? str(", ", queued + arrived, " bulk copies on it") : std::string());
}

// The model of the mbarrier at bar, or an error for `op` at file:line.
EMU_NO_TSAN Mbarrier* find_bar(const uint64_t* bar, const char* op, const char* file, int line, std::string& err) {
  const auto a = reinterpret_cast<uintptr_t>(bar);
  const MemSpace space = classify_address(bar, 8);
  if (a % 8) {
    err = str(op, " at ", site(file, line), ": the mbarrier address ", static_cast<const void*>(bar),
              " is not 8-byte aligned");
  } else if (space == MemSpace::Global || space == MemSpace::Local) {
    err = str(op, " at ", site(file, line), ": the mbarrier at ", static_cast<const void*>(bar), " is in ",
              space_name(space), "; an mbarrier lives in shared memory");
  } else {
    HopperBlock& h = block();
    auto it = h.bars.find(a);
    if (it == h.bars.end()) {
      err = str(op, " at ", site(file, line), ": the mbarrier at ", static_cast<const void*>(bar),
                " was never initialised (mbarrier.init) in this block");
    } else if (!init_seen_by(it->second, current_thread_id())) {
      err = str(op, " at ", site(file, line), " by thread ", current_thread_id(), ": the mbarrier at ",
                static_cast<const void*>(bar), " was initialised by thread ", it->second.init_tid, " at ",
                site(it->second.init_file, it->second.init_line),
                " and no __syncthreads() since (or __syncwarp() of that warp) has made that visible");
    } else {
      return &it->second;
    }
  }
  return nullptr;
}

[[noreturn]] void fail(std::string&& msg) { kernel_fault(std::move(msg)); }

// Lands the arrived copies (checking their destinations kept the fill), then starts the next phase.
EMU_NO_TSAN std::string complete_phase(Mbarrier& m) {
  HopperBlock& h = block();
  std::string err;
  const bool check = strict();
  auto keep = m.copies.begin();
  for (auto it = m.copies.begin(); it != m.copies.end(); ++it) {
    if (!it->arrived) {
      *keep++ = std::move(*it);
      continue;
    }
    if (check && err.empty())
      for (uint32_t i = 0; i < it->bytes; ++i)
        if (it->dst[i] != 0xFF) {
          err = str("shared memory at ", static_cast<const void*>(it->dst + i),
                    ", destination of the cp.async.bulk.tensor issued at ", site(it->file, it->line),
                    ", was written while the copy was in flight");
          break;
        }
    std::memcpy(it->dst, it->image.data(), it->bytes);
    const size_t off = size_t(it->dst - dynamic_smem());
    std::memcpy(h.view.data() + off, it->image.data(), it->bytes);
    h.inflight.erase(reinterpret_cast<uintptr_t>(it->dst));
  }
  m.copies.erase(keep, m.copies.end());
  ++m.phase;
  m.pending = m.expected;
  m.tx = 0;
  ++current_block_stats().mbarrier_phases;
  event_wake(&m);
  return err;
}

EMU_NO_TSAN std::string maybe_complete(Mbarrier& m) {
  if (m.pending == 0 && m.tx == 0) return complete_phase(m);
  event_wake(&m);  // waiters re-check (and run the copy engine)
  return "";
}

EMU_NO_TSAN std::string change_tx(Mbarrier& m, int64_t delta, const char* op, const char* file, int line) {
  const int64_t tx = m.tx + delta;
  if (tx > kTxLimit || tx < -kTxLimit)
    return str(op, " at ", site(file, line), ": tx-count ", m.tx, (delta < 0 ? " - " : " + "), std::llabs(delta), " = ",
               tx, " leaves [-(2^20 - 1), 2^20 - 1] (tx-count ", tx > 0 ? "overflow" : "underflow", ")");
  m.tx = tx;
  return "";
}

// ---------------------------------------------------------------------------------------------
// The copy engine: reads the box of each queued copy and performs its complete_tx.
uint32_t swizzle(uint32_t a, int b) { return a ^ (((a >> 7) & ((1u << b) - 1u)) << 4); }
int swizzle_bits_tma(int mode) { return mode; }                         // CU_TENSOR_MAP_SWIZZLE_32B = 1 .. 128B = 3
int swizzle_span(int mode) { return mode == 0 ? 0 : 16 << mode; }       // 32, 64, 128 bytes

void box_extent(const MapModel& m, uint32_t (&n)[5]) {
  for (int d = 0; d < 5; ++d)
    n[d] = d >= m.rank ? 1 : d == 0 ? m.box[0] : (m.box[d] + m.estride[d] - 1) / m.estride[d];
}

EMU_NO_TSAN std::string read_box(BulkCopy& c) {
  const MapModel& m = c.map;
  uint32_t n[5];
  box_extent(m, n);
  c.image.assign(c.bytes, 0);
  const uint32_t E = m.elem;
  uint32_t i[5] = {0, 0, 0, 0, 0};
  for (uint32_t lin = 0; lin * E < c.bytes; ++lin) {
    uint32_t rest = lin;
    for (int d = 0; d < 5; ++d) i[d] = rest % n[d], rest /= n[d];
    bool inside = true;
    uint64_t off = 0;
    for (int d = 0; d < m.rank; ++d) {
      const int64_t g = int64_t(c.coords[d]) + int64_t(i[d]) * (d == 0 ? 1 : m.estride[d]);
      if (g < 0 || uint64_t(g) >= m.dims[d]) {
        inside = false;
        break;
      }
      off += d == 0 ? uint64_t(g) * E : uint64_t(g) * m.strides[d - 1];
    }
    const uint32_t to = swizzle(lin * E, swizzle_bits_tma(m.swizzle));
    if (!inside) continue;  // zero fill
    const auto* src = reinterpret_cast<const unsigned char*>(m.global + off);
    if (!is_device_range(src, E))
      return str("cp.async.bulk.tensor issued at ", site(c.file, c.line), ": element at ", static_cast<const void*>(src),
                 " (box element ", lin, ") is not inside a cudaMalloc allocation");
    std::memcpy(c.image.data() + to, src, E);
  }
  return "";
}

EMU_NO_TSAN std::string run_engine(Mbarrier& m) {
  bool any = false;
  for (BulkCopy& c : m.copies) {
    if (c.arrived) continue;
    std::string err = read_box(c);
    if (!err.empty()) return err;
    c.arrived = true;
    any = true;
    err = change_tx(m, -int64_t(c.bytes), "the copy engine's complete_tx", c.file, c.line);
    if (!err.empty()) return err;
  }
  return any ? maybe_complete(m) : std::string();
}

// ---------------------------------------------------------------------------------------------
// wgmma: descriptors and operands.
struct Desc {
  uint32_t start, lbo, sbo, base, layout;
};
Desc decode(uint64_t d) {
  return {uint32_t(d & 0x3FFF) << 4, uint32_t((d >> 16) & 0x3FFF) << 4, uint32_t((d >> 32) & 0x3FFF) << 4,
          uint32_t((d >> 49) & 7), uint32_t(d >> 62)};
}
int swizzle_bits_desc(uint32_t layout) { return layout == 1 ? 3 : layout == 2 ? 2 : layout == 3 ? 1 : 0; }
const char* layout_name(uint32_t layout) {
  return layout == 0 ? "no swizzle" : layout == 1 ? "128B swizzle" : layout == 2 ? "64B swizzle" : "32B swizzle";
}

// Shared address of element (mn, k) of an operand of E-byte elements.
uint32_t element_address(const Desc& d, int mn, int k, int E, bool mn_major) {
  const int B = swizzle_bits_desc(d.layout);
  const uint32_t W = 1u << B;
  uint32_t a;
  if (!mn_major) {
    const int T = 16 / E, kc = k / T, ke = k % T, r0 = mn % 8, r1 = mn / 8;
    a = d.start + uint32_t(r1) * d.sbo + 16u * uint32_t(r0) * W + (B == 0 ? uint32_t(kc) * d.lbo : 16u * uint32_t(kc)) +
        uint32_t(ke * E);
  } else {  // 16-bit elements, 8 per unit along MN
    const uint32_t m0 = uint32_t(mn % 8), mc = uint32_t(mn / 8), k0 = uint32_t(k % 8), k1 = uint32_t(k / 8);
    if (B == 0)
      a = d.start + mc * d.sbo + 16u * k0 + k1 * d.lbo + m0 * 2u;
    else
      a = d.start + (mc % W) * 16u + (mc / W) * d.lbo + k0 * 16u * W + k1 * d.sbo + m0 * 2u;
  }
  return swizzle(a, B);
}

// Gathers an operand of `rows` x K elements through `desc` into vals (row-major), recording every byte read.
EMU_NO_TSAN std::string gather(uint64_t desc, const char* which, int rows, int K, int E, bool mn_major,
                               std::vector<uint32_t>& vals, std::vector<std::pair<uint32_t, unsigned char>>& bytes) {
  const Desc d = decode(desc);
  const int B = swizzle_bits_desc(d.layout);
  const HopperBlock& h = block();
  const size_t limit = dynamic_smem_bytes();
  if (d.base)
    return str("descriptor of ", which, " (0x", std::hex, desc, std::dec, ") has base offset ", d.base,
               "; the emulator models only base offset 0 (start addresses at a swizzle pattern row boundary)");
  if (B && ((d.start >> 7) & ((1u << B) - 1u)))
    return str("descriptor of ", which, " (0x", std::hex, desc, std::dec, "): start address ", d.start, " with ",
               layout_name(d.layout), " is not at a pattern row boundary (address bits 7..", 6 + B,
               " set): the hardware then needs a base offset, which the emulator does not model");
  vals.assign(size_t(rows) * size_t(K), 0);
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < K; ++k) {
      const uint32_t a = element_address(d, r, k, E, mn_major);
      if (size_t(a) + size_t(E) > limit)
        return str(which, " element (", r, ", ", k, ") at shared address ", a, " (descriptor 0x", std::hex, desc,
                   std::dec, ", ", layout_name(d.layout), ", LBO ", d.lbo, ", SBO ", d.sbo,
                   ") lies outside the launch's ", limit, " bytes of dynamic shared memory");
      const unsigned char* p = dynamic_smem() + a;
      for (int b = 0; b < E; ++b)
        if (p[b] != h.view[a + uint32_t(b)])
          return str(which, " element (", r, ", ", k, ") at shared address ", a + uint32_t(b),
                     " was written by plain stores (the generic proxy) after the last fence.proxy.async: the async "
                     "proxy that wgmma reads through may not see it (fence.proxy.async.shared::cta after the stores, "
                     "before the wgmma)");
      uint32_t v = 0;
      std::memcpy(&v, p, E == 2 ? 2 : 4);
      vals[size_t(r) * size_t(K) + size_t(k)] = v;
      for (int b = 0; b < E; ++b) bytes.emplace_back(a + uint32_t(b), p[b]);
    }
  return "";
}

double operand(uint32_t bits, WgmmaType t) {
  return t == WgmmaType::BF16 ? double(f32(bits << 16)) : double(f32(bits & 0xFFFFE000u));
}

struct WgmmaLane {
  const WgmmaShape* shape;
  float* d;
  const uint32_t* a;
  uint64_t desc_a, desc_b;
  int scale_d;
  const char* file;
  int line;
};

int warpgroup_of_caller() { return current_thread_id() / 128; }

EMU_NO_TSAN std::string wgmma_model(void* const* lanes) {
  TsanIgnore ignore;
  const auto* l0 = static_cast<const WgmmaLane*>(lanes[0]);
  const WgmmaShape& s = *l0->shape;
  for (int i = 1; i < 128; ++i) {
    const auto* l = static_cast<const WgmmaLane*>(lanes[i]);
    if (l->shape != l0->shape || l->desc_a != l0->desc_a || l->desc_b != l0->desc_b || (l->scale_d != 0) != (l0->scale_d != 0))
      return str("thread ", i, " of the warpgroup passes other operands than thread 0 (descriptors 0x", std::hex,
                 l->desc_a, "/0x", l->desc_b, " vs 0x", l0->desc_a, "/0x", l0->desc_b, std::dec,
                 ", scale-d, or shape): descriptors and scale-d must be the same in every thread");
  }
  Warpgroup& g = block().groups[warpgroup_of_caller()];
  if (!g.fenced)
    return "no wgmma.fence since the warpgroup's last wgmma.wait_group (or its start): the PTX ISA requires "
           "wgmma.fence before the first wgmma.mma_async and between register accesses and a wgmma.mma_async "
           "(the emulator asks for one before every batch, as CUTLASS does)";
  const bool bf16 = s.type == WgmmaType::BF16;
  const int K = bf16 ? 16 : 8, E = bf16 ? 2 : 4, N = s.n, R = N / 2;
  WgmmaOp op;
  op.n = N;
  op.group = g.committed;
  op.a_in_registers = s.a_in_registers;
  op.file = l0->file;
  op.line = l0->line;
  std::vector<uint32_t> A, B;
  std::string err = gather(l0->desc_b, "operand B", N, K, E, s.trans_b != 0, B, op.operand);
  if (!err.empty()) return err;
  if (s.a_in_registers) {
    A.assign(size_t(64 * K), 0);
    for (int i = 0; i < 128; ++i) {
      const auto* l = static_cast<const WgmmaLane*>(lanes[i]);
      const int w = i / 32, gq = (i % 32) / 4, t = i % 4;
      op.a_regs[i] = l->a;
      for (int r = 0; r < 4; ++r) {
        const uint32_t v = l->a[r];
        op.a_values[i][r] = v;
        const int row = 16 * w + gq + 8 * (r & 1);
        if (bf16) {
          const int col = 2 * t + 8 * (r >> 1);
          A[size_t(row * K + col)] = v & 0xFFFFu;
          A[size_t(row * K + col + 1)] = v >> 16;
        } else {
          A[size_t(row * K + t + 4 * (r >> 1))] = v;
        }
      }
    }
  } else {
    err = gather(l0->desc_a, "operand A", 64, K, E, s.trans_a != 0, A, op.operand);
    if (!err.empty()) return err;
  }
  // C: the accumulators, or the result of the op in flight that they belong to (a chain).
  const WgmmaOp* chain = nullptr;
  for (auto it = g.pending.rbegin(); it != g.pending.rend() && !chain; ++it)
    if (it->acc[0] == l0->d) chain = &*it;
  for (int i = 0; i < 128; ++i) {
    const auto* l = static_cast<const WgmmaLane*>(lanes[i]);
    const bool chained = chain && chain->acc[i] == l->d;
    if (bool(chain) != chained || (chain && chain->n != N))
      return str("thread ", i, "'s accumulators ", chained ? "continue" : "do not continue",
                 " the wgmma in flight issued at ", chain ? site(chain->file, chain->line) : std::string("?"),
                 " while thread 0's ", chain ? "do" : "do not",
                 " (or the shapes differ): accumulators of an op in flight may only feed a same-shape wgmma");
  }
  std::vector<double> C(size_t(64 * N));  // 64 x N; on the heap: fiber stacks are 64 KiB
  for (int i = 0; i < 128; ++i) {
    const auto* l = static_cast<const WgmmaLane*>(lanes[i]);
    const int w = i / 32, gq = (i % 32) / 4, t = i % 4;
    for (int v = 0; v < R; ++v) {
      const int row = 16 * w + gq + 8 * ((v & 3) >> 1), col = 8 * (v >> 2) + 2 * t + (v & 1);
      C[size_t(row * N + col)] = l0->scale_d == 0 ? 0.0 : chain ? double(chain->result[size_t(i * R + v)]) : double(l->d[v]);
    }
  }
  for (int m = 0; m < 64; ++m)
    for (int n = 0; n < N; ++n) {
      double acc = C[size_t(m * N + n)];
      for (int k = 0; k < K; ++k)
        acc += (s.scale_a * operand(A[size_t(m * K + k)], s.type)) * (s.scale_b * operand(B[size_t(n * K + k)], s.type));
      C[size_t(m * N + n)] = acc;
    }
  op.result.assign(size_t(128 * R), 0.0f);
  for (int i = 0; i < 128; ++i) {
    auto* l = static_cast<const WgmmaLane*>(lanes[i]);
    const int w = i / 32, gq = (i % 32) / 4, t = i % 4;
    op.acc[i] = l->d;
    for (int v = 0; v < R; ++v) {
      const int row = 16 * w + gq + 8 * ((v & 3) >> 1), col = 8 * (v >> 2) + 2 * t + (v & 1);
      const float f = float(C[size_t(row * N + col)]);  // one rounding, to nearest even
      op.result[size_t(i * R + v)] = std::isnan(f) ? f32(0x7FFFFFFFu) : f;
      l->d[v] = f32(0xFFFFFFFFu);  // in flight: unusable until the wait
    }
  }
  g.pending.push_back(std::move(op));
  ++current_block_stats().wgmma;
  return "";
}

EMU_NO_TSAN std::string wgmma_fence_model(void* const*) {
  TsanIgnore ignore;
  block().groups[warpgroup_of_caller()].fenced = true;
  return "";
}
EMU_NO_TSAN std::string wgmma_commit_model(void* const*) {
  TsanIgnore ignore;
  ++block().groups[warpgroup_of_caller()].committed;
  return "";
}

struct WaitLane {
  int n;
};
EMU_NO_TSAN std::string wgmma_wait_model(void* const* lanes) {
  TsanIgnore ignore;
  const int n = static_cast<const WaitLane*>(lanes[0])->n;
  Warpgroup& g = block().groups[warpgroup_of_caller()];
  const uint64_t limit = g.committed > uint64_t(n) ? g.committed - uint64_t(n) : 0;
  const unsigned char* smem = dynamic_smem();
  for (const WgmmaOp& op : g.pending) {
    if (op.group >= limit) continue;
    for (int i = 0; i < 128; ++i)
      for (int v = 0; v < op.n / 2; ++v) {
        uint32_t u;
        std::memcpy(&u, &op.acc[i][v], 4);
        if (u != 0xFFFFFFFFu)
          return str("thread ", i, " of the warpgroup wrote its accumulator d[", v, "] while the wgmma.mma_async issued at ",
                     site(op.file, op.line), " was in flight (before the wgmma.wait_group that covers it)");
      }
    if (op.a_in_registers)
      for (int i = 0; i < 128; ++i)
        for (int r = 0; r < 4; ++r)
          if (op.a_regs[i][r] != op.a_values[i][r])
            return str("thread ", i, " of the warpgroup changed its A register a[", r,
                       "] while the wgmma.mma_async issued at ", site(op.file, op.line), " was in flight");
    for (const auto& [a, v] : op.operand)
      if (smem[a] != v)
        return str("shared memory at address ", a, ", an operand of the wgmma.mma_async issued at ",
                   site(op.file, op.line), ", changed while the wgmma was in flight (before the wgmma.wait_group)");
  }
  // Write D, unless a later op (completing now or still in flight) owns the same accumulators.
  for (size_t j = 0; j < g.pending.size(); ++j) {
    const WgmmaOp& op = g.pending[j];
    if (op.group >= limit) continue;
    bool superseded = false;
    for (size_t k = j + 1; k < g.pending.size() && !superseded; ++k) superseded = g.pending[k].acc[0] == op.acc[0];
    if (superseded) continue;
    for (int i = 0; i < 128; ++i) std::memcpy(op.acc[i], &op.result[size_t(i * op.n / 2)], sizeof(float) * size_t(op.n / 2));
  }
  g.pending.erase(std::remove_if(g.pending.begin(), g.pending.end(), [&](const WgmmaOp& op) { return op.group < limit; }),
                  g.pending.end());
  g.fenced = false;
  return "";
}

// setmaxnreg (see the top of the file). The pool: the launch's count (its upper bound) x the threads.
int launch_regs(int threads) { return std::min(256, 65536 / threads / 8 * 8); }

// The block's warpgroups' counts x 128 against its pool; `unset` is what a warpgroup without a
// setmaxnreg counts as. An error message, or "".
std::string maxnreg_budget(const HopperBlock& h, int unset, const std::string& what, const std::string& unset_text) {
  const dim3 b = block_dim();
  const int threads = int(b.x * b.y * b.z), groups = (threads + 127) / 128, entry = launch_regs(threads);
  const int64_t pool = int64_t(entry) * threads;
  int64_t total = 0;
  std::string parts;
  for (int g = 0; g < groups; ++g) {
    const auto f = h.maxnreg.find(g);
    const int r = f == h.maxnreg.end() ? unset : f->second;
    total += 128 * int64_t(r);
    parts += str(g ? ", " : "", g, ": ", r, f == h.maxnreg.end() ? unset_text : "");
  }
  if (total <= pool) return "";
  return str(what, ": the block's warpgroups would hold ", total, " registers (per thread, by warpgroup: ", parts,
             "; x 128 threads), more than its pool of ", pool, " (", threads, " threads x ", entry,
             ", the most a launch can give each); on a GPU a setmaxnreg.inc would wait forever");
}

struct MaxnregLane {
  bool inc;
  int regs;
};
EMU_NO_TSAN std::string setmaxnreg_model(void* const* lanes) {
  TsanIgnore ignore;
  const auto& l = *static_cast<const MaxnregLane*>(lanes[0]);
  HopperBlock& h = block();
  const int wg = warpgroup_of_caller();
  const auto it = h.maxnreg.find(wg);
  if (it != h.maxnreg.end() && (l.inc ? l.regs < it->second : l.regs > it->second))
    return str("setmaxnreg.", l.inc ? "inc" : "dec", " to ", l.regs, " registers in warpgroup ", wg, ", whose count is ",
               it->second, " since its previous setmaxnreg: .inc may only raise the count, .dec only lower it");
  h.maxnreg[wg] = l.regs;
  return maxnreg_budget(h, 24, str("setmaxnreg.", l.inc ? "inc" : "dec", " to ", l.regs, " registers in warpgroup ", wg),
                        " (no setmaxnreg yet: at least 24)");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Entry points.
EMU_NO_TSAN std::string block_exit_check() {
  if (tls_h.serial != current_block_serial() || tls_h.maxnreg.empty()) return "";  // no setmaxnreg here
  const int entry = launch_regs(int(block_dim().x * block_dim().y * block_dim().z));
  return maxnreg_budget(tls_h, entry, "at the block's end",
                        str(" (never ran setmaxnreg: it kept the launch's count, at most ", entry, ")"));
}

EMU_NO_TSAN uint32_t shared_address(const void* p, const char* what, const char* file, int line) {
  const auto a = reinterpret_cast<uintptr_t>(p), base = reinterpret_cast<uintptr_t>(dynamic_smem());
  if (a >= base && a < base + kMaxDynamicSmemOptIn) return uint32_t(a - base);
  std::string msg = str(what, " at ", site(file, line), ": ", p,
                        " is not in the block's dynamic shared memory, the emulator's shared window (DYNAMIC_SMEM)");
  fail(std::move(msg));
}

EMU_NO_TSAN void mbarrier_init(uint64_t* bar, uint32_t count, const char* file, int line) {
  std::string err;
  {
    TsanIgnore ignore;
    const auto a = reinterpret_cast<uintptr_t>(bar);
    const MemSpace space = classify_address(bar, 8);
    HopperBlock& h = block();
    auto it = h.bars.find(a);
    if (a % 8)
      err = str("mbarrier.init at ", site(file, line), ": address ", static_cast<const void*>(bar), " is not 8-byte aligned");
    else if (space == MemSpace::Global || space == MemSpace::Local)
      err = str("mbarrier.init at ", site(file, line), ": the mbarrier at ", static_cast<const void*>(bar), " is in ",
                space_name(space), "; an mbarrier lives in shared memory");
    else if (count < 1 || count > uint32_t(kTxLimit))
      err = str("mbarrier.init at ", site(file, line), ": count ", count, " is not in [1, 2^20 - 1]");
    else if (it != h.bars.end() && (!it->second.copies.empty() || it->second.waiters))
      err = str("mbarrier.init at ", site(file, line), ": the mbarrier at ", static_cast<const void*>(bar),
                " still has bulk copies in flight or threads waiting");
    if (err.empty()) {
      h.bars.erase(a);  // a fresh record: freeing the old one drops its TSan sync objects (parity_token)
      Mbarrier& m = h.bars[a];
      m.addr = a;
      m.expected = m.pending = count;
      m.init_tid = current_thread_id();
      m.init_barriers = block_barriers();
      m.init_syncwarps = block_syncwarps(m.init_tid / 32);
      m.init_file = file;
      m.init_line = line;
    }
  }
  if (!err.empty()) fail(std::move(err));
}

EMU_NO_TSAN void mbarrier_inval(uint64_t* bar, const char* file, int line) {
  std::string err;
  {
    TsanIgnore ignore;
    Mbarrier* m = find_bar(bar, "mbarrier.inval", file, line, err);
    if (m && (!m->copies.empty() || m->waiters))
      err = str("mbarrier.inval at ", site(file, line), ": bulk copies in flight or threads waiting on it");
    else if (m)
      block().bars.erase(m->addr);
  }
  if (!err.empty()) fail(std::move(err));
}

EMU_NO_TSAN uint64_t mbarrier_arrive(uint64_t* bar, uint32_t count, bool expect_tx, uint32_t tx_bytes, const char* file,
                                     int line) {
  std::string err;
  uint64_t token = 0;
  {
    TsanIgnore ignore;
    const char* op = expect_tx ? "mbarrier.arrive.expect_tx" : "mbarrier.arrive";
    Mbarrier* m = find_bar(bar, op, file, line, err);
    if (m) {
      if (count < 1 || count > uint32_t(kTxLimit))
        err = str(op, " at ", site(file, line), ": count ", count, " is not in [1, 2^20 - 1]");
      else if (count > m->pending)
        err = str(op, " at ", site(file, line), ": ", count, " arrival(s) on the mbarrier at ",
                  reinterpret_cast<const void*>(m->addr), " with only ", m->pending, " of ", m->expected,
                  " pending in phase ", m->phase, ": more arrivals than its init count");
      else if (expect_tx)
        err = change_tx(*m, int64_t(tx_bytes), op, file, line);
      if (err.empty()) {
        token = m->phase;
        m->pending -= count;
        tsan_release(&m->parity_token[m->phase & 1]);  // an arrive releases (PTX: .release.cta by default)
        err = maybe_complete(*m);
      }
    }
  }
  if (!err.empty()) fail(std::move(err));
  return token;
}

EMU_NO_TSAN void mbarrier_expect_tx(uint64_t* bar, uint32_t bytes, const char* file, int line) {
  std::string err;
  {
    TsanIgnore ignore;
    Mbarrier* m = find_bar(bar, "mbarrier.expect_tx", file, line, err);
    if (m) err = change_tx(*m, int64_t(bytes), "mbarrier.expect_tx", file, line);
  }
  if (!err.empty()) fail(std::move(err));
}

EMU_NO_TSAN void mbarrier_complete_tx(uint64_t* bar, uint32_t bytes, const char* file, int line) {
  std::string err;
  {
    TsanIgnore ignore;
    Mbarrier* m = find_bar(bar, "mbarrier.complete_tx", file, line, err);
    if (m) err = change_tx(*m, -int64_t(bytes), "mbarrier.complete_tx", file, line);
    if (m && err.empty()) err = maybe_complete(*m);
  }
  if (!err.empty()) fail(std::move(err));
}

EMU_NO_TSAN bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity, const char* file, int line) {
  for (;;) {
    std::string err;
    Mbarrier* m = nullptr;
    {
      TsanIgnore ignore;
      m = find_bar(bar, "mbarrier.try_wait.parity", file, line, err);
      if (m && parity > 1) err = str("mbarrier.try_wait.parity at ", site(file, line), ": parity ", parity, " is not 0 or 1");
      if (m && err.empty()) err = run_engine(*m);
      if (m && err.empty() && (m->phase & 1) != parity) {
        tsan_acquire(&m->parity_token[parity]);  // the completed phase: what its arrivals did before them
        return true;
      }
    }
    if (!err.empty()) fail(std::move(err));
    ++m->waiters;
    event_wait(m, "mbarrier.try_wait.parity", describe_bar, file, line);
    --m->waiters;
  }
}

void encode_tensor_map(CUtensorMap* map, int dtype, int elem_bytes, int rank, const void* global, const uint64_t* dims,
                       const uint64_t* strides, const uint32_t* box, const uint32_t* element_strides, int swizzle,
                       int oob_fill) {
  MapModel m{};
  m.magic = kMapMagic;
  m.global = reinterpret_cast<uint64_t>(global);
  for (int d = 0; d < rank; ++d) {
    m.dims[d] = dims[d];
    m.box[d] = box[d];
    m.estride[d] = uint8_t(element_strides[d]);
    if (d > 0) m.strides[d - 1] = strides[d - 1];
  }
  m.dtype = uint8_t(dtype);
  m.rank = uint8_t(rank);
  m.swizzle = uint8_t(swizzle);
  m.oob = uint8_t(oob_fill);
  m.elem = uint8_t(elem_bytes);
  std::memset(map, 0, sizeof(CUtensorMap));
  std::memcpy(map, &m, sizeof m);
}

namespace {
EMU_NO_TSAN std::string read_map(const CUtensorMap* map, const char* op, const char* file, int line, MapModel& m) {
  if (reinterpret_cast<uintptr_t>(map) % 64)
    return str(op, " at ", site(file, line), ": the tensor map at ", static_cast<const void*>(map),
               " is not 64-byte aligned");
  std::memcpy(&m, map, sizeof m);
  if (m.magic != kMapMagic)
    return str(op, " at ", site(file, line), ": the tensor map at ", static_cast<const void*>(map),
               " was not written by nimbus::cuda::encode_tensor_map");
  return "";
}
}  // namespace

EMU_NO_TSAN void tma_prefetch(const CUtensorMap* map, const char* file, int line) {
  MapModel m;
  std::string err = read_map(map, "prefetch.tensormap", file, line, m);
  if (!err.empty()) fail(std::move(err));
}

EMU_NO_TSAN void tma_load(int rank, void* dst, const CUtensorMap* map, uint64_t* bar, const int32_t* coords,
                          const char* file, int line) {
  std::string err;
  {
    TsanIgnore ignore;
    const char* op = "cp.async.bulk.tensor";
    BulkCopy c{};
    err = read_map(map, op, file, line, c.map);
    const MapModel& mm = c.map;
    const auto base = reinterpret_cast<uintptr_t>(dynamic_smem()), d = reinterpret_cast<uintptr_t>(dst);
    const size_t limit = dynamic_smem_bytes();
    uint32_t n[5];
    box_extent(mm, n);
    const uint64_t bytes = uint64_t(mm.elem) * n[0] * n[1] * n[2] * n[3] * n[4];
    const uint32_t repeat = mm.swizzle ? 128u << mm.swizzle : 128u;  // 256, 512, 1024 bytes; plain: 128
    Mbarrier* m = nullptr;
    if (!err.empty()) {
    } else if (mm.rank != rank) {
      err = str(op, ".", rank, "d at ", site(file, line), ": the tensor map has rank ", int(mm.rank));
    } else if (d < base || d + bytes > base + limit) {
      err = str(op, " at ", site(file, line), ": the ", bytes, "-byte box at ", dst,
                " does not lie in the launch's dynamic shared memory (", limit, " bytes, the emulator's shared window)");
    } else if ((d - base) % repeat) {
      err = str(op, " at ", site(file, line), ": destination shared address ", d - base, " is not ", repeat,
                "-byte aligned (", mm.swizzle ? "the swizzle pattern's repeat; " : "", "128 bytes for any box)");
    } else if (mm.swizzle && uint32_t(mm.box[0]) * mm.elem != uint32_t(swizzle_span(mm.swizzle))) {
      err = str(op, " at ", site(file, line), ": the box's inner dimension is ", mm.box[0] * mm.elem,
                " bytes with the ", swizzle_span(mm.swizzle), "B swizzle: the emulator models a swizzled box only "
                "when its inner dimension is exactly the swizzle span (the driver accepts less)");
    } else if (mm.oob) {
      err = str(op, " at ", site(file, line), ": NaN-request OOB fill is not modelled (zero fill is)");
    } else if (mm.dtype >= 10) {  // CUtensorMapDataType's F32_FTZ (10), TF32 (11), TF32_FTZ (12)
      err = str(op, " at ", site(file, line), ": data type ", int(mm.dtype), " (F32_FTZ, TF32 or TF32_FTZ) is not ",
                "modelled (the copy would flush or round); F32 is");
    } else if ((m = find_bar(bar, op, file, line, err)) != nullptr) {
      HopperBlock& h = block();
      auto it = h.inflight.upper_bound(d + bytes - 1);
      if (!m->init_visible)
        err = str(op, " at ", site(file, line), ": the mbarrier at ", static_cast<const void*>(bar),
                  " (initialised at ", site(m->init_file, m->init_line), ") is not yet visible to the async proxy "
                  "that signals it: fence.mbarrier_init (fence_mbarrier_init()) by the initialising thread, or "
                  "fence.proxy.async, after the init");
      else if (strict() && it != h.inflight.begin() && std::prev(it)->second > d)
        err = str(op, " at ", site(file, line), ": destination ", dst, " (", bytes,
                  " bytes) overlaps the destination of a bulk copy still in flight at ",
                  reinterpret_cast<const void*>(std::prev(it)->first),
                  " (wait on its mbarrier before reusing the buffer)");
    }
    if (err.empty()) {
      HopperBlock& h = block();
      c.dst = static_cast<unsigned char*>(dst);
      c.bytes = uint32_t(bytes);
      for (int i = 0; i < rank; ++i) c.coords[i] = coords[i];
      c.file = file;
      c.line = line;
      std::memset(c.dst, 0xFF, bytes);  // poison until the phase completes
      std::memset(h.view.data() + (d - base), 0xFF, bytes);
      h.inflight[d] = d + bytes;
      m->copies.push_back(std::move(c));
      ++current_block_stats().tma;
      event_wake(m);
    }
  }
  if (!err.empty()) fail(std::move(err));
}

EMU_NO_TSAN void fence_proxy_async_shared() {
  TsanIgnore ignore;
  HopperBlock& h = block();
  std::memcpy(h.view.data(), dynamic_smem(), h.view.size());
  // The inits this thread has seen: its own, and those a barrier (or its warp's __syncwarp) has shown it.
  const int tid = current_thread_id();
  for (auto& [a, m] : h.bars)
    if (init_seen_by(m, tid)) m.init_visible = true;
}

EMU_NO_TSAN void fence_mbarrier_init() {
  TsanIgnore ignore;
  const int tid = current_thread_id();
  for (auto& [a, m] : block().bars)
    if (m.init_tid == tid) m.init_visible = true;  // this thread's inits only, as PTX orders them
}

void wgmma_mma_async(const WgmmaShape& shape, float* d, const uint32_t* a, uint64_t desc_a, uint64_t desc_b,
                     int scale_d, const char* file, int line) {
  WgmmaLane lane{&shape, d, a, desc_a, desc_b, scale_d, file, line};
  // The name is per shape; the model reads the shape from the lanes. (A cache of the emulator's, shared
  // by every fiber of the OS thread: hidden from TSan.)
  const char* name = nullptr;
  {
    TsanIgnore ignore;
    thread_local std::map<const WgmmaShape*, std::string> names;
    std::string& cached = names[&shape];
    if (cached.empty())
      cached = str("wgmma.mma_async.sync.aligned.m64n", shape.n,
                   shape.type == WgmmaType::BF16 ? "k16.f32.bf16.bf16" : "k8.f32.tf32.tf32",
                   shape.a_in_registers ? " (A in registers)" : "");
    name = cached.c_str();
  }
  group_collective(name, wgmma_model, &lane, file, line);
}
void wgmma_fence(const char* file, int line) {
  group_collective("wgmma.fence.sync.aligned", wgmma_fence_model, nullptr, file, line);
}
void wgmma_commit_group(const char* file, int line) {
  group_collective("wgmma.commit_group.sync.aligned", wgmma_commit_model, nullptr, file, line);
}
void wgmma_wait_group(int n, const char* file, int line) {
  WaitLane lane{n};
  group_collective("wgmma.wait_group.sync.aligned", wgmma_wait_model, &lane, file, line);
}
void setmaxnreg(bool inc, int regs, const char* file, int line) {
  MaxnregLane lane{inc, regs};  // regs: 24..256, a multiple of 8, checked at compile time
  group_collective(inc ? "setmaxnreg.inc.sync.aligned.u32" : "setmaxnreg.dec.sync.aligned.u32", setmaxnreg_model, &lane,
                   file, line);
}

}  // namespace nimbus::emu
