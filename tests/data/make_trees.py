#!/usr/bin/python3
"""Builds small trees of each dataset layout from the real cases, under T.

usage: make_trees.py DATA T
Symlinks carry the real files under the names each layout uses; the MSD
4-D image is written with nibabel. Prints nothing; the shell test checks
what `fedseg data scan` finds.
"""
import json, os, sys

DATA, T = sys.argv[1], sys.argv[2]
B21 = DATA + "/brats2021"


def src(case, mod):
    return f"{B21}/{case}/{case}_{mod}.nii.gz"


def link(target, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(target, path)


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1) if not isinstance(obj, str) else f.write(obj)


# ---- Flywheel tar download: <prefix>/<group>/<project>/<subject>/<session>/<acq>/<file>
proj = T + "/tar/scitran/mygroup/BraTS Project"
write(proj + "/protocol.pdf", "not an image\n")
acqs = {"flair": "4 - AX FLAIR", "t1": "5 - AX T1", "t1ce": "6 - AX T1 POST GAD", "t2": "7 - AX T2"}
for subj, ses, case in (("Brats21_00000", "20210101_0930", "BraTS2021_00000"),
                        ("Brats21_00002", "20210102_1000", "BraTS2021_00002")):
    for mod, acq in acqs.items():
        link(src(case, mod), f"{proj}/{subj}/{ses}/{acq}/{acq.replace(' ', '_')}.nii.gz")
# a subject whose T1 and T1 post-gad are both named plainly: two T1 candidates
for mod, acq in {"flair": "3 - FLAIR", "t1": "4 - T1 AX", "t1ce": "9 - T1 SAG", "t2": "5 - T2"}.items():
    link(src("BraTS2021_00003", mod), f"{proj}/Brats21_00003/20210103_0800/{acq}/{acq.replace(' ', '_')}.nii.gz")
# a subject without T2, with a localizer and a segmentation attached at session level
for mod, acq in {"flair": "2 - AX FLAIR", "t1": "3 - AX T1", "t1ce": "4 - AX T1 +C"}.items():
    link(src("BraTS2021_00005", mod), f"{proj}/Brats21_00005/20210104_0700/{acq}/{acq.replace(' ', '_')}.nii.gz")
link(src("BraTS2021_00005", "t2"), f"{proj}/Brats21_00005/20210104_0700/1 - 3-plane localizer/1_-_3-plane_localizer.nii.gz")
link(src("BraTS2021_00005", "seg"), f"{proj}/Brats21_00005/20210104_0700/Brats21_00005_seg.nii.gz")

# ---- Flywheel sync with metadata: <dest>/<project>/SUBJECTS/.../FILES/<file> + <file>.flywheel.json
sync = T + "/sync/BraTS Project/SUBJECTS"
C = lambda **k: {"Intent": ["Structural"], **{a: v for a, v in k.items()}}
def fwfile(subj, ses, acq, name, target, sidecar):
    p = f"{sync}/{subj}/SESSIONS/{ses}/ACQUISITIONS/{acq}/FILES/{name}"
    link(target, p)
    if sidecar is not None:
        write(p + ".flywheel.json", sidecar)
# s1: classification only (neutral labels and names): T2 vs FLAIR told apart by it
cls = {"t1": C(Measurement=["T1"]), "t1ce": C(Measurement=["T1"], Features=["Contrast-Agent"]),
       "t2": C(Measurement=["T2"]), "flair": C(Measurement=["T2"], Features=["FLAIR"])}
for i, mod in enumerate(("t1", "t1ce", "t2", "flair")):
    fwfile("s1", "baseline", f"series {i + 1}", f"series_{i + 1}.nii.gz", src("BraTS2021_00000", mod),
           {"name": f"series_{i + 1}.nii.gz", "type": "nifti", "modality": "MR",
            "classification": cls[mod], "info": {"SeriesNumber": i + 1}, "tags": []})
link(src("BraTS2021_00000", "seg"), f"{sync}/s1/SESSIONS/baseline/FILES/s1_seg.nii.gz")
# s2: acquisition label only (sidecars without classification)
for mod, acq in acqs.items():
    fwfile("s2", "baseline", acq, f"image_{mod[::-1]}.nii.gz", src("BraTS2021_00002", mod),
           {"info": {}, "type": "nifti"})
# s3: conflicting hints: the classification wins over the labels
conf = {"t1": ("AX T1", C(Measurement=["T1"])),
        "t1ce": ("AX T1 PRE", C(Measurement=["T1"], Features=["Contrast-Agent"])),
        "t2": ("AX FLAIR", C(Measurement=["T2"])),
        "flair": ("AX T2", C(Features=["FLAIR"]))}
