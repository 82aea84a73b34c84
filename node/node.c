/*
 * node.c - the federation node loop (see node.h, docs/protocol.md).
 */
#include "node.h"

#include <dirent.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <unistd.h>
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
#include "ef.h"
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
	c.heartbeat_s = 20;
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
		{ "heartbeat_s", 0, 86400, 'd',
		    offsetof(node_config, heartbeat_s) },
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
	float *resid;                /* error-feedback residual (n), or NULL */
	int resid_on;                /* resid holds the residual for this round */
	uint32_t resid_from;         /* round that left it (0 = fresh, zeros) */
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
	/* no patient paths at info level (PHI): the folder only at debug */
	fs_log(FS_LOG_INFO, "NODE-DATA", "%d case(s) loaded", nd->ncases);
	fs_log(FS_LOG_DEBUG, "NODE-DATA", "cases from %s", nd->cfg.data);
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

/*
 * A trained update is kept in state_dir/pending-update.bin (durable, before
 * it is sent) until the aggregator acknowledges it:
 *   "FSPU" | u32 format 1 | SHA-256 of the rest | base model digest (32) |
 *   packed Update without session, certificate and signature.
 * A node killed after training (or mid-upload) sends this same update again
 * after its restart, signed for its new session, instead of training the
 * round a second time; one killed during training trains the round again
 * from the global model of the Task.
 */
#define PENDING_HDR 72

typedef struct {
	Fedseg__Update *u;           /* unpacked; NULL = none */
	uint8_t base_digest[32];
	int acked;
} pending;

static pending nd_pending;

static void
crash_point(const char *name)
{
	const char *e = getenv("FEDSEG_TEST_CRASH_AT");
	if (e != NULL && strcmp(e, name) == 0) {
		fs_log(FS_LOG_ERR, "NODE-CRASH", "FEDSEG_TEST_CRASH_AT=%s: "
		    "exiting", e);
		_exit(137);
	}
}

static int
pending_path(const node *nd, char *buf, size_t n)
{
	return fs_path(buf, n, "%s/pending-update.bin", nd->cfg.state_dir);
}

static void
pending_clear(node *nd)
{
	char p[NODE_PATH_MAX + 32];
	if (nd_pending.u != NULL)
		fedseg__update__free_unpacked(nd_pending.u, NULL);
	memset(&nd_pending, 0, sizeof nd_pending);
	if (pending_path(nd, p, sizeof p) == 0)
		unlink(p);
}

/* Loads state_dir/pending-update.bin if present and intact. */
static void
pending_load(node *nd)
{
	char p[NODE_PATH_MAX + 32];
	uint8_t *buf = NULL, d[32];
	size_t len = 0;
	if (pending_path(nd, p, sizeof p) != 0 ||
	    fs_read_file(p, nd->cfg.max_message_bytes, (void **)&buf, &len))
		return;
	Fedseg__Update *u = NULL;
	if (len > PENDING_HDR && memcmp(buf, "FSPU", 4) == 0 && buf[4] == 1) {
		fed_sha256(buf + 40, len - 40, d);
		if (memcmp(d, buf + 8, 32) == 0)
			u = fedseg__update__unpack(NULL, len - PENDING_HDR,
			    buf + PENDING_HDR);
	}
	if (u == NULL) {
		char to[NODE_PATH_MAX + 48];
		snprintf(to, sizeof to, "%s.corrupt", p);
		rename(p, to);
		fs_log(FS_LOG_WARN, "NODE-PENDING", "%s is torn or altered; set "
		    "aside as %s (the round will be trained again)", p, to);
	} else {
		nd_pending.u = u;
		memcpy(nd_pending.base_digest, buf + 40, 32);
		fs_log(FS_LOG_INFO, "NODE-PENDING", "found the trained update "
		    "of round %u (base version %u) from before a restart",
		    u->round, u->base_version);
	}
	free(buf);
}

