// activation.h: pointwise nonlinearities (autograd ops).
#pragma once
#include "engine/tensor.h"

namespace nimbus {

// y = max(x, 0); any shape, float32.
Tensor relu(const Tensor& x);

// The formula-defined ops of kernels/common/unary_ops.def (gelu, ...): y = f(x), any shape,
// float32 or bfloat16 (y and the gradient have x's dtype).
#define NIMBUS_UNARY(name, f, df) Tensor name(const Tensor& x);
#include "kernels/common/unary_ops.def"
#undef NIMBUS_UNARY

}  // namespace nimbus
