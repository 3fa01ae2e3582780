/* hopper_demo.cu: a 64 x 64 x K bf16 GEMM of one warpgroup from TMA + mbarrier + wgmma (hopper_demo.h).
 *
 * Shared memory, 1024-byte aligned (the 128B swizzle pattern's repeat), two stages of
 *   A tile 64 rows x 64 k (128 bytes a row, 8 KiB), B tile 64 rows x 64 k (8 KiB),
 * both written by the copy engine with the 128B swizzle: 16-byte chunk c of row r at chunk c ^ (r % 8).
 * The wgmma descriptors read them as the canonical K-major 128B-swizzled layout: 8-row groups 1024
 * bytes apart (SBO), the k16 step inside a 128-byte row by advancing the start address 32 bytes.
 * Pipeline: thread 0 initialises full[0..1] (count 1), then per k-tile does arrive.expect_tx(16 KiB)
 * and the two copies, one tile ahead; every thread waits on full[s] with the parity of the tile's
 * round, the warpgroup issues 4 wgmma (fence before, commit and wait_group 0 after); a __syncthreads()
 * then frees the stage for the copy of tile kt + 2.
 */
#include "kernels/cuda/hopper_demo.h"

#include "kernels/cuda/hopper.h"

namespace nimbus::cuda {
namespace {

constexpr int kTileK = 64, kN = 64;
constexpr uint32_t kTileBytes = 64 * kTileK * 2;  // one operand tile: 8 KiB
constexpr uint32_t kStageBytes = 2 * kTileBytes;

__global__ void __launch_bounds__(128) gemm_bf16_demo_kernel(const __grid_constant__ CUtensorMap map_a,
                                                             const __grid_constant__ CUtensorMap map_b, float* C,
                                                             int K) {
  DYNAMIC_SMEM(unsigned char, raw);
  unsigned char* smem = raw + (1024 - smem_address(raw) % 1024) % 1024;  // launched with 1 KiB to spare
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + 2 * kStageBytes);
  const int tid = int(threadIdx.x), tiles = K / kTileK;
  if (tid == 0) {
    tma_prefetch_descriptor(&map_a);
    tma_prefetch_descriptor(&map_b);
    mbarrier_init(&full[0], 1);
    mbarrier_init(&full[1], 1);
    fence_mbarrier_init();
  }
  __syncthreads();
  auto issue = [&](int kt) {  // thread 0: tile kt into stage kt % 2
    unsigned char* stage = smem + (kt % 2) * kStageBytes;
    mbarrier_arrive_expect_tx(&full[kt % 2], kStageBytes);
    tma_load_2d(stage, &map_a, &full[kt % 2], kt * kTileK, 0);
    tma_load_2d(stage + kTileBytes, &map_b, &full[kt % 2], kt * kTileK, 0);
  };
  if (tid == 0) issue(0);
  float acc[kN / 2];
  for (int kt = 0; kt < tiles; ++kt) {
    if (tid == 0 && kt + 1 < tiles) issue(kt + 1);  // stage (kt+1)%2 was freed by the barrier below
    mbarrier_wait_parity(&full[kt % 2], uint32_t(kt / 2) & 1u);
    const unsigned char* a = smem + (kt % 2) * kStageBytes;
    const unsigned char* b = a + kTileBytes;
    wgmma_fence();
    for (int kk = 0; kk < kTileK / 16; ++kk) {
      const uint64_t da = wgmma_desc(a + 32 * kk, 16, 1024, WgmmaSwizzle::B128);
      const uint64_t db = wgmma_desc(b + 32 * kk, 16, 1024, WgmmaSwizzle::B128);
      wgmma_m64k16_bf16<kN>(acc, da, db, kt > 0 || kk > 0);
    }
    wgmma_commit_group();
    wgmma_wait_group<0>();
    wgmma_fence_operand(acc);
    __syncthreads();  // every thread is past its wait and the wgmma read the stage: it may be refilled
  }
  // D fragment: d[4j+i] at row 16w + g + 8(i>>1), column 8j + 2t + (i&1).
  const int w = tid / 32, g = (tid % 32) / 4, t = tid % 4;
  for (int j = 0; j < kN / 8; ++j)
    for (int i = 0; i < 4; ++i) C[(16 * w + g + 8 * (i >> 1)) * kN + 8 * j + 2 * t + (i & 1)] = acc[4 * j + i];
}

// Never launched: instantiates every device function of hopper.h once, so that check_nvcc compiles
// all of them for sm_90a (and the trap fallbacks for sm_80 / sm_90).
__global__ void hopper_instantiation_check(const __grid_constant__ CUtensorMap map, float* out) {
  DYNAMIC_SMEM(unsigned char, smem);
  uint64_t* bar = reinterpret_cast<uint64_t*>(smem + 8192);
  mbarrier_init(bar, 1);
  mbarrier_expect_tx(bar, 16);
  mbarrier_complete_tx(bar, 16);
  (void)mbarrier_arrive(bar);
  (void)mbarrier_arrive_expect_tx(bar, 0);
  tma_load_1d(smem, &map, bar, 0);
  tma_load_3d(smem, &map, bar, 0, 0, 0);
  tma_load_4d(smem, &map, bar, 0, 0, 0, 0);
  tma_load_5d(smem, &map, bar, 0, 0, 0, 0, 0);
  const bool ok = mbarrier_try_wait_parity(bar, 0);
  mbarrier_inval(bar);
  fence_proxy_async_shared();
  setmaxnreg_dec<40>();
  setmaxnreg_inc<232>();
  const uint64_t d = wgmma_desc(smem, 128, 256, WgmmaSwizzle::None);
  uint32_t a[4] = {0, 0, 0, 0};
  float d8[4] = {}, d16[8] = {}, d32[16] = {}, d128[64] = {}, d256[128] = {};
  wgmma_fence();
  wgmma_m64k16_bf16<8, 1, 1, -1, -1>(d8, d, d, 1);
  wgmma_m64k16_bf16<16>(d16, d, d, 0);
  wgmma_m64k16_bf16<256>(d256, d, d, 1);
  wgmma_m64k16_bf16_rs<32, 1>(d32, a, d, 1);
  wgmma_m64k16_bf16_rs<128>(d128, a, d, 1);
  wgmma_m64k8_tf32<8>(d8, d, d, 1);
  wgmma_m64k8_tf32<256>(d256, d, d, 1);
  wgmma_m64k8_tf32_rs<16>(d16, a, d, 1);
  wgmma_m64k8_tf32_rs<128, -1, 1>(d128, a, d, 1);
  wgmma_commit_group();
  wgmma_wait_group<1>();
  wgmma_wait_group<0>();
  wgmma_fence_operand(d256);
  out[threadIdx.x] = d8[0] + d16[0] + d32[0] + d128[0] + d256[0] + float(ok) + float(elect_one_sync());
}

}  // namespace

void hopper_gemm_bf16_demo(const uint16_t* A, const uint16_t* B, float* C, int K) {
  NIMBUS_CHECK(K > 0 && K % kTileK == 0, "hopper_gemm_bf16_demo: K = ", K, " is not a positive multiple of ", kTileK);
  CUtensorMap map_a, map_b;
  TensorMapDesc d;
  d.type = TmaType::BF16;
  d.rank = 2;
  d.dims[0] = uint64_t(K), d.dims[1] = 64;
  d.strides[0] = uint64_t(K) * 2;
  d.box[0] = kTileK, d.box[1] = 64;
  d.swizzle = TmaSwizzle::B128;
  d.global = A;
  encode_tensor_map(&map_a, d);
  d.global = B;
  encode_tensor_map(&map_b, d);
  const size_t smem = 2 * kStageBytes + 16 + 1024;
  allow_dynamic_smem(gemm_bf16_demo_kernel, smem, "cuda::hopper_gemm_bf16_demo");
  launch(gemm_bf16_demo_kernel, 1, 128, smem, launch_stream(), map_a, map_b, C, K);
  check_launch("cuda::hopper_gemm_bf16_demo");
  (void)hopper_instantiation_check;
}

}  // namespace nimbus::cuda
