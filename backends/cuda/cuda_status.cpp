/* cuda_status.cpp: prints whether the real CUDA backend found a device (and which driver/runtime);
 * exits 0 with a usable device, 1 without. For CI and for checking a GPU machine by hand. */
#include <cstdio>

#include "engine/backend.h"
#include "backends/cuda/backend.h"

int main() {
  const bool ok = nimbus::cuda::register_cuda_backend();
  std::printf("%s\n", nimbus::cuda_status().c_str());
  return ok ? 0 : 1;
}
