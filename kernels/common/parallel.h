// parallel.h: how CPU kernels split work over cores.
//
// OpenMP over both cores, but only when a loop is big enough to pay for waking
// the second thread (~a few microseconds); small tensors run serially.
#pragma once
#include <cstdint>

namespace nimbus::cpu {

// Elements below which an elementwise loop stays on one thread.
constexpr int64_t kParallelGrain = 1 << 15;

}  // namespace nimbus::cpu
