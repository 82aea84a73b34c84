/* test_img_dataset.c - discovery of the real cases, of a tree of symlinks,
 * and of CSV / JSON manifests. */
#include "img_test.h"

static const img_case_ref *find(const img_dataset *ds, const char *id)
{
	int i;

	for (i = 0; i < ds->n; i++)
		if (strcmp(ds->cases[i].id, id) == 0)
			return &ds->cases[i];
	return NULL;
}

static int ends(const char *s, const char *suf)
{
	size_t a, b;

	if (s == NULL)
		return 0;
	a = strlen(s);
	b = strlen(suf);
	return a >= b && strcmp(s + a - b, suf) == 0;
}

static void test_real(void)
{
	static const char *expect[] = {
		"BraTS-GLI-00000-000", "BraTS-GLI-00001-000",
		"BraTS-GLI-00027-000", "BraTS19_CBICA_ASK_1",
		"BraTS19_TCIA10_311_1", "BraTS2021_00000", "BraTS2021_00002",
		"BraTS2021_00003", "BraTS2021_00005", "BraTS2021_00006",
		"BraTS2021_00014", "BraTS2021_00019", "brats_2013_pat0002_1",
		"brats_2013_pat0003_1", "brats_2013_pat0004_1",
		"brats_2013_pat0005_1", "brats_2013_pat0006_1",
	};
	int mods2[2] = {IMG_FLAIR, IMG_T1C}, mods4[4] = {IMG_T1, IMG_T1C,
		IMG_T2, IMG_FLAIR};
	const img_case_ref *r;
	img_dataset ds;
	int i, n = (int)(sizeof(expect) / sizeof(expect[0]));

	CHECK(img_dataset_scan(img_t_data(), mods2, 2, &ds) == 0);
	CHECK(ds.n == n);
	for (i = 0; i < ds.n && i < n; i++) {
		if (strcmp(ds.cases[i].id, expect[i]) != 0) {
			fprintf(stderr, "case %d: got %s, expected %s\n", i,
			    ds.cases[i].id, expect[i]);
			CHECK(!"case list");
		}
	}
	r = find(&ds, "BraTS2021_00000");
	CHECK(r != NULL);
	if (r) {
		CHECK(ends(r->paths[IMG_T1], "BraTS2021_00000_t1.nii.gz"));
		CHECK(ends(r->paths[IMG_T1C], "BraTS2021_00000_t1ce.nii.gz"));
		CHECK(ends(r->paths[IMG_T2], "BraTS2021_00000_t2.nii.gz"));
		CHECK(ends(r->paths[IMG_FLAIR], "BraTS2021_00000_flair.nii.gz"));
		CHECK(ends(r->label, "BraTS2021_00000_seg.nii.gz"));
		CHECK(r->label_conv == -1 && r->prenormalised == 0 &&
		    r->mask == NULL);
	}
	r = find(&ds, "BraTS-GLI-00000-000");
	CHECK(r != NULL);
	if (r) {
		CHECK(ends(r->paths[IMG_T1], "-t1n.nii.gz"));
		CHECK(ends(r->paths[IMG_T1C], "-t1c.nii.gz"));
		CHECK(ends(r->paths[IMG_T2], "-t2w.nii.gz"));
		CHECK(ends(r->paths[IMG_FLAIR], "-t2f.nii.gz"));
		CHECK(ends(r->label, "-seg.nii.gz"));
		CHECK(r->label_conv == IMG_LABELS_BRATS2023);
	}
	r = find(&ds, "BraTS19_TCIA10_311_1");
	CHECK(r != NULL && r->label == NULL);
	r = find(&ds, "brats_2013_pat0004_1");
	CHECK(r != NULL);
	if (r) {
		CHECK(r->prenormalised == 1);
		CHECK(r->label_conv == IMG_LABELS_BRATS2013);
		CHECK(ends(r->mask, "validation/brats_2013_pat0004_1/"
		    "brainmask.nii.gz"));
		CHECK(ends(r->label, "OTMultiClass.nii.gz"));
		CHECK(ends(r->paths[IMG_FLAIR], "Flair_subtrMeanDivStd.nii.gz"));
		CHECK(ends(r->paths[IMG_T1C], "T1c_subtrMeanDivStd.nii.gz"));
		CHECK(r->paths[IMG_T1] == NULL && r->paths[IMG_T2] == NULL);
	}
	img_dataset_free(&ds);

	/* all four modalities: the DeepMedic cases lack T1 and T2 */
	CHECK(img_dataset_scan(img_t_data(), mods4, 4, &ds) == 0);
	CHECK(ds.n == 12);
	CHECK(find(&ds, "brats_2013_pat0002_1") == NULL);
	img_dataset_free(&ds);

	/* one case folder given directly */
	CHECK(img_dataset_scan(img_t_path("brats2021/BraTS2021_00014"), mods4,
	    4, &ds) == 0);
	CHECK(ds.n == 1 && strcmp(ds.cases[0].id, "BraTS2021_00014") == 0);
	img_dataset_free(&ds);

	CHECK(img_dataset_scan("/nonexistent-fedseg", mods4, 4, &ds) == -1);
	CHECK_ERR("/nonexistent-fedseg");
}

