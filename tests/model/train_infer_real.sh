#!/bin/bash
# fedseg train lowers the loss on real cases; fedseg infer writes a label map
# on the input's exact grid with provenance; fedseg eval matches numpy.
. "$FEDSEG_SRC/tests/lib.sh"
need_data
mkdir -p "$T/site"
ln -s "$DATA/brats2021/BraTS2021_00000" "$T/site/"
ln -s "$DATA/brats2021/BraTS2021_00002" "$T/site/"

out=$("$FEDSEG" train --data "$T/site" --out "$T/w.safetensors" --steps 40 \
	--patch 32 --batch 2 --base 4 --depth 3 --lr 0.01 --threads 2 --seed 3 --quiet)
echo "$out"
check "train wrote weights" test -s "$T/w.safetensors"
check "train lowered the loss" $PY -c "
import json,sys; r=json.loads(sys.argv[1]); print(r['first_loss'], r['last_loss'])
sys.exit(0 if r['last_loss'] < 0.9 * r['first_loss'] else 1)" "$out"

case3="$DATA/brats2021/BraTS2021_00003"
check "infer on a real case" "$FEDSEG" infer --model "$T/w.safetensors" --case "$case3" \
	--out "$T/seg.nii.gz" --threads 2
check "label map on the input's grid, uint8, BraTS 2017 labels" $PY - "$case3/BraTS2021_00003_flair.nii.gz" "$T/seg.nii.gz" <<'PYEOF'
import sys, nibabel as nib, numpy as np
a, b = nib.load(sys.argv[1]), nib.load(sys.argv[2])
ha, hb = a.header, b.header
assert a.shape == b.shape, (a.shape, b.shape)
assert np.allclose(a.affine, b.affine), (a.affine, b.affine)
for k in ("qform_code", "sform_code", "pixdim", "srow_x", "srow_y", "srow_z",
          "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"):
    assert np.array_equal(ha[k], hb[k]), (k, ha[k], hb[k])
assert b.get_data_dtype() == np.uint8, b.get_data_dtype()
v = set(np.unique(np.asanyarray(b.dataobj)).tolist())
assert v <= {0, 1, 2, 4}, v
print("grid ok; labels", sorted(v))
PYEOF
check "provenance names inputs with their SHA-256" $PY - "$T/seg.nii.gz.json" "$case3/BraTS2021_00003_flair.nii.gz" "$T/w.safetensors" <<'PYEOF'
import sys, json, hashlib
p = json.load(open(sys.argv[1]))
h = lambda f: hashlib.sha256(open(f, "rb").read()).hexdigest()
assert p["inputs"]["flair"]["sha256"] == h(sys.argv[2])
assert p["inputs"]["flair"]["file"] == "BraTS2021_00003_flair.nii.gz"
assert p["model"]["sha256"] == h(sys.argv[3])
assert p["device"] == "cpu"
print("provenance ok")
PYEOF

check "--device auto runs on the CPU when this libtorch has no CUDA" bash -c '
	"$0" infer --model "$1" --case "$2" --out "$3/auto.nii.gz" --device auto --threads 2 2>/dev/null &&
	/usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1]))[\"device\"]; sys.exit(0 if d == \"cpu\" else 1)" "$3/auto.nii.gz.json"' \
	"$FEDSEG" "$T/w.safetensors" "$case3" "$T"

# eval against numpy, to 1e-6 (prediction vs the expert label).
ev=$("$FEDSEG" eval --pred "$T/seg.nii.gz" --ref "$case3/BraTS2021_00003_seg.nii.gz")
echo "$ev"
check "eval Dice equals numpy to 1e-6" $PY - "$ev" "$T/seg.nii.gz" "$case3/BraTS2021_00003_seg.nii.gz" <<'PYEOF'
import sys, json, nibabel as nib, numpy as np
r = json.loads(sys.argv[1])
p = np.asanyarray(nib.load(sys.argv[2]).dataobj).astype(int)
g = np.asanyarray(nib.load(sys.argv[3]).dataobj).astype(int)
reg = {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}
for k, labs in reg.items():
    a, b = np.isin(p, labs), np.isin(g, labs)
    d = 1.0 if a.sum() + b.sum() == 0 else 2.0 * (a & b).sum() / (a.sum() + b.sum())
    assert abs(d - r["dice"][k]) < 1e-6, (k, d, r["dice"][k])
    assert abs(b.sum() / 1000.0 - r["ref_volume_ml"][k]) < 1e-6
print("dice", {k: round(r["dice"][k], 4) for k in reg})
PYEOF
# The same subject in 2021 and 2023 conventions: identical regions.
ev=$("$FEDSEG" eval --pred "$DATA/brats2023/BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz" \
	--ref "$DATA/brats2021/BraTS2021_00000/BraTS2021_00000_seg.nii.gz")
check "2023 and 2021 labels of one subject agree (Dice 1, HD95 0)" $PY -c "
import json,sys; r=json.loads(sys.argv[1])
assert all(abs(r['dice'][k]-1)<1e-12 and r['hd95'][k]==0 for k in ('wt','tc','et')), r" "$ev"
finish
