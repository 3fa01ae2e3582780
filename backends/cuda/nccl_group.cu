/* nccl_group.cu: the "nccl" process group (engine/distributed/process_group.h): GPU ranks whose
 * gradient buckets are all-reduced in device memory by NCCL, on the backend's stream, with no host
 * wait; everything else (the host's sums of scores and statistics, broadcasts, barriers) goes through
 * the host group it was built over (MPI under mpirun, else the single process), which also carries
 * NCCL's unique id from rank 0 to the others.
 *
 * The all-reduces run on a communication stream of their own, each after an event that says the
 * compute stream has filled its bucket; the reducer's finish() makes the compute stream wait for them
 * (events, no host wait). So the last layers' buckets travel while backward computes the first
 * layers' gradients on the compute stream.
 *
 * Asked for with NIMBUS_PROCESS_GROUP=nccl (made by the real CUDA backend only: under the emulator,
 * device memory is host memory and there is no driver, and asking for it fails with that reason). NCCL is loaded at run time with
 * dlopen, not linked: libnccl.so.2 is 218 MB, too big to carry to a GPU machine, and a machine with
 * PyTorch has one in the nvidia-nccl wheel. Where: $NIMBUS_NCCL_LIB, else the loader's search path
 * (libnccl.so.2). The types come from the toolkit's nccl.h at build time.
 *
 * Ranks map to GPUs by local rank (backend.cu). NCCL refuses two ranks on one GPU, so on a one-GPU
 * machine it runs at world size 1 (scripts/gpu_check.sh, phase distributed) and two ranks use MPI's
 * host staging instead. The communicator is never destroyed: at exit the CUDA context may already be
 * gone, and the process's end frees it (like the backend's allocator and stream).
 */
#include "backends/cuda/nccl_group.h"

#if defined(__CUDACC__)
#include <dlfcn.h>
#include <nccl.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/backend.h"
#include "engine/backend.h"
#include "engine/distributed/process_group.h"
#include "kernels/common/error.h"
#include "kernels/cuda/compat.h"

namespace nimbus::cuda {

namespace {

// The NCCL entry points nimbus uses, resolved from the library.
struct NcclApi {
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
};

template <typename F>
void resolve(void* lib, const char* name, F& f, const std::string& path) {
  f = reinterpret_cast<F>(dlsym(lib, name));
  NIMBUS_CHECK(f, "NCCL: ", path, " has no ", name);
}

const NcclApi& nccl() {
  static const NcclApi api = [] {
    const char* env = std::getenv("NIMBUS_NCCL_LIB");
    const std::string path = env && *env ? env : "libnccl.so.2";
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    NIMBUS_CHECK(lib, "NCCL: cannot load ", path, " (", dlerror(),
                 "); set NIMBUS_NCCL_LIB to libnccl.so.2's path (PyTorch's nvidia-nccl wheel has one under "
                 "site-packages/nvidia/nccl/lib)");
    NcclApi a;
    resolve(lib, "ncclGetUniqueId", a.get_unique_id, path);
    resolve(lib, "ncclCommInitRank", a.comm_init_rank, path);
    resolve(lib, "ncclAllReduce", a.all_reduce, path);
    resolve(lib, "ncclGetErrorString", a.error_string, path);
    return a;
  }();
  return api;
}

void check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw Error(str("NCCL ", what, ": ", nccl().error_string(r)));
}

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(str("NCCL group: ", what, ": ", cudaGetErrorString(e)));
}

// An all-reduce queued on the communication stream. wait() makes the compute stream wait for it
// (cudaStreamWaitEvent): the host never waits, and the compute kernels queued before wait() run
// beside it; that is the overlap with backward.
class QueuedCollective final : public PendingCollective {
 public:
  QueuedCollective(cudaEvent_t done, std::vector<cudaEvent_t>* pool) : done_(done), pool_(pool) {}
  ~QueuedCollective() override { pool_->push_back(done_); }  // recorded work keeps it valid; reused later
  void wait() override { check_cuda(cudaStreamWaitEvent(launch_stream(), done_, 0), "wait for the all-reduce"); }

