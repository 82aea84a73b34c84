/* test_unet_torch.c - the C U-Net's forward and gradients, for comparison
 * with the same network written in PyTorch by unet_reference.py.
 * argv[1] = output dir: weights.safetensors, input.raw, logits.raw,
 * grads.raw (d(sum(logits * r))/dw in table order, r = cos pattern). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "base.h"
#include "model_impl.h"

static void dump(const char *dir, const char *name, const float *v, size_t n)
{
	char p[1024];
	snprintf(p, sizeof(p), "%s/%s", dir, name);
	FILE *f = fopen(p, "wb");
	fwrite(v, sizeof(float), n, f);
	fclose(f);
}

int main(int argc, char **argv)
{
	model_spec sp = model_spec_default();
	const int D = 16, C = 4;
	if (argc < 2)
		return 2;
	sp.base = 4;
	sp.depth = 3;
	tc_set_threads(2);
	model_net *net = model_net_create(&sp, "cpu", NULL, 5);
	if (net == NULL) {
		fprintf(stderr, "%s\n", fs_error());
		return 1;
	}
	size_t nin = (size_t)sp.nmod * D * D * D, nout = (size_t)C * D * D * D;
	float *x = malloc(nin * 4), *r = malloc(nout * 4), *y = malloc(nout * 4);
	float *w = malloc(net->tab.total * 4), *g = malloc(net->tab.total * 4);
	for (size_t i = 0; i < nin; i++)
		x[i] = (float)sin(0.37 * i) + 0.1f * (float)(i % 7);
	for (size_t i = 0; i < nout; i++)
		r[i] = (float)cos(0.11 * i);
	tc_scope *s = tc_scope_create();
	int64_t xs[5] = {1, sp.nmod, D, D, D}, ys[5] = {1, C, D, D, D};
	tc_tensor *xt = tc_from_float(s, x, xs, 5, "cpu");
	tc_tensor *rt = tc_from_float(s, r, ys, 5, "cpu");
	tc_tensor *out = model_forward(net, s, xt);
	tc_tensor *loss = tc_sum(s, tc_mul(s, out, rt));
	if (loss == NULL || tc_backward(loss) != TC_OK ||
	    tc_to_float(out, y, nout) != TC_OK) {
		fprintf(stderr, "%s\n", tc_last_error());
		return 1;
	}
	for (int i = 0; i < net->tab.n; i++) {
		tc_tensor *gt = tc_grad(s, net->p[i]);
		if (gt == NULL || tc_to_float(gt, g + net->tab.t[i].offset,
		    net->tab.t[i].numel) != TC_OK) {
			fprintf(stderr, "%s\n", tc_last_error());
			return 1;
		}
	}
	model_net_get_weights(net, w);
	char p[1024];
	snprintf(p, sizeof(p), "%s/weights.safetensors", argv[1]);
	if (model_weights_save(p, &sp, w, NULL) != 0) {
		fprintf(stderr, "%s\n", fs_error());
		return 1;
	}
	dump(argv[1], "input.raw", x, nin);
	dump(argv[1], "logits.raw", y, nout);
	dump(argv[1], "grads.raw", g, net->tab.total);
	printf("ok - C forward/backward written (%zu params, scope %zu tensors)\n",
	    net->tab.total, tc_scope_size(s));
	tc_scope_destroy(s);
	model_net_destroy(net);
	free(x), free(r), free(y), free(w), free(g);
	return 0;
}
