// data_parallel.h: what makes R ranks with batch B each train like one process with batch R x B.
// Every rank holds the whole model and reads its own share of each global batch (the loader's
// rank/ranks options); the ranks start from rank 0's weights, and before every optimiser step each
// gradient is replaced by its mean over the ranks. With a loss that is a mean over the batch (all of
// nimbus' losses), the mean of the ranks' gradients is the gradient of the whole batch's mean loss,
// so every rank takes the same step. Batch norm keeps per-rank statistics (as PyTorch's DDP does
// without SyncBatchNorm), so a model with batch norm is close to, not equal to, the one-process run.
#pragma once
#include <cstddef>

#include "engine/distributed/process_group.h"
#include "engine/nn/module.h"

namespace nimbus {

// Rank 0's values of every tensor (parameters and buffers), copied into every rank's.
void broadcast_tensors(const NamedTensors& tensors, ProcessGroup& pg);

// Each parameter's .grad becomes its mean over the ranks, after backward: the gradients, in the
// parameters' order, go through a GradientReducer's buckets of at most bucket_floats floats
// (gradient_reducer.h; training uses one inside backward instead, to overlap). Parameters without a
// gradient are skipped; every rank must have the same ones. Returns the number of all-reduce calls
// (0 for one rank).
size_t average_gradients(const NamedTensors& params, ProcessGroup& pg, size_t bucket_floats = size_t(1) << 22);

}  // namespace nimbus
