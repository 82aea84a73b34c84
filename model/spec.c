/* spec.c - model spec, tensor table, deterministic initial weights.
 * Plain C: the aggregator links this without libtorch. */
#define _GNU_SOURCE
#include "model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"

model_spec model_spec_default(void)
{
	model_spec s;
	memset(&s, 0, sizeof(s));
	s.nmod = 4;
	for (int i = 0; i < 4; i++)
		s.modalities[i] = i; /* t1, t1c, t2, flair */
	s.num_classes = 4;
	s.base = 8;
	s.depth = 4;
	return s;
}

static int spec_valid(const model_spec *s)
{
	if (s->nmod < 1 || s->nmod > 4)
		return fs_seterr("model spec: nmod must be 1..4 (got %d)", s->nmod);
	for (int i = 0; i < s->nmod; i++) {
		if (s->modalities[i] < 0 || s->modalities[i] > 3)
			return fs_seterr("model spec: bad modality %d",
			    s->modalities[i]);
		for (int j = 0; j < i; j++)
			if (s->modalities[i] == s->modalities[j])
				return fs_seterr("model spec: modality listed twice");
	}
	if (s->num_classes < 2 || s->num_classes > 8)
		return fs_seterr("model spec: num_classes must be 2..8");
	if (s->base < 1 || s->base > 64)
		return fs_seterr("model spec: base must be 1..64 (got %d)", s->base);
	if (s->depth < 1 || s->depth > MODEL_MAX_DEPTH)
		return fs_seterr("model spec: depth must be 1..%d (got %d)",
		    MODEL_MAX_DEPTH, s->depth);
	return 0;
}

static const char *mod_names[4] = {"t1", "t1c", "t2", "flair"};

char *model_spec_to_json(const model_spec *s)
{
	char mods[64] = "";
	char *out;
	for (int i = 0; i < s->nmod; i++) {
		strcat(mods, i ? ",\"" : "\"");
		strcat(mods, mod_names[s->modalities[i] & 3]);
		strcat(mods, "\"");
	}
	if (asprintf(&out,
	    "{\"arch\":\"unet3d\",\"version\":1,\"modalities\":[%s],"
	    "\"num_classes\":%d,\"base\":%d,\"depth\":%d,"
	    "\"norm\":\"instance\",\"act\":\"leaky_relu_0.01\","
	    "\"classes\":[\"background\",\"ncr\",\"ed\",\"et\"]}",
	    mods, s->num_classes, s->base, s->depth) < 0)
		return NULL;
	return out;
}

int model_spec_from_json(const char *json, model_spec *out)
{
	model_spec s;
	cJSON *root = cJSON_Parse(json), *it;
	int rv = -1;
	memset(&s, 0, sizeof(s));
	if (root == NULL)
		return fs_seterr("model spec: not valid JSON");
	it = cJSON_GetObjectItemCaseSensitive(root, "arch");
	if (!cJSON_IsString(it) || strcmp(it->valuestring, "unet3d") != 0) {
		fs_seterr("model spec: arch must be \"unet3d\"");
		goto out;
	}
	it = cJSON_GetObjectItemCaseSensitive(root, "modalities");
	if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) < 1 ||
	    cJSON_GetArraySize(it) > 4) {
		fs_seterr("model spec: modalities must be a list of 1..4 names");
		goto out;
	}
	cJSON *m;
	cJSON_ArrayForEach(m, it) {
		int k = -1;
		for (int j = 0; j < 4 && cJSON_IsString(m); j++)
			if (strcmp(m->valuestring, mod_names[j]) == 0)
				k = j;
		if (k < 0) {
			fs_seterr("model spec: unknown modality in spec");
			goto out;
		}
		s.modalities[s.nmod++] = k;
	}
	const char *ints[3] = {"num_classes", "base", "depth"};
	int *dst[3] = {&s.num_classes, &s.base, &s.depth};
	for (int i = 0; i < 3; i++) {
		it = cJSON_GetObjectItemCaseSensitive(root, ints[i]);
		if (!cJSON_IsNumber(it)) {
			fs_seterr("model spec: missing %s", ints[i]);
			goto out;
		}
		*dst[i] = it->valueint;
	}
	if (spec_valid(&s) != 0)
		goto out;
	*out = s;
	rv = 0;
out:
	cJSON_Delete(root);
	return rv;
}

int model_spec_equal(const model_spec *a, const model_spec *b)
{
	if (a->nmod != b->nmod || a->num_classes != b->num_classes ||
	    a->base != b->base || a->depth != b->depth)
		return 0;
	for (int i = 0; i < a->nmod; i++)
		if (a->modalities[i] != b->modalities[i])
			return 0;
	return 1;
}