static int
pending_save(node *nd, Fedseg__Update *u, const uint8_t base_digest[32])
{
	char p[NODE_PATH_MAX + 32];
	size_t n = fedseg__update__get_packed_size(u);
	uint8_t *buf = malloc(PENDING_HDR + n);
	if (buf == NULL)
		return fs_seterr("out of memory");
	memcpy(buf, "FSPU", 4);
	buf[4] = 1;
	buf[5] = buf[6] = buf[7] = 0;
	memcpy(buf + 40, base_digest, 32);
	fedseg__update__pack(u, buf + PENDING_HDR);
	fed_sha256(buf + 40, PENDING_HDR - 40 + n, buf + 8);
	int rv = pending_path(nd, p, sizeof p);
	if (rv == 0)
		rv = fs_write_atomic(p, buf, PENDING_HDR + n, 0600);
	if (rv == 0) {
		if (nd_pending.u != NULL)
			fedseg__update__free_unpacked(nd_pending.u, NULL);
		nd_pending.u = fedseg__update__unpack(NULL, n, buf + PENDING_HDR);
		memcpy(nd_pending.base_digest, base_digest, 32);
		nd_pending.acked = 0;
		if (nd_pending.u == NULL)
			rv = fs_seterr("out of memory");
	}
	free(buf);
	return rv;
}

/* ---- heartbeats while training ------------------------------------------------ */

/* A second connection that sends TaskRequest (with the version being
 * trained on) every heartbeat_s while the node trains and uploads, so the
 * aggregator's session timeout does not drop a node that is merely busy. */
typedef struct {
	node *nd;
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop, running;
	uint32_t version;
} heartbeat;

static heartbeat nd_hb = { .mu = PTHREAD_MUTEX_INITIALIZER,
	.cv = PTHREAD_COND_INITIALIZER };
static fed_client *hb_cli;

