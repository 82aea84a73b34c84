/* infer.c - sliding-window inference with overlap, Gaussian weighting and
 * optional mirror test-time augmentation, on the cropped brain. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "imaging.h"
#include "model_impl.h"

model_infer_opts model_infer_opts_default(void)
{
	model_infer_opts o;
	o.window = 0; /* auto: the whole brain box up to 192 per axis */
	o.overlap = 0.5;
	o.tta = 0;
	o.batch = 1;
	o.precision = MODEL_FP32;
	return o;
}

static const char *const precision_names[] = {"fp32", "fp16", "bf16"};

int model_precision_parse(const char *name)
{
	for (int i = 0; name != NULL && i < 3; i++)
		if (strcmp(name, precision_names[i]) == 0)
			return i;
	return -1;
}

const char *model_precision_name(int precision)
{
	return precision >= 0 && precision < 3 ? precision_names[precision] : "?";
}

int model_precision_check(int precision, const char *device)
{
	if (precision < MODEL_FP32 || precision > MODEL_BF16)
		return fs_seterr("precision %d: expected fp32, fp16 or bf16",
		    precision);
	if (precision == MODEL_FP16 && device != NULL &&
	    strncmp(device, "cuda", 4) != 0)
		return fs_seterr("precision fp16 needs a CUDA device (device is "
		    "%s); use bf16 or fp32 on the CPU", device);
	return 0;
}

/* Logits of one forward as float32: under autocast for fp16/bf16 (the
 * region covers the network only; the logits are cast back before the
 * softmax so that probabilities and their sums stay float32). */
static tc_tensor *forward_logits(model_net *net, tc_scope *s, tc_tensor *in,
    int precision)
{
	tc_tensor *y;
	if (in == NULL)
		return NULL;
	if (precision == MODEL_FP32)
		return model_forward(net, s, in);
	if (tc_autocast_begin(net->dev, precision == MODEL_FP16 ? "fp16" :
	    "bf16") != TC_OK)
		return NULL;
	y = model_forward(net, s, in);
	if (tc_autocast_end() != TC_OK)
		return NULL;
	return y ? tc_float(s, y) : NULL;
}

static int round_up(int v, int d) { return (v + d - 1) / d * d; }

/* Window edge per axis: the requested window, or (auto) the whole axis
 * rounded up to the divisor when that is at most 192 voxels, else 128. */
static int axis_window(int dim, int want, int div)
{
	int full = round_up(dim, div);
	if (want <= 0)
		return full <= 192 ? full : 128;
	want = round_up(want, div);
	return full < want ? full : want;
}

/* Window origins along one axis: first at 0, last at dim - w, evenly spaced
 * with stride <= w * (1 - overlap). Returns the count (<= 64). */
static int axis_positions(int dim, int w, double overlap, int *pos)
{
	int n, stride;
	if (dim <= w) {
		pos[0] = -(w - dim) / 2;
		return 1;
	}
	stride = (int)floor(w * (1.0 - overlap));
	if (stride < 1)
		stride = 1;
	n = (dim - w + stride - 1) / stride + 1;
	if (n > 64)
		n = 64;
	for (int i = 0; i < n; i++)
		pos[i] = n == 1 ? 0 : (int)lround((double)i * (dim - w) / (n - 1));
	return n;
}

void model_infer_plan(const model_spec *sp, const model_infer_opts *o,
    int cx, int cy, int cz, int win[3], int *nwin)
{
	int div = model_spec_divisor(sp), pos[64];
	win[0] = axis_window(cx, o->window, div);
	win[1] = axis_window(cy, o->window, div);
	win[2] = axis_window(cz, o->window, div);
	*nwin = axis_positions(cx, win[0], o->overlap, pos) *
	    axis_positions(cy, win[1], o->overlap, pos) *
	    axis_positions(cz, win[2], o->overlap, pos);
}

static float *gaussian_map(int wx, int wy, int wz)
{
	float *g = malloc((size_t)wx * wy * wz * sizeof(float));
	double sx = wx / 8.0, sy = wy / 8.0, sz = wz / 8.0;
	if (g == NULL)
		return NULL;
	for (int k = 0; k < wz; k++) {
		double dz = (k - (wz - 1) / 2.0) / sz;
		for (int j = 0; j < wy; j++) {
			double dy = (j - (wy - 1) / 2.0) / sy;
			for (int i = 0; i < wx; i++) {
				double dx = (i - (wx - 1) / 2.0) / sx;
				double v = exp(-0.5 * (dx * dx + dy * dy + dz * dz));
				g[((size_t)k * wy + j) * wx + i] =
				    (float)(v < 1e-3 ? 1e-3 : v);
			}
		}
	}
	return g;
}

typedef struct {
	int x, y, z;
} origin;

/* Softmax probabilities of the batch x [nb, nmod, wz, wy, wx] into out
 * [nb, C, wz, wy, wx], averaged over mirror flips when tta. */
