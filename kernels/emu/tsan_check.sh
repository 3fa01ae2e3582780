#!/usr/bin/env bash
# tsan_check.sh [OUTDIR]: build the emulator-mechanics tests with ThreadSanitizer (fiber
# annotations on: EMU_TSAN) and check that TSan reports exactly the race planted on purpose
# (tree_sum_kernel without its barrier) and nothing else: no false positives from the emulator.
# ~1 min on 2 cores. Not part of ctest: TSan and ASan cannot share a build.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
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
if [[ -z "$races" ]] || grep -v "in tree_sum_kernel" <<< "$races" | grep -q .; then
  echo "tsan_check: expected races only in tree_sum_kernel (the planted one); see $log" >&2
  exit 1
fi
echo "tsan_check: OK (only the planted race was reported)"
