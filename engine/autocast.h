/* autocast.h: mixed precision by op, for bfloat16 (as PyTorch's torch.autocast(dtype=bfloat16)).
 *
 * Inside an AutocastScope(DType::BF16) on this thread:
 *   conv2d, conv2d_relu, linear   cast float32 inputs, weights and biases to bfloat16 and compute in
 *                                 bfloat16 (fp32 accumulation on the tensor cores; the CPU widens,
 *                                 computes in float and rounds once); their outputs are bfloat16.
 *                                 The casts are recorded ops (ops/cast.h): gradients flow back to the
 *                                 float32 parameters in float32, so the optimiser keeps fp32 master
 *                                 weights and fp32 state.
 *   add, add_relu, add_scaled     in their inputs' dtype; when the two differ, in float32.
 *   batch norm, ReLU, pooling     in their input's dtype (batch norm's statistics and parameters
 *                                 stay float32 in every dtype).
 *   losses, softmax               read bfloat16 inputs as float32 (a recorded cast) and compute in
 *                                 float32.
 * Outside a scope (or in AutocastScope(DType::F32)) nothing is cast: every op takes one dtype and
 * refuses a mixture by name. Scopes nest; each restores the previous policy on exit.
 * The policy is the engine's; whether float32 convolutions use TF32 on CUDA is the backend's math
 * mode (backends/cuda/backend.h), which the apps' --precision sets alongside (apps/common/precision.h).
 */
#pragma once
#include <utility>

#include "engine/tensor.h"

namespace nimbus {

class AutocastScope {
 public:
  explicit AutocastScope(DType compute);  // F32: no casting; BF16: the policy above
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  DType saved_;
};

// The compute dtype of the current scope on this thread (F32 outside any scope).
DType autocast_dtype();
// Sets this thread's compute dtype outside any scope: an app's whole run (apps/common/device.h
// --precision bf16). Scopes opened later still nest and restore it.
void set_autocast_dtype(DType compute);

// The policy's casts (recorded; undefined tensors pass through):
Tensor autocast_matmul(const Tensor& t);  // conv/linear operands: bfloat16 under a BF16 scope
Tensor autocast_float(const Tensor& t);   // loss inputs: float32 under a BF16 scope
// Elementwise pairs: unchanged when the dtypes agree; both float32 when they differ under a BF16
// scope; outside one, an Error naming `op` and both tensors.
std::pair<Tensor, Tensor> autocast_pair(const char* op, const Tensor& a, const Tensor& b);

}  // namespace nimbus
