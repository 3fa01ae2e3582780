# bench/cuda/gpu.cmake: the numbered-kernel benchmarks built by nvcc against the real backend:
# gpu_bench_gemm and gpu_bench_conv2d in <build>/bin, with cuBLAS/cuDNN references in fp32, TF32 and
# bf16 (bench/cuda/references.cuh). Their `--case NAME` mode is the kernel phase of
# scripts/gpu_check.sh (docs/cuda-backend.md, "Kernel cases"). Included at the end of
# kernels/cuda/real/CMakeLists.txt (-DNIMBUS_CUDA_BACKEND=ON), so nimbus_cuda and the cuDNN
# variables exist here.
# bench/cuda/CMakeLists.txt marks gemm.cu and conv2d.cu as C++ (the emulator build); that is a
# per-directory property, so to be independent of it each program compiles a generated one-line
# wrapper .cu that #includes its source.
# One numbered-kernel program: bench/cuda/<name>.cu built by nvcc as gpu_bench_<name> in <build>/bin.
function(nimbus_gpu_bench name)
  set(wrapper ${CMAKE_BINARY_DIR}/bench/cuda-gpu/gpu_bench_${name}.cu)
  file(CONFIGURE OUTPUT ${wrapper} CONTENT "#include \"bench/cuda/${name}.cu\"\n")
  add_executable(gpu_bench_${name} ${wrapper})
  set_target_properties(gpu_bench_${name} PROPERTIES CUDA_ARCHITECTURES "${NIMBUS_CUDA_ARCHS}" CUDA_STANDARD 20
                        RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bin)
  target_compile_options(gpu_bench_${name} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:SHELL:-Werror all-warnings -Xcompiler -Wall,-Wextra,-Wno-unused-parameter,-Werror>)
  target_include_directories(gpu_bench_${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(gpu_bench_${name} PRIVATE nimbus_cuda)
endfunction()

# gpu_bench_conformance (bench/cuda/conformance.cu): the tensor-core instructions bit for bit against
# the emulator's hashes (bench/cuda/conformance_expected.txt); needs neither cuBLAS nor cuDNN, so it
# is built before that check. Its Hopper lines (TMA, wgmma) need sm_90a, which NIMBUS_CUDA_ARCHS has
# in place of 90 (kernels/cuda/real/CMakeLists.txt); they are skipped on a device that is not compute
# capability 9.0.
nimbus_gpu_bench(conformance)

# gpu_bench_memory_bound (bench/cuda/memory_bound.cu): the backend's memory-bound kernels and the
# optimisers' step against a device-to-device copy; no library needed, the models for their parameters.
nimbus_gpu_bench(memory_bound)
target_link_libraries(gpu_bench_memory_bound PRIVATE nimbus_models)

if(NOT (TARGET CUDA::cublas AND NIMBUS_CUDNN_LIBRARY AND NIMBUS_CUDNN_INCLUDE_DIR))
  message(STATUS "nimbus: no cuBLAS/cuDNN: gpu_bench_gemm and gpu_bench_conv2d are not built")
  return()
endif()

foreach(name gemm conv2d)
  nimbus_gpu_bench(${name})
  target_compile_definitions(gpu_bench_${name} PRIVATE NIMBUS_BENCH_CUBLAS NIMBUS_BENCH_CUDNN)
  target_include_directories(gpu_bench_${name} PRIVATE ${NIMBUS_CUDNN_INCLUDE_DIR})
  target_link_libraries(gpu_bench_${name} PRIVATE CUDA::cublas ${NIMBUS_CUDNN_LIBRARY})
endforeach()

# gpu_bench_gemm's versions 8 and 9 and gpu_bench_conv2d's versions 6-8 (wgmma) need sm_90a: a list
# without it (e.g. NIMBUS_CUDA_ARCHS=80) gets it added. On other devices the programs skip those
# versions at run time.
set(hopper_archs ${NIMBUS_CUDA_ARCHS})
if(NOT "90a" IN_LIST hopper_archs)
  list(APPEND hopper_archs 90a)
endif()
set_target_properties(gpu_bench_gemm gpu_bench_conv2d PROPERTIES CUDA_ARCHITECTURES "${hopper_archs}")
