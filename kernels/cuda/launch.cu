/* launch.cu: host helpers shared by every launcher (compiled by nvcc and, as C++, by g++). */
#include "kernels/cuda/compat.h"

#include <string>

#include "engine/error.h"

namespace nimbus::cuda {

void check_launch(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return;
#ifdef __CUDACC__
  std::string detail;
#else
  std::string detail = emu::last_error_detail();  // the emulator knows which limit was broken
#endif
  throw Error(str(what, ": CUDA launch failed: ", cudaGetErrorString(e), detail.empty() ? "" : " (" + detail + ")"));
}

}  // namespace nimbus::cuda
