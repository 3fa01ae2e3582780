// accumulate.h: in-place dst += src, the one op autograd itself needs.
// Not recorded by autograd (it is how gradients are summed).
#pragma once
#include "engine/tensor.h"

namespace nimbus {

void add_inplace(Tensor& dst, const Tensor& src);

}  // namespace nimbus
