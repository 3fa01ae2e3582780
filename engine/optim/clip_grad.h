// clip_grad.h: clip_grad_norm, PyTorch's torch.nn.utils.clip_grad_norm_(parameters, max_norm) with
// its defaults (the 2-norm; a non-finite norm is not an error), on the gradients' device and without
// a host wait, so a training step that clips is still captured and replayed as one CUDA graph.
//
//   total = sqrt(sum over every gradient g of sum_i g_i^2)       (summed in double, rounded to float32)
//   coef  = min(1, max_norm / (total + 1e-6))                     (float32, as PyTorch evaluates it)
//   g    *= coef  for every gradient                              (in place; coef = 1 leaves them exact)
//
// Call it between backward and the optimiser's step. It returns the total norm before clipping as a
// 0-d float32 tensor on the gradients' device (reading it is a host wait: keep it aside and read it
// with the losses). Parameters without a gradient are skipped, as in PyTorch; with none at all the
// norm is 0. A NaN or infinite gradient makes the norm NaN or infinite, and then every gradient NaN
// (coef NaN) or zero times itself (coef 0: infinities become NaN), as in PyTorch: the step's weights
// show it (the trainers stop naming the step when they read its norm, with its loss). One difference from
// PyTorch: the squares are summed in double, so a gradient above about 1.8e19, whose square overflows
// PyTorch's float32 sum (norm inf, every gradient zeroed), is clipped here by its true norm. max_norm is
// fixed when a step is captured (a kernel argument), as it is fixed for a run.
//
// Refused (an Error, nothing changed): max_norm not finite or not > 0; an undefined parameter; one
// given twice (its gradient would be counted and scaled twice); a gradient that is not float32 (mixed
// precision keeps float32 gradients for float32 parameters); gradients on different devices.
#pragma once
#include <vector>

#include "engine/nn/module.h"  // NamedTensors

namespace nimbus {

Tensor clip_grad_norm(const std::vector<Tensor>& params, double max_norm);
Tensor clip_grad_norm(const NamedTensors& params, double max_norm);  // Module::named_parameters()
// Did clip_grad_norm scale gradients whose norm (its return value, read back) is `norm`? The device's
// float32 arithmetic on the host: coefficient < 1, so also a norm a hair above max_norm - 1e-6.
bool clip_scales(float norm, double max_norm);

}  // namespace nimbus
