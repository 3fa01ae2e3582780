// activation.h: pointwise nonlinearities (autograd ops).
#pragma once
#include "engine/tensor.h"

namespace nimbus {

// y = max(x, 0); any shape.
Tensor relu(const Tensor& x);

}  // namespace nimbus
