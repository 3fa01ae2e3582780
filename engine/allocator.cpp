// allocator.cpp: size classes, free lists and statistics; see allocator.h for why.
#include "engine/allocator.h"

#include <algorithm>
#include <cstdlib>

#include "kernels/common/error.h"

#if defined(__SANITIZE_ADDRESS__)
#define NIMBUS_ALLOCATOR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NIMBUS_ALLOCATOR_ASAN 1
#endif
#endif
#ifdef NIMBUS_ALLOCATOR_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace nimbus {

namespace {
constexpr size_t kAlign = 64;
constexpr size_t kSmallStep = 512;
constexpr size_t kLargeThreshold = size_t(1) << 20;

void* host_alloc(size_t bytes) { return std::aligned_alloc(kAlign, bytes); }
void host_free(void* p) { std::free(p); }
}  // namespace

size_t CachingAllocator::round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes < kLargeThreshold) return (bytes + kSmallStep - 1) / kSmallStep * kSmallStep;
  NIMBUS_CHECK(bytes <= size_t(1) << 62, "allocator: ", bytes, " bytes cannot be allocated");
  size_t pow2 = kLargeThreshold;
  while (pow2 < bytes) pow2 <<= 1;  // at most 1 << 62: never wraps
  size_t step = pow2 / 8;  // classes at 5/8, 6/8, 7/8, 8/8 of pow2: waste <= 25%
  return (bytes + step - 1) / step * step;
}

CachingAllocator::~CachingAllocator() { empty_cache(); }

// ASan tracks 8-byte granules: a granule is usable or its first k bytes are. So a poisoned range
// starts on a granule (the slack from the requested size rounded up to 8: a tensor of 3 floats
// leaves 4 unguarded bytes) and an unpoisoned one may end anywhere.
void CachingAllocator::poison(void* p, size_t from, size_t to) const {
#ifdef NIMBUS_ALLOCATOR_ASAN
  from = (from + 7) / 8 * 8;
  if (host_memory_ && (!guard_fn_ || guard_fn_()) && from < to)
    ASAN_POISON_MEMORY_REGION(static_cast<char*>(p) + from, to - from);
#else
  (void)p, (void)from, (void)to;
#endif
}

void CachingAllocator::unpoison(void* p, size_t from, size_t to) const {
#ifdef NIMBUS_ALLOCATOR_ASAN
  if (host_memory_ && from < to) ASAN_UNPOISON_MEMORY_REGION(static_cast<char*>(p) + from, to - from);
#else
  (void)p, (void)from, (void)to;
#endif
}

void* CachingAllocator::allocate(size_t bytes) {
  size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  const Pool pool = current_pool();
  stats_.allocations++;
  void* p = nullptr;
  auto it = free_.find({pool, size});
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    stats_.bytes_cached -= size;
    stats_.cache_hits++;
  } else {
    p = raw_alloc_(size);
    if (!p && !is_private(pool)) {  // out of memory: drop the ordinary pools' cache and try once more
      free_ordinary_cache();
      p = raw_alloc_(size);
    }
    NIMBUS_CHECK(p, "allocator: out of memory allocating ", size, " bytes (", stats_.bytes_in_use,
                 " bytes in use)");
    stats_.system_allocs++;
  }
  if (is_private(pool)) {
    unpoison(p, 0, size);  // its earlier, captured uses may have been longer: the graph replays them
  } else {
    unpoison(p, 0, std::max<size_t>(bytes, 1));
    poison(p, std::max<size_t>(bytes, 1), size);
  }
  live_[p] = {size, pool};
  stats_.bytes_in_use += size;
  if (stats_.bytes_in_use > stats_.peak_in_use) stats_.peak_in_use = stats_.bytes_in_use;
  stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.bytes_in_use + stats_.bytes_cached);
  return p;
}

CachingAllocator::Pool CachingAllocator::resolve(Pool p) const {
  for (auto it = released_.find(p); it != released_.end(); it = released_.find(p)) p = it->second;
  return p;
}

void CachingAllocator::deallocate(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(p);
  NIMBUS_CHECK(it != live_.end(), "allocator: freeing a pointer it did not allocate");
  const size_t size = it->second.size;
  const Pool now = current_pool();
  // During a capture (a private pool is current) a freed block joins it: the graph may use it. Not a
  // block of another live graph's pool (that graph's tensors, dropped by the new capture): the other
  // graph still writes it at every replay, so it goes back there.
  const Pool owner = resolve(it->second.pool);
  const Pool to = is_private(now) && !released_.count(now) && !is_private(owner) ? now : owner;
  live_.erase(it);
  if (is_private(to)) {
    unpoison(p, 0, size);  // a captured graph may write any of it at every replay
  } else {
    poison(p, 0, size);
  }
  free_[{to, size}].push_back(p);
  stats_.bytes_in_use -= size;
  stats_.bytes_cached += size;
}

void CachingAllocator::free_ordinary_cache() {
  bool first = true;
  for (auto b = free_.begin(); b != free_.end();) {
    if (is_private(b->first.first)) {
      ++b;
      continue;
    }
    for (void* q : b->second) {
      if (first && before_free_) before_free_();
      first = false;
      unpoison(q, 0, b->first.second);  // the system's allocator owns it again
      raw_free_(q);
    }
    stats_.bytes_cached -= b->first.second * b->second.size();
    b = free_.erase(b);
  }
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  free_ordinary_cache();
}

void CachingAllocator::set_pool_fn(PoolFn f) {
  std::lock_guard<std::mutex> lock(mu_);
  pool_fn_ = f;
}

CachingAllocator::Pool CachingAllocator::new_private_pool() {
  std::lock_guard<std::mutex> lock(mu_);
  const Pool p = next_private_;
  next_private_ += 2;
  return p;
}

void CachingAllocator::release_private_pool(Pool p, Pool into) {
  NIMBUS_CHECK(is_private(p), "allocator: pool ", p, " is not a private pool");
  std::lock_guard<std::mutex> lock(mu_);
  NIMBUS_CHECK(!released_.count(p), "allocator: private pool ", p, " released twice");
  into = resolve(into);
  NIMBUS_CHECK(into != p, "allocator: a private pool cannot be released into itself");
  released_[p] = into;
  for (auto b = free_.lower_bound({p, 0}); b != free_.end() && b->first.first == p;) {
    auto& dst = free_[{into, b->first.second}];
    dst.insert(dst.end(), b->second.begin(), b->second.end());
    b = free_.erase(b);
  }
}

size_t CachingAllocator::cached_blocks(Pool p) const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (const auto& [key, blocks] : free_)
    if (key.first == p) n += blocks.size();
  return n;
}

void CachingAllocator::reset_peaks() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_in_use = stats_.bytes_in_use;
  stats_.peak_reserved = stats_.bytes_in_use + stats_.bytes_cached;
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

CachingAllocator& cpu_allocator() {
  // Leaked on purpose: tensors in static objects may be freed after main returns.
  static CachingAllocator* a = new CachingAllocator(host_alloc, host_free);
  return *a;
}

}  // namespace nimbus
