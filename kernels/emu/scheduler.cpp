/* scheduler.cpp: runs an emulated kernel: one fiber per CUDA thread, blocks one after another.
 *
 * A block's threads run in the chosen order (forward / reverse / seeded shuffle), each until it
 * finishes or waits: at __syncthreads() (block scope) or at a warp primitive (warp scope). A warp
 * primitive completes the moment every lane of its mask has arrived; a block barrier releases
 * when nothing can run and every live thread waits at the same call site. Anything else with
 * nothing runnable is a bug in the kernel and is reported with thread ids: barrier reached from
 * two sites, a thread exited while others wait (strict mode), or a deadlock.
 *
 * Fibers never move between OS threads (TLS addresses are cached by the compiler): with
 * EMU_THREADS=n, blocks run in parallel under OpenMP, each OS thread with its own scheduler,
 * stack pool and shared memory (under TSan one OS thread: see run_kernel). Sanitizer fiber hooks:
 * EMU_ASAN / EMU_TSAN (set automatically under -fsanitize=address / thread); under TSan the blocks of a
 * launch are unordered, as on a GPU (FiberPool, tls_launch_token, forget_block_memory).
 */
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include "kernels/common/error.h"
#include "kernels/emu/device.h"
#include "kernels/emu/hopper.h"
#include "kernels/emu/tsan_ignore.h"

#if defined(__SANITIZE_ADDRESS__) && !defined(EMU_ASAN)
#define EMU_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(EMU_TSAN)
#define EMU_TSAN 1
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef EMU_TSAN
#include <link.h>
#include <sanitizer/tsan_interface.h>
// TSan's interface for Java heaps, the one public way to make TSan forget what happened to a range
// (its AnnotateNewMemory does nothing in GCC 12's libtsan): free drops the range's metadata (sync
// objects, heap blocks), alloc then clears its shadow (no access recorded) and records one heap block.
// Their checks that a Java heap was declared are debug-only in the runtime (a debug libtsan aborts).
extern "C" void __tsan_java_alloc(unsigned long ptr, unsigned long size);
extern "C" void __tsan_java_free(unsigned long ptr, unsigned long size);
#endif

namespace nimbus::emu {
namespace {

// Per OS thread: the running fiber's coordinates, and the dynamic shared memory
// (see DYNAMIC_SMEM in compat.h).
thread_local const Coords* tls_coords = nullptr;
// Storage for the largest opt-in size (227 KiB); a launch may use what its kernel's limit allows.
// Aligned to 1024 bytes, so that offsets in it (the emulator's shared-memory addresses, hopper.cpp) have
// the alignment of the pointers: the Hopper swizzle patterns repeat every 1024 bytes.
thread_local __attribute__((aligned(1024))) unsigned char nimbus_dyn_smem[kMaxDynamicSmemOptIn];
thread_local uint64_t tls_block_serial = 0;  // counts blocks run on this OS thread
thread_local size_t tls_smem_bytes = 0;      // the running launch's dynamic shared memory

#ifdef EMU_TSAN
void tsan_forget(const void* p, size_t bytes) {
  if (bytes == 0) return;
  __tsan_java_free(reinterpret_cast<unsigned long>(p), bytes);
  __tsan_java_alloc(reinterpret_cast<unsigned long>(p), bytes);
}

// Shared memory belongs to one block on a GPU, but here one OS thread's copy serves every block it runs
// (dynamic: nimbus_dyn_smem; static: `__shared__` is thread_local), and so do the thread_locals the
// emulator keeps per block. Blocks of a launch are unordered for TSan (FiberPool, tls_launch_token), so
// each block starts with TSan forgetting every earlier access to them: the launch's part of
// nimbus_dyn_smem and the rest of the executable's static TLS block. On x86-64 (TLS variant II) glibc
// puts that block `offset` below the thread pointer: its PT_TLS size rounded up to the segment's
// alignment, keeping the segment's misalignment (_dl_determine_tlsoffset, the first module). Forgetting
// hides nothing but these reused locations' history.
#if !defined(__x86_64__)
#error "the emulator's TSan mode knows x86-64's static TLS layout only (forget_block_memory)"
#endif
EMU_NO_TSAN void forget_block_memory() {
  struct Tls {
    size_t offset = 0, bytes = 0;
  };
  static const Tls tls = [] {
    Tls t;
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* out) {
          for (int i = 0; i < info->dlpi_phnum; ++i) {
            const ElfW(Phdr)& h = info->dlpi_phdr[i];
            if (h.p_type != PT_TLS) continue;
            const size_t align = std::max<size_t>(h.p_align, 1), firstbyte = (0 - h.p_vaddr) & (align - 1);
            auto* tls = static_cast<Tls*>(out);
            tls->bytes = h.p_memsz;
            tls->offset = (h.p_memsz - firstbyte + align - 1) / align * align + firstbyte;
          }
          return 1;  // the first object is the executable
        },
        &t);
    return t;
  }();
  char* const begin = static_cast<char*>(__builtin_thread_pointer()) - tls.offset;
  char* const end = begin + tls.bytes;
  char* const smem = reinterpret_cast<char*>(nimbus_dyn_smem);
  NIMBUS_CHECK(begin <= smem && smem + sizeof nimbus_dyn_smem <= end,
               "cuda emulator (TSan): the emulator's shared memory is not in the executable's static TLS block "
               "(is the emulator in a shared library?)");
  tsan_forget(begin, size_t(smem - begin));
  tsan_forget(smem, tls_smem_bytes);
  tsan_forget(smem + sizeof nimbus_dyn_smem, size_t(end - smem) - sizeof nimbus_dyn_smem);
}
#endif

