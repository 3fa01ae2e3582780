/* hopper_demo.h: the demonstration of the Hopper instruction layer (hopper_demo.cu), a worked example
 * rather than an engine kernel: one warpgroup computes C (64 x 64, float32, row-major) = A B^T for
 * A (64 x K) and B (64 x K), both bf16 row-major (K contiguous, so both operands are K-major), K a
 * multiple of 64, with TMA (128B swizzle) feeding wgmma m64n64k16 through a two-stage mbarrier
 * pipeline. Device pointers. Runs only on sm_90a hardware (elsewhere the kernel traps) and under the
 * emulator, where tests/emu/test_emu_hopper.cpp holds it to a float64 product.
 */
#pragma once
#include <cstdint>

namespace nimbus::cuda {

void hopper_gemm_bf16_demo(const uint16_t* A, const uint16_t* B, float* C, int K);

}  // namespace nimbus::cuda
