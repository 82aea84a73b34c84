/* cmd_train.c - `fedseg train`: centralised training on a dataset folder,
 * the same code path a node runs each round. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "cmds.h"
#include "imaging.h"
#include "model.h"
#include "torch_c.h"

static void train_usage(FILE *f)
{
	fprintf(f,
	    "usage: fedseg train --data DIR --out W.safetensors [options]\n"
	    "Trains the 3D U-Net on every labelled case under DIR.\n\n"
	    "  --data DIR          dataset folder (BraTS case folders, a manifest, ...)\n"
	    "  --out FILE          weights file to write (safetensors)\n"
	    "  --modalities LIST   input modalities, e.g. flair,t1c (default t1,t1c,t2,flair)\n"
	    "  --steps N           optimiser steps (default 100)\n"
	    "  --patch N           training patch edge in voxels (default 64)\n"
	    "  --batch N           patches per step (default 2)\n"
	    "  --base N            filters at the first level (default 8)\n"
	    "  --depth N           U-Net levels (default 4)\n"
	    "  --lr X              Adam learning rate (default 3e-3)\n"
	    "  --init FILE         start from these weights (spec taken from it)\n"
	    "  --exclude ID,...    leave these cases out (held-out evaluation)\n"
	    "  --max-cases N       use at most N cases (0 = all)\n"
	    "  --threads N         CPU threads (default: all cores)\n"
	    "  --device D          cpu, cuda, cuda:N (default cpu)\n"
	    "  --seed N            random seed (default 1)\n"
	    "  --quiet             no per-step progress\n");
}

static int listed(const char *list, const char *id)
{
	size_t n = strlen(id);
	for (const char *p = list; p && *p;) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len == n && strncmp(p, id, n) == 0)
			return 1;
		p = e ? e + 1 : NULL;
	}
	return 0;
}

int cmd_train(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"data", required_argument, 0, 'd'}, {"out", required_argument, 0, 'o'},
	    {"modalities", required_argument, 0, 'm'},
	    {"steps", required_argument, 0, 's'}, {"patch", required_argument, 0, 'p'},
	    {"batch", required_argument, 0, 'b'}, {"base", required_argument, 0, 'B'},
	    {"depth", required_argument, 0, 'D'}, {"lr", required_argument, 0, 'l'},
	    {"init", required_argument, 0, 'i'}, {"exclude", required_argument, 0, 'x'},
	    {"max-cases", required_argument, 0, 'M'},
	    {"threads", required_argument, 0, 't'}, {"device", required_argument, 0, 'v'},
	    {"seed", required_argument, 0, 'S'}, {"quiet", no_argument, 0, 'q'},
	    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *data = NULL, *out = NULL, *dev = "cpu", *init = NULL,
	    *exclude = NULL;
	model_spec spec = model_spec_default();
	model_train_opts to = model_train_opts_default();
	model_train_stats st;
	img_dataset ds = {0};
	img_case *cases = NULL, **cp = NULL;
	model_net *net = NULL;
	float *w = NULL;
	int threads = 0, seed = 1, quiet = 0, max_cases = 0, ncase = 0, rc = 1, c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case 'd': data = optarg; break;
		case 'o': out = optarg; break;
		case 'm':
			spec.nmod = img_modality_list_parse(optarg, spec.modalities);
			if (spec.nmod < 1)
				return cmd_fail("train", "--modalities: '%s': expected "
				    "a list of t1,t1c,t2,flair", optarg);
			break;
		case 's': bad = cmd_int("steps", optarg, 0, 10000000, &to.steps); break;
		case 'p': bad = cmd_int("patch", optarg, 8, 512, &to.patch); break;
		case 'b': bad = cmd_int("batch", optarg, 1, 256, &to.batch); break;
		case 'B': bad = cmd_int("base", optarg, 1, 64, &spec.base); break;
		case 'D': bad = cmd_int("depth", optarg, 1, MODEL_MAX_DEPTH, &spec.depth); break;
		case 'l': bad = cmd_double("lr", optarg, 1e-8, 10, &to.lr); break;
		case 'i': init = optarg; break;
		case 'x': exclude = optarg; break;
		case 'M': bad = cmd_int("max-cases", optarg, 0, 1000000, &max_cases); break;
		case 't': bad = cmd_int("threads", optarg, 0, 1024, &threads); break;
		case 'v': dev = optarg; break;
		case 'S': bad = cmd_int("seed", optarg, 0, 2147483647, &seed); break;
		case 'q': quiet = 1; break;
		case 'h': train_usage(stdout); return 0;
		default: train_usage(stderr); return 2;
		}
		if (bad)
			return 2;
	}
	if (optind < argc)
		return cmd_fail("train", "unexpected argument '%s'", argv[optind]);
	if (data == NULL || out == NULL) {
		train_usage(stderr);
		return cmd_fail("train", "--data and --out are required");
	}
	if (cmd_threads(threads) != 0)
		return 2;
	if (tc_device_check(dev) != TC_OK)
		return cmd_fail("train", "--device %s: %s", dev, tc_last_error());
	if (init != NULL) {
		if (model_weights_load(init, &spec, &w, NULL) != 0)
			return cmd_fail("train", "%s", fs_error());
	}
	if (to.patch % model_spec_divisor(&spec) != 0)
		return cmd_fail("train", "--patch %d must be a multiple of %d for "
		    "depth %d", to.patch, model_spec_divisor(&spec), spec.depth);
	to.seed = (uint64_t)seed;
	to.verbose = quiet ? 0 : (to.steps >= 20 ? to.steps / 10 : 1);

	if (img_dataset_scan(data, spec.modalities, spec.nmod, &ds) != 0) {
		cmd_fail("train", "%s", fs_error());
		goto out;
	}
	cases = calloc(ds.n ? ds.n : 1, sizeof(*cases));
	cp = calloc(ds.n ? ds.n : 1, sizeof(*cp));
	if (cases == NULL || cp == NULL) {
		cmd_fail("train", "out of memory");
		goto out;
	}
	for (int i = 0; i < ds.n; i++) {
		if (ds.cases[i].label == NULL || listed(exclude, ds.cases[i].id))
			continue;
		if (max_cases > 0 && ncase >= max_cases)
			break;
		if (img_case_load(&ds.cases[i], spec.modalities, spec.nmod, 4, 1,
		    &cases[ncase]) != 0) {
			cmd_fail("train", "%s", fs_error());
			goto out;
		}
		cp[ncase] = &cases[ncase];
		ncase++;
	}
	if (ncase == 0) {
		cmd_fail("train", "%s: no labelled cases with modalities found",
		    data);
		goto out;
	}
	fprintf(stderr, "train: %d cases, %d steps, patch %d, batch %d, "
	    "%d threads, device %s\n", ncase, to.steps, to.patch, to.batch,
	    tc_get_threads(), dev);
	net = model_net_create(&spec, dev, w, (uint64_t)seed);
	if (net == NULL) {
		cmd_fail("train", "%s", fs_error());
		goto out;
	}
	if (model_train(net, cp, ncase, &to, &st) != 0) {
		cmd_fail("train", "%s", fs_error());
		goto out;
	}
	free(w);
	w = malloc(model_net_table(net)->total * sizeof(float));
	if (w == NULL || model_net_get_weights(net, w) != 0) {
		cmd_fail("train", "%s", w ? fs_error() : "out of memory");
		goto out;
	}
	{
		char steps[32], first[32], last[32], ncs[32];
		snprintf(steps, sizeof(steps), "%d", st.steps);
		snprintf(first, sizeof(first), "%.6f", st.first_loss);
		snprintf(last, sizeof(last), "%.6f", st.last_loss);
		snprintf(ncs, sizeof(ncs), "%d", ncase);
		const char *meta[] = {"fedseg.trained_by", "fedseg train",
		    "fedseg.steps", steps, "fedseg.cases", ncs,
		    "fedseg.first_loss", first, "fedseg.last_loss", last, NULL};
		if (model_weights_save(out, &spec, w, meta) != 0) {
			cmd_fail("train", "%s", fs_error());
			goto out;
		}
	}
	printf("{\"steps\": %d, \"cases\": %d, \"first_loss\": %.6f, "
	    "\"last_loss\": %.6f, \"mean_loss\": %.6f, \"seconds\": %.2f, "
	    "\"out\": \"%s\"}\n", st.steps, ncase, st.first_loss, st.last_loss,
	    st.mean_loss, st.seconds, out);
	rc = 0;
out:
	model_net_destroy(net);
	for (int i = 0; i < ncase; i++)
		img_case_free(&cases[i]);
	free(cases);
	free(cp);
	free(w);
	img_dataset_free(&ds);
	return rc;
}
