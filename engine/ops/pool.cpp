// pool.cpp: max_pool2d and global_avg_pool autograd ops, forward then backward, float32 or bfloat16.
#include "engine/ops/pool.h"

#include <cstdint>

#include "engine/autograd.h"
#include "engine/backend.h"

namespace nimbus {

Tensor max_pool2d(const Tensor& x, int kernel, int stride, int padding) {
  NIMBUS_CHECK(x.defined() && x.ndim() == 4, "max_pool2d: input ", describe(x), " must be 4-D (N,C,H,W)");
  NIMBUS_CHECK(kernel >= 1 && stride >= 1 && padding >= 0, "max_pool2d: kernel ", kernel, " and stride ", stride,
               " must be >= 1, padding ", padding, " >= 0");
  NIMBUS_CHECK(2 * padding <= kernel, "max_pool2d: padding ", padding, " must be at most half the kernel ", kernel);
  NIMBUS_CHECK(kernel <= x.size(2) + 2 * padding && kernel <= x.size(3) + 2 * padding, "max_pool2d: kernel ", kernel,
               "x", kernel, " is larger than input ", x.shape().str(), " with padding ", padding);
  NIMBUS_CHECK(x.size(2) * x.size(3) <= INT32_MAX, "max_pool2d: planes of ", x.size(2), "x", x.size(3),
               " are too large (the backward stores argmax positions as 32-bit indices)");
  const PoolGeom g{x.size(0), x.size(1), x.size(2), x.size(3), kernel, stride, padding};
  Tensor y = Tensor::empty({g.N, g.C, g.P(), g.Q()}, x.device(), x.dtype());
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    backend<T>(x.device(), "max_pool2d").max_pool2d_forward(y.data_as<T>(), x.data_as<T>(), g);
  });
  // Backward recomputes each window's argmax from x (no index tensor to keep;
  // x is usually a ReLU output that is saved anyway).
  Tensor x_saved = x.detach();
  record("max_pool2d", {x}, y, {x_saved}, [x_saved, g](const Tensor& dy_in, GradSink& sink) {
    const Tensor dy = dy_in.to(x_saved.dtype());
    Tensor dx = Tensor::empty(x_saved.shape(), dy.device(), dy.dtype());
    visit_dtype(dy.dtype(), [&](auto tag) {
      using T = decltype(tag);
      backend<T>(dy.device(), "max_pool2d_backward")
          .max_pool2d_backward(dx.data_as<T>(), dy.data_as<T>(), x_saved.data_as<T>(), g);
    });
    sink.set(0, dx);
  });
  return y;
}

Tensor global_avg_pool(const Tensor& x) {
  NIMBUS_CHECK(x.defined() && x.ndim() == 4, "global_avg_pool: input ", describe(x), " must be 4-D (N,C,H,W)");
  NIMBUS_CHECK(x.size(2) * x.size(3) > 0, "global_avg_pool: input ", x.shape().str(), " has an empty H*W plane");
  const int64_t planes = x.size(0) * x.size(1), hw = x.size(2) * x.size(3);
  Tensor y = Tensor::empty({x.size(0), x.size(1)}, x.device(), x.dtype());
  visit_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    backend<T>(x.device(), "global_avg_pool").global_avg_pool_forward(y.data_as<T>(), x.data_as<T>(), planes, hw);
  });
  const Shape xs = x.shape();
  const DType dt = x.dtype();
  record("global_avg_pool", {x}, y, [xs, dt, planes, hw](const Tensor& dy_in, GradSink& sink) {
    const Tensor dy = dy_in.to(dt);
    Tensor dx = Tensor::empty(xs, dy.device(), dt);
    visit_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      backend<T>(dy.device(), "global_avg_pool_backward")
          .global_avg_pool_backward(dx.data_as<T>(), dy.data_as<T>(), planes, hw);
    });
    sink.set(0, dx);
  });
  return y;
}

}  // namespace nimbus
