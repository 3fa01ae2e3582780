/* hopper.cu: the host side of the Hopper instructions (kernels/cuda/hopper.h): encode_tensor_map,
 * cuTensorMapEncodeTiled under real CUDA (reached through cudaGetDriverEntryPointByVersion, so nothing
 * links libcuda), the emulator's model otherwise. Both first apply the driver's documented rules
 * (tensor_map.h), so a refused map gets the same message in both worlds.
 */
#include "kernels/cuda/tensor_map.h"

#include "kernels/cuda/compat.h"
#ifndef __CUDACC__
#include "kernels/emu/hopper.h"
#endif

namespace nimbus::cuda {

void encode_tensor_map(CUtensorMap* map, const TensorMapDesc& d) {
  const std::string problem = tensor_map_problem(d, map);
  NIMBUS_CHECK(problem.empty(), "encode_tensor_map: ", problem);
#ifdef __CUDACC__
  using Encode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                              const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                              CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  static const Encode encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t e =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found);
    NIMBUS_CHECK(e == cudaSuccess && found == cudaDriverEntryPointSuccess && fn,
                 "encode_tensor_map: the driver has no cuTensorMapEncodeTiled (", cudaGetErrorString(e), ")");
    return reinterpret_cast<Encode>(fn);
  }();
  cuuint64_t dims[5], strides[4];
  cuuint32_t box[5], es[5];
  for (int i = 0; i < d.rank; ++i) {
    dims[i] = d.dims[i], box[i] = d.box[i], es[i] = d.element_strides[i];
    if (i > 0) strides[i - 1] = d.strides[i - 1];
  }
  const CUresult r = encode(map, CUtensorMapDataType(d.type), cuuint32_t(d.rank), const_cast<void*>(d.global), dims,
                            strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE, CUtensorMapSwizzle(d.swizzle),
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CUtensorMapFloatOOBfill(d.oob_fill));
  NIMBUS_CHECK(r == CUDA_SUCCESS, "encode_tensor_map: cuTensorMapEncodeTiled returned ", int(r),
               " for a map that the documented rules (and the emulator) accept");
#else
  ::nimbus::emu::encode_tensor_map(map, int(d.type), tma_type_bytes(d.type), d.rank, d.global, d.dims, d.strides,
                                   d.box, d.element_strides, int(d.swizzle), int(d.oob_fill));
#endif
}

}  // namespace nimbus::cuda