int model_spec_divisor(const model_spec *s) { return 1 << (s->depth - 1); }

/* Channels at level i: base * 2^i, capped at 320 as nnU-Net does. */
int model_level_channels(const model_spec *s, int level)
{
	int c = s->base << level;
	return c > 320 ? 320 : c;
}

static int tab_add(model_table *t, int *cap, const char *name, int ndim,
    const int64_t *shape)
{
	model_tensor_info *e;
	if (t->n == *cap) {
		int nc = *cap ? *cap * 2 : 32;
		model_tensor_info *nt = realloc(t->t, nc * sizeof(*nt));
		if (nt == NULL)
			return fs_seterr("out of memory");
		t->t = nt;
		*cap = nc;
	}
	e = &t->t[t->n++];
	memset(e, 0, sizeof(*e));
	snprintf(e->name, sizeof(e->name), "%s", name);
	e->ndim = ndim;
	e->numel = 1;
	for (int i = 0; i < ndim; i++) {
		e->shape[i] = shape[i];
		e->numel *= (size_t)shape[i];
	}
	e->offset = t->total;
	t->total += e->numel;
	return 0;
}

/* conv + instance norm block: weight [co,ci,3,3,3], norm weight/bias [co] */
static int tab_block(model_table *t, int *cap, const char *pfx, int idx,
    int ci, int co)
{
	char name[MODEL_NAME_MAX];
	int64_t w[5] = {co, ci, 3, 3, 3}, v[1] = {co};
	snprintf(name, sizeof(name), "%s.conv%d.weight", pfx, idx);
	if (tab_add(t, cap, name, 5, w) != 0)
		return -1;
	snprintf(name, sizeof(name), "%s.norm%d.weight", pfx, idx);
	if (tab_add(t, cap, name, 1, v) != 0)
		return -1;
	snprintf(name, sizeof(name), "%s.norm%d.bias", pfx, idx);
	return tab_add(t, cap, name, 1, v);
}

int model_table_build(const model_spec *s, model_table *out)
{
	model_table t = {0};
	int cap = 0;
	char pfx[32];
	if (spec_valid(s) != 0)
		return -1;
	/* Encoder: level 0 takes the modalities; deeper levels start with a
	 * stride-2 convolution (downsampling), then a stride-1 one. */
	for (int i = 0; i < s->depth; i++) {
		int ci = i == 0 ? s->nmod : model_level_channels(s, i - 1);
		int co = model_level_channels(s, i);
		snprintf(pfx, sizeof(pfx), "enc%d", i);
		if (tab_block(&t, &cap, pfx, 1, ci, co) != 0 ||
		    tab_block(&t, &cap, pfx, 2, co, co) != 0)
			goto fail;
	}
	/* Decoder: transposed conv up from level i+1 to i, concat skip,
	 * two conv blocks. */
	for (int i = s->depth - 2; i >= 0; i--) {
		int cu = model_level_channels(s, i + 1);
		int c = model_level_channels(s, i);
		char name[MODEL_NAME_MAX];
		int64_t w[5] = {cu, c, 2, 2, 2}, b[1] = {c};
		snprintf(pfx, sizeof(pfx), "dec%d", i);
		snprintf(name, sizeof(name), "%s.up.weight", pfx);
		if (tab_add(&t, &cap, name, 5, w) != 0)
			goto fail;
		snprintf(name, sizeof(name), "%s.up.bias", pfx);
		if (tab_add(&t, &cap, name, 1, b) != 0)
			goto fail;
		if (tab_block(&t, &cap, pfx, 1, 2 * c, c) != 0 ||
		    tab_block(&t, &cap, pfx, 2, c, c) != 0)
			goto fail;
	}
	{
		int64_t w[5] = {s->num_classes, model_level_channels(s, 0), 1, 1, 1};
		int64_t b[1] = {s->num_classes};
		if (tab_add(&t, &cap, "out.weight", 5, w) != 0 ||
		    tab_add(&t, &cap, "out.bias", 1, b) != 0)
			goto fail;
	}
	*out = t;
	return 0;
fail:
	free(t.t);
	return -1;
}

void model_table_free(model_table *tab)
{
	if (tab == NULL)
		return;
	free(tab->t);
	tab->t = NULL;
	tab->n = 0;
	tab->total = 0;
}

