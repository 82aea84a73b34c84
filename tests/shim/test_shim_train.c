/*
 * test_shim_train.c - autograd and optimisers against PyTorch:
 *  - gradients of conv3d + instance_norm + leaky_relu + mean,
 *  - 3 Adam steps and 3 SGD (momentum) steps from known params/grads,
 *  - Adam/SGD state save + load gives the identical next step,
 *  - loading a file for other shapes fails and leaves the optimiser usable.
 * Usage: test_shim_train FIXTURE_DIR
 */
#include <unistd.h>

#include "shim_test.h"

static void set_grads_via_backward(tc_scope *s, tc_tensor *p0, tc_tensor *p1, int k)
{
	char n0[32], n1[32];
	snprintf(n0, sizeof n0, "opt_g0_%d", k);
	snprintf(n1, sizeof n1, "opt_g1_%d", k);
	/* d/dp sum(p * g) = g */
	tc_tensor *loss = tc_add(s, tc_sum(s, tc_mul(s, p0, fx_tensor(s, n0))),
	    tc_sum(s, tc_mul(s, p1, fx_tensor(s, n1))));
	CHECK(tc_backward(loss) == TC_OK, "backward step %d", k);
}

static void make_params(tc_tensor **p0, tc_tensor **p1)
{
	*p0 = fx_tensor(NULL, "opt_p0");
	*p1 = fx_tensor(NULL, "opt_p1");
	REQUIRE(tc_set_requires_grad(*p0, 1) == TC_OK && tc_set_requires_grad(*p1, 1) == TC_OK,
	    "requires_grad");
}

static int same_values(const tc_tensor *a, const tc_tensor *b)
{
	float x[64], y[64];
	size_t n = (size_t)tc_numel(a);
	if (n > 64 || tc_numel(b) != (int64_t)n || tc_to_float(a, x, n) != TC_OK ||
	    tc_to_float(b, y, n) != TC_OK)
		return 0;
	return memcmp(x, y, n * sizeof(float)) == 0;
}

/* Tighter than fx_close for optimiser steps: the error must be small against
 * the step itself, |got - ref| <= 1e-4 |ref - prev| + 4 ulp(ref), so a
 * learning rate off by 0.1% is caught. */
static void check_step(const tc_tensor *got, const char *prev, const char *cur)
{
	const fx_rec *a = fx(prev), *b = fx(cur);
	float v[64];
	g_checks++;
	if (a->n != b->n || b->n > 64 || tc_numel(got) != (int64_t)b->n ||
	    tc_to_float(got, v, b->n) != TC_OK) {
		g_failures++;
		fprintf(stderr, "check_step %s: size mismatch\n", cur);
		return;
	}
	for (size_t i = 0; i < b->n; i++) {
		double step = fabs((double)b->v[i] - a->v[i]);
		double tol = 1e-4 * step + 4.0 * fabs(b->v[i]) * 1.2e-7;
		if (fabs((double)v[i] - b->v[i]) > tol) {
			g_failures++;
			fprintf(stderr, "check_step %s: element %zu is %.9g, PyTorch %.9g "
			    "(step %.3g)\n", cur, i, v[i], b->v[i], step);
			return;
		}
	}
}

typedef tc_optim *(*make_opt_fn)(tc_tensor *const *ps);

static tc_optim *make_adam(tc_tensor *const *ps)
{
	return tc_adam_create(ps, 2, 0.01, 0.9, 0.99, 1e-8, 1e-3);
}

static tc_optim *make_sgd(tc_tensor *const *ps)
{
	return tc_sgd_create(ps, 2, 0.1, 0.9, 1e-3);
}

/* 3 steps compared with PyTorch, state saved after step 2 and restored into a
 * fresh optimiser: its step 3 must be bit-identical. */
