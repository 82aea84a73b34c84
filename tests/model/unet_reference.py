"""The fedseg U-Net written independently in PyTorch (torch.nn.functional),
loaded from the safetensors file the C test wrote; its logits and weight
gradients must equal the C network's.  usage: unet_reference.py DIR"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

d = sys.argv[1]
blob = open(d + "/weights.safetensors", "rb").read()
(n,) = struct.unpack("<Q", blob[:8])
hdr = json.loads(blob[8:8 + n])
spec = json.loads(hdr.pop("__metadata__")["fedseg.spec"])
data = blob[8 + n:]
W = {}
order = sorted(hdr.items(), key=lambda kv: kv[1]["data_offsets"][0])
for name, t in order:
    b, e = t["data_offsets"]
    a = np.frombuffer(data[b:e], dtype="<f4").reshape(t["shape"]).copy()
    W[name] = torch.from_numpy(a).requires_grad_(True)

depth, base, nmod = spec["depth"], spec["base"], len(spec["modalities"])
torch.set_num_threads(2)


def block(x, pfx, i, stride):
    x = F.conv3d(x, W[f"{pfx}.conv{i}.weight"], None, stride, 1)
    x = F.instance_norm(x, weight=W[f"{pfx}.norm{i}.weight"], bias=W[f"{pfx}.norm{i}.bias"], eps=1e-5)
    return F.leaky_relu(x, 0.01)


D = 16
x = torch.from_numpy(np.fromfile(d + "/input.raw", dtype="<f4").reshape(1, nmod, D, D, D))
skips = []
for i in range(depth):
    x = block(x, f"enc{i}", 1, 1 if i == 0 else 2)
    x = block(x, f"enc{i}", 2, 1)
    skips.append(x)
for i in range(depth - 2, -1, -1):
    x = F.conv_transpose3d(x, W[f"dec{i}.up.weight"], W[f"dec{i}.up.bias"], 2)
    x = torch.cat([x, skips[i]], 1)
    x = block(x, f"dec{i}", 1, 1)
    x = block(x, f"dec{i}", 2, 1)
y = F.conv3d(x, W["out.weight"], W["out.bias"])
r = torch.from_numpy(np.cos(0.11 * np.arange(y.numel())).astype(np.float32).reshape(y.shape))
(y * r).sum().backward()

yc = np.fromfile(d + "/logits.raw", dtype="<f4")
err = np.abs(yc - y.detach().numpy().ravel()).max() / (np.abs(yc).max() + 1e-12)
assert err < 1e-4, ("logits differ", err)
gc = np.fromfile(d + "/grads.raw", dtype="<f4")
gp = np.concatenate([W[k].grad.numpy().ravel() for k, _ in order])
gerr = np.abs(gc - gp).max() / (np.abs(gp).max() + 1e-12)
assert gerr < 1e-3, ("gradients differ", gerr)
print("ok - logits (rel err %.2e) and %d weight gradients (rel err %.2e) equal PyTorch's"
      % (err, gp.size, gerr))
