#!/usr/bin/env bash
# check_test_names.sh TEST_EXE...: fail when a doctest case name contains ';'.
# ctest splits such a name into two filters that match nothing, so the case
# would silently run zero assertions and still "pass".
set -euo pipefail
bad=0
for exe in "$@"; do
  while IFS= read -r name; do
    if [[ "$name" == *";"* ]]; then
      echo "$exe: test case name contains ';' (ctest cannot run it): $name"
      bad=1
    fi
  done < <("$exe" --list-test-cases --no-version | grep -v '^\[doctest\]' | grep -v '^=*$')
done
exit $bad
