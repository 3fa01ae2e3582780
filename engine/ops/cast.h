// cast.h: cast(x, dtype), the recorded cast between float32 and bfloat16: the forward is
// x.to(dtype) (round to nearest even to bfloat16; exact back), the backward casts the gradient back
// to x's dtype, so a float32 parameter used in bfloat16 (autocast.h) gets a float32 gradient.
// Same tensor when x already has the dtype.
#pragma once
#include "engine/tensor.h"

namespace nimbus {

Tensor cast(const Tensor& x, DType dtype);

}  // namespace nimbus