static void *
hb_main(void *arg)
{
	heartbeat *h = arg;
	node *nd = h->nd;
	pthread_mutex_lock(&h->mu);
	while (!h->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		double s = nd->cfg.heartbeat_s;
		ts.tv_sec += (time_t)s;
		ts.tv_nsec += (long)((s - (double)(time_t)s) * 1e9);
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&h->cv, &h->mu, &ts);
		if (h->stop)
			break;
		pthread_mutex_unlock(&h->mu);
		Fedseg__TaskRequest tr = FEDSEG__TASK_REQUEST__INIT;
		tr.session = (ProtobufCBinaryData){ FED_NONCE_LEN, nd->session };
		tr.have_version = h->version;
		Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
		env.body_case = FEDSEG__ENVELOPE__BODY_TASK_REQUEST;
		env.task_request = &tr;
		nng_msg *m = NULL, *r = NULL;
		if (fed_msg_pack(&env, &m) == 0 &&
		    fed_client_call(hb_cli, m, 10000, &r, NULL) == 0)
			nng_msg_free(r);
		fs_log(FS_LOG_DEBUG, "NODE-HEARTBEAT", "heartbeat sent");
		pthread_mutex_lock(&h->mu);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

static void
hb_start(node *nd, uint32_t version)
{
	if (nd->cfg.heartbeat_s <= 0)
		return;
	if (hb_cli == NULL) {
		fed_tls_paths tls = { nd->cfg.cert, nd->cfg.ca,
			nd->cfg.crl[0] ? nd->cfg.crl : NULL };
		hb_cli = fed_client_open(nd->cfg.aggregator, &tls, 1 << 20);
		if (hb_cli == NULL)
			return;
	}
	nd_hb.nd = nd;
	nd_hb.stop = 0;
	nd_hb.version = version;
	if (pthread_create(&nd_hb.th, NULL, hb_main, &nd_hb) == 0)
		nd_hb.running = 1;
}

static void
hb_stop(void)
{
	if (!nd_hb.running)
		return;
	pthread_mutex_lock(&nd_hb.mu);
	nd_hb.stop = 1;
	pthread_cond_signal(&nd_hb.cv);
	pthread_mutex_unlock(&nd_hb.mu);
	pthread_join(nd_hb.th, NULL);
	nd_hb.running = 0;
}

/* ---- error feedback ------------------------------------------------------------ */

/*
 * With topk (fed_ef_wanted) a node keeps the part of its deltas it has not
 * sent yet, the residual e (fed/ef.h): it sends C(delta + e) and keeps
 * e = (delta + e) - decoded. e lives in state_dir/ef-residual-NNNN.bin,
 * NNNN = the round whose update left it, written durably BEFORE that
 * round's pending update, so that:
 *  - a round trains on the newest residual of an earlier round (not its
 *    own: a file of this round or a later one is what a crash left between
 *    the two writes, or an update that was refused; it is discarded);
 *  - a node killed during training (or after it) loads the same residual
 *    again after its restart; one whose update is pending re-sends it and
 *    its residual is already on disk;
 *  - a file of another size or tensor table, or torn, is discarded with a
 *    log line and the round starts from a zero residual.
 * Once round r is acknowledged, files older than r - 1 are removed (r - 1
 * is kept one round, so that what was sent in r = delta + e(r-1) - e(r)
 * can be checked from the files). A residual left while the aggregator now
 * asks for a lossless codec is flushed into the next update (e becomes 0).
 */
static int
ef_path(const node *nd, uint32_t round, char *buf, size_t cap)
{
	return fs_path(buf, cap, "%s/ef-residual-%04u.bin", nd->cfg.state_dir,
	    round);
}

/* Rounds of the residual files in state_dir, for each calls fn. */
static void
ef_each(node *nd, void (*fn)(node *, uint32_t, void *), void *arg)
{
	DIR *d = opendir(nd->cfg.state_dir);
	struct dirent *de;
	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		/* exactly ef-residual-<digits>.bin (not temp files) */
		const char *s = de->d_name, *pre = "ef-residual-";
		size_t l = strlen(s), pl = strlen(pre), nd_ = 0;
		if (l <= pl + 4 || strncmp(s, pre, pl) != 0 ||
		    strcmp(s + l - 4, ".bin") != 0)
			continue;
		unsigned long r = 0;
		for (const char *c = s + pl; c < s + l - 4; c++, nd_++)
			r = *c >= '0' && *c <= '9' && nd_ < 9 ?
			    r * 10 + (unsigned long)(*c - '0') : ULONG_MAX;
		if (r <= UINT32_MAX)
			fn(nd, (uint32_t)r, arg);
	}
	closedir(d);
}

static void
ef_unlink(node *nd, uint32_t r, const char *why)
{
	char p[NODE_PATH_MAX + 48];
	if (ef_path(nd, r, p, sizeof p) == 0 && unlink(p) == 0)
		fs_log(FS_LOG_INFO, "NODE-EF", "residual of round %u discarded "
		    "(%s)", r, why);
}

typedef struct {
	uint32_t round, best;
	int found;
} ef_pick;

static void
ef_pick_fn(node *nd, uint32_t r, void *arg)
{
	ef_pick *k = arg;
	if (r >= k->round)
		ef_unlink(nd, r, "not older than the round being trained: left "
		    "by an update that was never sent or was refused");
	else if (!k->found || r > k->best)
		k->best = r, k->found = 1;
}

static void
ef_old_fn(node *nd, uint32_t r, void *arg)
{
	uint32_t acked = *(uint32_t *)arg;
	if ((uint64_t)r + 1 < acked || acked == UINT32_MAX) {
		char p[NODE_PATH_MAX + 48];
		if (ef_path(nd, r, p, sizeof p) == 0)
			unlink(p);
	}
}

/* Sets nd->resid for training round `round`: the newest valid residual
 * of an earlier round, or zeros. Only when the codec wants error feedback
 * or a residual is left over. */
