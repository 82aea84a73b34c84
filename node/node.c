/*
 * node.c - the federation node loop (see node.h, docs/protocol.md).
 */
#include "node.h"

#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>

#include "base.h"
#include "cmds.h"
#include "codec.h"
#include "crypto.h"
#include "imaging.h"
#include "model.h"
#include "msg.h"
#include "transport.h"

/* ---- configuration ------------------------------------------------------ */

node_config
node_config_default(void)
{
	node_config c;
	memset(&c, 0, sizeof c);
	snprintf(c.state_dir, sizeof c.state_dir, "state");
	snprintf(c.device, sizeof c.device, "cpu");
	c.seed = 1;
	c.max_message_bytes = (size_t)2 << 30;
	c.timeout_s = 600;
	c.save_local = 1;
	c.backoff_max_s = 30;
	c.log_level = FS_LOG_INFO;
	return c;
}

static int
cfg_path(char *dst, size_t cap, const char *base, const cJSON *v,
    const char *key)
{
	if (!cJSON_IsString(v))
		return fs_seterr("\"%s\" must be a string", key);
	const char *s = v->valuestring;
	if (s[0] == '/' || s[0] == '\0' || base[0] == '\0')
		return fs_path(dst, cap, "%s", s);
	return fs_path(dst, cap, "%s/%s", base, s);
}

static int
cfg_num(const cJSON *v, const char *key, double lo, double hi, double *out)
{
	if (!cJSON_IsNumber(v) || v->valuedouble < lo || v->valuedouble > hi)
		return fs_seterr("\"%s\" must be a number in [%g, %g]", key, lo,
		    hi);
	*out = v->valuedouble;
	return 0;
}

static int
cfg_modalities(node_config *c, const cJSON *v)
{
	if (cJSON_IsString(v)) {
		c->nmod = img_modality_list_parse(v->valuestring, c->modalities);
		return c->nmod > 0 ? 0 : fs_seterr("\"modalities\": bad list");
	}
	if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) < 1 ||
	    cJSON_GetArraySize(v) > 4)
		return fs_seterr("\"modalities\" must be 1..4 names");
	const cJSON *it;
	c->nmod = 0;
	cJSON_ArrayForEach(it, v) {
		int m = cJSON_IsString(it) ? img_modality_parse(it->valuestring)
		    : -1;
		if (m < 0)
			return fs_seterr("\"modalities\": unknown name");
		c->modalities[c->nmod++] = m;
	}
	return 0;
}

