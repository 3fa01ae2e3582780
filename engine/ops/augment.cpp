// augment.cpp: flip_rotate on the tensor's backend (see augment.h). No backward: it moves data.
#include "engine/ops/augment.h"

#include "engine/autograd.h"
#include "engine/backend.h"

namespace nimbus {

Tensor flip_rotate(const Tensor& x, const Tensor& codes) {
  NIMBUS_CHECK(x.ndim() == 4 && x.size(2) == x.size(3), "flip_rotate: input must be square (N,C,S,S), got ",
               x.shape().str());
  NIMBUS_CHECK(x.dtype() == DType::F32 && codes.dtype() == DType::F32, "flip_rotate: float32 input and codes, got ",
               describe(x), " and ", describe(codes));
  NIMBUS_CHECK(codes.shape() == Shape{x.size(0)}, "flip_rotate: ", x.size(0), " images but codes ",
               codes.shape().str());
  NIMBUS_CHECK(codes.device() == x.device(), "flip_rotate: codes ", describe(codes), " not on the device of ",
               describe(x));
  NIMBUS_CHECK(!any_requires_grad({&x}), "flip_rotate: augmentation applies to data; ", describe(x),
               " requires a gradient");
  Tensor y = Tensor::empty(x.shape(), x.device());
  backend(x.device(), "flip_rotate").flip_rotate(y.data(), x.data(), codes.data(), x.size(0), x.size(1), x.size(2));
  return y;
}

}  // namespace nimbus