static int
ef_prepare(node *nd, uint32_t round, int codec)
{
	size_t n = nd->tab.total;
	char p[NODE_PATH_MAX + 48];
	ef_pick k = { round, 0, 0 };
	nd->resid_on = 0;
	ef_each(nd, ef_pick_fn, &k);
	if (!k.found && !fed_ef_wanted(codec))
		return 0;
	if (nd->resid == NULL && (nd->resid = malloc(n * sizeof(float))) ==
	    NULL)
		return fs_seterr("out of memory (residual)");
	memset(nd->resid, 0, n * sizeof(float));
	nd->resid_on = 1;
	nd->resid_from = 0;
	if (!k.found) {
		fs_log(FS_LOG_INFO, "NODE-EF", "round %u: no residual yet, error "
		    "feedback starts from zero", round);
		return 0;
	}
	fed_ef_meta m;
	if (ef_path(nd, k.best, p, sizeof p) != 0)
		return -1;
	if (fed_ef_load(p, n, nd->table_digest, &m, nd->resid) != 0) {
		fs_log(FS_LOG_WARN, "NODE-EF", "round %u: %s; discarded, error "
		    "feedback starts from zero", round, fs_error());
		memset(nd->resid, 0, n * sizeof(float));
		unlink(p);
		return 0;
	}
	double e2 = 0;
	for (size_t i = 0; i < n; i++)
		e2 += (double)nd->resid[i] * nd->resid[i];
	if (e2 == 0 && !fed_ef_wanted(codec)) {
		/* flushed into an update of a lossless codec: done with it */
		uint32_t all = UINT32_MAX;
		ef_each(nd, ef_old_fn, &all);
		nd->resid_on = 0;
		return 0;
	}
	nd->resid_from = k.best;
	fs_log(FS_LOG_INFO, "NODE-EF", "round %u: residual of round %u loaded "
	    "from %s (|e| %.4g)", round, k.best, p, sqrt(e2));
	return 0;
}

/* Round `acked` was acknowledged: residuals older than acked - 1 go. */
static void
ef_acked(node *nd, uint32_t acked)
{
	ef_each(nd, ef_old_fn, &acked);
}

/* ---- training ------------------------------------------------------------------ */

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
	fs_log(FS_LOG_INFO, "NODE-TRAIN", "round %u: training %d step(s) on "
	    "global version %u (prox_mu %g)", t->round, o.steps, t->version,
	    o.prox_mu);
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

