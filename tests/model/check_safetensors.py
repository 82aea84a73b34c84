"""Reads a fedseg safetensors file with nothing but json + numpy (the format's
own definition) and compares it with the raw float32 dump the C test wrote.
usage: check_safetensors.py W.safetensors W.raw"""
import json
import struct
import sys

import numpy as np

path, raw = sys.argv[1], sys.argv[2]
blob = open(path, "rb").read()
(n,) = struct.unpack("<Q", blob[:8])
hdr = json.loads(blob[8:8 + n])
meta = hdr.pop("__metadata__")
spec = json.loads(meta["fedseg.spec"])
assert spec["arch"] == "unet3d", spec
data = blob[8 + n:]
parts = []
for name, t in sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0]):
    b, e = t["data_offsets"]
    a = np.frombuffer(data[b:e], dtype="<f4").reshape(t["shape"])
    assert t["dtype"] == "F32"
    parts.append(a.ravel())
flat = np.concatenate(parts)
ref = np.fromfile(raw, dtype="<f4")
assert flat.shape == ref.shape, (flat.shape, ref.shape)
assert np.array_equal(flat, ref)
print("ok - %d tensors, %d floats read independently equal the C vector" % (len(hdr), flat.size))