static int
cfg_key(node_config *c, const cJSON *it, const char *base)
{
	const char *k = it->string;
	double d = 0;
	static const struct { const char *k; size_t off; size_t cap; } paths[] = {
		{ "cert", offsetof(node_config, cert), NODE_PATH_MAX },
		{ "ca", offsetof(node_config, ca), NODE_PATH_MAX },
		{ "crl", offsetof(node_config, crl), NODE_PATH_MAX },
		{ "data", offsetof(node_config, data), NODE_PATH_MAX },
		{ "state_dir", offsetof(node_config, state_dir), NODE_PATH_MAX },
	};
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
		if (strcmp(k, paths[i].k) == 0)
			return cfg_path((char *)c + paths[i].off, paths[i].cap,
			    base, it, k);
	if (strcmp(k, "aggregator") == 0 || strcmp(k, "device") == 0) {
		char *dst = k[0] == 'a' ? c->aggregator : c->device;
		size_t cap = k[0] == 'a' ? sizeof c->aggregator : sizeof c->device;
		if (!cJSON_IsString(it) || strlen(it->valuestring) >= cap)
			return fs_seterr("\"%s\" must be a short string", k);
		memcpy(dst, it->valuestring, strlen(it->valuestring) + 1);
		return 0;
	}
	if (strcmp(k, "modalities") == 0)
		return cfg_modalities(c, it);
	if (strcmp(k, "save_local") == 0) {
		if (!cJSON_IsBool(it))
			return fs_seterr("\"save_local\" must be true/false");
		c->save_local = cJSON_IsTrue(it);
		return 0;
	}
	if (strcmp(k, "log_level") == 0) {
		static const char *n[] = { "error", "warn", "info", "debug" };
		static const int l[] = { FS_LOG_ERR, FS_LOG_WARN, FS_LOG_INFO,
			FS_LOG_DEBUG };
		for (int i = 0; i < 4 && cJSON_IsString(it); i++)
			if (strcmp(it->valuestring, n[i]) == 0) {
				c->log_level = l[i];
				return 0;
			}
		return fs_seterr("\"log_level\": error|warn|info|debug");
	}
	static const struct { const char *k; double lo, hi; int t; size_t off; }
	    nums[] = {
		{ "threads", 0, 1024, 'i', offsetof(node_config, threads) },
		{ "seed", 0, 9e15, 'u', offsetof(node_config, seed) },
		{ "max_message_bytes", 4096, 1e12, 'z',
		    offsetof(node_config, max_message_bytes) },
		{ "timeout_s", 1, 86400, 'i', offsetof(node_config, timeout_s) },
		{ "max_cases", 0, 1e6, 'i', offsetof(node_config, max_cases) },
		{ "backoff_max_s", 0.1, 3600, 'd',
		    offsetof(node_config, backoff_max_s) },
	};
	for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
		if (strcmp(k, nums[i].k) != 0)
			continue;
		if (cfg_num(it, k, nums[i].lo, nums[i].hi, &d) != 0)
			return -1;
		char *f = (char *)c + nums[i].off;
		if (nums[i].t == 'i')
			*(int *)f = (int)d;
		else if (nums[i].t == 'u')
			*(uint64_t *)f = (uint64_t)d;
		else if (nums[i].t == 'z')
			*(size_t *)f = (size_t)d;
		else
			*(double *)f = d;
		return 0;
	}
	return fs_seterr("unknown key \"%s\"", k);
}

int
node_config_load(const char *path, node_config *cfg)
{
	char *text = NULL, base[NODE_PATH_MAX];
	size_t n;
	node_config c = *cfg;
	int rv = 0;
	if (fs_read_file(path, 1 << 20, (void **)&text, &n) != 0)
		return -1;
	snprintf(base, sizeof base, "%s", path);
	char *slash = strrchr(base, '/');
	if (slash != NULL)
		*slash = '\0';
	else
		base[0] = '\0';
	cJSON *root = cJSON_Parse(text), *it;
	if (!cJSON_IsObject(root))
		rv = fs_seterr("not a JSON object");
	cJSON_ArrayForEach(it, root) {
		if (rv == 0 && it->string[0] != '_')
			rv = cfg_key(&c, it, base);
	}
	if (rv == 0 && (c.aggregator[0] == '\0' || c.cert[0] == '\0' ||
	    c.ca[0] == '\0' || c.data[0] == '\0'))
		rv = fs_seterr("\"aggregator\", \"cert\", \"ca\" and \"data\" "
		    "are required");
	cJSON_Delete(root);
	free(text);
	if (rv != 0)
		return fs_preferr("config %s", path);
	*cfg = c;
	return 0;
}

/* ---- state ---------------------------------------------------------------- */

typedef struct {
	node_config cfg;
	fed_identity *id;
	fed_trust *trust;
	fed_client *cli;
	const char *cn;
	int joined;
	uint8_t session[FED_NONCE_LEN];
	char *agg_pem;               /* aggregator certificate (verified) */
	size_t agg_pem_len;
	int codec;
	int have_model;
	model_spec spec;
	model_table tab;
	uint8_t table_digest[32];
	model_net *net;
	img_case *cases;
	img_case **case_ptrs;        /* what model_train takes */
	int ncases;
	float *global, *local;
	uint32_t version;            /* version of global, UINT32_MAX = none */
} node;

