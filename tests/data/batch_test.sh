#!/bin/bash
# Batch inference over a folder: two real cases -> two label maps and a
# CSV of volumes (checked against numpy); a second run skips both.
. "$FEDSEG_SRC/tests/lib.sh"
need_data
mkdir -p "$T/site"
ln -s "$DATA/brats2021/BraTS2021_00002" "$T/site/"
ln -s "$DATA/brats2021/BraTS2021_00003" "$T/site/"
"$FEDSEG" train --data "$T/site" --out "$T/w.safetensors" --steps 2 --patch 16 \
	--batch 1 --base 2 --depth 2 --threads 2 --quiet >/dev/null || bad "tiny train"
out=$("$FEDSEG" infer --model "$T/w.safetensors" --data "$T/site" --out "$T/segs" \
	--jobs 2 --threads 2 2>"$T/err1"); rc=$?
echo "$out"
check "batch exit 0" test $rc -eq 0
check "one line per case" test "$(grep -c ': ok ' <<<"$out")" -eq 2
check "two label maps, two provenance files" test -s "$T/segs/BraTS2021_00002_seg.nii.gz" -a \
	-s "$T/segs/BraTS2021_00003_seg.nii.gz" -a -s "$T/segs/BraTS2021_00003_seg.nii.gz.json"
check "CSV volumes equal numpy's count of each region" $PY - "$T/segs" "$DATA" <<'PYEOF'
import csv, sys, json, nibabel as nib, numpy as np
d, data = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(d + "/volumes.csv")))
assert [r["case"] for r in rows] == ["BraTS2021_00002", "BraTS2021_00003"], rows
for r in rows:
    assert r["status"] == "ok", r
    s = nib.load(f"{d}/{r['case']}_seg.nii.gz"); a = np.asanyarray(s.dataobj)
    ref = nib.load(f"{data}/brats2021/{r['case']}/{r['case']}_flair.nii.gz")
    assert s.shape == ref.shape and np.allclose(s.affine, ref.affine)
    v = np.prod(s.header.get_zooms()[:3]) / 1000.0
    for k, labs in (("wt", (1, 2, 4)), ("tc", (1, 4)), ("et", (4,))):
        assert abs(float(r[k + "_ml"]) - np.isin(a, labs).sum() * v) < 1e-3, (r, k)
    p = json.load(open(f"{d}/{r['case']}_seg.nii.gz.json"))
    assert p["case"] == r["case"] and p["inputs"]["flair"]["file"] == r["case"] + "_flair.nii.gz"
print("csv ok", rows)
PYEOF
before=$(stat -c %Y "$T/segs/BraTS2021_00002_seg.nii.gz")
out=$("$FEDSEG" infer --model "$T/w.safetensors" --data "$T/site" --out "$T/segs" --threads 2 2>&1); rc=$?
echo "$out"
check "second run skips both cases" test $rc -eq 0 -a "$(grep -c 'done earlier, skipped' <<<"$out")" -eq 2
check "second run left the outputs alone" test "$(stat -c %Y "$T/segs/BraTS2021_00002_seg.nii.gz")" = "$before"
check "CSV still lists both" test "$(grep -c ',ok,' "$T/segs/volumes.csv")" -eq 2
finish
