// process_group.cpp: the single-process group and, with NIMBUS_WITH_MPI, the Open MPI one (see
// process_group.h). mpirun announces itself through the environment (OMPI_COMM_WORLD_SIZE, or PMI's
// PMI_SIZE under other launchers), so a program started without it never initialises MPI.
#include "engine/distributed/process_group.h"

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <vector>

#include "kernels/common/error.h"

#ifdef NIMBUS_WITH_MPI
#include <mpi.h>
#endif

namespace nimbus {

namespace {

// A collective that was complete when it was started (the blocking fallback).
class DoneCollective final : public PendingCollective {
 public:
  void wait() override {}
};

}  // namespace

std::unique_ptr<PendingCollective> ProcessGroup::start_all_reduce(float* data, size_t n, ReduceOp op, Device where) {
  NIMBUS_CHECK(reduces_on(where), kind(), " process group: all-reduce of ", device_name(where),
               " memory (this group reduces host memory)");
  all_reduce_sum(data, n);
  if (op == ReduceOp::Mean && size() > 1) {
    const float s = 1.0f / float(size());
    for (size_t i = 0; i < n; ++i) data[i] *= s;
  }
  return std::make_unique<DoneCollective>();
}

namespace {

class SingleGroup final : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* kind() const override { return "single"; }
  void all_reduce_sum(float*, size_t) override {}
  void all_reduce_sum(double*, size_t) override {}
  void broadcast(void*, size_t, int root) override {
    NIMBUS_CHECK(root == 0, "broadcast: root ", root, " in a one-process group");
  }
  void barrier() override {}
};

int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : 0;
}

#ifdef NIMBUS_WITH_MPI
void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(str("MPI ", what, ": ", std::string(text, size_t(len))));
}

class MpiGroup final : public ProcessGroup {
 public:
  MpiGroup() {
    int provided = 0;
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "init");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);  // errors become exceptions here
    check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "rank");
    check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &size_), "size");
  }
  ~MpiGroup() override {
    // Not while an exception unwinds (a group built over this one failed to start, e.g. NCCL on one
    // rank): MPI_Finalize would wait for ranks that wait in a collective for this one, and the
    // message would never be printed. The handler calls abort_all(), which stops every rank.
    if (std::uncaught_exceptions() > 0) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* kind() const override { return "mpi"; }
  void all_reduce_sum(float* data, size_t n) override { reduce(data, n, MPI_FLOAT); }
  void all_reduce_sum(double* data, size_t n) override { reduce(data, n, MPI_DOUBLE); }
  void broadcast(void* data, size_t bytes, int root) override {
    for (size_t at = 0; at < bytes;) {  // MPI counts are ints
      const int chunk = int(std::min<size_t>(bytes - at, size_t(std::numeric_limits<int>::max())));
      check_mpi(MPI_Bcast(static_cast<char*>(data) + at, chunk, MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
      at += size_t(chunk);
    }
  }
  void barrier() override { check_mpi(MPI_Barrier(MPI_COMM_WORLD), "barrier"); }

  // MPI_Iallreduce: the sum proceeds while the caller goes on (inside later MPI calls: progress()).
  // One request per chunk (kChunkBytes below); wait() waits for them all.
  std::unique_ptr<PendingCollective> start_all_reduce(float* data, size_t n, ReduceOp op, Device where) override {
    if (!reduces_on(where)) return ProcessGroup::start_all_reduce(data, n, op, where);  // the check's message
    auto p = std::make_unique<Pending>(data, n, op == ReduceOp::Mean ? 1.0f / float(size_) : 1.0f);
    const size_t step = kChunkBytes / sizeof(float);
    for (size_t at = 0; at < n; at += step) {
      p->requests.push_back(MPI_REQUEST_NULL);
      check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data + at, int(std::min(n - at, step)), MPI_FLOAT, MPI_SUM,
                               MPI_COMM_WORLD, &p->requests.back()),
                "all-reduce (start)");
    }
    return p;
  }
  void progress() override {
    int flag = 0;  // any MPI call moves Open MPI's non-blocking collectives on
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, MPI_STATUS_IGNORE);
  }

 private:
  // Every all-reduce goes in chunks of at most 16 MiB. Open MPI's all-reduce allocates a temporary as
  // large as its message on every call, and glibc's malloc serves a block above its mmap threshold
  // (adaptive, but never above 32 MiB) with a fresh mmap, unmapped again on free: each call then
  // page-faults the whole temporary anew. Measured with bench_allreduce, 2 ranks on the 2-core VM:
  // 64 MiB in one call 0.35 GB/s, in 16 MiB chunks ~5 GB/s (docs/experiment.md).
  static constexpr size_t kChunkBytes = size_t(16) << 20;

  struct Pending final : PendingCollective {
    Pending(float* d, size_t count, float s) : data(d), n(count), scale(s) {}
    ~Pending() override {
      for (MPI_Request& r : requests)  // never free memory in flight
        if (r != MPI_REQUEST_NULL) MPI_Wait(&r, MPI_STATUS_IGNORE);
    }
    void wait() override {
      check_mpi(MPI_Waitall(int(requests.size()), requests.data(), MPI_STATUSES_IGNORE), "all-reduce (wait)");
      if (scale != 1.0f)
        for (size_t i = 0; i < n; ++i) data[i] *= scale;
    }
    std::vector<MPI_Request> requests;
    float* data;
    size_t n;
    float scale;
  };

  template <typename T>
  void reduce(T* data, size_t n, MPI_Datatype type) {
    const size_t step = kChunkBytes / sizeof(T);
    for (size_t at = 0; at < n; at += step)
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + at, int(std::min(n - at, step)), type, MPI_SUM, MPI_COMM_WORLD),
                "all-reduce");
  }
  int rank_ = 0, size_ = 1;
};
#endif