static volatile sig_atomic_t node_stop;

static void
on_signal(int sig)
{
	node_stop = sig;
}

static void
nap(double s)
{
	double end = fs_now() + s;
	while (!node_stop && fs_now() < end) {
		struct timespec ts = { 0, 50 * 1000000L };
		nanosleep(&ts, NULL);
	}
}

/* Sends env, unpacks the reply. *rep is freed with fed_msg_free. */
static int
call(node *nd, Fedseg__Envelope *env, Fedseg__Envelope **rep)
{
	nng_msg *m = NULL, *r = NULL;
	int code;
	if (fed_msg_pack(env, &m) != 0)
		return -1;
	if (fed_client_call(nd->cli, m, nd->cfg.timeout_s * 1000, &r,
	    NULL) != 0)
		return -1;
	int rv = fed_msg_unpack(nng_msg_body(r), nng_msg_len(r), rep, &code);
	nng_msg_free(r);
	if (rv != 0)
		return fs_preferr("reply from %s", nd->cfg.aggregator);
	return 0;
}

/* ---- model and data --------------------------------------------------------- */

static int
load_cases(node *nd)
{
	img_dataset ds = { 0 };
	if (img_dataset_scan(nd->cfg.data, nd->spec.modalities, nd->spec.nmod,
	    &ds) != 0)
		return -1;
	int n = ds.n;
	if (nd->cfg.max_cases > 0 && n > nd->cfg.max_cases)
		n = nd->cfg.max_cases;
	if (n == 0) {
		img_dataset_free(&ds);
		return fs_seterr("%s: no cases with the model's modalities",
		    nd->cfg.data);
	}
	nd->cases = calloc((size_t)n, sizeof(img_case));
	for (int i = 0; nd->cases != NULL && i < n; i++) {
		if (img_case_load(&ds.cases[i], nd->spec.modalities,
		    nd->spec.nmod, 4, 1, &nd->cases[i]) != 0) {
			img_dataset_free(&ds);
			return -1;
		}
		nd->ncases = i + 1;
		if (nd->cases[i].label == NULL) {
			img_dataset_free(&ds);
			return fs_seterr("case %s has no label", ds.cases[i].id);
		}
	}
	img_dataset_free(&ds);
	nd->case_ptrs = calloc((size_t)n, sizeof(img_case *));
	if (nd->cases == NULL || nd->case_ptrs == NULL)
		return fs_seterr("out of memory");
	for (int i = 0; i < n; i++)
		nd->case_ptrs[i] = &nd->cases[i];
	fs_log(FS_LOG_INFO, "NODE-DATA", "%d case(s) loaded from %s",
	    nd->ncases, nd->cfg.data);
	return 0;
}

static int
model_setup(node *nd, const char *spec_json, const ProtobufCBinaryData *td)
{
	model_spec spec;
	if (model_spec_from_json(spec_json, &spec) != 0)
		return fs_preferr("aggregator's model spec");
	if (nd->have_model) {
		if (!model_spec_equal(&spec, &nd->spec))
			return fs_seterr("the aggregator changed the model spec");
		return 0;
	}
	for (int i = 0; i < nd->cfg.nmod; i++)
		if (nd->cfg.nmod != spec.nmod ||
		    nd->cfg.modalities[i] != spec.modalities[i])
			return fs_seterr("configured modalities differ from the "
			    "model's");
	nd->spec = spec;
	if (model_table_build(&spec, &nd->tab) != 0)
		return -1;
	char *tt = model_table_text(&nd->tab);
	if (tt == NULL)
		return fs_seterr("out of memory");
	fed_sha256(tt, strlen(tt), nd->table_digest);
	free(tt);
	if (td->len != 32 || memcmp(td->data, nd->table_digest, 32) != 0)
		return fs_seterr("tensor-table digest differs from the "
		    "aggregator's (different fedseg versions?)");
	nd->global = malloc(nd->tab.total * sizeof(float));
	nd->local = malloc(nd->tab.total * sizeof(float));
	if (nd->global == NULL || nd->local == NULL)
		return fs_seterr("out of memory");
	if (load_cases(nd) != 0)
		return -1;
	nd->net = model_net_create(&spec, nd->cfg.device, NULL, nd->cfg.seed);
	if (nd->net == NULL)
		return -1;
	nd->have_model = 1;
	return 0;
}

