#!/usr/bin/python3
"""Cross-checks of the imaging room against independent Python code.

nibabel reads the same files (values, headers); Dice and HD95 are
recomputed by brute force (pure Python on small volumes, chunked numpy on
a real segmentation) with no scipy. Usage: crosscheck.py PATH/TO/img_probe
"""
import json
import math
import os
import random
import subprocess
import sys
import tempfile

import nibabel as nib
import numpy as np

PROBE = sys.argv[1]
DATA = os.environ.get("FEDSEG_DATA", "/work/shared/data")
FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, file=sys.stderr)


def probe(*args):
    r = subprocess.run([PROBE] + [str(a) for a in args], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError("img_probe %s: %s" % (args[0], r.stderr.strip()))
    return r.stdout


def data(rel):
    p = os.path.join(DATA, rel)
    if not os.path.exists(p):
        print("FAIL: real data not found: %s (set FEDSEG_DATA)" % p,
              file=sys.stderr)
        sys.exit(1)
    return p


# ---- 1. voxel values equal nibabel's get_fdata ---------------------------
def test_values():
    files = [
        "brats2021/BraTS2021_00000/BraTS2021_00000_flair.nii.gz",
        "brats2021/BraTS2021_00000/BraTS2021_00000_seg.nii.gz",
        # scl_slope = 0, header extensions (data at 2880)
        "brats2019/BraTS19_CBICA_ASK_1/BraTS19_CBICA_ASK_1_t1ce.nii.gz",
        # float32 seg, sform_code 0
        "brats2023/BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz",
        # uint16 seg
        "brats2021/BraTS2021_00019/BraTS2021_00019_seg.nii.gz",
        # int32 with slope 2.3e-10 / inter 0.5; int16 with slope and inter
        "brats2013-deepmedic/test/brats_2013_pat0002_1/brainmask.nii.gz",
        "tcga-du-7294/normalized_bet/TCGA-DU-7294_t1_bet_normalized.nii.gz",
        "brats2013-deepmedic/train/brats_2013_pat0005_1/Flair_subtrMeanDivStd.nii.gz",
    ]
    rng = random.Random(7)
    for rel in files:
        path = data(rel)
        img = nib.load(path)
        arr = img.get_fdata()
        check(arr.shape == (240, 240, 155), "%s shape %s" % (rel, arr.shape))
        pts = [(rng.randrange(240), rng.randrange(240), rng.randrange(155))
               for _ in range(40)]
        nz = np.argwhere(arr != 0)
        for k in rng.sample(range(len(nz)), min(40, len(nz))):
            pts.append(tuple(int(v) for v in nz[k]))
        flat = []
        for p in pts:
            flat.extend(p)
        got = [float(v) for v in probe("sample", path, *flat).split()]
        for p, g in zip(pts, got):
            want = float(arr[p])
            if abs(g - want) > 1e-6 * max(1.0, abs(want)):
                check(False, "%s %s: C %r, nibabel %r" % (rel, p, g, want))
                break
        check(len(got) == len(pts), "%s: sample count" % rel)
        # affine: sform if set, else qform
        lines = probe("header", path).split("\n")
        aff = np.array([[float(v) for v in lines[2 + i].split()]
                        for i in range(4)])
        check(np.allclose(aff, img.affine, atol=1e-6),
              "%s: affine %s vs nibabel %s" % (rel, aff, img.affine))


# ---- 2. label write keeps the input's header ----------------------------
def test_label_write(tmp):
    cases = [
        ("brats2021/BraTS2021_00000/BraTS2021_00000_flair.nii.gz",
         "brats2021/BraTS2021_00000/BraTS2021_00000_seg.nii.gz"),
        ("brats2023/BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz",
         "brats2023/BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz"),
        ("brats2019/BraTS19_CBICA_ASK_1/BraTS19_CBICA_ASK_1_flair.nii.gz",
         "brats2019/BraTS19_CBICA_ASK_1/BraTS19_CBICA_ASK_1_seg.nii.gz"),
        ("tcga-du-7294/normalized_bet/TCGA-DU-7294_t1_bet_normalized.nii.gz",
         "tcga-du-7294/segmentation/isen-20.nii.gz"),
    ]
    for i, (like_rel, src_rel) in enumerate(cases):
        for ext in (".nii.gz", ".nii"):
            out = os.path.join(tmp, "lab%d%s" % (i, ext))
            probe("labels-write", data(like_rel), data(src_rel), out)
            a = nib.load(data(like_rel))
            b = nib.load(out)
            ha, hb = a.header, b.header
            tag = "%s -> %s" % (like_rel, out)
            check(b.shape == a.shape, tag + ": shape")
            check(np.array_equal(ha["dim"], hb["dim"]), tag + ": dim")
            check(np.allclose(ha["pixdim"][1:4], hb["pixdim"][1:4]),
                  tag + ": pixdim")
            check(int(ha["qform_code"]) == int(hb["qform_code"]),
                  tag + ": qform_code")
            check(int(ha["sform_code"]) == int(hb["sform_code"]),
                  tag + ": sform_code")
            check(np.allclose(a.get_qform(), b.get_qform(), atol=1e-6),
                  tag + ": qform")
            check(np.allclose(a.get_sform(), b.get_sform(), atol=1e-6),
                  tag + ": sform")
            check(np.allclose(a.affine, b.affine, atol=1e-6), tag + ": affine")
            check(ha.get_xyzt_units() == hb.get_xyzt_units(), tag + ": units")
            check(hb.get_data_dtype() == np.uint8, tag + ": dtype")
            src = np.rint(nib.load(data(src_rel)).get_fdata()).astype(np.uint8)
            check(np.array_equal(np.asarray(b.dataobj), src), tag + ": voxels")
    left = [f for f in os.listdir(tmp) if f.startswith(".tmp-")]
    check(not left, "temp files left: %s" % left)


# ---- 3. both releases of one subject give the same classes --------------
def test_classes(tmp):
    o21 = os.path.join(tmp, "c21.nii.gz")
    o23 = os.path.join(tmp, "c23.nii.gz")
    s21 = data("brats2021/BraTS2021_00000/BraTS2021_00000_seg.nii.gz")
    s23 = data("brats2023/BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz")
    check(probe("classes", s21, "guess", o21).strip() == "brats2017",
          "2021 seg guessed as brats2017")
    check(probe("classes", s23, "guess", o23).strip() == "brats2023",
          "2023 seg guessed as brats2023")
    c21 = np.asarray(nib.load(o21).dataobj)
    c23 = np.asarray(nib.load(o23).dataobj)
    check(np.array_equal(c21, c23), "2021 and 2023 classes differ")
    raw = np.rint(nib.load(s21).get_fdata()).astype(int)
    want = np.choose(raw, [0, 1, 2, 99, 3])
    check(np.array_equal(c21, want), "2021 classes vs numpy mapping")


# ---- 4. metrics -----------------------------------------------------------
REGIONS = [(1, 2, 3), (1, 3), (3,)]


def surface_points(vol, region):
    nx, ny, nz = vol.shape
    m = np.isin(vol, region)
    pts = []
    for x, y, z in zip(*np.nonzero(m)):
        s = False
        for dx, dy, dz in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0),
                           (0, 0, 1), (0, 0, -1)):
            a, b, c = x + dx, y + dy, z + dz
            if not (0 <= a < nx and 0 <= b < ny and 0 <= c < nz) \
                    or not m[a, b, c]:
                s = True
                break
        if s:
            pts.append((int(x), int(y), int(z)))
    return pts