std::unique_ptr<ProcessGroup>& group() {
  static std::unique_ptr<ProcessGroup> g;  // destroyed at exit: MPI_Finalize
  return g;
}

std::map<std::string, GroupFactory>& factories() {
  static std::map<std::string, GroupFactory> f;
  return f;
}

// The group the host's collectives go through: MPI's world under mpirun, else the single process.
std::unique_ptr<ProcessGroup> host_group() {
  if (!launched_with_several_ranks()) return std::make_unique<SingleGroup>();
#ifdef NIMBUS_WITH_MPI
  return std::make_unique<MpiGroup>();
#else
  throw Error("started by mpirun with several ranks, but this build has no MPI (configure with NIMBUS_MPI=ON "
              "and libopenmpi-dev installed); each rank would train alone");
#endif
}

}  // namespace

void register_process_group(const std::string& kind, GroupFactory make) { factories()[kind] = make; }

bool launched_with_several_ranks() { return env_int("OMPI_COMM_WORLD_SIZE") > 1 || env_int("PMI_SIZE") > 1; }

int launched_rank() {
  if (const char* r = std::getenv("OMPI_COMM_WORLD_RANK")) return std::atoi(r);
  return env_int("PMI_RANK");
}

int launched_local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char* v = std::getenv(name)) return std::max(0, std::atoi(v));
  return 0;
}

ProcessGroup& world() {
  std::unique_ptr<ProcessGroup>& g = group();
  if (g) return *g;
  const char* want = std::getenv("NIMBUS_PROCESS_GROUP");
  const std::string kind = want && *want ? want : "auto";
  if (kind == "auto" || kind == "mpi" || kind == "single") {
    g = host_group();
    NIMBUS_CHECK(kind == "auto" || kind == g->kind(), "NIMBUS_PROCESS_GROUP=", kind, " but this process is ",
                 g->kind() == std::string("single") ? "not started by mpirun with several ranks" : "one of several ranks");
    return *g;
  }
  auto f = factories().find(kind);
  if (f == factories().end()) {
    std::string known = "auto, mpi, single";
    for (const auto& [name, make] : factories()) known += ", " + name;
    throw Error(str("NIMBUS_PROCESS_GROUP=", kind, ": no such process group in this build (", known, ")"));
  }
  g = f->second(host_group());
  return *g;
}

void abort_all(int code) {
#ifdef NIMBUS_WITH_MPI
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  // Whether or not a group was made: MPI may be up under a group that failed to start.
  if (initialized && !finalized && launched_with_several_ranks()) MPI_Abort(MPI_COMM_WORLD, code);
#else
  (void)code;
#endif
}

std::string describe_rank() {
  const std::unique_ptr<ProcessGroup>& g = group();
  if (!g) {  // not made (or making it failed: the message must not try again), so the launcher's word
    const int n = std::max(env_int("OMPI_COMM_WORLD_SIZE"), env_int("PMI_SIZE"));
    return str("rank ", launched_rank(), " of ", std::max(n, 1), " (no process group yet)");
  }
  return str("rank ", g->rank(), " of ", g->size(), " (", g->kind(), ")");
}

}  // namespace nimbus
