// backend.cpp: the CPU backend: engine/kernel_list.def filled from kernels/cpu.
//
// Every entry calls nimbus::cpu::<name>(arguments) (the float or bfloat16 instantiation of the
// templated kernels), except where the CPU kernel's own interface differs from the list: those adapters are
// declared here, in cpu_entries, and hide the kernel of the same name. A kernel missing from
// kernels/cpu fails to compile here.
#include <vector>

#include "backends/common/bf16_via_f32.h"
#include "engine/backend.h"
#include "kernels/cpu/batchnorm.h"
#include "kernels/cpu/cast.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/grad_clip.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/optim.h"
#include "kernels/cpu/pool.h"

namespace nimbus {

namespace cpu_entries {
using namespace ::nimbus::cpu;

// The CPU losses return the mean; the list writes it to loss[0] (host memory here) and passes a
// scratch buffer the CPU does not need.
int64_t loss_scratch_floats(int64_t) { return 1; }
void cross_entropy_forward(float* loss, float* prob, const float* logits, const float* target, int64_t N, int64_t K,
                           float*) {
  loss[0] = cpu::cross_entropy_forward(prob, logits, target, N, K);
}
void l1_forward(float* loss, const float* p, const float* t, int64_t n, float*) { loss[0] = cpu::l1_forward(p, t, n); }
void mse_forward(float* loss, const float* p, const float* t, int64_t n, float*) { loss[0] = cpu::mse_forward(p, t, n); }
void carl_forward(float* loss, const float* P, const float* Tg, const float* I, const float* M, float lambda,
                  int64_t N, int64_t C, int64_t HW, float*) {
  loss[0] = cpu::carl_forward(P, Tg, I, M, lambda, N, C, HW);
}
// The backward kernels take g = dL/dloss by value; the list passes its address (host memory here).
void cross_entropy_backward(float* dlogits, const float* prob, const float* target, const float* g, int64_t N,
                            int64_t K) {
  cpu::cross_entropy_backward(dlogits, prob, target, *g, N, K);
}
void l1_backward(float* dp, const float* p, const float* t, const float* g, int64_t n) {
  cpu::l1_backward(dp, p, t, *g, n);
}
void mse_backward(float* dp, const float* p, const float* t, const float* g, int64_t n) {
  cpu::mse_backward(dp, p, t, *g, n);
}
void carl_backward(float* dP, const float* P, const float* Tg, const float* I, const float* M, float lambda,
                   const float* g, int64_t N, int64_t C, int64_t HW) {
  cpu::carl_backward(dP, P, Tg, I, M, lambda, *g, N, C, HW);
}
// Batch-norm training statistics: the CPU kernels one after the other (one pass over x for the sums).
template <typename T>
void batchnorm_train_stats(float* mean, float* invstd, float* running_mean, float* running_var, float* count,
                           const T* x, int64_t N, int64_t C, int64_t HW, float momentum, float eps) {
  std::vector<float> var(size_t(C > 0 ? C : 0));
  cpu::batchnorm_stats(mean, var.data(), x, N, C, HW);
  cpu::batchnorm_invstd(invstd, var.data(), eps, C);
  cpu::batchnorm_update_running(running_mean, running_var, mean, var.data(), momentum, N * HW, C);
  if (count) count[0] += 1.f;  // exact up to 2^24 steps
}
// bfloat16 linear and conv2d: through float32 scratch on the host (backends/common/bf16_via_f32.h).
struct HostMem {
  struct Scratch {
    explicit Scratch(int64_t n) : v(size_t(n > 0 ? n : 0)) {}
    float* data() { return v.data(); }
    std::vector<float> v;
  };
  static void widen(float* dst, const bfloat16* src, int64_t n) { cpu::cast_bf16_to_f32(dst, src, n); }
  static void narrow(bfloat16* dst, const float* src, int64_t n) { cpu::cast_f32_to_bf16(dst, src, n); }
};
using HostViaF32 = ViaF32<HostMem>;
using cpu::conv2d_backward;  // the float32 kernels stay visible beside the bfloat16 adapters below
using cpu::conv2d_forward;
using cpu::linear_backward;
using cpu::linear_forward;
void linear_forward(bfloat16* y, const bfloat16* x, const bfloat16* w, const bfloat16* b, int64_t N, int64_t in,
                    int64_t out) {
  HostViaF32::linear_forward(cpu::linear_forward<float>, y, x, w, b, N, in, out);
}
void linear_backward(bfloat16* dx, bfloat16* dw, bfloat16* db, const bfloat16* dy, const bfloat16* x,
                     const bfloat16* w, int64_t N, int64_t in, int64_t out) {
  HostViaF32::linear_backward(cpu::linear_backward<float>, dx, dw, db, dy, x, w, N, in, out);
}
void conv2d_forward(bfloat16* y, const bfloat16* x, const bfloat16* w, const bfloat16* b, const ConvGeom& g,
                    float* ws, bool relu) {
  HostViaF32::conv2d_forward(cpu::conv2d_forward, y, x, w, b, g, ws, relu);
}
void conv2d_backward(bfloat16* dx, bfloat16* dw, bfloat16* db, const bfloat16* dy, const bfloat16* x,
                     const bfloat16* w, const ConvGeom& g, float* ws) {
  HostViaF32::conv2d_backward(cpu::conv2d_backward, dx, dw, db, dy, x, w, g, ws);
}
// A conv -> batch norm pair: the two calls (the CPU has no epilogue to fold the statistics into).
int64_t conv2d_bn_workspace(const ConvGeom& g) { return cpu::conv2d_workspace(g); }
template <typename T>
void conv2d_forward_bn_stats(T* y, const T* x, const T* w, const T* b, const ConvGeom& g, float* ws, float* mean,
                             float* invstd, float* running_mean, float* running_var, float* count, float momentum,
                             float eps) {
  conv2d_forward(y, x, w, b, g, ws, false);
  batchnorm_train_stats(mean, invstd, running_mean, running_var, count, static_cast<const T*>(y), g.N, g.K,
                        g.P() * g.Q(), momentum, eps);
}
// With the previous layer's batch norm + ReLU: that activation in host scratch, then the pair.
template <typename T>
void bnrelu_conv2d_forward_bn_stats(T* y, const T* x, const float* in_mean, const float* in_invstd,
                                    const float* in_weight, const float* in_bias, const T* w, const T* b,
                                    const ConvGeom& g, float* ws, float* mean, float* invstd, float* running_mean,
                                    float* running_var, float* count, float momentum, float eps) {
  std::vector<T> a(size_t(g.N * g.C * g.H * g.W));
  batchnorm_forward(a.data(), x, in_mean, in_invstd, in_weight, in_bias, g.N, g.C, g.H * g.W, true);
  conv2d_forward_bn_stats(y, static_cast<const T*>(a.data()), w, b, g, ws, mean, invstd, running_mean, running_var,
                          count, momentum, eps);
}
// The residual sum as a second pass (y = r + s y, elementwise in place).
template <typename T>
void conv2d_residual_forward(T* y, const T* x, const T* w, const T* b, const T* r, float s, const ConvGeom& g,
                             float* ws) {
  conv2d_forward(y, x, w, b, g, ws, false);
  cpu::add_scaled(y, r, y, s, g.N * g.K * g.P() * g.Q());
}
}  // namespace cpu_entries

const Backend& cpu_backend() {
  static const Backend table = [] {
    Backend t;
#define NIMBUS_KERNEL(name, dtypes, ret, params, args) \
  NIMBUS_BACKEND_ENTRY(t, cpu_entries, name, dtypes, ret, params, args)
#include "engine/kernel_list.def"
#undef NIMBUS_KERNEL
    return t;
  }();
  return table;
}

}  // namespace nimbus
