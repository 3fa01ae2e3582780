/* tc_dispatch.cu: the tensor-core kernels' configuration choice (tc_dispatch.h): the measured table
 * first, then the rule. Host code only. */
#include "kernels/cuda/tc_dispatch.h"

#include "kernels/cuda/compat.h"  // device_smem_opt_in

namespace nimbus::cuda {

namespace {

struct Entry {
  int kind, bf16;
  int64_t M, N, K;
  int config, splits;
};

const Entry kTable[] = {
#include "kernels/cuda/tc_dispatch_table.inc"
    {-1, 0, 0, 0, 0, 0, 0},  // end (keeps the array non-empty)
};

const TcTableLine* test_lines = nullptr;  // TcTableScope's
int test_count = 0;

// The line for the problem: the tests' first, then the compiled table; config -1 when none.
TcTableLine find(TcKind kind, bool bf16, int64_t M, int64_t N, int64_t K) {
  for (int i = 0; i < test_count; ++i) {
    const TcTableLine& e = test_lines[i];
    if (e.kind == kind && e.bf16 == bf16 && e.M == M && e.N == N && e.K == K) return e;
  }
  for (const Entry& e : kTable)
    if (e.kind == int(kind) && e.bf16 == int(bf16) && e.M == M && e.N == N && e.K == K)
      return {kind, bf16, M, N, K, e.config, e.splits};
  return {kind, bf16, M, N, K, -1, 0};
}

}  // namespace

int tc_pick_config(TcKind kind, bool bf16, int64_t M, int64_t N, int64_t K, int splits, int64_t smem_limit) {
  const TcTableLine e = find(kind, bf16, M, N, K);
  if (e.config >= 0 && e.config < kTcConfigCount && tc_config_smem_bytes(e.config, bf16) <= smem_limit)
    return e.config;
  const int64_t large_blocks = ((M + 127) / 128) * ((N + 127) / 128) * (splits < 1 ? 1 : splits);
  return large_blocks >= 264 ? 0 : 4;  // two 128x128 blocks per SM of an H200 (132 SMs), else more, smaller ones
}

bool tc_config_fits_device(int config, bool bf16) { return tc_config_smem_bytes(config, bf16) <= device_smem_opt_in(); }

int tc_table_config(TcKind kind, bool bf16, int64_t M, int64_t N, int64_t K) {
  return find(kind, bf16, M, N, K).config;
}

int tc_table_splits(TcKind kind, bool bf16, int64_t M, int64_t N, int64_t K, bool wgmma) {
  const TcTableLine e = find(kind, bf16, M, N, K);
  if (e.config < 0 || (e.config >= kTcWgmma) != wgmma) return 0;
  return e.splits;
}

const char* tc_config_name(int config) {
  static const char* const kNames[kTcConfigCount + 2] = {
      "128x128 2x4 warps 2 stages", "128x128 2x4 warps 3 stages", "128x64 2x2 warps 3 stages",
      "64x128 2x2 warps 3 stages",  "64x64 2x2 warps 2 stages",   "64x64 2x2 warps 4 stages",
      "wgmma 128x128 3 stages (sm_90a)", "wgmma 128x128 warp-specialised 4 stages (sm_90a)"};
  return config >= 0 && config <= kTcWgmmaSpecialised ? kNames[config] : "auto";
}

TcTableScope::TcTableScope(const TcTableLine* lines, int count) : saved_lines_(test_lines), saved_count_(test_count) {
  test_lines = lines;
  test_count = count;
}
TcTableScope::~TcTableScope() {
  test_lines = saved_lines_;
  test_count = saved_count_;
}

}  // namespace nimbus::cuda
