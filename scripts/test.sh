#!/usr/bin/env bash
# test.sh: install what is missing, build, and run the whole test suite.
#   scripts/test.sh              Release build in build/, all tests (ctest)
#   scripts/test.sh --sanitize   the same with AddressSanitizer + UndefinedBehaviorSanitizer, in build-asan/
# Extra arguments after the option go to ctest (e.g. -R conv).
set -euo pipefail
cd "$(dirname "$0")/.."

build=build
flags=(-DNIMBUS_WERROR=ON)
if [[ "${1:-}" == "--sanitize" ]]; then
  shift
  build=build-asan
  # -O1 -g1 (line tables): the sanitizers' usual level. Stack traces keep file and line; the build
  # takes ~40% of -O2 -g's time, which decided whether CI fits its 30 minutes.
  flags+=(-DNIMBUS_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG")
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
  export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}"  # third-party caches
fi

scripts/install_deps.sh --tests
jobs=$(nproc)
cmake -S . -B "$build" -G Ninja "${flags[@]}" > "$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" -j "$jobs" --output-on-failure "$@"
