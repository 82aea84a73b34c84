/*
 * agg_round.c - the round state machine: initial / restored global model,
 * opening rounds, closing them (FedAvg), durable models and the ledger.
 *
 *   WAITING --(>= min_nodes joined)--> TRAINING
 *   TRAINING --(all selected answered, or deadline passed with
 *               >= min_updates)--> CLOSING
 *   CLOSING --(model + signature + ledger line durable)--> WAITING | DONE
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>

#include "agg_impl.h"
#include "base.h"
#include "codec.h"

/* ---- files ------------------------------------------------------------- */

static int
model_path(const agg *a, uint32_t version, const char *ext, char *buf,
    size_t n)
{
	return fs_path(buf, n, "%s/models/round-%04u.%s", a->cfg.state_dir,
	    version, ext);
}

int
agg_task_prepare(agg *a, const float *w, const uint8_t digest[32],
    uint32_t version, uint8_t **payload, size_t *len, uint8_t **sig,
    size_t *siglen)
{
	uint8_t text[FED_SIGTEXT_MAX];
	size_t tl = fed_sigtext_model(text, digest, version + 1, version);
	if (fed_codec_encode(FED_CODEC_F32, w, a->n, a->table_digest, NULL,
	    payload, len) != 0)
		return -1;
	if (fed_sign(a->id, text, tl, sig, siglen) != 0) {
		free(*payload);
		*payload = NULL;
		return -1;
	}
	return 0;
}

/*
 * The global model is not a copy of its own: a->global points at the body
 * of the f32 Task payload (little-endian float32 after the 84-byte header:
 * on a little-endian host those bytes are the floats, 4-aligned since
 * malloc aligns the payload to 16). A round's new model is combined
 * straight into the body of the next payload, which is then sealed (header
 * + body SHA-256) in place.
 */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the aggregator aliases the global model with its f32 payload body: little-endian hosts only"
#endif

static float *
payload_body(uint8_t *p)
{
	return (float *)(void *)(p + FED_CODEC_HEADER_LEN);
}

/* An unsealed f32 payload for n floats; its body is payload_body(p). */
static uint8_t *
payload_alloc(agg *a, size_t *len)
{
	*len = FED_CODEC_HEADER_LEN + a->n * sizeof(float);
	uint8_t *p = malloc(*len + 1);
	if (p == NULL)
		fs_seterr("out of memory (model payload of %zu floats)", a->n);
	return p;
}

/* Writes the header of payload p (body written in place), checks the body
 * (finite) and signs (digest, version + 1, version). */
static int
payload_seal(agg *a, uint8_t *p, size_t len, const uint8_t digest[32],
    uint32_t version, uint8_t **sig, size_t *siglen)
{
	uint8_t *h = NULL, text[FED_SIGTEXT_MAX];
	size_t hl = 0;
	if (fed_codec_wrap(FED_CODEC_F32, 0, a->n, a->table_digest, NULL, 0,
	    &h, &hl) != 0)
		return -1;
	memcpy(p, h, FED_CODEC_HEADER_LEN);
	free(h);
	/* header offset 52: SHA-256 of the body (codec.h) */
	fed_sha256(p + FED_CODEC_HEADER_LEN, len - FED_CODEC_HEADER_LEN,
	    p + 52);
	if (fed_codec_check(p, len, a->n, a->table_digest,
	    FED_CODEC_BODY_AUTHENTICATED, NULL, NULL) != 0)
		return fs_preferr("new global model");
	size_t tl = fed_sigtext_model(text, digest, version + 1, version);
	return fed_sign(a->id, text, tl, sig, siglen);
}

/* After agg_task_prepare at start: the global becomes the payload's
 * body and its own copy goes. */
static void
global_alias(agg *a)
{
	free(a->global);
	a->global = payload_body(a->task_payload);
}

