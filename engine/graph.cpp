// graph.cpp: DeviceGraph over the device runtime's capture hooks (see graph.h).
#include "engine/graph.h"

#include <utility>

#include "kernels/common/error.h"

namespace nimbus {

DeviceGraph DeviceGraph::capture(Device d, const std::function<void()>& work) {
  const DeviceRuntime& rt = device_runtime(d);
  NIMBUS_CHECK(rt.begin_capture, "graph capture: device ", device_name(d), " has no graphs");
  rt.begin_capture();
  try {
    work();
  } catch (...) {
    rt.abort_capture();
    throw;
  }
  DeviceGraph g;
  g.device_ = d;
  g.graph_ = rt.end_capture();
  return g;
}

void DeviceGraph::replay() const {
  NIMBUS_CHECK(graph_, "graph replay: nothing was captured");
  device_runtime(device_).replay_graph(graph_);
}

DeviceGraph::~DeviceGraph() {
  if (graph_) device_runtime(device_).destroy_graph(graph_);
}

DeviceGraph::DeviceGraph(DeviceGraph&& o) noexcept
    : device_(o.device_), graph_(std::exchange(o.graph_, nullptr)) {}

DeviceGraph& DeviceGraph::operator=(DeviceGraph&& o) noexcept {
  if (this != &o) {
    if (graph_) device_runtime(device_).destroy_graph(graph_);
    device_ = o.device_;
    graph_ = std::exchange(o.graph_, nullptr);
  }
  return *this;
}

}  // namespace nimbus
