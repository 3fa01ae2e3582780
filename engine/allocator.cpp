// allocator.cpp: size classes, free lists and statistics; see allocator.h for why.
#include "engine/allocator.h"

#include <algorithm>
#include <cstdlib>

#include "kernels/common/error.h"

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
  size_t pow2 = kLargeThreshold;
  while (pow2 < bytes) pow2 <<= 1;
  size_t step = pow2 / 8;  // classes at 5/8, 6/8, 7/8, 8/8 of pow2: waste <= 25%
  return (bytes + step - 1) / step * step;
}

CachingAllocator::~CachingAllocator() { empty_cache(); }

void* CachingAllocator::allocate(size_t bytes) {
  size_t size = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  stats_.allocations++;
  void* p = nullptr;
  auto it = free_.find(size);
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    stats_.bytes_cached -= size;
    stats_.cache_hits++;
  } else {
    p = raw_alloc_(size);
    if (!p) {  // out of memory: drop the cache and try once more
      for (auto& [sz, blocks] : free_)
        for (void* b : blocks) raw_free_(b);
      free_.clear();
      stats_.bytes_cached = 0;
      p = raw_alloc_(size);
    }
    NIMBUS_CHECK(p, "allocator: out of memory allocating ", size, " bytes (", stats_.bytes_in_use,
                 " bytes in use)");
    stats_.system_allocs++;
  }
  live_[p] = size;
  stats_.bytes_in_use += size;
  if (stats_.bytes_in_use > stats_.peak_in_use) stats_.peak_in_use = stats_.bytes_in_use;
  stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.bytes_in_use + stats_.bytes_cached);
  return p;
}

void CachingAllocator::deallocate(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(p);
  NIMBUS_CHECK(it != live_.end(), "allocator: freeing a pointer it did not allocate");
  size_t size = it->second;
  live_.erase(it);
  free_[size].push_back(p);
  stats_.bytes_in_use -= size;
  stats_.bytes_cached += size;
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [size, blocks] : free_)
    for (void* b : blocks) raw_free_(b);
  free_.clear();
  stats_.bytes_cached = 0;
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
