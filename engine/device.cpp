// device.cpp: the device registry; the CPU registers itself here.
#include "engine/device.h"

#include <cstring>

#include "engine/allocator.h"
#include "kernels/common/error.h"
#include "kernels/cpu/elementwise.h"

namespace nimbus {

namespace {
// Nothing for 0 bytes: an empty tensor's data may be null, which memcpy may not be given even then.
void cpu_copy(void* dst, Device, const void* src, Device, size_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, bytes);
}
void cpu_fill(float* dst, float v, size_t n) { cpu::fill(dst, v, int64_t(n)); }
void cpu_sync() {}

DeviceRuntime* registry() {
  static DeviceRuntime rt[kNumDevices];
  static bool init = [] {
    rt[0] = DeviceRuntime{&cpu_allocator(), cpu_copy, cpu_fill, cpu_sync};
    return true;
  }();
  (void)init;
  return rt;
}
}  // namespace

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::CPU;
  if (s == "cuda") return Device::CUDA;
  throw Error(str("unknown device '", s, "' (expected cpu or cuda)"));
}

void set_device_runtime(Device d, const DeviceRuntime& rt) { registry()[int(d)] = rt; }

bool device_available(Device d) { return registry()[int(d)].allocator != nullptr; }

bool device_capturing(Device d) {
  const DeviceRuntime& rt = registry()[int(d)];
  return rt.capturing && rt.capturing();
}

const DeviceRuntime& device_runtime(Device d) {
  const DeviceRuntime& rt = registry()[int(d)];
  NIMBUS_CHECK(rt.allocator, "device ", device_name(d), " is not available in this build or on this machine");
  return rt;
}

}  // namespace nimbus
