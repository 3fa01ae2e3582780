// process_group.h: the ranks of a data-parallel run and the collectives training needs.
//
// One interface, two implementations. "single": one process, every collective is the identity (what
// every program is without mpirun). "mpi": Open MPI (Debian's libopenmpi-dev), when the program was
// built with MPI (NIMBUS_MPI, on when CMake finds it) and started by mpirun with two or more ranks;
// MPI is initialised on first use and finalised at exit. Collectives work on host memory: Debian's
// Open MPI is not CUDA-aware, so device data goes through the host (data_parallel.h says where).
//
// Every rank must call the same collectives in the same order with the same sizes, as with MPI itself.
// A rank that fails calls abort_all(), which stops every rank (MPI_Abort) with a non-zero exit instead
// of leaving the others waiting forever in their next collective.
#pragma once
#include <cstddef>
#include <string>

namespace nimbus {

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
};

// The process's group: MPI's world when started by mpirun with two or more ranks (and built with
// MPI), else the single-process group. The first call decides; it is the same object after.
ProcessGroup& world();
// True when mpirun started this process with two or more ranks (whether or not it was built with MPI).
bool launched_with_several_ranks();
// Stops every rank with `code`: MPI_Abort when the group is MPI, else nothing (the caller exits).
void abort_all(int code);
// "rank R of N (kind)" for messages.
std::string describe_rank();

}  // namespace nimbus
