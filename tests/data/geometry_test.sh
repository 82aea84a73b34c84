#!/bin/bash
# Geometry that real data brings, on variants of a real case: a case whose
# modalities disagree on grid or orientation is refused naming both files;
# with --resample it is segmented on the first modality's grid (and a pure
# left/right storage flip gives the same segmentation). Header variants
# (q/sform codes 0-4), datatypes, 4-D with one volume and non-1 mm voxels
# segment like the original; NaN is refused.
. "$FEDSEG_SRC/tests/lib.sh"
need_data
case0="$DATA/brats2021/BraTS2021_00002"
$PY "$FEDSEG_SRC/tests/data/make_geometry.py" "$case0" "$T/g" || { bad "fixtures"; finish; }
mkdir -p "$T/site"; ln -s "$case0" "$T/site/"
"$FEDSEG" train --data "$T/site" --out "$T/w.safetensors" --steps 2 --patch 16 \
	--batch 1 --base 2 --depth 2 --threads 2 --quiet >/dev/null || bad "tiny train"
out=$("$FEDSEG" infer --model "$T/w.safetensors" --data "$T/g" --out "$T/o" --threads 2 2>/dev/null); rc=$?
echo "$out"
check "without --resample the batch reports failures (exit 1)" test $rc -eq 1
check "flipped T2 refused, both files named, flip said" grep -q "^flip: FAILED: .*flip_t1.nii.gz and .*flip_t2.nii.gz .*left/right flipped.*--resample" <<<"$out"
check "cropped FLAIR grid refused, both files named" grep -q "^grid: FAILED: .*grid_t1.nii.gz is 240x240x155 but .*grid_flair.nii.gz is 240x240x140" <<<"$out"
check "NaN refused naming the file and voxel" grep -q "^nan: FAILED: .*nan_flair.nii.gz: non-finite voxel value (NaN) at x=120 y=100 z=70" <<<"$out"
for c in orig hdr dtype spacing; do
	check "$c segmented" grep -q "^$c: ok " <<<"$out"
done
out=$("$FEDSEG" infer --model "$T/w.safetensors" --data "$T/g" --out "$T/o" --threads 2 --resample 2>/dev/null)
echo "$out"
check "with --resample: flip and grid segmented, the rest kept" bash -c "grep -q '^flip: ok ' <<<'$out' && grep -q '^grid: ok ' <<<'$out' && [ \$(grep -c 'done earlier' <<<'$out') -eq 4 ]"
check "segmentations compared with the original" $PY - "$T/o" "$case0" <<'PYEOF'
import sys, json, nibabel as nib, numpy as np
o, case = sys.argv[1], sys.argv[2]
ld = lambda c: nib.load(f"{o}/{c}_seg.nii.gz")
ref = np.asanyarray(ld("orig").dataobj)
t1 = nib.load(case + "/BraTS2021_00002_t1.nii.gz")
for c in ("flip", "hdr", "dtype", "spacing", "grid"):
    s = ld(c); a = np.asanyarray(s.dataobj)
    assert a.shape == ref.shape, (c, a.shape)
    same = (a == ref).mean()
    print(c, "agreement with the original", same)
    if c != "grid":
        assert same == 1.0, c       # the same voxels reach the network
    else:
        assert same > 0.5, c        # FLAIR slices outside 10..149 are 0 now
# outputs sit on the first modality's (T1's) grid and header
for c in ("flip", "grid", "orig", "dtype"):
    s = ld(c)
    assert np.allclose(s.affine, t1.affine) and s.header["sform_code"] == t1.header["sform_code"], c
sp = ld("spacing")
assert np.allclose(sp.header.get_zooms()[:3], (1.2, 1.2, 1.5))
v = lambda c: json.load(open(f"{o}/{c}_seg.nii.gz.json"))["volumes_ml"]
if v("orig")["wt"] > 0:
    assert abs(v("spacing")["wt"] / v("orig")["wt"] - 2.16) < 1e-5, (v("spacing"), v("orig"))
assert json.load(open(f"{o}/flip_seg.nii.gz.json"))["resample"] is True
print("geometry ok")
PYEOF
finish
