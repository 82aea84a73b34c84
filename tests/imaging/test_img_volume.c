/* test_img_volume.c - NIfTI reading of the real cases, refusals of bad
 * files, label writing keeping the input's header, grid checks. */
#include "img_test.h"

#include <dirent.h>
#include <math.h>
#include <nifti2_io.h>

#define D21 "brats2021/BraTS2021_00000/BraTS2021_00000"

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void test_read_real(void)
{
	static const char *files[] = {
		D21 "_flair.nii.gz", D21 "_t1.nii.gz", D21 "_t1ce.nii.gz",
		D21 "_t2.nii.gz", D21 "_seg.nii.gz",
		"brats2019/BraTS19_CBICA_ASK_1/BraTS19_CBICA_ASK_1_flair.nii.gz",
		"brats2023/BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz",
		"brats2021/BraTS2021_00019/BraTS2021_00019_seg.nii.gz",
		"brats2013-deepmedic/test/brats_2013_pat0002_1/brainmask.nii.gz",
	};
	img_volume first, v;
	size_t i, k, n;

	CHECK(img_volume_read(img_t_path(files[0]), &first) == 0);
	CHECK(first.nx == 240 && first.ny == 240 && first.nz == 155);
	CHECK(first.spacing[0] == 1.0 && first.spacing[1] == 1.0 &&
	    first.spacing[2] == 1.0);
	/* BraTS SRI-24 grid: x and y flipped, y offset 239 */
	CHECK(first.affine[0][0] == -1.0 && first.affine[1][1] == -1.0 &&
	    first.affine[2][2] == 1.0 && first.affine[1][3] == 239.0);
	CHECK(first.hdr != NULL && first.path != NULL &&
	    strstr(first.path, "_flair") != NULL);
	for (k = 1; k < sizeof(files) / sizeof(files[0]); k++) {
		double mx = -1e30, mn = 1e30;
		if (img_volume_read(img_t_path(files[k]), &v) != 0) {
			CHECK(!"read failed");
			continue;
		}
		CHECK(v.nx == 240 && v.ny == 240 && v.nz == 155);
		if (!strstr(files[k], "deepmedic"))
			CHECK(img_grid_check(&first, &v) == 0);
		n = (size_t)v.nx * v.ny * v.nz;
		for (i = 0; i < n; i++) {
			if (v.data[i] > mx) mx = v.data[i];
			if (v.data[i] < mn) mn = v.data[i];
		}
		if (strstr(files[k], "brainmask")) {
			/* int32 with slope 2.3e-10 and intercept 0.5 */
			CHECK(mn >= 0.0 && mn < 1e-6);
			CHECK(mx > 0.9999 && mx <= 1.0);
		} else if (strstr(files[k], "_seg") || strstr(files[k], "-seg")) {
			CHECK(mn == 0.0);
			CHECK(mx == (strstr(files[k], "-seg") ? 3.0 : 4.0));
		} else {
			/* scl_slope 0 in BraTS 2019 must mean no scaling */
			CHECK(mn == 0.0 && mx > 100.0);
		}
		img_volume_free(&v);
	}
	img_volume_free(&first);
}

