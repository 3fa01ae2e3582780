// arith.h: elementwise arithmetic (autograd ops). Shapes must match exactly:
// nimbus does no broadcasting, so a shape mistake is an error, not a surprise.
//
//   add(a, b):          a + b                 (residual connections)
//   mul_scalar(x, s):   s * x                 (DSen2-CR's residual scaling 0.1)
//   add_relu(a, b):     relu(a + b)           (a ResNet block's output), one pass
//   add_scaled(a, b, s): a + s * b            (DSen2-CR's block: x + 0.1 * F(x),
//                                              torch.add(a, b, alpha=s)), one pass
#pragma once
#include "engine/tensor.h"

namespace nimbus {

Tensor add(const Tensor& a, const Tensor& b);
Tensor mul_scalar(const Tensor& x, float s);
Tensor add_relu(const Tensor& a, const Tensor& b);
Tensor add_scaled(const Tensor& a, const Tensor& b, float s);

}  // namespace nimbus