/* ---- Join ------------------------------------------------------------------ */

static int
joinack_check(node *nd, const Fedseg__JoinAck *a, const uint8_t nonce[32])
{
	char cn[FED_CN_MAX];
	uint8_t text[FED_SIGTEXT_MAX];
	if (a->session.len != FED_NONCE_LEN || a->nonce_echo.len != 32 ||
	    memcmp(a->nonce_echo.data, nonce, 32) != 0)
		return fs_seterr("JoinAck does not echo our nonce");
	if (fed_trust_verify_cert(nd->trust,
	    (const char *)a->aggregator_cert_pem.data,
	    a->aggregator_cert_pem.len, "aggregator", cn) != 0)
		return fs_preferr("aggregator certificate");
	size_t tl = fed_sigtext_joinack(text, a->session.data, nonce);
	if (fed_verify((const char *)a->aggregator_cert_pem.data,
	    a->aggregator_cert_pem.len, text, tl, a->signature.data,
	    a->signature.len) != 0)
		return fs_seterr("bad JoinAck signature");
	if (fed_codec_name((int)a->codec) == NULL)
		return fs_seterr("aggregator asks for unknown codec %u",
		    a->codec);
	free(nd->agg_pem);
	nd->agg_pem = malloc(a->aggregator_cert_pem.len + 1);
	if (nd->agg_pem == NULL)
		return fs_seterr("out of memory");
	memcpy(nd->agg_pem, a->aggregator_cert_pem.data,
	    a->aggregator_cert_pem.len);
	nd->agg_pem[a->aggregator_cert_pem.len] = '\0';
	nd->agg_pem_len = a->aggregator_cert_pem.len;
	memcpy(nd->session, a->session.data, FED_NONCE_LEN);
	nd->codec = (int)a->codec;
	fs_log(FS_LOG_INFO, "NODE-JOIN", "joined %s (aggregator %s): %u "
	    "rounds, codec %s, messages <= %llu bytes", nd->cfg.aggregator, cn,
	    a->rounds, fed_codec_name(nd->codec),
	    (unsigned long long)a->max_message_bytes);
	return model_setup(nd, a->model_spec_json, &a->table_digest);
}

/* Returns 0 joined, -1 transient failure (retry), -2 fatal. */
static int
do_join(node *nd)
{
	uint8_t nonce[32], text[FED_SIGTEXT_MAX], *sig = NULL;
	size_t sl = 0, pl = 0;
	Fedseg__Envelope *rep = NULL;
	if (fed_random(nonce, sizeof nonce) != 0)
		return -2;
	uint64_t now = fed_unix_ms();
	size_t tl = fed_sigtext_join(text, nonce, now);
	if (fed_sign(nd->id, text, tl, &sig, &sl) != 0)
		return -2;
	Fedseg__Join j = FEDSEG__JOIN__INIT;
	j.cert_pem.data = (uint8_t *)fed_identity_cert_pem(nd->id, &pl);
	j.cert_pem.len = pl;
	j.nonce = (ProtobufCBinaryData){ 32, nonce };
	j.time_unix_ms = now;
	j.signature = (ProtobufCBinaryData){ sl, sig };
	j.software = "fedseg " FS_VERSION;
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_JOIN;
	env.join = &j;
	int rv = call(nd, &env, &rep);
	free(sig);
	if (rv != 0)
		return -1;
	if (rep->body_case == FEDSEG__ENVELOPE__BODY_ERROR) {
		fs_seterr("join refused: %s", rep->error->reason);
		rv = rep->error->code == FED_ERR_AUTH ? -2 : -1;
	} else if (rep->body_case != FEDSEG__ENVELOPE__BODY_JOIN_ACK) {
		rv = fs_seterr("unexpected %s reply to Join",
		    fed_msg_kind(rep));
	} else {
		rv = joinack_check(nd, rep->join_ack, nonce) == 0 ? 0 : -2;
		nd->joined = rv == 0;
	}
	fed_msg_free(rep);
	return rv;
}

