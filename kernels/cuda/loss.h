/* loss.h: launchers for the CUDA losses and softmax (loss.cu), callable from plain C++.
 *
 * Same maths as kernels/cpu/loss.h. Device pointers; forward kernels write the loss to a device
 * float `loss` and need a device scratch of loss_scratch_floats(n) floats (n = rows for
 * cross_entropy, elements otherwise). g = dL/dloss is a device pointer to one float; backward
 * writes (=) dp.
 */
#pragma once
#include <cstdint>

namespace nimbus::cuda {

int64_t loss_scratch_floats(int64_t n);

void softmax_forward(float* y, const float* x, int64_t N, int64_t K, int block = 256);
void cross_entropy_forward(float* loss, float* prob, const float* logits, const float* target, int64_t N, int64_t K,
                           float* scratch, int block = 256);
void cross_entropy_backward(float* dlogits, const float* prob, const float* target, const float* g, int64_t N,
                            int64_t K, int block = 256);

void l1_forward(float* loss, const float* p, const float* t, int64_t n, float* scratch, int block = 256);
void l1_backward(float* dp, const float* p, const float* t, const float* g, int64_t n, int block = 256);
void mse_forward(float* loss, const float* p, const float* t, int64_t n, float* scratch, int block = 256);
void mse_backward(float* dp, const float* p, const float* t, const float* g, int64_t n, int block = 256);

// CARL, fused: P, Tg, I (N,C,HW); M (N,HW) broadcast over C.
void carl_forward(float* loss, const float* P, const float* Tg, const float* I, const float* M, float lambda,
                  int64_t N, int64_t C, int64_t HW, float* scratch, int block = 256);
void carl_backward(float* dP, const float* P, const float* Tg, const float* I, const float* M, float lambda,
                   const float* g, int64_t N, int64_t C, int64_t HW, int block = 256);

}  // namespace nimbus::cuda