// ---------------------------------------------------------------------------------------------
// Context switch: the only two functions that know how a fiber's registers are kept.
// On x86-64: a register swap in assembly (the System V callee-saved registers, the SSE and x87
// control words, the stack pointer). swapcontext also saves the signal mask, a sigprocmask syscall
// per switch (~270 ns): it took half of the emulator's time. Elsewhere, or with
// -DNIMBUS_EMU_UCONTEXT: ucontext.
#if defined(__x86_64__) && !defined(NIMBUS_EMU_UCONTEXT)
extern "C" void nimbus_emu_switch(void** save_sp, void* load_sp);
// Pushes the callee-saved registers and the control words on the current stack, saves the stack
// pointer in *save_sp, loads load_sp and pops the same from there; `ret` then continues the other
// fiber (or, the first time, enters it: context_make puts its entry where the return address goes).
asm(R"(
    .text
    .globl nimbus_emu_switch
    .type nimbus_emu_switch, @function
nimbus_emu_switch:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size nimbus_emu_switch, .-nimbus_emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
struct Context {
  void* sp = nullptr;
};
EMU_NO_TSAN void context_make(Context& c, char* stack, size_t size, void (*entry)()) {
  // The new stack, top 16-byte aligned: [control words][r15 r14 r13 r12 rbx rbp = 0][entry][0].
  // After the switch's `ret` into entry, rsp = top - 8, as after a call (the ABI's alignment).
  auto top = reinterpret_cast<uintptr_t>(stack + size) & ~uintptr_t(15);
  auto* slot = reinterpret_cast<uint64_t*>(top);
  *--slot = 0;                                  // a null return address for unwinders
  *--slot = reinterpret_cast<uint64_t>(entry);  // where the first switch "returns" to
  for (int r = 0; r < 6; ++r) *--slot = 0;      // rbp, rbx, r12..r15
  uint32_t mxcsr = 0;
  uint16_t fpucw = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  *--slot = uint64_t(mxcsr) | uint64_t(fpucw) << 32;
  c.sp = slot;
}
EMU_NO_TSAN void context_switch(Context& from, Context& to) { nimbus_emu_switch(&from.sp, to.sp); }
#else
struct Context {
  ucontext_t uc;
};
EMU_NO_TSAN void context_make(Context& c, char* stack, size_t size, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = size;
  c.uc.uc_link = nullptr;  // entry never returns: it switches away for the last time
  makecontext(&c.uc, entry, 0);
}
EMU_NO_TSAN void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

// ---------------------------------------------------------------------------------------------
// Fiber stacks: EMU_STACK_KB (default 64) each, with a PROT_NONE guard page below so an
// overflow faults instead of corrupting the neighbour. Pooled per OS thread: a stack is taken
// when a thread starts and returned when it finishes, so a barrier-free kernel needs one.
size_t stack_bytes() {
  static const size_t bytes = [] {
    const char* e = std::getenv("EMU_STACK_KB");
    size_t kb = e ? std::strtoul(e, nullptr, 10) : 64;
    return std::max<size_t>(kb, 16) * 1024;
  }();
  return bytes;
}

struct Stack {
  char* base = nullptr;  // usable memory, above the guard page
  size_t size = 0;
};

class StackPool {
 public:
  Stack get() {
    if (!free_.empty()) {
      Stack s = free_.back();
      free_.pop_back();
#ifdef EMU_ASAN
      ASAN_UNPOISON_MEMORY_REGION(s.base, s.size);  // frames of an abandoned fiber stay poisoned
#endif
      return s;
    }
    size_t page = size_t(sysconf(_SC_PAGESIZE)), size = stack_bytes();
    void* m = mmap(nullptr, size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    NIMBUS_CHECK(m != MAP_FAILED, "cuda emulator: cannot map a ", size, "-byte fiber stack");
    mprotect(m, page, PROT_NONE);
    all_.push_back(m);
    return {static_cast<char*>(m) + page, size};
  }
  void put(Stack s) { free_.push_back(s); }
  ~StackPool() {
    size_t page = size_t(sysconf(_SC_PAGESIZE));
    for (void* m : all_) munmap(m, stack_bytes() + page);
  }

 private:
  std::vector<Stack> free_;
  std::vector<void*> all_;
};

#ifdef EMU_TSAN
// Under TSan each CUDA thread runs as a TSan fiber. Making one costs ~0.6 ms and ~0.8 MB, so they are
// pooled per OS thread, each with the one stack it always runs on (a stack with two owners would look
// like a race between their frames). A block takes the fibers of its slot, its linear index modulo
// the slots, max(2, 1024 / threads per block) of them (no more than the grid's blocks): fibers of
// different slots never synchronise, so their blocks are unordered for TSan, as blocks are on a GPU;
// the blocks of one slot share fibers and are ordered, so a conflict between two blocks whose indices
// differ by a multiple of the slot count is not seen. A fiber is made from a fiber that has seen
// nothing since the pool began, and acquires its launch's token when it starts a CUDA thread.
class FiberPool {
 public:
  static int slots(int64_t blocks, int threads) {
    return int(std::min<int64_t>(blocks, std::max(2, 1024 / threads)));
  }
  // The fiber and stack of thread `tid` of a block in `slot`, made on first use.
  // Bookkeeping, hidden from TSan like the scheduler's (between the switches, TSan's current fiber is
  // parent_).
  EMU_NO_TSAN void take(int slot, int threads, int tid, void*& fiber, Stack& stack) {
    TsanIgnore ignore;
    const size_t i = size_t(slot) * size_t(threads) + size_t(tid);
    if (i >= entries_.size()) entries_.resize(i + 1);
    Entry& e = entries_[i];
    if (!e.stack.base) e.stack = stacks_.get();
    if (!e.fiber) {
      if (!parent_) parent_ = __tsan_create_fiber(0);
      void* sched = __tsan_get_current_fiber();
      __tsan_switch_to_fiber(parent_, __tsan_switch_to_fiber_no_sync);
      e.fiber = __tsan_create_fiber(0);
      __tsan_switch_to_fiber(sched, __tsan_switch_to_fiber_no_sync);
    }
    fiber = e.fiber;
    stack = e.stack;
  }
  // A thread abandoned mid-kernel (after an error): its fiber is replaced (its state is mid-kernel),
  // and TSan forgets what it did on its stack, which the new fiber gets.
  EMU_NO_TSAN void retire(void* fiber) {
    TsanIgnore ignore;
    for (Entry& e : entries_)
      if (e.fiber == fiber) {
        __tsan_destroy_fiber(e.fiber);
        e.fiber = nullptr;
        tsan_forget(e.stack.base, e.stack.size);
      }
  }
  FiberPool() = default;
  FiberPool(const FiberPool&) = delete;
  FiberPool& operator=(const FiberPool&) = delete;
  ~FiberPool() {  // the OS thread ends (before stacks_ unmaps the stacks)
    for (Entry& e : entries_)
      if (e.fiber) __tsan_destroy_fiber(e.fiber);
    if (parent_) __tsan_destroy_fiber(parent_);
  }

 private:
  struct Entry {
    void* fiber = nullptr;
    Stack stack;
  };
  std::vector<Entry> entries_;
  StackPool stacks_;  // hands out each stack once: Entry keeps it
  void* parent_ = nullptr;
};
thread_local FiberPool tls_fibers;
#endif

// ---------------------------------------------------------------------------------------------
// One emulated CUDA thread and one block.
enum class State : unsigned char { Fresh, Ready, Running, AtBarrier, AtWarp, AtEvent, Done, Faulted };

struct Thread {
  Coords coords;
  int tid = 0;  // linear id in the block: x + y*bx + z*bx*by
  State state = State::Fresh;
  Stack stack;
  Context ctx;
  const char* file = nullptr;  // site of the barrier / warp primitive it waits at
  int line = 0;
  WarpOp op = WarpOp::Syncwarp;  // the pending warp primitive
  uint32_t mask = 0, value = 0, result = 0;
  int arg = 0, width = 32;
  CollectiveFn coll_fn = nullptr;  // WarpOp::Collective/Group: the instruction model, its name, this lane's operands
  const char* coll_name = nullptr;
  void* coll_data = nullptr;
  const void* event_key = nullptr;  // State::AtEvent: what it waits on, the waiting instruction, how to describe it
  const char* event_name = nullptr;
  DescribeFn event_describe = nullptr;
  void* asan_fake_stack = nullptr;
  void* tsan_fiber = nullptr;
};

struct Block {
  std::vector<Thread> threads;
  Context sched;
  Thread* current = nullptr;
  void (*fn)(void*) = nullptr;
  void* arg = nullptr;
  std::string error;  // set by a faulting fiber or by the scheduler
  LaunchStats stats;
  StackPool pool;
  int live = 0;   // threads started and not finished (each holds a stack)
  int slot = 0;   // TSan: the block's slot in tls_fibers
  const void* main_stack_bottom = nullptr;  // the scheduler's stack, for ASan
  size_t main_stack_size = 0;
  void* tsan_sched = nullptr;
  char exit_token = 0;  // TSan sync object (an address): released by the threads, acquired by the scheduler
  uint64_t barriers_released = 0;  // in this block
  uint64_t syncwarps[kMaxBlockThreads / 32] = {};  // __syncwarp completions in this block, by warp
  // TSan sync objects (addresses) of the block's barriers and __syncwarp, fresh for every block. A
  // barrier's token is its generation's parity: a thread resumed from barrier k can reach k + 1 before
  // another has resumed from k, never k + 2, so one token for all would let the late thread acquire the
  // early one's work after k. __syncwarp: per-thread arrive and wake tokens (warp_arrive).
  struct Tokens {
    char barrier[2] = {};
    char arrive[kMaxBlockThreads] = {};
    char wake[kMaxBlockThreads] = {};
  };
  std::unique_ptr<Tokens> tokens;
};
thread_local Block tls_block;

#ifdef EMU_TSAN
// The running launch's TSan sync object, released by the host as the launch starts and acquired by
// each CUDA thread as it starts: the kernel sees what the host wrote before the launch. Threads
// acquire nothing else from the scheduler, which has seen the work of every thread and block it ran,
// so no block of a launch is ordered after another (FiberPool's slots allowing), as on a GPU, and TSan
// reports a conflict between two blocks' global-memory accesses.
thread_local char* tls_launch_token = nullptr;
#endif

std::string site(const char* file, int line) { return str(file, ":", line); }
// One source file? (__FILE__ strings: usually the same pointer; compared without a std::string, which
// would be a heap allocation per lane of every warp collective.)
bool same_file(const char* a, const char* b) { return a == b || std::strcmp(a, b) == 0; }

// "0-9,12,40-43": compact list of linear thread ids.
std::string ids(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (!s.empty()) s += ",";
    s += std::to_string(v[i]);
    if (j > i) s += "-" + std::to_string(v[j]);
    i = j + 1;
  }
  return s;
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Shfl: return "__shfl_sync";
    case WarpOp::ShflUp: return "__shfl_up_sync";
    case WarpOp::ShflDown: return "__shfl_down_sync";
    case WarpOp::ShflXor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
    case WarpOp::Syncwarp: return "__syncwarp";
    case WarpOp::Collective: return "a warp-collective instruction";
    case WarpOp::Group: return "a warpgroup-collective instruction";
  }
  return "?";
}
EMU_NO_TSAN const char* op_name(const Thread& t) {  // reads another thread's record: uninstrumented
  return (t.op == WarpOp::Collective || t.op == WarpOp::Group) && t.coll_name ? t.coll_name : op_name(t.op);
}

