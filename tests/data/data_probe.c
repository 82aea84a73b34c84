/* data_probe.c - loads one case of a folder (the first, or the one named)
 * through img_dataset_scan + img_case_load with its label, and prints a
 * digest: grid, crop box, an FNV-1a hash of the image floats and the
 * voxel count of each class. Tests compare digests across layouts. */
#include <stdio.h>
#include <string.h>

#include "base.h"
#include "imaging.h"

int main(int argc, char **argv)
{
	int mods[4] = {IMG_T1, IMG_T1C, IMG_T2, IMG_FLAIR}, i;
	img_dataset ds = {0};
	img_case c;
	const img_case_ref *r = NULL;
	unsigned long long h = 1469598103934665603ull, cls[4] = {0, 0, 0, 0};
	size_t n, k;

	if (argc < 2) {
		fprintf(stderr, "usage: data_probe DIR [CASE]\n");
		return 2;
	}
	if (img_dataset_scan(argv[1], mods, 4, &ds) != 0) {
		fprintf(stderr, "data_probe: %s\n", fs_error());
		return 1;
	}
	for (i = 0; i < ds.n; i++)
		if (argc < 3 || strcmp(ds.cases[i].id, argv[2]) == 0) {
			r = &ds.cases[i];
			break;
		}
	if (r == NULL || img_case_load(r, mods, 4, 4, 1, &c) != 0) {
		fprintf(stderr, "data_probe: %s\n", r ? fs_error() : "no such case");
		return 1;
	}
	n = (size_t)c.cx * c.cy * c.cz;
	for (k = 0; k < 4 * n * sizeof(float); k++) {
		h ^= ((const unsigned char *)c.img)[k];
		h *= 1099511628211ull;
	}
	for (k = 0; c.label && k < n; k++)
		cls[c.label[k] & 3]++;
	printf("grid %dx%dx%d box %d,%d,%d-%d,%d,%d img %016llx classes %llu %llu "
	    "%llu %llu\n", c.nx, c.ny, c.nz, c.box[0], c.box[1], c.box[2],
	    c.box[3], c.box[4], c.box[5], h, cls[0], cls[1], cls[2], cls[3]);
	img_case_free(&c);
	img_dataset_free(&ds);
	return 0;
}