static void optimiser_case(const char *prefix, make_opt_fn make, const char *state_path)
{
	tc_scope *s = tc_scope_create();
	tc_tensor *p[2];
	make_params(&p[0], &p[1]);
	tc_optim *o = make(p);
	REQUIRE(o != NULL, "%s create", prefix);
	char name[64];
	for (int k = 1; k <= 3; k++) {
		CHECK(tc_optim_zero_grad(o) == TC_OK, "zero_grad");
		set_grads_via_backward(s, p[0], p[1], k);
		snprintf(name, sizeof name, "opt_g0_%d", k);
		fx_close(tc_grad(s, p[0]), name, 1);
		CHECK(tc_optim_step(o) == TC_OK, "%s step %d", prefix, k);
		for (int j = 0; j < 2; j++) {
			char prev[64];
			if (k == 1)
				snprintf(prev, sizeof prev, "opt_p%d", j);
			else
				snprintf(prev, sizeof prev, "%s_p%d_%d", prefix, j, k - 1);
			snprintf(name, sizeof name, "%s_p%d_%d", prefix, j, k);
			fx_close(p[j], name, 1);
			check_step(p[j], prev, name);
		}
		if (k == 2)
			CHECK(tc_optim_save(o, state_path) == TC_OK, "%s save", prefix);
		tc_scope_reset(s);
	}

	/* Restore: fresh params holding the values after step 2, fresh optimiser. */
	tc_tensor *q[2];
	make_params(&q[0], &q[1]);
	{
		float v0[12], v1[5];
		snprintf(name, sizeof name, "%s_p0_2", prefix);
		memcpy(v0, fx(name)->v, sizeof v0);
		snprintf(name, sizeof name, "%s_p1_2", prefix);
		memcpy(v1, fx(name)->v, sizeof v1);
		CHECK(tc_copy_from_float(q[0], v0, 12) == TC_OK, "copy_from_float");
		CHECK(tc_copy_from_float(q[1], v1, 5) == TC_OK, "copy_from_float");
	}
	tc_optim *o2 = make(q);
	REQUIRE(o2 != NULL, "%s create 2", prefix);
	CHECK(tc_optim_load(o2, state_path) == TC_OK, "%s load", prefix);
	CHECK(tc_optim_zero_grad(o2) == TC_OK, "zero_grad");
	set_grads_via_backward(s, q[0], q[1], 3);
	CHECK(tc_optim_step(o2) == TC_OK, "%s step after load", prefix);
	CHECK(same_values(q[0], p[0]) && same_values(q[1], p[1]),
	    "%s: step after save/load differs from the uninterrupted step", prefix);
	snprintf(name, sizeof name, "%s_p0_3", prefix);
	fx_close(q[0], name, 1);

	/* Without the state the third step differs (the test can tell). */
	tc_tensor *r[2];
	make_params(&r[0], &r[1]);
	CHECK(tc_copy_from_float(r[0], fx(strcmp(prefix, "adam") ? "sgd_p0_2" : "adam_p0_2")->v, 12) == TC_OK, "copy");
	CHECK(tc_copy_from_float(r[1], fx(strcmp(prefix, "adam") ? "sgd_p1_2" : "adam_p1_2")->v, 5) == TC_OK, "copy");
	tc_optim *o3 = make(r);
	set_grads_via_backward(s, r[0], r[1], 3);
	CHECK(tc_optim_step(o3) == TC_OK, "step");
	CHECK(!same_values(r[0], p[0]), "%s: fresh state should give another step", prefix);

	tc_optim_destroy(o3);
	tc_optim_destroy(o2);
	tc_optim_destroy(o);
	for (int i = 0; i < 2; i++) {
		tc_tensor_free(p[i]);
		tc_tensor_free(q[i]);
		tc_tensor_free(r[i]);
	}
	tc_scope_destroy(s);
}

