#!/bin/bash
# bench/report.sh JSONL CHANGES.md CMDLINE LOAD0 LOAD1 SECONDS SRC
# Writes the Markdown report of one bench/run.sh run to stdout.
set -u
jl="$1" changes="$2" cmdline="$3" load0="$4" load1="$5" secs="$6" src="$7"
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
cores=$(nproc)
mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
commit=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$src" status --porcelain -- shim model bench 2>/dev/null | head -1)
cat <<HDR
# fedseg benchmarks

Written by \`bench/run.sh\` (do not edit by hand: edit bench/changes.md and
rerun). Every figure has a baseline measured **in the same run**, because
this machine is shared and noisy: absolute seconds drift with the load,
ratios hold far better.

| | |
| --- | --- |
| command | \`$cmdline\` |
| date | $(date -u '+%Y-%m-%d %H:%M UTC') |
| machine | $cpu, $cores cores, $mem, $(uname -sr) |
| libtorch | $(ls -d /usr/lib/*/libtorch_cpu.so.* 2>/dev/null | head -1 | sed 's/.*\.so\.//') (Debian, CPU), OpenBLAS, oneDNN |
| commit | $commit${dirty:+ (with local changes in shim/model/bench)} |
| load average | $load0 at start, $load1 at end (other work shares the 2 cores) |
| run time | ${secs} s |

## Figures

Figures are min / median / max over the repeats (n). *ratio* compares the
figure with its baseline as stated in the last column; the target and
whether it is met are the issue's (#7).

| benchmark | figure | unit | n | min | median | max | baseline (median) | ratio | target | met |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
HDR
awk '
function s(k,   r) { if (match($0, "\"" k "\":\"[^\"]*\"")) { r = substr($0, RSTART, RLENGTH); sub("^\"" k "\":\"", "", r); sub("\"$", "", r); return r } return "" }
function n(k,   r) { if (match($0, "\"" k "\":[^,}]*")) { r = substr($0, RSTART, RLENGTH); sub("^\"" k "\":", "", r); return r } return "" }
/^\{/ {
	printf "| %s | %s | %s | %s | %s | %s | %s | %s: %s | %s | %s | %s |\n", s("bench"), s("figure"), s("unit"), n("n"), n("min"), n("median"), n("max"), s("baseline"), n("base_median"), n("ratio"), s("target"), s("met")
}' "$jl"
echo
echo "Ratio definitions and details:"
echo
awk '
function s(k,   r) { if (match($0, "\"" k "\":\"[^\"]*\"")) { r = substr($0, RSTART, RLENGTH); sub("^\"" k "\":\"", "", r); sub("\"$", "", r); return r } return "" }
/^\{/ { printf "- **%s** (%s): ratio = %s. %s\n", s("bench"), s("figure"), s("ratio_is"), s("note") }' "$jl"
echo
echo "Raw figures: the JSON lines of this run are in \`$(basename "$jl")\` beside this file."
echo
[ -f "$changes" ] && cat "$changes"
exit 0
