/*
 * test_shim_ops.c - every forward op of the shim against PyTorch's values
 * (fixtures/ops.txt, written by make_fixtures.py).
 * Usage: test_shim_ops FIXTURE_DIR
 */
#include "shim_test.h"

int main(int argc, char **argv)
{
	REQUIRE(argc == 2, "usage: %s FIXTURE_DIR", argv[0]);
	fx_load(fixture_path(argv[1], "ops.txt"));
	REQUIRE(tc_set_threads(2) == TC_OK, "tc_set_threads(2)");
	CHECK(tc_get_threads() == 2, "threads = %d", tc_get_threads());
	tc_scope *s = tc_scope_create();
	REQUIRE(s != NULL, "scope");

	/* conv3d, stride 2 padding 1 with bias; stride 1 without bias */
	tc_tensor *x = fx_tensor(s, "conv_x"), *w = fx_tensor(s, "conv_w");
	tc_tensor *b = fx_tensor(s, "conv_b");
	fx_close(tc_conv3d(s, x, w, b, 2, 1), "conv_y", 1);
	fx_close(tc_conv3d(s, x, w, NULL, 1, 1), "conv_y_s1_nobias", 1);

	/* conv_transpose3d, stride 2 */
	fx_close(tc_conv_transpose3d(s, fx_tensor(s, "convt_x"), fx_tensor(s, "convt_w"),
	    fx_tensor(s, "convt_b"), 2, 0), "convt_y", 1);

	/* instance norm, affine and plain */
	x = fx_tensor(s, "in_x");
	fx_close(tc_instance_norm(s, x, fx_tensor(s, "in_g"), fx_tensor(s, "in_b"), 1e-5),
	    "in_y", 1);
	fx_close(tc_instance_norm(s, x, NULL, NULL, 1e-5), "in_y0", 1);
	CHECK(tc_instance_norm(s, x, fx_tensor(s, "in_g"), NULL, 1e-5) == NULL,
	    "gamma without beta must fail");

	/* pointwise */
	x = fx_tensor(s, "pw_x");
	fx_close(tc_leaky_relu(s, x, 0.01), "lrelu_y", 1);
	fx_close(tc_relu(s, x), "relu_y", 1);
	fx_close(tc_sigmoid(s, x), "sigmoid_y", 1);

	/* pooling and upsampling */
	fx_close(tc_max_pool3d(s, fx_tensor(s, "pool_x"), 2, 2), "pool_y", 1);
	fx_close(tc_upsample3d(s, fx_tensor(s, "up_x"), 2), "up_y", 1);

	/* cat */
	tc_tensor *parts[2] = { fx_tensor(s, "cat_a"), fx_tensor(s, "cat_b") };
	fx_close(tc_cat(s, parts, 2, 1), "cat_y", 1);

	/* softmax family, flip */
	x = fx_tensor(s, "sm_x");
	fx_close(tc_softmax(s, x, 1), "sm_y", 1);
	fx_close(tc_log_softmax(s, x, 1), "lsm_y", 1);
	int64_t fd[2] = { 2, 3 };
	fx_close(tc_flip(s, x, fd, 2), "flip_y", 1);

	/* cross entropy, one hot, sums, argmax, narrow */
	tc_tensor *logits = fx_tensor(s, "ce_logits");
	tc_tensor *target = fx_long(s, "ce_t");
	fx_close(tc_cross_entropy(s, logits, target), "ce_loss", 1);
	tc_tensor *oh = tc_one_hot(s, target, 4);
	fx_close(oh, "oh_y", 1);
	int64_t sd[3] = { 2, 3, 4 };
	fx_close(tc_sum_dims(s, logits, sd, 3, 0), "sd_y", 1);
	tc_tensor *sdk = tc_sum_dims(s, logits, sd, 3, 1);
	CHECK(tc_ndim(sdk) == 5 && tc_size(sdk, 1) == 4 && tc_size(sdk, -1) == 1,
	    "keepdim shape: ndim %d", tc_ndim(sdk));
	tc_tensor *am = tc_argmax(s, logits, 1);
	fx_close(am, "am_y", 1);
	{
		const fx_rec *r = fx("am_y");
		uint8_t u[64];
		REQUIRE(r->n <= sizeof u, "am_y too big");
		CHECK(tc_to_u8(am, u, r->n) == TC_OK, "tc_to_u8(argmax)");
		int same = 1;
		for (size_t i = 0; i < r->n; i++)
			same &= u[i] == (uint8_t)r->v[i];
		CHECK(same, "argmax as u8 differs from PyTorch");
	}
	fx_close(tc_narrow(s, logits, 2, 1, 2), "nar_y", 1);

	/* arithmetic against values computed here from the fixture inputs */
	{
		const fx_rec *r = fx("pw_x");
		tc_tensor *a = fx_tensor(s, "pw_x");
		tc_tensor *y = tc_mul_scalar(s, tc_add_scalar(s,
		    tc_div(s, tc_sub(s, tc_mul(s, a, a), a), tc_add_scalar(s, tc_relu(s, a), 1.0)),
		    0.5), 2.0);
		float got[50], sum = 0, mean;
		REQUIRE(r->n == 50, "pw_x size");
		CHECK(tc_to_float(y, got, 50) == TC_OK, "to_float");
		int ok = 1;
		for (int i = 0; i < 50; i++) {
			double v = r->v[i];
			double want = 2.0 * ((v * v - v) / ((v > 0 ? v : 0) + 1.0) + 0.5);
			ok &= fabs(got[i] - want) <= 1e-5 * (1 + fabs(want));
			sum += (float)v;
		}
		CHECK(ok, "elementwise arithmetic differs from C reference");
		mean = sum / 50;
		CHECK(fabs(tc_item(tc_sum(s, a)) - sum) <= 1e-4, "sum %g vs %g",
		    tc_item(tc_sum(s, a)), sum);
		CHECK(fabs(tc_item(tc_mean(s, a)) - mean) <= 1e-5, "mean");
		int64_t rs[2] = { 5, 10 };
		tc_tensor *rr = tc_reshape(s, a, rs, 2);
		CHECK(tc_ndim(rr) == 2 && tc_size(rr, 0) == 5 && tc_numel(rr) == 50, "reshape");
		int64_t bad[2] = { 7, 7 };
		CHECK(tc_reshape(s, a, bad, 2) == NULL, "reshape 50 -> 7x7 must fail");
		CHECK(strstr(tc_last_error(), "tc_reshape") != NULL, "error names op: %s",
		    tc_last_error());
	}

	/* an op error is a NULL, not a crash: channel mismatch */
	CHECK(tc_conv3d(s, fx_tensor(s, "in_x"), fx_tensor(s, "conv_w"), NULL, 1, 1) == NULL,
	    "conv3d of 3 channels with a 2-channel weight must fail");
	CHECK(strstr(tc_last_error(), "tc_conv3d") != NULL, "error: %s", tc_last_error());

	tc_scope_destroy(s);
	return test_summary("test_shim_ops");
}
