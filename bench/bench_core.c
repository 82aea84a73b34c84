/* bench_core.c - one full-case inference and one training step with the
 * default model, each as a ratio of its effective GFLOP/s over the GFLOP/s
 * of the same convolutions run bare through the shim in the same run (this
 * machine is shared and noisy: absolute times drift, ratios hold).
 *
 * usage: bench_core [--case DIR] [--repeats N] [--threads N] [--quick]
 * Prints one JSON object per figure. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "imaging.h"
#include "model.h"
#include "torch_c.h"

#define MAXL 64

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void stats(double *v, int n, double *mn, double *med, double *mx)
{
	qsort(v, n, sizeof(double), cmp_d);
	*mn = v[0], *mx = v[n - 1], *med = v[n / 2];
}

/* Seconds for the bare convolutions of one forward at batch nb and input
 * d x h x w (train: forward + backward of each conv). */
static double bare_convs(const model_spec *sp, int nb, int d, int h, int w,
    int train)
{
	model_conv_shape l[MAXL];
	int n = model_conv_layers(sp, d, h, w, l, MAXL);
	tc_scope *s = tc_scope_create();
	int prev = tc_set_grad_enabled(train);
	double t = 0;
	for (int i = 0; i < n; i++) {
		int64_t xs[5] = {nb, l[i].cin, l[i].in[0], l[i].in[1], l[i].in[2]};
		int64_t ws[5] = {l[i].transposed ? l[i].cin : l[i].cout,
		    l[i].transposed ? l[i].cout : l[i].cin, l[i].k, l[i].k, l[i].k};
		tc_tensor *x = tc_randn(s, xs, 5, 1.0f, "cpu");
		tc_tensor *wt = tc_randn(s, ws, 5, 0.1f, "cpu");
		if (train) {
			tc_set_requires_grad(x, 1);
			tc_set_requires_grad(wt, 1);
		}
		double t0 = fs_now();
		tc_tensor *y = l[i].transposed ?
		    tc_conv_transpose3d(s, x, wt, NULL, l[i].stride, 0) :
		    tc_conv3d(s, x, wt, NULL, l[i].stride, l[i].k / 2);
		if (train && y)
			tc_backward(tc_sum(s, y));
		else if (y)
			tc_item(tc_sum(s, y)); /* force completion */
		t += fs_now() - t0;
		tc_scope_reset(s);
	}
	tc_set_grad_enabled(prev);
	tc_scope_destroy(s);
	return t;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"case", required_argument, 0, 'c'}, {"repeats", required_argument, 0, 'r'},
	    {"threads", required_argument, 0, 't'}, {"quick", no_argument, 0, 'q'},
	    {0, 0, 0, 0}};
	const char *data = getenv("FEDSEG_DATA");
	char casedir[4096];
	int repeats = 3, threads = 0, quick = 0, c;
	model_spec sp = model_spec_default();
	img_dataset ds = {0};
	img_case cs;

	snprintf(casedir, sizeof(casedir), "%s/brats2021/BraTS2021_00000",
	    data ? data : "../shared/data");
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'c')
			snprintf(casedir, sizeof(casedir), "%s", optarg);
		else if (c == 'r')
			repeats = atoi(optarg);
		else if (c == 't')
			threads = atoi(optarg);
		else if (c == 'q')
			quick = 1;
		else
			return 2;
	}
	if (repeats < 1 || repeats > 50)
		repeats = 3;
	if (threads <= 0)
		threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
	tc_set_threads(threads);
	if (quick) {
		sp.base = 4;
		sp.depth = 3;
		repeats = 1;
	}
	if (img_dataset_scan(casedir, sp.modalities, sp.nmod, &ds) != 0 || ds.n != 1 ||
	    img_case_load(&ds.cases[0], sp.modalities, sp.nmod, 4, 0, &cs) != 0) {
		fprintf(stderr, "bench_core: %s: %s\n", casedir,
		    ds.n == 1 ? fs_error() : "not one case (set FEDSEG_DATA)");
		return 1;
	}
	model_net *net = model_net_create(&sp, "cpu", NULL, 1);
	model_infer_opts io = model_infer_opts_default();
	int win[3], nwin;
	uint8_t *lab = malloc((size_t)cs.nx * cs.ny * cs.nz);
	double t_inf[50], t_bare[50], mn, med, mx, bmn, bmed, bmx;
	model_infer_plan(&sp, &io, cs.cx, cs.cy, cs.cz, win, &nwin);
	double fl = nwin * model_forward_flops(&sp, win[2], win[1], win[0]);

	/* Inference of the whole case (brain box already cropped: the crop is
	 * part of loading, timed separately by the command). */
	for (int r = 0; r < repeats; r++) {
		double t0 = fs_now();
		if (model_segment(net, &cs, &io, lab) != 0) {
			fprintf(stderr, "bench_core: %s\n", fs_error());
			return 1;
		}
		t_inf[r] = fs_now() - t0;
		t_bare[r] = nwin * bare_convs(&sp, 1, win[2], win[1], win[0], 0);
	}
	stats(t_inf, repeats, &mn, &med, &mx);
	stats(t_bare, repeats, &bmn, &bmed, &bmx);
	printf("{\"bench\": \"inference_full_case\", \"case\": \"%s\", \"grid\": "
	    "[%d, %d, %d], \"brain_box\": [%d, %d, %d], \"windows\": %d, "
	    "\"window\": [%d, %d, %d], \"model\": \"base %d depth %d\", "
	    "\"threads\": %d, \"gflop\": %.2f, \"seconds\": {\"min\": %.3f, "
	    "\"median\": %.3f, \"max\": %.3f}, \"bare_conv_seconds\": {\"min\": "
	    "%.3f, \"median\": %.3f, \"max\": %.3f}, \"gflops\": %.2f, "
	    "\"bare_conv_gflops\": %.2f, \"ratio\": %.3f}\n", cs.id, cs.nx, cs.ny,
	    cs.nz, cs.cx, cs.cy, cs.cz, nwin, win[0], win[1], win[2], sp.base,
	    sp.depth, threads, fl / 1e9, mn, med, mx, bmn, bmed, bmx,
	    fl / med / 1e9, fl / bmed / 1e9, bmed / med);
	fflush(stdout);

	/* One training step at the default patch and batch. */
	model_train_opts to = model_train_opts_default();
	img_case *cp[1] = {&cs};
	int P = quick ? 32 : to.patch;
	double tfl = 3.0 * to.batch * model_forward_flops(&sp, P, P, P);
	to.patch = P;
	to.verbose = 0;
	/* A training case needs a label: use a fake one of the brain mask so
	 * the sampler has foreground; the timing does not depend on it. */
	if (cs.label == NULL) {
		size_t nv = (size_t)cs.cx * cs.cy * cs.cz;
		cs.label = malloc(nv);
		for (size_t i = 0; i < nv; i++)
			cs.label[i] = cs.mask[i] ? (uint8_t)(1 + i % 3) : 0;
	}
	for (int r = 0; r < repeats; r++) {
		model_train_stats st;
		to.steps = quick ? 2 : 6;
		if (model_train(net, cp, 1, &to, &st) != 0) {
			fprintf(stderr, "bench_core: %s\n", fs_error());
			return 1;
		}
		t_inf[r] = st.seconds / to.steps;
		t_bare[r] = bare_convs(&sp, to.batch, P, P, P, 1);
	}
	stats(t_inf, repeats, &mn, &med, &mx);
	stats(t_bare, repeats, &bmn, &bmed, &bmx);
	printf("{\"bench\": \"train_step\", \"patch\": %d, \"batch\": %d, "
	    "\"model\": \"base %d depth %d\", \"threads\": %d, \"gflop\": %.2f, "
	    "\"seconds\": {\"min\": %.3f, \"median\": %.3f, \"max\": %.3f}, "
	    "\"bare_conv_fwd_bwd_seconds\": {\"min\": %.3f, \"median\": %.3f, "
	    "\"max\": %.3f}, \"gflops\": %.2f, \"bare_conv_gflops\": %.2f, "
	    "\"ratio\": %.3f}\n", P, to.batch, sp.base, sp.depth, threads,
	    tfl / 1e9, mn, med, mx, bmn, bmed, bmx, tfl / med / 1e9,
	    tfl / bmed / 1e9, bmed / med);
	model_net_destroy(net);
	img_case_free(&cs);
	img_dataset_free(&ds);
	free(lab);
	return 0;
}
