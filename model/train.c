/* train.c - local training: patch sampler (random + tumour-centred), flips,
 * intensity jitter, cross-entropy + soft-Dice loss, Adam, optional FedProx
 * term. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "imaging.h"
#include "model_impl.h"

model_train_opts model_train_opts_default(void)
{
	model_train_opts o;
	memset(&o, 0, sizeof(o));
	o.steps = 100;
	o.batch = 2;
	o.patch = 64;
	o.lr = 3e-3;
	o.fg_share = 0.67;
	o.seed = 1;
	return o;
}

typedef struct {
	uint64_t s[2];
} rng_t;

static uint64_t rng_next(rng_t *r)
{
	/* xorshift128+ */
	uint64_t s1 = r->s[0];
	const uint64_t s0 = r->s[1];
	r->s[0] = s0;
	s1 ^= s1 << 23;
	r->s[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
	return r->s[1] + s0;
}

static double rng_unif(rng_t *r)
{
	return (rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static int rng_int(rng_t *r, int n) { return n <= 1 ? 0 : (int)(rng_next(r) % (uint64_t)n); }

static void rng_seed(rng_t *r, uint64_t seed)
{
	r->s[0] = seed * 0x9E3779B97F4A7C15ULL + 0x1234567ULL;
	r->s[1] = (seed ^ 0xDEADBEEFCAFEULL) * 0xBF58476D1CE4E5B9ULL + 1;
	for (int i = 0; i < 8; i++)
		rng_next(r);
}

/* Foreground voxel indices of a case (subsampled to at most 200000). */
typedef struct {
	uint32_t *idx;
	size_t n;
} fg_list;

static int fg_build(const img_case *c, fg_list *fg)
{
	size_t nv = (size_t)c->cx * c->cy * c->cz, cnt = 0, step;
	fg->idx = NULL;
	fg->n = 0;
	for (size_t i = 0; i < nv; i++)
		cnt += c->label[i] != 0;
	if (cnt == 0)
		return 0;
	step = cnt / 200000 + 1;
	fg->idx = malloc((cnt / step + 1) * sizeof(uint32_t));
	if (fg->idx == NULL)
		return fs_seterr("out of memory");
	cnt = 0;
	for (size_t i = 0; i < nv; i++)
		if (c->label[i] != 0 && (cnt++ % step) == 0)
			fg->idx[fg->n++] = (uint32_t)i;
	return 0;
}

/* Copies one P^3 patch with origin (ox,oy,oz) in the crop (zeros outside),
 * mirrored on the axes set in flip (bit 0 x, 1 y, 2 z), with per-modality
 * scale/shift applied inside the brain mask. */
static void extract(const img_case *c, int P, int ox, int oy, int oz,
    int flip, const float *scale, const float *shift, float *x, uint8_t *y)
{
	size_t pv = (size_t)P * P * P;
	for (int k = 0; k < P; k++) {
		int sz = oz + ((flip & 4) ? P - 1 - k : k);
		for (int j = 0; j < P; j++) {
			int sy = oy + ((flip & 2) ? P - 1 - j : j);
			for (int i = 0; i < P; i++) {
				int sx = ox + ((flip & 1) ? P - 1 - i : i);
				size_t d = ((size_t)k * P + j) * P + i;
				if (sx < 0 || sy < 0 || sz < 0 || sx >= c->cx ||
				    sy >= c->cy || sz >= c->cz) {
					for (int m = 0; m < c->nmod; m++)
						x[m * pv + d] = 0.0f;
					y[d] = 0;
					continue;
				}
				size_t s = ((size_t)sz * c->cy + sy) * c->cx + sx;
				size_t cv = (size_t)c->cx * c->cy * c->cz;
				int in = c->mask[s] != 0;
				for (int m = 0; m < c->nmod; m++) {
					float v = c->img[m * cv + s];
					x[m * pv + d] = in ? v * scale[m] + shift[m] : v;
				}
				y[d] = c->label[s];
			}
		}
	}
}

static void sample(const img_case *c, const fg_list *fg, int P, double fg_share,
    rng_t *r, float *x, uint8_t *y)
{
	int ox, oy, oz, flip;
	float scale[4], shift[4];
	if (fg->n > 0 && rng_unif(r) < fg_share) {
		uint32_t v = fg->idx[rng_int(r, (int)fg->n)];
		int vx = v % c->cx, vy = (v / c->cx) % c->cy,
		    vz = v / ((uint32_t)c->cx * c->cy);
		/* Tumour voxel inside the patch, not always at its centre. */
		ox = vx - P / 4 - rng_int(r, P / 2);
		oy = vy - P / 4 - rng_int(r, P / 2);
		oz = vz - P / 4 - rng_int(r, P / 2);
	} else {
		ox = rng_int(r, c->cx - P + 1);
		oy = rng_int(r, c->cy - P + 1);
		oz = rng_int(r, c->cz - P + 1);
		if (c->cx < P)
			ox = -(P - c->cx) / 2;
		if (c->cy < P)
			oy = -(P - c->cy) / 2;
		if (c->cz < P)
			oz = -(P - c->cz) / 2;
	}
	flip = rng_int(r, 8);
	for (int m = 0; m < c->nmod; m++) {
		scale[m] = (float)(0.9 + 0.2 * rng_unif(r));
		shift[m] = (float)(-0.1 + 0.2 * rng_unif(r));
	}
	extract(c, P, ox, oy, oz, flip, scale, shift, x, y);
}

/* CE + (1 - mean soft Dice over the foreground classes), batch Dice. */
static tc_tensor *seg_loss(tc_scope *s, tc_tensor *logits, tc_tensor *y, int C)
{
	const int64_t dims[4] = {0, 2, 3, 4};
	tc_tensor *ce = tc_cross_entropy(s, logits, y);
	tc_tensor *p = tc_softmax(s, logits, 1);
	tc_tensor *g = tc_one_hot(s, y, C);
	tc_tensor *inter = tc_sum_dims(s, tc_mul(s, p, g), dims, 4, 0);
	tc_tensor *den = tc_sum_dims(s, tc_add(s, p, g), dims, 4, 0);
	tc_tensor *dice = tc_div(s, tc_add_scalar(s, tc_mul_scalar(s, inter, 2.0), 1.0),
	    tc_add_scalar(s, den, 1.0));
	tc_tensor *fgd = tc_mean(s, tc_narrow(s, dice, 0, 1, C - 1));
	return tc_add(s, ce, tc_add_scalar(s, tc_mul_scalar(s, fgd, -1.0), 1.0));
}

int model_train(model_net *net, img_case *const *cases, int n,
    const model_train_opts *o, model_train_stats *st)
{
	const model_spec *sp = &net->spec;
	int P = o->patch, B = o->batch, C = sp->num_classes, rv = -1;
	size_t pv = (size_t)P * P * P;
	float *x = NULL;
	uint8_t *y = NULL;
	double *losses = NULL;
	fg_list *fg = NULL;
	tc_tensor **ref = NULL;
	tc_optim *opt = NULL;
	tc_scope *s = NULL;
	rng_t r;
	double t0 = fs_now();

	if (n < 1)
		return fs_seterr("training needs at least one case");
	if (P < 8 || P % model_spec_divisor(sp) != 0)
		return fs_seterr("patch %d must be >= 8 and a multiple of %d", P,
		    model_spec_divisor(sp));
	if (B < 1 || o->steps < 0)
		return fs_seterr("batch must be >= 1 and steps >= 0");
	for (int i = 0; i < n; i++) {
		if (cases[i]->label == NULL)
			return fs_seterr("case %s has no label", cases[i]->id);
		if (cases[i]->nmod != sp->nmod)
			return fs_seterr("case %s has %d modalities, the model "
			    "wants %d", cases[i]->id, cases[i]->nmod, sp->nmod);
	}
	rng_seed(&r, o->seed);
	tc_manual_seed(o->seed);
	x = malloc((size_t)B * sp->nmod * pv * sizeof(float));
	y = malloc((size_t)B * pv);
	losses = calloc((size_t)o->steps + 1, sizeof(double));
	fg = calloc((size_t)n, sizeof(*fg));
	s = tc_scope_create();
	if (x == NULL || y == NULL || losses == NULL || fg == NULL || s == NULL) {
		fs_seterr("out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++)
		if (fg_build(cases[i], &fg[i]) != 0)
			goto out;
	opt = tc_adam_create(net->p, net->tab.n, o->lr, 0.9, 0.999, 1e-8, 0.0);
	if (opt == NULL) {
		fs_seterr("optimiser: %s", tc_last_error());
		goto out;
	}
	if (o->prox_mu > 0 && o->prox_ref != NULL) {
		ref = calloc(net->tab.n, sizeof(*ref));
		if (ref == NULL) {
			fs_seterr("out of memory");
			goto out;
		}
		for (int i = 0; i < net->tab.n; i++) {
			const model_tensor_info *e = &net->tab.t[i];
			ref[i] = tc_from_float(NULL, o->prox_ref + e->offset,
			    e->shape, e->ndim, net->dev);
			if (ref[i] == NULL) {
				fs_seterr("%s", tc_last_error());
				goto out;
			}
		}
	}
	for (int step = 0; step < o->steps; step++) {
		int64_t xs[5] = {B, sp->nmod, P, P, P}, ys[4] = {B, P, P, P};
		tc_tensor *xt, *yt, *loss;
		for (int b = 0; b < B; b++) {
			int ci = rng_int(&r, n);
			sample(cases[ci], &fg[ci], P, o->fg_share, &r,
			    x + (size_t)b * sp->nmod * pv, y + (size_t)b * pv);
		}
		tc_scope_reset(s);
		xt = tc_from_float(s, x, xs, 5, net->dev);
		yt = tc_from_u8_as_long(s, y, ys, 4, net->dev);
		loss = xt && yt ? seg_loss(s, model_forward(net, s, xt), yt, C) : NULL;
		if (ref != NULL) {
			tc_tensor *prox = NULL;
			for (int i = 0; i < net->tab.n && loss; i++) {
				tc_tensor *d = tc_sub(s, net->p[i], ref[i]);
				tc_tensor *sq = tc_sum(s, tc_mul(s, d, d));
				prox = prox ? tc_add(s, prox, sq) : sq;
			}
			loss = tc_add(s, loss, tc_mul_scalar(s, prox, o->prox_mu / 2));
		}
		if (loss == NULL) {
			fs_seterr("train step %d: %s", step, tc_last_error());
			goto out;
		}
		losses[step] = tc_item(loss);
		if (!isfinite(losses[step])) {
			fs_seterr("train step %d: loss is not finite (lower the "
			    "learning rate)", step);
			goto out;
		}
		if (tc_optim_zero_grad(opt) != TC_OK || tc_backward(loss) != TC_OK ||
		    tc_optim_step(opt) != TC_OK) {
			fs_seterr("train step %d: %s", step, tc_last_error());
			goto out;
		}
		if (o->verbose > 0 && (step + 1) % o->verbose == 0)
			fprintf(stderr, "step %d/%d loss %.4f (%.1f s)\n", step + 1,
			    o->steps, losses[step], fs_now() - t0);
	}
	if (st != NULL) {
		int k = o->steps / 10 > 0 ? o->steps / 10 : 1;
		double a = 0, b = 0, m = 0;
		memset(st, 0, sizeof(*st));
		st->steps = o->steps;
		for (int i = 0; i < o->steps; i++)
			m += losses[i];
		for (int i = 0; i < k && i < o->steps; i++) {
			a += losses[i];
			b += losses[o->steps - 1 - i];
		}
		if (o->steps > 0) {
			st->first_loss = a / (k < o->steps ? k : o->steps);
			st->last_loss = b / (k < o->steps ? k : o->steps);
			st->mean_loss = m / o->steps;
		}
		st->seconds = fs_now() - t0;
	}
	rv = 0;
out:
	tc_scope_destroy(s);
	tc_optim_destroy(opt);
	for (int i = 0; ref != NULL && i < net->tab.n; i++)
		tc_tensor_free(ref[i]);
	free(ref);
	for (int i = 0; fg != NULL && i < n; i++)
		free(fg[i].idx);
	free(fg);
	free(losses);
	free(x);
	free(y);
	return rv;
}