static void test_refusals(void)
{
	char p[4096], src[4096];
	void *buf = NULL;
	size_t n = 0;
	img_volume v, like;
	float *f;
	size_t i, nv;
	FILE *fp;

	snprintf(src, sizeof(src), "%s", img_t_path(D21 "_seg.nii.gz"));
	CHECK(fs_read_file(src, 64u << 20, &buf, &n) == 0);

	/* truncated .nii.gz */
	snprintf(p, sizeof(p), "%s/trunc.nii.gz", img_t_tmpdir());
	CHECK(fs_write_atomic(p, buf, n / 2, 0644) == 0);
	CHECK(img_volume_read(p, &v) == -1);
	CHECK_ERR(p);
	/* gz cut a few bytes before the end */
	snprintf(p, sizeof(p), "%s/trunc2.nii.gz", img_t_tmpdir());
	CHECK(fs_write_atomic(p, buf, n - 64, 0644) == 0);
	CHECK(img_volume_read(p, &v) == -1);
	CHECK_ERR(p);
	/* gz cut inside its 8-byte trailer: all voxel bytes are there */
	snprintf(p, sizeof(p), "%s/trunc3.nii.gz", img_t_tmpdir());
	CHECK(fs_write_atomic(p, buf, n - 4, 0644) == 0);
	CHECK(img_volume_read(p, &v) == -1);
	CHECK_ERR(p);
	/* header only */
	snprintf(p, sizeof(p), "%s/short.nii.gz", img_t_tmpdir());
	CHECK(fs_write_atomic(p, buf, 200, 0644) == 0);
	CHECK(img_volume_read(p, &v) == -1);
	CHECK_ERR(p);
	free(buf);

	/* not NIfTI at all */
	snprintf(p, sizeof(p), "%s/text.nii", img_t_tmpdir());
	fp = fopen(p, "w");
	for (i = 0; i < 100; i++)
		fprintf(fp, "this is not a NIfTI file, line %zu\n", i);
	fclose(fp);
	CHECK(img_volume_read(p, &v) == -1);
	CHECK_ERR(p);
	snprintf(p, sizeof(p), "%s/missing.nii.gz", img_t_tmpdir());
	CHECK(img_volume_read(p, &v) == -1);
	CHECK_ERR(p);

	/* truncated uncompressed .nii written by us */
	CHECK(img_volume_read(img_t_path(D21 "_t1.nii.gz"), &like) == 0);
	snprintf(p, sizeof(p), "%s/t1.nii", img_t_tmpdir());
	CHECK(img_volume_write_float(p, &like, like.data) == 0);
	CHECK(img_volume_read(p, &v) == 0);
	nv = (size_t)like.nx * like.ny * like.nz;
	CHECK(v.data && memcmp(v.data, like.data, nv * sizeof(float)) == 0);
	img_volume_free(&v);
	CHECK(truncate(p, 352 + 1000) == 0);
	CHECK(img_volume_read(p, &v) == -1);
	CHECK_ERR(p);

	/* NaN and Inf voxels */
	f = malloc(nv * sizeof(float));
	memcpy(f, like.data, nv * sizeof(float));
	f[12345] = NAN;
	snprintf(p, sizeof(p), "%s/nan.nii.gz", img_t_tmpdir());
	CHECK(img_volume_write_float(p, &like, f) == 0);
	CHECK(img_volume_read(p, &v) == -1);
	CHECK_ERR(p);
	CHECK_ERR("NaN");
	f[12345] = INFINITY;
	snprintf(p, sizeof(p), "%s/inf.nii", img_t_tmpdir());
	CHECK(img_volume_write_float(p, &like, f) == 0);
	CHECK(img_volume_read(p, &v) == -1);
	CHECK_ERR(p);
	free(f);
	img_volume_free(&like);

	/* 4-D with two volumes; 4-D with one volume is fine */
	{
		int64_t dims[8] = {4, 8, 7, 6, 2, 1, 1, 1};
		nifti_image *nim = nifti_make_new_nim(dims, NIFTI_TYPE_INT16, 1);
		snprintf(p, sizeof(p), "%s/four.nii.gz", img_t_tmpdir());
		nifti_set_filenames(nim, p, 0, 1);
		nifti_image_write(nim);
		nifti_image_free(nim);
		CHECK(img_volume_read(p, &v) == -1);
		CHECK_ERR(p);
		CHECK_ERR("2 volumes");
		dims[4] = 1;
		nim = nifti_make_new_nim(dims, NIFTI_TYPE_INT16, 1);
		snprintf(p, sizeof(p), "%s/four1.nii", img_t_tmpdir());
		nifti_set_filenames(nim, p, 0, 1);
		nifti_image_write(nim);
		nifti_image_free(nim);
		CHECK(img_volume_read(p, &v) == 0);
		CHECK(v.nx == 8 && v.ny == 7 && v.nz == 6);
		img_volume_free(&v);
	}
}

/* Header fields that must survive a label write. */
static void compare_headers(const char *a, const char *b)
{
	nifti_image *x = nifti_image_read(a, 0), *y = nifti_image_read(b, 0);
	int i, j;

	CHECK(x != NULL && y != NULL);
	if (x == NULL || y == NULL)
		return;
	for (i = 0; i < 8; i++) {
		CHECK(x->dim[i] == y->dim[i]);
		if (i <= x->dim[0])
			CHECK(x->pixdim[i] == y->pixdim[i]);
	}
	CHECK(x->qform_code == y->qform_code);
	CHECK(x->sform_code == y->sform_code);
	CHECK(x->xyz_units == y->xyz_units);
	for (i = 0; i < 4; i++)
		for (j = 0; j < 4; j++) {
			CHECK(fabs(x->qto_xyz.m[i][j] - y->qto_xyz.m[i][j]) <
			    1e-6);
			CHECK(fabs(x->sto_xyz.m[i][j] - y->sto_xyz.m[i][j]) <
			    1e-6);
		}
	CHECK(y->datatype == NIFTI_TYPE_UINT8);
	CHECK(y->num_ext == 0);
	nifti_image_free(x);
	nifti_image_free(y);
}