for mod, (acq, c) in conf.items():
    fwfile("s3", "visit 1", acq, acq.replace(" ", "_") + ".nii.gz", src("BraTS2021_00003", mod),
           {"modality": "MR", "classification": c})
# s4: a localizer named like a T1, ignored by its classification; a CT file ignored
for mod, acq in acqs.items():
    fwfile("s4", "baseline", acq, acq.replace(" ", "_") + ".nii.gz", src("BraTS2021_00005", mod), None)
fwfile("s4", "baseline", "1 - AX T1 scout", "scout.nii.gz", src("BraTS2021_00005", "t1"),
       {"modality": "MR", "classification": {"Intent": ["Localizer"], "Measurement": ["T1"]}})
fwfile("s4", "baseline", "8 - CT T1", "ct.nii.gz", src("BraTS2021_00005", "t1"), {"modality": "CT"})
# s5: two FLAIR candidates by classification -> skipped
for i, mod in enumerate(("t1", "t1ce", "t2", "flair")):
    c = cls["flair"] if mod == "t2" else cls[mod]
    fwfile("s5", "baseline", f"s{i}", f"s{i}.nii.gz", src("BraTS2021_00006", mod), {"classification": c})

# ---- BIDS
bids = T + "/bids"
write(bids + "/dataset_description.json", {"Name": "test", "BIDSVersion": "1.8.0"})
ents = {"t1": "T1w", "t1ce": "ce-gadolinium_T1w", "t2": "T2w", "flair": "FLAIR"}
for mod, e in ents.items():
    link(src("BraTS2021_00000", mod), f"{bids}/sub-00000/ses-01/anat/sub-00000_ses-01_{e}.nii.gz")
    link(src("BraTS2021_00002", mod), f"{bids}/sub-00002/anat/sub-00002_{e}.nii.gz")
    link(src("BraTS2021_00003", mod), f"{bids}/sub-00003/anat/sub-00003_{e}.nii.gz")
write(f"{bids}/sub-00000/ses-01/anat/sub-00000_ses-01_T1w.json", {"RepetitionTime": 2.0})
link(src("BraTS2021_00000", "seg"), f"{bids}/sub-00000/ses-01/anat/sub-00000_ses-01_dseg.nii.gz")
link(src("BraTS2021_00003", "t1"), f"{bids}/sub-00003/anat/sub-00003_run-2_T1w.nii.gz")  # duplicate

# ---- BraTS 2017-2021 and 2023 folders (symlinked case folders)
os.makedirs(T + "/brats", exist_ok=True)
os.symlink(B21 + "/BraTS2021_00000", T + "/brats/BraTS2021_00000")
os.symlink(DATA + "/brats2023/BraTS-GLI-00000-000", T + "/brats/BraTS-GLI-00000-000")
os.makedirs(T + "/brats/unreadable")
for mod in ("t1", "t1ce", "t2"):
    link(src("BraTS2021_00002", mod), f"{T}/brats/unreadable/broken_{mod}.nii.gz")
write(T + "/brats/unreadable/broken_flair.nii.gz", "this is not a NIfTI file\n")

# ---- MSD Task01: 4-D image (FLAIR, T1w, t1gd, T2w), labels 1 edema, 2 non-enhancing, 3 enhancing
import numpy as np, nibabel as nib
msd = T + "/msd/Task01_BrainTumour"
os.makedirs(msd + "/imagesTr"); os.makedirs(msd + "/labelsTr"); os.makedirs(msd + "/imagesTs")
case = "BraTS2021_00000"
ims = [nib.load(src(case, m)) for m in ("flair", "t1", "t1ce", "t2")]
d = np.stack([np.asanyarray(i.dataobj).astype(np.float32) for i in ims], -1)
h = ims[0].header.copy(); h.set_data_dtype(np.float32)
nib.save(nib.Nifti1Image(d, ims[0].affine, h), msd + "/imagesTr/BRATS_001.nii.gz")
segi = nib.load(src(case, "seg")); s = np.asanyarray(segi.dataobj).astype(np.uint8)
m = np.zeros_like(s); m[s == 2] = 1; m[s == 1] = 2; m[s == 4] = 3
nib.save(nib.Nifti1Image(m, segi.affine, segi.header), msd + "/labelsTr/BRATS_001.nii.gz")
write(msd + "/dataset.json", {
    "name": "BRATS", "tensorImageSize": "4D",
    "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
    "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
    "numTraining": 1, "numTest": 1,
    "training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}],
    "test": ["./imagesTs/BRATS_485.nii.gz"]})
