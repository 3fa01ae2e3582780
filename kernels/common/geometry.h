// geometry.h: the shapes of a convolution and of a pooling window, shared by every backend's kernels
// and the engine (a neutral header: kernels include nothing from engine/).
//
//   conv:  x (N, C, H, W), w (K, C, R, S) -> y (N, K, P, Q)
//   pool:  x (N, C, H, W), kernel x kernel windows -> y (N, C, P, Q)
//   P = (H + 2*pad - R) / stride + 1, Q likewise with W and S.
#pragma once
#include <cstdint>

namespace nimbus {

struct ConvGeom {
  int64_t N, C, H, W;  // input
  int64_t K, R, S;     // weight (K, C, R, S)
  int64_t stride = 1, pad = 0;
  int64_t P() const { return (H + 2 * pad - R) / stride + 1; }
  int64_t Q() const { return (W + 2 * pad - S) / stride + 1; }
  bool pointwise() const { return R == 1 && S == 1 && stride == 1 && pad == 0; }
};

struct PoolGeom {
  int64_t N, C, H, W;
  int64_t kernel, stride, pad;
  int64_t P() const { return (H + 2 * pad - kernel) / stride + 1; }
  int64_t Q() const { return (W + 2 * pad - kernel) / stride + 1; }
};

// The kernels' own namespaces name them too.
namespace cpu {
using nimbus::ConvGeom;
using nimbus::PoolGeom;
}  // namespace cpu
namespace cuda {
using nimbus::ConvGeom;
using nimbus::PoolGeom;
}  // namespace cuda

}  // namespace nimbus
