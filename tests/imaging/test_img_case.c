/* test_img_case.c - loading real cases: crop box, brain mask, z-scores,
 * labels; the BraTS 2021 and 2023 releases of one subject agree. */
#include "img_test.h"

#include <math.h>
#include <nifti2_io.h>

static img_case_ref ref_2021(const char *id, char *buf, size_t size)
{
	static const char *sfx[4] = {"t1", "t1ce", "t2", "flair"};
	img_case_ref r;
	int k;

	memset(&r, 0, sizeof(r));
	r.id = (char *)id;
	for (k = 0; k < 4; k++) {
		snprintf(buf + k * (size / 5), size / 5, "%s/brats2021/%s/%s_%s"
		    ".nii.gz", img_t_data(), id, id, sfx[k]);
		r.paths[k] = buf + k * (size / 5);
	}
	snprintf(buf + 4 * (size / 5), size / 5, "%s/brats2021/%s/%s_seg.nii.gz",
	    img_t_data(), id, id);
	r.label = buf + 4 * (size / 5);
	r.label_conv = -1;
	return r;
}

static void check_stats(const img_case *c, int prenorm)
{
	size_t cn = (size_t)c->cx * c->cy * c->cz, i, nin = 0;
	int m;

	for (i = 0; i < cn; i++)
		nin += c->mask[i] != 0;
	CHECK(nin > 1000000); /* a brain is > 1 L */
	for (m = 0; m < c->nmod; m++) {
		const float *p = c->img + (size_t)m * cn;
		double s = 0, s2 = 0, mean, sd;
		size_t outside_nonzero = 0;
		for (i = 0; i < cn; i++) {
			if (c->mask[i]) {
				s += p[i];
				s2 += (double)p[i] * p[i];
			} else if (p[i] != 0.0f) {
				outside_nonzero++;
			}
		}
		mean = s / (double)nin;
		sd = sqrt(s2 / (double)nin - mean * mean);
		CHECK(outside_nonzero == 0);
		if (!prenorm) {
			CHECK(fabs(mean) < 1e-4);
			CHECK(fabs(sd - 1.0) < 1e-4);
		}
	}
}

static void test_2021_vs_2023(void)
{
	char buf[5 * 1024], b23[5][1024];
	static const char *s23[4] = {"t1n", "t1c", "t2w", "t2f"};
	int mods[4] = {IMG_T1, IMG_T1C, IMG_T2, IMG_FLAIR}, k, x, y, z;
	img_case_ref r = ref_2021("BraTS2021_00000", buf, sizeof(buf)), r23;
	img_case c, c23;
	uint8_t *full = NULL, *full23 = NULL, *raw = NULL;
	size_t n = (size_t)240 * 240 * 155, i, total = 0, inside = 0;

	CHECK(img_case_load(&r, mods, 4, 3, 1, &c) == 0);
	if (c.img == NULL)
		return;
	CHECK(c.nmod == 4 && c.nx == 240 && c.ny == 240 && c.nz == 155);
	CHECK(c.cx == c.box[3] - c.box[0] && c.cy == c.box[4] - c.box[1] &&
	    c.cz == c.box[5] - c.box[2]);
	CHECK(c.cx < 240 && c.cy < 240 && c.cz <= 155 && c.cx > 100);
	CHECK(c.ref.data == NULL && c.ref.hdr != NULL && c.ref.nx == 240);
	CHECK(strstr(c.ref.path, "_t1.nii.gz") != NULL);
	CHECK(strcmp(c.id, "BraTS2021_00000") == 0);
	check_stats(&c, 0);

	/* every labelled voxel of the file is inside the box */
	CHECK(img_labels_read(r.label, &raw, NULL) == 0);
	for (i = 0; i < n; i++)
		total += raw[i] != 0;
	for (i = 0; i < (size_t)c.cx * c.cy * c.cz; i++)
		inside += c.label[i] != 0;
	CHECK(total > 10000 && inside == total);
	/* the box is the mask's bounding box plus 3 (or the grid edge) */
	{
		int lo[3] = {999, 999, 999}, hi[3] = {-1, -1, -1};
		for (z = 0; z < c.cz; z++)
			for (y = 0; y < c.cy; y++)
				for (x = 0; x < c.cx; x++)
					if (c.mask[((size_t)z * c.cy + y) * c.cx
					    + x]) {
						int v[3] = {x, y, z};
						for (k = 0; k < 3; k++) {
							if (v[k] < lo[k]) lo[k] = v[k];
							if (v[k] > hi[k]) hi[k] = v[k];
						}
					}
		CHECK(lo[0] == 3 || c.box[0] == 0);
		CHECK(lo[1] == 3 || c.box[1] == 0);
		CHECK(lo[2] == 3 || c.box[2] == 0);
		CHECK(hi[0] == c.cx - 4 || c.box[3] == 240);
		CHECK(hi[1] == c.cy - 4 || c.box[4] == 240);
		CHECK(hi[2] == c.cz - 4 || c.box[5] == 155);
	}

	/* uncrop gives the file's labels as classes */
	full = malloc(n);
	img_case_uncrop(&c, c.label, full);
	CHECK(img_labels_to_classes(raw, n, IMG_LABELS_BRATS2017) == 0);
	CHECK(memcmp(full, raw, n) == 0);

	/* BraTS 2023 release of the same subject */
	memset(&r23, 0, sizeof(r23));
	r23.id = "BraTS-GLI-00000-000";
	for (k = 0; k < 4; k++) {
		snprintf(b23[k], sizeof(b23[k]), "%s/brats2023/%s/%s-%s.nii.gz",
		    img_t_data(), r23.id, r23.id, s23[k]);
		r23.paths[k] = b23[k];
	}
	snprintf(b23[4], sizeof(b23[4]), "%s/brats2023/%s/%s-seg.nii.gz",
	    img_t_data(), r23.id, r23.id);
	r23.label = b23[4];
	r23.label_conv = -1; /* guessed: 3 without 4 -> 2023 */
	CHECK(img_case_load(&r23, mods, 4, 3, 1, &c23) == 0);
	if (c23.label) {
		full23 = malloc(n);
		img_case_uncrop(&c23, c23.label, full23);
		CHECK(memcmp(full, full23, n) == 0);
		img_case_free(&c23);
		free(full23);
	}
	free(full);
	free(raw);
	img_case_free(&c);

	/* want_label = 0: no label */
	CHECK(img_case_load(&r, mods + 3, 1, 0, 0, &c) == 0);
	CHECK(c.label == NULL && c.nmod == 1);
	check_stats(&c, 0);
	img_case_free(&c);
}