/* Writes models/round-NNNN.safetensors and .sig durably. */
static int
save_model(agg *a, const float *w, uint32_t version, const uint8_t d[32],
    const uint8_t parent[32], const uint8_t *sig, size_t siglen,
    const char *contributors)
{
	char path[AGG_PATH_MAX + 64], dh[65], ph[65], rs[16], *sh = NULL;
	char strat[256];
	agg_strategy_text(a, strat, sizeof strat);
	fed_hex(d, 32, dh);
	fed_hex(parent, 32, ph);
	snprintf(rs, sizeof rs, "%u", version);
	sh = malloc(2 * siglen + 1);
	if (sh == NULL)
		return fs_seterr("out of memory");
	fed_hex(sig, siglen, sh);
	const char *kv[] = { "fedseg.round", rs, "fedseg.model_version", rs,
		"fedseg.digest", dh, "fedseg.parent_digest", ph,
		"fedseg.strategy", strat, "fedseg.contributors",
		contributors, "fedseg.signature", sh, "fedseg.signer",
		fed_identity_cn(a->id), NULL };
	int rv = model_path(a, version, "safetensors", path, sizeof path);
	if (rv == 0)
		rv = model_weights_save(path, &a->cfg.spec, w, kv);
	if (rv == 0)
		rv = model_path(a, version, "sig", path, sizeof path);
	if (rv == 0)
		rv = fs_write_atomic(path, sig, siglen, 0644);
	free(sh);
	return rv;
}

static void
iso_now(char out[32])
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static cJSON *
ledger_entry(agg *a, uint32_t version, const uint8_t parent[32],
    const uint8_t d[32], const uint8_t *sig, size_t siglen)
{
	char hex[256], when[32];
	cJSON *o = cJSON_CreateObject();
	iso_now(when);
	cJSON_AddNumberToObject(o, "round", version);
	cJSON_AddStringToObject(o, "time", when);
	cJSON_AddStringToObject(o, "event", version == 0 ? "init" : "round");
	fed_hex(parent, 32, hex);
	cJSON_AddStringToObject(o, "parent_digest", hex);
	fed_hex(d, 32, hex);
	cJSON_AddStringToObject(o, "model_digest", hex);
	snprintf(hex, sizeof hex, "models/round-%04u.safetensors", version);
	cJSON_AddStringToObject(o, "model_file", hex);
	agg_strategy_text(a, hex, sizeof hex);
	cJSON_AddStringToObject(o, "strategy", hex);
	cJSON *g = cJSON_AddObjectToObject(o, "aggregation");
	cJSON_AddStringToObject(g, "rule", a->cfg.strategy);
	if (a->rule == AGG_RULE_TRIMMED)
		cJSON_AddNumberToObject(g, "trim_fraction",
		    a->cfg.trim_fraction);
	cJSON_AddNumberToObject(g, "clip_norm", a->cfg.clip_norm);
	cJSON_AddStringToObject(g, "server_optimizer",
	    a->cfg.server_optimizer);
	cJSON_AddNumberToObject(g, "server_lr", a->cfg.server_lr);
	/* FedProx is applied by the nodes, with the mu this config sends in
	 * every Task: recorded here so the ledger says how a model was made */
	cJSON_AddNumberToObject(g, "prox_mu", a->cfg.train_prox_mu);
	if (a->opt == AGG_OPT_FEDAVGM)
		cJSON_AddNumberToObject(g, "server_momentum",
		    a->cfg.server_momentum);
	if (a->opt == AGG_OPT_FEDADAM || a->opt == AGG_OPT_FEDYOGI) {
		cJSON_AddNumberToObject(g, "beta1", a->cfg.beta1);
		cJSON_AddNumberToObject(g, "beta2", a->cfg.beta2);
		cJSON_AddNumberToObject(g, "tau", a->cfg.tau);
	}
	if (a->opt != AGG_OPT_NONE) {
		snprintf(hex, sizeof hex, "server/opt-%04u.bin", version);
		cJSON_AddStringToObject(o, "server_state_file", hex);
		fed_hex(a->opt_digest, 32, hex);
		cJSON_AddStringToObject(o, "server_state_digest", hex);
	}
	if (siglen * 2 < sizeof hex) {
		fed_hex(sig, siglen, hex);
		cJSON_AddStringToObject(o, "signature", hex);
	}
	return o;
}

