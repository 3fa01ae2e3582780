// graph.h: record a device's work once, replay it many times (CUDA graphs; the CPU has none).
//
// DeviceGraph::capture(d, work) runs `work` while device d records, instead of running, every
// kernel, fill and device copy it queues; replay() then queues all of them again as one graph launch,
// on the same memory. So `work` must only queue device work: anything that makes the host wait for
// the device (a copy to or from the host, item(), a synchronisation) is refused during capture and
// throws, and the capture is dropped. Tensors the work allocates come from a private memory pool
// that only this graph uses (blocks freed during capture join it too), kept until the graph is
// destroyed; so eager work between replays never gets memory a replay writes. A capture first gives
// the ordinary pools' cached blocks back (empty_cache: one host wait), since its pool cannot use them. Values that change
// from replay to replay must live in device memory the work reads (inputs copied into the same
// tensors, the optimiser's clock): arguments passed by value are fixed at capture.
//
// Host state that mirrors device work (the optimiser's step counts) is advanced at replay: code that
// runs during capture registers what the host must do at each replay with at_replay(), instead of
// doing it then (the captured work has not run yet).
//
// Everything the captured work touched (tensors, modules, the optimiser) must outlive the graph.
//
// Typical use: one eager warm-up step (it creates the optimiser state), capture the step, replay it
// per batch while the shapes hold, and run eagerly when they change (the last, partial batch).
#pragma once
#include <functional>
#include <vector>

#include "engine/device.h"

namespace nimbus {

class DeviceGraph {
 public:
  DeviceGraph() = default;
  // Throws nimbus::Error on a device without graphs (the CPU), or if `work` throws or does something
  // a capture refuses; nothing was recorded then.
  static DeviceGraph capture(Device d, const std::function<void()>& work);
  void replay() const;  // one graph launch on the device's current stream, then the at_replay actions
  bool empty() const { return graph_ == nullptr; }
  // During a capture: `f` runs on the host at every replay, after the launch is queued. Throws if no
  // capture is under way.
  static void at_replay(std::function<void()> f);
  static bool capturing();  // is a DeviceGraph::capture under way (on any device)
  Device device() const { return device_; }

  ~DeviceGraph();
  DeviceGraph(DeviceGraph&& o) noexcept;
  DeviceGraph& operator=(DeviceGraph&& o) noexcept;
  DeviceGraph(const DeviceGraph&) = delete;
  DeviceGraph& operator=(const DeviceGraph&) = delete;

 private:
  Device device_ = Device::CPU;
  void* graph_ = nullptr;  // the device runtime's handle
  std::vector<std::function<void()>> host_;  // at_replay actions, in capture order
};

}  // namespace nimbus
