// cast.cpp: the recorded dtype cast and its backward (the gradient cast back).
#include "engine/ops/cast.h"

#include "engine/autograd.h"

namespace nimbus {

Tensor cast(const Tensor& x, DType dtype) {
  NIMBUS_CHECK(x.defined(), "cast: input must be defined");
  if (x.dtype() == dtype) return x;
  Tensor y = x.to(dtype);
  const DType from = x.dtype();
  record("cast", {x}, y, [from](const Tensor& dy, GradSink& sink) { sink.set(0, dy.to(from)); });
  return y;
}

}  // namespace nimbus
