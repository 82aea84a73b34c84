/* bench_core.c - (1) inference of a full real case and (2) one training step
 * with the default model, each as a ratio of its effective GFLOP/s over the
 * GFLOP/s of the same convolutions run bare through the shim in the same
 * run. This machine is shared and noisy, so every repeat times the bare
 * convolutions right after the real work, and the ratio reported is the
 * median of the per-repeat ratios (bare seconds / real seconds, which is
 * effective GFLOP/s / bare GFLOP/s as both count the same FLOPs).
 *
 * usage: bench_core [--case DIR] [--repeats N] [--threads N] [--quick]
 *                   [--only infer|train] [--save-weights FILE]
 * Prints one flat JSON line per figure (bench_util.h). --save-weights
 * writes the model's initial weights (for timing `fedseg infer`) and also
 * prints the bare-conv figure of the inference shapes. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "bench_util.h"
#include "imaging.h"
#include "model.h"
#include "torch_c.h"

#define MAXL 64
#define MAXR 50

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
	    {"only", required_argument, 0, 'o'},
	    {"save-weights", required_argument, 0, 'w'},
	    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *data = getenv("FEDSEG_DATA"), *only = NULL, *wout = NULL;
	char casedir[4096], note[1024];
	int repeats = 5, threads = 0, quick = 0, c;
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
		else if (c == 'o')
			only = optarg;
		else if (c == 'w')
			wout = optarg;
		else {
			fprintf(c == 'h' ? stdout : stderr, "usage: bench_core "
			    "[--case DIR] [--repeats N] [--threads N] [--quick] "
			    "[--only infer|train] [--save-weights FILE]\n");
			return c == 'h' ? 0 : 2;
		}
	}
	if (repeats < 1 || repeats > MAXR) {
		fprintf(stderr, "bench_core: --repeats must be 1..%d\n", MAXR);
		return 2;
	}
	if (only && strcmp(only, "infer") && strcmp(only, "train")) {
		fprintf(stderr, "bench_core: --only infer|train\n");
		return 2;
	}
	if (threads <= 0)
		threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
	tc_set_threads(threads);
	if (quick) {
		sp.base = 4;
		sp.depth = 3;
		if (repeats > 2)
			repeats = 2;
	}
	if (wout != NULL) {
		model_table tab;
		float *w;
		if (model_table_build(&sp, &tab) != 0 ||
		    (w = malloc(tab.total * sizeof(float))) == NULL)
			return 1;
		model_init_weights(&tab, 1, w);
		if (model_weights_save(wout, &sp, w, NULL) != 0) {
			fprintf(stderr, "bench_core: %s\n", fs_error());
			return 1;
		}
		free(w);
		model_table_free(&tab);
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
	double t_real[MAXR], t_bare[MAXR], ratio[MAXR];
	bstat sr, sb, sq;
	model_infer_plan(&sp, &io, cs.cx, cs.cy, cs.cz, win, &nwin);
	double fl = nwin * model_forward_flops(&sp, win[2], win[1], win[0]);

	if (wout != NULL) {
		/* Baseline for the whole `fedseg infer` command (timed by
		 * bench/run.sh): the bare convolutions of its windows. */
		bare_convs(&sp, 1, win[2], win[1], win[0], 0); /* warm-up */
		for (int r = 0; r < repeats; r++)
			t_bare[r] = nwin * bare_convs(&sp, 1, win[2], win[1], win[0], 0);
		sb = bench_stat(t_bare, repeats);
		snprintf(note, sizeof(note), "%.2f GFLOP; bare %.1f GFLOP/s",
		    fl / 1e9, fl / sb.median / 1e9);
		bench_emit("infer_bare_conv", "bare conv3d, full-case shapes", "s",
		    sb, "-", sb, 1.0, "-", -1, 1, note);
		only = "none";
	}
	if (only == NULL || strcmp(only, "infer") == 0) {
		/* Inference of the whole case (brain box already cropped: the
		 * crop is part of loading, in the command's figure). One
		 * untimed run first: allocator and thread pool warm. */
		model_segment(net, &cs, &io, lab);
		for (int r = 0; r < repeats; r++) {
			double t0 = fs_now();
			if (model_segment(net, &cs, &io, lab) != 0) {
				fprintf(stderr, "bench_core: %s\n", fs_error());
				return 1;
			}
			t_real[r] = fs_now() - t0;
			t_bare[r] = nwin * bare_convs(&sp, 1, win[2], win[1], win[0], 0);
			ratio[r] = t_bare[r] / t_real[r];
		}
		sr = bench_stat(t_real, repeats);
		sb = bench_stat(t_bare, repeats);
		sq = bench_stat(ratio, repeats);
		snprintf(note, sizeof(note), "case %s grid %dx%dx%d brain box "
		    "%dx%dx%d, %d window(s) %dx%dx%d, model base %d depth %d, %d "
		    "threads, %.2f GFLOP, %.1f GFLOP/s vs bare %.1f GFLOP/s "
		    "(medians); per-repeat ratio min %.3f max %.3f", cs.id, cs.nx,
		    cs.ny, cs.nz, cs.cx, cs.cy, cs.cz, nwin, win[0], win[1], win[2],
		    sp.base, sp.depth, threads, fl / 1e9, fl / sr.median / 1e9,
		    fl / sb.median / 1e9, sq.min, sq.max);
		bench_emit("infer_inproc", "full-case inference, in process", "s",
		    sr, "bare conv3d, same shapes", sb, sq.median,
		    "effective GFLOP/s / bare conv GFLOP/s", 0.6, 1, note);
	}
	if (only == NULL || strcmp(only, "train") == 0) {
		/* One training step at the default patch and batch. */
		model_train_opts to = model_train_opts_default();
		img_case *cp[1] = {&cs};
		int P = quick ? 32 : to.patch;
		double tfl = 3.0 * to.batch * model_forward_flops(&sp, P, P, P);
		to.patch = P;
		to.verbose = 0;
		/* A training case needs a label: a fake one over the brain mask
		 * gives the sampler foreground; timing does not depend on it. */
		if (cs.label == NULL) {
			size_t nv = (size_t)cs.cx * cs.cy * cs.cz;
			cs.label = malloc(nv);
			for (size_t i = 0; i < nv; i++)
				cs.label[i] = cs.mask[i] ? (uint8_t)(1 + i % 3) : 0;
		}
		to.steps = 1; /* warm-up */
		model_train(net, cp, 1, &to, NULL);
		for (int r = 0; r < repeats; r++) {
			model_train_stats st;
			to.steps = quick ? 2 : 4;
			to.seed = 10 + r;
			if (model_train(net, cp, 1, &to, &st) != 0) {
				fprintf(stderr, "bench_core: %s\n", fs_error());
				return 1;
			}
			t_real[r] = st.seconds / to.steps;
			t_bare[r] = bare_convs(&sp, to.batch, P, P, P, 1);
			ratio[r] = t_bare[r] / t_real[r];
		}
		sr = bench_stat(t_real, repeats);
		sb = bench_stat(t_bare, repeats);
		sq = bench_stat(ratio, repeats);
		snprintf(note, sizeof(note), "patch %d^3 batch %d, model base %d "
		    "depth %d, %d threads, %.2f GFLOP (3x forward), %.1f GFLOP/s "
		    "vs bare fwd+bwd %.1f GFLOP/s (medians); per-repeat ratio min "
		    "%.3f max %.3f", P, to.batch, sp.base, sp.depth, threads,
		    tfl / 1e9, tfl / sr.median / 1e9, tfl / sb.median / 1e9,
		    sq.min, sq.max);
		bench_emit("train_step", "one training step (Adam)", "s", sr,
		    "bare conv3d forward+backward, same shapes", sb, sq.median,
		    "effective GFLOP/s / bare conv GFLOP/s", 0.5, 1, note);
	}
	model_net_destroy(net);
	img_case_free(&cs);
	img_dataset_free(&ds);
	free(lab);
	return 0;
}