/* ---- global model ------------------------------------------------------------- */

/* Verifies and installs a signed global model (Task or Done). */
static int
global_accept(node *nd, uint32_t version, const ProtobufCBinaryData *w,
    const ProtobufCBinaryData *digest, const ProtobufCBinaryData *sig)
{
	uint8_t text[FED_SIGTEXT_MAX], d[32];
	char path[NODE_PATH_MAX + 64], dh[65], vs[16], *sh = NULL;
	if (digest->len != 32)
		return fs_seterr("model digest missing");
	size_t tl = fed_sigtext_model(text, digest->data, version + 1, version);
	if (fed_verify(nd->agg_pem, nd->agg_pem_len, text, tl, sig->data,
	    sig->len) != 0)
		return fs_seterr("global model %u: aggregator signature does "
		    "not verify", version);
	if (fed_codec_decode(w->data, w->len, nd->tab.total, nd->table_digest,
	    nd->global, NULL) != 0)
		return fs_preferr("global model %u", version);
	fed_weights_digest(nd->global, nd->tab.total, d);
	if (memcmp(d, digest->data, 32) != 0)
		return fs_seterr("global model %u: digest mismatch", version);
	fed_hex(d, 32, dh);
	snprintf(vs, sizeof vs, "%u", version);
	sh = malloc(2 * sig->len + 1);
	if (sh == NULL)
		return fs_seterr("out of memory");
	fed_hex(sig->data, sig->len, sh);
	const char *kv[] = { "fedseg.round", vs, "fedseg.model_version", vs,
		"fedseg.digest", dh, "fedseg.signature", sh,
		"fedseg.aggregator", nd->cfg.aggregator, NULL };
	int rv = fs_path(path, sizeof path, "%s/global.safetensors",
	    nd->cfg.state_dir);
	if (rv == 0)
		rv = model_weights_save(path, &nd->spec, nd->global, kv);
	free(sh);
	if (rv != 0)
		return -1;
	nd->version = version;
	fs_log(FS_LOG_INFO, "NODE-GLOBAL", "global model version %u verified "
	    "and saved (%s)", version, path);
	return 0;
}

/* ---- one round -------------------------------------------------------------- */

typedef struct {
	model_train_stats st;
	size_t bytes;
	double t0;
} round_info;

static uint64_t
cn_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h;
}

static int
train_local(node *nd, const Fedseg__Task *t, round_info *ri)
{
	model_train_opts o = model_train_opts_default();
	const Fedseg__TrainSettings *s = t->train;
	if (s != NULL) {
		o.steps = (int)s->local_steps;
		o.lr = s->lr;
		o.batch = (int)s->batch;
		o.patch = (int)s->patch;
		o.fg_share = s->fg_share;
		o.prox_mu = s->prox_mu;
		o.seed = s->seed ^ cn_hash(nd->cn) ^ nd->cfg.seed;
	}
	o.prox_ref = o.prox_mu > 0 ? nd->global : NULL;
	o.verbose = 0;
	if (model_net_set_weights(nd->net, nd->global) != 0 ||
	    model_train(nd->net, nd->case_ptrs, nd->ncases, &o, &ri->st) != 0 ||
	    model_net_get_weights(nd->net, nd->local) != 0)
		return fs_preferr("local training, round %u", t->round);
	if (nd->cfg.save_local) {
		char path[NODE_PATH_MAX + 64], rs[16];
		snprintf(rs, sizeof rs, "%u", t->round);
		const char *kv[] = { "fedseg.round", rs, "fedseg.kind",
			"local", "fedseg.node", nd->cn, NULL };
		if (fs_path(path, sizeof path, "%s/local-round-%04u.safetensors",
		    nd->cfg.state_dir, t->round) != 0 ||
		    model_weights_save(path, &nd->spec, nd->local, kv) != 0)
			return -1;
	}
	return 0;
}