static void
ledger_contributors(agg *a, cJSON *o)
{
	cJSON *arr = cJSON_AddArrayToObject(o, "contributors");
	cJSON *names = cJSON_AddArrayToObject(o, "nodes");
	double loss = 0, samples = 0, bytes_in = 0;
	for (int i = 0; i < a->ncontrib; i++) {
		const agg_contrib *c = &a->contrib[i];
		cJSON *e = cJSON_CreateObject();
		cJSON_AddStringToObject(e, "cn", c->cn);
		cJSON_AddNumberToObject(e, "samples", (double)c->samples);
		cJSON_AddStringToObject(e, "update_digest", c->digest);
		cJSON_AddNumberToObject(e, "update_bytes", (double)c->bytes);
		cJSON_AddNumberToObject(e, "norm", c->norm);
		cJSON_AddNumberToObject(e, "clip_scale", c->scale);
		cJSON_AddNumberToObject(e, "mean_loss", c->mean_loss);
		cJSON_AddNumberToObject(e, "steps", c->steps);
		cJSON_AddNumberToObject(e, "train_seconds", c->seconds);
		cJSON_AddItemToArray(arr, e);
		cJSON_AddItemToArray(names, cJSON_CreateString(c->cn));
		bytes_in += (double)c->bytes;
		loss += (double)c->samples * c->mean_loss;
		samples += (double)c->samples;
	}
	cJSON_AddNumberToObject(o, "total_samples", samples);
	cJSON_AddNumberToObject(o, "mean_loss", samples > 0 ? loss / samples : 0);
	cJSON *m = cJSON_AddObjectToObject(o, "metrics");
	cJSON_AddNumberToObject(m, "mean_loss", samples > 0 ? loss / samples : 0);
	cJSON_AddNumberToObject(o, "bytes_in", bytes_in);
	cJSON_AddNumberToObject(o, "bytes_out", a->bytes_out);
	cJSON_AddStringToObject(o, "codec", fed_codec_name(a->cfg.codec));
	if (a->cfg.codec == FED_CODEC_TOPK)
		cJSON_AddNumberToObject(o, "topk_fraction",
		    a->cfg.topk_fraction);
}

/* ---- start: initial or restored global ---------------------------------- */

static int
h_missing(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return 1;
	fclose(f);
	return 0;
}

static void
set_aside_model(const char *path, const char *why)
{
	char to[2 * AGG_PATH_MAX + 16];
	snprintf(to, sizeof to, "%s.corrupt", path);
	if (rename(path, to) == 0)
		fs_log(FS_LOG_ERR, "AGG-CORRUPT", "%s: %s; set aside as %s "
		    "(not loaded)", path, why, to);
}