static void test_write(void)
{
	static const char *likes[] = {
		D21 "_seg.nii.gz",
		"brats2023/BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz",
		"brats2021/BraTS2021_00019/BraTS2021_00019_seg.nii.gz",
		"brats2013-deepmedic/test/brats_2013_pat0002_1/OTMultiClass.nii.gz",
	};
	char dir[4096], p[4096];
	size_t k, n;

	snprintf(dir, sizeof(dir), "%s/out", img_t_tmpdir());
	CHECK(fs_mkdir_p(dir, 0) == 0);
	for (k = 0; k < sizeof(likes) / sizeof(likes[0]); k++) {
		uint8_t *lab = NULL, *back = NULL;
		img_volume like, bv;
		const char *src = img_t_path(likes[k]);
		int gz;

		CHECK(img_labels_read(src, &lab, &like) == 0);
		if (lab == NULL)
			continue;
		CHECK(like.data == NULL && like.hdr != NULL);
		n = (size_t)like.nx * like.ny * like.nz;
		for (gz = 0; gz < 2; gz++) {
			snprintf(p, sizeof(p), "%s/lab%zu.nii%s", dir, k,
			    gz ? ".gz" : "");
			CHECK(img_labels_write(p, &like, lab) == 0);
			CHECK(img_labels_read(p, &back, &bv) == 0);
			CHECK(back && memcmp(back, lab, n) == 0);
			CHECK(img_grid_check(&like, &bv) == 0);
			free(back);
			back = NULL;
			img_volume_free(&bv);
			compare_headers(src, p);
		}
		/* the gz one is really gzip */
		{
			FILE *f = fopen(p, "rb");
			int c0 = f ? fgetc(f) : -1, c1 = f ? fgetc(f) : -1;
			CHECK(c0 == 0x1f && c1 == 0x8b);
			if (f)
				fclose(f);
		}
		/* overwrite an existing output */
		CHECK(img_labels_write(p, &like, lab) == 0);
		/* unwritable places: error names the path, nothing left */
		CHECK(img_labels_write("/nonexistent-fedseg-dir/x.nii.gz",
		    &like, lab) == -1);
		CHECK_ERR("/nonexistent-fedseg-dir/x.nii.gz");
		snprintf(p, sizeof(p), "%s/lab.txt", dir);
		CHECK(img_labels_write(p, &like, lab) == -1);
		CHECK_ERR(p);
		free(lab);
		img_volume_free(&like);
	}
	/* only the 8 outputs, no temp files */
	CHECK(count_entries(dir) == 8);
}

static void test_grid_mismatch(void)
{
	img_volume a, b, crop;
	nifti_image *h;
	char p[4096], q[4096];
	float *f;
	int x, y, z;

	CHECK(img_volume_read(img_t_path(D21 "_flair.nii.gz"), &a) == 0);
	/* a 200x220x155 crop of the flair on a copied header */
	memset(&crop, 0, sizeof(crop));
	h = nifti_copy_nim_info((nifti_image *)a.hdr);
	h->nx = h->dim[1] = 200;
	h->ny = h->dim[2] = 220;
	h->nvox = (int64_t)200 * 220 * 155;
	crop.nx = 200;
	crop.ny = 220;
	crop.nz = 155;
	crop.hdr = h;
	f = malloc((size_t)200 * 220 * 155 * sizeof(float));
	for (z = 0; z < 155; z++)
		for (y = 0; y < 220; y++)
			for (x = 0; x < 200; x++)
				f[((size_t)z * 220 + y) * 200 + x] =
				    a.data[((size_t)z * 240 + y) * 240 + x];
	snprintf(p, sizeof(p), "%s/cropped_flair.nii.gz", img_t_tmpdir());
	CHECK(img_volume_write_float(p, &crop, f) == 0);
	free(f);
	img_volume_free(&crop);
	CHECK(img_volume_read(p, &b) == 0);
	CHECK(b.nx == 200 && b.ny == 220 && b.nz == 155);
	CHECK(img_grid_check(&a, &b) == -1);
	CHECK_ERR(a.path);
	CHECK_ERR(p);
	img_volume_free(&b);

	/* same dims, shifted origin (sform) */
	h = nifti_copy_nim_info((nifti_image *)a.hdr);
	h->sto_xyz.m[0][3] += 5.0;
	memset(&crop, 0, sizeof(crop));
	crop.nx = a.nx;
	crop.ny = a.ny;
	crop.nz = a.nz;
	crop.hdr = h;
	snprintf(q, sizeof(q), "%s/shifted_flair.nii", img_t_tmpdir());
	CHECK(img_volume_write_float(q, &crop, a.data) == 0);
	img_volume_free(&crop);
	CHECK(img_volume_read(q, &b) == 0);
	CHECK(fabs(b.affine[0][3] - a.affine[0][3] - 5.0) < 1e-6);
	CHECK(img_grid_check(&a, &b) == -1);
	CHECK_ERR(a.path);
	CHECK_ERR(q);
	img_volume_free(&b);
	img_volume_free(&a);
}

static void test_modalities(void)
{
	int mods[4];

	CHECK(img_modality_parse("t1ce") == IMG_T1C);
	CHECK(img_modality_parse("FLAIR") == IMG_FLAIR);
	CHECK(img_modality_parse("pd") == -1);
	CHECK(img_modality_list_parse("flair,t1c", mods) == 2);
	CHECK(mods[0] == IMG_FLAIR && mods[1] == IMG_T1C);
	CHECK(img_modality_list_parse("t1,t1ce,t2,flair", mods) == 4);
	CHECK(img_modality_list_parse("t1,t1", mods) == -1);
	CHECK(img_modality_list_parse("t1,dwi", mods) == -1);
	CHECK_ERR("dwi");
	CHECK(strcmp(img_modality_name(IMG_T1C), "t1c") == 0);
}

int main(void)
{
	fs_log_set_level(FS_LOG_ERR);
	test_modalities();
	test_read_real();
	test_refusals();
	test_write();
	test_grid_mismatch();
	return img_t_finish("test_img_volume");
}
