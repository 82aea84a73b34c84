#!/bin/sh
# Builds fedseg with AddressSanitizer + UBSan (gcc) in ./build-asan and runs
# the unit and integration tests under it (the fuzz harnesses have their own
# clang build: tests/fuzz/run_fuzz.sh). scripts/test.sh runs it after the
# plain suite (FEDSEG_TEST_ASAN=0 skips it); extra arguments go to ctest.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
B="${FEDSEG_ASAN_BUILD:-build-asan}"
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFEDSEG_SANITIZE=ON >"$B.configure.log" 2>&1 ||
	{ cat "$B.configure.log" >&2; exit 1; }
cmake --build "$B" -j "$(nproc)" >"$B.build.log" 2>&1 || { tail -40 "$B.build.log" >&2; exit 1; }
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:suppressions=$PWD/tests/asan.supp"
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
cd "$B"
ctest --output-on-failure -E 'fuzz_short' "$@"
