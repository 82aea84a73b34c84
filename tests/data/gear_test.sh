#!/bin/bash
# The Flywheel gear: a /flywheel/v0-shaped folder laid out as the
# Dockerfile does (manifest.json, run, model/), a config.json like the
# engine writes, the inputs under input/<name>/; gear/run (the manifest's
# command) must write the label map on the input's grid, its provenance
# and a valid output/.metadata.json.
. "$FEDSEG_SRC/tests/lib.sh"
need_data
G="$FEDSEG_SRC/gear"
case0="$DATA/brats2021/BraTS2021_00000"
mkdir -p "$T/site"; ln -s "$case0" "$T/site/"
"$FEDSEG" train --data "$T/site" --out "$T/w.safetensors" --steps 2 --patch 16 \
	--batch 1 --base 2 --depth 2 --threads 2 --quiet >/dev/null || bad "tiny train"

check "manifest.json follows the gear spec" $PY - "$G/manifest.json" <<'PYEOF'
import json, re, sys
m = json.load(open(sys.argv[1]))
allowed = {"name", "label", "description", "author", "maintainer", "license", "url", "source",
           "version", "environment", "command", "custom", "inputs", "config", "cite", "capabilities"}
for k in ("name", "label", "description", "author", "license", "version", "url", "source", "inputs", "config"):
    assert k in m, k
assert set(m) <= allowed, set(m) - allowed
assert re.fullmatch(r"[a-z0-9\-]+", m["name"]) and len(m["name"]) <= 100
assert {"t1", "t1ce", "t2", "flair", "model"} == set(m["inputs"])
for k, v in m["inputs"].items():
    assert v["base"] == "file" and re.fullmatch(r"[A-Za-z0-9_-]+", k)
assert m["inputs"]["model"].get("optional") is True
for k in ("t1", "t1ce", "t2", "flair"):
    assert m["inputs"][k]["type"] == {"enum": ["nifti"]} and not m["inputs"][k].get("optional")
c = m["config"]
assert {"device", "threads", "labels", "tta"} <= set(c)
assert c["device"]["enum"] == ["auto", "cpu", "gpu"]
for k, v in c.items():
    assert v["type"] in ("string", "integer", "number", "boolean", "array")
    assert not ("default" in v and "optional" in v), k
assert m["command"] == "/flywheel/v0/run"
print("manifest ok")
PYEOF
check "Dockerfile: Debian 12, only packages setup.sh installs, COPY sources exist" $PY - "$G/Dockerfile" "$FEDSEG_SRC" <<'PYEOF'
import re, sys, os
d = open(sys.argv[1]).read(); src = sys.argv[2]
assert re.search(r"^FROM debian:12\b", d, re.M)
apt = re.search(r"apt-get install -y --no-install-recommends(.*?)&&", d, re.S).group(1)
pk = set(apt.replace("\\", " ").split()) - {"ca-certificates"}
setup = open(src + "/scripts/setup.sh").read()
spk = set(re.search(r'PKGS="(.*?)"', setup, re.S).group(1).split())
assert pk <= spk, pk - spk
for s in re.findall(r"^COPY (.+?) /flywheel", d, re.M):
    for p in s.split():
        assert os.path.exists(os.path.join(src, p)), p
print("dockerfile ok")
PYEOF

# /flywheel/v0 as the image lays it out, and the engine's config.json.
V="$T/flywheel/v0"
mkdir -p "$V/input" "$V/output" "$V/model"
cp "$G/manifest.json" "$G/run" "$V/"
declare -A src=([t1]=t1 [t1ce]=t1ce [t2]=t2 [flair]=flair)
for k in t1 t1ce t2 flair; do
	mkdir -p "$V/input/$k"; ln -s "$case0/BraTS2021_00000_${src[$k]}.nii.gz" "$V/input/$k/sub-000_${k^^}.nii.gz"
done
mkdir -p "$V/input/model"; cp "$T/w.safetensors" "$V/input/model/global.safetensors"
$PY - "$V" <<'PYEOF'
import json, sys
v = sys.argv[1]
cls = {"t1": {"Intent": ["Structural"], "Measurement": ["T1"]},
       "t1ce": {"Intent": ["Structural"], "Measurement": ["T1"], "Features": ["Contrast-Agent"]},
       "t2": {"Intent": ["Structural"], "Measurement": ["T2"]},
       "flair": {"Intent": ["Structural"], "Measurement": ["T2"], "Features": ["FLAIR"]}}
inputs = {}
for i, (k, c) in enumerate(cls.items()):
    name = f"sub-000_{k.upper()}.nii.gz"
    inputs[k] = {"base": "file", "hierarchy": {"type": "acquisition", "id": "65a0c1f2e4b0a1b2c3d4e50%d" % i},
                 "location": {"name": name, "path": f"/flywheel/v0/input/{k}/{name}"},
                 "object": {"type": "nifti", "modality": "MR", "classification": c, "tags": [], "info": {},
                            "measurements": sum(c.values(), [])}}