// ---------------------------------------------------------------------------------------------
// Switching between the scheduler and a fiber, with the sanitizer bookkeeping.
EMU_NO_TSAN void fiber_entry();

EMU_NO_TSAN void switch_to_thread(Block& b, Thread& t) {
#ifdef EMU_TSAN
  __tsan_switch_to_fiber(t.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
#ifdef EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, t.stack.base, t.stack.size);
#endif
  context_switch(b.sched, t.ctx);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// From the running fiber back to the scheduler; returns when the scheduler resumes it.
EMU_NO_TSAN void switch_to_scheduler(Block& b, Thread& t, bool final) {
#ifdef EMU_TSAN
  // The host acquires this after the block: everything the thread did so far, even if the block is
  // abandoned after an error, happens before the launch returns. Threads never acquire it.
  __tsan_release(&b.exit_token);
  __tsan_switch_to_fiber(b.tsan_sched, __tsan_switch_to_fiber_no_sync);
#endif
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(final ? nullptr : &t.asan_fake_stack, b.main_stack_bottom, b.main_stack_size);
#endif
  context_switch(t.ctx, b.sched);
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(t.asan_fake_stack, &b.main_stack_bottom, &b.main_stack_size);
#endif
  (void)final;
}

// A kernel bug found inside a fiber: record it and leave for good (the fiber is abandoned, so
// nothing on its stack is destroyed: the message is moved out, not copied, to leak nothing).
[[noreturn]] EMU_NO_TSAN void fault(Block& b, Thread& t, std::string&& msg) {
  {
    TsanIgnore ignore;  // the scheduler's own checks of b.error are not ordered before this thread
    b.error = std::move(msg);
  }
  TsanIgnore::end_all();  // a model's scope that found the fault (its fiber is abandoned)
  t.state = State::Faulted;
  switch_to_scheduler(b, t, false);
  __builtin_unreachable();
}

EMU_NO_TSAN void fiber_entry() {
  Block& b = tls_block;
  Thread& t = *b.current;
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b.main_stack_bottom, &b.main_stack_size);
#endif
#ifdef EMU_TSAN
  __tsan_acquire(tls_launch_token);  // the kernel sees the host's writes before the launch
#endif
  std::string escaped;
  try {
    b.fn(b.arg);
  } catch (const std::exception& e) {
    escaped = str("exception escaped the kernel: ", e.what());
  }
  if (!escaped.empty()) fault(b, t, std::move(escaped));  // outside the handler: the exception is freed
  t.state = State::Done;
  switch_to_scheduler(b, t, true);
  __builtin_unreachable();
}

// ---------------------------------------------------------------------------------------------
// Warp primitives: computed for the whole group once the last lane of the mask arrives.
EMU_NO_TSAN void complete_warp_op(Block& b, Thread& me, int warp, uint32_t mask) {
  Thread* lanes = &b.threads[size_t(warp) * 32];
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1)) continue;
    const Thread& o = lanes[l];
    // A collective instruction is `.aligned`: every lane at the same instruction (call site).
    bool same = o.op == me.op && o.mask == mask &&
                (me.op != WarpOp::Collective ||
                 (o.coll_fn == me.coll_fn && o.line == me.line && same_file(o.file, me.file)));
    if (same) continue;
    std::string msg;
    {
      TsanIgnore ignore;  // other threads' records, which the scheduler wrote
      msg = str("warp ", warp, ": lane ", l, " is in ", op_name(o), "(mask 0x", std::hex, o.mask, std::dec, ") at ",
                site(o.file, o.line), " while lane ", me.tid % 32, " is in ", op_name(me), "(mask 0x",
                std::hex, mask, std::dec, ") at ", site(me.file, me.line),
                me.op == WarpOp::Collective ? ": all 32 lanes must execute the same instruction (.aligned)"
                                            : ": lanes of a mask must meet at one primitive");
    }
    fault(b, me, std::move(msg));
  }
  if (me.op == WarpOp::Collective) {
    void* data[32];
    for (int l = 0; l < 32; ++l) data[l] = lanes[l].coll_data;
    std::string err;
    {
      // The model reads the other lanes' operands and writes their results, on their stacks: register
      // traffic, which orders no memory (mma.sync, ldmatrix are no fences), so TSan does not see it.
      TsanIgnore ignore;
      err = me.coll_fn(data);
    }
    if (!err.empty()) {
      std::string msg = str(me.coll_name, " at ", site(me.file, me.line), ", warp ", warp, ": ", err);
      std::string().swap(err);  // fault() never returns: nothing left on this stack is destroyed
      fault(b, me, std::move(msg));
    }
    for (int l = 0; l < 32; ++l) lanes[l].state = State::Ready;
    me.state = State::Running;
    ++b.stats.warp_syncs;
    return;
  }
  uint32_t ballot = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1) && lanes[l].value) ballot |= 1u << l;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1)) continue;
    Thread& t = lanes[l];
    int w = t.width, lo = l & ~(w - 1), hi = lo + w - 1, j = l;
    bool valid = true;
    switch (t.op) {  // PTX shfl.sync rules: an out-of-segment source returns the lane's own value
      case WarpOp::Shfl: j = lo | (t.arg & (w - 1)); break;
      case WarpOp::ShflUp: j = l - t.arg; valid = t.arg >= 0 && j >= lo; break;
      case WarpOp::ShflDown: j = l + t.arg; valid = t.arg >= 0 && j <= hi; break;
      case WarpOp::ShflXor: j = l ^ (t.arg & 31); valid = j <= hi; break;  // earlier segments are reachable
      default: break;
    }
    switch (t.op) {
      case WarpOp::Ballot: t.result = ballot; break;
      case WarpOp::Any: t.result = ballot != 0; break;
      case WarpOp::All: t.result = ballot == mask; break;
      case WarpOp::Syncwarp: t.result = 0; break;
      default:
        if (valid && !(mask >> j & 1)) {
          std::string msg;
          {
            TsanIgnore ignore;  // other threads' records, which the scheduler wrote
            msg = str(op_name(t.op), " at ", site(t.file, t.line), ": lane ", l, " reads lane ", j,
                      " which is not in mask 0x", std::hex, mask, std::dec, " (undefined on a GPU)");
          }
          fault(b, me, std::move(msg));
        }
        t.result = valid ? lanes[j].value : t.value;
    }
    t.state = State::Ready;
  }
  me.state = State::Running;  // the last arrival goes on without a switch
  ++b.stats.warp_syncs;
}

