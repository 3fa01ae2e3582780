#!/usr/bin/env bash
# fuzz.sh [SECONDS]: builds the libFuzzer targets of fuzz/ with clang++-14 (build-fuzz/, every source
# instrumented with -fsanitize=fuzzer-no-link,address,undefined) and runs each for SECONDS (default
# 60; one per core at a time) with a 1 GiB memory limit, starting from the committed corpus
# (fuzz/corpus/<target>/) and the test fixtures. A crash, a sanitizer report, an uncaught exception (std::bad_alloc included), a
# timeout or memory above the limit is a finding: it is saved in build-fuzz/findings/ and the script
# exits 1. Add each finding, once fixed, to fuzz/corpus/<target>/ (named regression_*): the g++ test
# tests/data/test_fuzz_corpora.cpp replays that corpus in every build.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
scripts/install_deps.sh --fuzz
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_C_COMPILER=clang-14 \
  -DNIMBUS_FUZZ=ON -DNIMBUS_WERROR=ON > build-fuzz.configure.log 2>&1 || { cat build-fuzz.configure.log; exit 1; }
targets=(geotiff safetensors sen12mscr_list eurosat_split raster_pack)
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]/#/fuzz_}"
mkdir -p build-fuzz/findings
declare -A seeds=([geotiff]="tests/fixtures/geotiff" [safetensors]="tests/fixtures" [sen12mscr_list]="" [eurosat_split]="" [raster_pack]="")
# One target, its output in build-fuzz/<target>.log and its exit status in build-fuzz/<target>.rc.
fuzz_one() {
  local t=$1 work=build-fuzz/corpus/$1  # new inputs go here, never into the committed corpus
  mkdir -p "$work"
  local rc=0
  build-fuzz/fuzz/fuzz_$t -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
    -artifact_prefix=build-fuzz/findings/$t- "$work" fuzz/corpus/$t ${seeds[$t]} > "build-fuzz/$t.log" 2>&1 || rc=$?
  echo "$rc" > "build-fuzz/$t.rc"
}
# Each fuzzer is one process on one core: they run $(nproc) at a time, then report in order.
for t in "${targets[@]}"; do
  while (( $(jobs -rp | wc -l) >= $(nproc) )); do wait -n || true; done
  fuzz_one "$t" &
done
wait
status=0
for t in "${targets[@]}"; do
  echo "== fuzz_$t for ${seconds} s"
  if [[ $(cat "build-fuzz/$t.rc") != 0 ]]; then
    grep -E "^(==[0-9]+==|SUMMARY|Done)|deadly signal|out-of-memory|timeout" "build-fuzz/$t.log" | head -20
  fi
  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "build-fuzz/$t.log" || true
  if ls build-fuzz/findings/$t-* > /dev/null 2>&1; then
    echo "fuzz_$t: findings in build-fuzz/findings/ (above)"
    status=1
  fi
done
exit $status
