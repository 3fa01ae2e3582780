#!/usr/bin/env bash
# tsan_check.sh [--all] [OUTDIR]: the CUDA emulator under ThreadSanitizer (fiber annotations on: EMU_TSAN).
#  1. The emulator-mechanics tests, built by hand (~15 s): TSan must report exactly the five races
#     planted on purpose, three inside a block (tree_sum_kernel without its barrier,
#     missing_middle_barrier_kernel: a race between two barriers, shuffle_is_no_fence_kernel: shared
#     memory read across a shuffle) and two between blocks (inter_block_sum_kernel, and
#     cp_async_inter_block_kernel around a cp.async), and nothing else: no false positives.
#  2. The kernels' own tests, in a CMake build of test_emu with -fsanitize=thread (OUTDIR/build, ~90 s
#     to build, ~1 min to run): every hand-written kernel, at the tests' sizes, and TSan must report
#     nothing: no two CUDA threads of a block, and no two blocks of a launch, touch one location
#     without a barrier between them, where one of them writes.
#  3. With --all (by hand; ~30 min on 2 cores, too long for CI): every other test case of test_emu as
#     well, in two processes of about equal length: the tensor-core sweeps (every configuration and
#     split of the mma.sync and wgmma convolutions, the linear layers, the batch-norm epilogue and
#     prologue; ~17 min on one core) with the accumulating training loop (~12 min), and the rest
#     (training steps, captured graphs and their replays, the other training loops, the gradient
#     reducer, the allocator's pools; ~27 min). Nothing may be reported there either.
# Not part of ctest: TSan and ASan cannot share a build.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
all=0
if [[ ${1:-} == --all ]]; then all=1; shift; fi
out=${1:-$root/build-tsan-emu}
mkdir -p "$out"
flags=(-std=gnu++20 -O1 -g -fsanitize=thread -fopenmp -I"$root" -DNIMBUS_FIXTURES='"unused"' -DNIMBUS_REAL='"unused"'
       -Wall -Wextra -Wno-unused-parameter -Werror)
