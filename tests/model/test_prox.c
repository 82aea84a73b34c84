/* test_prox.c - FedProx: with mu > 0 local training stays closer to the
 * reference (global) weights than the same training with mu = 0, and
 * mu = 0 with a reference given equals plain training. A real case from
 * FEDSEG_DATA. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "imaging.h"
#include "model.h"
#include "torch_c.h"

static double dist(const float *a, const float *b, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
	return sqrt(s);
}

static int train(const model_spec *sp, const float *w0, img_case *c,
    double mu, float *out)
{
	model_train_opts o = model_train_opts_default();
	model_net *net = model_net_create(sp, "cpu", w0, 0);
	img_case *cp[1] = {c};
	o.steps = 12, o.batch = 1, o.patch = 16, o.lr = 0.02, o.seed = 9;
	o.prox_mu = mu;
	o.prox_ref = w0;
	if (net == NULL || model_train(net, cp, 1, &o, NULL) != 0 ||
	    model_net_get_weights(net, out) != 0) {
		fprintf(stderr, "FAIL - training: %s\n", fs_error());
		return -1;
	}
	model_net_destroy(net);
	return 0;
}

int main(void)
{
	const char *data = getenv("FEDSEG_DATA");
	char dir[4096];
	model_spec sp = model_spec_default();
	img_dataset ds = {0};
	img_case c;
	model_table tab;
	if (data == NULL) {
		fprintf(stderr, "FAIL - FEDSEG_DATA not set\n");
		return 1;
	}
	snprintf(dir, sizeof(dir), "%s/brats2021/BraTS2021_00002", data);
	sp.base = 2, sp.depth = 2;
	tc_set_threads(2);
	if (img_dataset_scan(dir, sp.modalities, sp.nmod, &ds) != 0 || ds.n != 1 ||
	    img_case_load(&ds.cases[0], sp.modalities, sp.nmod, 4, 1, &c) != 0) {
		fprintf(stderr, "FAIL - real case %s: %s\n", dir, fs_error());
		return 1;
	}
	model_table_build(&sp, &tab);
	float *w0 = malloc(tab.total * 4), *a = malloc(tab.total * 4);
	float *b = malloc(tab.total * 4), *z = malloc(tab.total * 4);
	model_init_weights(&tab, 3, w0);
	if (train(&sp, w0, &c, 0.0, a) || train(&sp, w0, &c, 1.0, b) ||
	    train(&sp, w0, &c, 0.0, z))
		return 1;
	double da = dist(a, w0, tab.total), db = dist(b, w0, tab.total);
	int fails = 0;
	printf("distance from the global weights: mu=0 %.4f, mu=1 %.4f\n", da, db);
	if (!(db < 0.8 * da)) {
		printf("FAIL - FedProx did not keep the weights closer\n");
		fails++;
	} else
		printf("ok - FedProx (mu=1) stays closer to the global model\n");
	if (memcmp(a, z, tab.total * 4) != 0) {
		printf("FAIL - training is not reproducible from its seed\n");
		fails++;
	} else
		printf("ok - same seed, same weights\n");
	free(w0), free(a), free(b), free(z);
	model_table_free(&tab);
	img_case_free(&c);
	img_dataset_free(&ds);
	return fails ? 1 : 0;
}
