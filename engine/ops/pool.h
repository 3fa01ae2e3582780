// pool.h: pooling.
//
//   max_pool2d:      x (N,C,H,W) -> (N,C,P,Q), P = (H + 2*padding - kernel)/stride + 1;
//                    padded cells never win (as PyTorch: padding is -inf).
//                    ResNet uses kernel 3, stride 2, padding 1.
//   global_avg_pool: x (N,C,H,W) -> (N,C), the mean over H*W
//                    (PyTorch: adaptive_avg_pool2d(x, 1) then flatten(1)).
// Both take float32 or bfloat16 (y and the gradient in x's dtype; bfloat16 sums run in float).
#pragma once
#include "engine/tensor.h"

namespace nimbus {

Tensor max_pool2d(const Tensor& x, int kernel, int stride, int padding = 0);
Tensor global_avg_pool(const Tensor& x);

}  // namespace nimbus