static void test_deepmedic(void)
{
	char f[1024], t[1024], m[1024], l[1024];
	const char *d = "brats2013-deepmedic/train/brats_2013_pat0005_1";
	int mods[2] = {IMG_FLAIR, IMG_T1C};
	img_case_ref r;
	img_case c;
	img_volume fl, mk;
	size_t cn, i, nin = 0, same = 0;

	memset(&r, 0, sizeof(r));
	snprintf(f, sizeof(f), "%s/%s/Flair_subtrMeanDivStd.nii.gz",
	    img_t_data(), d);
	snprintf(t, sizeof(t), "%s/%s/T1c_subtrMeanDivStd.nii.gz",
	    img_t_data(), d);
	snprintf(m, sizeof(m), "%s/%s/brainmask.nii.gz", img_t_data(), d);
	snprintf(l, sizeof(l), "%s/%s/OTMultiClass.nii.gz", img_t_data(), d);
	r.id = "brats_2013_pat0005_1";
	r.paths[IMG_FLAIR] = f;
	r.paths[IMG_T1C] = t;
	r.mask = m;
	r.label = l;
	r.label_conv = IMG_LABELS_BRATS2013;
	r.prenormalised = 1;
	CHECK(img_case_load(&r, mods, 2, 0, 1, &c) == 0);
	if (c.img == NULL)
		return;
	check_stats(&c, 1);
	/* pre-normalised values are kept as they are inside the mask */
	CHECK(img_volume_read(f, &fl) == 0);
	CHECK(img_volume_read(m, &mk) == 0);
	cn = (size_t)c.cx * c.cy * c.cz;
	for (i = 0; i < cn; i++) {
		size_t x = i % (size_t)c.cx, y = (i / (size_t)c.cx) %
		    (size_t)c.cy, z = i / ((size_t)c.cx * c.cy);
		size_t j = ((z + c.box[2]) * 240 + y + c.box[1]) * 240 + x +
		    c.box[0];
		CHECK(c.mask[i] == (mk.data[j] > 0.5f));
		if (c.mask[i]) {
			nin++;
			same += c.img[i] == fl.data[j];
		}
	}
	CHECK(nin > 0 && same == nin);
	for (i = 0; i < cn; i++)
		CHECK(c.label[i] <= 3);
	img_volume_free(&fl);
	img_volume_free(&mk);
	img_case_free(&c);

	/* a missing modality is an error naming the case */
	mods[0] = IMG_T2;
	CHECK(img_case_load(&r, mods, 2, 0, 1, &c) == -1);
	CHECK_ERR("brats_2013_pat0005_1");
}

static void test_grid_mismatch(void)
{
	char buf[5 * 1024], other[1024];
	int mods[2] = {IMG_FLAIR, IMG_T1C};
	img_case_ref r = ref_2021("BraTS2021_00002", buf, sizeof(buf));
	img_volume v, sh;
	nifti_image *h;
	img_case c;

	/* the T1c moved by 2 mm: same dims, another affine */
	CHECK(img_volume_read(r.paths[IMG_T1C], &v) == 0);
	memset(&sh, 0, sizeof(sh));
	h = nifti_copy_nim_info((nifti_image *)v.hdr);
	h->sto_xyz.m[2][3] += 2.0;
	sh.nx = v.nx;
	sh.ny = v.ny;
	sh.nz = v.nz;
	sh.hdr = h;
	snprintf(other, sizeof(other), "%s/moved_t1ce.nii.gz", img_t_tmpdir());
	CHECK(img_volume_write_float(other, &sh, v.data) == 0);
	img_volume_free(&sh);
	img_volume_free(&v);
	r.paths[IMG_T1C] = other;
	CHECK(img_case_load(&r, mods, 2, 0, 1, &c) == -1);
	CHECK_ERR(other);
	CHECK_ERR(r.paths[IMG_FLAIR]);
}

int main(void)
{
	fs_log_set_level(FS_LOG_ERR);
	test_2021_vs_2023();
	test_deepmedic();
	test_grid_mismatch();
	return img_t_finish("test_img_case");
}
