// data_parallel.cpp: parameter broadcast and gradient averaging over a process group (see
// data_parallel.h); the buckets are gradient_reducer.cpp's.
#include "engine/distributed/data_parallel.h"

#include "engine/distributed/gradient_reducer.h"

#include "kernels/common/error.h"

namespace nimbus {

namespace {

// The float32 host copy of t (t itself when it lives on the CPU).
Tensor host_of(const Tensor& t) { return t.device() == Device::CPU ? t : t.to(Device::CPU); }

}  // namespace

void broadcast_tensors(const NamedTensors& tensors, ProcessGroup& pg) {
  if (pg.size() == 1) return;
  for (const auto& [name, t] : tensors) {
    NIMBUS_CHECK(t.dtype() == DType::F32, "broadcast_tensors: ", name, " is ", describe(t), ", expected float32");
    Tensor h = host_of(t);  // t itself on the CPU, a copy otherwise
    pg.broadcast(h.data(), size_t(h.numel()) * sizeof(float), 0);
    if (t.device() == Device::CPU) continue;  // received in place
    Tensor dst = t;
    dst.copy_(h);
  }
}

size_t average_gradients(const NamedTensors& params, ProcessGroup& pg, size_t bucket_floats) {
  GradientReducer reducer(params, pg, bucket_floats);  // every gradient complete: stage them in order
  for (size_t i = 0; i < params.size(); ++i) reducer.ready(i);
  return reducer.finish();
}

}  // namespace nimbus
