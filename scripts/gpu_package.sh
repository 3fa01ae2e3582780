#!/usr/bin/env bash
# gpu_package.sh [--check]: build every GPU target here and pack it for a bare GPU machine.
#
# Why: the GPU machines we borrow (docs/cuda-backend.md, "On a GPU machine") have nvcc, a driver and
# cuBLAS/cuDNN only as Python wheels, but none of our Debian libraries (OpenBLAS, libtiff,
# libgeotiff, libpng) and no internet. So the binaries are built here, with the same nvcc 13, for
# sm_90 (the H200; sm_80 too would double every program's device code: the tensor-core kernels'
# configurations are many, and the device tool carries 64 MiB in all) with a portable x86-64-v3 host ISA (AVX2; -Wno-psabi: simd.h's 16-float vectors then pass in two registers, inside one file), and carried with every shared library they
# need that the device image does not have. cudart is linked statically; cuBLAS and cuDNN resolve
# there from the wheels' versioned files (libcublas.so.13, libcudnn.so.9) through LD_LIBRARY_PATH,
# which scripts/gpu_check.sh sets.
#
# The programs are built with MPI, and the bundle carries Debian's Open MPI runtime under mpi/ (mpirun,
# its components and help texts; `mpi/mpirun` points Open MPI at them with its OPAL_* variables), so
# that two ranks can share the GPU there (#17): the image has no MPI of its own.
#
# Writes .gpu/nimbus-gpu.tar.xz (ignored by git through .git/info/exclude; name that file, not .gpu,
# in the device tool's carry list: .gpu also holds the unpacked staging folder) holding
# nimbus-gpu/{bin,lib,mpi,MANIFEST}. --verify only checks that the bundle there was built from HEAD
# with a clean tree (run it right before the device call: a stale bundle runs old programs). With --check it then proves the
# bundle self-contained: with LD_LIBRARY_PATH set to its lib/ only and the build tree's RUNPATHs
# stripped, every library each binary loads comes from lib/ or from the list of what the device
# image provides (glibc, libstdc++, libgcc_s, the driver's libcuda, the cuBLAS/cuDNN wheels; libgomp
# is carried), and the programs start (cuda_status reports no device here, exit 1); and two ranks of
# bench_allreduce run under the bundle's mpirun, with Debian's Open MPI hidden where a private mount
# namespace is allowed (unshare -m), so that nothing of it outside the bundle is used.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${NIMBUS_GPU_BUILD:-$root/build-gpu}
out=$root/.gpu
stage=$out/nimbus-gpu
check=0
[[ ${1:-} == --check ]] && check=1
if [[ ${1:-} == --verify ]]; then
  [[ -f $out/nimbus-gpu.tar.xz ]] || { echo "gpu_package: no $out/nimbus-gpu.tar.xz: run scripts/gpu_package.sh --check"; exit 1; }
  built=$(tar -xJOf "$out/nimbus-gpu.tar.xz" nimbus-gpu/MANIFEST | awk '/^commit/ {sub(/^commit /, ""); print}')
  head=$(git -C "$root" rev-parse HEAD)
  if [[ $built != "$head" ]] || ! git -C "$root" diff --quiet HEAD; then
    echo "gpu_package: the bundle is stale: built from '$built', HEAD is $head$(git -C "$root" diff --quiet HEAD ||
      echo ' with uncommitted changes'); run scripts/gpu_package.sh --check"
    exit 1
  fi
  echo "gpu_package: the bundle was built from HEAD ($head), clean"
  exit 0
fi

targets=(cuda_status test_gpu_reference test_cuda_real gpu_bench_gemm gpu_bench_conv2d gpu_bench_conformance
         gpu_bench_memory_bound bench_models
         bench_loader bench_allreduce make_synthetic train_resnet train_dsen2cr classify remove_clouds cloud_impact
         raster_diff)

