/* tc_dispatch.cu: the tensor-core kernels' configuration choice (tc_dispatch.h): the measured table
 * first, then the rule. Host code only. */
#include "kernels/cuda/tc_dispatch.h"

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

const Entry* find(TcKind kind, bool bf16, int64_t M, int64_t N, int64_t K) {
  for (const Entry& e : kTable)
    if (e.kind == int(kind) && e.bf16 == int(bf16) && e.M == M && e.N == N && e.K == K) return &e;
  return nullptr;
}

}  // namespace

int tc_pick_config(TcKind kind, bool bf16, int64_t M, int64_t N, int64_t K, int splits) {
  if (const Entry* e = find(kind, bf16, M, N, K)) return e->config;
  const int64_t large_blocks = ((M + 127) / 128) * ((N + 127) / 128) * (splits < 1 ? 1 : splits);
  return large_blocks >= 264 ? 0 : 4;  // two 128x128 blocks per SM of an H200 (132 SMs), else more, smaller ones
}

int tc_table_splits(TcKind kind, bool bf16, int64_t M, int64_t N, int64_t K) {
  const Entry* e = find(kind, bf16, M, N, K);
  return e ? e->splits : 0;
}

const char* tc_config_name(int config) {
  static const char* const kNames[kTcConfigCount] = {
      "128x128 2x4 warps 2 stages", "128x128 2x4 warps 3 stages", "128x64 2x2 warps 3 stages",
      "64x128 2x2 warps 3 stages",  "64x64 2x2 warps 2 stages",   "64x64 2x2 warps 4 stages"};
  return config >= 0 && config < kTcConfigCount ? kNames[config] : "auto";
}

}  // namespace nimbus::cuda
