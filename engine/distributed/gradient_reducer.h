// gradient_reducer.h: the gradients of a data-parallel step averaged over the ranks, each bucket's
// all-reduce started while backward is still producing the next gradients.
//
// backward(loss) runs loss.backward() with a LeafGradHook (engine/autograd.h): as each parameter's
// gradient is complete it is copied into the open bucket; a bucket that reaches bucket_floats is
// started at once (ProcessGroup::start_all_reduce: MPI_Iallreduce, NCCL on its stream) and the next
// one opened. finish() starts the last bucket, waits for every one in order, and copies the ranks'
// mean back into each .grad. Backward finishes gradients from the last layer to the first, so the
// first buckets travel while the early layers' gradients are still being computed.
//
// Every rank must form the same buckets in the same order (collectives pair up by order): they do,
// because every rank runs the same graph, so backward completes the same gradients in the same order;
// a parameter that gets no gradient is left out on every rank alike.
//
// Staging: a bucket's gradients are copied where they live (device-to-device copies for CUDA
// tensors, no host wait), and it is reduced where the group reduces (ProcessGroup::reduces_on): in
// place for NCCL, or, for a group that reduces host memory (MPI, the thread group), through a copy
// in page-locked host memory: one device-to-host copy when the bucket starts (the host waits for
// the gradients so far, once per bucket, not per parameter) and one back when it is done. Debian's
// Open MPI is not CUDA-aware, so that is the MPI path on GPU ranks.
#pragma once
#include <cstddef>
#include <memory>
#include <vector>

#include "engine/distributed/process_group.h"
#include "engine/nn/module.h"

namespace nimbus {

// Frees page-locked host floats with the runtime's pinned_free (ordinary memory when it has none).
struct PinnedFree {
  void (*release)(void*) = nullptr;
  void operator()(float* p) const;
};

class GradientReducer {
 public:
  GradientReducer(NamedTensors params, ProcessGroup& pg, size_t bucket_floats = size_t(1) << 22);

  // loss.backward() with the all-reduces started as gradients complete, then finish().
  void backward(const Tensor& loss);
  // The gradient of params[i] is complete: stage it, and start the bucket if it is full.
  void ready(size_t i);
  // Starts the open bucket, waits for all of them, and writes the ranks' mean into every staged
  // .grad. Returns the number of all-reduces of this step (0 with one rank: nothing is touched).
  // A parameter that holds a gradient yet was not staged (with gradient accumulation: one that took
  // part in an earlier backward of the step but not in the last, whose hook stages) is an Error naming
  // it: its gradient would stay this rank's own, and the ranks' weights would drift apart in silence.
  size_t finish();

  struct StepStats {
    size_t collectives = 0;       // all-reduces started this step
    size_t before_backward_end = 0;  // of them, started while backward was still running
    size_t floats = 0;            // gradient values reduced
  };
  const StepStats& last_step() const { return last_; }

 private:
  struct Member {
    size_t param;
    size_t offset, n;
  };
  using PinnedFloats = std::unique_ptr<float[], PinnedFree>;
  struct Bucket {
    std::vector<Member> members;
    size_t size = 0;
    Device grads = Device::CPU;  // where its gradients live
    Device where = Device::CPU;  // where the group reduces it
    std::vector<float> host;     // CPU gradients: their copy, reduced in place
    Tensor device;               // gradients on a device: their copy there (reduced in place if the group can)
    PinnedFloats pinned;         // ... else the host copy the group reduces
    size_t pinned_floats = 0;
    std::unique_ptr<PendingCollective> pending;
    bool via_host() const { return grads != Device::CPU && where == Device::CPU; }
    float* staged() { return grads == Device::CPU ? host.data() : device.data(); }  // the gradients' copy
    float* reduced() { return via_host() ? pinned.get() : staged(); }                // what the group reduces
  };
  void start_open_bucket();

  NamedTensors params_;
  std::vector<TensorImpl*> impls_;  // params_[i]'s leaf, to map the hook's leaves to indices
  ProcessGroup& pg_;
  size_t bucket_floats_;
  std::vector<Bucket> buckets_;  // this step's, reused (with their staging memory) step after step
  size_t open_ = 0;              // index of the bucket being filled
  std::vector<char> staged_;     // per parameter: staged this step (finish() checks every gradient was)
  bool in_backward_ = false;
  StepStats step_, last_;
};

}  // namespace nimbus
