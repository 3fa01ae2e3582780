// augment.h: the training augmentation's flips and quarter turns, applied to a batch on its device
// (data/augment.h draws them; with the draw done on the host and the pixels moved here, the host
// sends the tile as read and the GPU does the permutation).
//
//   x: (N, C, S, S) float32, square   codes: (N) float32 on x's device, codes[n] = 4 flip + rot
//   y[n] = data::flip_rotate(x[n], flip, rot)   bit for bit (kernels/common/dihedral.h)
// A code that is not an integer in 0..11 makes that sample NaN (the device cannot throw; the training
// loop's finite-loss check then stops the run). Data, not parameters: x must not require a gradient.
#pragma once
#include "engine/tensor.h"

namespace nimbus {

Tensor flip_rotate(const Tensor& x, const Tensor& codes);

}  // namespace nimbus
