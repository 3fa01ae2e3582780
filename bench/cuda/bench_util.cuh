// bench_util.cuh: what every numbered-kernel benchmark in bench/cuda shares:
// copying a host vector to the device, and timing a launch sequence with events.
#pragma once
#include <vector>

#include "kernels/cuda/compat.h"

// A device copy of h (the caller frees it with cudaFree).
inline float* upload(const std::vector<float>& h) {
  float* d = nullptr;
  cudaMalloc(&d, h.size() * sizeof(float));
  cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice);
  return d;
}

#ifdef __CUDACC__
// One warm-up call, then the mean of `reps` calls between two events (ms).
// Timing only means something on a real GPU, hence nvcc only.
template <typename F>
float time_ms(F f, int reps) {
  f();
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  cudaEventRecord(a);
  for (int r = 0; r < reps; ++r) f();
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a), cudaEventDestroy(b);
  return ms / float(reps);
}
#endif
