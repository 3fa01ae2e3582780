// allocator.h: the caching allocator behind every tensor's storage.
//
// Why: glibc malloc hands large blocks straight to mmap/munmap, so a training
// step that frees and re-allocates the same activations pays a page fault per
// 4 KiB on every step (PyTorch on our 2-core machine loses up to 30% of its time
// that way; see shared/reference/perf-baseline.md). Here freed blocks go back to
// a free list keyed by their rounded size and are handed out again, so after the
// first step a training loop allocates from the cache and touches no new pages.
//
// Sizes are rounded up to a size class (multiples of 512 B below 1 MiB; above,
// a quarter of the next power of two), which keeps the number of classes small
// while wasting at most 25%. Blocks are 64-byte aligned (one cache line, one
// AVX-512 register). Thread-safe: the data loader allocates from its threads.
//
// Pools, for streams and graphs (the CUDA backend; the CPU has only pool 0). A freed block returns
// to the pool it was allocated from, and allocate() takes only from the pool the pool function names
// now, so a block freed while work queued on one stream may still use it is never handed to another
// stream (each stream is its own pool, as in PyTorch). A private pool serves a graph capture: while
// it is current, blocks freed from any ordinary pool land in it too (the captured graph may use them at
// every replay, so no eager work may get them), and it keeps them until released, when they go to a
// named pool. A block of another live graph's private pool freed during a capture goes back to that
// pool (its graph still writes it). Pools never share blocks otherwise; empty_cache() frees the cached blocks of ordinary pools.
//
// Under AddressSanitizer, where the blocks are host memory (the CPU's, and the emulator's device
// memory), the allocator tells ASan what it knows: the bytes past the requested size (the size class's
// slack) and the whole of a cached block are poisoned, so a kernel writing past its tensor, or a view
// used after its storage was freed, is reported even though the block itself is still allocated.
// A private pool's blocks are never poisoned: the captured graph writes them at every replay, each
// as long as any of its captured uses.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

namespace nimbus {

struct AllocatorStats {
  size_t bytes_in_use = 0;     // handed out and not yet freed
  size_t bytes_cached = 0;     // freed, kept in the free lists for reuse
  size_t peak_in_use = 0;      // high-water mark of bytes_in_use
  size_t peak_reserved = 0;    // high-water mark of in use + cached (what the system gave us; PyTorch's
                               // max_memory_reserved)
  uint64_t allocations = 0;    // calls to allocate()
  uint64_t cache_hits = 0;     // allocations served from the free lists
  uint64_t system_allocs = 0;  // allocations that went to the system
};

class CachingAllocator {
 public:
  // A backend supplies the raw allocate/free (host memory here; cudaMalloc for CUDA), and optionally
  // what must happen once before a batch of frees (CUDA: wait for the device, once, not per block).
  using RawAlloc = void* (*)(size_t bytes);
  using RawFree = void (*)(void* p);
  using BeforeFree = void (*)();
  // host_memory: the blocks are addressable host memory (false for a real GPU's), so AddressSanitizer
  // may guard them (see the top of the file).
  CachingAllocator(RawAlloc raw_alloc, RawFree raw_free, bool host_memory = true, BeforeFree before_free = nullptr)
      : raw_alloc_(raw_alloc), raw_free_(raw_free), before_free_(before_free), host_memory_(host_memory) {}
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  void* allocate(size_t bytes);     // never returns nullptr; throws nimbus::Error when out of memory
  void deallocate(void* p);         // p from allocate(); nullptr is fine
  void empty_cache();               // give every cached block of the ordinary pools back to the system
  AllocatorStats stats() const;
  static size_t round_size(size_t bytes);
  void reset_peaks();               // peak_in_use / peak_reserved := the current values
  // host_memory blocks are poisoned for ASan only while `f` (if set) returns true. The emulator's
  // deferred streams set one: there a kernel the host queued before freeing a block still writes it
  // afterwards, as stream order allows, which the host-side poisoning would report.
  using GuardFn = bool (*)();
  void set_guard_fn(GuardFn f) { guard_fn_ = f; }

  // Pools (see the top of the file). A pool id is a stream handle (even, 0 = the default pool) or a
  // private pool (odd, from new_private_pool()). The pool function says which pool is current.
  using Pool = uintptr_t;
  using PoolFn = Pool (*)();
  void set_pool_fn(PoolFn f);
  Pool new_private_pool();
  // The private pool's cached blocks move to `into`, and its live blocks go there when freed.
  void release_private_pool(Pool p, Pool into);
  static bool is_private(Pool p) { return p & 1; }
  size_t cached_blocks(Pool p) const;  // for tests: blocks cached in pool p

 private:
  struct Live {
    size_t size;
    Pool pool;
  };
  Pool current_pool() const { return pool_fn_ ? pool_fn_() : 0; }
  Pool resolve(Pool p) const;  // follows released private pools to where their blocks go now
  void free_ordinary_cache();  // the cached blocks of every pool but the private ones; caller holds mu_
  void poison(void* p, size_t from, size_t to) const;    // ASan: [from, to) of block p unusable
  void unpoison(void* p, size_t from, size_t to) const;  // ASan: [from, to) of block p usable
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  BeforeFree before_free_;
  bool host_memory_;
  PoolFn pool_fn_ = nullptr;
  GuardFn guard_fn_ = nullptr;
  mutable std::mutex mu_;
  std::map<std::pair<Pool, size_t>, std::vector<void*>> free_;  // (pool, size class) -> free blocks
  std::map<void*, Live> live_;                                  // block -> size class and pool
  std::map<Pool, Pool> released_;                               // released private pool -> its heir
  Pool next_private_ = 1;
  AllocatorStats stats_;
};

// The process-wide host allocator.
CachingAllocator& cpu_allocator();

}  // namespace nimbus
