#!/bin/bash
# bench/sim_codecs.sh BUILD DATA TMP - (5) Dice after a short federated run
# per codec: `fedseg sim` (aggregator + 3 nodes over mutual TLS) with f32,
# f16, q8 and topk (1% kept, error feedback), same seed and settings; prints
# one flat JSON line per codec with its mean Dice over WT/TC/ET and the
# difference from the f32 run. Settings are small so that the runs fit in
# minutes on 2 cores: FEDSEG_BENCH_SIM_ARGS overrides them;
# FEDSEG_BENCH_CODECS the codecs (f32 first: it is the baseline).
set -u
build="$1" data="$2" tmp="$3"
args=${FEDSEG_BENCH_SIM_ARGS:-"--rounds 3 --steps 10 --patch 32 --batch 2 --base 8 --depth 3 --no-central --seed 7"}
declare -A dice
codecs=${FEDSEG_BENCH_CODECS:-"f32 f16 q8 topk"}
case "$codecs" in f32*) ;; *) echo "sim_codecs: FEDSEG_BENCH_CODECS must start with f32" >&2; exit 2;; esac
for codec in $codecs; do
	t0=$(date +%s.%N)
	"$build/node/fedseg" sim --data "$data/brats2021" --codec $codec \
		--workdir "$tmp/sim-$codec" $args > "$tmp/sim-$codec.out" 2> "$tmp/sim-$codec.err" || {
		echo "sim_codecs: fedseg sim --codec $codec failed" >&2; tail -5 "$tmp/sim-$codec.err" >&2; exit 1; }
	t1=$(date +%s.%N)
	# the federated Dice line: mean of the three region Dice values
	d=$(grep -m1 -E '^ +mean ' "$tmp/sim-$codec.out" | grep -o -E '[0-9]+\.[0-9]+' | head -3 |
		awk '{s += $1; n++} END {if (n) printf "%.4f", s / n}')
	[ -n "$d" ] || { echo "sim_codecs: no federated Dice in the sim output ($codec)" >&2; cat "$tmp/sim-$codec.out" >&2; exit 1; }
	dice[$codec]=$d
	secs=$(echo "$t0 $t1" | awk '{printf "%.1f", $2 - $1}')
	line=$(grep -m1 -E '^ +mean ' "$tmp/sim-$codec.out" | tr -d '"\\')
	awk -v c=$codec -v d=$d -v f=${dice[f32]} -v s="$secs" -v a="$args" -v l="$line" 'BEGIN {
		diff = d - f; if (diff < 0) diff = -diff
		met = c == "q8" ? (diff <= 0.01 ? "yes" : "no") : "n/a"
		tg = c == "q8" ? "<= 0.01" : "none"
		printf "{\"bench\":\"codec_%s_dice\",\"figure\":\"%s: mean Dice (WT,TC,ET) after a short federated run\",\"unit\":\"Dice\",\"n\":1,\"min\":%s,\"median\":%s,\"max\":%s,\"baseline\":\"f32 run, same seed\",\"base_min\":%s,\"base_median\":%s,\"base_max\":%s,\"ratio\":%.4f,\"ratio_is\":\"|Dice - f32 Dice|\",\"target\":\"%s\",\"met\":\"%s\",\"note\":\"fedseg sim %s, 3 sites, %s s; sim says: %s\"}\n", c, c, d, d, d, f, f, f, diff, tg, met, a, s, l
	}'
done
