/*
 * test_shim_api.c - API conventions of the shim: status codes and messages,
 * devices, NULL propagation, scopes, tensor creation / data transfer, grad
 * mode, seeding, and a TorchScript module saved by PyTorch.
 * Usage: test_shim_api FIXTURE_DIR
 */
#include "shim_test.h"

static void test_errors_and_devices(void)
{
	CHECK(strcmp(tc_strerror(TC_OK), "ok") == 0, "strerror");
	CHECK(strlen(tc_strerror(TC_ENODEV)) > 0, "strerror");
	CHECK(strlen(tc_torch_version()) > 0 && tc_torch_version()[0] >= '1', "version %s",
	    tc_torch_version());

	CHECK(tc_device_check("cpu") == TC_OK, "cpu");
	CHECK(tc_device_check("gpu7") == TC_EINVAL, "gpu7");
	CHECK(strstr(tc_last_error(), "gpu7") != NULL, "message names device: %s",
	    tc_last_error());
	CHECK(tc_device_check("cuda:") == TC_EINVAL, "cuda:");
	CHECK(tc_device_check("cuda:x") == TC_EINVAL, "cuda:x");
	CHECK(tc_device_check("") == TC_EINVAL, "empty");
	CHECK(tc_device_check(NULL) == TC_EINVAL, "NULL");
	CHECK(tc_device_check("CPU ") == TC_EINVAL, "'CPU '");
	int n = tc_cuda_device_count();
	if (!tc_cuda_available()) {
		CHECK(n == 0, "device count %d without CUDA", n);
		CHECK(tc_device_check("cuda") == TC_ENODEV, "cuda on CPU build");
		CHECK(strstr(tc_last_error(), "cuda:0 requested") != NULL &&
		    strstr(tc_last_error(), "no CUDA") != NULL, "message: %s", tc_last_error());
		CHECK(tc_device_check("cuda:1") == TC_ENODEV, "cuda:1 on CPU build");
		int64_t sh[1] = { 4 };
		CHECK(tc_zeros(NULL, sh, 1, "cuda") == NULL, "zeros on cuda must fail");
		CHECK(strstr(tc_last_error(), "no CUDA") != NULL, "message: %s", tc_last_error());
		CHECK(tc_module_load("/nonexistent.pt", "cuda:0") == NULL, "module on cuda");
	} else {
		printf("CUDA available (%d devices): CPU-build device assertions skipped\n", n);
		CHECK(tc_device_check("cuda") == TC_OK, "cuda");
		char dev[32];
		snprintf(dev, sizeof dev, "cuda:%d", n);
		CHECK(tc_device_check(dev) == TC_ENODEV, "%s", dev);
		CHECK(strstr(tc_last_error(), "only") != NULL, "message: %s", tc_last_error());
	}
	CHECK(tc_set_threads(0) == TC_EINVAL, "0 threads");
	CHECK(tc_set_threads(2) == TC_OK && tc_get_threads() == 2, "2 threads");
	CHECK(tc_set_threads(1) == TC_OK && tc_get_threads() == 1, "1 thread");
	CHECK(tc_set_threads(2) == TC_OK, "2 threads");
}

static void test_scopes_and_null(void)
{
	tc_scope *s = tc_scope_create();
	REQUIRE(s != NULL, "scope");
	CHECK(tc_scope_size(s) == 0, "empty scope");
	int64_t sh[2] = { 2, 3 };
	tc_tensor *a = tc_full(s, sh, 2, 2.0f, "cpu");
	tc_tensor *b = tc_zeros(s, sh, 2, "cpu");
	tc_tensor *c = tc_add(s, a, b);
	CHECK(a && b && c && tc_scope_size(s) == 3, "3 tensors, size %zu", tc_scope_size(s));
	tc_scope_reset(s);
	CHECK(tc_scope_size(s) == 0, "reset frees, size %zu", tc_scope_size(s));
	for (int i = 0; i < 1000; i++)
		(void)tc_full(s, sh, 2, (float)i, "cpu");
	CHECK(tc_scope_size(s) == 1000, "1000 tensors");
	tc_scope_reset(s);
	CHECK(tc_scope_size(s) == 0, "reset");

	/* NULL propagation: the first failure's message survives the chain. */
	int64_t bad[2] = { 2, -1 };
	tc_tensor *x = tc_zeros(s, bad, 2, "cpu");
	CHECK(x == NULL, "negative size must fail");
	char first[256];
	snprintf(first, sizeof first, "%s", tc_last_error());
	CHECK(strstr(first, "tc_zeros") != NULL && strstr(first, "negative") != NULL,
	    "message: %s", first);
	tc_tensor *y = tc_sigmoid(s, tc_mean(s, tc_leaky_relu(s, tc_conv3d(s, x, x, NULL, 1, 1),
	    0.1)));
	CHECK(y == NULL, "chain returns NULL");
	CHECK(strcmp(tc_last_error(), first) == 0, "message kept: '%s' vs '%s'",
	    tc_last_error(), first);
	CHECK(tc_scope_size(s) == 0, "nothing allocated by a failed chain");
	tc_tensor *parts[2] = { tc_full(s, sh, 2, 1, "cpu"), NULL };
	CHECK(tc_cat(s, parts, 2, 0) == NULL, "cat with NULL");
	CHECK(tc_backward(NULL) != TC_OK, "backward NULL");
	CHECK(tc_to_float(NULL, NULL, 0) != TC_OK, "to_float NULL");
	CHECK(isnan(tc_item(NULL)), "item NULL");
	CHECK(tc_ndim(NULL) == -1 && tc_numel(NULL) == -1 && tc_size(NULL, 0) == -1,
	    "props of NULL");
	CHECK(tc_module_forward(s, NULL, parts[0]) == NULL, "forward with NULL module");
	tc_tensor_free(NULL);
	tc_scope_destroy(NULL);
	tc_scope_destroy(s);
}

