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
 * a rule: configuration 0 when its blocks give at least two per SM of an H200 (264), else 4. A table
 * line whose configuration needs more shared memory than the device lets a block have (TF32 config 1:
 * 105 KiB, over the 99 KiB of an sm_86 or sm_89) gives way to the rule, whose configurations fit
 * every device from sm_80 on.
 * A TcPlan overrides it (tests run every configuration; the sweep times them).
 *
 * On sm_90a the sweep also times Hopper's wgmma convolution (conv2d_wgmma.h), and a table line whose
 * config is kTcWgmma says it won there: the backend's Auto choice (backend.h ConvKernels) then keeps
 * wgmma for that shape, while a line naming an mma.sync configuration moves the shape to mma.sync.
 * Shapes without a line stay on wgmma (on sm_90a) or take the rule (elsewhere).
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

// Dispatch-table configs beyond the menu: the wgmma kernel (conv2d_wgmma.cu) won this shape; for a
// forward, its warp-specialised variant (conv2d_wgmma_forward_specialised) did.
constexpr int kTcWgmma = kTcConfigCount;
constexpr int kTcWgmmaSpecialised = kTcConfigCount + 1;

// A launcher's choice: config -1 lets tc_pick_config decide; splits 0 lets the launcher decide (only
// the weight gradient splits its reduction).
struct TcPlan {
  int config = -1;
  int splits = 0;
};

enum class TcKind : int { ConvForward = 0, ConvDataGrad = 1, ConvWeightGrad = 2, Gemm = 3 };

// The mma.sync configuration for an M x N x K problem of `kind` in bf16 (else TF32) with `splits`
// splits, on a device whose blocks may have smem_limit bytes of dynamic shared memory
// (cudaDevAttrMaxSharedMemoryPerBlockOptin): the table's unless it names kTcWgmma or does not fit,
// else the rule.
int tc_pick_config(TcKind kind, bool bf16, int64_t M, int64_t N, int64_t K, int splits, int64_t smem_limit);
// Whether the current device lets a block have configuration `config`'s shared memory (always true for
// what is not a menu configuration): what tc_pick_config checks a table line against, for the callers
// that loop over configurations or read a line's splits.
bool tc_config_fits_device(int config, bool bf16);
// The dynamic shared memory configuration `config` of the menu takes, in bytes (the table above):
// `stages` buffers of a BM x (BK + pad) A tile and a BK x (BN + 8) B tile. mma_core.cuh's SmemLayout
// lays them out and checks that it agrees.
constexpr int64_t tc_config_smem_bytes(int config, bool bf16) {
  if (config < 0 || config >= kTcConfigCount) return 0;
  const TcConfig c = kTcConfigs[config];
  const int64_t elem = bf16 ? 2 : 4, pad_a = bf16 ? 8 : 4, bk = 32;
  return int64_t(c.stages) * (c.bm * (bk + pad_a) + bk * (c.bn + 8)) * elem;
}
// The table's config for that problem (a menu index or kTcWgmma), or -1 when the table has none.
int tc_table_config(TcKind kind, bool bf16, int64_t M, int64_t N, int64_t K);
// The table's split count for that problem when its line is for the wgmma kernel (wgmma) or for an
// mma.sync configuration (!wgmma), else 0.
int tc_table_splits(TcKind kind, bool bf16, int64_t M, int64_t N, int64_t K, bool wgmma = false);

// "128x128 2x4 warps 3 stages"; kTcWgmma: "wgmma 128x128 3 stages (sm_90a)"; kTcWgmmaSpecialised:
// "wgmma 128x128 warp-specialised 4 stages (sm_90a)"
const char* tc_config_name(int config);

// For tests: table lines searched before the compiled ones while the scope lives (an inner scope's
// replace an outer one's until it ends).
struct TcTableLine {
  TcKind kind;
  bool bf16;
  int64_t M, N, K;
  int config, splits;
};
class TcTableScope {
 public:
  explicit TcTableScope(const TcTableLine* lines, int count);
  ~TcTableScope();
  TcTableScope(const TcTableScope&) = delete;
  TcTableScope& operator=(const TcTableScope&) = delete;

 private:
  const TcTableLine* saved_lines_;
  int saved_count_;
};

}  // namespace nimbus::cuda
