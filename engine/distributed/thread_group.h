// thread_group.h: ranks as threads of one process, a ProcessGroup with shared memory for wires.
//
// The loopback implementation: ctest drives the data-parallel code (the gradient reducer, the
// synchronised batch norm) through it with no mpirun, the same code that MPI and NCCL ranks run.
// run_ranks(n, body) starts n threads, gives each its group (rank r of n) and joins them; a rank that
// throws makes the others' next collective throw too (no rank waits forever), and run_ranks rethrows
// the first failure.
//
// Collectives are exact and deterministic: an all-reduce sums the ranks' values in rank order
// (r = 0, 1, ...), in the data's precision, so two ranks give a + b exactly as MPI's sum of two does.
// Host memory only.
#pragma once
#include <functional>

#include "engine/distributed/process_group.h"

namespace nimbus {

void run_ranks(int n, const std::function<void(ProcessGroup& group)>& body);

}  // namespace nimbus