static void test_tensors(void)
{
	tc_scope *s = tc_scope_create();
	float data[24];
	for (int i = 0; i < 24; i++)
		data[i] = (float)i * 0.5f - 3.0f;
	int64_t sh[3] = { 2, 3, 4 };
	tc_tensor *t = tc_from_float(s, data, sh, 3, "cpu");
	data[0] = 1000; /* the shim copied */
	float out[24];
	CHECK(tc_to_float(t, out, 24) == TC_OK && out[0] == -3.0f && out[23] == 8.5f,
	    "from_float copies: out[0] %g", out[0]);
	CHECK(tc_to_float(t, out, 23) == TC_EINVAL, "n mismatch");
	CHECK(tc_ndim(t) == 3 && tc_size(t, -1) == 4 && tc_size(t, 0) == 2 &&
	    tc_numel(t) == 24, "props");
	CHECK(tc_size(t, 3) == -1 && tc_size(t, -4) == -1, "size out of range");
	int64_t got[TC_MAX_DIMS];
	CHECK(tc_shape(t, got) == 3 && got[1] == 3, "shape");
	CHECK(isnan(tc_item(t)), "item of 24 elements");
	CHECK(fabs(tc_item(tc_sum(s, t)) - 66.0) < 1e-4, "sum %g", tc_item(tc_sum(s, t)));
	int64_t toomany[9] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };
	CHECK(tc_zeros(s, toomany, 9, "cpu") == NULL, "9 dims");

	/* narrow is a view: values of the slice */
	tc_tensor *nv = tc_narrow(s, t, 2, 1, 2);
	float nvv[12];
	CHECK(tc_to_float(nv, nvv, 12) == TC_OK && nvv[0] == data[1] && nvv[1] == data[2] &&
	    nvv[2] == data[5], "narrow values");

	/* copy_from_float in place, on a parameter (no autograd record) */
	tc_tensor *p = tc_zeros(NULL, sh, 3, "cpu");
	CHECK(tc_set_requires_grad(p, 1) == TC_OK, "requires_grad");
	CHECK(tc_copy_from_float(p, data, 24) == TC_OK, "copy_from_float");
	CHECK(tc_to_float(p, out, 24) == TC_OK && out[0] == 1000 && out[5] == data[5],
	    "copied values");
	CHECK(tc_copy_from_float(p, data, 10) == TC_EINVAL, "copy n mismatch");
	/* tc_to_device to cpu keeps requires_grad: loss backward still reaches p */
	CHECK(tc_to_device(p, "cpu") == TC_OK, "to_device cpu");
	CHECK(tc_backward(tc_sum(s, tc_mul_scalar(s, p, 3.0))) == TC_OK, "backward");
	float gr[24];
	CHECK(tc_to_float(tc_grad(s, p), gr, 24) == TC_OK && gr[0] == 3.0f && gr[23] == 3.0f,
	    "grad 3: %g", gr[0]);
	CHECK(tc_to_device(p, "gpu") == TC_EINVAL, "bad device");
	tc_tensor *dt = tc_detach(s, p);
	CHECK(dt != NULL && tc_backward(tc_sum(s, dt)) == TC_EINVAL, "detach stops grad");
	tc_tensor *cp = tc_to(s, p, "cpu");
	CHECK(tc_copy_from_float(cp, data, 24) == TC_OK, "tc_to gives a copy");
	tc_tensor_free(p);

	/* half / float round trip */
	float h[3] = { 1.0f, 0.333333343f, 65504.0f };
	int64_t three = 3;
	tc_tensor *hf = tc_float(s, tc_half(s, tc_from_float(s, h, &three, 1, "cpu")));
	CHECK(tc_to_float(hf, out, 3) == TC_OK && out[0] == 1.0f &&
	    fabsf(out[1] - 0.333333343f) < 1e-3f && out[1] != 0.333333343f && out[2] == 65504.0f,
	    "half round trip %g", out[1]);

	/* labels: u8 -> long -> u8; one-hot */
	uint8_t lab[6] = { 0, 1, 2, 3, 4, 255 }, back[6];
	int64_t ls[2] = { 1, 6 };
	tc_tensor *l = tc_from_u8_as_long(s, lab, ls, 2, "cpu");
	CHECK(tc_to_u8(l, back, 6) == TC_OK && memcmp(lab, back, 6) == 0, "u8 round trip");
	CHECK(tc_to_u8(l, back, 5) == TC_EINVAL, "u8 n mismatch");
	CHECK(tc_to_u8(t, back, 24) == TC_EINVAL, "u8 of a float tensor");
	tc_tensor *neg = tc_sub(s, tc_narrow(s, l, 1, 0, 1), tc_narrow(s, l, 1, 1, 1)); /* -1 */
	uint8_t one;
	CHECK(neg != NULL && tc_to_u8(neg, &one, 1) == TC_EINVAL, "negative value to u8");
	CHECK(strstr(tc_last_error(), "outside 0..255") != NULL, "message: %s", tc_last_error());
	float big[300] = { 0 };
	big[299] = 1.0f;
	int64_t n300 = 300;
	tc_tensor *am = tc_argmax(s, tc_from_float(s, big, &n300, 1, "cpu"), 0);
	CHECK(tc_ndim(am) == 0 && tc_item(am) == 299.0, "argmax 299");
	CHECK(tc_to_u8(am, &one, 1) == TC_EINVAL, "299 to u8");
	CHECK(tc_one_hot(s, l, 4) == NULL, "one-hot of 255 with 4 classes fails");
	CHECK(tc_one_hot(s, t, 4) == NULL, "one-hot of floats fails");

	/* seeding: same seed, same numbers; std scales */
	int64_t rs[1] = { 20000 };
	static float r1[20000], r2[20000];
	tc_manual_seed(42);
	CHECK(tc_to_float(tc_randn(s, rs, 1, 2.0f, "cpu"), r1, 20000) == TC_OK, "randn");
	tc_manual_seed(42);
	CHECK(tc_to_float(tc_randn(s, rs, 1, 2.0f, "cpu"), r2, 20000) == TC_OK, "randn");
	CHECK(memcmp(r1, r2, sizeof r1) == 0, "same seed, same values");
	double m = 0, v = 0;
	for (int i = 0; i < 20000; i++)
		m += r1[i];
	m /= 20000;
	for (int i = 0; i < 20000; i++)
		v += (r1[i] - m) * (r1[i] - m);
	v /= 20000;
	CHECK(fabs(m) < 0.06 && fabs(sqrt(v) - 2.0) < 0.06, "randn mean %g std %g", m, sqrt(v));

	/* grad mode */
	int prev = tc_set_grad_enabled(0);
	CHECK(tc_set_grad_enabled(prev) == 0, "grad mode toggles");
	tc_scope_destroy(s);
}