 private:
  cudaEvent_t done_;
  std::vector<cudaEvent_t>* pool_;
};

class NcclGroup final : public ProcessGroup {
 public:
  explicit NcclGroup(std::unique_ptr<ProcessGroup> host) : host_(std::move(host)) {
    NIMBUS_CHECK(register_cuda_backend(), "NIMBUS_PROCESS_GROUP=nccl needs a CUDA device: ", nimbus::cuda_status());
    ncclUniqueId id{};
    if (host_->rank() == 0) check(nccl().get_unique_id(&id), "get unique id");
    host_->broadcast(&id, sizeof id, 0);
    check(nccl().comm_init_rank(&comm_, host_->size(), id, host_->rank()), "communicator init");
    check_cuda(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking), "communication stream");
    ready_ = new_event();
  }
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  const char* kind() const override { return "nccl"; }
  void all_reduce_sum(float* data, size_t n) override { host_->all_reduce_sum(data, n); }
  void all_reduce_sum(double* data, size_t n) override { host_->all_reduce_sum(data, n); }
  void broadcast(void* data, size_t bytes, int root) override { host_->broadcast(data, bytes, root); }
  void barrier() override { host_->barrier(); }
  bool reduces_on(Device d) const override { return d == Device::CPU || d == Device::CUDA; }
  std::unique_ptr<PendingCollective> start_all_reduce(float* data, size_t n, ReduceOp op, Device where) override {
    if (where == Device::CPU) return host_->start_all_reduce(data, n, op, where);
    // The communication stream starts once the compute stream has written the bucket (one event
    // serves every call: a stream's wait takes the event's state when it is queued).
    check_cuda(cudaEventRecord(ready_, launch_stream()), "record the bucket");
    check_cuda(cudaStreamWaitEvent(comm_stream_, ready_, 0), "order the all-reduce after the bucket");
    check(nccl().all_reduce(data, data, n, ncclFloat32, op == ReduceOp::Mean ? ncclAvg : ncclSum, comm_,
                            comm_stream_),
          "all-reduce");
    const cudaEvent_t done = take_event();  // back in the pool when the pending collective is dropped
    check_cuda(cudaEventRecord(done, comm_stream_), "record the all-reduce");
    return std::make_unique<QueuedCollective>(done, &free_);
  }
  void progress() override { host_->progress(); }

 private:
  static cudaEvent_t new_event() {
    cudaEvent_t e = nullptr;
    check_cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "event");
    return e;
  }
  cudaEvent_t take_event() {  // a free event from the pool, or a new one
    if (free_.empty()) return new_event();
    const cudaEvent_t e = free_.back();
    free_.pop_back();
    return e;
  }

  std::unique_ptr<ProcessGroup> host_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;  // never destroyed, like the communicator
  cudaEvent_t ready_ = nullptr;         // "the bucket is written", recorded on the compute stream
  std::vector<cudaEvent_t> free_;       // "the all-reduce is done" events no pending collective holds
};

std::unique_ptr<ProcessGroup> make_nccl_group(std::unique_ptr<ProcessGroup> host) {
  return std::make_unique<NcclGroup>(std::move(host));
}

}  // namespace

void register_nccl_group() { register_process_group("nccl", make_nccl_group); }

}  // namespace nimbus::cuda

#else  // the emulator: no NCCL (its device memory is host memory, and there is no driver)

#include <memory>

#include "engine/distributed/process_group.h"
#include "kernels/common/error.h"

namespace nimbus::cuda {
// "nccl" is still a known kind, so that asking for it says why it cannot be had. It fails after MPI
// is up, as a real NCCL start-up can (a library missing on one machine): the tests drive that path.
void register_nccl_group() {
  register_process_group("nccl", [](std::unique_ptr<ProcessGroup>) -> std::unique_ptr<ProcessGroup> {
    throw Error("NIMBUS_PROCESS_GROUP=nccl: this build's CUDA backend is the emulator, which has no NCCL "
                "(configure with -DNIMBUS_CUDA_BACKEND=ON on a machine with CUDA)");
  });
}
}  // namespace nimbus::cuda

#endif
