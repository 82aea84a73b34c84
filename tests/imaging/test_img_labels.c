/* test_img_labels.c - label conventions on synthetic values and on the
 * same subject released as BraTS 2021 (labels 1,2,4) and BraTS 2023
 * (labels 1,2,3). */
#include "img_test.h"

static void test_synthetic(void)
{
	uint8_t a[6] = {0, 1, 2, 3, 4, 0}, b[5] = {0, 1, 2, 4, 1},
	    c[4] = {0, 1, 2, 3}, bad[3] = {0, 3, 1}, keep[3];

	CHECK(img_label_conv_parse("brats2013") == IMG_LABELS_BRATS2013);
	CHECK(img_label_conv_parse("brats2017") == IMG_LABELS_BRATS2017);
	CHECK(img_label_conv_parse("brats2021") == IMG_LABELS_BRATS2017);
	CHECK(img_label_conv_parse("BraTS2023") == IMG_LABELS_BRATS2023);
	CHECK(img_label_conv_parse("brats2099") == -1);

	CHECK(img_labels_to_classes(a, 6, IMG_LABELS_BRATS2013) == 0);
	CHECK(a[0] == 0 && a[1] == 1 && a[2] == 2 && a[3] == 1 && a[4] == 3);
	CHECK(img_labels_to_classes(b, 5, IMG_LABELS_BRATS2017) == 0);
	CHECK(b[0] == 0 && b[1] == 1 && b[2] == 2 && b[3] == 3 && b[4] == 1);
	CHECK(img_labels_to_classes(c, 4, IMG_LABELS_BRATS2023) == 0);
	CHECK(c[0] == 0 && c[1] == 1 && c[2] == 2 && c[3] == 3);

	/* 3 is not a BraTS 2017 label; the array is left unchanged */
	memcpy(keep, bad, 3);
	CHECK(img_labels_to_classes(bad, 3, IMG_LABELS_BRATS2017) == -1);
	CHECK_ERR("value 3");
	CHECK(memcmp(keep, bad, 3) == 0);
	bad[1] = 4;
	CHECK(img_labels_to_classes(bad, 3, IMG_LABELS_BRATS2023) == -1);
	CHECK_ERR("value 4");
	bad[1] = 7;
	CHECK(img_labels_to_classes(bad, 3, IMG_LABELS_BRATS2013) == -1);
	CHECK_ERR("value 7");

	/* back to file labels */
	img_labels_from_classes(b, 5, IMG_LABELS_BRATS2017);
	CHECK(b[0] == 0 && b[1] == 1 && b[2] == 2 && b[3] == 4 && b[4] == 1);
	img_labels_from_classes(c, 4, IMG_LABELS_BRATS2023);
	CHECK(c[3] == 3);
	img_labels_from_classes(a, 5, IMG_LABELS_BRATS2013);
	CHECK(a[4] == 4 && a[3] == 1);

	{
		uint8_t g1[3] = {0, 2, 4}, g2[3] = {0, 3, 1}, g3[3] = {0, 1, 2};
		CHECK(img_label_conv_guess(g1, 3) == IMG_LABELS_BRATS2017);
		CHECK(img_label_conv_guess(g2, 3) == IMG_LABELS_BRATS2023);
		CHECK(img_label_conv_guess(g3, 3) == IMG_LABELS_BRATS2017);
	}
}

static void test_same_subject(void)
{
	uint8_t *l21 = NULL, *l23 = NULL, *l19 = NULL;
	size_t n = (size_t)240 * 240 * 155, i, cnt[5] = {0}, cls[4] = {0};
	img_volume v21, v23;

	CHECK(img_labels_read(img_t_path(
	    "brats2021/BraTS2021_00000/BraTS2021_00000_seg.nii.gz"), &l21,
	    &v21) == 0);
	CHECK(img_labels_read(img_t_path(
	    "brats2023/BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz"),
	    &l23, &v23) == 0);
	if (l21 == NULL || l23 == NULL)
		return;
	CHECK(img_grid_check(&v21, &v23) == 0);
	CHECK(img_label_conv_guess(l21, n) == IMG_LABELS_BRATS2017);
	CHECK(img_label_conv_guess(l23, n) == IMG_LABELS_BRATS2023);
	for (i = 0; i < n; i++)
		cnt[l21[i] <= 4 ? l21[i] : 0]++;
	CHECK(cnt[3] == 0 && cnt[4] > 0 && cnt[1] > 0 && cnt[2] > 0);
	/* raw files differ (4 vs 3), classes must not */
	CHECK(memcmp(l21, l23, n) != 0);
	CHECK(img_labels_to_classes(l21, n, IMG_LABELS_BRATS2017) == 0);
	CHECK(img_labels_to_classes(l23, n, IMG_LABELS_BRATS2023) == 0);
	CHECK(memcmp(l21, l23, n) == 0);
	/* a 2023 file read with the 2017 convention is refused */
	img_labels_from_classes(l23, n, IMG_LABELS_BRATS2023);
	CHECK(img_labels_to_classes(l23, n, IMG_LABELS_BRATS2017) == -1);
	CHECK_ERR("value 3");
	img_volume_free(&v21);
	img_volume_free(&v23);
	free(l21);
	free(l23);

	/* uint16 seg (00019) */
	CHECK(img_labels_read(img_t_path(
	    "brats2021/BraTS2021_00019/BraTS2021_00019_seg.nii.gz"), &l19,
	    NULL) == 0);
	if (l19) {
		CHECK(img_label_conv_guess(l19, n) == IMG_LABELS_BRATS2017);
		CHECK(img_labels_to_classes(l19, n, IMG_LABELS_BRATS2017) == 0);
		for (i = 0; i < n; i++)
			cls[l19[i] & 3]++;
		/* counts from the file: 1605 NCR, 131017 ED, 10375 ET */
		CHECK(cls[1] == 1605 && cls[2] == 131017 && cls[3] == 10375);
		free(l19);
	}
}

static void test_brats2013(void)
{
	uint8_t *l = NULL;
	size_t n = (size_t)240 * 240 * 155, i, raw[5] = {0}, cls[4] = {0};

	CHECK(img_labels_read(img_t_path("brats2013-deepmedic/test/"
	    "brats_2013_pat0002_1/OTMultiClass.nii.gz"), &l, NULL) == 0);
	if (l == NULL)
		return;
	for (i = 0; i < n; i++)
		raw[l[i] <= 4 ? l[i] : 0]++;
	CHECK(raw[1] == 163 && raw[2] == 53736 && raw[3] == 943 &&
	    raw[4] == 8219);
	CHECK(img_labels_to_classes(l, n, IMG_LABELS_BRATS2013) == 0);
	for (i = 0; i < n; i++)
		cls[l[i] & 3]++;
	CHECK(cls[1] == 163 + 943 && cls[2] == 53736 && cls[3] == 8219);
	free(l);
}

int main(void)
{
	fs_log_set_level(FS_LOG_ERR);
	test_synthetic();
	test_same_subject();
	test_brats2013();
	return img_t_finish("test_img_labels");
}