def percentile95(vals):
    v = sorted(vals)
    pos = 0.95 * (len(v) - 1)
    k = int(math.floor(pos))
    if k + 1 < len(v):
        return v[k] + (pos - k) * (v[k + 1] - v[k])
    return v[k]


def hd95_pure(p, q, region, sp):
    sa, sb = surface_points(p, region), surface_points(q, region)
    d = []
    for A, B in ((sa, sb), (sb, sa)):
        for a in A:
            best = min(((a[0] - b[0]) * sp[0]) ** 2 + ((a[1] - b[1]) * sp[1])
                       ** 2 + ((a[2] - b[2]) * sp[2]) ** 2 for b in B)
            d.append(math.sqrt(best))
    return percentile95(d)


def hd95_numpy(p, q, region, sp):
    sa = np.array(surface_points(p, region), dtype=float) * sp
    sb = np.array(surface_points(q, region), dtype=float) * sp
    d = []
    for A, B in ((sa, sb), (sb, sa)):
        for i in range(0, len(A), 2000):
            diff = A[i:i + 2000, None, :] - B[None, :, :]
            d.extend(np.sqrt((diff ** 2).sum(-1).min(1)).tolist())
    return percentile95(d)


def dice(p, q, region):
    a, b = np.isin(p, region), np.isin(q, region)
    if a.sum() + b.sum() == 0:
        return 1.0
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def save(arr, sp, path):
    img = nib.Nifti1Image(arr.astype(np.uint8), np.diag(list(sp) + [1.0]))
    img.header.set_zooms(sp)
    nib.save(img, path)