inputs["model"] = {"base": "file", "location": {"name": "global.safetensors",
                   "path": "/flywheel/v0/input/model/global.safetensors"}, "object": {"type": None}}
json.dump({"config": {"device": "auto", "threads": 2, "labels": "brats2017", "tta": False},
           "inputs": inputs, "destination": {"type": "analysis", "id": "65a0c2aae4b0a1b2c3d4e5ff"}},
          open(v + "/config.json", "w"), indent=1)
PYEOF
check "gear/run exits 0" env -i PATH="$FEDSEG_BIN/node:/usr/bin:/bin" bash -c "cd '$V' && ./run"
ls -la "$V/output"
check "outputs: label map on the input's grid, provenance, metadata" $PY - "$V" "$case0" "$T/w.safetensors" <<'PYEOF'
import sys, json, hashlib, os, nibabel as nib, numpy as np
v, case, w = sys.argv[1:4]
out = v + "/output"
assert sorted(os.listdir(out)) == [".metadata.json", "sub-000_seg.nii.gz", "sub-000_seg_provenance.json"], os.listdir(out)
a = nib.load(case + "/BraTS2021_00000_t1.nii.gz"); b = nib.load(out + "/sub-000_seg.nii.gz")
assert a.shape == b.shape and b.get_data_dtype() == np.uint8
for k in ("qform_code", "sform_code", "pixdim", "srow_x", "srow_y", "srow_z", "quatern_b", "quatern_c",
          "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"):
    assert np.array_equal(a.header[k], b.header[k]), k
assert set(np.unique(np.asanyarray(b.dataobj)).tolist()) <= {0, 1, 2, 4}
h = lambda f: hashlib.sha256(open(f, "rb").read()).hexdigest()
p = json.load(open(out + "/sub-000_seg_provenance.json"))
assert p["model"]["sha256"] == h(w) and p["device"] == "cpu" and p["software"].startswith("fedseg ")
for k, m in (("t1", "t1"), ("t1c", "t1ce"), ("t2", "t2"), ("flair", "flair")):
    assert p["inputs"][k]["sha256"] == h(case + f"/BraTS2021_00000_{m}.nii.gz"), k
    assert p["inputs"][k]["file"] == f"sub-000_{m.upper()}.nii.gz"
assert p["context"]["destination"]["type"] == "analysis" and p["created"].endswith("Z")
md = json.load(open(out + "/.metadata.json"))
f, = md["acquisition"]["files"]
assert f["name"] == "sub-000_seg.nii.gz" and os.path.exists(out + "/" + f["name"])
assert f["type"] == "nifti" and f["modality"] == "MR"
# a valid classification: MR aspects and values of the default schema
schema = {"Intent": {"Localizer", "Shim", "Calibration", "Fieldmap", "Structural", "Functional",
                     "Screenshot", "Non-Image", "Spectroscopy"},
          "Features": {"Derived", "Quantitative", "3D", "2D", "Contrast-Agent", "FLAIR"},
          "Measurement": {"T1", "T2", "PD"}}
assert f["classification"] and all(k in schema and set(vs) <= schema[k] and vs for k, vs in f["classification"].items())
assert f["info"]["labels"]["4"] == "enhancing tumour"
assert f["info"]["fedseg"]["model"]["sha256"] == h(w)
print("gear outputs ok")
PYEOF
# Without a model input and no built-in model: a one-line reason, exit != 0.
$PY -c "
import json,sys; c=json.load(open(sys.argv[1])); del c['inputs']['model']; c['config']['labels']='brats2023'
json.dump(c, open(sys.argv[1],'w'))" "$V/config.json"
rm -f "$V/output/"*
expect_fail "no model at all" "no model input" "$V/output/sub-000_seg.nii.gz" \
	env -i PATH="$FEDSEG_BIN/node:/usr/bin:/bin" bash "$V/run"
cp "$T/w.safetensors" "$V/model/fedseg.safetensors"
check "built-in model and brats2023 labels" env -i PATH="$FEDSEG_BIN/node:/usr/bin:/bin" bash "$V/run"
check "brats2023: enhancing is 3" $PY -c "
import sys, json, nibabel as nib, numpy as np
v = sys.argv[1]; a = np.asanyarray(nib.load(v + '/output/sub-000_seg.nii.gz').dataobj)
assert 4 not in np.unique(a)
assert json.load(open(v + '/output/.metadata.json'))['acquisition']['files'][0]['info']['labels']['3'] == 'enhancing tumour'" "$V"
$PY -c "
import json,sys; c=json.load(open(sys.argv[1])); c['config']['device']='gpu'; json.dump(c, open(sys.argv[1],'w'))" "$V/config.json"
if [ "$("$PY" -c 'import torch; print(torch.cuda.is_available())')" = "False" ]; then
	expect_fail "device gpu without CUDA" "no CUDA device" "" env -i PATH="$FEDSEG_BIN/node:/usr/bin:/bin" bash "$V/run"
fi
finish
