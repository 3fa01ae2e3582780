// loss.h: losses; each returns a 0-d tensor (Shape{}, one element).
//
//   cross_entropy(logits (N,K), target (N)): mean over the batch of
//       -log softmax(logits)[n, target[n]]; target holds class indices as floats.
//   softmax(logits (N,K)) -> (N,K): probabilities (not recorded for autograd).
//   l1_loss(p, t):  mean |p - t| over all elements.     mse_loss: mean (p - t)^2.
//   carl_loss(P, T, I, M, lambda): the cloud-adaptive regularised loss of DSen2-CR
//       (shared/reference/dsen2cr-sen12mscr.md section 2), one fused op:
//       mean over all N*C*H*W of  M|P-T| + (1-M)|P-I|  +  lambda * mean |P-T|.
//       P, T, I: (N,C,H,W); M: (N,1,H,W), 1 = cloud or shadow, broadcast over C.
//       Gradient flows to P only.
#pragma once
#include "engine/tensor.h"

namespace nimbus {

Tensor cross_entropy(const Tensor& logits, const Tensor& target);
Tensor softmax(const Tensor& logits);
Tensor l1_loss(const Tensor& pred, const Tensor& target);
Tensor mse_loss(const Tensor& pred, const Tensor& target);
Tensor carl_loss(const Tensor& pred, const Tensor& target, const Tensor& cloudy_input, const Tensor& mask,
                 float lambda = 1.f);

}  // namespace nimbus
