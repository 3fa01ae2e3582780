/* hopper.h (emulator side): CPU models of the Hopper (sm_90a) instructions behind the device
 * functions of kernels/cuda/hopper.h. Kernels never include this; they call those device functions,
 * which under nvcc are inline PTX and under the emulator forward here with the caller's call site.
 *
 *   mbarrier.init / inval / arrive[.expect_tx] / expect_tx / complete_tx / try_wait.parity
 *   cp.async.bulk.tensor.{1..5}d.shared::cluster.global.tile.mbarrier::complete_tx::bytes   tma_load
 *   prefetch.tensormap                                                                     tma_prefetch
 *   fence.proxy.async.shared::cta                                                          fence_proxy_async_shared
 *   wgmma.fence / mma_async (bf16 k16, tf32 k8; A from shared memory or registers) /
 *   commit_group / wait_group                                                              wgmma_*
 *   setmaxnreg.{inc,dec}                                                                   setmaxnreg
 *   cuTensorMapEncodeTiled (host, the emulator's encoding of a CUtensorMap)                encode_tensor_map
 *
 * Semantics, layouts, what is exact and what is not: the comments in hopper.cpp and
 * docs/cuda-emulator.md ("Hopper instructions").
 */
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/emu/runtime.h"  // CUtensorMap

namespace nimbus::emu {

// The shared-memory address of p: its offset in the block's dynamic shared memory (the emulator's
// shared window, 1024-byte aligned like a GPU's). Faults the block naming `what` when p is elsewhere
// (static __shared__ arrays are ordinary thread_locals, outside the window).
uint32_t shared_address(const void* p, const char* what, const char* file, int line);

// ---- mbarrier (per thread; the object is 8 bytes of shared memory, its state kept by the model) ----
void mbarrier_init(uint64_t* bar, uint32_t count, const char* file, int line);
void mbarrier_inval(uint64_t* bar, const char* file, int line);
// arrive (count arrivals, after an expect-tx of tx_bytes when expect_tx): returns the state token,
// here the phase number the arrival belongs to.
uint64_t mbarrier_arrive(uint64_t* bar, uint32_t count, bool expect_tx, uint32_t tx_bytes, const char* file, int line);
void mbarrier_expect_tx(uint64_t* bar, uint32_t bytes, const char* file, int line);
void mbarrier_complete_tx(uint64_t* bar, uint32_t bytes, const char* file, int line);
// Returns true once the phase of parity `parity` has completed; until then the thread sleeps (the
// model never times out, which try_wait may do on a GPU: kernels loop on it anyway).
bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity, const char* file, int line);

// ---- tensor maps and bulk tensor copies -----------------------------------------------------------
// Host: writes the emulator's encoding of a validated cuTensorMapEncodeTiled call into *map
// (interleave NONE). dtype is CUtensorMapDataType's value, swizzle CUtensorMapSwizzle's (0-3), oob_fill
// CUtensorMapFloatOOBfill's. Validation is the caller's (kernels/cuda/tensor_map.h).
void encode_tensor_map(CUtensorMap* map, int dtype, int elem_bytes, int rank, const void* global, const uint64_t* dims,
                       const uint64_t* strides, const uint32_t* box, const uint32_t* element_strides, int swizzle,
                       int oob_fill);
// One thread issues the copy of the box at coords (rank of them, innermost first) into dst; the copy
// engine signals `bar` with complete_tx of the box's bytes.
void tma_load(int rank, void* dst, const CUtensorMap* map, uint64_t* bar, const int32_t* coords, const char* file,
              int line);
void tma_prefetch(const CUtensorMap* map, const char* file, int line);

// ---- proxies -----------------------------------------------------------------------------------------
void fence_proxy_async_shared();  // also the mbarrier inits the calling thread has seen, to the async proxy
void fence_mbarrier_init();       // the calling thread's mbarrier inits visible to the async proxy

// ---- wgmma (warpgroup-collective: the 128 threads of a warpgroup, from one call site) ---------------------
enum class WgmmaType { BF16, TF32 };
struct WgmmaShape {
  WgmmaType type;
  int n;                 // m64nNk16 (bf16) / m64nNk8 (tf32), N a multiple of 8 in [8, 256]
  bool a_in_registers;   // A from 4 registers per thread, else from a descriptor
  int trans_a, trans_b;  // imm-trans: 0 K-major, 1 MN-major (bf16 only)
  int scale_a, scale_b;  // imm-scale: 1 or -1
};
// d: the thread's N/2 accumulators; a: its 4 A registers (a_in_registers) or nullptr.
void wgmma_mma_async(const WgmmaShape& shape, float* d, const uint32_t* a, uint64_t desc_a, uint64_t desc_b,
                     int scale_d, const char* file, int line);
void wgmma_fence(const char* file, int line);
void wgmma_commit_group(const char* file, int line);
void wgmma_wait_group(int n, const char* file, int line);
void setmaxnreg(bool inc, int regs, const char* file, int line);

// What the block left that a GPU would not have finished (the scheduler calls it when every thread
// is done): a warpgroup that never ran setmaxnreg while others' counts need its registers. "" if fine.
std::string block_exit_check();

}  // namespace nimbus::emu
