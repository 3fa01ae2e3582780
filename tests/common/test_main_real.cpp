// test_main_real.cpp: doctest's main for test_cuda_real (the emulator's CUDA tests on a real GPU):
// without a usable device it says so and exits 77, which ctest reports as skipped.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "engine/backend.h"
#include "backends/cuda/backend.h"

int main(int argc, char** argv) {
  if (!nimbus::cuda::register_cuda_backend()) {
    std::printf("skipped: no CUDA device (%s)\n", nimbus::cuda_status().c_str());
    return 77;
  }
  std::printf("%s\n", nimbus::cuda_status().c_str());
  doctest::Context context(argc, argv);
  return context.run();
}