// ---------------------------------------------------------------------------------------------
// The block loop.
// Into p, which the scheduler keeps across its rounds (one round per warp primitive or barrier).
void permutation(std::vector<int>& p, int n, const OrderSpec& o, std::mt19937_64& rng) {
  p.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) p[size_t(i)] = o.order == Order::Reverse ? n - 1 - i : i;
  if (o.order == Order::Shuffle) std::shuffle(p.begin(), p.end(), rng);
}

EMU_NO_TSAN void start_or_resume(Block& b, Thread& t) {
  if (t.state == State::Fresh) {
#ifdef EMU_TSAN
    tls_fibers.take(b.slot, int(b.threads.size()), t.tid, t.tsan_fiber, t.stack);
    // TSan's reports name the fiber this way (for the earlier access of a report: the block it ran last).
    char name[64];
    std::snprintf(name, sizeof name, "CUDA thread (%u,%u,%u) of block (%u,%u,%u)", t.coords.thread_idx.x,
                  t.coords.thread_idx.y, t.coords.thread_idx.z, t.coords.block_idx.x, t.coords.block_idx.y,
                  t.coords.block_idx.z);
    __tsan_set_fiber_name(t.tsan_fiber, name);
#else
    t.stack = b.pool.get();
#endif
    ++b.live;
    b.stats.max_stacks = std::max<int64_t>(b.stats.max_stacks, b.live);
    context_make(t.ctx, t.stack.base, t.stack.size, fiber_entry);
  }
  t.state = State::Running;
  b.current = &t;
  tls_coords = &t.coords;
  switch_to_thread(b, t);
#ifdef EMU_TSAN
  __tsan_acquire(&b.exit_token);  // the scheduler reads what the fiber left (error text); fibers never acquire it
#endif
  if (t.state == State::Done) {
#ifndef EMU_TSAN
    b.pool.put(t.stack);
#endif
    t.stack = {};
    t.tsan_fiber = nullptr;  // TSan: it stays in tls_fibers with its stack
    --b.live;
  }
}

