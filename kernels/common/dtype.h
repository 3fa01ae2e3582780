// dtype.h: the element types a tensor can hold (a neutral header: the engine's Tensor, the kernel
// list and the checkpoint files use it).
//
//   F32   IEEE float32: every op and kernel.
//   BF16  bfloat16 (the top 16 bits of a float32; kernels/common/bfloat16.h: the element type
//         nimbus::bfloat16): storage, copies between devices, casts (to(DType), round to nearest
//         even, NaN kept), checkpoints, and the kernels whose engine/kernel_list.def entry lists it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/common/bfloat16.h"

namespace nimbus {

enum class DType : uint8_t { F32 = 0, BF16 = 1 };

constexpr size_t dtype_size(DType t) { return t == DType::BF16 ? 2 : 4; }
constexpr const char* dtype_name(DType t) { return t == DType::BF16 ? "bfloat16" : "float32"; }

// The DType of a kernel's element type: dtype_of<float>() == F32, dtype_of<bfloat16>() == BF16.
template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<bfloat16>() { return DType::BF16; }

// Calls f(float{}) or f(bfloat16{}) for t: engine ops written once for both dtypes,
//   visit_dtype(x.dtype(), [&](auto tag) { using T = decltype(tag); ... backend<T>(...) ... });
template <typename F> decltype(auto) visit_dtype(DType t, F&& f) {
  if (t == DType::BF16) return f(bfloat16{});
  return f(float{});
}

}  // namespace nimbus