char *model_table_text(const model_table *tab)
{
	size_t cap = 64 + (size_t)tab->n * (MODEL_NAME_MAX + 80), len = 0;
	char *s = malloc(cap);
	if (s == NULL)
		return NULL;
	s[0] = '\0';
	for (int i = 0; i < tab->n; i++) {
		const model_tensor_info *e = &tab->t[i];
		len += snprintf(s + len, cap - len, "%s:", e->name);
		for (int d = 0; d < e->ndim; d++)
			len += snprintf(s + len, cap - len, d ? "x%lld" : "%lld",
			    (long long)e->shape[d]);
		len += snprintf(s + len, cap - len, ";");
	}
	return s;
}

/* splitmix64: small, well-distributed, portable. */
static uint64_t sm64(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

void model_init_weights(const model_table *tab, uint64_t seed, float *w)
{
	uint64_t st = seed * 0x2545F4914F6CDD1DULL + 1;
	for (int i = 0; i < tab->n; i++) {
		const model_tensor_info *e = &tab->t[i];
		float *p = w + e->offset;
		const char *dot = strrchr(e->name, '.');
		int is_norm = strstr(e->name, ".norm") != NULL;
		if (dot != NULL && strcmp(dot, ".bias") == 0) {
			memset(p, 0, e->numel * sizeof(float));
			continue;
		}
		if (is_norm) {
			for (size_t k = 0; k < e->numel; k++)
				p[k] = 1.0f;
			continue;
		}
		/* Kaiming-uniform for leaky ReLU (a = 0.01): bound =
		 * sqrt(6 / ((1 + a^2) * fan_in)). A stride-2, kernel-2
		 * transposed conv feeds each output voxel from one input
		 * voxel, so its fan-in is its input channel count. */
		double fan;
		if (strstr(e->name, ".up.") != NULL)
			fan = (double)e->shape[0];
		else
			fan = (double)(e->numel / (size_t)e->shape[0]);
		double bound = sqrt(6.0 / ((1.0 + 1e-4) * fan));
		for (size_t k = 0; k < e->numel; k++) {
			double u = (sm64(&st) >> 11) * (1.0 / 9007199254740992.0);
			p[k] = (float)((2.0 * u - 1.0) * bound);
		}
	}
}

static void conv_add(model_conv_shape *out, int max, int *n, int cin, int cout,
    int k, int stride, int transposed, const int in[3], int o[3])
{
	model_conv_shape c;
	double vox = 1;
	c.cin = cin, c.cout = cout, c.k = k, c.stride = stride;
	c.transposed = transposed;
	for (int i = 0; i < 3; i++) {
		c.in[i] = in[i];
		c.out[i] = transposed ? in[i] * stride : (in[i] + stride - 1) / stride;
		o[i] = c.out[i];
		vox *= c.out[i];
	}
	/* A stride-2 kernel-2 transposed conv touches each output once. */
	c.flops = 2.0 * cin * cout * (transposed ? 1.0 : (double)k * k * k) * vox;
	if (*n < max)
		out[*n] = c;
	(*n)++;
}

int model_conv_layers(const model_spec *s, int d, int h, int w,
    model_conv_shape *out, int max)
{
	int n = 0, cur[3] = {d, h, w}, nxt[3];
	for (int i = 0; i < s->depth; i++) {
		int ci = i == 0 ? s->nmod : model_level_channels(s, i - 1);
		int co = model_level_channels(s, i);
		conv_add(out, max, &n, ci, co, 3, i == 0 ? 1 : 2, 0, cur, nxt);
		memcpy(cur, nxt, sizeof(cur));
		conv_add(out, max, &n, co, co, 3, 1, 0, cur, nxt);
	}
	for (int i = s->depth - 2; i >= 0; i--) {
		int cu = model_level_channels(s, i + 1), c = model_level_channels(s, i);
		conv_add(out, max, &n, cu, c, 2, 2, 1, cur, nxt);
		memcpy(cur, nxt, sizeof(cur));
		conv_add(out, max, &n, 2 * c, c, 3, 1, 0, cur, nxt);
		conv_add(out, max, &n, c, c, 3, 1, 0, cur, nxt);
	}
	conv_add(out, max, &n, model_level_channels(s, 0), s->num_classes, 1, 1, 0,
	    cur, nxt);
	return n;
}

double model_forward_flops(const model_spec *s, int d, int h, int w)
{
	model_conv_shape l[4 * MODEL_MAX_DEPTH + 4];
	int n = model_conv_layers(s, d, h, w, l, 4 * MODEL_MAX_DEPTH + 4);
	double f = 0;
	for (int i = 0; i < n; i++)
		f += l[i].flops;
	return f;
}
