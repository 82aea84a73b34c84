/* unet.c - the 3D U-Net written over the shim: parameters and forward.
 *
 * Level i has base*2^i channels (capped at 320). Encoder level 0: two
 * conv3x3x3 + instance norm + leaky ReLU blocks; deeper levels start with a
 * stride-2 conv block (learned downsampling). Decoder: a stride-2 transposed
 * conv up, concatenation with the skip, two conv blocks. A 1x1x1 conv gives
 * the class logits. The parameter order is the tensor table's (spec.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "model_impl.h"

#define LRELU_SLOPE 0.01
#define NORM_EPS 1e-5

model_net *model_net_create(const model_spec *spec, const char *device,
    const float *w, uint64_t seed)
{
	model_net *net = calloc(1, sizeof(*net));
	float *init = NULL;
	if (net == NULL) {
		fs_seterr("out of memory");
		return NULL;
	}
	net->spec = *spec;
	snprintf(net->dev, sizeof(net->dev), "%s", device ? device : "cpu");
	if (tc_device_check(net->dev) != TC_OK) {
		fs_seterr("%s", tc_last_error());
		free(net);
		return NULL;
	}
	if (model_table_build(spec, &net->tab) != 0) {
		free(net);
		return NULL;
	}
	net->p = calloc(net->tab.n, sizeof(*net->p));
	if (net->p == NULL)
		goto fail_mem;
	if (w == NULL) {
		init = malloc(net->tab.total * sizeof(float));
		if (init == NULL)
			goto fail_mem;
		model_init_weights(&net->tab, seed, init);
		w = init;
	}
	for (int i = 0; i < net->tab.n; i++) {
		const model_tensor_info *e = &net->tab.t[i];
		net->p[i] = tc_from_float(NULL, w + e->offset, e->shape, e->ndim,
		    net->dev);
		if (net->p[i] == NULL ||
		    tc_set_requires_grad(net->p[i], 1) != TC_OK) {
			fs_seterr("creating parameter %s: %s", e->name,
			    tc_last_error());
			goto fail;
		}
	}
	free(init);
	return net;
fail_mem:
	fs_seterr("out of memory");
fail:
	free(init);
	model_net_destroy(net);
	return NULL;
}

void model_net_destroy(model_net *net)
{
	if (net == NULL)
		return;
	for (int i = 0; net->p != NULL && i < net->tab.n; i++)
		tc_tensor_free(net->p[i]);
	free(net->p);
	model_table_free(&net->tab);
	free(net);
}

const model_spec *model_net_spec(const model_net *net) { return &net->spec; }
const model_table *model_net_table(const model_net *net) { return &net->tab; }

int model_net_set_weights(model_net *net, const float *w)
{
	for (int i = 0; i < net->tab.n; i++) {
		const model_tensor_info *e = &net->tab.t[i];
		if (tc_copy_from_float(net->p[i], w + e->offset, e->numel) != TC_OK)
			return fs_seterr("loading %s: %s", e->name,
			    tc_last_error());
	}
	return 0;
}

int model_net_get_weights(const model_net *net, float *w)
{
	for (int i = 0; i < net->tab.n; i++) {
		const model_tensor_info *e = &net->tab.t[i];
		if (tc_to_float(net->p[i], w + e->offset, e->numel) != TC_OK)
			return fs_seterr("reading %s: %s", e->name,
			    tc_last_error());
	}
	return 0;
}

/* conv -> instance norm (affine) -> leaky ReLU (in place), consuming 3
 * parameters. Intermediates are freed as soon as they are used (autograd
 * keeps what backward needs), so peak memory is a few activations, not all
 * of them; drop_in also frees the input. */
static tc_tensor *block(model_net *net, tc_scope *s, tc_tensor *x, int *pi,
    int stride, int drop_in)
{
	tc_tensor **p = net->p + *pi;
	tc_tensor *c, *n;
	*pi += 3;
	c = tc_conv3d(s, x, p[0], NULL, stride, 1);
	if (drop_in && c != NULL)
		tc_scope_drop(s, x);
	/* Fused norm + leaky ReLU: in place on c at inference (n == c). */
	n = tc_instance_norm_lrelu(s, c, p[1], p[2], NORM_EPS, LRELU_SLOPE);
	if (n != NULL && n != c)
		tc_scope_drop(s, c);
	return n;
}

tc_tensor *model_forward(model_net *net, tc_scope *s, tc_tensor *x)
{
	const model_spec *sp = &net->spec;
	tc_tensor *skip[MODEL_MAX_DEPTH];
	int pi = 0;

	for (int i = 0; i < sp->depth; i++) {
		/* The network input and the skips stay alive. */
		x = block(net, s, x, &pi, i == 0 ? 1 : 2, 0);
		x = block(net, s, x, &pi, 1, 1);
		skip[i] = x;
	}
	for (int i = sp->depth - 2; i >= 0; i--) {
		tc_tensor **p = net->p + pi;
		tc_tensor *up = tc_conv_transpose3d(s, x, p[0], p[1], 2, 0);
		tc_tensor *pair[2] = {up, skip[i]};
		pi += 2;
		if (up == NULL)
			return NULL;
		tc_scope_drop(s, x);
		x = tc_cat(s, pair, 2, 1);
		if (x == NULL)
			return NULL;
		tc_scope_drop(s, up);
		tc_scope_drop(s, skip[i]);
		x = block(net, s, x, &pi, 1, 1);
		x = block(net, s, x, &pi, 1, 1);
	}
	{
		tc_tensor *y = tc_conv3d(s, x, net->p[pi], net->p[pi + 1], 1, 0);
		if (y == NULL) {
			fs_seterr("forward: %s", tc_last_error());
			return NULL;
		}
		tc_scope_drop(s, x);
		return y;
	}
}
