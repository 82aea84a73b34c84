#!/bin/bash
# Each bad input gets a one-line reason naming the file, a non-zero exit and
# no output file.
. "$FEDSEG_SRC/tests/lib.sh"
need_data
src="$DATA/brats2021/BraTS2021_00005"
"$FEDSEG" train --data "$src" --out "$T/w.safetensors" --steps 1 --patch 16 \
	--batch 1 --base 2 --depth 2 --threads 2 --quiet >/dev/null || bad "tiny train"

mkcase() { # mkcase NAME: a case folder of symlinks to the real files
	mkdir -p "$T/$1"
	for m in t1 t1ce t2 flair; do
		ln -sf "$src/BraTS2021_00005_$m.nii.gz" "$T/$1/$1_$m.nii.gz"
	done
}
infer() { "$FEDSEG" infer --model "$T/w.safetensors" --threads 2 "$@"; }

mkcase trunc; rm "$T/trunc/trunc_flair.nii.gz"
head -c 400000 "$src/BraTS2021_00005_flair.nii.gz" > "$T/trunc/trunc_flair.nii.gz"
expect_fail "truncated NIfTI" "trunc_flair.nii.gz" "$T/out/a.nii.gz" \
	infer --case "$T/trunc" --out "$T/out/a.nii.gz"
mkdir -p "$T/out"
mkcase junk; rm "$T/junk/junk_flair.nii.gz"; echo "not an image" > "$T/junk/junk_flair.nii.gz"
expect_fail "non-NIfTI file" "junk_flair.nii.gz" "$T/out/b.nii.gz" \
	infer --case "$T/junk" --out "$T/out/b.nii.gz"
mkcase miss; rm "$T/miss/miss_t2.nii.gz"
expect_fail "missing modality" "t2" "$T/out/c.nii.gz" \
	infer --case "$T/miss" --out "$T/out/c.nii.gz"

$PY - "$src" "$T" <<'PYEOF'
import sys, numpy as np, nibabel as nib
src, t = sys.argv[1], sys.argv[2]
im = nib.load(src + "/BraTS2021_00005_flair.nii.gz")
d = np.asanyarray(im.dataobj).astype(np.float32)
nib.save(nib.Nifti1Image(np.stack([d, d], -1), im.affine, im.header), t + "/four_d.nii.gz")
nib.save(nib.Nifti1Image(d[:200], im.affine, im.header), t + "/small.nii.gz")
dn = d.copy(); dn[100, 100, 70] = np.nan
h = im.header.copy(); h.set_data_dtype(np.float32)
nib.save(nib.Nifti1Image(dn, im.affine, h), t + "/nan.nii.gz")
PYEOF
args() { echo --t1 "$src/BraTS2021_00005_t1.nii.gz" --t1c "$src/BraTS2021_00005_t1ce.nii.gz" \
	--t2 "$src/BraTS2021_00005_t2.nii.gz"; }
expect_fail "4-D with two volumes" "four_d.nii.gz" "$T/out/d.nii.gz" \
	infer $(args) --flair "$T/four_d.nii.gz" --out "$T/out/d.nii.gz"
expect_fail "grids disagree (names both files)" "small.nii.gz.*BraTS2021_00005\|BraTS2021_00005.*small.nii.gz" \
	"$T/out/e.nii.gz" infer $(args) --flair "$T/small.nii.gz" --out "$T/out/e.nii.gz"
expect_fail "NaN voxels" "nan.nii.gz" "$T/out/f.nii.gz" \
	infer $(args) --flair "$T/nan.nii.gz" --out "$T/out/f.nii.gz"
expect_fail "unwritable output path" "/nonexistent-dir/g.nii.gz" "" \
	infer --case "$src" --out /nonexistent-dir/g.nii.gz
$PY - "$T/w.safetensors" "$T/other.safetensors" <<'PYEOF'
import sys, struct, json
b = open(sys.argv[1], "rb").read(); n, = struct.unpack("<Q", b[:8])
h = json.loads(b[8:8 + n]); s = json.loads(h["__metadata__"]["fedseg.spec"])
s["base"] = 3; h["__metadata__"]["fedseg.spec"] = json.dumps(s)
hb = json.dumps(h).encode(); hb += b" " * (-len(hb) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PYEOF
expect_fail "weights from another model spec" "other.safetensors" "$T/out/h.nii.gz" \
	"$FEDSEG" infer --model "$T/other.safetensors" --case "$src" --out "$T/out/h.nii.gz"
expect_fail "bad option value" "threads" "" "$FEDSEG" train --data "$src" --out "$T/x" --threads abc
expect_fail "unknown device" "gpu7" "" "$FEDSEG" train --data "$src" --out "$T/x" --device gpu7
finish
