/* img_probe.c - a small command-line window on the imaging room for the
 * Python cross-checks (crosscheck.py). Not installed.
 *   img_probe sample FILE x y z [x y z ...]   values after scaling
 *   img_probe header FILE                     dims, spacing, affine
 *   img_probe labels-write LIKE SRC OUT       SRC's labels on LIKE's header
 *   img_probe classes SEG CONV|guess OUT      classes written on SEG's grid
 *   img_probe metrics PRED REF                class maps -> JSON metrics */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "imaging.h"

static int fail(void)
{
	fprintf(stderr, "img_probe: %s\n", fs_error());
	return 1;
}

int main(int argc, char **argv)
{
	img_volume v;

	if (argc < 3)
		return fprintf(stderr, "usage: see img_probe.c\n"), 2;
	if (strcmp(argv[1], "sample") == 0) {
		int i;
		if (img_volume_read(argv[2], &v) != 0)
			return fail();
		for (i = 3; i + 2 < argc; i += 3) {
			int x = atoi(argv[i]), y = atoi(argv[i + 1]),
			    z = atoi(argv[i + 2]);
			printf("%.9g\n", (double)v.data[((size_t)z * v.ny + y) *
			    v.nx + x]);
		}
		img_volume_free(&v);
		return 0;
	}
	if (strcmp(argv[1], "header") == 0) {
		int i;
		if (img_volume_read(argv[2], &v) != 0)
			return fail();
		printf("%d %d %d\n%.9g %.9g %.9g\n", v.nx, v.ny, v.nz,
		    v.spacing[0], v.spacing[1], v.spacing[2]);
		for (i = 0; i < 4; i++)
			printf("%.9g %.9g %.9g %.9g\n", v.affine[i][0],
			    v.affine[i][1], v.affine[i][2], v.affine[i][3]);
		img_volume_free(&v);
		return 0;
	}
	if (strcmp(argv[1], "labels-write") == 0 && argc == 5) {
		uint8_t *lab = NULL;
		img_volume like;
		if (img_volume_read(argv[2], &like) != 0 ||
		    img_labels_read(argv[3], &lab, NULL) != 0 ||
		    img_labels_write(argv[4], &like, lab) != 0)
			return fail();
		free(lab);
		img_volume_free(&like);
		return 0;
	}
	if (strcmp(argv[1], "classes") == 0 && argc == 5) {
		uint8_t *lab = NULL;
		size_t n;
		int conv;
		if (img_labels_read(argv[2], &lab, &v) != 0)
			return fail();
		n = (size_t)v.nx * v.ny * v.nz;
		conv = strcmp(argv[3], "guess") == 0 ?
		    (int)img_label_conv_guess(lab, n) :
		    img_label_conv_parse(argv[3]);
		if (conv < 0 || img_labels_to_classes(lab, n, conv) != 0 ||
		    img_labels_write(argv[4], &v, lab) != 0)
			return fail();
		printf("%s\n", img_label_conv_name(conv));
		free(lab);
		img_volume_free(&v);
		return 0;
	}
	if (strcmp(argv[1], "metrics") == 0 && argc == 4) {
		uint8_t *p = NULL, *q = NULL;
		img_volume pv, qv;
		img_metrics m;
		if (img_labels_read(argv[2], &p, &pv) != 0 ||
		    img_labels_read(argv[3], &q, &qv) != 0 ||
		    img_grid_check(&pv, &qv) != 0 ||
		    img_metrics_compute(p, q, pv.nx, pv.ny, pv.nz, pv.spacing,
		    &m) != 0)
			return fail();
		printf("{\"dice\": [%.17g, %.17g, %.17g], "
		    "\"hd95\": [%.17g, %.17g, %.17g], "
		    "\"vol_pred_ml\": [%.17g, %.17g, %.17g], "
		    "\"vol_ref_ml\": [%.17g, %.17g, %.17g]}\n",
		    m.dice[0], m.dice[1], m.dice[2], m.hd95[0], m.hd95[1],
		    m.hd95[2], m.vol_pred_ml[0], m.vol_pred_ml[1],
		    m.vol_pred_ml[2], m.vol_ref_ml[0], m.vol_ref_ml[1],
		    m.vol_ref_ml[2]);
		free(p);
		free(q);
		img_volume_free(&pv);
		img_volume_free(&qv);
		return 0;
	}
	fprintf(stderr, "img_probe: unknown command %s\n", argv[1]);
	return 2;
}
