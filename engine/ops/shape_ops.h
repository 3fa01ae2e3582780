// shape_ops.h: ops that only change how the data is viewed or laid out.
//
//   reshape(x, s):        same data, shape s (numel must match); recorded, so
//                         the gradient is reshaped back.
//   flatten(x, start):    (N, C, H, W) -> (N, C*H*W) for start = 1.
//   concat_channels(xs):  along dim 1: (N, C_i, H, W)... -> (N, sum C_i, H, W);
//                         DSen2-CR joins S2 (13 ch) and S1 (2 ch) this way.
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace nimbus {

Tensor reshape(const Tensor& x, const Shape& shape);
Tensor flatten(const Tensor& x, int start_dim = 1);
Tensor concat_channels(const std::vector<Tensor>& xs);

}  // namespace nimbus