static void link_to(const char *target, const char *fmt, const char *a)
{
	char p[4096];

	snprintf(p, sizeof(p), fmt, img_t_tmpdir(), a);
	if (symlink(target, p) != 0) {
		perror(p);
		CHECK(!"symlink");
	}
}

static void mk(const char *rel)
{
	char p[4096];

	snprintf(p, sizeof(p), "%s/%s", img_t_tmpdir(), rel);
	CHECK(fs_mkdir_p(p, 0) == 0);
}

static void test_symlinks(void)
{
	static const char *sfx[] = {"t1", "t1ce", "t2", "flair", "seg"};
	int mods4[4] = {IMG_T1, IMG_T1C, IMG_T2, IMG_FLAIR};
	char tgt[4096], name[512], tree[4096];
	img_dataset ds;
	size_t k;

	mk("tree/siteA/real");
	mk("tree/siteB");
	/* a folder link to a real case folder, under another name */
	link_to(img_t_path("brats2021/BraTS2021_00002"), "%s/%s",
	    "tree/siteA/linked");
	/* a real folder of file links */
	for (k = 0; k < 5; k++) {
		snprintf(tgt, sizeof(tgt), "%s/brats2021/BraTS2021_00003/"
		    "BraTS2021_00003_%s.nii.gz", img_t_data(), sfx[k]);
		snprintf(name, sizeof(name), "tree/siteA/real/"
		    "BraTS2021_00003_%s.nii.gz", sfx[k]);
		link_to(tgt, "%s/%s", name);
	}
	/* a 2023 case via a folder link at depth 2 */
	link_to(img_t_path("brats2023/BraTS-GLI-00027-000"), "%s/%s",
	    "tree/siteB/c27");
	/* a case with two T1 candidates: skipped */
	mk("tree/siteB/dup");
	for (k = 0; k < 4; k++) {
		snprintf(tgt, sizeof(tgt), "%s/brats2021/BraTS2021_00005/"
		    "BraTS2021_00005_%s.nii.gz", img_t_data(), sfx[k]);
		snprintf(name, sizeof(name), "tree/siteB/dup/"
		    "BraTS2021_00005_%s.nii.gz", sfx[k]);
		link_to(tgt, "%s/%s", name);
	}
	snprintf(tgt, sizeof(tgt), "%s/brats2021/BraTS2021_00005/"
	    "BraTS2021_00005_t1.nii.gz", img_t_data());
	link_to(tgt, "%s/%s", "tree/siteB/dup/BraTS2021_00005_t1.nii");
	/* a case without FLAIR: skipped */
	mk("tree/siteB/noflair");
	for (k = 0; k < 3; k++) {
		snprintf(tgt, sizeof(tgt), "%s/brats2021/BraTS2021_00006/"
		    "BraTS2021_00006_%s.nii.gz", img_t_data(), sfx[k]);
		snprintf(name, sizeof(name), "tree/siteB/noflair/"
		    "BraTS2021_00006_%s.nii.gz", sfx[k]);
		link_to(tgt, "%s/%s", name);
	}
	/* a loop and a dangling link must not hurt */
	snprintf(tree, sizeof(tree), "%s/tree", img_t_tmpdir());
	link_to(tree, "%s/%s", "tree/siteB/loop");
	link_to("/nonexistent-fedseg-target", "%s/%s", "tree/siteB/dangling");

	CHECK(img_dataset_scan(tree, mods4, 4, &ds) == 0);
	CHECK(ds.n == 3);
	if (ds.n == 3) {
		CHECK(strcmp(ds.cases[0].id, "BraTS-GLI-00027-000") == 0);
		CHECK(strcmp(ds.cases[1].id, "BraTS2021_00002") == 0);
		CHECK(strcmp(ds.cases[2].id, "BraTS2021_00003") == 0);
		CHECK(strstr(ds.cases[1].paths[IMG_T1], "/tree/siteA/linked/")
		    != NULL);
		CHECK(ends(ds.cases[2].label, "BraTS2021_00003_seg.nii.gz"));
		CHECK(ds.cases[0].label == NULL);
	}
	img_dataset_free(&ds);
}

static void write_text(const char *rel, const char *text)
{
	char p[4096];

	snprintf(p, sizeof(p), "%s/%s", img_t_tmpdir(), rel);
	CHECK(fs_write_atomic(p, text, strlen(text), 0644) == 0);
}

