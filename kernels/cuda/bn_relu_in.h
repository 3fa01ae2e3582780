/* bn_relu_in.h: a batch norm + ReLU that a convolution applies to its input channels as it reads them
 * (the prologue; bn_apply.cuh has the formula). Plain pointers, so host code can fill it: per input
 * channel c, float32 on the device, weight and bias may be null (1 and 0). mean null: no prologue.
 */
#pragma once

namespace nimbus::cuda {

struct BnReluIn {
  const float* mean = nullptr;
  const float* invstd = nullptr;
  const float* weight = nullptr;
  const float* bias = nullptr;
};

}  // namespace nimbus::cuda
