#!/usr/bin/python3
"""Generates the reference fixtures for the shim tests with PyTorch.

Run with Debian's python3-torch (same 1.13 as libtorch-dev):
    /usr/bin/python3 tests/shim/make_fixtures.py tests/shim/fixtures

Writes:
  ops.txt      named float arrays (inputs and PyTorch's outputs)
  tiny_net.pt  a torch.jit.script'ed small conv net (its input/output in ops.txt)

ops.txt format (plain text, one record after another):
  - lines starting with '#' are comments
  - a header line:  NAME NDIM D0 D1 ... D(NDIM-1)
  - then exactly prod(D) numbers (C order), whitespace separated, printed
    with %.9g so float32 values round-trip exactly. Integer tensors
    (class indices) are stored as their float value.
"""
import os
import sys

import torch
import torch.nn.functional as F

torch.manual_seed(1234)
torch.set_num_threads(1)
records = []


def put(name, t):
    t = t.detach().to(torch.float32).contiguous()
    records.append((name, list(t.shape), t.reshape(-1).tolist()))


def rnd(*shape, scale=1.0):
    return torch.randn(*shape) * scale


# conv3d: stride 2, padding 1, with bias
x = rnd(1, 2, 7, 7, 7)
w = rnd(4, 2, 3, 3, 3, scale=0.3)
b = rnd(4)
put("conv_x", x); put("conv_w", w); put("conv_b", b)
put("conv_y", F.conv3d(x, w, b, stride=2, padding=1))
put("conv_y_s1_nobias", F.conv3d(x, w, None, stride=1, padding=1))

# conv_transpose3d: stride 2, kernel 2 (PyTorch weight layout [Cin, Cout, k, k, k])
x = rnd(1, 3, 3, 3, 3)
w = rnd(3, 2, 2, 2, 2, scale=0.5)
b = rnd(2)
put("convt_x", x); put("convt_w", w); put("convt_b", b)
put("convt_y", F.conv_transpose3d(x, w, b, stride=2, padding=0))

# instance norm (affine and plain)
x = rnd(2, 3, 4, 4, 4, scale=2.0) + 1.5
g = rnd(3); be = rnd(3)
put("in_x", x); put("in_g", g); put("in_b", be)
put("in_y", F.instance_norm(x, weight=g, bias=be, eps=1e-5))
put("in_y0", F.instance_norm(x, eps=1e-5))

# pointwise
x = rnd(50, scale=3.0)
put("pw_x", x)
put("lrelu_y", F.leaky_relu(x, 0.01))
put("relu_y", F.relu(x))
put("sigmoid_y", torch.sigmoid(x))

# max pool 3d (kernel 2, stride 2) and trilinear upsampling x2
x = rnd(1, 2, 6, 6, 6)
put("pool_x", x); put("pool_y", F.max_pool3d(x, 2, 2))
x = rnd(1, 2, 3, 3, 3)
put("up_x", x)
put("up_y", F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False))

# cat along channels
a = rnd(1, 2, 2, 2, 2); c = rnd(1, 3, 2, 2, 2)
put("cat_a", a); put("cat_b", c); put("cat_y", torch.cat([a, c], 1))

# softmax / log_softmax over dim 1, flip
x = rnd(2, 4, 3, 3, scale=2.0)
put("sm_x", x)
put("sm_y", torch.softmax(x, 1))
put("lsm_y", torch.log_softmax(x, 1))
put("flip_y", torch.flip(x, [2, 3]))

# cross entropy, one hot, sum over dims, argmax, narrow
logits = rnd(2, 4, 3, 3, 3, scale=2.0)
target = torch.randint(0, 4, (2, 3, 3, 3))
put("ce_logits", logits); put("ce_t", target)
put("ce_loss", F.cross_entropy(logits, target))
put("oh_y", F.one_hot(target, 4).permute(0, 4, 1, 2, 3))
put("sd_y", logits.sum(dim=(2, 3, 4)))
put("am_y", logits.argmax(1))
put("nar_y", logits.narrow(2, 1, 2))

# backward through conv3d + instance_norm + leaky_relu + mean
x = rnd(1, 2, 6, 6, 6)
w = rnd(3, 2, 3, 3, 3, scale=0.3).requires_grad_()
b = rnd(3).requires_grad_()
g = (1.0 + 0.2 * rnd(3)).requires_grad_()
be = rnd(3).requires_grad_()
r = rnd(1, 3, 6, 6, 6)
put("bw_x", x); put("bw_w", w); put("bw_b", b); put("bw_g", g); put("bw_be", be)
put("bw_r", r)
y = F.leaky_relu(F.instance_norm(F.conv3d(x, w, b, stride=1, padding=1),
                                 weight=g, bias=be, eps=1e-5), 0.01)
loss = (y * r).mean()
loss.backward()
put("bw_loss", loss)
put("bw_gw", w.grad); put("bw_gb", b.grad); put("bw_gg", g.grad); put("bw_gbe", be.grad)

# optimisers: 3 steps from known parameters with known gradients
p0 = rnd(3, 4); p1 = rnd(5)
put("opt_p0", p0); put("opt_p1", p1)
grads = [(rnd(3, 4), rnd(5)) for _ in range(3)]
for k, (g0, g1) in enumerate(grads, 1):
    put("opt_g0_%d" % k, g0); put("opt_g1_%d" % k, g1)


def run_opt(prefix, make):
    q0 = p0.clone().requires_grad_(); q1 = p1.clone().requires_grad_()
    opt = make([q0, q1])
    for k, (g0, g1) in enumerate(grads, 1):
        opt.zero_grad()
        # same route as the C test: grad of sum(p * g) is g
        ((q0 * g0).sum() + (q1 * g1).sum()).backward()
        opt.step()
        put("%s_p0_%d" % (prefix, k), q0); put("%s_p1_%d" % (prefix, k), q1)


run_opt("adam", lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.9, 0.99),
                                            eps=1e-8, weight_decay=1e-3))
run_opt("sgd", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9,
                                          weight_decay=1e-3))


# TorchScript module
class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv3d(2, 3, 3, padding=1)
        self.norm = torch.nn.InstanceNorm3d(3, affine=True)
        self.c2 = torch.nn.Conv3d(3, 2, 1)

    def forward(self, x):
        return self.c2(F.leaky_relu(self.norm(self.c1(x)), 0.01))


net = TinyNet()
with torch.no_grad():
    net.norm.weight.copy_(1.0 + 0.1 * torch.randn(3))
    net.norm.bias.copy_(0.1 * torch.randn(3))
net.eval()
scripted = torch.jit.script(net)
x = rnd(1, 2, 5, 5, 5)
with torch.no_grad():
    put("mod_x", x); put("mod_y", scripted(x))

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "fixtures")
os.makedirs(out, exist_ok=True)
scripted.save(os.path.join(out, "tiny_net.pt"))
with open(os.path.join(out, "ops.txt"), "w") as f:
    f.write("# shim test fixtures, generated by tests/shim/make_fixtures.py with torch %s\n"
            % torch.__version__)
    f.write("# format: 'NAME NDIM D0 .. Dn-1' then prod(D) numbers (%.9g), C order\n")
    for name, shape, vals in records:
        f.write("%s %d %s\n" % (name, len(shape), " ".join(str(d) for d in shape)))
        for i in range(0, len(vals), 8):
            f.write(" ".join("%.9g" % v for v in vals[i:i + 8]) + "\n")
print("wrote %d arrays to %s" % (len(records), out))
