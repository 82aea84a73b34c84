#!/bin/sh
# The test command: installs what is missing, builds, runs every test.
# Real cases are read from FEDSEG_DATA (default ../shared/data); tests that
# need them fail loudly when they are absent.
set -eu
cd "$(dirname "$0")/.."
./scripts/build.sh
BUILD="${FEDSEG_BUILD:-build}"
cd "$BUILD"
ctest --output-on-failure --timeout 1500 "$@"
