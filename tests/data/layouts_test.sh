#!/bin/bash
# Every layout reader on small trees built from the real cases: the cases
# and modalities found, and the cases left out with their reasons.
. "$FEDSEG_SRC/tests/lib.sh"
need_data
D="$FEDSEG_SRC/tests/data"
$PY "$D/make_trees.py" "$DATA" "$T" || { bad "fixture trees"; finish; }
scan() { "$FEDSEG" data scan --format json "$1" 2>/dev/null > "$T/$2.json"; }
# expect NAME 'python assertions over r (the scan JSON) and helpers'
expect() {
	local name="$1" code="$2"
	check "$name" $PY - "$T/$3.json" "$DATA" <<PYEOF
import json, os, sys
r = json.load(open(sys.argv[1])); DATA = sys.argv[2]
cases = {c["id"]: c for c in r["cases"]}
def real(p): return os.path.realpath(p)
def src(case, mod): return real(f"{DATA}/brats2021/{case}/{case}_{mod}.nii.gz")
def same(c, case, mods=("t1", "t1ce", "t2", "flair")):
    got = {k: real(v) for k, v in c["modalities"].items()}
    want = {("t1c" if m == "t1ce" else m): src(case, m) for m in mods}
    assert got == want, (c["id"], got, want)
def skipped(frag, why):
    hits = [s for s in r["skipped"] if frag in s["path"] and why in s["reason"]]
    assert hits, ("no skip", frag, why, r["skipped"])
assert set(r) == {"cases", "skipped"}, r.keys()
for c in r["cases"]:
    assert set(c) == {"id", "modalities", "label"}, c
    assert set(c["modalities"]) <= {"t1", "t1c", "t2", "flair"}, c
$code
print("ok:", sorted(cases), "skipped:", [(s["path"].split("/")[-1], s["reason"][:60]) for s in r["skipped"]])
PYEOF
}

scan "$T/tar" tar
expect "flywheel tar: 2 sessions by acquisition label, 2 refused" '
assert sorted(cases) == ["Brats21_00000_20210101_0930", "Brats21_00002_20210102_1000"], sorted(cases)
same(cases["Brats21_00000_20210101_0930"], "BraTS2021_00000")
same(cases["Brats21_00002_20210102_1000"], "BraTS2021_00002")
assert cases["Brats21_00000_20210101_0930"]["label"] is None
skipped("20210103_0800", "two candidate files for t1")
skipped("20210104_0700", "no t2 image")
assert len(r["skipped"]) == 2, r["skipped"]' tar

scan "$T/sync" sync
expect "flywheel sync: sidecar classification first, then labels" '
assert sorted(cases) == ["s1_baseline", "s2_baseline", "s3_visit_1", "s4_baseline"], sorted(cases)
same(cases["s1_baseline"], "BraTS2021_00000")
assert real(cases["s1_baseline"]["label"]) == src("BraTS2021_00000", "seg")
same(cases["s2_baseline"], "BraTS2021_00002")
same(cases["s3_visit_1"], "BraTS2021_00003")   # FLAIR under "AX T2", T1c under "AX T1 PRE"
same(cases["s4_baseline"], "BraTS2021_00005")  # localizer and CT ignored
assert cases["s3_visit_1"]["modalities"]["flair"].endswith("AX_T2.nii.gz")
skipped("SESSIONS/baseline", "two candidate files for flair")
assert len(r["skipped"]) == 1, r["skipped"]' sync

scan "$T/bids" bids
expect "bids: sessions, ce- entity = T1c, a duplicate run refused" '
assert sorted(cases) == ["sub-00000_ses-01", "sub-00002"], sorted(cases)
same(cases["sub-00000_ses-01"], "BraTS2021_00000")
same(cases["sub-00002"], "BraTS2021_00002")
assert cases["sub-00000_ses-01"]["modalities"]["t1c"].endswith("_ce-gadolinium_T1w.nii.gz")
assert real(cases["sub-00000_ses-01"]["label"]) == src("BraTS2021_00000", "seg")
skipped("sub-00003", "two candidate files for t1")' bids

scan "$T/brats" brats
expect "brats 2021 + 2023 folders; an unreadable file refuses its case" '
assert sorted(cases) == ["BraTS-GLI-00000-000", "BraTS2021_00000"], sorted(cases)
same(cases["BraTS2021_00000"], "BraTS2021_00000")
assert cases["BraTS-GLI-00000-000"]["modalities"]["flair"].endswith("-t2f.nii.gz")
assert cases["BraTS-GLI-00000-000"]["label"].endswith("-seg.nii.gz")
skipped("unreadable", "unreadable file")
skipped("unreadable", "broken_flair.nii.gz")' brats

scan "$T/msd" msd
expect "msd task01: one 4-D file holds the 4 modalities; missing test image reported" '
assert sorted(cases) == ["BRATS_001"], sorted(cases)
c = cases["BRATS_001"]
assert len(set(c["modalities"].values())) == 1 and set(c["modalities"]) == {"t1", "t1c", "t2", "flair"}
assert c["label"].endswith("labelsTr/BRATS_001.nii.gz")
skipped("BRATS_485", "missing")' msd

txt=$("$FEDSEG" data scan "$T/msd" 2>/dev/null)
check "text scan names channels of the 4-D file" grep -q "BRATS_001: t1\[1\] t1c\[2\] t2\[3\] flair\[0\] +label" <<<"$txt"
check "text scan prints the layout and the skipped reason" bash -c "grep -q '^layout: msd' <<<'$txt' && grep -q '^skipped BRATS_485' <<<'$txt'"
# No patient-data paths in the log at the default level (issue 6): the
# skip warnings name the case, the paths go to debug level; the report on
# stdout (asked for) still names them.
"$FEDSEG" data scan "$T/tar" >"$T/scan.out" 2>"$T/scan.err"
check "scan log at info level holds no path of the data tree" bash -c "grep -q 'skipping' '$T/scan.err' && ! grep -qF '$T/' '$T/scan.err' && grep -qF '$T/' '$T/scan.out'"
FEDSEG_LOG_LEVEL=debug "$FEDSEG" data scan "$T/tar" >/dev/null 2>"$T/scan-debug.err"
check "the same paths are logged at debug level" grep -qF "$T/" "$T/scan-debug.err"
expect_fail "scan of a folder with nothing usable" "no usable case" "" "$FEDSEG" data scan "$T/brats/unreadable"

# The 4-D MSD case loads to exactly the BraTS 2021 case: same images
# (channels picked from the 4-D file) and the same classes (MSD labels).
p1=$("$DATA_PROBE" "$T/msd") && p2=$("$DATA_PROBE" "$T/brats" BraTS2021_00000) && p3=$("$DATA_PROBE" "$T/brats" BraTS-GLI-00000-000)
echo "msd:  $p1"; echo "2021: $p2"; echo "2023: $p3"
check "MSD 4-D case == BraTS 2021 case (images and classes)" test -n "$p1" -a "$p1" = "$p2"
check "BraTS 2023 labels == BraTS 2021 labels (class sums)" test "${p2##*classes}" = "${p3##*classes}"
finish