// Nothing is runnable and not everyone is done: release the barrier if that is legal, else
// describe the problem. The legal release is the common case (every __syncthreads() of every block):
// checked first without allocating; the diagnosis, out of line, checks it again and builds the message.
EMU_NO_TSAN std::string diagnose_stall(Block& b, bool strict_mode);

EMU_NO_TSAN std::string release_or_diagnose(Block& b, bool strict_mode) {
  const Thread* t0 = nullptr;  // the first thread at a barrier
  bool exited = false, one_barrier = true;
  for (const Thread& t : b.threads) {
    if (t.state == State::Done) {
      exited = true;
    } else if (t.state != State::AtBarrier) {
      one_barrier = false;  // waits in a warp primitive or on an event: diagnose_stall says which
      break;
    } else if (!t0) {
      t0 = &t;
    } else if (t.line != t0->line || !same_file(t.file, t0->file)) {
      one_barrier = false;
      break;
    }
  }
  if (!one_barrier || !t0 || (exited && strict_mode)) return diagnose_stall(b, strict_mode);
  for (Thread& t : b.threads)
    if (t.state == State::AtBarrier) t.state = State::Ready;
  ++b.stats.barriers;
  ++b.barriers_released;
  return "";
}

[[gnu::noinline, gnu::cold]] EMU_NO_TSAN std::string diagnose_stall(Block& b, bool strict_mode) {
  std::vector<int> done, at_barrier, at_warp, at_event;
  for (const Thread& t : b.threads)
    (t.state == State::Done        ? done
     : t.state == State::AtBarrier ? at_barrier
     : t.state == State::AtEvent   ? at_event
                                   : at_warp)
        .push_back(t.tid);
  if (!at_warp.empty() || !at_event.empty()) {
    std::string msg = "deadlock: no thread can run.";
    std::vector<bool> group_reported(b.threads.size() / 128 + 1, false);
    for (size_t w = 0; w * 32 < b.threads.size(); ++w) {
      // A warpgroup instruction: which threads of the warpgroup are not there.
      const Thread* g = nullptr;
      for (int l = 0; l < 32 && w * 32 + size_t(l) < b.threads.size() && !g; ++l) {
        const Thread& t = b.threads[w * 32 + size_t(l)];
        if (t.state == State::AtWarp && t.op == WarpOp::Group) g = &t;
      }
      if (g) {
        const size_t wg = w / 4;
        if (group_reported[wg]) continue;
        group_reported[wg] = true;
        std::vector<int> waiting, missing;
        for (size_t i = wg * 128; i < wg * 128 + 128 && i < b.threads.size(); ++i) {
          const Thread& t = b.threads[i];
          (t.state == State::AtWarp && t.op == WarpOp::Group ? waiting : missing).push_back(t.tid);
        }
        bool exited = std::all_of(missing.begin(), missing.end(),
                                  [&](int id) { return b.threads[size_t(id)].state == State::Done; });
        msg += str(" Threads ", ids(waiting), " wait in ", op_name(*g), " at ", site(g->file, g->line), " for threads ",
                   ids(missing), " of their warpgroup, which", exited ? " exited." : " wait elsewhere.");
        continue;
      }
      std::vector<int> waiting, missing;
      const Thread* first = nullptr;
      for (int l = 0; l < 32 && w * 32 + size_t(l) < b.threads.size(); ++l) {
        const Thread& t = b.threads[w * 32 + size_t(l)];
        if (t.state == State::AtWarp) waiting.push_back(t.tid), first = first ? first : &t;
      }
      if (!first) continue;
      for (int l = 0; l < 32; ++l)
        if ((first->mask >> l & 1) && b.threads[w * 32 + size_t(l)].state != State::AtWarp)
          missing.push_back(int(w * 32) + l);
      msg += str(" Threads ", ids(waiting), " wait in ", op_name(*first), " at ", site(first->file, first->line),
                 " for threads ", ids(missing), " of its mask, which");
      bool exited = std::all_of(missing.begin(), missing.end(),
                                [&](int id) { return b.threads[size_t(id)].state == State::Done; });
      msg += exited ? " exited." : " wait elsewhere.";
    }
    // Threads waiting on a model object (an mbarrier phase): grouped by object and call site.
    std::vector<bool> seen(b.threads.size(), false);
    for (int id : at_event) {
      if (seen[size_t(id)]) continue;
      const Thread& t0 = b.threads[size_t(id)];
      std::vector<int> same;
      for (int j : at_event) {
        const Thread& t = b.threads[size_t(j)];
        if (!seen[size_t(j)] && t.event_key == t0.event_key && t.line == t0.line && same_file(t.file, t0.file))
          same.push_back(j), seen[size_t(j)] = true;
      }
      msg += str(" Threads ", ids(same), " wait in ", t0.event_name, " at ", site(t0.file, t0.line), ": ",
                 t0.event_describe ? t0.event_describe(t0.event_key) : std::string("(no description)"), ".");
    }
    if (!at_barrier.empty())
      msg += str(" Threads ", ids(at_barrier), " wait at __syncthreads() at ",
                 site(b.threads[size_t(at_barrier[0])].file, b.threads[size_t(at_barrier[0])].line), ".");
    return msg;
  }
  // Everyone alive waits at a block barrier.
  const Thread& t0 = b.threads[size_t(at_barrier[0])];
  std::vector<int> elsewhere;
  for (int id : at_barrier) {
    const Thread& t = b.threads[size_t(id)];
    if (t.line != t0.line || !same_file(t.file, t0.file)) elsewhere.push_back(id);
  }
  if (!elsewhere.empty()) {
    const Thread& t1 = b.threads[size_t(elsewhere[0])];
    std::vector<int> same;
    for (int id : at_barrier)
      if (std::find(elsewhere.begin(), elsewhere.end(), id) == elsewhere.end()) same.push_back(id);
    return str("__syncthreads() reached from different call sites: threads ", ids(same), " at ",
               site(t0.file, t0.line), ", threads ", ids(elsewhere), " at ", site(t1.file, t1.line),
               " (every thread of a block must reach the same barrier)");
  }
  if (!done.empty() && strict_mode)
    return str("threads ", ids(done), " exited while threads ", ids(at_barrier), " wait at __syncthreads() at ",
               site(t0.file, t0.line), " (barriers must be reached by all threads: guard work with `bool active`, "
               "do not return early; EMU_STRICT=0 releases the barrier as PTX exit would)");
  for (Thread& t : b.threads)
    if (t.state == State::AtBarrier) t.state = State::Ready;
  ++b.stats.barriers;
  ++b.barriers_released;
  return "";
}

