#!/bin/sh
# Installs the Debian 12 packages fedseg needs to build and test.
# Idempotent: does nothing (and prints nothing) when everything is present.
set -eu
PKGS="build-essential cmake pkg-config clang libclang-rt-14-dev
libtorch-dev libopenblas0-pthread
libnng-dev libprotobuf-c-dev protobuf-c-compiler
libssl-dev openssl libnifti2-dev zlib1g-dev libcjson-dev
python3-numpy python3-nibabel python3-torch"
missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "setup: installing:$missing"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
