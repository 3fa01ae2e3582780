/* tensor_map.h: host side of the Hopper bulk tensor copies (TMA): the description of a tiled tensor
 * map, the driver's validation rules for it, and encode_tensor_map(), the one function that fills a
 * CUtensorMap: cuTensorMapEncodeTiled (through cudaGetDriverEntryPointByVersion, so no -lcuda) under
 * real CUDA, the emulator's model (kernels/emu/hopper.cpp) otherwise. Plain C++, both worlds.
 *
 * The map is 128 opaque bytes, 64-byte aligned; a kernel takes it as a `const __grid_constant__
 * CUtensorMap` parameter and hands its address to tma_load_*d (kernels/cuda/hopper.h).
 *
 *   dims, box, element_strides: innermost (contiguous) dimension first, rank entries
 *   strides: bytes between consecutive indices of dims 1..rank-1 (rank - 1 entries)
 *
 * Rules (cuda.h, cuTensorMapEncodeTiled, interleave NONE): rank 1..5; the global address 16-byte
 * aligned; every dim in [1, 2^32]; every stride a multiple of 16 and below 2^40; every box dim in
 * [1, 256] with box[0] * element size a multiple of 16 bytes; element strides in [1, 8] (dim 0's is
 * ignored by the hardware); with a swizzle, box[0] * element size at most the span (32, 64, 128
 * bytes); NaN-request OOB fill only for floating-point types. The packed 4/6-bit types and
 * interleaved layouts are not offered.
 */
#pragma once
#include <cstdint>
#include <string>

#include "kernels/common/error.h"
#if defined(__CUDACC__) || defined(NIMBUS_CUDA_RUNTIME)
#include <cuda.h>  // CUtensorMap (types only: the entry point comes through the runtime)
#else
#include "kernels/emu/runtime.h"  // the emulator's CUtensorMap
#endif

namespace nimbus::cuda {

// CUtensorMapDataType's values (the packed 4/6-bit types excluded).
enum class TmaType : uint32_t { U8 = 0, U16, U32, I32, U64, I64, F16, F32, F64, BF16, F32_FTZ, TF32, TF32_FTZ };
// CUtensorMapSwizzle's values (the 128B_ATOM_* variants of newer GPUs excluded).
enum class TmaSwizzle : uint32_t { None = 0, B32 = 1, B64 = 2, B128 = 3 };
// CUtensorMapFloatOOBfill's values.
enum class TmaOobFill : uint32_t { Zero = 0, NanRequestZeroFma = 1 };

struct TensorMapDesc {
  TmaType type = TmaType::F32;
  int rank = 2;
  const void* global = nullptr;
  uint64_t dims[5] = {1, 1, 1, 1, 1};
  uint64_t strides[4] = {0, 0, 0, 0};
  uint32_t box[5] = {1, 1, 1, 1, 1};
  uint32_t element_strides[5] = {1, 1, 1, 1, 1};
  TmaSwizzle swizzle = TmaSwizzle::None;
  TmaOobFill oob_fill = TmaOobFill::Zero;
};

inline int tma_type_bytes(TmaType t) {
  switch (t) {
    case TmaType::U8: return 1;
    case TmaType::U16: case TmaType::F16: case TmaType::BF16: return 2;
    case TmaType::U64: case TmaType::I64: case TmaType::F64: return 8;
    default: return 4;
  }
}
inline bool tma_type_is_float(TmaType t) {
  return t == TmaType::F16 || t == TmaType::F32 || t == TmaType::F64 || t == TmaType::BF16 || t == TmaType::F32_FTZ ||
         t == TmaType::TF32 || t == TmaType::TF32_FTZ;
}

// "" when cuTensorMapEncodeTiled accepts d for a map at `map`, else the first rule it breaks.
inline std::string tensor_map_problem(const TensorMapDesc& d, const void* map) {
  const uint32_t type = uint32_t(d.type), sw = uint32_t(d.swizzle), oob = uint32_t(d.oob_fill);
  if (reinterpret_cast<uintptr_t>(map) % 64) return "the CUtensorMap is not 64-byte aligned";
  if (type > uint32_t(TmaType::TF32_FTZ)) return str("data type ", type, " is not one of CUtensorMapDataType's");
  if (d.rank < 1 || d.rank > 5) return str("rank ", d.rank, " is not in [1, 5]");
  if (!d.global || reinterpret_cast<uintptr_t>(d.global) % 16)
    return str("global address ", d.global, " is not 16-byte aligned (or null)");
  const uint64_t E = uint64_t(tma_type_bytes(d.type));
  for (int i = 0; i < d.rank; ++i) {
    if (d.dims[i] < 1 || d.dims[i] > (uint64_t(1) << 32)) return str("dims[", i, "] = ", d.dims[i], " is not in [1, 2^32]");
    if (d.box[i] < 1 || d.box[i] > 256) return str("box[", i, "] = ", d.box[i], " is not in [1, 256]");
    if (d.element_strides[i] < 1 || d.element_strides[i] > 8)
      return str("element_strides[", i, "] = ", d.element_strides[i], " is not in [1, 8]");
    if (i > 0 && (d.strides[i - 1] % 16 || d.strides[i - 1] >= (uint64_t(1) << 40)))
      return str("strides[", i - 1, "] = ", d.strides[i - 1], " bytes is not a multiple of 16 below 2^40");
  }
  if (d.box[0] * E % 16) return str("the box's inner dimension, ", d.box[0] * E, " bytes, is not a multiple of 16");
  if (sw > 3) return str("swizzle ", sw, " is not NONE, 32B, 64B or 128B");
  // The driver's documentation asks 16 bytes of the base; the Programming Guide's TMA swizzle table asks
  // 128 of a swizzled map's (hardware behaviour otherwise undocumented): held to the stricter rule.
  if (sw && reinterpret_cast<uintptr_t>(d.global) % 128)
    return str("global address ", d.global, " is not 128-byte aligned, which a swizzled map needs");
  if (sw && d.box[0] * E > (16u << sw))
    return str("the box's inner dimension, ", d.box[0] * E, " bytes, exceeds the ", 16u << sw, "-byte swizzle span");
  if (oob > 1) return str("OOB fill ", oob, " is not NONE or NAN_REQUEST_ZERO_FMA");
  if (oob && !tma_type_is_float(d.type)) return "NaN-request OOB fill needs a floating-point data type";
  return "";
}

// Fills *map for d: throws nimbus::Error naming the broken rule (tensor_map_problem), or, under real
// CUDA, the driver's error when it refuses what the rules accept (the emulator would then disagree
// with the driver: worth a bug report). L2 promotion is 256 bytes (CUTLASS's default), interleave NONE.
void encode_tensor_map(CUtensorMap* map, const TensorMapDesc& d);

}  // namespace nimbus::cuda
