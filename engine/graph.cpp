// graph.cpp: DeviceGraph over the device runtime's capture hooks (see graph.h).
#include "engine/graph.h"

#include <utility>

#include "engine/allocator.h"
#include "kernels/common/error.h"

namespace nimbus {

namespace {
// The at_replay actions of the capture under way (one at a time: the runtimes refuse a second).
std::vector<std::function<void()>>* capturing_actions = nullptr;
}  // namespace

DeviceGraph DeviceGraph::capture(Device d, const std::function<void()>& work) {
  const DeviceRuntime& rt = device_runtime(d);
  NIMBUS_CHECK(rt.begin_capture, "graph capture: device ", device_name(d), " has no graphs");
  NIMBUS_CHECK(!capturing_actions, "graph capture: a capture is already under way");
  std::vector<std::function<void()>> actions;
  // The capture allocates from its own pool, which cannot take the ordinary pools' cached blocks (nor
  // free them: no cudaFree during a capture). So what the warm-up step left cached is given back
  // first; else capturing a step would reserve its activations twice, and a batch that fits eagerly
  // could run out of memory in the capture.
  if (rt.allocator) rt.allocator->empty_cache();
  rt.begin_capture();
  capturing_actions = &actions;
  try {
    work();
  } catch (...) {
    capturing_actions = nullptr;
    rt.abort_capture();
    throw;
  }
  capturing_actions = nullptr;
  DeviceGraph g;
  g.device_ = d;
  g.graph_ = rt.end_capture();
  g.host_ = std::move(actions);
  return g;
}

void DeviceGraph::at_replay(std::function<void()> f) {
  NIMBUS_CHECK(capturing_actions, "DeviceGraph::at_replay: no capture is under way");
  capturing_actions->push_back(std::move(f));
}

bool DeviceGraph::capturing() { return capturing_actions != nullptr; }

void DeviceGraph::replay() const {
  NIMBUS_CHECK(graph_, "graph replay: nothing was captured");
  device_runtime(device_).replay_graph(graph_);
  for (const auto& f : host_) f();
}

DeviceGraph::~DeviceGraph() {
  if (graph_) device_runtime(device_).destroy_graph(graph_);
}

DeviceGraph::DeviceGraph(DeviceGraph&& o) noexcept
    : device_(o.device_), graph_(std::exchange(o.graph_, nullptr)), host_(std::move(o.host_)) {}

DeviceGraph& DeviceGraph::operator=(DeviceGraph&& o) noexcept {
  if (this != &o) {
    if (graph_) device_runtime(device_).destroy_graph(graph_);
    device_ = o.device_;
    graph_ = std::exchange(o.graph_, nullptr);
    host_ = std::move(o.host_);
  }
  return *this;
}

}  // namespace nimbus
