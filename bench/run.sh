#!/bin/bash
# bench/run.sh - runs every fedseg benchmark and writes docs/benchmarks.md.
#
#   bench/run.sh [--quick] [--build DIR] [--out FILE] [--repeats N] [--threads N]
#
# Each benchmark prints flat JSON lines (bench/bench_util.h): a figure with
# min/median/max over repeats, the baseline measured in the same run, and
# their ratio. This script collects them (FILE.jsonl beside the report) and
# writes the Markdown report: machine, date, commit, load, one table row per
# figure, the notes, and bench/changes.md (what was changed, predicted and
# measured effect). --quick: tiny models and one or two repeats, for the
# test suite (tests/bench); it writes to --out (default: a temp file), never
# to docs/ unless asked.
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build="$src/build"
quick=0
out=""
repeats=5
threads=""
args="$*"
usage() {
	sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
}
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=1 ;;
	--build) build="$2"; shift ;;
	--out) out="$2"; shift ;;
	--repeats) repeats="$2"; shift ;;
	--threads) threads="$2"; shift ;;
	-h|--help) usage; exit 0 ;;
	*) echo "bench/run.sh: unknown option $1 (--help)" >&2; exit 2 ;;
	esac
	shift
done
case "$repeats" in ''|*[!0-9]*) echo "bench/run.sh: --repeats N" >&2; exit 2 ;; esac
build=$(cd "$build" 2>/dev/null && pwd) || {
	echo "bench/run.sh: build dir not found (--build DIR)" >&2; exit 2; }
for b in bench/bench_core bench/bench_agg node/fedseg; do
	[ -x "$build/$b" ] || { echo "bench/run.sh: $build/$b missing (build target ${b##*/})" >&2; exit 2; }
done
data="${FEDSEG_DATA:-$src/../shared/data}"
case1="$data/brats2021/BraTS2021_00000"
[ -d "$case1" ] || { echo "bench/run.sh: real case not found: $case1 (set FEDSEG_DATA)" >&2; exit 1; }
if [ -z "$out" ]; then
	if [ $quick = 1 ]; then out=$(mktemp /tmp/fedseg-bench.XXXXXX.md); else out="$src/docs/benchmarks.md"; fi
fi
tmp=$(mktemp -d /tmp/fedseg-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
jl="$out.jsonl"
: > "$jl"
q=""; [ $quick = 1 ] && { q="--quick"; [ "$repeats" -gt 2 ] && repeats=2; }
th=""; [ -n "$threads" ] && th="--threads $threads"
cmdline="bench/run.sh${args:+ $args}"
load0=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date +%s)
fail=0
step() { echo "bench: $*" >&2; }

# (1) + (2): inference in process and one training step.
step "core: inference + train step ($repeats repeats)"
"$build/bench/bench_core" $q $th --repeats "$repeats" --case "$case1" >> "$jl" || fail=1

# (1) the whole `fedseg infer` command, against the bare convolutions of its
# windows measured right after each command run (bench_core --save-weights
# --repeats 1: pairs taken close in time, as the load drifts).
step "infer command: fedseg infer wall time"
: > "$tmp/cmd.txt"
"$build/bench/bench_core" $q $th --repeats 1 --case "$case1" \
	--save-weights "$tmp/w.safetensors" > /dev/null || fail=1
for r in $(seq "$repeats"); do
	t0=$(date +%s.%N)
	"$build/node/fedseg" infer --model "$tmp/w.safetensors" --case "$case1" \
		--out "$tmp/seg.nii.gz" $th 2> "$tmp/infer.log" || { fail=1; cat "$tmp/infer.log" >&2; }
	t1=$(date +%s.%N)
	"$build/bench/bench_core" $q $th --repeats 1 --case "$case1" \
		--save-weights "$tmp/w2.safetensors" > "$tmp/bare.jsonl" || fail=1
	b=$(sed -n 's/.*"median":\([^,]*\),.*/\1/p' "$tmp/bare.jsonl" | head -1)
	inner=$(sed -n 's/.*(\([0-9.]*\) s, .*/\1/p' "$tmp/infer.log" | head -1)
	echo "$t0 $t1 ${b:-0} ${inner:-0}" | awk '{printf "%.4f %.4f %.4f\n", $2 - $1, $3, $4}' >> "$tmp/cmd.txt"
done
awk -v q=$quick '
	function med(a, n,   i, j, t) { for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t } return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
	{ c[NR] = $1; b[NR] = $2; r[NR] = $1 > 0 ? $2 / $1 : 0; in_[NR] = $3 }
	END {
		n = NR
		cm = med(c, n); bm = med(b, n); rm = med(r, n); im = med(in_, n)
		met = (cm < 30) ? "yes" : "no"
		printf "{\"bench\":\"infer_command\",\"figure\":\"fedseg infer, whole command (start, load 4 NIfTI.gz, crop, segment, write NIfTI + provenance)\",\"unit\":\"s\",\"n\":%d,\"min\":%.4f,\"median\":%.4f,\"max\":%.4f,\"baseline\":\"bare conv3d, same shapes (run after each command)\",\"base_min\":%.4f,\"base_median\":%.4f,\"base_max\":%.4f,\"ratio\":%.4f,\"ratio_is\":\"median of per-run bare conv seconds / command seconds\",\"target\":\"< 30 s (the >= 0.6 throughput target is infer_inproc)\",\"met\":\"%s\",\"note\":\"process start to exit; the command itself reports %.2f s (median) from case loading to provenance written; %s\"}\n", n, c[1], cm, c[n], b[1], bm, b[n], rm, met, im, q ? "quick model" : "default model, untrained weights (same FLOPs)"
	}' "$tmp/cmd.txt" >> "$jl"

# (3) FedAvg streaming and (5) codecs, in process over the aggregator's and
# fed/'s own code.
step "aggregation + codecs"
"$build/bench/bench_agg" $q --repeats "$repeats" >> "$jl" || fail=1

# (4) round over mutual TLS and (6) scale: real aggregator processes.
if [ -x "$build/bench/bench_fed" ] && [ -x "$build/aggregator/fedseg-aggregator" ]; then
	step "federation rounds over mutual TLS"
	"$build/bench/bench_fed" $q --bin "$build" --repeats "$repeats" >> "$jl" || fail=1
fi

# (5) Dice after a short federated run per codec (fedseg sim).
if [ $quick = 0 ] && [ -z "${FEDSEG_BENCH_NO_SIM:-}" ]; then
	step "codec Dice: fedseg sim per codec"
	"$here/sim_codecs.sh" "$build" "$data" "$tmp" >> "$jl" || fail=1
fi

load1=$(cut -d' ' -f1-3 /proc/loadavg)
t_end=$(date +%s)
"$here/report.sh" "$jl" "$here/changes.md" "$cmdline" "$load0" "$load1" \
	$((t_end - t_start)) "$src" > "$out.tmp" && mv "$out.tmp" "$out" || fail=1
step "wrote $out ($(grep -c '^{' "$jl") figures)"
exit $fail