static void test_manifests(void)
{
	int mods2[2] = {IMG_FLAIR, IMG_T1C};
	char text[8192], dir[4096];
	img_dataset ds;

	mk("csv");
	link_to(img_t_data(), "%s/%s", "csv/data");
	snprintf(text, sizeof(text),
	    "# fedseg manifest\n"
	    "case,modality,path\n"
	    "zeta,flair,data/brats2021/BraTS2021_00000/BraTS2021_00000_flair.nii.gz\n"
	    "zeta,t1c,%s/brats2021/BraTS2021_00000/BraTS2021_00000_t1ce.nii.gz\n"
	    "zeta,label,data/brats2021/BraTS2021_00000/BraTS2021_00000_seg.nii.gz\n"
	    "zeta,label_convention,brats2021\r\n"
	    "alpha,flair,data/brats2013-deepmedic/test/brats_2013_pat0002_1/Flair_subtrMeanDivStd.nii.gz\n"
	    "alpha,t1c,data/brats2013-deepmedic/test/brats_2013_pat0002_1/T1c_subtrMeanDivStd.nii.gz\n"
	    "alpha,mask,data/brats2013-deepmedic/test/brats_2013_pat0002_1/brainmask.nii.gz\n"
	    "alpha,prenormalised,1\n"
	    "alpha,label_convention,brats2013\n"
	    "\n"
	    "onlyflair,flair,data/brats2021/BraTS2021_00002/BraTS2021_00002_flair.nii.gz\n",
	    img_t_data());
	write_text("csv/fedseg-manifest.csv", text);
	snprintf(dir, sizeof(dir), "%s/csv", img_t_tmpdir());
	CHECK(img_dataset_scan(dir, mods2, 2, &ds) == 0);
	CHECK(ds.n == 2); /* onlyflair skipped */
	if (ds.n == 2) {
		CHECK(strcmp(ds.cases[0].id, "alpha") == 0);
		CHECK(ds.cases[0].prenormalised == 1);
		CHECK(ds.cases[0].label_conv == IMG_LABELS_BRATS2013);
		CHECK(ends(ds.cases[0].mask, "brainmask.nii.gz"));
		CHECK(strncmp(ds.cases[0].paths[IMG_FLAIR], dir,
		    strlen(dir)) == 0);
		CHECK(strcmp(ds.cases[1].id, "zeta") == 0);
		CHECK(ds.cases[1].label_conv == IMG_LABELS_BRATS2017);
		CHECK(ends(ds.cases[1].paths[IMG_T1C], "_t1ce.nii.gz"));
		CHECK(ends(ds.cases[1].label, "_seg.nii.gz"));
	}
	img_dataset_free(&ds);

	/* a missing file is an error naming the manifest and the file */
	write_text("csv/fedseg-manifest.csv", "case,modality,path\n"
	    "x,flair,data/nothing-here.nii.gz\n");
	CHECK(img_dataset_scan(dir, mods2, 2, &ds) == -1);
	CHECK_ERR("fedseg-manifest.csv");
	CHECK_ERR("nothing-here.nii.gz");
	write_text("csv/fedseg-manifest.csv", "id,mod,file\n");
	CHECK(img_dataset_scan(dir, mods2, 2, &ds) == -1);
	CHECK_ERR("case,modality,path");

	mk("json");
	link_to(img_t_data(), "%s/%s", "json/d");
	write_text("json/fedseg-manifest.json",
	    "{\"cases\": [\n"
	    " {\"id\": \"b\", \"flair\": \"d/brats2023/BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz\",\n"
	    "  \"t1c\": \"d/brats2023/BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1c.nii.gz\",\n"
	    "  \"label\": \"d/brats2023/BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz\",\n"
	    "  \"label_convention\": \"brats2023\"},\n"
	    " {\"id\": \"a\", \"flair\": \"d/brats2021/BraTS2021_00002/BraTS2021_00002_flair.nii.gz\",\n"
	    "  \"t1c\": \"d/brats2021/BraTS2021_00002/BraTS2021_00002_t1ce.nii.gz\"}\n"
	    "]}\n");
	snprintf(dir, sizeof(dir), "%s/json", img_t_tmpdir());
	CHECK(img_dataset_scan(dir, mods2, 2, &ds) == 0);
	CHECK(ds.n == 2);
	if (ds.n == 2) {
		CHECK(strcmp(ds.cases[0].id, "a") == 0);
		CHECK(ds.cases[0].label == NULL && ds.cases[0].label_conv == -1);
		CHECK(strcmp(ds.cases[1].id, "b") == 0);
		CHECK(ds.cases[1].label_conv == IMG_LABELS_BRATS2023);
		CHECK(ends(ds.cases[1].paths[IMG_FLAIR], "-t2f.nii.gz"));
	}
	img_dataset_free(&ds);
	write_text("json/fedseg-manifest.json", "{\"cases\": [ {\"id\": 3} ]}");
	CHECK(img_dataset_scan(dir, mods2, 2, &ds) == -1);
	CHECK_ERR("fedseg-manifest.json");
}

int main(void)
{
	test_real();
	test_symlinks();
	test_manifests();
	return img_t_finish("test_img_dataset");
}