# One object per source, $(nproc) compiles at a time (one g++ for all of them used one core), then the link.
sources=("$root"/tests/common/test_main.cpp "$root"/tests/emu/test_emulator.cpp "$root"/kernels/emu/*.cpp
         "$root"/kernels/cuda/launch.cu "$root"/kernels/cuda/stream.cu)
pids=() objs=()
for src in "${sources[@]}"; do
  while (( $(jobs -rp | wc -l) >= $(nproc) )); do wait -n || true; done
  obj="$out/$(basename "$src").o"
  objs+=("$obj")
  lang=(); [[ $src == *.cu ]] && lang=(-x c++ -Wno-unknown-pragmas)
  g++ "${flags[@]}" "${lang[@]}" -c "$src" -o "$obj" &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || { echo "tsan_check: a compile failed (above)" >&2; exit 1; }; done
g++ "${flags[@]}" "${objs[@]}" -o "$out/test_emulator_tsan"
log="$out/tsan.log"
TSAN_OPTIONS="exitcode=0 ${TSAN_OPTIONS:-}" "$out/test_emulator_tsan" > "$log" 2>&1 && grep -q "Status: SUCCESS" "$log" || { cat "$log"; echo "tsan_check: tests failed" >&2; exit 1; }
races=$(grep "SUMMARY: ThreadSanitizer" "$log" | sort | uniq -c || true)
echo "$races"
kernels_planted=(tree_sum_kernel missing_middle_barrier_kernel shuffle_is_no_fence_kernel inter_block_sum_kernel
                 cp_async_inter_block_kernel)
for k in "${kernels_planted[@]}"; do
  grep -q "in $k$" <<< "$races" || { echo "tsan_check: the race planted in $k was not reported; see $log" >&2; exit 1; }
done
if grep -qvE "in ($(IFS='|'; echo "${kernels_planted[*]}"))$" <<< "$races"; then
  echo "tsan_check: TSan reported races other than the planted ones (above); see $log" >&2
  exit 1
fi
echo "tsan_check: mechanics OK (the ${#kernels_planted[@]} planted races were reported, nothing else)"

# 2. The kernel tests, the planted races left out. Blocks run on one OS thread (scheduler.cpp: libgomp's
# own synchronisation is invisible to TSan).
build="$out/build"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
  -DCMAKE_CXX_FLAGS=-fsanitize=thread -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread -DNIMBUS_WERROR=ON \
  -DNIMBUS_MPI=OFF -DNIMBUS_PLOTS=OFF -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=8 > "$out/cmake.log" \
  || { cat "$out/cmake.log"; exit 1; }
cmake --build "$build" --target test_emu -- -j"$(nproc)" > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
# Every kernel of kernels/cuda, each instruction model, and the backend's dispatch of the tensor-core
# families (mma.sync and wgmma); the tensor-core sweeps and the training steps (~56 min of one core
# under TSan) are --all's.
kernels="cuda kernels*,tensor core*,hopper*,emu*,cuda backend*,cuda wgmma: the backend runs*,cuda wgmma: w and dy*"
kernels+=",cuda tensor cores: a table line*,cuda engine: clip_grad_norm*"
planted="emu: a missing barrier is exposed*,emu: a missing barrier between two barriers*,emu: a race between blocks*"
planted+=",emu: a shuffle is no memory fence*"
# run_tests LOG ARGS...: test_emu with ARGS (filters), its output in LOG. Blocks on one OS thread.
run_tests() {
  local log=$1
  shift
  OMP_NUM_THREADS=1 TSAN_OPTIONS="exitcode=0 ${TSAN_OPTIONS:-}" "$build/tests/test_emu" "$@" > "$log" 2>&1 || true
}
# check_log NAME LOG MIN: the tests in LOG passed, at least MIN cases ran (a filter that matches nothing
# still passes), and TSan reported nothing; else what went wrong, and exit 1.
check_log() {
  local name=$1 log=$2 min=$3 cases
  grep -q "Status: SUCCESS" "$log" || { tail -80 "$log"; echo "tsan_check: the $name tests failed" >&2; exit 1; }
  if grep -q "WARNING: ThreadSanitizer" "$log"; then
    grep -A40 "WARNING: ThreadSanitizer" "$log" | head -200
    grep "SUMMARY: ThreadSanitizer" "$log" | sort | uniq -c
    echo "tsan_check: TSan reported the $name tests (above; all of it in $log)" >&2
    exit 1
  fi
  cases=$(grep -o "test cases: *[0-9]*" "$log" | head -1 | grep -o "[0-9]*$" || true)
  if (( ${cases:-0} < min )); then
    echo "tsan_check: only ${cases:-0} $name test cases ran (at least $min expected): a filter lost its tests" >&2
    exit 1
  fi
  echo "tsan_check: $name OK ($cases test cases, no report, $((SECONDS - start)) s)"
}
start=$SECONDS
run_tests "$out/kernels.log" -tc="$kernels" -tce="$planted"
check_log kernels "$out/kernels.log" 70
(( all )) || exit 0

# 3. Everything else, two processes (one a core): the sweeps with the longest training loop, and the
# rest.
sweeps="cuda tensor cores: conv2d*,cuda wgmma: conv2d*,cuda tensor cores: batch-norm*,cuda tensor cores: the batch norm*"
sweeps+=",cuda tensor cores: linear*,cuda wgmma: the weight gradient*,cuda tensor cores: the weight gradient*"
sweeps+=",cuda training loop: accumulated*"
start=$SECONDS
run_tests "$out/sweeps.log" -tc="$sweeps" &
sweeps_pid=$!
run_tests "$out/rest.log" -tce="$planted,$kernels,$sweeps" &
rest_pid=$!
wait "$sweeps_pid"
wait "$rest_pid"
check_log sweeps "$out/sweeps.log" 14
check_log rest "$out/rest.log" 30
echo "tsan_check: --all OK ($((SECONDS - start)) s)"
