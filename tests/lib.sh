# tests/lib.sh - shared helpers for shell tests. Source it.
set -u
: "${FEDSEG_BIN:?FEDSEG_BIN not set (run through ctest)}"
: "${FEDSEG_SRC:?FEDSEG_SRC not set}"
FEDSEG="$FEDSEG_BIN/node/fedseg"
PY=/usr/bin/python3
DATA="${FEDSEG_DATA:-$FEDSEG_SRC/../shared/data}"
T=$(mktemp -d "${TMPDIR:-/tmp}/fedseg-test.XXXXXX")
trap 'rm -rf "$T"' EXIT
fails=0

need_data() {
	if [ ! -d "$DATA/brats2021" ]; then
		echo "FAIL: real data not found at $DATA (set FEDSEG_DATA)" >&2
		exit 1
	fi
}
ok() { echo "ok - $*"; }
bad() { echo "FAIL - $*" >&2; fails=$((fails + 1)); }
check() { # check "description" cmd...
	local d="$1"; shift
	if "$@"; then ok "$d"; else bad "$d"; fi
}
# expect_fail "description" pattern-in-stderr outfile-that-must-not-exist cmd...
expect_fail() {
	local d="$1" pat="$2" outf="$3"; shift 3
	local err rc
	err=$("$@" 2>&1 >/dev/null); rc=$?
	if [ $rc -eq 0 ]; then bad "$d: exit 0"; return; fi
	if ! printf '%s' "$err" | grep -q -- "$pat"; then
		bad "$d: message lacks '$pat': $err"; return; fi
	if [ "$(printf '%s\n' "$err" | grep -c .)" -gt 3 ]; then
		bad "$d: more than a short reason: $err"; return; fi
	if [ -n "$outf" ] && [ -e "$outf" ]; then bad "$d: left $outf"; return; fi
	if [ -n "$outf" ] && ls "$(dirname "$outf")"/*.tmp.* >/dev/null 2>&1; then
		bad "$d: left a temp file"; return; fi
	ok "$d (exit $rc: $(printf '%s' "$err" | tail -n 1))"
}
finish() {
	if [ $fails -ne 0 ]; then echo "$fails check(s) failed" >&2; exit 1; fi
	echo "all checks passed"
}
# no_procs_in DIR: true when no process has DIR as its working directory
# (fedseg sim runs its aggregator and nodes there).
no_procs_in() {
	local p d
	for p in /proc/[0-9]*; do
		d=$(readlink "$p/cwd" 2>/dev/null) || continue
		if [ "$d" = "$1" ]; then echo "still running: $(tr '\0' ' ' < "$p/cmdline")" >&2; return 1; fi
	done
	return 0
}
