/* labels.c - BraTS label conventions <-> internal classes. See imaging.h. */
#include "imaging.h"

#include "base.h"

#include <string.h>
#include <strings.h>

#define IMG_NCONV 4
static const char *const img_conv_names[IMG_NCONV] = {"brats2013",
	"brats2017", "brats2023", "msd"};

int img_label_conv_parse(const char *s)
{
	int i;

	if (s == NULL)
		return -1;
	for (i = 0; i < IMG_NCONV; i++)
		if (strcasecmp(s, img_conv_names[i]) == 0)
			return i;
	/* 2017 to 2021 share one convention. */
	if (strcasecmp(s, "brats2018") == 0 || strcasecmp(s, "brats2019") == 0 ||
	    strcasecmp(s, "brats2020") == 0 || strcasecmp(s, "brats2021") == 0)
		return IMG_LABELS_BRATS2017;
	return -1;
}

const char *img_label_conv_name(int conv)
{
	if (conv < 0 || conv >= IMG_NCONV)
		return "guess";
	return img_conv_names[conv];
}

/* File value -> class for each convention; 255 = not allowed. */
static const uint8_t img_to_class[IMG_NCONV][5] = {
	/* brats2013: 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing */
	{0, 1, 2, 1, 3},
	/* brats2017..2021: 1 NCR/NET, 2 edema, 4 enhancing */
	{0, 1, 2, 255, 3},
	/* brats2023: 1 NCR, 2 edema, 3 enhancing */
	{0, 1, 2, 3, 255},
	/* MSD Task01 (dataset.json): 1 edema, 2 non-enhancing, 3 enhancing */
	{0, 2, 1, 3, 255},
};
static const uint8_t img_from_class[IMG_NCONV][4] = {
	{0, 1, 2, 4},
	{0, 1, 2, 4},
	{0, 1, 2, 3},
	{0, 2, 1, 3},
};

int img_labels_to_classes(uint8_t *lab, size_t n, img_label_conv conv)
{
	size_t i;
	uint8_t c;

	if ((int)conv < 0 || (int)conv >= IMG_NCONV)
		return fs_seterr("unknown label convention %d", (int)conv);
	/* Check first so that a failure leaves lab unchanged. */
	for (i = 0; i < n; i++) {
		if (lab[i] > 4 || img_to_class[conv][lab[i]] == 255)
			return fs_seterr("label value %u (voxel %zu) is not in "
			    "the %s convention", (unsigned)lab[i], i,
			    img_conv_names[conv]);
	}
	for (i = 0; i < n; i++) {
		c = img_to_class[conv][lab[i]];
		lab[i] = c;
	}
	return 0;
}

void img_labels_from_classes(uint8_t *lab, size_t n, img_label_conv conv)
{
	size_t i;

	if ((int)conv < 0 || (int)conv >= IMG_NCONV)
		return;
	for (i = 0; i < n; i++)
		lab[i] = lab[i] < 4 ? img_from_class[conv][lab[i]] : 0;
}

img_label_conv img_label_conv_guess(const uint8_t *lab, size_t n)
{
	int seen[256] = {0};
	size_t i;

	for (i = 0; i < n; i++)
		seen[lab[i]] = 1;
	if (seen[4])
		return IMG_LABELS_BRATS2017;
	if (seen[3])
		return IMG_LABELS_BRATS2023;
	/* Only 0, 1, 2: both conventions agree; call it 2017. */
	return IMG_LABELS_BRATS2017;
}