static int
restore(agg *a, const cJSON *last)
{
	const cJSON *r = cJSON_GetObjectItem(last, "round");
	const cJSON *f = cJSON_GetObjectItem(last, "model_file");
	const cJSON *d = cJSON_GetObjectItem(last, "model_digest");
	char path[2 * AGG_PATH_MAX], hex[65];
	model_spec spec;
	float *w = NULL;
	if (!cJSON_IsNumber(r) || !cJSON_IsString(f) || !cJSON_IsString(d))
		return fs_seterr("ledger: last line lacks round/model_file");
	if (fs_path(path, sizeof path, "%s/%s", a->cfg.state_dir,
	    f->valuestring) != 0)
		return -1;
	if (model_weights_load(path, &spec, &w, NULL) != 0) {
		if (!h_missing(path))
			set_aside_model(path, fs_error());
		return fs_preferr("restore");
	}
	if (!model_spec_equal(&spec, &a->cfg.spec)) {
		free(w);
		return fs_seterr("restore %s: model spec differs from config",
		    path);
	}
	fed_weights_digest(w, a->n, a->digest);
	fed_hex(a->digest, 32, hex);
	if (strcmp(hex, d->valuestring) != 0) {
		free(w);
		set_aside_model(path, "digest does not match the ledger");
		return fs_seterr("restore %s: digest does not match the "
		    "ledger; set aside as .corrupt, restore it from a backup",
		    path);
	}
	a->global = w;
	a->version = (uint32_t)r->valueint;
	if (a->opt != AGG_OPT_NONE) {
		const cJSON *sd = cJSON_GetObjectItem(last,
		    "server_state_digest");
		const cJSON *ag = cJSON_GetObjectItem(last, "aggregation");
		const cJSON *so = ag ? cJSON_GetObjectItem(ag,
		    "server_optimizer") : NULL;
		if (cJSON_IsString(sd) && cJSON_IsString(so) &&
		    strcmp(so->valuestring, a->cfg.server_optimizer) == 0) {
			if (agg_opt_load(a, a->version, sd->valuestring) != 0)
				return -1;
			fs_log(FS_LOG_INFO, "AGG-RESTORE", "server optimiser "
			    "%s state of version %u restored",
			    a->cfg.server_optimizer, a->version);
		} else if (a->version > 0) {
			fs_log(FS_LOG_WARN, "AGG-RESTORE", "no %s state in the "
			    "ledger for version %u: starting it from zero",
			    a->cfg.server_optimizer, a->version);
		}
	}
	fs_log(FS_LOG_INFO, "AGG-RESTORE", "restored global version %u from "
	    "%s", a->version, path);
	return 0;
}

static int
initial(agg *a)
{
	uint8_t zero[32] = { 0 };
	if (a->cfg.initial_weights[0] != '\0') {
		model_spec spec;
		if (model_weights_load(a->cfg.initial_weights, &spec,
		    &a->global, NULL) != 0)
			return -1;
		if (!model_spec_equal(&spec, &a->cfg.spec))
			return fs_seterr("%s: model spec differs from config",
			    a->cfg.initial_weights);
	} else {
		a->global = malloc(a->n * sizeof(float));
		if (a->global == NULL)
			return fs_seterr("out of memory");
		model_init_weights(&a->tab, a->cfg.seed, a->global);
	}
	a->version = 0;
	fed_weights_digest(a->global, a->n, a->digest);
	if (agg_opt_save(a, 0) != 0)
		return -1;
	if (agg_task_prepare(a, a->global, a->digest, 0, &a->task_payload,
	    &a->task_len, &a->task_sig, &a->task_siglen) != 0)
		return -1;
	global_alias(a);
	if (save_model(a, a->global, 0, a->digest, zero, a->task_sig,
	    a->task_siglen, "") != 0)
		return -1;
	cJSON *o = ledger_entry(a, 0, zero, a->digest, a->task_sig,
	    a->task_siglen);
	cJSON_AddStringToObject(o, "source", a->cfg.initial_weights[0] ?
	    a->cfg.initial_weights : "seed");
	cJSON_AddNumberToObject(o, "seed", (double)a->cfg.seed);
	int rv = fed_ledger_append(a->ledger, o);
	cJSON_Delete(o);
	return rv;
}

int
agg_state_init(agg *a)
{
	const cJSON *last = fed_ledger_last(a->ledger);
	if (agg_strategy_parse(a) != 0)
		return -1;
	if (last != NULL ? restore(a, last) : initial(a))
		return -1;
	if (a->task_payload == NULL) {
		if (agg_task_prepare(a, a->global, a->digest, a->version,
		    &a->task_payload, &a->task_len, &a->task_sig,
		    &a->task_siglen))
			return -1;
		global_alias(a);
	}
	a->acc = calloc(a->n, sizeof(float));
	if (a->acc == NULL)
		return fs_seterr("out of memory (accumulator of %zu)", a->n);
	a->round = a->version + 1;
	a->phase = a->version >= (uint32_t)a->cfg.rounds ? AGG_DONE :
	    AGG_WAITING;
	if (agg_spool_restore(a) != 0)
		return -1;
	if (a->phase == AGG_DONE)
		a->done_at = fs_now();
	return 0;
}