"$root/scripts/install_deps.sh" > /dev/null
# The host C++ as a unity build, 8 sources a unit (the backend's .cu files stay apart: nimbus_cuda sets
# UNITY_BUILD OFF): ~35% less
# compile time, and the Release build (scripts/test.sh) still compiles each file alone, so a missing
# #include fails there.
echo "gpu_package: configuring $build (real CUDA backend, sm_90, -march=x86-64-v3)"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNIMBUS_CUDA_BACKEND=ON -DNIMBUS_WERROR=ON \
  -DNIMBUS_CUDA_ARCHS=90 -DNIMBUS_PLOTS=OFF -DNIMBUS_MPI=ON \
  -DNIMBUS_NATIVE=OFF -DCMAKE_CXX_FLAGS="-march=x86-64-v3 -Wno-psabi" -DCMAKE_CUDA_FLAGS="-Xcompiler=-march=x86-64-v3" \
  -DCMAKE_SKIP_BUILD_RPATH=ON -DNIMBUS_CUDART_STATIC=ON -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=8 \
  > "$build.configure.log" 2>&1 ||
  { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

rm -rf "$stage" && mkdir -p "$stage/bin" "$stage/lib"
for t in "${targets[@]}"; do
  f=$(find "$build" -type f -name "$t" -perm -u+x | head -1)
  [[ -n $f ]] || { echo "gpu_package: no binary for $t"; exit 1; }
  strip --strip-unneeded -o "$stage/bin/$t" "$f"
done

# What the device image has (so it is not carried): glibc's libraries, the compiler runtime that
# its g++ brings, the driver, and the CUDA libraries of its wheels.
provided='^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|librt|libpthread|libresolv|libstdc\+\+|libgcc_s|libcuda|libcublas|libcublasLt|libcudnn[a-z_]*|libnvrtc)\.so'
is_provided() { [[ $(basename "$1") =~ $provided ]]; }

# Open MPI's runtime, from where Debian installs it (ompi_info names the folders): mpirun and orted,
# the components (dlopen'ed by MPI_Init and mpirun), PMIx's components, the help texts and the default
# parameters. Its shared libraries join the programs' in lib/ below.
ompi_path() { ompi_info --parsable --path "$1" | awk -F: '{print $3}'; }
mkdir -p "$stage/mpi/bin" "$stage/mpi/lib/pmix" "$stage/mpi/share" "$stage/mpi/etc"
cp -L "$(command -v orterun)" "$stage/mpi/bin/mpirun"
cp -L "$(command -v orted)" "$stage/mpi/bin/orted"
cp -rL "$(ompi_path pkglibdir)" "$stage/mpi/lib/openmpi3"
# PMIx (Open MPI's launch protocol) is Debian's own package: its components lie beside libpmix itself.
pmix_lib=$(readlink -f "$(ldd "$stage"/mpi/lib/openmpi3/mca_pmix_ext3x.so | awk '/libpmix\.so/ {print $3; exit}')")
cp -L "$(dirname "$pmix_lib")"/pmix/*.so "$stage/mpi/lib/pmix/"
cp -rL "$(ompi_path pkgdatadir)" "$stage/mpi/share/openmpi"
cp -L "$(ompi_path sysconfdir)"/*.conf "$stage/mpi/etc/"
cat > "$stage/mpi/mpirun" <<'WRAPPER'
#!/bin/sh
# mpirun of the bundle's Open MPI (Debian's 4.1, moved): OPAL_* tell it where its parts now lie.
# Its ranks need the bundle's lib/ on LD_LIBRARY_PATH, as every program of the bundle does.
here=$(cd "$(dirname "$0")" && pwd)
export OPAL_PREFIX="$here" OPAL_EXEC_PREFIX="$here" OPAL_BINDIR="$here/bin" OPAL_LIBDIR="$here/../lib" \
  OPAL_PKGLIBDIR="$here/lib/openmpi3" OPAL_DATADIR="$here/share" OPAL_PKGDATADIR="$here/share/openmpi" \
  OPAL_SYSCONFDIR="$here/etc" PMIX_MCA_mca_base_component_path="$here/lib/pmix"
exec "$here/bin/mpirun" "$@"
WRAPPER
chmod +x "$stage/mpi/mpirun"

# Every library the binaries and the MPI runtime need, resolved here, minus what the device provides.
runtime=("$stage"/bin/* "$stage"/mpi/bin/* "$stage"/mpi/lib/openmpi3/*.so "$stage"/mpi/lib/pmix/*.so)
for b in "${runtime[@]}"; do
  ldd "$b" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  is_provided "$lib" || cp -L "$lib" "$stage/lib/"
done
# OpenBLAS: the OpenMP build (it shares libgomp's pool with our kernels; CMakeLists.txt says why),
# whatever Debian's alternatives point libopenblas.so.0 at.
omp_blas=/usr/lib/$(gcc -dumpmachine)/openblas-openmp/libopenblas.so.0
[[ -f $omp_blas ]] && cp -L "$omp_blas" "$stage/lib/libopenblas.so.0"
# cuDNN 9 loads its engine libraries (libcudnn_cnn.so.9, ...) at run time; the wheels have them too.

{
  echo "nimbus GPU bundle"
  echo "commit $(git -C "$root" rev-parse HEAD)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(nvcc --version 2>/dev/null | tail -1 || /usr/local/cuda/bin/nvcc --version | tail -1)"
  echo "bin: $(ls "$stage/bin" | tr '\n' ' ')"
  echo "lib: $(ls "$stage/lib" | tr '\n' ' ')"
  echo "mpi: $(ompi_info --version | head -1) (mpi/mpirun)"
} > "$stage/MANIFEST"
# xz, with a 64 MiB dictionary: every program links the same kernels (~8.5 MB of device code each),
# and a window that reaches from one program to the next stores them about once. Measured 2026-12-05
# on the 169 MB bundle: 20.8 MB in 18 s, against 43 MB in 43 s with xz -6's 8 MiB window (gzip: over
# 60 MB); the carry is size-limited. Unpacking needs 65 MiB of memory. gpu_check.sh unpacks it with
# tar + xz, or with Python's tarfile where the device image has no xz binary.
# xz works on one 192 MiB block, so on one core: it runs in the background while --check below uses
# the other (~30 s of the ~60 s that packing and checking take), into a temporary file renamed when done.
rm -f "$out/nimbus-gpu.tar.gz" "$out/nimbus-gpu.tar.xz.tmp"
(set -o pipefail; tar -C "$out" -cf - nimbus-gpu | xz -T0 --lzma2=preset=1,dict=64MiB > "$out/nimbus-gpu.tar.xz.tmp") &
pack_pid=$!
trap 'pkill -P "$pack_pid" 2> /dev/null; kill "$pack_pid" 2> /dev/null; rm -f "$out/nimbus-gpu.tar.xz.tmp"' EXIT
# Waits for the archive, then says its size and whether it fits beside the working tree.
finish_pack() {
  wait "$pack_pid" || { echo "gpu_package: packing $out/nimbus-gpu.tar.xz FAILED"; exit 1; }
  trap - EXIT
  mv "$out/nimbus-gpu.tar.xz.tmp" "$out/nimbus-gpu.tar.xz"
  local size tree
  size=$(stat -c %s "$out/nimbus-gpu.tar.xz")
  echo "gpu_package: $out/nimbus-gpu.tar.xz, $((size / 1048576)) MiB ($(ls "$stage/bin" | wc -l) programs, $(ls "$stage/lib" | wc -l) libraries)"
  # The device tool carries 64 MiB in all: the bundle, and the working tree beside it (tracked files and
  # untracked ones git does not ignore; the real test fixtures make up 4.8 MB of it). 2 MiB stay spare.
  tree=$(git -C "$root" ls-files -z --cached --others --exclude-standard | (cd "$root" && xargs -0 stat -c %s 2>/dev/null) |
         awk '{s += $1} END {print s + 0}')
  echo "gpu_package: bundle + working tree $(((size + tree) / 1048576)) MiB of the 64 MiB the device tool carries"
  (( size + tree < 62 * 1048576 )) || { echo "gpu_package: bundle + working tree over 62 MiB"; exit 1; }
}

# Two ranks of bench_allreduce under the bundle's mpirun. In a private mount namespace (root may make
# one; a container may forbid it) Debian's Open MPI is hidden first: its folders under empty ones, its
# libraries and programs under /dev/null. A part the bundle lacks then fails here, not on the device.
mpi_check() {
  source "$root/scripts/gpu/mpirun_options.sh"  # the device's options (gpu_check.sh uses the same file)
  local run=(env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$stage/lib" "$stage/mpi/mpirun" "${mpirun_options[@]}" -np 2
             "$stage/bin/bench_allreduce" --max-floats 65536 --reps 3)
  local hide=() how="Debian's Open MPI hidden" msg rc
  if unshare -m mount -t tmpfs none /mnt 2> /dev/null; then  # may this process make one?
    local d f
    for d in "$(ompi_path pkglibdir)" "$(ompi_path pkgdatadir)" "$(ompi_path sysconfdir)" "$(dirname "$pmix_lib")"; do
      hide+=("mount -t tmpfs none '$d' &&")
    done
    for f in "$(ompi_path libdir)"/lib{mpi,open-rte,open-pal}.so "$(command -v orterun)" "$(command -v orted)"; do
      hide+=("mount --bind /dev/null '$(readlink -f "$f")' &&")
    done
    msg=$(unshare -m bash -c "${hide[*]} exec \"\$@\"" hide "${run[@]}" 2>&1) && rc=0 || rc=$?
  else
    how="Debian's Open MPI not hidden: unshare -m is not allowed here"
    msg=$("${run[@]}" 2>&1) && rc=0 || rc=$?
  fi
  if (( rc != 0 )) || ! grep -q '"ranks":2' <<< "$msg"; then
    echo "$msg"; echo "gpu_package: two ranks under the bundle's mpirun FAILED (exit $rc)"; exit 1
  fi
  echo "  mpi/mpirun -np 2 bench_allreduce: $(grep -c '"ranks":2' <<< "$msg") sizes timed ($how)"
}

if (( check )); then
  echo "gpu_package: checking the bundle is self-contained"
  bad=0
  for b in "${runtime[@]}"; do
    # Ours must have no RPATH. Debian's Open MPI parts keep their RUNPATH to its folder: it is searched
    # after LD_LIBRARY_PATH, and there it does not exist.
    [[ $b == "$stage"/mpi/* ]] || ! readelf -d "$b" | grep -qE 'R(UN)?PATH' || { echo "  $b has an RPATH/RUNPATH"; bad=1; }
    while read -r name path; do
      if [[ $path == "not found" ]]; then
        is_provided "$name" || { echo "  $(basename "$b"): $name not found"; bad=1; }
      elif [[ $path != "$stage/lib/"* ]] && ! is_provided "$path"; then
        echo "  $(basename "$b"): $name would come from $path, outside the bundle"; bad=1
      fi
    done < <(env -i LD_LIBRARY_PATH="$stage/lib" ldd "$b" | awk '/=>/ {print $1, ($3 == "not" ? "not found" : $3)}')
  done
  (( bad == 0 )) || { echo "gpu_package: bundle check FAILED"; exit 1; }
  set +e
  msg=$(env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$stage/lib" "$stage/bin/cuda_status" 2>&1); rc=$?
  set -e
  echo "  cuda_status -> exit $rc: $msg"
  [[ $rc -eq 1 && $msg == *cudaGetDeviceCount* ]] || { echo "gpu_package: cuda_status did not start cleanly"; exit 1; }
  env -i LD_LIBRARY_PATH="$stage/lib" "$stage/bin/bench_models" --device cuda --list > /dev/null
  env -i LD_LIBRARY_PATH="$stage/lib" "$stage/bin/gpu_bench_conv2d" --list > /dev/null
  env -i LD_LIBRARY_PATH="$stage/lib" "$stage/bin/make_synthetic" --help > /dev/null
  mpi_check
  echo "gpu_package: bundle check passed (every library from the bundle or the device image; programs start;" \
       "2 MPI ranks run)"
fi
finish_pack
