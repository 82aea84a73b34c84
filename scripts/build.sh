#!/bin/sh
# Installs missing Debian packages (scripts/setup.sh), then configures and
# builds fedseg in ./build. Extra arguments go to cmake's configure step
# (e.g. -DTorch_DIR=/path/to/libtorch/share/cmake/Torch for a CUDA build).
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
BUILD="${FEDSEG_BUILD:-build}"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$BUILD.configure.log" 2>&1 || {
	cat "$BUILD.configure.log" >&2; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" 2>&1 | grep -E "error|warning|Error" || true
cmake --build "$BUILD" -j "$(nproc)" >/dev/null
