#!/bin/bash
# precision_real.sh TEST_PRECISION_BIN - mixed-precision inference on a real
# case (CPU): the shim/forward checks of test_precision, then `fedseg infer
# --precision bf16` against fp32 (label maps compared in numpy), fp16 on the
# CPU refused with one line and no output, the precision in the provenance.
#
# Model: tests/model/fixtures/precision_small.safetensors, a small trained
# U-Net (base 4, depth 3; 90 KB) made with
#   fedseg train --data <BraTS2021_00000,00002,00005,00006> --steps 300 \
#     --patch 32 --batch 2 --base 4 --depth 3 --lr 0.01 --threads 2 --seed 7
# A trained model matters here: an untrained one labels every voxel
# background, and a label-map comparison would then prove nothing. The case
# segmented (BraTS2021_00003) was not among its training cases.
. "$FEDSEG_SRC/tests/lib.sh"
need_data
bin=$1
W="$FEDSEG_SRC/tests/model/fixtures/precision_small.safetensors"
case3="$DATA/brats2021/BraTS2021_00003"
[ -d "$case3" ] || { echo "FAIL: $case3 not found" >&2; exit 1; }

check "shim autocast + forward on a real window (test_precision)" "$bin" "$W" "$case3"

for p in fp32 bf16; do
	check "infer --precision $p" "$FEDSEG" infer --model "$W" --case "$case3" \
		--out "$T/$p.nii.gz" --threads 2 --precision "$p"
done
check "provenance records the precision" $PY - "$T/fp32.nii.gz.json" "$T/bf16.nii.gz.json" <<'PYEOF'
import sys, json
a, b = (json.load(open(f)) for f in sys.argv[1:3])
assert a["precision"] == "fp32" and b["precision"] == "bf16", (a["precision"], b["precision"])
assert a["device"] == b["device"] == "cpu"
print("precision", a["precision"], b["precision"])
PYEOF
# Measured on this model and case (2 threads, AVX-512 BF16 CPU): 2213 of
# 8.9 M voxels differ; Dice bf16 vs fp32 WT 0.9972, TC 0.9977, ET 0.9981,
# i.e. within the issue's 0.005. The model is weakly trained (Dice ~0.2 vs
# the expert label), so many voxels sit near a class boundary where a
# 1e-3 change of a probability flips the argmax; a better model flips
# fewer. The test asserts 0.99 (about 3x the measured disagreement) so that
# another CPU's bf16 kernels do not make it flaky, and that at least one
# voxel differs (an identical map would mean bf16 did not run).
check "bf16 label map: differs from fp32 somewhere, Dice >= 0.99 per region" $PY - "$T/fp32.nii.gz" "$T/bf16.nii.gz" <<'PYEOF'
import sys, nibabel as nib, numpy as np
a = np.asanyarray(nib.load(sys.argv[1]).dataobj).astype(int)
b = np.asanyarray(nib.load(sys.argv[2]).dataobj).astype(int)
assert a.shape == b.shape
diff = int((a != b).sum())
print("voxels differing: %d of %d" % (diff, a.size))
assert diff > 0, "bf16 label map identical to fp32: reduced precision did not run"
for name, labs in (("wt", (1, 2, 4)), ("tc", (1, 4)), ("et", (4,))):
    x, y = np.isin(a, labs), np.isin(b, labs)
    assert x.sum() > 1000, (name, "fp32 map has almost no %s: model not trained?" % name)
    d = 2.0 * (x & y).sum() / (x.sum() + y.sum())
    print("Dice %s bf16 vs fp32: %.5f (%d / %d voxels)" % (name, d, y.sum(), x.sum()))
    assert d >= 0.99, (name, d)
PYEOF

expect_fail "--precision fp16 on the CPU is refused" "fp16 needs a CUDA device" \
	"$T/f16.nii.gz" "$FEDSEG" infer --model "$W" --case "$case3" \
	--out "$T/f16.nii.gz" --threads 2 --precision fp16 --device cpu
check "no provenance left for the refused fp16 run" test ! -e "$T/f16.nii.gz.json"
expect_fail "--precision with a bad name" "expected fp32, fp16 or bf16" \
	"$T/bad.nii.gz" "$FEDSEG" infer --model "$W" --case "$case3" \
	--out "$T/bad.nii.gz" --precision fp8

# Batch mode hands --precision to its worker processes.
mkdir -p "$T/one"
ln -s "$case3" "$T/one/"
check "batch --jobs 2 --precision bf16" "$FEDSEG" infer --model "$W" --data "$T/one" \
	--out "$T/batch" --jobs 2 --threads 2 --precision bf16
check "batch worker ran bf16, same labels as the single-case bf16 run" $PY - \
	"$T/batch/BraTS2021_00003_seg.nii.gz" "$T/bf16.nii.gz" <<'PYEOF'
import sys, json, nibabel as nib, numpy as np
p = json.load(open(sys.argv[1] + ".json"))
assert p["precision"] == "bf16", p["precision"]
a = np.asanyarray(nib.load(sys.argv[1]).dataobj)
b = np.asanyarray(nib.load(sys.argv[2]).dataobj)
# same weights, input and precision; the worker has 1 thread, not 2, so
# summation order may differ: allow a handful of voxels.
print("batch vs single bf16: %d voxels differ" % (a != b).sum())
assert (a != b).mean() < 1e-4
PYEOF
finish