/* Encodes local - global and keeps it as the pending update (durable). */
static int
make_pending(node *nd, const Fedseg__Task *t, const round_info *ri)
{
	size_t n = nd->tab.total, pl = 0;
	uint8_t digest[32], *payload = NULL;
	for (size_t i = 0; i < n; i++)
		nd->local[i] -= nd->global[i]; /* local now holds the delta */
	fed_codec_opts co = { 0, 0, t->round, t->topk_fraction };
	int codec = fed_codec_name((int)t->codec) ? (int)t->codec : nd->codec;
	if (nd->resid_on) {
		/* error feedback: send C(delta + e), keep what was not sent;
		 * the residual is durable before the update is */
		char p[NODE_PATH_MAX + 48];
		if (fed_ef_encode(codec, nd->local, nd->resid, n,
		    nd->table_digest, &co, &payload, &pl) != 0)
			return fs_preferr("encode delta");
		fed_sha256(payload, pl, digest);
		fed_ef_meta em = { codec, t->round, n, { 0 }, { 0 } };
		memcpy(em.table_digest, nd->table_digest, 32);
		memcpy(em.payload_digest, digest, 32);
		double e2 = 0;
		for (size_t i = 0; i < n; i++)
			e2 += (double)nd->resid[i] * nd->resid[i];
		if (ef_path(nd, t->round, p, sizeof p) != 0 ||
		    fed_ef_save(p, &em, nd->resid) != 0) {
			free(payload);
			return fs_preferr("residual");
		}
		char from[32] = "none yet";
		if (nd->resid_from > 0)
			snprintf(from, sizeof from, "round %u", nd->resid_from);
		fs_log(FS_LOG_INFO, "NODE-EF", "round %u: %s with error "
		    "feedback (residual added: %s), residual |e| %.4g kept in "
		    "%s", t->round, fed_codec_name(codec), from, sqrt(e2), p);
	} else {
		if (fed_codec_encode(codec, nd->local, n, nd->table_digest, &co,
		    &payload, &pl) != 0)
			return fs_preferr("encode delta");
		fed_sha256(payload, pl, digest);
	}
	Fedseg__Update u = FEDSEG__UPDATE__INIT;
	Fedseg__Metrics m = FEDSEG__METRICS__INIT;
	m.mean_loss = ri->st.mean_loss;
	m.first_loss = ri->st.first_loss;
	m.last_loss = ri->st.last_loss;
	m.steps = (uint32_t)ri->st.steps;
	m.train_seconds = ri->st.seconds;
	u.round = t->round;
	u.base_version = t->version;
	u.sample_count = (uint64_t)nd->ncases;
	u.payload = (ProtobufCBinaryData){ pl, payload };
	u.payload_digest = (ProtobufCBinaryData){ 32, digest };
	u.metrics = &m;
	int rv = pending_save(nd, &u, t->model_digest.data);
	free(payload);
	return rv;
}

static double jitter(void);

/* Asks the aggregator for an upload slot before sending update u (docs/
 * protocol.md, "Uploads"): UploadRequest until an UploadGrant comes (token
 * into tok, *tokl), honouring Wait's retry hint (with some jitter) while
 * the heartbeat thread keeps the session alive. Returns 0 granted (*tokl
 * = 0: an aggregator that predates grants; the Update goes without one),
 * 1 answered with the UpdateAck the Update would get (*ack, no upload
 * needed: late, duplicate, refused), -1 transport failure or error. */
static int
ask_upload(node *nd, const Fedseg__Update *u, uint8_t tok[16], size_t *tokl,
    Fedseg__Envelope **ack)
{
	*tokl = 0;
	while (!node_stop) {
		Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT, *rep = NULL;
		Fedseg__UploadRequest ur = FEDSEG__UPLOAD_REQUEST__INIT;
		ur.session = (ProtobufCBinaryData){ FED_NONCE_LEN, nd->session };
		ur.round = u->round;
		ur.base_version = u->base_version;
		ur.payload_bytes = u->payload.len;
		env.body_case = FEDSEG__ENVELOPE__BODY_UPLOAD_REQUEST;
		env.upload_request = &ur;
		if (call(nd, &env, &rep) != 0)
			return -1;
		switch (rep->body_case) {
		case FEDSEG__ENVELOPE__BODY_UPLOAD_GRANT: {
			const Fedseg__UploadGrant *g = rep->upload_grant;
			size_t l = g->token.len < 16 ? g->token.len : 16;
			memcpy(tok, g->token.data, l);
			*tokl = l;
			fs_log(FS_LOG_DEBUG, "NODE-GRANT", "round %u: upload slot "
			    "granted for %u ms", u->round, g->expires_in_ms);
			fed_msg_free(rep);
			return 0;
		}
		case FEDSEG__ENVELOPE__BODY_WAIT: {
			double s = rep->wait->retry_after_ms / 1000.0;
			fs_log(FS_LOG_DEBUG, "NODE-WAIT", "upload: %s",
			    rep->wait->reason);
			fed_msg_free(rep);
			nap(s * (1.0 + 0.25 * jitter()));
			continue;
		}
		case FEDSEG__ENVELOPE__BODY_UPDATE_ACK:
			*ack = rep;
			return 1;
		case FEDSEG__ENVELOPE__BODY_ERROR:
			if (rep->error->code == FED_ERR_REQUEST &&
			    strstr(rep->error->reason, "unexpected") != NULL) {
				/* an aggregator without upload grants */
				fed_msg_free(rep);
				return 0;
			}
			if (rep->error->code == FED_ERR_AUTH)
				nd->joined = 0;
			fs_seterr("upload request refused: %s",
			    rep->error->reason);
			fed_msg_free(rep);
			return -1;
		default:
			fs_seterr("unexpected %s reply to an upload request",
			    fed_msg_kind(rep));
			fed_msg_free(rep);
			return -1;
		}
	}
	return fs_seterr("stopped");
}

