#!/usr/bin/python3
"""Variants of one real case that real sites produce, as BraTS-named case
folders under OUT: a left/right-flipped T2 (same anatomy, flipped storage),
a FLAIR on a cropped grid, qform-only / sform-only / disagreeing qform
headers with codes 1-4, uint16 / float64 / scaled int16 / 4-D-one-volume
files, 1.2 x 1.2 x 1.5 mm voxels, and a NaN voxel.

usage: make_geometry.py CASE_DIR OUT
"""
import os, sys
import numpy as np, nibabel as nib

src, out = sys.argv[1], sys.argv[2]
cid = os.path.basename(src.rstrip("/"))
MODS = ("t1", "t1ce", "t2", "flair")
img = {m: nib.load(f"{src}/{cid}_{m}.nii.gz") for m in MODS}
dat = {m: np.asanyarray(i.dataobj) for m, i in img.items()}
A = img["t1"].affine


def save(case, m, data, affine, dtype=None, q=(None, 1), s=(None, 1), slope=None):
    os.makedirs(f"{out}/{case}", exist_ok=True)
    h = img[m].header.copy()
    if dtype is not None:
        h.set_data_dtype(dtype)
    im = nib.Nifti1Image(data, affine, h)
    qa = affine if q[0] is None else q[0]
    sa = affine if s[0] is None else s[0]
    im.header.set_qform(qa, code=q[1]) if q[1] else im.header.set_qform(None, code=0)
    im.header.set_sform(sa, code=s[1]) if s[1] else im.header.set_sform(None, code=0)
    if slope is not None:
        im.header.set_slope_inter(slope, 0.0)
    nib.save(im, f"{out}/{case}/{case}_{m}.nii.gz")


def link(case, m):
    os.makedirs(f"{out}/{case}", exist_ok=True)
    os.symlink(f"{src}/{cid}_{m}.nii.gz", f"{out}/{case}/{case}_{m}.nii.gz")


for m in MODS:
    link("orig", m)
# T2 stored left/right flipped: voxel i' = nx-1-i, affine adjusted (same world)
nx = dat["t2"].shape[0]
F = np.array([[-1, 0, 0, nx - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
for m in ("t1", "t1ce", "flair"):
    link("flip", m)
save("flip", "t2", dat["t2"][::-1].copy(), A @ F)
# FLAIR on a cropped grid (slices 10..149): same world, other dims
S = np.eye(4); S[2, 3] = 10
for m in ("t1", "t1ce", "t2"):
    link("grid", m)
save("grid", "flair", dat["flair"][:, :, 10:150].copy(), A @ S)
# headers: qform only; sform only (code 2); sform code 4 with a different
# qform code 3 (sform wins); qform and sform codes 0 on a copy that stays aligned? no: flair unchanged
R = A.copy(); R[0, 3] += 7.0
save("hdr", "t1", dat["t1"], A, q=(None, 1), s=(None, 0))
save("hdr", "t1ce", dat["t1ce"], A, q=(None, 0), s=(None, 2))
save("hdr", "t2", dat["t2"], A, q=(R, 3), s=(None, 4))
link("hdr", "flair")
# datatypes: uint16, float64, int16 scaled by 2 (raw halves... stored raw, slope 2), 4-D with one volume
save("dtype", "t1", dat["t1"].astype(np.uint16), A, dtype=np.uint16)
save("dtype", "t1ce", dat["t1ce"].astype(np.float64), A, dtype=np.float64)
save("dtype", "t2", dat["t2"].astype(np.int16), A, dtype=np.int16, slope=2.0)
save("dtype", "flair", dat["flair"][..., None].copy(), A)
# 1.2 x 1.2 x 1.5 mm voxels
Z = np.diag([1.2, 1.2, 1.5, 1.0])
for m in MODS:
    save("spacing", m, dat[m], A @ Z)
# a NaN voxel
for m in ("t1", "t1ce", "t2"):
    link("nan", m)
f = dat["flair"].astype(np.float32); f[120, 100, 70] = np.nan
save("nan", "flair", f, A, dtype=np.float32)
