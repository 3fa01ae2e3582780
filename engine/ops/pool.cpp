// pool.cpp: max_pool2d and global_avg_pool autograd ops, forward then backward.
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
  Tensor y = Tensor::empty({g.N, g.C, g.P(), g.Q()}, x.device());
  backend(x.device(), "max_pool2d").max_pool2d_forward(y.data(), x.data(), g);
  // Backward recomputes each window's argmax from x (no index tensor to keep;
  // x is usually a ReLU output that is saved anyway).
  Tensor x_saved = x.detach();
  record("max_pool2d", {x}, y, [x_saved, g](const Tensor& dy, GradSink& sink) {
    Tensor dx = Tensor::empty(x_saved.shape(), dy.device());
    backend(dy.device(), "max_pool2d_backward").max_pool2d_backward(dx.data(), dy.data(), x_saved.data(), g);
    sink.set(0, dx);
  });
  return y;
}

Tensor global_avg_pool(const Tensor& x) {
  NIMBUS_CHECK(x.defined() && x.ndim() == 4, "global_avg_pool: input ", describe(x), " must be 4-D (N,C,H,W)");
  NIMBUS_CHECK(x.size(2) * x.size(3) > 0, "global_avg_pool: input ", x.shape().str(), " has an empty H*W plane");
  const int64_t planes = x.size(0) * x.size(1), hw = x.size(2) * x.size(3);
  Tensor y = Tensor::empty({x.size(0), x.size(1)}, x.device());
  backend(x.device(), "global_avg_pool").global_avg_pool_forward(y.data(), x.data(), planes, hw);
  const Shape xs = x.shape();
  record("global_avg_pool", {x}, y, [xs, planes, hw](const Tensor& dy, GradSink& sink) {
    Tensor dx = Tensor::empty(xs, dy.device());
    backend(dy.device(), "global_avg_pool_backward").global_avg_pool_backward(dx.data(), dy.data(), planes, hw);
    sink.set(0, dx);
  });
  return y;
}

}  // namespace nimbus
