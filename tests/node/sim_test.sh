#!/bin/bash
# fedseg sim end to end on real cases (tiny model), Ctrl-C handling, and a
# failing child stopping the run with a non-zero exit.
. "$FEDSEG_SRC/tests/lib.sh"
need_data
small="--sites 2 --rounds 2 --steps 2 --patch 32 --batch 1 --base 4 --depth 2 --threads 2"

# A relative --data path (as the README's demo passes) must work too.
out=$(cd "$DATA" && "$FEDSEG" sim --data brats2021 --holdout BraTS2021_00019 $small \
	--workdir "$T/w1" 2>"$T/err1"); rc=$?
cat "$T/err1" >&2
echo "$out"
check "sim exits 0" test $rc -eq 0
check "a line per round" test "$(printf '%s\n' "$out" | grep -c '^round ')" -eq 2
check "Dice table for the held-out case, federated and centralised" \
	bash -c "printf '%s\n' \"\$1\" | grep -E '^  BraTS2021_00019 +[0-9.]+ / [0-9.]+ / [0-9.]+ +[0-9.]+ / [0-9.]+ / [0-9.]+$'" _ "$out"
check "each site saw only its own cases" $PY - "$T/w1" <<'PYEOF'
import json, sys
w = sys.argv[1]
a = {c["id"] for c in json.load(open(w + "/site-1/data/fedseg-manifest.json"))["cases"]}
b = {c["id"] for c in json.load(open(w + "/site-2/data/fedseg-manifest.json"))["cases"]}
assert a and b and not (a & b), (a, b)
assert "BraTS2021_00019" not in a | b
print(sorted(a), sorted(b))
PYEOF
check "ledger has 2 rounds with 2 contributors each" $PY - "$T/w1/aggregator/ledger.jsonl" <<'PYEOF'
import json, sys
rounds = [json.loads(l) for l in open(sys.argv[1]) if '"event":"round"' in l]
assert len(rounds) == 2 and all(len(r["nodes"]) == 2 for r in rounds), rounds
PYEOF
check "the Dice printed equals fedseg infer + eval on the final model" bash -c '
	"$0" infer --model "$1/aggregator/models/round-0002.safetensors" \
		--case "$2/brats2021/BraTS2021_00019" --out "$1/seg.nii.gz" --threads 2 2>/dev/null &&
	wt=$("$0" eval --pred "$1/seg.nii.gz" --ref "$2/brats2021/BraTS2021_00019/BraTS2021_00019_seg.nii.gz" |
		/usr/bin/python3 -c "import json,sys; print(\"%.3f\" % json.load(sys.stdin)[\"dice\"][\"wt\"])") &&
	printf "%s\n" "$3" | grep -q "^  BraTS2021_00019 *$wt "' "$FEDSEG" "$T/w1" "$DATA" "$out"
check "no process left behind" no_procs_in "$T/w1"

# Ctrl-C: stops every child cleanly.
"$FEDSEG" sim --data "$DATA/brats2021" --holdout BraTS2021_00019 --sites 2 --rounds 50 \
	--steps 2 --patch 32 --batch 1 --base 4 --depth 2 --workdir "$T/w2" >"$T/out2" 2>&1 &
pid=$!
for i in $(seq 1 100); do grep -q '^round ' "$T/out2" && break; sleep 0.2; done
kill -INT $pid; wait $pid; rc=$?
check "Ctrl-C: exit 130 (got $rc)" test $rc -eq 130
sleep 0.5
check "Ctrl-C: no aggregator or node left running" no_procs_in "$T/w2"

# A child that dies: reported, run stopped, non-zero exit.
"$FEDSEG" sim --data "$DATA/brats2021" --holdout BraTS2021_00019 --sites 2 --rounds 50 \
	--steps 2 --patch 32 --batch 1 --base 4 --depth 2 --workdir "$T/w3" >"$T/out3" 2>&1 &
pid=$!
for i in $(seq 1 100); do grep -q '^round ' "$T/out3" && break; sleep 0.2; done
for p in /proc/[0-9]*; do
	[ "$(readlink "$p/cwd" 2>/dev/null)" = "$T/w3" ] &&
		grep -q "site-2.json" "$p/cmdline" 2>/dev/null && kill -KILL "${p#/proc/}"
done
wait $pid; rc=$?
check "a killed node stops the run (exit $rc)" test $rc -ne 0 -a $rc -ne 130
check "the failing child is named" grep -q "site-2 stopped" "$T/out3"
sleep 0.5
check "no process left after the failure" no_procs_in "$T/w3"
finish