// Runs one block; returns "" or the error.
EMU_NO_TSAN std::string run_block(dim3 grid, dim3 block, uint3 bidx, size_t smem, void (*fn)(void*), void* arg,
                                  const OrderSpec& order_spec, bool strict_mode, uint64_t block_linear) {
  Block& b = tls_block;
  int n = int(block.x * block.y * block.z);
  b.threads.resize(size_t(n));
  b.fn = fn;
  b.arg = arg;
  b.error.clear();
  b.barriers_released = 0;
  std::fill(std::begin(b.syncwarps), std::end(b.syncwarps), 0);
  for (int i = 0; i < n; ++i) {
    Thread& t = b.threads[size_t(i)];
    t.tid = i;
    t.state = State::Fresh;
    t.coords = {{unsigned(i) % block.x, unsigned(i) / block.x % block.y, unsigned(i) / (block.x * block.y)},
                bidx, block, grid};
  }
  std::memset(nimbus_dyn_smem, 0xFF, smem);  // NaN bytes: reading before writing shows up
  tls_smem_bytes = smem;
  ++tls_block_serial;
#ifdef EMU_ASAN
  ASAN_POISON_MEMORY_REGION(nimbus_dyn_smem + smem, kMaxDynamicSmemOptIn - smem);  // past the requested size
#endif
#ifdef EMU_TSAN
  b.tsan_sched = __tsan_get_current_fiber();
  b.slot = int(block_linear % uint64_t(FiberPool::slots(int64_t(grid.x) * grid.y * grid.z, n)));
  b.tokens = std::make_unique<Block::Tokens>();  // fresh: freeing the last block's dropped its sync objects
  forget_block_memory();
#endif
  std::mt19937_64 rng(order_spec.seed * 0x9E3779B97F4A7C15ull + block_linear);
  ++b.stats.blocks;
  b.stats.threads += n;
  thread_local std::vector<int> round;
  try {  // the scheduler's own failures (no memory for a stack) end the block as a kernel error does
    for (;;) {
      bool ran = false;
      permutation(round, n, order_spec, rng);
      for (int i : round) {
        Thread& t = b.threads[size_t(i)];
        if (t.state != State::Fresh && t.state != State::Ready) continue;
        start_or_resume(b, t);
        ran = true;
        if (!b.error.empty()) break;
      }
      if (!b.error.empty()) break;
      if (ran) continue;
      if (std::all_of(b.threads.begin(), b.threads.end(), [](const Thread& t) { return t.state == State::Done; })) {
        b.error = block_exit_check();  // hopper.h
        break;
      }
      b.error = release_or_diagnose(b, strict_mode);
      if (!b.error.empty()) break;
    }
  } catch (const std::exception& e) {
    b.error = e.what();
  }
  // Abandon whatever did not finish (only after an error): its stack goes back to the pool (under
  // TSan, its fiber is replaced, its state being mid-kernel, and its stack forgotten: FiberPool).
  for (Thread& t : b.threads) {
#ifdef EMU_TSAN
    if (t.tsan_fiber) tls_fibers.retire(t.tsan_fiber);
#else
    if (t.stack.base) b.pool.put(t.stack);
#endif
    t.stack = {};
    t.tsan_fiber = nullptr;
  }
  b.live = 0;
#ifdef EMU_TSAN
  __tsan_acquire(&b.exit_token);
  b.tokens.reset();
#endif
#ifdef EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(nimbus_dyn_smem, kMaxDynamicSmemOptIn);
#endif
  tls_coords = nullptr;
  std::string error = std::move(b.error);
  b.error = std::string();  // tls_block outlives the launch (and OpenMP workers are never joined)
  if (error.empty()) return "";
  return str("block (", bidx.x, ",", bidx.y, ",", bidx.z, "): ", error);
}

LaunchStats last_stats;  // of the last launch (host side, one launch at a time)
LaunchStats all_stats;   // of every launch since the process started

void add_stats(LaunchStats& total, const LaunchStats& s) {
  total.blocks += s.blocks, total.threads += s.threads, total.barriers += s.barriers;
  total.warp_syncs += s.warp_syncs, total.max_stacks = std::max(total.max_stacks, s.max_stacks);
  total.mma += s.mma, total.ldmatrix += s.ldmatrix, total.ldmatrix_wavefronts += s.ldmatrix_wavefronts;
  total.smem_bank_conflicts += s.smem_bank_conflicts, total.cp_async += s.cp_async;
  total.wgmma += s.wgmma, total.tma += s.tma, total.mbarrier_phases += s.mbarrier_phases;
}

