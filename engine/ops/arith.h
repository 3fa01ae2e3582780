// arith.h: elementwise arithmetic (autograd ops). Shapes must match exactly:
// nimbus does no broadcasting, so a shape mistake is an error, not a surprise.
//
//   add(a, b):          a + b                 (residual connections)
//   mul_scalar(x, s):   s * x                 (DSen2-CR's residual scaling 0.1)
#pragma once
#include "engine/tensor.h"

namespace nimbus {

Tensor add(const Tensor& a, const Tensor& b);
Tensor mul_scalar(const Tensor& x, float s);

}  // namespace nimbus
