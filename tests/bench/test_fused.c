/* test_fused.c - the fused, in-place instance norm + leaky ReLU used at
 * inference (tc_instance_norm_lrelu with grad mode off) against libtorch's
 * own instance_norm + leaky_relu (grad mode on takes that path), on shapes
 * with large means (cancellation) and odd plane sizes; and the whole U-Net
 * forward with grad off (fused) against grad on (unfused). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "base.h"
#include "model_impl.h"

static int fails;

/* Error measure: max |a - b| over max |b| (scale of the output), so values
 * near zero (leaky ReLU's negative side) do not dominate. */
static void check(const char *what, const float *a, const float *b, size_t n,
    double tol)
{
	double worst = 0, big = 1e-12;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]);
		if (!(d <= worst))
			worst = d;
		if (fabs((double)b[i]) > big)
			big = fabs((double)b[i]);
	}
	if (!(worst / big <= tol)) {
		printf("not ok - %s: max error %.3g of max |y| %.3g > %.3g\n",
		    what, worst, big, tol);
		fails++;
	} else {
		printf("ok - %s (max error %.2g of max |y| %.3g)\n", what, worst,
		    big);
	}
}

/* Reference in double precision, from the float input. */
static void ref_norm(const float *x, float *y, int N, int C, size_t pl,
    const float *g, const float *be, double eps, double slope)
{
	for (int i = 0; i < N * C; i++) {
		const float *p = x + (size_t)i * pl;
		double m = 0, v = 0;
		for (size_t j = 0; j < pl; j++)
			m += p[j];
		m /= (double)pl;
		for (size_t j = 0; j < pl; j++)
			v += (p[j] - m) * (p[j] - m);
		v /= (double)pl;
		for (size_t j = 0; j < pl; j++) {
			double t = (p[j] - m) / sqrt(v + eps) * g[i % C] + be[i % C];
			y[(size_t)i * pl + j] = (float)(t > 0 ? t : t * slope);
		}
	}
}

static void one_norm(int N, int C, int D, int H, int W, float mean, float sd)
{
	size_t n = (size_t)N * C * D * H * W;
	float *x = malloc(n * 4), *a = malloc(n * 4), *b = malloc(n * 4);
	float *r = malloc(n * 4);
	float g[16], be[16];
	int64_t xs[5] = {N, C, D, H, W}, cs[1] = {C};
	char what[128];
	for (size_t i = 0; i < n; i++)
		x[i] = mean + sd * (float)sin(0.731 * (double)i + 0.2 * (i % 13));
	for (int c = 0; c < C; c++)
		g[c] = 0.5f + 0.25f * c, be[c] = -0.3f + 0.1f * c;
	ref_norm(x, r, N, C, (size_t)D * H * W, g, be, 1e-5, 0.01);
	tc_scope *s = tc_scope_create();
	tc_tensor *gt = tc_from_float(s, g, cs, 1, "cpu");
	tc_tensor *bt = tc_from_float(s, be, cs, 1, "cpu");
	int prev = tc_set_grad_enabled(1);
	tc_tensor *ref = tc_leaky_relu(s, tc_instance_norm(s,
	    tc_from_float(s, x, xs, 5, "cpu"), gt, bt, 1e-5), 0.01);
	tc_set_grad_enabled(0);
	tc_tensor *xin = tc_from_float(s, x, xs, 5, "cpu");
	tc_tensor *fu = tc_instance_norm_lrelu(s, xin, gt, bt, 1e-5, 0.01);
	tc_set_grad_enabled(prev);
	snprintf(what, sizeof(what), "fused norm+lrelu %dx%dx%dx%dx%d mean %g sd %g",
	    N, C, D, H, W, mean, sd);
	if (ref == NULL || fu == NULL || fu != xin ||
	    tc_to_float(ref, a, n) != TC_OK || tc_to_float(fu, b, n) != TC_OK) {
		printf("not ok - %s: %s (in place: %d)\n", what, tc_last_error(),
		    fu == xin);
		fails++;
	} else {
		char w2[160];
		snprintf(w2, sizeof(w2), "libtorch, same data, vs double reference");
		check(w2, a, r, n, 1e-4);
		check(what, b, r, n, 1e-4);
	}
	tc_scope_destroy(s);
	free(x), free(a), free(b), free(r);
}

int main(void)
{
	tc_set_threads(2);
	one_norm(1, 8, 16, 16, 16, 0.0f, 1.0f);
	one_norm(2, 3, 7, 9, 11, 100.0f, 0.5f);   /* large mean, odd planes */
	one_norm(1, 4, 40, 41, 42, -3.0f, 20.0f); /* > one 4096 block */
	one_norm(2, 16, 2, 2, 2, 1.0f, 1e-3f);    /* tiny planes, tiny spread */

	/* The U-Net: grad off (fused, in place) vs grad on (libtorch ops). */
	model_spec sp = model_spec_default();
	sp.base = 4;
	sp.depth = 3;
	const int D = 24;
	model_net *net = model_net_create(&sp, "cpu", NULL, 3);
	size_t nin = (size_t)sp.nmod * D * D * D, nout = (size_t)sp.num_classes * D * D * D;
	float *x = malloc(nin * 4), *y0 = malloc(nout * 4), *y1 = malloc(nout * 4);
	int64_t xs[5] = {1, sp.nmod, D, D, D};
	for (size_t i = 0; i < nin; i++)
		x[i] = (float)sin(0.37 * i) + 0.1f * (float)(i % 7);
	tc_scope *s = tc_scope_create();
	int prev = tc_set_grad_enabled(1);
	tc_tensor *o1 = model_forward(net, s, tc_from_float(s, x, xs, 5, "cpu"));
	tc_set_grad_enabled(0);
	tc_tensor *o0 = model_forward(net, s, tc_from_float(s, x, xs, 5, "cpu"));
	tc_set_grad_enabled(prev);
	if (net == NULL || o0 == NULL || o1 == NULL ||
	    tc_to_float(o0, y0, nout) != TC_OK || tc_to_float(o1, y1, nout) != TC_OK) {
		printf("not ok - unet forward: %s\n", tc_last_error());
		fails++;
	} else {
		check("unet forward, grad off (fused) vs grad on", y0, y1, nout, 1e-4);
	}
	tc_scope_destroy(s);
	model_net_destroy(net);
	free(x), free(y0), free(y1);
	return fails ? 1 : 0;
}