int& block_threads_setting() {
  static int n = [] {
    const char* e = std::getenv("EMU_THREADS");
    return e ? std::max(1, std::atoi(e)) : 1;
  }();
  return n;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Device-side entry points.
EMU_NO_TSAN uint3 thread_idx() { return tls_coords->thread_idx; }
EMU_NO_TSAN uint3 block_idx() { return tls_coords->block_idx; }
EMU_NO_TSAN dim3 block_dim() { return tls_coords->block_dim; }
EMU_NO_TSAN dim3 grid_dim() { return tls_coords->grid_dim; }
unsigned char* dynamic_smem() { return nimbus_dyn_smem; }
size_t dynamic_smem_bytes() { return tls_smem_bytes; }

EMU_NO_TSAN void syncthreads(const char* file, int line) {
  Block& b = tls_block;
  Thread& t = *b.current;
  t.state = State::AtBarrier;
  t.file = file;
  t.line = line;
#ifdef EMU_TSAN
  char* const token = &b.tokens->barrier[b.barriers_released & 1];
  __tsan_release(token);
#endif
  switch_to_scheduler(b, t, false);
#ifdef EMU_TSAN
  __tsan_acquire(token);
#endif
}

namespace {
// Why a warp primitive's arguments are wrong, or "" (out of line and cold: the messages' streams would
// otherwise give warp_arrive, which runs once per lane per primitive, a frame ASan poisons on every call).
[[gnu::noinline, gnu::cold]] EMU_NO_TSAN std::string warp_arrive_error(const Block& b, const Thread& t, uint32_t mask,
                                                                      int width, const char* file, int line) {
  const int lane = t.tid % 32, warp = t.tid / 32;
  if (b.threads.size() % 32 != 0)
    return str(op_name(t), " at ", site(file, line), ": block of ", b.threads.size(),
               " threads; warp primitives need a multiple of 32");
  if (!(mask >> lane & 1))
    return str(op_name(t), " at ", site(file, line), ": lane ", lane, " of warp ", warp, " calls it with mask 0x",
               std::hex, mask, std::dec, " that excludes itself");
  if (width < 1 || width > 32 || (width & (width - 1)))
    return str(op_name(t), " at ", site(file, line), ": width ", width, " is not a power of two in [1, 32]");
  return "";
}

EMU_NO_TSAN uint32_t warp_arrive(WarpOp op, uint32_t mask, uint32_t value, int arg, int width, const char* file,
                                 int line, CollectiveFn fn, const char* name, void* data) {
  Block& b = tls_block;
  Thread& t = *b.current;
  t.coll_fn = fn;
  t.coll_name = name;
  t.coll_data = data;
  t.op = op;
  const int lane = t.tid % 32, warp = t.tid / 32;
  if (b.threads.size() % 32 != 0 || !(mask >> lane & 1) || width < 1 || width > 32 || (width & (width - 1))) {
    std::string msg = warp_arrive_error(b, t, mask, width, file, line);  // its own statement: fault never returns
    fault(b, t, std::move(msg));
  }
  t.mask = mask;
  t.value = value;
  t.arg = arg;
  t.width = width;
  t.file = file;
  t.line = line;
  t.state = State::AtWarp;
  // Of the warp primitives only __syncwarp orders memory among its lanes (CUDA guide: shuffles and
  // votes guarantee no memory ordering; mma.sync and ldmatrix are no fences either): for TSan each lane
  // releases its arrive token, the lane that completes it acquires those of the mask and releases each
  // lane's wake token, which the lane acquires when it resumes.
  const bool fence = op == WarpOp::Syncwarp;
#ifdef EMU_TSAN
  if (fence) __tsan_release(&b.tokens->arrive[t.tid]);
#endif
  bool complete = true;
  for (int l = 0; l < 32 && complete; ++l)
    if ((mask >> l & 1) && b.threads[size_t(warp * 32 + l)].state != State::AtWarp) complete = false;
  if (complete) {
#ifdef EMU_TSAN
    for (int l = 0; l < 32; ++l)
      if (fence && (mask >> l & 1)) __tsan_acquire(&b.tokens->arrive[warp * 32 + l]);
#endif
    complete_warp_op(b, t, warp, mask);
    if (fence) ++b.syncwarps[warp];
#ifdef EMU_TSAN
    for (int l = 0; l < 32; ++l)
      if (fence && (mask >> l & 1)) __tsan_release(&b.tokens->wake[warp * 32 + l]);
#endif
  } else {
    switch_to_scheduler(b, t, false);
  }
#ifdef EMU_TSAN
  if (fence) __tsan_acquire(&b.tokens->wake[t.tid]);
#endif

  return t.result;
}
}  // namespace

EMU_NO_TSAN uint32_t warp_op(WarpOp op, uint32_t mask, uint32_t value, int arg, int width, const char* file,
                             int line) {
  return warp_arrive(op, mask, value, arg, width, file, line, nullptr, nullptr, nullptr);
}

EMU_NO_TSAN void warp_collective(const char* name, CollectiveFn fn, void* lane_data, const char* file, int line) {
  warp_arrive(WarpOp::Collective, 0xffffffffu, 0, 0, 32, file, line, fn, name, lane_data);
}

EMU_NO_TSAN void group_collective(const char* name, CollectiveFn fn, void* lane_data, const char* file, int line) {
  Block& b = tls_block;
  Thread& t = *b.current;
  const size_t wg = size_t(t.tid) / 128, first = wg * 128;
  t.coll_fn = fn;
  t.coll_name = name;
  t.coll_data = lane_data;
  t.op = WarpOp::Group;
  t.mask = 0xffffffffu;
  t.file = file;
  t.line = line;
  if (first + 128 > b.threads.size()) {
    std::string msg;
    {
      TsanIgnore ignore;  // other threads' records, which the scheduler wrote
      msg = str(name, " at ", site(file, line), ": thread ", t.tid, " is in warpgroup ", wg, " (threads ",
                first, "-", first + 127, "), which a block of ", b.threads.size(),
                " threads does not contain: warpgroup instructions need all 4 warps of the warpgroup");
    }
    fault(b, t, std::move(msg));
  }
  t.state = State::AtWarp;
  bool complete = true;  // no memory ordering: a warpgroup instruction is no fence (as in warp_arrive)
  for (size_t i = first; i < first + 128; ++i)
    if (b.threads[i].state != State::AtWarp) complete = false;
  if (!complete) {
    switch_to_scheduler(b, t, false);
  } else {
    for (size_t i = first; i < first + 128; ++i) {
      const Thread& o = b.threads[i];
      if (o.op == WarpOp::Group && o.coll_fn == fn && o.line == line && same_file(o.file, file)) continue;
      std::string msg;
      {
        TsanIgnore ignore;  // other threads' records, which the scheduler wrote
        msg = str("warpgroup ", wg, ": thread ", o.tid, " is in ", op_name(o), " at ", site(o.file, o.line),
                  " while thread ", t.tid, " is in ", name, " at ", site(file, line),
                  ": all 128 threads of a warpgroup must execute the same instruction (.aligned)");
      }
      fault(b, t, std::move(msg));
    }
    void* data[128];
    for (size_t i = 0; i < 128; ++i) data[i] = b.threads[first + i].coll_data;
    std::string err;
    {
      TsanIgnore ignore;  // register traffic between the threads, as in complete_warp_op
      err = fn(data);
    }
    if (!err.empty()) {
      std::string msg = str(name, " at ", site(file, line), ", warpgroup ", wg, ": ", err);
      std::string().swap(err);
      fault(b, t, std::move(msg));
    }
    for (size_t i = first; i < first + 128; ++i) b.threads[i].state = State::Ready;
    t.state = State::Running;
    ++b.stats.warp_syncs;
  }
}

EMU_NO_TSAN void event_wait(const void* key, const char* name, DescribeFn describe, const char* file, int line) {
  Block& b = tls_block;
  Thread& t = *b.current;
  t.state = State::AtEvent;
  t.event_key = key;
  t.event_name = name;
  t.event_describe = describe;
  t.file = file;
  t.line = line;
  switch_to_scheduler(b, t, false);
}

EMU_NO_TSAN void event_wake(const void* key) {
  for (Thread& t : tls_block.threads)
    if (t.state == State::AtEvent && t.event_key == key) t.state = State::Ready;
}

EMU_NO_TSAN void kernel_fault(std::string msg) {
  Block& b = tls_block;
  fault(b, *b.current, std::move(msg));
}

EMU_NO_TSAN MemSpace classify_address(const void* p, size_t bytes) {
  auto a = reinterpret_cast<uintptr_t>(p), smem = reinterpret_cast<uintptr_t>(nimbus_dyn_smem);
  if (a >= smem && a + bytes <= smem + kMaxDynamicSmemOptIn) return MemSpace::DynamicShared;
  if (is_device_pointer(p)) return MemSpace::Global;
  for (const Thread& t : tls_block.threads) {
    auto lo = reinterpret_cast<uintptr_t>(t.stack.base);
    if (t.stack.base && a >= lo && a < lo + t.stack.size) return MemSpace::Local;
  }
  return MemSpace::Other;
}
EMU_NO_TSAN int current_thread_id() { return tls_block.current->tid; }
EMU_NO_TSAN bool in_kernel() { return tls_coords != nullptr; }
EMU_NO_TSAN uint64_t block_barriers() { return tls_block.barriers_released; }
EMU_NO_TSAN uint64_t block_syncwarps(int warp) { return tls_block.syncwarps[warp]; }
EMU_NO_TSAN uint64_t current_block_serial() { return tls_block_serial; }
EMU_NO_TSAN LaunchStats& current_block_stats() { return tls_block.stats; }

// ---------------------------------------------------------------------------------------------
// Host-side launch.
bool launch_config_ok(dim3 grid, dim3 block, size_t smem, size_t smem_limit) {
  uint64_t threads = uint64_t(block.x) * block.y * block.z;
  smem_limit = std::min(smem_limit, kMaxDynamicSmemOptIn);
  if (threads == 0 || threads > uint64_t(kMaxBlockThreads) || block.z > 64 || grid.x == 0 || grid.y == 0 ||
      grid.z == 0 || grid.y > 65535 || grid.z > 65535 || smem > smem_limit) {
    set_last_error(cudaErrorInvalidConfiguration,
                   str("launch: grid (", grid.x, ",", grid.y, ",", grid.z, ") block (", block.x, ",", block.y, ",",
                       block.z, ") with ", smem, " bytes of dynamic shared memory is not a valid configuration "
                       "(at most 1024 threads per block, block.z <= 64, grid.y/z <= 65535, smem <= ", smem_limit,
                       smem_limit == kMaxDynamicSmem ? ": more needs cudaFuncSetAttribute(kernel, "
                                                       "cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)"
                                                     : " as set by cudaFuncSetAttribute",
                       ")"));
    return false;
  }
  return true;
}

void run_kernel(dim3 grid, dim3 block, size_t smem, void (*fn)(void*), void* arg, size_t smem_limit) {
  if (!launch_config_ok(grid, block, smem, smem_limit)) return;
  const OrderSpec spec = order();
  const bool strict_mode = strict();
  int64_t nblocks = int64_t(grid.x) * grid.y * grid.z;
  std::vector<int64_t> blocks(static_cast<size_t>(nblocks));
  for (int64_t i = 0; i < nblocks; ++i) blocks[size_t(i)] = spec.order == Order::Reverse ? nblocks - 1 - i : i;
  if (spec.order == Order::Shuffle) std::shuffle(blocks.begin(), blocks.end(), std::mt19937_64(spec.seed));

  std::vector<std::string> errors(static_cast<size_t>(nblocks));
  bool failed = false;  // stop at the first broken block
  LaunchStats total;
  int nthreads = int(std::min<int64_t>(block_threads(), nblocks));
#ifdef EMU_TSAN
  // One OS thread: libgomp's own synchronisation (its thread pool, the region's shared variables) is
  // invisible to TSan, and blocks on one OS thread are already unordered for it (FiberPool).
  nthreads = 1;
#endif
  // A mutex rather than `omp critical`: TSan sees pthread mutexes but not libgomp's own sync, so
  // locking it on entry and exit of the region orders host -> blocks -> host for TSan too.
  std::mutex merge;
  { std::lock_guard<std::mutex> lock(merge); }
#ifdef EMU_TSAN
  const auto launch_token = std::make_unique<char>();  // fresh memory: no other launch's sync object
  __tsan_release(launch_token.get());
#endif
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    { std::lock_guard<std::mutex> lock(merge); }
#ifdef EMU_TSAN
    tls_launch_token = launch_token.get();
#endif
    tls_block.stats = {};
#pragma omp for schedule(dynamic)
    for (int64_t k = 0; k < nblocks; ++k) {
      if (__atomic_load_n(&failed, __ATOMIC_RELAXED)) continue;
      int64_t lin = blocks[size_t(k)];
      uint3 bidx{unsigned(lin % grid.x), unsigned(lin / grid.x % grid.y), unsigned(lin / (int64_t(grid.x) * grid.y))};
      try {
        errors[size_t(k)] = run_block(grid, block, bidx, smem, fn, arg, spec, strict_mode, uint64_t(lin));
      } catch (const std::exception& e) {  // e.g. no memory for stacks; must not leave an OpenMP region
        errors[size_t(k)] = e.what();
      }
      if (!errors[size_t(k)].empty()) __atomic_store_n(&failed, true, __ATOMIC_RELAXED);
    }
#ifdef EMU_TSAN
    tls_launch_token = nullptr;
#endif
    {
      std::lock_guard<std::mutex> lock(merge);
      add_stats(total, tls_block.stats);
    }
  }
  std::lock_guard<std::mutex> lock(merge);
  last_stats = total;
  add_stats(all_stats, total);
  for (const std::string& e : errors)
    NIMBUS_CHECK(e.empty(), "cuda emulator: kernel with grid (", grid.x, ",", grid.y, ",", grid.z, ") block (",
                 block.x, ",", block.y, ",", block.z, "), ", order_name(spec.order), " order: ", e);
}

LaunchStats last_launch_stats() { return last_stats; }
LaunchStats all_launch_stats() { return all_stats; }
void set_block_threads(int n) { block_threads_setting() = std::max(1, n); }
int block_threads() { return block_threads_setting(); }

}  // namespace nimbus::emu
