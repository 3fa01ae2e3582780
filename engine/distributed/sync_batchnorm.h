// sync_batchnorm.h: batch normalisation whose training statistics are those of the global batch,
// every rank's samples together (PyTorch's SyncBatchNorm).
//
// With per-rank batch norm (the default, as DDP without SyncBatchNorm), R ranks of batch B normalise
// with R different batch-of-B statistics: close to, not equal to, one process with batch R x B. With
// the synchronised one they are equal up to rounding (tests/apps: the ResNet data-parallel test).
//
//   x: (N, C, H, W) on every rank (N may differ)   weight, bias, running_*: (C)
//   forward:  each rank's per-channel count M_r, mean and biased variance (the backend's statistics
//             kernel: the variance is read back from invstd = 1/sqrt(var + eps), as PyTorch does),
//             gathered from every rank and combined in rank order (Chan et al.'s pairwise update,
//             in double): the global mean, variance, M = sum M_r; y = (x - mean) * invstd * w + b
//             with the backend's forward kernel; the running statistics updated with the global
//             values (unbiased variance, M / (M - 1)), the same on every rank.
//   backward: each rank's sums dbias_r = sum dy, dweight_r = sum dy * xhat (the backend's backward
//             kernel), summed over the ranks; then
//               dx = w * invstd * (dy - sum_ranks dbias / M - xhat * sum_ranks dweight / M)
//             (the gradient through the shared statistics reaches every rank's x), computed as the
//             eval-mode backward of dy' = dy + t, t = -xhat * sum dweight / M - sum dbias / M from
//             the forward kernel (weight and bias set to those coefficients). The weight and bias get
//             the rank's own sums: the gradient reducer averages them with every other gradient.
// Two collectives per layer each way (statistics, then sums), through the host: not capturable in a
// CUDA graph, which is off with several ranks anyway. Eval mode is batch_norm2d with the running
// statistics. Every dtype batch_norm2d takes.
#pragma once
#include "engine/distributed/process_group.h"
#include "engine/nn/module.h"
#include "engine/tensor.h"

namespace nimbus {

Tensor sync_batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& running_mean,
                         Tensor& running_var, bool training, float momentum, float eps, Tensor* num_batches_tracked,
                         ProcessGroup& pg);

// Makes every BatchNorm2d under `m` synchronise over `pg` while training (nothing changes in eval
// mode, in the checkpoint, or with a one-rank group, where the statistics are the rank's own anyway).
// Returns how many layers it changed.
int convert_sync_batchnorm(Module& m, ProcessGroup& pg);

}  // namespace nimbus
