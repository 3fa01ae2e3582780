// backend.h: the kernels a device provides, as tables per device and element type, built from one list.
//
// engine/kernel_list.def declares every kernel once, with the element types it exists for; here it
// becomes Kernels<float> and Kernels<bfloat16>, one function pointer per entry that has the type
// (an F32-only kernel is no member of Kernels<bfloat16>: calling it in bfloat16 does not compile).
// struct Backend holds a device's two tables. The CPU backend (backends/cpu/backend.cpp) is always
// registered; the CUDA backend (backends/cuda/backend.cu, nvcc or the emulator) registers itself,
// with its device runtime, in nimbus::cuda::register_cuda_backend(). Engine ops look the table up
// by their tensors' device and dtype, so an op is written once for every device:
//
//   backend(x.device(), "relu").relu_forward(y.data(), x.data(), n);               // float32
//   backend<bfloat16>(x.device(), "relu").relu_forward(y.data_as<bfloat16>(), ...);  // bfloat16
//
// `op` names the engine op: errors say which op found no backend, and a per-op profiler can hook
// the lookup (set_op_marker: the CUDA backend's event timer, backends/cuda/op_profile.h).
#pragma once
#include <cstdint>
#include <string>

#include "engine/device.h"
#include "kernels/common/bfloat16.h"       // bfloat16
#include "kernels/common/geometry.h"       // ConvGeom, PoolGeom
#include "kernels/common/grad_clip.h"     // GradBatch
#include "kernels/common/optim_scalars.h"  // AdamScalars, NadamScalars, SgdScalars

// Table members: an entry is a member of Kernels<float> always, of Kernels<bfloat16> when its
// dtypes are F32_BF16.
#define NIMBUS_KERNEL_MEMBER(name, ret, params) ret(*name) params = nullptr;
#define NIMBUS_IN_FLOAT_F32(name, ret, params) NIMBUS_KERNEL_MEMBER(name, ret, params)
#define NIMBUS_IN_FLOAT_F32_BF16(name, ret, params) NIMBUS_KERNEL_MEMBER(name, ret, params)
#define NIMBUS_IN_BFLOAT16_F32(name, ret, params)
#define NIMBUS_IN_BFLOAT16_F32_BF16(name, ret, params) NIMBUS_KERNEL_MEMBER(name, ret, params)

namespace nimbus {

template <typename T> struct Kernels;
template <> struct Kernels<float> {
  using T = float;
#define NIMBUS_KERNEL(name, dtypes, ret, params, args) NIMBUS_IN_FLOAT_##dtypes(name, ret, params)
#include "engine/kernel_list.def"
#undef NIMBUS_KERNEL
};
template <> struct Kernels<bfloat16> {
  using T = bfloat16;
#define NIMBUS_KERNEL(name, dtypes, ret, params, args) NIMBUS_IN_BFLOAT16_##dtypes(name, ret, params)
#include "engine/kernel_list.def"
#undef NIMBUS_KERNEL
};

struct Backend {
  Kernels<float> f32;
  Kernels<bfloat16> bf16;
  template <typename T> const Kernels<T>& of() const;
};
template <> inline const Kernels<float>& Backend::of<float>() const { return f32; }
template <> inline const Kernels<bfloat16>& Backend::of<bfloat16>() const { return bf16; }

// Fills `table` (a Backend) from namespace `ns`: entry `name` calls ns::name(args), in each element
// type the entry lists. A backend source writes
//   #define NIMBUS_KERNEL(name, dtypes, ret, params, args) NIMBUS_BACKEND_ENTRY(table, ns, name, dtypes, ...)
//   #include "engine/kernel_list.def"
// and fails to compile if `ns` lacks a kernel of the list or has it with other parameter types.
#define NIMBUS_BACKEND_ENTRY(table, ns, name, dtypes, ret, params, args) \
  NIMBUS_ENTRY_##dtypes(table, ns, name, ret, params, args)
#define NIMBUS_ENTRY_IN(table, field, type, ns, name, ret, params, args) \
  {                                                                        \
    using T = type;                                                        \
    table.field.name = [] params -> ret { return ns::name args; };         \
  }
#define NIMBUS_ENTRY_F32(table, ns, name, ret, params, args) \
  table.f32.name = [] params -> ret { return ns::name args; };  // float written out: no T
#define NIMBUS_ENTRY_F32_BF16(table, ns, name, ret, params, args)  \
  NIMBUS_ENTRY_IN(table, f32, float, ns, name, ret, params, args) \
  NIMBUS_ENTRY_IN(table, bf16, ::nimbus::bfloat16, ns, name, ret, params, args)

// The tables of device `d`; throws Error("<op>: device cuda is not available (<status>)") when
// nothing is registered for d. Calls d's op marker, if one is set, with `op`.
const Backend& backend_tables(Device d, const char* op);
// The table of element type T (float unless said): what engine ops call.
template <typename T = float> const Kernels<T>& backend(Device d, const char* op) {
  return backend_tables(d, op).template of<T>();
}
void set_backend(Device d, const Backend& b);

// Called with the op's name at every backend(d, op) lookup; nullptr: none. `op` is a string literal.
using OpMarker = void (*)(const char* op);
void set_op_marker(Device d, OpMarker marker);

// One sentence on the CUDA backend for --device handling: what was found, or why it is unusable
// ("no CUDA device: cudaGetDeviceCount returned ... (driver ..., runtime ...)"). Set by the
// backend's registration; before any registration it says this program has no CUDA backend.
std::string cuda_status();
void set_cuda_status(const std::string& status);

}  // namespace nimbus