/* Asks for an upload slot, then signs the pending update for the current
 * session and sends it. Returns 0 answered (accepted or not), -1 transport
 * failure (the update stays pending and is sent again). */
static int
send_pending(node *nd, const round_info *ri)
{
	Fedseg__Update *u = nd_pending.u;
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT, *rep = NULL;
	uint8_t text[FED_SIGTEXT_MAX], *sig = NULL, tok[16];
	size_t sl = 0, cl = 0, tokl = 0;
	int g = ask_upload(nd, u, tok, &tokl, &rep);
	if (g < 0)
		return -1;
	if (g == 0) {
		size_t tl = fed_sigtext_update(text, u->payload_digest.data,
		    u->round, u->base_version, u->sample_count, nd->session);
		if (fed_sign(nd->id, text, tl, &sig, &sl) != 0)
			return -1;
		u->session = (ProtobufCBinaryData){ FED_NONCE_LEN, nd->session };
		u->cert_pem.data = (uint8_t *)fed_identity_cert_pem(nd->id, &cl);
		u->cert_pem.len = cl;
		u->signature = (ProtobufCBinaryData){ sl, sig };
		u->grant = (ProtobufCBinaryData){ tokl, tokl ? tok : NULL };
		env.body_case = FEDSEG__ENVELOPE__BODY_UPDATE;
		env.update = u;
		if (getenv("FEDSEG_TEST_CRASH_AT") != NULL &&
		    strcmp(getenv("FEDSEG_TEST_CRASH_AT"),
		    "node_mid_upload") == 0) {
			/* test only: start the upload, die before its reply */
			nng_msg *m = NULL, *r = NULL;
			if (fed_msg_pack(&env, &m) == 0)
				fed_client_call(nd->cli, m, 2, &r, NULL);
			crash_point("node_mid_upload");
		}
		int rv = call(nd, &env, &rep);
		/* the strings in *u point at our buffers: detach before any
		 * free */
		u->session = (ProtobufCBinaryData){ 0, NULL };
		u->cert_pem = (ProtobufCBinaryData){ 0, NULL };
		u->signature = (ProtobufCBinaryData){ 0, NULL };
		u->grant = (ProtobufCBinaryData){ 0, NULL };
		free(sig);
		if (rv != 0)
			return -1;
	}
	if (rep->body_case == FEDSEG__ENVELOPE__BODY_UPDATE_ACK) {
		const Fedseg__UpdateAck *a = rep->update_ack;
		const Fedseg__Metrics *m = u->metrics;
		printf("node %s: round %u: loss %.4f (first %.4f, last %.4f), "
		    "%u steps, sent %zu bytes (%s), train %.1f s, round %.1f s, "
		    "%s%s%s\n", nd->cn, u->round, m ? m->mean_loss : 0,
		    m ? m->first_loss : 0, m ? m->last_loss : 0,
		    m ? m->steps : 0, u->payload.len,
		    fed_codec_name(u->payload.len > 6 ? u->payload.data[6] : 0)
		    ? fed_codec_name(u->payload.data[6]) : "?",
		    m ? m->train_seconds : 0, fs_now() - ri->t0,
		    a->accepted ? "accepted" : "REJECTED",
		    a->reason[0] ? ": " : "", a->reason);
		fflush(stdout);
		if (strncmp(a->reason, "busy", 4) == 0 ||
		    strstr(a->reason, "cannot store") != NULL ||
		    strstr(a->reason, "unknown session") != NULL) {
			/* not decided: keep it and send it again */
			if (strstr(a->reason, "unknown session") != NULL)
				nd->joined = 0;
			/* a points into rep: format before freeing it */
			fs_seterr("update not taken yet: %s", a->reason);
			fed_msg_free(rep);
			return -1;
		}
		if (a->accepted) {
			nd_pending.acked = 1;
			ef_acked(nd, u->round);
		} else {
			/* refused for good: retrain; its residual assumed it
			 * was counted, so it goes too */
			uint32_t r = u->round;
			pending_clear(nd);
			ef_unlink(nd, r, "its update was refused");
		}
	} else if (rep->body_case == FEDSEG__ENVELOPE__BODY_ERROR) {
		fs_log(FS_LOG_WARN, "NODE-UPDATE", "update refused: %s",
		    rep->error->reason);
		if (rep->error->code == FED_ERR_AUTH)
			nd->joined = 0;
		fs_seterr("update refused: %s", rep->error->reason);
		fed_msg_free(rep);
		return -1;
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
	hb_start(nd, t->version);
	int rv = 0;
	if (nd_pending.u != NULL && nd_pending.u->round == t->round &&
	    nd_pending.u->base_version == t->version &&
	    memcmp(nd_pending.base_digest, t->model_digest.data, 32) == 0) {
		fs_log(FS_LOG_INFO, "NODE-RESUME", "round %u: this update was "
		    "trained before; sending it again instead of retraining",
		    t->round);
	} else {
		if (nd_pending.u != NULL)
			pending_clear(nd); /* of an older round */
		int codec = fed_codec_name((int)t->codec) ? (int)t->codec :
		    nd->codec;
		if (ef_prepare(nd, t->round, codec) != 0 ||
		    train_local(nd, t, &ri) != 0 ||
		    make_pending(nd, t, &ri) != 0)
			rv = -2;
	}
	if (rv == 0) {
		crash_point("node_before_send");
		rv = send_pending(nd, &ri);
	}
	hb_stop();
	return rv;
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

static double
jitter(void)
{
	uint8_t b[4];
	if (fed_random(b, 4) != 0)
		return 0.5;
	return (double)((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
	    (uint32_t)b[2] << 8 | b[3]) / 4294967296.0;
}

static int
node_loop(node *nd)
{
	double backoff = 0.5;
	while (!node_stop) {
		int rv;
		if (!nd->joined) {
			rv = do_join(nd);
		} else if (nd_pending.u != NULL && !nd_pending.acked &&
		    nd->version == nd_pending.u->base_version) {
			/* an update whose answer we never got: send it again */
			round_info ri = { .t0 = fs_now() };
			hb_start(nd, nd->version);
			rv = send_pending(nd, &ri) == 0 ? STEP_AGAIN :
			    STEP_RETRY;
			hb_stop();
		} else {
			rv = step(nd);
		}
		if (rv == STEP_DONE) {
			printf("node %s: done, final global model version %u in "
			    "%s/global.safetensors\n", nd->cn, nd->version,
			    nd->cfg.state_dir);
			return 0;
		}
		if (rv == STEP_FATAL)
			return -1;
		if (rv == STEP_RETRY) {
			/* exponential back-off with full jitter in [b/2, b] */
			double pause = backoff * (0.5 + 0.5 * jitter());
			fs_log(FS_LOG_WARN, "NODE-RETRY", "%s; retrying in "
			    "%.1f s", fs_error(), pause);
			nap(pause);
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
	hb_stop();
	fed_client_close(hb_cli);
	hb_cli = NULL;
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
	free(nd->resid);
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
	if (nd->cli == NULL)
		return -1;
	pending_load(nd);
	return 0;
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
