#!/bin/sh
# The test command: installs what is missing, builds, runs every test, then
# builds again with ASan + UBSan (scripts/sanitize.sh, ./build-asan) and
# runs the unit and integration tests under it. Real cases are read from
# FEDSEG_DATA (default ../shared/data); tests that need them fail loudly
# when they are absent. Extra arguments go to the first ctest (e.g.
# -R fed_); FEDSEG_TEST_ASAN=0 skips the sanitizer pass (quick local runs;
# CI always runs it).
set -eu
cd "$(dirname "$0")/.."
./scripts/build.sh
BUILD="${FEDSEG_BUILD:-build}"
(cd "$BUILD" && ctest --output-on-failure --timeout 1500 "$@")
if [ "${FEDSEG_TEST_ASAN:-1}" != 0 ]; then
	echo "test: the same tests under ASan + UBSan (scripts/sanitize.sh)"
	./scripts/sanitize.sh --timeout 1500
fi
