// data_parallel.cpp: parameter broadcast and gradient averaging over a process group (see
// data_parallel.h). Buckets keep the number of collectives small (one per few million floats) and
// the order fixed, so every rank sums the same floats in the same places.
#include "engine/distributed/data_parallel.h"

#include <cstring>
#include <vector>

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
  if (pg.size() == 1) return 0;
  NIMBUS_CHECK(bucket_floats > 0, "average_gradients: empty buckets");
  const float scale = 1.0f / float(pg.size());
  std::vector<float> bucket;
  std::vector<Tensor> members;  // the gradients whose values sit in `bucket`, in order
  size_t calls = 0;
  auto flush = [&] {
    if (members.empty()) return;
    pg.all_reduce_sum(bucket.data(), bucket.size());
    ++calls;
    size_t at = 0;
    for (Tensor& g : members) {
      const size_t n = size_t(g.numel());
      for (size_t i = 0; i < n; ++i) bucket[at + i] *= scale;
      if (g.device() == Device::CPU) {
        std::memcpy(g.data(), bucket.data() + at, n * sizeof(float));
      } else {
        g.copy_(Tensor::from_vector(g.shape(), std::vector<float>(bucket.begin() + long(at), bucket.begin() + long(at + n))));
      }
      at += n;
    }
    bucket.clear();
    members.clear();
  };
  for (const auto& [name, p] : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    NIMBUS_CHECK(g.dtype() == DType::F32, "average_gradients: the gradient of ", name, " is ", describe(g),
                 ", expected float32 (master weights)");
    const size_t n = size_t(g.numel());
    if (!members.empty() && bucket.size() + n > bucket_floats) flush();
    const Tensor h = host_of(g);
    bucket.insert(bucket.end(), h.data(), h.data() + n);
    members.push_back(g);
  }
  flush();
  return calls;
}

}  // namespace nimbus
