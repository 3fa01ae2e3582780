// loss.h: CPU kernels for the losses and softmax (see engine/ops/loss.h for the maths).
//
// Templated on T (float for the engine, double for the finite-difference tests).
// Every mean is accumulated in double: a float sum over a DSen2-CR batch
// (~10^6 terms) would lose several digits. Forward kernels return the loss;
// backward kernels take g = dL/dloss (the upstream gradient of the 0-d output;
// the kernel list passes it as a device pointer, backends/cpu dereferences it)
// and write (=) the input gradient. |.| has subgradient 0 at 0, like torch.sign.
#pragma once
#include <cstdint>

namespace nimbus::cpu {

// Row-wise softmax of x (N,K), stabilised by subtracting the row max.
template <typename T> void softmax_forward(T* y, const T* x, int64_t N, int64_t K);

// Cross-entropy of logits (N,K) against class indices target (N) (integers
// in [0,K) stored as T). Returns mean_n (logsumexp_n - x[n, target_n]) and
// writes the softmax into prob (N,K) for the backward. A target that is not a
// class index (kernels/common/class_index.h) makes its row's term NaN, so the
// loss is NaN, and its dlogits row NaN: every backend, no host check needed.
template <typename T> T cross_entropy_forward(T* prob, const T* logits, const T* target, int64_t N, int64_t K);
// dlogits = g / N * (prob - onehot(target)).
template <typename T>
void cross_entropy_backward(T* dlogits, const T* prob, const T* target, T g, int64_t N, int64_t K);

// mean |p - t| over n elements; dp = g / n * sign(p - t)  (dt = -dp).
template <typename T> T l1_forward(const T* p, const T* t, int64_t n);
template <typename T> void l1_backward(T* dp, const T* p, const T* t, T g, int64_t n);
// mean (p - t)^2 over n elements; dp = g * 2 / n * (p - t)  (dt = -dp).
template <typename T> T mse_forward(const T* p, const T* t, int64_t n);
template <typename T> void mse_backward(T* dp, const T* p, const T* t, T g, int64_t n);

// CARL, fused: P, Tg (target), I (cloudy input) are (N,C,HW), M (mask) is (N,HW), broadcast over C.
//   loss = 1/(N*C*HW) * sum  M |P-Tg| + (1-M) |P-I| + lambda |P-Tg|
//   dP   = g/(N*C*HW) * ((M + lambda) sign(P-Tg) + (1-M) sign(P-I))
template <typename T>
T carl_forward(const T* P, const T* Tg, const T* I, const T* M, T lambda, int64_t N, int64_t C, int64_t HW);
template <typename T>
void carl_backward(T* dP, const T* P, const T* Tg, const T* I, const T* M, T lambda, T g, int64_t N, int64_t C,
                   int64_t HW);

}  // namespace nimbus::cpu