def test_metrics_synthetic(tmp):
    rng = np.random.RandomState(3)
    # spacing as the float32 pixdim the file will hold
    sp = tuple(float(np.float32(v)) for v in (1.2, 0.8, 2.0))
    for t in range(6):
        vols = []
        for _ in range(2):
            v = np.zeros((22, 18, 14), np.uint8)
            for _ in range(4):
                c = rng.randint(0, [22, 18, 14])
                r = rng.randint(2, 6)
                x, y, z = np.ogrid[:22, :18, :14]
                ball = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= r * r
                v[ball] = rng.randint(1, 4)
            vols.append(v)
        p, q = vols
        pp, qp = os.path.join(tmp, "p%d.nii" % t), os.path.join(tmp, "q%d.nii" % t)
        save(p, sp, pp)
        save(q, sp, qp)
        m = json.loads(probe("metrics", pp, qp))
        for r, reg in enumerate(REGIONS):
            check(abs(m["dice"][r] - dice(p, q, reg)) < 1e-6,
                  "synthetic %d region %d dice" % (t, r))
            na, nb = np.isin(p, reg).sum(), np.isin(q, reg).sum()
            if na == 0 and nb == 0:
                want = 0.0
            elif na == 0 or nb == 0:
                want = 373.13
            else:
                want = hd95_pure(p, q, reg, sp)
            check(abs(m["hd95"][r] - want) < 1e-6,
                  "synthetic %d region %d hd95 C %r vs %r" % (t, r,
                                                              m["hd95"][r], want))
            vml = na * sp[0] * sp[1] * sp[2] / 1000.0
            check(abs(m["vol_pred_ml"][r] - vml) < 1e-9,
                  "synthetic %d region %d volume" % (t, r))


def test_metrics_real(tmp):
    s21 = data("brats2021/BraTS2021_00000/BraTS2021_00000_seg.nii.gz")
    raw = np.rint(nib.load(s21).get_fdata()).astype(int)
    ref = np.choose(raw, [0, 1, 2, 99, 3]).astype(np.uint8)
    # perturbed copy: shifted 2 voxels in x, 1 in z, plus random flips
    pred = np.roll(np.roll(ref, 2, axis=0), 1, axis=2).copy()
    rng = np.random.RandomState(11)
    tum = np.argwhere(pred > 0)
    pick = tum[rng.choice(len(tum), len(tum) // 20, replace=False)]
    pred[tuple(pick.T)] = rng.randint(0, 4, len(pick))
    aff = nib.load(s21).affine
    pp, rp = os.path.join(tmp, "pred.nii.gz"), os.path.join(tmp, "ref.nii.gz")
    nib.save(nib.Nifti1Image(pred, aff), pp)
    nib.save(nib.Nifti1Image(ref, aff), rp)
    m = json.loads(probe("metrics", pp, rp))
    for r, reg in enumerate(REGIONS):
        check(abs(m["dice"][r] - dice(pred, ref, reg)) < 1e-6,
              "real region %d dice C %r vs %r" % (r, m["dice"][r],
                                                  dice(pred, ref, reg)))
        want = hd95_numpy(pred, ref, reg, np.array([1.0, 1.0, 1.0]))
        check(abs(m["hd95"][r] - want) < 1e-6,
              "real region %d hd95 C %r vs %r" % (r, m["hd95"][r], want))
        check(abs(m["vol_ref_ml"][r] - np.isin(ref, reg).sum() / 1000.0)
              < 1e-9, "real region %d volume" % r)


def main():
    with tempfile.TemporaryDirectory(prefix="fedseg-imgpy-") as tmp:
        test_values()
        test_label_write(tmp)
        test_classes(tmp)
        test_metrics_synthetic(tmp)
        test_metrics_real(tmp)
    if FAILS:
        print("crosscheck: %d failure(s)" % len(FAILS), file=sys.stderr)
        return 1
    print("crosscheck: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
