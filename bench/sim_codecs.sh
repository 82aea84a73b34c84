#!/bin/bash
# bench/sim_codecs.sh BUILD DATA TMP - (5) Dice after a short federated run
# per codec: `fedseg sim` (aggregator + 3 nodes over mutual TLS) with f32,
# f16, q8 and topk (1% kept, error feedback), same seeds and settings;
# prints one flat JSON line per codec: the mean Dice over WT/TC/ET of the
# held-out cases, min/median/max over the seeds, and |mean - f32's mean|.
# A 3-round run is barely trained and its Dice moves by a few hundredths
# from one seed (or one rounding) to the next, so each codec runs with
# several seeds and the means are compared; the note gives f32's own spread
# over the seeds. Settings are small so that the runs fit in minutes on 2
# cores: FEDSEG_BENCH_SIM_ARGS overrides them, FEDSEG_BENCH_SEEDS the seeds
# (default "7 8 9"), FEDSEG_BENCH_CODECS the codecs (f32 first: it is the
# baseline).
set -u
build="$1" data="$2" tmp="$3"
args=${FEDSEG_BENCH_SIM_ARGS:-"--rounds 3 --steps 10 --patch 32 --batch 2 --base 8 --depth 3 --no-central"}
seeds=${FEDSEG_BENCH_SEEDS:-"7 8 9"}
codecs=${FEDSEG_BENCH_CODECS:-"f32 f16 q8 topk"}
case "$codecs" in f32*) ;; *) echo "sim_codecs: FEDSEG_BENCH_CODECS must start with f32" >&2; exit 2;; esac
f32_mean="" f32_spread=""
for codec in $codecs; do
	vals="" secs=0
	for seed in $seeds; do
		w="$tmp/sim-$codec-$seed"
		t0=$(date +%s.%N)
		"$build/node/fedseg" sim --data "$data/brats2021" --codec $codec \
			--workdir "$w" $args --seed "$seed" > "$w.out" 2> "$w.err" || {
			echo "sim_codecs: fedseg sim --codec $codec --seed $seed failed" >&2
			tail -5 "$w.err" >&2; exit 1; }
		t1=$(date +%s.%N)
		secs=$(echo "$secs $t0 $t1" | awk '{printf "%.1f", $1 + $3 - $2}')
		# the federated Dice line: mean of the three region Dice values
		d=$(grep -m1 -E '^ +mean ' "$w.out" | grep -o -E '[0-9]+\.[0-9]+' | head -3 |
			awk '{s += $1; n++} END {if (n) printf "%.4f", s / n}')
		[ -n "$d" ] || { echo "sim_codecs: no federated Dice in the sim output ($codec, seed $seed)" >&2
			cat "$w.out" >&2; exit 1; }
		vals="$vals $d"
		rm -rf "$w"
	done
	read -r n mn md mx mean <<<"$(echo $vals | tr ' ' '\n' | sort -g | awk '
		{ v[NR] = $1; s += $1 }
		END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		      printf "%d %.4f %.4f %.4f %.4f", NR, v[1], m, v[NR], s / NR }')"
	if [ "$codec" = f32 ]; then
		f32_mean=$mean f32_min=$mn f32_md=$md f32_max=$mx
		f32_spread=$(echo "$mn $mx" | awk '{printf "%.4f", $2 - $1}')
	fi
	awk -v c=$codec -v n=$n -v mn=$mn -v md=$md -v mx=$mx -v mean=$mean \
		-v f=$f32_mean -v fmn=$f32_min -v fmd=$f32_md -v fmx=$f32_max \
		-v sp=$f32_spread -v s="$secs" -v a="$args" -v seeds="$seeds" -v vals="$vals" 'BEGIN {
		diff = mean - f; if (diff < 0) diff = -diff
		met = c == "q8" ? (diff <= 0.01 ? "yes" : "no") : "n/a"
		tg = c == "q8" ? "<= 0.01" : "none"
		printf "{\"bench\":\"codec_%s_dice\",\"figure\":\"%s: mean Dice (WT,TC,ET) after a short federated run\",\"unit\":\"Dice\",\"n\":%d,\"min\":%s,\"median\":%s,\"max\":%s,\"baseline\":\"f32 runs, same seeds\",\"base_min\":%s,\"base_median\":%s,\"base_max\":%s,\"ratio\":%.4f,\"ratio_is\":\"|mean Dice - f32 mean Dice| over the seeds\",\"target\":\"%s\",\"met\":\"%s\",\"note\":\"fedseg sim %s --seed S for S in %s, 3 sites, %s s in all; per seed:%s (mean %.4f; f32 mean %.4f, f32 spread over the seeds %s)\"}\n", c, c, n, mn, md, mx, fmn, fmd, fmx, diff, tg, met, a, seeds, s, vals, mean, f, sp
	}'
done
