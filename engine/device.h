// device.h: where a tensor's memory lives, and the per-device hooks the engine needs.
//
// The CPU backend is always present. Another backend (CUDA) registers its
// allocator and copy routines at start-up through set_device_runtime(); until
// it has, any attempt to use that device throws an Error naming the device.
#pragma once
#include <cstddef>
#include <string>

namespace nimbus {

enum class Device : unsigned char { CPU = 0, CUDA = 1 };
constexpr int kNumDevices = 2;

const char* device_name(Device d);  // "cpu", "cuda"
Device parse_device(const std::string& s);  // "cpu" | "cuda"; throws on anything else

class CachingAllocator;

// What the engine asks of a device: memory, copies, and a fill for zeros().
struct DeviceRuntime {
  CachingAllocator* allocator = nullptr;
  // Copy bytes between (dst_dev, dst) and (src_dev, src); either side may be the CPU.
  void (*copy)(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) = nullptr;
  void (*fill)(float* dst, float value, size_t n) = nullptr;
  void (*synchronize)() = nullptr;
  // Graph capture (engine/graph.h), null where the device has none (the CPU): begin recording the
  // device's work, end it (an opaque graph), drop a failed one, replay, destroy, and "capturing now?".
  void (*begin_capture)() = nullptr;
  void* (*end_capture)() = nullptr;
  void (*abort_capture)() = nullptr;
  void (*replay_graph)(void* graph) = nullptr;
  void (*destroy_graph)(void* graph) = nullptr;
  bool (*capturing)() = nullptr;
  // Page-locked host memory, for buffers the host copies to and from this device often (the gradient
  // buckets of a host all-reduce): null where the device has none; free what alloc gave.
  void* (*pinned_alloc)(size_t bytes) = nullptr;
  void (*pinned_free)(void* p) = nullptr;
};

void set_device_runtime(Device d, const DeviceRuntime& rt);
// Throws Error("... device cuda is not available ...") when nothing is registered.
const DeviceRuntime& device_runtime(Device d);
bool device_available(Device d);
// Is device d recording a graph now (false on devices without graphs)?
bool device_capturing(Device d);

}  // namespace nimbus
