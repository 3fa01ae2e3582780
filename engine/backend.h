// backend.h: the kernels a device provides, as one table per device, built from one list.
//
// engine/kernel_list.def declares every kernel once; here it becomes struct Backend, one function
// pointer per entry. The CPU backend (backends/cpu/backend.cpp) is always registered; the CUDA
// backend (backends/cuda/backend.cu, nvcc or the emulator) registers itself, with its device
// runtime, in nimbus::cuda::register_cuda_backend(). Engine ops look the table up by their
// tensors' device, so an op is written once for every device:
//
//   backend(x.device(), "relu").relu_forward(y.data(), x.data(), n);
//
// `op` names the engine op: errors say which op found no backend, and a per-op profiler can hook
// the lookup (set_op_marker: the CUDA backend's event timer, backends/cuda/op_profile.h).
#pragma once
#include <cstdint>
#include <string>

#include "engine/device.h"
#include "kernels/common/geometry.h"       // ConvGeom, PoolGeom
#include "kernels/common/optim_scalars.h"  // AdamScalars, NadamScalars, SgdScalars

namespace nimbus {

struct Backend {
#define NIMBUS_KERNEL(name, ret, params, args) ret(*name) params = nullptr;
#include "engine/kernel_list.def"
#undef NIMBUS_KERNEL
};

// Fills `table` from namespace `ns`: entry `name` calls ns::name(args). A backend source writes
//   #define NIMBUS_KERNEL(name, ret, params, args) NIMBUS_BACKEND_ENTRY(table, ns, name, ret, params, args)
//   #include "engine/kernel_list.def"
// and fails to compile if `ns` lacks a kernel of the list or has it with other parameter types.
#define NIMBUS_BACKEND_ENTRY(table, ns, name, ret, params, args) \
  table.name = [] params -> ret { return ns::name args; };

// The table of device `d`; throws Error("<op>: device cuda is not available (<status>)") when
// nothing is registered for d. Calls d's op marker, if one is set, with `op`.
const Backend& backend(Device d, const char* op);
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
