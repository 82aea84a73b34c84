/*
 * agg_config.c - agg.json, driven by one table of keys (see
 * docs/aggregator-config.md).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "agg.h"
#include "base.h"
#include "codec.h"

agg_config
agg_config_default(void)
{
	agg_config c;
	memset(&c, 0, sizeof c);
	snprintf(c.listen, sizeof c.listen, "tls+tcp://0.0.0.0:7443");
	snprintf(c.state_dir, sizeof c.state_dir, "state");
	c.spec = model_spec_default();
	c.seed = 1;
	c.rounds = 10;
	c.min_nodes = 2;
	c.min_updates = 1;
	c.round_deadline_s = 3600;
	c.codec = FED_CODEC_F32;
	c.topk_fraction = FED_CODEC_TOPK_FRACTION;
	snprintf(c.strategy, sizeof c.strategy, "fedavg");
	c.trim_fraction = 0.1;
	snprintf(c.server_optimizer, sizeof c.server_optimizer, "none");
	c.server_lr = 1.0;
	c.server_momentum = 0.9;
	c.beta1 = 0.9;
	c.beta2 = 0.99;
	c.tau = 1e-3;
	c.node_timeout_s = 300;
	c.rate_per_s = 50;
	c.anon_rate_per_s = 200;
	c.max_message_bytes = (size_t)512 << 20;
	c.contexts = 16;
	c.workers = 2;
	c.max_model_transfers = 2;
	c.upload_grant_ms = 60000;
	c.train_steps = 20;
	c.train_lr = 1e-3;
	c.train_batch = 2;
	c.train_patch = 64;
	c.train_fg_share = 0.5;
	c.train_prox_mu = 0;
	c.wait_ms = 1000;
	c.log_level = FS_LOG_INFO;
	return c;
}

enum { K_STR, K_PATH, K_INT, K_U64, K_DBL, K_SIZE, K_CODEC, K_LEVEL };

typedef struct {
	const char *key;
	int type;
	size_t off;
	double lo, hi;      /* bounds for numbers */
	size_t cap;         /* buffer size for strings */
} key_def;

#define O(f) offsetof(agg_config, f)
#define S(f) sizeof(((agg_config *)0)->f)
static const key_def keys[] = {
	{ "listen", K_STR, O(listen), 0, 0, S(listen) },
	{ "cert", K_PATH, O(cert), 0, 0, S(cert) },
	{ "ca", K_PATH, O(ca), 0, 0, S(ca) },
	{ "crl", K_PATH, O(crl), 0, 0, S(crl) },
	{ "state_dir", K_PATH, O(state_dir), 0, 0, S(state_dir) },
	{ "initial_weights", K_PATH, O(initial_weights), 0, 0,
	    S(initial_weights) },
	{ "seed", K_U64, O(seed), 0, 9007199254740991.0, 0 },
	{ "rounds", K_INT, O(rounds), 1, 1000000, 0 },
	{ "min_nodes", K_INT, O(min_nodes), 1, 100000, 0 },
	{ "min_updates", K_INT, O(min_updates), 1, 100000, 0 },
	{ "round_deadline_s", K_DBL, O(round_deadline_s), 0.1, 1e7, 0 },
	{ "codec", K_CODEC, O(codec), 0, 0, 0 },
	{ "topk_fraction", K_DBL, O(topk_fraction), 1e-6, 1, 0 },
	{ "strategy", K_STR, O(strategy), 0, 0, S(strategy) },
	{ "trim_fraction", K_DBL, O(trim_fraction), 0, 0.49, 0 },
	{ "clip_norm", K_DBL, O(clip_norm), 0, 1e12, 0 },
	{ "server_optimizer", K_STR, O(server_optimizer), 0, 0,
	    S(server_optimizer) },
	{ "server_lr", K_DBL, O(server_lr), 1e-9, 1e3, 0 },
	{ "server_momentum", K_DBL, O(server_momentum), 0, 0.9999, 0 },
	{ "beta1", K_DBL, O(beta1), 0, 0.9999, 0 },
	{ "beta2", K_DBL, O(beta2), 0, 0.999999, 0 },
	{ "tau", K_DBL, O(tau), 1e-12, 10, 0 },
	{ "node_timeout_s", K_DBL, O(node_timeout_s), 0, 1e7, 0 },
	{ "rate_limit_per_s", K_INT, O(rate_per_s), 0, 1000000, 0 },
	{ "anon_rate_limit_per_s", K_INT, O(anon_rate_per_s), 0, 1000000, 0 },
	{ "max_message_bytes", K_SIZE, O(max_message_bytes), 4096,
	    (double)((size_t)1 << 40), 0 },
	{ "contexts", K_INT, O(contexts), 1, 1024, 0 },
	{ "workers", K_INT, O(workers), 1, 64, 0 },
	{ "max_model_transfers", K_INT, O(max_model_transfers), 0, 1024, 0 },
	/* the key's name before uploads shared the budget */
	{ "max_task_transfers", K_INT, O(max_model_transfers), 0, 1024, 0 },
	{ "upload_grant_ms", K_INT, O(upload_grant_ms), 100, 86400000, 0 },
	{ "wait_ms", K_INT, O(wait_ms), 10, 600000, 0 },
	{ "log_level", K_LEVEL, O(log_level), 0, 0, 0 },
	{ NULL, 0, 0, 0, 0, 0 },
};
static const key_def train_keys[] = {
	{ "steps", K_INT, O(train_steps), 1, 10000000, 0 },
	{ "lr", K_DBL, O(train_lr), 1e-12, 10, 0 },
	{ "batch", K_INT, O(train_batch), 1, 4096, 0 },
	{ "patch", K_INT, O(train_patch), 8, 1024, 0 },
	{ "fg_share", K_DBL, O(train_fg_share), 0, 1, 0 },
	{ "prox_mu", K_DBL, O(train_prox_mu), 0, 1e6, 0 },
	{ NULL, 0, 0, 0, 0, 0 },
};
#undef O
#undef S

