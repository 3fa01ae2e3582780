// backend.cpp: the per-device backend tables, op markers and the CUDA status sentence (backend.h).
#include "engine/backend.h"

#include <array>
#include <mutex>

#include "kernels/common/error.h"

namespace nimbus {

const Backend& cpu_backend();  // backends/cpu/backend.cpp

namespace {
struct Registry {
  std::mutex mu;
  std::array<bool, kNumDevices> registered{};
  std::array<Backend, kNumDevices> tables{};
  std::array<OpMarker, kNumDevices> markers{};
  // What a program without the CUDA backend says (built without nvcc, or one that never asks for it).
  std::string cuda_status = "this build has no CUDA backend";
};
Registry& registry() {
  static Registry r;
  return r;
}
}  // namespace

const Backend& backend_tables(Device d, const char* op) {
  if (d == Device::CPU) return cpu_backend();  // always there, never marked: no lock on the CPU's hot path
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  const auto i = size_t(d);
  NIMBUS_CHECK(r.registered[i], op, ": device ", device_name(d), " is not available (", r.cuda_status, ")");
  if (r.markers[i]) r.markers[i](op);
  return r.tables[i];
}

void set_backend(Device d, const Backend& b) {
  NIMBUS_CHECK(d != Device::CPU, "set_backend: the CPU backend is built in");
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.tables[size_t(d)] = b;
  r.registered[size_t(d)] = true;
}

void set_op_marker(Device d, OpMarker marker) {
  NIMBUS_CHECK(d != Device::CPU, "set_op_marker: only device backends take markers");
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.markers[size_t(d)] = marker;
}

std::string cuda_status() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.cuda_status;
}

void set_cuda_status(const std::string& status) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.cuda_status = status;
}

}  // namespace nimbus
