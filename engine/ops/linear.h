// linear.h: fully connected layer, PyTorch's layout.
//
//   x: (N, in)   w: (out, in)   b: (out) or undefined   ->   y = x w^T + b: (N, out)
#pragma once
#include "engine/tensor.h"

namespace nimbus {

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);

}  // namespace nimbus
