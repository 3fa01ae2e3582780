/* tc_dispatch.h: which block tile and pipeline depth the tensor-core kernels (mma_core.cuh) run a
 * problem with. Plain C++, for the launchers (conv2d_tc.cu, linear_tc.cu), the benchmarks' sweep and
 * the tests.
 *
 * The menu: every configuration the backend is compiled in. BM x BN of the output per block, BK = 32
 * of the reduction per step, warps_m x warps_n warps, `stages` shared-memory buffers in the cp.async
 * pipeline (stages - 1 k-tiles in flight while one is multiplied).
 *
 *   #  tile      warps  stages  smem tf32 / bf16 (bytes)
 *   0  128x128   2x4    2       71,680 / 37,888
 *   1  128x128   2x4    3       107,520 / 56,832
 *   2  128x64    2x2    3       82,944 / 44,544
 *   3  64x128    2x2    3       79,872 / 41,472
 *   4  64x64     2x2    2       36,864 / 19,456
 *   5  64x64     2x2    4       73,728 / 38,912
 *
 * tc_pick_config() chooses for a problem: first the dispatch table (tc_dispatch_table.inc: the winners
 * an H200 sweep measured, per exact problem shape; `gpu_bench_conv2d --sweep` prints its lines), else
 * a rule: configuration 0 when its blocks give at least two per SM of an H200 (264), else 4.
 * A TcPlan overrides it (tests run every configuration; the sweep times them).
 */
#pragma once
#include <cstdint>

namespace nimbus::cuda {

struct TcConfig {
  int bm, bn, warps_m, warps_n, stages;
};
constexpr int kTcConfigCount = 6;
constexpr TcConfig kTcConfigs[kTcConfigCount] = {{128, 128, 2, 4, 2}, {128, 128, 2, 4, 3}, {128, 64, 2, 2, 3},
                                                 {64, 128, 2, 2, 3},  {64, 64, 2, 2, 2},   {64, 64, 2, 2, 4}};

// A launcher's choice: config -1 lets tc_pick_config decide; splits 0 lets the launcher decide (only
// the weight gradient splits its reduction).
struct TcPlan {
  int config = -1;
  int splits = 0;
};

enum class TcKind : int { ConvForward = 0, ConvDataGrad = 1, ConvWeightGrad = 2, Gemm = 3 };

// The configuration for an M x N x K problem of `kind` in bf16 (else TF32) with `splits` splits.
int tc_pick_config(TcKind kind, bool bf16, int64_t M, int64_t N, int64_t K, int splits);
// The table's split count for that problem, or 0 when the table has none.
int tc_table_splits(TcKind kind, bool bf16, int64_t M, int64_t N, int64_t K);

// "128x128 2x4 warps 3 stages"
const char* tc_config_name(int config);

}  // namespace nimbus::cuda