void
agg_state_free(agg *a)
{
	if (a->task_payload == NULL)
		free(a->global); /* not yet the payload's body */
	free(a->task_payload);
	free(a->task_sig);
	free(a->acc);
	free(a->contrib);
	for (int i = 0; i < a->nnodes; i++)
		free(a->nodes[i].cert_pem);
	free(a->nodes);
	free(a->opt_m);
	free(a->opt_v);
}

/* ---- rounds -------------------------------------------------------------- */

/* Joined nodes with a live session, plus those whose update of the open
 * round is already counted (restored from the spool after a restart). */
static int
participants(const agg *a)
{
	int k = 0;
	for (int i = 0; i < a->nnodes; i++)
		k += a->nodes[i].has_session ||
		    a->nodes[i].submitted == a->round;
	return k;
}

/* Contributions of the round (acc, contrib) are reset when the previous
 * round closes, not here: after a restart the spool has refilled them. */
static void
round_open(agg *a)
{
	a->nselected = 0;
	for (int i = 0; i < a->nnodes; i++) {
		agg_node *n = &a->nodes[i];
		n->selected = n->has_session || n->submitted == a->round;
		a->nselected += n->selected;
	}
	a->bytes_out = 0;
	a->deadline = fs_now() + a->cfg.round_deadline_s;
	a->deadline_warned = 0;
	a->phase = AGG_TRAINING;
	fs_log(FS_LOG_INFO, "AGG-ROUND", "round %u open: %d node(s) selected, "
	    "%d update(s) already in, deadline %.0f s", a->round, a->nselected,
	    a->ncontrib, a->cfg.round_deadline_s);
}

int
agg_session_end(agg *a, agg_node *n)
{
	n->has_session = 0;
	agg_upload_drop(a, n);
	int drop = a->phase == AGG_TRAINING && n->selected &&
	    n->submitted != a->round;
	if (drop) {
		n->selected = 0;
		a->nselected--;
	}
	return drop;
}

/* Sessions silent for node_timeout_s expire; a selected node that has not
 * answered leaves the round (it may join again and get the task). */
static void
expire_sessions(agg *a)
{
	double now = fs_now();
	if (a->cfg.node_timeout_s <= 0)
		return;
	for (int i = 0; i < a->nnodes; i++) {
		agg_node *n = &a->nodes[i];
		if (!n->has_session || now - n->last_seen <= a->cfg.node_timeout_s)
			continue;
		int drop = agg_session_end(a, n);
		fs_log(FS_LOG_WARN, "AGG-EXPIRE", "node %s silent for %.0f s: "
		    "session expired%s", n->cn, now - n->last_seen, drop ?
		    ", dropped from this round" : "");
	}
}

static int
round_ready(agg *a)
{
	if (a->ncontrib >= a->nselected && a->ncontrib > 0 &&
	    a->ncontrib >= a->cfg.min_updates)
		return 1;
	if (fs_now() < a->deadline)
		return 0;
	if (a->ncontrib >= a->cfg.min_updates && a->ncontrib > 0)
		return 1;
	if (!a->deadline_warned) {
		a->deadline_warned = 1;
		fs_log(FS_LOG_WARN, "AGG-DEADLINE", "round %u: deadline passed "
		    "with %d update(s), %d needed; waiting for more", a->round,
		    a->ncontrib, a->cfg.min_updates);
	}
	return 0;
}

static char *
contributors_text(const agg *a)
{
	size_t cap = 1;
	for (int i = 0; i < a->ncontrib; i++)
		cap += strlen(a->contrib[i].cn) + 1;
	char *s = calloc(1, cap);
	for (int i = 0; s != NULL && i < a->ncontrib; i++) {
		if (i > 0)
			strcat(s, ",");
		strcat(s, a->contrib[i].cn);
	}
	return s;
}

/* Called in CLOSING without the lock: handlers leave acc / contrib alone
 * in that phase. Publishes the new global under the lock at the end. */
