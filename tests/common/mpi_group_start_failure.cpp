// mpi_group_start_failure.cpp: a program that test_engine's case "process group: a group that fails to
// start on one rank after MPI is up stops every rank with its message" runs under mpirun -np 2.
//
// It asks for a registered process-group kind whose start fails on rank 0 only, after MPI_Init, as
// NCCL's can (its library missing on one machine). Rank 1's starts, and waits in a broadcast for rank
// 0. Rank 0 must print why and stop every rank (abort_all: MPI_Abort). It used to finalise MPI while
// the exception unwound: MPI_Finalize then waited for rank 1, which waited for rank 0, and nothing
// was ever printed.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>

#include "engine/distributed/process_group.h"
#include "kernels/common/error.h"

using namespace nimbus;

int main() {
  register_process_group("fails_on_rank_0", [](std::unique_ptr<ProcessGroup> host) -> std::unique_ptr<ProcessGroup> {
    if (host->rank() == 0) throw Error("the group could not start on rank 0");
    return host;
  });
  ::setenv("NIMBUS_PROCESS_GROUP", "fails_on_rank_0", 1);
  try {
    ProcessGroup& g = world();
    float x = 1.0f;
    g.broadcast(&x, sizeof x, 0);  // rank 1 waits here for rank 0
    std::printf("%s: passed the broadcast\n", describe_rank().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mpi_group_start_failure (%s): %s\n", describe_rank().c_str(), e.what());
    abort_all(1);
    return 1;
  }
}