static int
set_path(char *dst, size_t cap, const char *base, const char *v)
{
	if (v[0] == '\0' || v[0] == '/' || base[0] == '\0')
		return fs_path(dst, cap, "%s", v);
	return fs_path(dst, cap, "%s/%s", base, v);
}

static int
level_parse(const char *s)
{
	static const struct { const char *n; int l; } t[] = {
		{ "error", FS_LOG_ERR }, { "warn", FS_LOG_WARN },
		{ "info", FS_LOG_INFO }, { "debug", FS_LOG_DEBUG } };
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		if (strcmp(s, t[i].n) == 0)
			return t[i].l;
	return -1;
}

static int
set_string(const key_def *k, const cJSON *v, char *f, const char *base)
{
	if (!cJSON_IsString(v))
		return fs_seterr("\"%s\" must be a string", k->key);
	const char *s = v->valuestring;
	if (k->type == K_CODEC || k->type == K_LEVEL) {
		int x = k->type == K_CODEC ? fed_codec_parse(s) : level_parse(s);
		if (x < 0)
			return fs_seterr("\"%s\": unknown value \"%s\"", k->key,
			    s);
		*(int *)f = x;
		return 0;
	}
	if (k->type == K_PATH)
		return set_path(f, k->cap, base, s) == 0 ? 0 :
		    fs_seterr("\"%s\" is too long", k->key);
	if (strlen(s) >= k->cap)
		return fs_seterr("\"%s\" is too long", k->key);
	memcpy(f, s, strlen(s) + 1);
	return 0;
}

static int
set_key(const key_def *k, const cJSON *v, agg_config *c, const char *base)
{
	char *f = (char *)c + k->off;
	if (k->type == K_STR || k->type == K_PATH || k->type == K_CODEC ||
	    k->type == K_LEVEL)
		return set_string(k, v, f, base);
	if (!cJSON_IsNumber(v))
		return fs_seterr("\"%s\" must be a number", k->key);
	double d = v->valuedouble;
	if (d < k->lo || d > k->hi)
		return fs_seterr("\"%s\" = %g is outside [%g, %g]", k->key, d,
		    k->lo, k->hi);
	if (k->type != K_DBL && d != (double)(long long)d)
		return fs_seterr("\"%s\" must be an integer", k->key);
	switch (k->type) {
	case K_INT: *(int *)f = (int)d; break;
	case K_U64: *(uint64_t *)f = (uint64_t)d; break;
	case K_SIZE: *(size_t *)f = (size_t)d; break;
	default: *(double *)f = d; break;
	}
	return 0;
}

static const key_def *
key_find(const key_def *t, const char *name)
{
	for (; t->key != NULL; t++)
		if (strcmp(t->key, name) == 0)
			return t;
	return NULL;
}

/* "model": a partial spec merged over model_spec_default(). */
static int
load_spec(const cJSON *m, model_spec *out)
{
	model_spec d = model_spec_default();
	char *dj = model_spec_to_json(&d), *txt = NULL;
	cJSON *root = dj ? cJSON_Parse(dj) : NULL;
	int rv = -1;
	free(dj);
	if (root == NULL || !cJSON_IsObject(m)) {
		fs_seterr("\"model\" must be an object");
		goto out;
	}
	const cJSON *it;
	cJSON_ArrayForEach(it, m) {
		cJSON_DeleteItemFromObjectCaseSensitive(root, it->string);
		cJSON_AddItemToObject(root, it->string, cJSON_Duplicate(it, 1));
	}
	txt = cJSON_PrintUnformatted(root);
	rv = txt ? model_spec_from_json(txt, out) : -1;
out:
	cJSON_Delete(root);
	free(txt);
	return rv;
}