int main(int argc, char **argv)
{
	REQUIRE(argc == 2, "usage: %s FIXTURE_DIR", argv[0]);
	fx_load(fixture_path(argv[1], "ops.txt"));
	REQUIRE(tc_set_threads(2) == TC_OK, "threads");
	tc_scope *s = tc_scope_create();

	/* --- gradients through conv3d + instance_norm + leaky_relu + mean ---- */
	tc_tensor *w = fx_tensor(NULL, "bw_w"), *b = fx_tensor(NULL, "bw_b");
	tc_tensor *g = fx_tensor(NULL, "bw_g"), *be = fx_tensor(NULL, "bw_be");
	tc_tensor *params[4] = { w, b, g, be };
	for (int i = 0; i < 4; i++)
		CHECK(tc_set_requires_grad(params[i], 1) == TC_OK, "requires_grad");
	{
		/* before any backward tc_grad gives zeros */
		float z[3];
		CHECK(tc_to_float(tc_grad(s, b), z, 3) == TC_OK && z[0] == 0 && z[1] == 0 &&
		    z[2] == 0, "grad before backward must be zeros");
	}
	tc_tensor *y = tc_leaky_relu(s, tc_instance_norm(s,
	    tc_conv3d(s, fx_tensor(s, "bw_x"), w, b, 1, 1), g, be, 1e-5), 0.01);
	tc_tensor *loss = tc_mean(s, tc_mul(s, y, fx_tensor(s, "bw_r")));
	fx_close(loss, "bw_loss", 1);
	CHECK(tc_backward(loss) == TC_OK, "backward");
	fx_close(tc_grad(s, w), "bw_gw", 1);
	{
		/* The conv bias is removed again by the instance norm's mean, so
		 * its gradient is exactly 0 in exact arithmetic; PyTorch's and our
		 * float results are both rounding noise (~1e-9, either sign), so
		 * a relative comparison of noise against noise means nothing.
		 * Check it is zero to float precision of the other gradients. */
		float gb[3];
		CHECK(tc_to_float(tc_grad(s, b), gb, 3) == TC_OK &&
		    fabsf(gb[0]) < 1e-7f && fabsf(gb[1]) < 1e-7f &&
		    fabsf(gb[2]) < 1e-7f, "conv bias gradient through instance "
		    "norm must be 0: %g %g %g", gb[0], gb[1], gb[2]);
	}
	fx_close(tc_grad(s, g), "bw_gg", 1);
	fx_close(tc_grad(s, be), "bw_gbe", 1);
	/* gradients accumulate until zero_grad */
	tc_scope_reset(s);
	y = tc_leaky_relu(s, tc_instance_norm(s,
	    tc_conv3d(s, fx_tensor(s, "bw_x"), w, b, 1, 1), g, be, 1e-5), 0.01);
	loss = tc_mean(s, tc_mul(s, y, fx_tensor(s, "bw_r")));
	CHECK(tc_backward(loss) == TC_OK, "backward 2");
	fx_close(tc_mul_scalar(s, tc_grad(s, w), 0.5), "bw_gw", 1);
	tc_optim *zo = tc_sgd_create(params, 4, 0.1, 0.0, 0.0);
	CHECK(zo != NULL, "sgd create");
	CHECK(tc_optim_zero_grad(zo) == TC_OK, "zero_grad");
	{
		float z[3];
		CHECK(tc_to_float(tc_grad(s, b), z, 3) == TC_OK && z[0] == 0 && z[2] == 0,
		    "grad after zero_grad must be zeros");
	}
	tc_optim_destroy(zo);
	/* no autograd: backward refuses */
	int prev = tc_set_grad_enabled(0);
	CHECK(prev == 1, "grad mode was on");
	loss = tc_mean(s, tc_conv3d(s, fx_tensor(s, "bw_x"), w, b, 1, 1));
	CHECK(loss != NULL && tc_backward(loss) == TC_EINVAL, "backward without grad mode");
	CHECK(tc_set_grad_enabled(prev) == 0, "grad mode restore");
	tc_scope_reset(s);

	/* --- optimisers ------------------------------------------------------- */
	char path[256], path2[256];
	snprintf(path, sizeof path, "/tmp/fedseg_shim_test_%ld.adam", (long)getpid());
	snprintf(path2, sizeof path2, "/tmp/fedseg_shim_test_%ld.sgd", (long)getpid());
	optimiser_case("adam", make_adam, path);
	optimiser_case("sgd", make_sgd, path2);

	/* Adam file into an optimiser over other shapes: error, o stays usable. */
	{
		tc_tensor *ps[2] = { fx_tensor(NULL, "opt_p1"), fx_tensor(NULL, "opt_p0") };
		tc_set_requires_grad(ps[0], 1);
		tc_set_requires_grad(ps[1], 1);
		tc_optim *o = make_adam(ps);
		tc_status st = tc_optim_load(o, path);
		CHECK(st == TC_EINVAL, "load for other shapes: status %d", (int)st);
		CHECK(strstr(tc_last_error(), "shape") != NULL, "message: %s", tc_last_error());
		tc_tensor *one[1] = { ps[0] };
		tc_optim *o1 = tc_adam_create(one, 1, 0.01, 0.9, 0.99, 1e-8, 0);
		st = tc_optim_load(o1, path);
		CHECK(st == TC_EINVAL, "load for other count: status %d", (int)st);
		CHECK(tc_optim_load(o, "/nonexistent/dir/state") == TC_EIO, "missing file");
		CHECK(strstr(tc_last_error(), "/nonexistent/dir/state") != NULL,
		    "message names the file: %s", tc_last_error());
		CHECK(tc_optim_save(o, "/nonexistent/dir/state") == TC_EIO, "unwritable file");
		CHECK(tc_optim_load(o, argv[0]) != TC_OK, "a non-archive file must fail");
		tc_tensor *loss2 = tc_sum(s, tc_mul(s, ps[0], ps[0]));
		CHECK(tc_backward(loss2) == TC_OK && tc_optim_step(o) == TC_OK,
		    "optimiser still works after failed loads");
		CHECK(tc_optim_set_lr(o, 0.5) == TC_OK, "set_lr");
		CHECK(tc_optim_set_lr(o, -1) == TC_EINVAL, "negative lr");
		tc_optim_destroy(o1);
		tc_optim_destroy(o);
		tc_tensor_free(ps[0]);
		tc_tensor_free(ps[1]);
	}
	/* set_lr takes effect: SGD with lr 0 leaves params unchanged. */
	{
		tc_tensor *p0, *p1;
		make_params(&p0, &p1);
		tc_tensor *ps[2] = { p0, p1 };
		tc_optim *o = make_sgd(ps);
		CHECK(tc_optim_set_lr(o, 0.0) == TC_OK, "set_lr 0");
		set_grads_via_backward(s, p0, p1, 1);
		CHECK(tc_optim_step(o) == TC_OK, "step");
		fx_close(p0, "opt_p0", 1);
		tc_optim_destroy(o);
		tc_tensor_free(p0);
		tc_tensor_free(p1);
	}
	CHECK(tc_adam_create(NULL, 0, 0.1, 0.9, 0.99, 1e-8, 0) == NULL, "no params");
	unlink(path);
	unlink(path2);

	for (int i = 0; i < 4; i++)
		tc_tensor_free(params[i]);
	tc_scope_destroy(s);
	return test_summary("test_shim_train");
}