static int
round_close(agg *a)
{
	uint32_t v = a->round;
	uint8_t d[32], *sig = NULL;
	size_t pll = 0, sl = 0;
	/* the new model is written straight into its Task payload's body:
	 * old global (= old payload) + accumulator + new payload */
	uint8_t *pl = payload_alloc(a, &pll);
	float *w = pl != NULL ? payload_body(pl) : NULL;
	char *who = contributors_text(a);
	cJSON *o = NULL;
	int rv = -1;
	if (w == NULL || who == NULL) {
		fs_seterr("out of memory");
		goto out;
	}
	agg_crash_point("before_model");
	if (agg_combine(a, w) != 0)
		goto out;
	fed_weights_digest(w, a->n, d);
	if (payload_seal(a, pl, pll, d, v, &sig, &sl) != 0 ||
	    save_model(a, w, v, d, a->digest, sig, sl, who) != 0 ||
	    agg_opt_save(a, v) != 0)
		goto out;
	agg_crash_point("after_model");
	o = ledger_entry(a, v, a->digest, d, sig, sl);
	ledger_contributors(a, o);
	if (fed_ledger_append(a->ledger, o) != 0)
		goto out;
	agg_crash_point("after_ledger");
	agg_spool_drop(a, v);
	fs_log(FS_LOG_INFO, "AGG-ROUND", "round %u closed: %d update(s) from "
	    "%s, %.0f samples, mean loss %.4f", v, a->ncontrib, who, a->wsum,
	    cJSON_GetObjectItem(o, "mean_loss")->valuedouble);
	pthread_mutex_lock(&a->mu);
	free(a->task_payload); /* and with it the old global */
	free(a->task_sig);
	a->global = w;
	w = NULL;
	memcpy(a->digest, d, 32);
	a->task_payload = pl;
	a->task_len = pll;
	a->task_sig = sig;
	a->task_siglen = sl;
	pl = sig = NULL;
	a->version = v;
	a->round = v + 1;
	a->ncontrib = 0;
	a->wsum = 0; /* the next first update overwrites acc */
	for (int i = 0; i < a->nnodes; i++)
		a->nodes[i].selected = 0;
	a->phase = v >= (uint32_t)a->cfg.rounds ? AGG_DONE : AGG_WAITING;
	if (a->phase == AGG_DONE) {
		a->done_at = fs_now();
		fs_log(FS_LOG_INFO, "AGG-DONE", "all %d rounds done; final "
		    "model version %u", a->cfg.rounds, v);
	}
	pthread_mutex_unlock(&a->mu);
	rv = 0;
out:
	cJSON_Delete(o);
	free(pl);
	free(sig);
	free(who);
	return rv;
}

static int
all_done_sent(const agg *a)
{
	for (int i = 0; i < a->nnodes; i++)
		if (!a->nodes[i].got_done && a->nodes[i].has_session)
			return 0;
	return 1;
}

/* One step under the lock; returns 1 when a round must be closed. */
static int
round_step(agg *a)
{
	expire_sessions(a);
	if (a->phase == AGG_WAITING && participants(a) >= a->cfg.min_nodes)
		round_open(a);
	if (a->phase == AGG_TRAINING && round_ready(a)) {
		a->phase = AGG_CLOSING;
		return 1;
	}
	if (a->phase == AGG_DONE && a->exit_when_done &&
	    (all_done_sent(a) || fs_now() - a->done_at > 30.0))
		a->stop = 1;
	return 0;
}

void *
agg_round_thread(void *arg)
{
	agg *a = arg;
	pthread_mutex_lock(&a->mu);
	while (!a->stop) {
		if (round_step(a)) {
			pthread_mutex_unlock(&a->mu);
			int rv = round_close(a);
			pthread_mutex_lock(&a->mu);
			if (rv != 0) {
				/* cannot write durable state: stop rather
				 * than hand out a model that is not on disk */
				fs_log(FS_LOG_ERR, "AGG-CLOSE", "round %u: %s; "
				    "stopping", a->round, fs_error());
				a->stop = 2;
			}
			continue;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&a->cv, &a->mu, &ts);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}
