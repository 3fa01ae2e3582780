// process_group.cpp: the single-process group and, with NIMBUS_WITH_MPI, the Open MPI one (see
// process_group.h). mpirun announces itself through the environment (OMPI_COMM_WORLD_SIZE, or PMI's
// PMI_SIZE under other launchers), so a program started without it never initialises MPI.
#include "engine/distributed/process_group.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <memory>

#include "kernels/common/error.h"

#ifdef NIMBUS_WITH_MPI
#include <mpi.h>
#endif

namespace nimbus {

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

 private:
  template <typename T>
  void reduce(T* data, size_t n, MPI_Datatype type) {
    for (size_t at = 0; at < n;) {
      const int chunk = int(std::min<size_t>(n - at, size_t(1) << 30));
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + at, chunk, type, MPI_SUM, MPI_COMM_WORLD), "all-reduce");
      at += size_t(chunk);
    }
  }
  int rank_ = 0, size_ = 1;
};
#endif

std::unique_ptr<ProcessGroup>& group() {
  static std::unique_ptr<ProcessGroup> g;  // destroyed at exit: MPI_Finalize
  return g;
}

}  // namespace

bool launched_with_several_ranks() { return env_int("OMPI_COMM_WORLD_SIZE") > 1 || env_int("PMI_SIZE") > 1; }

ProcessGroup& world() {
  std::unique_ptr<ProcessGroup>& g = group();
  if (!g) {
    if (launched_with_several_ranks()) {
#ifdef NIMBUS_WITH_MPI
      g = std::make_unique<MpiGroup>();
#else
      throw Error("started by mpirun with several ranks, but this build has no MPI (configure with NIMBUS_MPI=ON "
                  "and libopenmpi-dev installed); each rank would train alone");
#endif
    } else {
      g = std::make_unique<SingleGroup>();
    }
  }
  return *g;
}

void abort_all(int code) {
#ifdef NIMBUS_WITH_MPI
  const std::unique_ptr<ProcessGroup>& g = group();
  if (g && g->size() > 1) MPI_Abort(MPI_COMM_WORLD, code);
#else
  (void)code;
#endif
}

std::string describe_rank() {
  ProcessGroup& g = world();
  return str("rank ", g.rank(), " of ", g.size(), " (", g.kind(), ")");
}

}  // namespace nimbus