static int
build_update(node *nd, const Fedseg__Task *t, const round_info *ri,
    Fedseg__Update *u, Fedseg__Metrics *m, uint8_t **payload,
    uint8_t **sig)
{
	size_t n = nd->tab.total, pl = 0, sl = 0, cl = 0;
	uint8_t text[FED_SIGTEXT_MAX];
	static uint8_t digest[32];
	for (size_t i = 0; i < n; i++)
		nd->local[i] -= nd->global[i]; /* local now holds the delta */
	fed_codec_opts co = { 0, 0, t->round };
	int codec = fed_codec_name((int)t->codec) ? (int)t->codec : nd->codec;
	if (fed_codec_encode(codec, nd->local, n, nd->table_digest, &co,
	    payload, &pl) != 0)
		return fs_preferr("encode delta");
	fed_sha256(*payload, pl, digest);
	size_t tl = fed_sigtext_update(text, digest, t->round, t->version,
	    (uint64_t)nd->ncases, nd->session);
	if (fed_sign(nd->id, text, tl, sig, &sl) != 0)
		return -1;
	m->mean_loss = ri->st.mean_loss;
	m->first_loss = ri->st.first_loss;
	m->last_loss = ri->st.last_loss;
	m->steps = (uint32_t)ri->st.steps;
	m->train_seconds = ri->st.seconds;
	u->session = (ProtobufCBinaryData){ FED_NONCE_LEN, nd->session };
	u->round = t->round;
	u->base_version = t->version;
	u->sample_count = (uint64_t)nd->ncases;
	u->payload = (ProtobufCBinaryData){ pl, *payload };
	u->payload_digest = (ProtobufCBinaryData){ 32, digest };
	u->metrics = m;
	u->cert_pem.data = (uint8_t *)fed_identity_cert_pem(nd->id, &cl);
	u->cert_pem.len = cl;
	u->signature = (ProtobufCBinaryData){ sl, *sig };
	return 0;
}

/* Returns 0 sent (accepted or not), -1 transport failure. */
static int
send_update(node *nd, const Fedseg__Task *t, round_info *ri)
{
	Fedseg__Update u = FEDSEG__UPDATE__INIT;
	Fedseg__Metrics m = FEDSEG__METRICS__INIT;
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT, *rep = NULL;
	uint8_t *payload = NULL, *sig = NULL;
	int rv = build_update(nd, t, ri, &u, &m, &payload, &sig);
	if (rv == 0) {
		ri->bytes = u.payload.len;
		env.body_case = FEDSEG__ENVELOPE__BODY_UPDATE;
		env.update = &u;
		rv = call(nd, &env, &rep);
	}
	free(payload);
	free(sig);
	if (rv != 0)
		return -1;
	if (rep->body_case == FEDSEG__ENVELOPE__BODY_UPDATE_ACK) {
		const Fedseg__UpdateAck *a = rep->update_ack;
		printf("node %s: round %u: loss %.4f (first %.4f, last %.4f), "
		    "%d steps, sent %zu bytes (%s), train %.1f s, round %.1f s, "
		    "%s%s%s\n", nd->cn, t->round, ri->st.mean_loss,
		    ri->st.first_loss, ri->st.last_loss, ri->st.steps,
		    ri->bytes, fed_codec_name((int)t->codec) ?
		    fed_codec_name((int)t->codec) : "?", ri->st.seconds,
		    fs_now() - ri->t0, a->accepted ? "accepted" : "REJECTED",
		    a->reason[0] ? ": " : "", a->reason);
		fflush(stdout);
	} else if (rep->body_case == FEDSEG__ENVELOPE__BODY_ERROR) {
		fs_log(FS_LOG_WARN, "NODE-UPDATE", "update refused: %s",
		    rep->error->reason);
		if (rep->error->code == FED_ERR_AUTH)
			nd->joined = 0;
	}
	fed_msg_free(rep);
	return 0;
}

