// dtype.h: the element types a tensor can hold (a neutral header: the engine's Tensor, the kernel
// list and the checkpoint files use it).
//
//   F32   IEEE float32: every op and kernel.
//   BF16  bfloat16 (the top 16 bits of a float32; kernels/common/bfloat16.h converts): storage,
//         copies between devices, casts (to(DType), round to nearest even, NaN kept) and
//         checkpoints today; the mixed-precision kernels take it as an operand type.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace nimbus {

enum class DType : uint8_t { F32 = 0, BF16 = 1 };

constexpr size_t dtype_size(DType t) { return t == DType::BF16 ? 2 : 4; }
constexpr const char* dtype_name(DType t) { return t == DType::BF16 ? "bfloat16" : "float32"; }

}  // namespace nimbus
