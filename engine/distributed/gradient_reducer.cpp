// gradient_reducer.cpp: bucketed, overlapped gradient averaging (see gradient_reducer.h).
#include "engine/distributed/gradient_reducer.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "engine/autograd.h"
#include "kernels/common/error.h"

namespace nimbus {

namespace {

// Copies n floats between memories of possibly different devices.
void copy_floats(float* dst, Device dst_dev, const float* src, Device src_dev, size_t n) {
  if (dst_dev == Device::CPU && src_dev == Device::CPU) {
    std::memcpy(dst, src, n * sizeof(float));
    return;
  }
  const Device via = dst_dev == Device::CPU ? src_dev : dst_dev;  // the runtime that knows the device
  device_runtime(via).copy(dst, dst_dev, src, src_dev, n * sizeof(float));
}

}  // namespace

void PinnedFree::operator()(float* p) const {
  if (release) release(p);
  else delete[] p;
}

GradientReducer::GradientReducer(NamedTensors params, ProcessGroup& pg, size_t bucket_floats)
    : params_(std::move(params)), pg_(pg), bucket_floats_(bucket_floats) {
  NIMBUS_CHECK(bucket_floats_ > 0, "GradientReducer: empty buckets");
  staged_.assign(params_.size(), 0);
  size_t total = 0;
  for (const auto& [name, p] : params_) {
    impls_.push_back(p.impl());
    total += size_t(p.numel());
  }
  bucket_floats_ = std::min(bucket_floats_, std::max<size_t>(total, 1));  // a small model: one small bucket
}

void GradientReducer::backward(const Tensor& loss) {
  if (pg_.size() == 1) {
    loss.backward();
    return;
  }
  std::unordered_map<TensorImpl*, size_t> index;
  for (size_t i = 0; i < impls_.size(); ++i) index.emplace(impls_[i], i);
  {
    LeafGradHook hook([&](TensorImpl& leaf) {
      auto it = index.find(&leaf);
      if (it != index.end()) ready(it->second);  // an input that wants a gradient is no parameter
    });
    in_backward_ = true;
    try {
      loss.backward();
    } catch (...) {
      in_backward_ = false;
      throw;
    }
    in_backward_ = false;
  }
  finish();
}

void GradientReducer::ready(size_t i) {
  if (pg_.size() == 1) return;
  NIMBUS_CHECK(i < params_.size(), "GradientReducer: parameter ", i, " of ", params_.size());
  const Tensor g = params_[i].second.grad();
  if (!g.defined()) return;
  NIMBUS_CHECK(g.dtype() == DType::F32, "GradientReducer: the gradient of ", params_[i].first, " is ", describe(g),
               ", expected float32 (master weights)");
  const size_t n = size_t(g.numel());
  staged_[i] = 1;
  const Device grads = g.device(), where = pg_.reduces_on(grads) ? grads : Device::CPU;
  if (open_ < buckets_.size()) {
    const Bucket& b = buckets_[open_];
    if (!b.members.empty() && (b.size + n > bucket_floats_ || b.grads != grads)) start_open_bucket();
  }
  if (open_ == buckets_.size()) buckets_.emplace_back();
  Bucket& b = buckets_[open_];
  if (b.members.empty()) {  // opening it: its staging, large enough for the bucket
    b.grads = grads;
    b.where = where;
    const size_t cap = std::max(bucket_floats_, n);
    if (grads == Device::CPU) {
      if (b.host.size() < cap) b.host.resize(cap);
    } else if (!b.device.defined() || b.device.device() != grads || size_t(b.device.numel()) < cap) {
      b.device = Tensor::empty({int64_t(cap)}, grads);
    }
    if (b.via_host() && b.pinned_floats < cap) {
      const DeviceRuntime& rt = device_runtime(grads);
      b.pinned.reset();
      b.pinned = rt.pinned_alloc ? PinnedFloats(static_cast<float*>(rt.pinned_alloc(cap * sizeof(float))),
                                                PinnedFree{rt.pinned_free})
                                 : PinnedFloats(new float[cap], PinnedFree{});
      b.pinned_floats = cap;
    }
  }
  copy_floats(b.staged() + b.size, grads, g.data(), grads, n);
  b.members.push_back({i, b.size, n});
  b.size += n;
  if (b.size >= bucket_floats_) start_open_bucket();
  pg_.progress();
}

void GradientReducer::start_open_bucket() {
  if (open_ == buckets_.size() || buckets_[open_].members.empty()) return;
  Bucket& b = buckets_[open_];
  // A host reduction of device gradients: one copy to the host (it waits for them), then the group.
  if (b.via_host()) copy_floats(b.pinned.get(), Device::CPU, b.device.data(), b.grads, b.size);
  b.pending = pg_.start_all_reduce(b.reduced(), b.size, ReduceOp::Mean, b.where);
  ++step_.collectives;
  if (in_backward_) ++step_.before_backward_end;
  step_.floats += b.size;
  ++open_;
}

size_t GradientReducer::finish() {
  if (pg_.size() == 1) return 0;
  start_open_bucket();
  for (size_t k = 0; k < open_; ++k) {  // in the order they started, as every rank does
    Bucket& b = buckets_[k];
    b.pending->wait();
    b.pending.reset();
    if (b.via_host()) copy_floats(b.device.data(), b.grads, b.pinned.get(), Device::CPU, b.size);  // one upload
    for (const Member& m : b.members) {
      Tensor g = params_[m.param].second.grad();
      copy_floats(g.data(), g.device(), b.staged() + m.offset, b.grads, m.n);
    }
    b.members.clear();
    b.size = 0;
  }
  open_ = 0;
  last_ = step_;
  step_ = StepStats{};
  size_t unreduced = params_.size();  // the first parameter with a gradient that was never staged
  for (size_t i = 0; i < params_.size() && unreduced == params_.size(); ++i)
    if (!staged_[i] && params_[i].second.grad().defined()) unreduced = i;
  std::fill(staged_.begin(), staged_.end(), 0);  // the next step starts clean, whatever happens here
  NIMBUS_CHECK(unreduced == params_.size(), "GradientReducer: ", params_[unreduced].first,
               " has a gradient that was not all-reduced: it took no part in the step's last backward, only in an "
               "earlier one (with --accumulate, an earlier batch's); the ranks' weights would drift apart. Train "
               "without --accumulate, or make every batch's loss reach it");
  return last_.collectives;
}

}  // namespace nimbus