static int
do_task(node *nd, const Fedseg__Task *t)
{
	round_info ri;
	memset(&ri, 0, sizeof ri);
	ri.t0 = fs_now();
	if (t->round != t->version + 1)
		return fs_seterr("task round %u for version %u", t->round,
		    t->version);
	if (global_accept(nd, t->version, &t->weights, &t->model_digest,
	    &t->signature) != 0)
		return -2;
	if (train_local(nd, t, &ri) != 0)
		return -2;
	return send_update(nd, t, &ri);
}

/* ---- the loop ------------------------------------------------------------------ */

enum { STEP_AGAIN = 0, STEP_DONE = 1, STEP_RETRY = -1, STEP_FATAL = -2 };

static int
step(node *nd)
{
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT, *rep = NULL;
	Fedseg__TaskRequest tr = FEDSEG__TASK_REQUEST__INIT;
	tr.session = (ProtobufCBinaryData){ FED_NONCE_LEN, nd->session };
	tr.have_version = nd->version;
	env.body_case = FEDSEG__ENVELOPE__BODY_TASK_REQUEST;
	env.task_request = &tr;
	if (call(nd, &env, &rep) != 0)
		return STEP_RETRY;
	int rv = STEP_AGAIN;
	switch (rep->body_case) {
	case FEDSEG__ENVELOPE__BODY_WAIT:
		fs_log(FS_LOG_DEBUG, "NODE-WAIT", "%s", rep->wait->reason);
		nap(rep->wait->retry_after_ms / 1000.0);
		break;
	case FEDSEG__ENVELOPE__BODY_TASK:
		rv = do_task(nd, rep->task);
		break;
	case FEDSEG__ENVELOPE__BODY_DONE:
		if (global_accept(nd, rep->done->final_version,
		    &rep->done->weights, &rep->done->model_digest,
		    &rep->done->signature) != 0)
			rv = STEP_FATAL;
		else
			rv = STEP_DONE;
		break;
	case FEDSEG__ENVELOPE__BODY_ERROR:
		fs_seterr("aggregator: %s", rep->error->reason);
		nd->joined = 0; /* e.g. the aggregator restarted: join again */
		rv = STEP_RETRY;
		break;
	default:
		rv = fs_seterr("unexpected %s reply", fed_msg_kind(rep));
		break;
	}
	fed_msg_free(rep);
	return rv;
}

static int
node_loop(node *nd)
{
	double backoff = 0.5;
	while (!node_stop) {
		int rv = nd->joined ? step(nd) : do_join(nd);
		if (rv == STEP_DONE) {
			printf("node %s: done, final global model version %u in "
			    "%s/global.safetensors\n", nd->cn, nd->version,
			    nd->cfg.state_dir);
			return 0;
		}
		if (rv == STEP_FATAL)
			return -1;
		if (rv == STEP_RETRY) {
			fs_log(FS_LOG_WARN, "NODE-RETRY", "%s; retrying in "
			    "%.1f s", fs_error(), backoff);
			nap(backoff);
			backoff = fmin(backoff * 2, nd->cfg.backoff_max_s);
			continue;
		}
		backoff = 0.5;
	}
	return 1;
}

/* ---- main ----------------------------------------------------------------------- */

