#!/bin/bash
# bench/run.sh --quick runs every benchmark small and writes a well-formed
# report: each figure line has every field, numbers are finite and positive
# where they must be, and the Markdown table has a row per figure.
. "$FEDSEG_SRC/tests/lib.sh"
need_data
out="$T/bench.md"
check "bench/run.sh --quick exits 0" "$FEDSEG_SRC/bench/run.sh" --quick --build "$FEDSEG_BIN" --out "$out" --threads 2
check "report written" test -s "$out"
check "figures written" test -s "$out.jsonl"
for b in infer_inproc train_step infer_command fedavg_accumulate \
	fedavg_accept_path codec_f32_bytes codec_f16_bytes codec_q8_bytes codec_q8_encode codec_q8_decode \
	codec_topk_bytes fed_round_tls fed_tls_echo fed_scale_10 fed_scale_30 fed_scale_30_rss fedavg_agg_rss; do
	check "figure $b present" grep -q "\"bench\":\"$b\"" "$out.jsonl"
	check "table row for $b" grep -q "^| $b | " "$out"
done
check "every figure line is well formed" $PY - "$out.jsonl" <<'PYEOF'
import json, math, sys
keys = ["bench", "figure", "unit", "n", "min", "median", "max", "baseline",
        "base_min", "base_median", "base_max", "ratio", "ratio_is", "target",
        "met", "note"]
n = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    n += 1
    assert list(r.keys()) == keys, (r.get("bench"), list(r.keys()))
    for k in ("min", "median", "max", "base_median", "ratio"):
        assert isinstance(r[k], (int, float)) and math.isfinite(r[k]), (r["bench"], k, r[k])
    assert r["n"] >= 1 and r["min"] <= r["median"] <= r["max"], r
    assert r["min"] >= 0 and r["ratio"] >= 0, r
    assert r["met"] in ("yes", "no", "n/a"), r
    if r["unit"] == "s":
        assert r["median"] > 0, r
print("ok", n, "figures")
PYEOF
check "report names machine, date and command" grep -q "bench/run.sh --quick" "$out"
check "q8 is at most 26% of f32 bytes" grep -q '"bench":"codec_q8_bytes".*"met":"yes"' "$out.jsonl"
expect_fail "bad option refused" "unknown option" "" "$FEDSEG_SRC/bench/run.sh" --bogus
finish