static void test_module(const char *dir)
{
	tc_scope *s = tc_scope_create();
	tc_module *m = tc_module_load(fixture_path(dir, "tiny_net.pt"), "cpu");
	CHECK(m != NULL, "load tiny_net.pt");
	if (m != NULL) {
		int prev = tc_set_grad_enabled(0);
		fx_close(tc_module_forward(s, m, fx_tensor(s, "mod_x")), "mod_y", 1);
		tc_set_grad_enabled(prev);
		CHECK(tc_module_forward(s, m, fx_tensor(s, "in_x")) == NULL,
		    "wrong channel count must fail");
		CHECK(strstr(tc_last_error(), "tc_module_forward") != NULL, "message: %s",
		    tc_last_error());
	}
	tc_module_destroy(m);
	CHECK(tc_module_load(fixture_path(dir, "missing.pt"), "cpu") == NULL, "missing file");
	CHECK(strstr(tc_last_error(), "missing.pt") != NULL, "message names file: %s",
	    tc_last_error());
	CHECK(tc_module_load(fixture_path(dir, "ops.txt"), "cpu") == NULL, "not a module");
	CHECK(tc_module_load(fixture_path(dir, "tiny_net.pt"), "tpu") == NULL, "bad device");
	tc_scope_destroy(s);
}

int main(int argc, char **argv)
{
	REQUIRE(argc == 2, "usage: %s FIXTURE_DIR", argv[0]);
	fx_load(fixture_path(argv[1], "ops.txt"));
	CHECK(strcmp(tc_last_error(), "") == 0, "no error yet: %s", tc_last_error());
	test_errors_and_devices();
	test_scopes_and_null();
	test_tensors();
	test_module(argv[1]);
	return test_summary("test_shim_api");
}