static void
node_free(node *nd)
{
	fed_client_close(nd->cli);
	fed_identity_free(nd->id);
	fed_trust_free(nd->trust);
	model_net_destroy(nd->net);
	for (int i = 0; i < nd->ncases; i++)
		img_case_free(&nd->cases[i]);
	free(nd->cases);
	free(nd->case_ptrs);
	if (nd->have_model || nd->tab.t != NULL)
		model_table_free(&nd->tab);
	free(nd->global);
	free(nd->local);
	free(nd->agg_pem);
}

static int
node_start(node *nd)
{
	if (fs_mkdir_p(nd->cfg.state_dir, 0) != 0)
		return -1;
	if (cmd_threads(nd->cfg.threads) != 0)
		return fs_seterr("cannot set %d threads", nd->cfg.threads);
	nd->id = fed_identity_load(nd->cfg.cert, nd->cfg.cert);
	if (nd->id == NULL)
		return fs_preferr("identity");
	nd->cn = fed_identity_cn(nd->id);
	nd->trust = fed_trust_load(nd->cfg.ca,
	    nd->cfg.crl[0] ? nd->cfg.crl : NULL);
	if (nd->trust == NULL)
		return fs_preferr("trust");
	double days = fed_cert_days_left(nd->cfg.cert);
	if (days < 14)
		fs_log(FS_LOG_WARN, "NODE-CERT", "certificate %s expires in "
		    "%.0f days", nd->cfg.cert, days);
	fed_tls_paths tls = { nd->cfg.cert, nd->cfg.ca,
		nd->cfg.crl[0] ? nd->cfg.crl : NULL };
	nd->cli = fed_client_open(nd->cfg.aggregator, &tls,
	    nd->cfg.max_message_bytes);
	return nd->cli != NULL ? 0 : -1;
}

static void
node_usage(FILE *f)
{
	fprintf(f,
	    "usage: fedseg node --config node.json [--log-level L]\n"
	    "Runs a federation node: dials the aggregator over mutual TLS,\n"
	    "trains each round on the local cases and sends a signed delta.\n"
	    "The latest verified global model is kept in\n"
	    "<state_dir>/global.safetensors (usable by fedseg infer).\n"
	    "  --config FILE     node config (see docs/protocol.md)\n"
	    "  --log-level L     error, warn, info (default), debug\n"
	    "  --help            this text\n");
}

int
node_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL, *level = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:l:h", opts, NULL)) != -1) {
		if (c == 'c')
			config = optarg;
		else if (c == 'l')
			level = optarg;
		else if (c == 'h')
			return node_usage(stdout), 0;
		else
			return node_usage(stderr), 2;
	}
	if (config == NULL)
		return cmd_fail("node", "--config node.json is required");
	if (optind < argc)
		return cmd_fail("node", "unexpected argument '%s'", argv[optind]);
	static node nd;
	memset(&nd, 0, sizeof nd);
	nd.cfg = node_config_default();
	nd.version = UINT32_MAX;
	if (node_config_load(config, &nd.cfg) != 0)
		return cmd_fail("node", "%s", fs_error());
	fs_log_set_level(nd.cfg.log_level);
	if (level != NULL) {
		static const char *n[] = { "error", "warn", "info", "debug" };
		static const int l[] = { FS_LOG_ERR, FS_LOG_WARN, FS_LOG_INFO,
			FS_LOG_DEBUG };
		int k = -1;
		for (int i = 0; i < 4; i++)
			if (strcmp(level, n[i]) == 0)
				k = i;
		if (k < 0)
			return cmd_fail("node", "--log-level %s: "
			    "error|warn|info|debug", level);
		fs_log_set_level(l[k]);
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	int rv = node_start(&nd);
	if (rv == 0) {
		char role[FED_CN_MAX + 8];
		snprintf(role, sizeof role, "node %s", nd.cn);
		fs_log_set_role(role);
		rv = node_loop(&nd);
	}
	if (rv < 0)
		cmd_fail("node", "%s", fs_error());
	node_free(&nd);
	if (node_stop)
		return 130;
	return rv == 0 ? 0 : 1;
}
