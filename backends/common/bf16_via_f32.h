// bf16_via_f32.h: every backend's first bfloat16 linear and conv2d: the bfloat16 operands widened to
// float32 scratch, the backend's own float32 kernel, the results rounded once into bfloat16. That is
// the rule of every bfloat16 kernel (compute in float, round on store) at the cost of extra passes
// over the operands; the tensor-core kernels will compute from bfloat16 directly.
//
// `Mem` is the backend's memory: Mem::Scratch(n) holds n floats where its kernels run (.data()),
// Mem::widen(float* dst, const bfloat16* src, n) and Mem::narrow(bfloat16* dst, const float* src, n)
// are its cast kernels. Null operands (no bias, a gradient not wanted) stay null.
#pragma once
#include <cstdint>

#include "kernels/common/bfloat16.h"
#include "kernels/common/geometry.h"

namespace nimbus {

template <typename Mem>
struct ViaF32 {
  // A bfloat16 input as float32 scratch.
  class In {
   public:
    In(const bfloat16* p, int64_t n) : s_(p ? n : 0), present_(p != nullptr) {
      if (p) Mem::widen(s_.data(), p, n);
    }
    const float* ptr() { return present_ ? s_.data() : nullptr; }

   private:
    typename Mem::Scratch s_;
    bool present_;
  };
  // A bfloat16 output computed in float32 scratch, rounded into place by store().
  class Out {
   public:
    Out(bfloat16* p, int64_t n) : s_(p ? n : 0), dst_(p), n_(n) {}
    float* ptr() { return dst_ ? s_.data() : nullptr; }
    void store() {
      if (dst_) Mem::narrow(dst_, s_.data(), n_);
    }

   private:
    typename Mem::Scratch s_;
    bfloat16* dst_;
    int64_t n_;
  };

  // y (N, out) = x (N, in) w^T + b.
  template <typename F>
  static void linear_forward(F f32, bfloat16* y, const bfloat16* x, const bfloat16* w, const bfloat16* b, int64_t N,
                             int64_t in, int64_t out) {
    In X(x, N * in), W(w, out * in), B(b, out);
    Out Y(y, N * out);
    f32(Y.ptr(), X.ptr(), W.ptr(), B.ptr(), N, in, out);
    Y.store();
  }
  template <typename F>
  static void linear_backward(F f32, bfloat16* dx, bfloat16* dw, bfloat16* db, const bfloat16* dy, const bfloat16* x,
                              const bfloat16* w, int64_t N, int64_t in, int64_t out) {
    In DY(dy, N * out), X(x, N * in), W(w, out * in);
    Out DX(dx, N * in), DW(dw, out * in), DB(db, out);
    f32(DX.ptr(), DW.ptr(), DB.ptr(), DY.ptr(), X.ptr(), W.ptr(), N, in, out);
    DX.store(), DW.store(), DB.store();
  }
  template <typename F>
  static void conv2d_forward(F f32, bfloat16* y, const bfloat16* x, const bfloat16* w, const bfloat16* b,
                             const ConvGeom& g, float* ws, bool relu) {
    In X(x, g.N * g.C * g.H * g.W), W(w, g.K * g.C * g.R * g.S), B(b, g.K);
    Out Y(y, g.N * g.K * g.P() * g.Q());
    f32(Y.ptr(), X.ptr(), W.ptr(), B.ptr(), g, ws, relu);
    Y.store();
  }
  template <typename F>
  static void conv2d_backward(F f32, bfloat16* dx, bfloat16* dw, bfloat16* db, const bfloat16* dy,
                              const bfloat16* x, const bfloat16* w, const ConvGeom& g, float* ws) {
    In DY(dy, g.N * g.K * g.P() * g.Q()), X(x, g.N * g.C * g.H * g.W), W(w, g.K * g.C * g.R * g.S);
    Out DX(dx, g.N * g.C * g.H * g.W), DW(dw, g.K * g.C * g.R * g.S), DB(db, g.K);
    f32(DX.ptr(), DW.ptr(), DB.ptr(), DY.ptr(), X.ptr(), W.ptr(), g, ws);
    DX.store(), DW.store(), DB.store();
  }
};

}  // namespace nimbus
