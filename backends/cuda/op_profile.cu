/* op_profile.cu: per-op device time from events at op boundaries (see op_profile.h). Host code. */
#include "backends/cuda/op_profile.h"

#include <algorithm>
#include <map>
#include <utility>

#include "engine/backend.h"
#include "kernels/common/error.h"
#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

namespace {

struct Mark {
  const char* op;
  cudaEvent_t event;
};
std::vector<Mark> marks;  // one per op entry, in order; touched by the host thread driving the device
bool open = false;

void record(const char* op) {
  cudaEvent_t e = nullptr;
  cudaError_t r = cudaEventCreate(&e);
  if (r == cudaSuccess) r = cudaEventRecord(e, launch_stream());
  NIMBUS_CHECK(r == cudaSuccess, "op profile: recording an event for ", op, ": ", cudaGetErrorString(r));
  marks.push_back({op, e});
}

}  // namespace

void start_op_profile() {
  NIMBUS_CHECK(!open, "op profile: one is already open");
  backend(Device::CUDA, "op profile");  // Error if no CUDA backend is registered
  open = true;
  record("(before the first op)");
  set_op_marker(Device::CUDA, record);
}

std::vector<OpTime> stop_op_profile() {
  NIMBUS_CHECK(open, "op profile: none is open");
  set_op_marker(Device::CUDA, nullptr);
  open = false;
  record("(end)");
  count_host_wait();
  const cudaError_t r = cudaEventSynchronize(marks.back().event);
  std::map<std::string, OpTime> by_op;
  for (size_t i = 0; i + 1 < marks.size(); ++i) {
    float ms = 0;
    if (r == cudaSuccess) cudaEventElapsedTime(&ms, marks[i].event, marks[i + 1].event);
    OpTime& t = by_op[marks[i].op];
    t.op = marks[i].op;
    t.ms += ms;
    t.calls += i > 0;  // the opening mark is not an op call
  }
  for (const Mark& m : marks) cudaEventDestroy(m.event);
  marks.clear();
  NIMBUS_CHECK(r == cudaSuccess, "op profile: waiting for the last event: ", cudaGetErrorString(r));
  std::vector<OpTime> out;
  for (auto& [name, t] : by_op) out.push_back(std::move(t));
  std::sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.ms > b.ms; });
  return out;
}

}  // namespace nimbus::cuda
