#!/bin/bash
# Builds the libFuzzer harnesses (clang, ASan + UBSan) in $FEDSEG_BIN/fuzz
# and runs each for FUZZ_SECONDS (default 20) from a seed corpus of valid
# inputs plus the regression inputs kept in tests/fuzz/regress/<harness>/.
# A crash, leak or sanitizer report fails the test; the input is kept in
# $FEDSEG_BIN/fuzz/crashes/. Longer runs: FUZZ_SECONDS=3600 bash run_fuzz.sh
set -u
: "${FEDSEG_BIN:?}" "${FEDSEG_SRC:?}"
secs="${FUZZ_SECONDS:-20}"
B="$FEDSEG_BIN/fuzz"
mkdir -p "$B/crashes"
if ! command -v clang >/dev/null; then
	echo "FAIL: clang not installed (scripts/setup.sh installs it)" >&2; exit 1
fi
if [ ! -f "$B/CMakeCache.txt" ]; then
	CC=clang CXX=clang++ cmake -S "$FEDSEG_SRC" -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DFEDSEG_FUZZ=ON -DFEDSEG_SANITIZE=ON >"$B/configure.log" 2>&1 ||
		{ cat "$B/configure.log"; exit 1; }
fi
cmake --build "$B" -j 2 --target fuzz_nifti fuzz_safetensors fuzz_envelope fuzz_manifest \
	>"$B/build.log" 2>&1 || { tail -30 "$B/build.log"; exit 1; }

# Seeds: valid inputs made by the real tools.
S="$B/seeds"; rm -rf "$S"; mkdir -p "$S"/{nifti,safetensors,envelope,manifest}
F="$FEDSEG_BIN/node/fedseg"
"$F" data phantom --out "$S/ph" --cases 1 --size 16 >/dev/null || exit 1
cp "$S"/ph/Phantom_001/Phantom_001_t1.nii.gz "$S/nifti/a.nii.gz"
gzip -dc "$S/nifti/a.nii.gz" > "$S/nifti/b.nii"
"$F" train --data "$S/ph" --out "$S/safetensors/w.safetensors" --steps 0 --patch 8 \
	--base 1 --depth 1 --threads 1 --quiet >/dev/null || exit 1
printf '{"cases":[{"id":"a","t1":"x.nii.gz","t1c":"y.nii.gz","t2":"z.nii.gz","flair":"w.nii.gz","label":"s.nii.gz"}]}' > "$S/manifest/j"
printf 'case,modality,path\na,t1,x.nii.gz\na,t1c,y.nii.gz\na,t2,z.nii.gz\na,flair,w.nii.gz\na,label,s.nii.gz\n' > "$S/manifest/c"
# An Envelope{version 1, error{code 1}} and a q8 codec payload.
printf '\x08\x01\x5a\x02\x08\x01' > "$S/envelope/e"

fails=0
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
for h in nifti safetensors envelope manifest; do
	corpus="$B/corpus-$h"; mkdir -p "$corpus"
	reg="$FEDSEG_SRC/tests/fuzz/regress/$h"
	dirs=("$corpus" "$S/$h"); [ -d "$reg" ] && dirs+=("$reg")
	# Regression inputs must pass on their own first.
	if [ -d "$reg" ] && ls "$reg"/* >/dev/null 2>&1; then
		if ! (cd "$B" && "$B/tests/fuzz/fuzz_$h" "$reg"/* >"$B/$h-regress.log" 2>&1); then
			echo "FAIL - fuzz_$h: a regression input crashes again:"; tail -20 "$B/$h-regress.log"
			fails=$((fails + 1)); continue
		fi
	fi
	if (cd "$B" && TMPDIR="$B" "$B/tests/fuzz/fuzz_$h" -max_total_time="$secs" \
		-max_len=65536 -rss_limit_mb=2048 -artifact_prefix="$B/crashes/$h-" \
		"${dirs[@]}" >"$B/$h.log" 2>&1); then
		echo "ok - fuzz_$h: $(grep -Eo 'Done [0-9]+ runs' "$B/$h.log" | tail -1) in ${secs}s, corpus $(ls "$corpus" | wc -l) inputs"
	else
		echo "FAIL - fuzz_$h crashed; input kept in $B/crashes/:"; grep -A25 "ERROR\|runtime error" "$B/$h.log" | head -40
		fails=$((fails + 1))
	fi
done
rm -rf "$B"/fedseg-fuzz-*
[ $fails -eq 0 ] && echo "all harnesses ran clean" || exit 1
