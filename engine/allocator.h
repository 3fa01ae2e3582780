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
  // A backend supplies the raw allocate/free (host memory here; cudaMalloc for CUDA).
  using RawAlloc = void* (*)(size_t bytes);
  using RawFree = void (*)(void* p);
  CachingAllocator(RawAlloc raw_alloc, RawFree raw_free) : raw_alloc_(raw_alloc), raw_free_(raw_free) {}
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  void* allocate(size_t bytes);     // never returns nullptr; throws nimbus::Error when out of memory
  void deallocate(void* p);         // p from allocate(); nullptr is fine
  void empty_cache();               // give every cached block back to the system
  AllocatorStats stats() const;
  static size_t round_size(size_t bytes);
  void reset_peaks();               // peak_in_use / peak_reserved := the current values

 private:
  RawAlloc raw_alloc_;
  RawFree raw_free_;
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;  // size class -> free blocks
  std::map<void*, size_t> live_;               // block -> size class, for deallocate
  AllocatorStats stats_;
};

// The process-wide host allocator.
CachingAllocator& cpu_allocator();

}  // namespace nimbus