static int
load_table(const cJSON *obj, const key_def *t, agg_config *c,
    const char *base, const char *where)
{
	const cJSON *it;
	cJSON_ArrayForEach(it, obj) {
		const key_def *k = key_find(t, it->string);
		if (k == NULL)
			return fs_seterr("unknown key \"%s%s\"", where,
			    it->string);
		if (set_key(k, it, c, base) != 0)
			return -1;
	}
	return 0;
}

/* "allowed_nodes": ["site-a", "site-b"] -> "site-a\nsite-b". */
static int
load_allowed(const cJSON *v, agg_config *c)
{
	const cJSON *it;
	size_t used = 0;
	if (!cJSON_IsArray(v))
		return fs_seterr("\"allowed_nodes\" must be a list of CNs");
	c->allowed_nodes[0] = '\0';
	cJSON_ArrayForEach(it, v) {
		if (!cJSON_IsString(it) || it->valuestring[0] == '\0' ||
		    strchr(it->valuestring, '\n') != NULL)
			return fs_seterr("\"allowed_nodes\": each entry must "
			    "be a CN");
		size_t l = strlen(it->valuestring);
		if (used + l + 2 > sizeof c->allowed_nodes)
			return fs_seterr("\"allowed_nodes\" is too long");
		memcpy(c->allowed_nodes + used, it->valuestring, l);
		used += l;
		c->allowed_nodes[used++] = '\n';
		c->allowed_nodes[used] = '\0';
	}
	return 0;
}

static int
load_root(const cJSON *root, agg_config *c, const char *base)
{
	const cJSON *it;
	if (!cJSON_IsObject(root))
		return fs_seterr("not a JSON object");
	cJSON_ArrayForEach(it, root) {
		if (strcmp(it->string, "model") == 0) {
			if (load_spec(it, &c->spec) != 0)
				return -1;
		} else if (strcmp(it->string, "train") == 0) {
			if (!cJSON_IsObject(it))
				return fs_seterr("\"train\" must be an object");
			if (load_table(it, train_keys, c, base, "train.") != 0)
				return -1;
		} else if (strcmp(it->string, "allowed_nodes") == 0) {
			if (load_allowed(it, c) != 0)
				return -1;
		} else if (it->string[0] == '_') {
			continue; /* "_comment" and friends */
		} else {
			const key_def *k = key_find(keys, it->string);
			if (k == NULL)
				return fs_seterr("unknown key \"%s\"",
				    it->string);
			if (set_key(k, it, c, base) != 0)
				return -1;
		}
	}
	return 0;
}

static int
check_config(const agg_config *c)
{
	if (c->cert[0] == '\0' || c->ca[0] == '\0')
		return fs_seterr("\"cert\" and \"ca\" are required");
	if (strcmp(c->strategy, "fedavg") != 0 &&
	    strcmp(c->strategy, "median") != 0 &&
	    strcmp(c->strategy, "trimmed_mean") != 0)
		return fs_seterr("strategy \"%s\" unsupported (fedavg, "
		    "median, trimmed_mean)", c->strategy);
	if (strcmp(c->server_optimizer, "none") != 0 &&
	    strcmp(c->server_optimizer, "fedavgm") != 0 &&
	    strcmp(c->server_optimizer, "fedadam") != 0 &&
	    strcmp(c->server_optimizer, "fedyogi") != 0)
		return fs_seterr("server_optimizer \"%s\" unsupported (none, "
		    "fedavgm, fedadam, fedyogi)", c->server_optimizer);
	if (c->min_updates > c->min_nodes)
		return fs_seterr("min_updates (%d) > min_nodes (%d)",
		    c->min_updates, c->min_nodes);
	if (c->train_patch % model_spec_divisor(&c->spec) != 0)
		return fs_seterr("train.patch %d is not a multiple of %d",
		    c->train_patch, model_spec_divisor(&c->spec));
	return 0;
}

int
agg_config_load(const char *path, agg_config *cfg)
{
	char *text = NULL, base[AGG_PATH_MAX];
	size_t n;
	agg_config c = *cfg;
	int rv = -1;
	if (fs_read_file(path, 1 << 20, (void **)&text, &n) != 0)
		return -1;
	snprintf(base, sizeof base, "%s", path);
	char *slash = strrchr(base, '/');
	if (slash != NULL)
		*slash = '\0';
	else
		base[0] = '\0';
	cJSON *root = cJSON_Parse(text);
	if (root == NULL)
		fs_seterr("not valid JSON near byte %ld",
		    (long)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - text : 0));
	else if (load_root(root, &c, base) == 0 && check_config(&c) == 0)
		rv = 0;
	cJSON_Delete(root);
	free(text);
	if (rv != 0)
		return fs_preferr("config %s", path);
	*cfg = c;
	return 0;
}