static int predict(model_net *net, tc_scope *s, const float *x, int nb, int wx,
    int wy, int wz, int tta, int precision, float *out)
{
	const model_spec *sp = &net->spec;
	int64_t xs[5] = {nb, sp->nmod, wz, wy, wx};
	int nflip = tta ? 8 : 1;
	size_t n = (size_t)nb * sp->num_classes * wx * wy * wz;
	tc_tensor *acc = NULL;
	tc_scope_reset(s);
	tc_tensor *xt = tc_from_float(s, x, xs, 5, net->dev);
	for (int f = 0; f < nflip; f++) {
		int64_t dims[3];
		int nd = 0;
		if (f & 1)
			dims[nd++] = 4;
		if (f & 2)
			dims[nd++] = 3;
		if (f & 4)
			dims[nd++] = 2;
		tc_tensor *in = nd ? tc_flip(s, xt, dims, nd) : xt;
		tc_tensor *p = tc_softmax(s, forward_logits(net, s, in,
		    precision), 1);
		if (nd && p)
			p = tc_flip(s, p, dims, nd);
		acc = acc ? tc_add(s, acc, p) : p;
		if (acc == NULL)
			return fs_seterr("inference: %s", tc_last_error());
	}
	if (nflip > 1)
		acc = tc_mul_scalar(s, acc, 1.0 / nflip);
	if (acc == NULL || tc_to_float(acc, out, n) != TC_OK)
		return fs_seterr("inference: %s", tc_last_error());
	return 0;
}

int model_segment(model_net *net, const img_case *c, const model_infer_opts *o,
    uint8_t *labels)
{
	const model_spec *sp = &net->spec;
	int div = model_spec_divisor(sp), C = sp->num_classes, nm = sp->nmod;
	int wx = axis_window(c->cx, o->window, div);
	int wy = axis_window(c->cy, o->window, div);
	int wz = axis_window(c->cz, o->window, div);
	int px[64], py[64], pz[64], nx, ny, nz, nwin, B = o->batch > 0 ? o->batch : 1;
	size_t cv = (size_t)c->cx * c->cy * c->cz, wv = (size_t)wx * wy * wz;
	float *prob = NULL, *g = NULL, *xb = NULL, *pb = NULL;
	uint8_t *crop = NULL;
	origin *orig = NULL;
	tc_scope *s = NULL;
	int prev_grad = tc_set_grad_enabled(0), rv = -1;

	if (c->nmod != nm) {
		fs_seterr("case %s has %d modalities, the model wants %d", c->id,
		    c->nmod, nm);
		goto out;
	}
	if (model_precision_check(o->precision, net->dev) != 0)
		goto out;
	nx = axis_positions(c->cx, wx, o->overlap, px);
	ny = axis_positions(c->cy, wy, o->overlap, py);
	nz = axis_positions(c->cz, wz, o->overlap, pz);
	nwin = nx * ny * nz;
	if (B > nwin)
		B = nwin;
	prob = calloc((size_t)C * cv, sizeof(float));
	g = gaussian_map(wx, wy, wz);
	xb = malloc((size_t)B * nm * wv * sizeof(float));
	pb = malloc((size_t)B * C * wv * sizeof(float));
	crop = malloc(cv);
	orig = malloc((size_t)nwin * sizeof(*orig));
	s = tc_scope_create();
	if (!prob || !g || !xb || !pb || !crop || !orig || !s) {
		fs_seterr("out of memory");
		goto out;
	}
	for (int k = 0, w = 0; k < nz; k++)
		for (int j = 0; j < ny; j++)
			for (int i = 0; i < nx; i++, w++)
				orig[w] = (origin){px[i], py[j], pz[k]};
	for (int w0 = 0; w0 < nwin; w0 += B) {
		int nb = nwin - w0 < B ? nwin - w0 : B;
		for (int b = 0; b < nb; b++) {
			origin q = orig[w0 + b];
			for (int m = 0; m < nm; m++) {
				float *dst = xb + ((size_t)b * nm + m) * wv;
				const float *src = c->img + (size_t)m * cv;
				for (int k = 0; k < wz; k++)
					for (int j = 0; j < wy; j++)
						for (int i = 0; i < wx; i++) {
							int sx = q.x + i, sy = q.y + j,
							    sz = q.z + k;
							int in = sx >= 0 && sy >= 0 &&
							    sz >= 0 && sx < c->cx &&
							    sy < c->cy && sz < c->cz;
							*dst++ = in ? src[((size_t)sz *
							    c->cy + sy) * c->cx + sx] : 0.0f;
						}
			}
		}
		if (predict(net, s, xb, nb, wx, wy, wz, o->tta, o->precision,
		    pb) != 0)
			goto out;
		for (int b = 0; b < nb; b++) {
			origin q = orig[w0 + b];
			for (int k = 0; k < wz; k++) {
				int sz = q.z + k;
				if (sz < 0 || sz >= c->cz)
					continue;
				for (int j = 0; j < wy; j++) {
					int sy = q.y + j;
					if (sy < 0 || sy >= c->cy)
						continue;
					for (int i = 0; i < wx; i++) {
						int sx = q.x + i;
						if (sx < 0 || sx >= c->cx)
							continue;
						size_t d = ((size_t)sz * c->cy + sy) *
						    c->cx + sx;
						size_t l = ((size_t)k * wy + j) * wx + i;
						float gw = g[l];
						for (int cl = 0; cl < C; cl++)
							prob[cl * cv + d] += gw *
							    pb[((size_t)b * C + cl) *
							    wv + l];
					}
				}
			}
		}
	}
	/* The argmax of the Gaussian-weighted sum equals that of the weighted
	 * mean: no division by the weight sum is needed. */
	for (size_t d = 0; d < cv; d++) {
		int best = 0;
		float bv = prob[d];
		for (int cl = 1; cl < C; cl++)
			if (prob[cl * cv + d] > bv)
				bv = prob[cl * cv + d], best = cl;
		crop[d] = c->mask[d] ? (uint8_t)best : 0;
	}
	img_case_uncrop(c, crop, labels);
	rv = 0;
out:
	tc_set_grad_enabled(prev_grad);
	tc_scope_destroy(s);
	free(prob);
	free(g);
	free(xb);
	free(pb);
	free(crop);
	free(orig);
	return rv;
}
