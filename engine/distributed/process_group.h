// process_group.h: the ranks of a data-parallel run and the collectives training needs.
//
// One interface, several implementations. "single": one process, every collective is the identity
// (what every program is without mpirun). "mpi": Open MPI (Debian's libopenmpi-dev), when the program
// was built with MPI (NIMBUS_MPI, on when CMake finds it) and started by mpirun with two or more
// ranks; MPI is initialised on first use and finalised at exit. Its collectives work on host memory:
// Debian's Open MPI is not CUDA-aware, so device data goes through the host (gradient_reducer.h says
// where). "threads" (thread_group.h): ranks as threads of one process, the loopback the tests drive
// the data-parallel code through. "nccl" (backends/cuda/nccl_group.h): GPU ranks, device memory.
//
// Every rank must call the same collectives in the same order with the same sizes, as with MPI itself.
// A rank that fails calls abort_all(), which stops every rank (MPI_Abort) with a non-zero exit instead
// of leaving the others waiting forever in their next collective.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "engine/device.h"

namespace nimbus {

// A collective in flight (ProcessGroup::start_all_reduce). wait() returns once the result is in
// place: in host memory for a host group; queued on the device's stream for a device group (later
// work on that stream sees it, the host does not wait).
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  virtual void wait() = 0;
};

enum class ReduceOp { Sum, Mean };  // Mean: the sum over the ranks, then times 1 / size

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* kind() const = 0;  // "single" | "mpi"
  // In place: every rank's data becomes the element-wise sum over the ranks.
  virtual void all_reduce_sum(float* data, size_t n) = 0;
  virtual void all_reduce_sum(double* data, size_t n) = 0;
  virtual void broadcast(void* data, size_t bytes, int root) = 0;  // root's bytes to every rank
  virtual void barrier() = 0;

  // Where start_all_reduce takes its data: host memory (MPI, threads) or the memory of device d (NCCL
  // for CUDA tensors).
  virtual bool reduces_on(Device d) const { return d == Device::CPU; }
  // Starts an in-place all-reduce of the n floats at `data` (memory of `where`, which reduces_on
  // accepts) and returns without waiting where the implementation can (MPI_Iallreduce; NCCL on its
  // stream); the default runs all_reduce_sum now. The data must not be touched until wait().
  virtual std::unique_ptr<PendingCollective> start_all_reduce(float* data, size_t n, ReduceOp op, Device where);
  // Lets outstanding collectives advance (MPI moves non-blocking ones on only inside MPI calls);
  // callers that do other work between start and wait call it now and then.
  virtual void progress() {}
};

// The process's group: MPI's world when started by mpirun with two or more ranks (and built with
// MPI), else the single-process group; NIMBUS_PROCESS_GROUP=<kind> asks for a registered one by name
// ("nccl"), built over that host group. The first call decides; it is the same object after.
ProcessGroup& world();
// Further implementations (the CUDA backend registers "nccl"): `make` gets the host group to
// bootstrap on (exchange ids over) and keeps it.
using GroupFactory = std::unique_ptr<ProcessGroup> (*)(std::unique_ptr<ProcessGroup> host);
void register_process_group(const std::string& kind, GroupFactory make);
// True when mpirun started this process with two or more ranks (whether or not it was built with MPI).
bool launched_with_several_ranks();
// This process's rank as the launcher announced it (0 without one); needs no MPI call.
int launched_rank();
// Its rank among the ranks on this machine (mpirun's OMPI_COMM_WORLD_LOCAL_RANK, MPICH's
// MPI_LOCALRANKID, Slurm's SLURM_LOCALID; 0 without a launcher).
int launched_local_rank();
// Stops every rank with `code`: MPI_Abort when MPI is up with several ranks (also when the group
// built over it failed to start), else nothing (the caller exits).
void abort_all(int code);
// "rank R of N (kind)" for messages; the launcher's numbers when the group is not made yet (or making
// it failed), so that reporting a failure never tries again.
std::string describe_rank();

}  // namespace nimbus
