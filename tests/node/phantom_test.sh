#!/bin/bash
# Synthetic phantoms: valid BraTS-named cases whose tumour regions differ in
# intensity as on real MRI; `fedseg data scan` finds them; a short training
# on them lowers the loss.
. "$FEDSEG_SRC/tests/lib.sh"
check "phantoms written" "$FEDSEG" data phantom --out "$T/ph" --cases 3 --size 48 --seed 4
check "scan finds 3 labelled cases" bash -c "'$FEDSEG' data scan '$T/ph' | grep -c '+label' | grep -qx 3"
check "scan --format json lists the four modalities" $PY -c "
import json,subprocess,sys
r=json.loads(subprocess.check_output([sys.argv[1],'data','scan','--format','json',sys.argv[2]]))
assert len(r['cases'])==3 and all(set(c['modalities'])=={'t1','t1c','t2','flair'} and c['label'] for c in r['cases'])" "$FEDSEG" "$T/ph"
check "enhancing rim bright on T1c, edema bright on FLAIR" $PY - "$T/ph/Phantom_001" <<'PYEOF'
import sys, nibabel as nib, numpy as np
d = sys.argv[1]
seg = np.asanyarray(nib.load(d + "/Phantom_001_seg.nii.gz").dataobj)
t1c = nib.load(d + "/Phantom_001_t1ce.nii.gz").get_fdata()
fl = nib.load(d + "/Phantom_001_flair.nii.gz").get_fdata()
brain = (seg == 0) & (t1c > 0)
assert set(np.unique(seg)) == {0, 1, 2, 4}
assert t1c[seg == 4].mean() > 1.8 * t1c[brain].mean()
assert fl[seg == 2].mean() > 1.8 * fl[brain].mean()
PYEOF
out=$("$FEDSEG" train --data "$T/ph" --out "$T/w.safetensors" --steps 30 --patch 32 \
	--batch 2 --base 4 --depth 3 --lr 0.01 --threads 2 --quiet)
check "training on phantoms lowers the loss" $PY -c "
import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r['last_loss'] < 0.8*r['first_loss'] else 1)" "$out"
expect_fail "phantom without --out" "--out" "" "$FEDSEG" data phantom
finish
