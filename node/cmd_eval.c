/* cmd_eval.c - `fedseg eval`: BraTS metrics of a segmentation against a
 * reference, as JSON. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "cmds.h"
#include "imaging.h"

static void eval_usage(FILE *f)
{
	fprintf(f,
	    "usage: fedseg eval --pred SEG --ref REF [--pred-labels C] [--ref-labels C]\n"
	    "Prints JSON: Dice and HD95 (mm) for WT, TC, ET and volumes (mL).\n"
	    "Label conventions C: brats2013, brats2017, brats2023, or auto\n"
	    "(default: from the values present: 4 -> brats2017, 3 without 4 -> brats2023).\n");
}

static int load_labels(const char *path, const char *conv_s, img_volume *v,
    uint8_t **lab)
{
	size_t n;
	int conv;
	if (img_volume_read(path, v) != 0)
		return -1;
	n = (size_t)v->nx * v->ny * v->nz;
	*lab = malloc(n ? n : 1);
	if (*lab == NULL)
		return fs_seterr("out of memory");
	for (size_t i = 0; i < n; i++) {
		float x = v->data[i];
		if (x < 0 || x > 255 || x != (float)(int)x)
			return fs_seterr("%s: not a label map (voxel value %g)",
			    path, x);
		(*lab)[i] = (uint8_t)x;
	}
	if (conv_s == NULL || strcmp(conv_s, "auto") == 0)
		conv = img_label_conv_guess(*lab, n);
	else if ((conv = img_label_conv_parse(conv_s)) < 0)
		return fs_seterr("unknown label convention '%s'", conv_s);
	if (img_labels_to_classes(*lab, n, conv) != 0)
		return fs_preferr("%s", path);
	return 0;
}

int cmd_eval(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"pred", required_argument, 0, 'p'}, {"ref", required_argument, 0, 'r'},
	    {"pred-labels", required_argument, 0, 'P'},
	    {"ref-labels", required_argument, 0, 'R'},
	    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *pred = NULL, *ref = NULL, *pc = NULL, *rcv = NULL;
	img_volume pv, rv;
	uint8_t *pl = NULL, *rl = NULL;
	img_metrics m;
	int rc = 1, c;
	static const char *names[3] = {"wt", "tc", "et"};

	memset(&pv, 0, sizeof(pv));
	memset(&rv, 0, sizeof(rv));
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'p': pred = optarg; break;
		case 'r': ref = optarg; break;
		case 'P': pc = optarg; break;
		case 'R': rcv = optarg; break;
		case 'h': eval_usage(stdout); return 0;
		default: eval_usage(stderr); return 2;
		}
	}
	if (optind < argc)
		return cmd_fail("eval", "unexpected argument '%s'", argv[optind]);
	if (pred == NULL || ref == NULL) {
		eval_usage(stderr);
		return cmd_fail("eval", "--pred and --ref are required");
	}
	if (load_labels(pred, pc, &pv, &pl) != 0 ||
	    load_labels(ref, rcv, &rv, &rl) != 0 || img_grid_check(&pv, &rv) != 0 ||
	    img_metrics_compute(pl, rl, pv.nx, pv.ny, pv.nz, pv.spacing, &m) != 0) {
		cmd_fail("eval", "%s", fs_error());
		goto out;
	}
	printf("{\"dice\": {");
	for (int i = 0; i < 3; i++)
		printf("%s\"%s\": %.8f", i ? ", " : "", names[i], m.dice[i]);
	printf("}, \"hd95\": {");
	for (int i = 0; i < 3; i++)
		printf("%s\"%s\": %.6f", i ? ", " : "", names[i], m.hd95[i]);
	printf("}, \"volume_ml\": {");
	for (int i = 0; i < 3; i++)
		printf("%s\"%s\": %.6f", i ? ", " : "", names[i], m.vol_pred_ml[i]);
	printf("}, \"ref_volume_ml\": {");
	for (int i = 0; i < 3; i++)
		printf("%s\"%s\": %.6f", i ? ", " : "", names[i], m.vol_ref_ml[i]);
	printf("}}\n");
	rc = 0;
out:
	img_volume_free(&pv);
	img_volume_free(&rv);
	free(pl);
	free(rl);
	return rc;
}
