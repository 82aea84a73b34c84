#!/bin/sh
# The main job in one command: installs what is missing, builds, then runs a
# whole federation on this machine (`fedseg sim`): 3 sites over mutual TLS on
# loopback, 8 rounds of 20 local steps, then federated vs centralised Dice on held-out cases.
# Uses the real BraTS cases in ../shared/data (or $FEDSEG_DATA) when they are
# there, else synthetic phantoms it generates. Extra arguments go to sim.
set -eu
cd "$(dirname "$0")/.."
./scripts/build.sh
BUILD="${FEDSEG_BUILD:-build}"
DATA="${FEDSEG_DATA:-../shared/data}"
WORK="${FEDSEG_WORKDIR:-$(mktemp -d /tmp/fedseg-demo.XXXXXX)}"
if [ -d "$DATA/brats2021/BraTS2021_00003" ]; then
	echo "demo: real BraTS cases from $DATA"
	set -- --data "$DATA/brats2021" --data "$DATA/brats2019" \
		--holdout BraTS2021_00003 --holdout BraTS2021_00019 "$@"
else
	echo "demo: $DATA has no BraTS cases; generating 8 synthetic phantoms"
	"$BUILD/node/fedseg" data phantom --out "$WORK/phantoms" --cases 8 --size 96
	set -- --data "$WORK/phantoms" --holdout Phantom_007 --holdout Phantom_008 "$@"
fi
exec "$BUILD/node/fedseg" sim --workdir "$WORK/sim" "$@"
