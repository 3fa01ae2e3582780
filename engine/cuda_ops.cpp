// cuda_ops.cpp: storage for the CUDA op table and status sentence (see cuda_ops.h).
#include "engine/cuda_ops.h"

#include <mutex>

#include "engine/error.h"

namespace nimbus {

namespace {
struct Registry {
  std::mutex mu;
  bool registered = false;
  CudaOps ops{};
  CudaOpMarker marker = nullptr;
  std::string status = "no CUDA backend: this program was built without one (no nvcc, or it does not call "
                       "register_cuda_backend())";
};
Registry& registry() {
  static Registry r;
  return r;
}
}  // namespace

const CudaOps& cuda_ops(const char* op) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  NIMBUS_CHECK(r.registered, op, ": device cuda is not available (", r.status, ")");
  if (r.marker) r.marker(op);
  return r.ops;
}

void set_cuda_ops(const CudaOps& ops) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.ops = ops;
  r.registered = true;
}

void set_cuda_op_marker(CudaOpMarker marker) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.marker = marker;
}

std::string cuda_status() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.status;
}

void set_cuda_status(const std::string& status) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.status = status;
}

}  // namespace nimbus
