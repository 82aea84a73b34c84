/* bench_fed.c - federation benchmarks against the real fedseg-aggregator
 * process over real mutual TLS on 127.0.0.1:
 *
 *  (4) round: a round's non-training time for a ~20 MB model (base 30,
 *      depth 4: 4.93 M floats) with 3 protocol clients that skip training
 *      (they verify the signed global model, then encode, hash, sign and
 *      send a synthetic f32 delta at once). Per round: from the first
 *      client receiving Task r to the first client receiving Task r+1 (or
 *      Done), i.e. 3 downloads, 3 uploads, the aggregator's checks,
 *      decode, FedAvg, model + signature + ledger written durably. Against
 *      the bytes moved in that round / raw nng TLS throughput, measured in
 *      the same run with the same certificates and TLS config: a req/rep
 *      echo of a payload of the Task's size (plain rep0 echo server,
 *      fed_client as the requester), taken before and after the rounds.
 *  (6) scale: 10, 30, 100 protocol clients (threads, one TLS connection
 *      each, no libtorch) against one aggregator, tiny model, 3 rounds:
 *      completes, the aggregator's peak RSS (VmHWM, /proc), per-round time
 *      per node against the 10-node case.
 *  (3') the aggregator's real peak RSS with 16 clients sending 16 updates
 *      of ~20 M floats (base 36, depth 5: 19.8 M) in one round, against
 *      3 x model + 64 MiB.
 *
 * The protocol clients follow tests/aggregator/fed_hostile_test.c (Join,
 * TaskRequest, signed Update); the PKI is made with certs/certs.h.
 *
 * usage: bench_fed --bin BUILD_DIR [--quick] [--repeats N]
 *                  [--only round|scale|rss] [--keep]
 * Prints flat JSON lines (bench_util.h); progress on stderr. */
#define _GNU_SOURCE
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>

#include "base.h"
#include "bench_util.h"
#include "certs.h"
#include "codec.h"
#include "crypto.h"
#include "harness.h"
#include "model.h"
#include "msg.h"
#include "transport.h"

#define MAXR 64
#define CALL_MS 600000

static char T[PATH_MAX];        /* work dir (temp) */
static char PKI[PATH_MAX + 16]; /* T/pki */
static const char *BIN;
static int ncerts;              /* node-NNN certificates issued so far */

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void msg(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "bench_fed: ");
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void pki_file(char *out, size_t cap, const char *file)
{
	snprintf(out, cap, "%.3900s/%.60s", PKI, file);
}

static int ensure_pki(int nodes)
{
	if (ncerts == 0) {
		if (certs_init(PKI, "bench", 30) != 0 ||
		    certs_issue(PKI, "aggregator", "aggregator", NULL, NULL, 30) != 0)
			return -1;
	}
	for (; ncerts < nodes; ncerts++) {
		char cn[32];
		snprintf(cn, sizeof cn, "node-%03d", ncerts);
		if (certs_issue(PKI, "node", cn, NULL, NULL, 30) != 0)
			return -1;
	}
	return 0;
}

/* ---- one federation run -------------------------------------------------- */

typedef struct {
	/* settings */
	const char *name;
	int base, depth, nodes, rounds, wait_ms, verify, shared;
	int xfers; /* max_model_transfers written to agg.json, -1 = default */
	/* derived */
	size_t nw;
	uint8_t table[32];
	char url[64], dir[PATH_MAX + 64];
	pid_t agg;
	uint8_t *spl; /* shared payload (shared = 1) and its digest */
	size_t spl_len;
	uint8_t spl_digest[32];
	/* aggregator memory, sampled */
	volatile long hwm_kb, rss_kb;
	volatile int sampling;
	double st[8192];  /* VmRSS samples: time, KiB */
	long srss[8192];
	int ns;
	/* results per round r (1..rounds) */
	double first_task[MAXR + 2], last_task[MAXR + 2], last_ack[MAXR + 2];
	double bytes[MAXR + 2];
	double cli_verify_s, cli_send_prep_s; /* client CPU, summed */
	double wall;
} fedrun;

typedef struct {
	fedrun *R;
	int idx;
	char cn[32];
	fed_client *cli;
	fed_identity *id;
	uint8_t session[32];
	char *agg_pem;
	size_t agg_pem_len;
	float *delta, *global;
	double t_task[MAXR + 2], t_ack[MAXR + 2], t_done;
	double bytes[MAXR + 2];
	double verify_s, prep_s;
	int ok;
	char err[256];
} client;

/* One request/reply; counts the bytes of both into *bytes when not NULL. */
static Fedseg__Envelope *call(client *c, Fedseg__Envelope *env, size_t *bytes)
{
	nng_msg *m = NULL, *r = NULL;
	Fedseg__Envelope *rep = NULL;
	int code;
	if (fed_msg_pack(env, &m) != 0)
		return NULL;
	size_t out = nng_msg_len(m);
	if (fed_client_call(c->cli, m, CALL_MS, &r, NULL) != 0) {
		snprintf(c->err, sizeof c->err, "%s", fs_error());
		return NULL;
	}
	if (bytes)
		*bytes = out + nng_msg_len(r);
	if (fed_msg_unpack(nng_msg_body(r), nng_msg_len(r), &rep, &code))
		rep = NULL;
	nng_msg_free(r);
	return rep;
}

static int join(client *c)
{
	uint8_t nonce[32], text[FED_SIGTEXT_MAX], *sig = NULL;
	size_t sl = 0, pl = 0;
	fed_random(nonce, 32);
	uint64_t t = fed_unix_ms();
	size_t tl = fed_sigtext_join(text, nonce, t);
	if (fed_sign(c->id, text, tl, &sig, &sl) != 0)
		return -1;
	Fedseg__Join j = FEDSEG__JOIN__INIT;
	j.cert_pem.data = (uint8_t *)fed_identity_cert_pem(c->id, &pl);
	j.cert_pem.len = pl;
	j.nonce = (ProtobufCBinaryData){32, nonce};
	j.time_unix_ms = t;
	j.signature = (ProtobufCBinaryData){sl, sig};
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_JOIN;
	env.join = &j;
	Fedseg__Envelope *r = call(c, &env, NULL);
	free(sig);
	int ok = r && r->body_case == FEDSEG__ENVELOPE__BODY_JOIN_ACK &&
	    r->join_ack->session.len == 32;
	if (ok) {
		const Fedseg__JoinAck *a = r->join_ack;
		memcpy(c->session, a->session.data, 32);
		tl = fed_sigtext_joinack(text, a->session.data, nonce);
		c->agg_pem = malloc(a->aggregator_cert_pem.len + 1);
		memcpy(c->agg_pem, a->aggregator_cert_pem.data,
		    a->aggregator_cert_pem.len);
		c->agg_pem[a->aggregator_cert_pem.len] = 0;
		c->agg_pem_len = a->aggregator_cert_pem.len;
		if (fed_verify(c->agg_pem, c->agg_pem_len, text, tl,
		    a->signature.data, a->signature.len) != 0) {
			snprintf(c->err, sizeof c->err, "JoinAck signature");
			ok = 0;
		}
	} else if (r && r->body_case == FEDSEG__ENVELOPE__BODY_ERROR) {
		snprintf(c->err, sizeof c->err, "join: %s", r->error->reason);
	}
	fed_msg_free(r);
	return ok ? 0 : -1;
}

/* What a real node does with a global model before using it: payload
 * checks + decode, digest of the decoded weights, the aggregator's
 * signature over (digest, version + 1, version). */
static int verify_model(client *c, const ProtobufCBinaryData *w,
    const ProtobufCBinaryData *digest, const ProtobufCBinaryData *sig,
    uint32_t version)
{
	fedrun *R = c->R;
	uint8_t d[32], text[FED_SIGTEXT_MAX];
	if (fed_codec_decode(w->data, w->len, R->nw, R->table, c->global,
	    NULL) != 0)
		return -1;
	fed_weights_digest(c->global, R->nw, d);
	if (digest->len != 32 || memcmp(d, digest->data, 32) != 0)
		return fs_seterr("model digest mismatch");
	size_t tl = fed_sigtext_model(text, d, version + 1, version);
	if (fed_verify(c->agg_pem, c->agg_pem_len, text, tl, sig->data,
	    sig->len) != 0)
		return fs_seterr("model signature does not verify");
	return 0;
}

/* UploadRequest until granted (token into tok); 0 granted, -1 refused. */
static int ask_grant(client *c, uint32_t round, uint32_t version, size_t pn,
    uint8_t tok[16], size_t *tokl)
{
	for (int tries = 0; tries < 100000; tries++) {
		Fedseg__UploadRequest ur = FEDSEG__UPLOAD_REQUEST__INIT;
		ur.session = (ProtobufCBinaryData){32, c->session};
		ur.round = round;
		ur.base_version = version;
		ur.payload_bytes = pn;
		Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
		env.body_case = FEDSEG__ENVELOPE__BODY_UPLOAD_REQUEST;
		env.upload_request = &ur;
		Fedseg__Envelope *r = call(c, &env, NULL);
		if (r && r->body_case == FEDSEG__ENVELOPE__BODY_UPLOAD_GRANT &&
		    r->upload_grant->token.len == 16) {
			memcpy(tok, r->upload_grant->token.data, 16);
			*tokl = 16;
			fed_msg_free(r);
			return 0;
		}
		if (r && r->body_case == FEDSEG__ENVELOPE__BODY_WAIT) {
			usleep(r->wait->retry_after_ms * 1000u);
			fed_msg_free(r);
			continue;
		}
		if (r)
			snprintf(c->err, sizeof c->err, "upload request answered "
			    "%s", fed_msg_kind(r));
		fed_msg_free(r);
		return -1;
	}
	return -1;
}

/* Encode (f32), hash, sign, ask for an upload slot, send; 0 when
 * acknowledged as accepted. */
static int send_update(client *c, uint32_t round, uint32_t version,
    size_t *bytes)
{
	uint8_t tok[16];
	size_t tokl = 0;
	fedrun *R = c->R;
	uint8_t digest[32], text[FED_SIGTEXT_MAX], *pl = NULL, *sig = NULL;
	size_t pn = 0, sl = 0, cl = 0;
	double t0 = now_s();
	if (R->shared) {
		pl = R->spl;
		pn = R->spl_len;
		memcpy(digest, R->spl_digest, 32);
	} else {
		if (fed_codec_encode(FED_CODEC_F32, c->delta, R->nw, R->table,
		    NULL, &pl, &pn) != 0)
			return -1;
		fed_sha256(pl, pn, digest);
	}
	uint64_t samples = (uint64_t)c->idx % 7 + 1;
	size_t tl = fed_sigtext_update(text, digest, round, version, samples,
	    c->session);
	fed_sign(c->id, text, tl, &sig, &sl);
	Fedseg__Update u = FEDSEG__UPDATE__INIT;
	Fedseg__Metrics m = FEDSEG__METRICS__INIT;
	m.mean_loss = 0.5;
	m.steps = 1;
	u.session = (ProtobufCBinaryData){32, c->session};
	u.round = round;
	u.base_version = version;
	u.sample_count = samples;
	u.payload = (ProtobufCBinaryData){pn, pl};
	u.payload_digest = (ProtobufCBinaryData){32, digest};
	u.metrics = &m;
	u.cert_pem.data = (uint8_t *)fed_identity_cert_pem(c->id, &cl);
	u.cert_pem.len = cl;
	u.signature = (ProtobufCBinaryData){sl, sig};
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_UPDATE;
	env.update = &u;
	c->prep_s += now_s() - t0; /* packing is inside call() */
	Fedseg__Envelope *r = NULL;
	if (ask_grant(c, round, version, pn, tok, &tokl) == 0) {
		u.grant = (ProtobufCBinaryData){tokl, tok};
		r = call(c, &env, bytes);
	}
	if (!R->shared)
		free(pl);
	free(sig);
	int ok = r && r->body_case == FEDSEG__ENVELOPE__BODY_UPDATE_ACK &&
	    r->update_ack->accepted;
	if (!ok && r && r->body_case == FEDSEG__ENVELOPE__BODY_UPDATE_ACK)
		snprintf(c->err, sizeof c->err, "update refused: %s",
		    r->update_ack->reason);
	else if (!ok && r)
		snprintf(c->err, sizeof c->err, "update answered %s",
		    fed_msg_kind(r));
	fed_msg_free(r);
	return ok ? 0 : -1;
}

static void *client_main(void *arg)
{
	client *c = arg;
	fedrun *R = c->R;
	char pem[PATH_MAX + 64], ca[PATH_MAX + 64], f[64];
	snprintf(f, sizeof f, "%s.pem", c->cn);
	pki_file(pem, sizeof pem, f);
	pki_file(ca, sizeof ca, "ca.crt");
	fed_tls_paths tls = {pem, ca, NULL};
	c->id = fed_identity_load(pem, pem);
	c->cli = c->id ? fed_client_open(R->url, &tls, 0) : NULL;
	if (c->cli == NULL) {
		snprintf(c->err, sizeof c->err, "open: %s", fs_error());
		return NULL;
	}
	double t0 = now_s();
	while (join(c) != 0) {
		if (now_s() - t0 > 60) {
			if (!c->err[0])
				snprintf(c->err, sizeof c->err, "no JoinAck");
			return NULL;
		}
		usleep(100000);
	}
	c->err[0] = 0;
	if (R->verify || !R->shared) {
		c->global = malloc(R->nw * sizeof(float));
		c->delta = malloc(R->nw * sizeof(float));
		for (size_t i = 0; i < R->nw; i++)
			c->delta[i] = 1e-4f * (float)((int)((i * 7 + (size_t)c->idx) % 13) - 6);
	}
	for (;;) {
		Fedseg__TaskRequest tr = FEDSEG__TASK_REQUEST__INIT;
		tr.session = (ProtobufCBinaryData){32, c->session};
		Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
		env.body_case = FEDSEG__ENVELOPE__BODY_TASK_REQUEST;
		env.task_request = &tr;
		size_t b = 0;
		Fedseg__Envelope *r = call(c, &env, &b);
		double t = now_s();
		if (r == NULL) {
			if (!c->err[0])
				snprintf(c->err, sizeof c->err, "no reply");
			return NULL;
		}
		if (r->body_case == FEDSEG__ENVELOPE__BODY_WAIT) {
			unsigned ms = r->wait->retry_after_ms;
			if (ms > (unsigned)R->wait_ms)
				ms = (unsigned)R->wait_ms;
			fed_msg_free(r);
			usleep(ms * 1000u);
			continue;
		}
		if (r->body_case == FEDSEG__ENVELOPE__BODY_TASK &&
		    r->task->round >= 1 && r->task->round <= MAXR) {
			uint32_t round = r->task->round, v = r->task->version;
			c->t_task[round] = t;
			c->bytes[round] += (double)b;
			if (R->verify) {
				double v0 = now_s();
				if (verify_model(c, &r->task->weights,
				    &r->task->model_digest, &r->task->signature,
				    v) != 0) {
					snprintf(c->err, sizeof c->err, "task "
					    "model: %s", fs_error());
					fed_msg_free(r);
					return NULL;
				}
				c->verify_s += now_s() - v0;
			}
			fed_msg_free(r);
			if (send_update(c, round, v, &b) != 0) {
				if (!c->err[0])
					snprintf(c->err, sizeof c->err,
					    "update: %s", fs_error());
				return NULL;
			}
			c->t_ack[round] = now_s();
			c->bytes[round] += (double)b;
			continue;
		}
		if (r->body_case == FEDSEG__ENVELOPE__BODY_DONE) {
			c->t_done = t;
			int bad = R->verify && verify_model(c, &r->done->weights,
			    &r->done->model_digest, &r->done->signature,
			    r->done->final_version) != 0;
			if (bad)
				snprintf(c->err, sizeof c->err, "final model: %s",
				    fs_error());
			else if (r->done->final_version != (uint32_t)R->rounds)
				snprintf(c->err, sizeof c->err, "Done at "
				    "version %u", r->done->final_version);
			else
				c->ok = 1;
			fed_msg_free(r);
			return NULL;
		}
		snprintf(c->err, sizeof c->err, "unexpected %s%s%s",
		    fed_msg_kind(r), r->body_case == FEDSEG__ENVELOPE__BODY_ERROR ?
		    ": " : "", r->body_case == FEDSEG__ENVELOPE__BODY_ERROR ?
		    r->error->reason : "");
		fed_msg_free(r);
		return NULL;
	}
}

static long proc_kb(pid_t pid, const char *key)
{
	char p[64], line[256];
	long v = -1;
	size_t kl = strlen(key);
	snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
	FILE *f = fopen(p, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f))
		if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
			v = atol(line + kl + 1);
			break;
		}
	fclose(f);
	return v;
}

/* Samples the aggregator's VmHWM (monotone: the last read is the peak). */
static void *sampler(void *arg)
{
	fedrun *R = arg;
	while (R->sampling) {
		long h = proc_kb(R->agg, "VmHWM"), r = proc_kb(R->agg, "VmRSS");
		if (h > R->hwm_kb)
			R->hwm_kb = h;
		if (r > R->rss_kb)
			R->rss_kb = r;
		if (R->ns < 8192) {
			R->st[R->ns] = now_s();
			R->srss[R->ns++] = r;
		}
		usleep(20000);
	}
	return NULL;
}

static int model_table_of(fedrun *R)
{
	model_spec s = model_spec_default();
	model_table t;
	s.base = R->base;
	s.depth = R->depth;
	if (model_table_build(&s, &t) != 0)
		return -1;
	R->nw = t.total;
	char *tt = model_table_text(&t);
	fed_sha256(tt, strlen(tt), R->table);
	free(tt);
	model_table_free(&t);
	return 0;
}

static int XFERS = -1; /* --model-transfers */

static int write_config(fedrun *R)
{
	char p[PATH_MAX + 96], cfg[16384], xf[64] = "";
	if (R->xfers >= 0)
		snprintf(xf, sizeof xf, " \"max_model_transfers\": %d,\n",
		    R->xfers);
	int patch = 8 << R->depth; /* a multiple of 2^(depth-1) */
	snprintf(cfg, sizeof cfg,
	    "{\"listen\": \"%s\", \"cert\": \"%s/aggregator.pem\",\n"
	    " \"ca\": \"%s/ca.crt\", \"crl\": \"%s/crl.pem\",\n"
	    " \"state_dir\": \"state\", \"model\": {\"base\": %d, \"depth\": %d},\n"
	    " \"rounds\": %d, \"min_nodes\": %d, \"min_updates\": %d,\n"
	    " \"round_deadline_s\": 600, \"codec\": \"f32\",\n"
	    " \"max_message_bytes\": %zu, \"wait_ms\": %d,\n"
	    " \"rate_limit_per_s\": 0, \"node_timeout_s\": 0,\n%s"
	    " \"train\": {\"steps\": 1, \"batch\": 1, \"patch\": %d}}\n",
	    R->url, PKI, PKI, PKI, R->base, R->depth, R->rounds, R->nodes,
	    R->nodes, R->nw * 4 * 2 + (16u << 20), R->wait_ms, xf, patch);
	snprintf(p, sizeof p, "%s/agg.json", R->dir);
	return h_write(p, cfg);
}

/* Starts the aggregator and the clients, waits for all; fills R. */
static int fed_run(fedrun *R)
{
	char cfg[PATH_MAX + 96], log[PATH_MAX + 96], bin[PATH_MAX + 64];
	int rv = -1;
	if (R->rounds > MAXR || ensure_pki(R->nodes) != 0 ||
	    model_table_of(R) != 0)
		return -1;
	snprintf(R->dir, sizeof R->dir, "%s/%s", T, R->name);
	if (fs_mkdir_p(R->dir, 1) != 0)
		return -1;
	snprintf(R->url, sizeof R->url, "tls+tcp://127.0.0.1:%d", h_free_port());
	if (write_config(R) != 0)
		return -1;
	if (R->shared) {
		float *d = malloc(R->nw * sizeof(float));
		for (size_t i = 0; i < R->nw; i++)
			d[i] = 1e-4f * (float)((int)(i % 13) - 6);
		int e = fed_codec_encode(FED_CODEC_F32, d, R->nw, R->table, NULL,
		    &R->spl, &R->spl_len);
		free(d);
		if (e != 0)
			return -1;
		fed_sha256(R->spl, R->spl_len, R->spl_digest);
	}
	snprintf(bin, sizeof bin, "%s/aggregator/fedseg-aggregator", BIN);
	snprintf(cfg, sizeof cfg, "%s/agg.json", R->dir);
	snprintf(log, sizeof log, "%s/aggregator.log", R->dir);
	/* Not --exit-when-done: with a 20 MB model the aggregator exited
	 * before its last Done reply had left (fed_server_stop closes the
	 * socket with the reply still queued), and that client waited for its
	 * timeout. Stopped with SIGTERM once every client holds Done. */
	char *argv[] = {bin, "--config", cfg, NULL};
	client *cs = calloc((size_t)R->nodes, sizeof(client));
	pthread_t *th = calloc((size_t)R->nodes, sizeof(pthread_t)), smp;
	double t0 = now_s();
	R->agg = h_spawn(argv, log);
	if (R->agg <= 0 || cs == NULL || th == NULL)
		goto out;
	R->sampling = 1;
	pthread_create(&smp, NULL, sampler, R);
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setstacksize(&at, 256 << 10);
	for (int i = 0; i < R->nodes; i++) {
		cs[i].R = R;
		cs[i].idx = i;
		snprintf(cs[i].cn, sizeof cs[i].cn, "node-%03d", i);
		pthread_create(&th[i], &at, client_main, &cs[i]);
	}
	pthread_attr_destroy(&at);
	for (int i = 0; i < R->nodes; i++)
		pthread_join(th[i], NULL);
	R->wall = now_s() - t0;
	R->sampling = 0;
	pthread_join(smp, NULL);
	long h = proc_kb(R->agg, "VmHWM");
	if (h > R->hwm_kb)
		R->hwm_kb = h;
	kill(R->agg, SIGTERM);
	int st = h_wait(R->agg, 30);
	int bad = 0;
	for (int i = 0; i < R->nodes; i++)
		if (!cs[i].ok) {
			if (bad++ < 3)
				msg("%s: %s: %s", R->name, cs[i].cn, cs[i].err);
		}
	if (st != 0)
		msg("%s: aggregator exit status %d after SIGTERM", R->name, st);
	if (bad || st != 0) {
		char cmd[PATH_MAX + 128];
		snprintf(cmd, sizeof cmd, "tail -n 15 '%s' >&2", log);
		if (system(cmd) != 0)
			msg("no aggregator log");
		goto out;
	}
	for (int r = 1; r <= R->rounds; r++) {
		R->first_task[r] = 1e30;
		R->last_task[r] = R->last_ack[r] = 0;
		R->bytes[r] = 0;
	}
	R->first_task[R->rounds + 1] = 1e30;
	for (int i = 0; i < R->nodes; i++) {
		client *c = &cs[i];
		for (int r = 1; r <= R->rounds; r++) {
			R->first_task[r] = fmin(R->first_task[r], c->t_task[r]);
			R->last_task[r] = fmax(R->last_task[r], c->t_task[r]);
			R->last_ack[r] = fmax(R->last_ack[r], c->t_ack[r]);
			R->bytes[r] += c->bytes[r];
		}
		R->first_task[R->rounds + 1] = fmin(R->first_task[R->rounds + 1],
		    c->t_done);
		R->cli_verify_s += c->verify_s;
		R->cli_send_prep_s += c->prep_s;
	}
	rv = 0;
out:
	if (rv != 0 && R->agg > 0)
		h_stop(R->agg);
	for (int i = 0; cs && i < R->nodes; i++) {
		fed_client_close(cs[i].cli);
		fed_identity_free(cs[i].id);
		free(cs[i].agg_pem);
		free(cs[i].global);
		free(cs[i].delta);
	}
	free(cs);
	free(th);
	free(R->spl);
	R->spl = NULL;
	return rv;
}

/* Round r's time: first Task r received -> first Task r+1 (or Done). */
static double round_time(const fedrun *R, int r)
{
	return R->first_task[r + 1] - R->first_task[r];
}

/* ---- raw nng TLS throughput: req/rep echo ----------------------------------- */

#define ECHO_CTX 4

/* One rep0 context echoing requests back (aio API: nng 1.5). */
static void *echo_loop(void *arg)
{
	nng_socket *s = arg;
	nng_ctx ctx;
	nng_aio *aio;
	if (nng_ctx_open(&ctx, *s) != 0 || nng_aio_alloc(&aio, NULL, NULL) != 0)
		return NULL;
	for (;;) {
		nng_ctx_recv(ctx, aio);
		nng_aio_wait(aio);
		if (nng_aio_result(aio) != 0)
			break;
		nng_ctx_send(ctx, aio); /* the received message goes back */
		nng_aio_wait(aio);
		if (nng_aio_result(aio) != 0) {
			nng_msg_free(nng_aio_get_msg(aio));
			nng_aio_set_msg(aio, NULL);
			if (nng_aio_result(aio) == NNG_ECLOSED)
				break;
		}
	}
	nng_aio_free(aio);
	return NULL;
}

typedef struct {
	fed_client *c;
	nng_msg *proto;
	int reps;
	pthread_barrier_t *bar;
	double t[64];
	int rv;
} echo_cli;

static void *echo_client(void *arg)
{
	echo_cli *e = arg;
	e->rv = -1;
	for (int k = -1; k < e->reps; k++) { /* k = -1: handshake, warm-up */
		nng_msg *m = NULL, *r = NULL;
		if (k == 0 && e->bar)
			pthread_barrier_wait(e->bar);
		if (nng_msg_dup(&m, e->proto) != 0)
			return NULL;
		double t0 = now_s();
		if (fed_client_call(e->c, m, CALL_MS, &r, NULL) != 0)
			return NULL;
		double t = now_s() - t0;
		size_t got = nng_msg_len(r);
		nng_msg_free(r);
		if (got != nng_msg_len(e->proto))
			return NULL;
		if (k >= 0)
			e->t[k] = t;
	}
	e->rv = 0;
	return NULL;
}

/* Echoes `size` bytes over tls+tcp with the aggregator's and the nodes'
 * certificates (fed_tls_config: the transport's own TLS setup; fed_client
 * as the requester; a rep0 socket with ECHO_CTX contexts as the server).
 * streams = 1: appends one MB/s figure per echo (2 x size / s); streams
 * > 1: that many clients at once, appends one aggregate MB/s figure
 * (streams x reps x 2 x size / wall time of the batch). */
static int echo_bench(size_t size, int reps, int streams, double *mbs,
    int *nm)
{
	char pem[PATH_MAX + 64], ca[PATH_MAX + 64], crl[PATH_MAX + 64],
	    npem[PATH_MAX + 64], url[64], f[64];
	nng_socket s;
	nng_listener l;
	void *scfg = NULL;
	pthread_t th[ECHO_CTX], ct[16];
	echo_cli ec[16];
	pthread_barrier_t bar;
	int rv = -1;
	if (streams > 16 || reps > 64 || ensure_pki(streams) != 0)
		return -1;
	pki_file(pem, sizeof pem, "aggregator.pem");
	pki_file(ca, sizeof ca, "ca.crt");
	pki_file(crl, sizeof crl, "crl.pem");
	snprintf(url, sizeof url, "tls+tcp://127.0.0.1:%d", h_free_port());
	fed_tls_paths st = {pem, ca, crl};
	if (nng_rep0_open(&s) != 0)
		return fs_seterr("nng_rep0_open");
	nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, size * 2);
	if (fed_tls_config(1, &st, &scfg) != 0 ||
	    nng_listener_create(&l, s, url) != 0 ||
	    nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, scfg) != 0 ||
	    nng_listener_start(l, 0) != 0) {
		if (scfg)
			nng_tls_config_free(scfg);
		nng_close(s);
		return fs_seterr("echo server on %s failed", url);
	}
	nng_tls_config_free(scfg);
	for (int i = 0; i < ECHO_CTX; i++)
		pthread_create(&th[i], NULL, echo_loop, &s);
	nng_msg *proto = NULL;
	memset(ec, 0, sizeof ec);
	if (nng_msg_alloc(&proto, size) != 0)
		goto out;
	uint8_t *p = nng_msg_body(proto);
	for (size_t i = 0; i < size; i++)
		p[i] = (uint8_t)(i * 2654435761u >> 13);
	pthread_barrier_init(&bar, NULL, (unsigned)streams + 1);
	for (int i = 0; i < streams; i++) {
		snprintf(f, sizeof f, "node-%03d.pem", i);
		pki_file(npem, sizeof npem, f);
		fed_tls_paths ctl = {npem, ca, NULL};
		ec[i].c = fed_client_open(url, &ctl, size * 2);
		ec[i].proto = proto;
		ec[i].reps = reps;
		ec[i].bar = &bar;
		if (ec[i].c == NULL)
			goto out; /* (threads not started: barrier unused) */
	}
	for (int i = 0; i < streams; i++)
		pthread_create(&ct[i], NULL, echo_client, &ec[i]);
	pthread_barrier_wait(&bar);
	double t0 = now_s();
	rv = 0;
	for (int i = 0; i < streams; i++) {
		pthread_join(ct[i], NULL);
		rv |= ec[i].rv;
	}
	double wall = now_s() - t0;
	pthread_barrier_destroy(&bar);
	if (rv != 0) {
		fs_seterr("echo of %zu bytes failed", size);
		goto out;
	}
	if (streams == 1)
		for (int k = 0; k < reps; k++)
			mbs[(*nm)++] = 2.0 * (double)size / ec[0].t[k] / 1e6;
	else
		mbs[(*nm)++] = 2.0 * (double)size * streams * reps / wall / 1e6;
out:
	nng_msg_free(proto);
	for (int i = 0; i < streams; i++)
		fed_client_close(ec[i].c);
	nng_close(s);
	for (int i = 0; i < ECHO_CTX; i++)
		pthread_join(th[i], NULL);
	return rv;
}

/* ---- the benchmarks ---------------------------------------------------------- */

static int bench_round(int quick, int repeats)
{
	fedrun *R = calloc(1, sizeof *R);
	R->xfers = XFERS;
	double thr[64], rt[MAXR], base[MAXR], rat[MAXR];
	int nthr = 0, reps = quick ? 2 : 3;
	R->name = "round";
	R->base = quick ? 16 : 30;
	R->depth = 4;
	R->nodes = 3;
	R->rounds = quick ? 2 : (repeats < 3 ? 3 : repeats);
	R->wait_ms = 10;
	R->verify = 1;
	if (model_table_of(R) != 0)
		return -1;
	/* the echo payload: the Task message's size (f32 model + header) */
	size_t size = fed_codec_encoded_size(FED_CODEC_F32, R->nw, 0) + 200;
	double thr3[8];
	int nthr3 = 0;
	msg("round: echo baseline, %zu bytes x %d, 1 and 3 streams", size, reps);
	if (echo_bench(size, reps, 1, thr, &nthr) != 0 ||
	    echo_bench(size, reps, 3, thr3, &nthr3) != 0) {
		msg("echo: %s", fs_error());
		return -1;
	}
	msg("round: 3 clients, %d rounds, %zu floats (%.1f MB)", R->rounds,
	    R->nw, R->nw * 4 / 1e6);
	if (fed_run(R) != 0)
		return -1;
	if (echo_bench(size, reps, 1, thr, &nthr) != 0 ||
	    echo_bench(size, reps, 3, thr3, &nthr3) != 0) {
		msg("echo: %s", fs_error());
		return -1;
	}
	bstat t3 = bench_stat(thr3, nthr3);
	double th[64];
	memcpy(th, thr, sizeof(double) * (size_t)nthr);
	bstat ts = bench_stat(th, nthr);
	double bytes = 0, up = 0, close = 0;
	for (int r = 1; r <= R->rounds; r++) {
		rt[r - 1] = round_time(R, r);
		base[r - 1] = R->bytes[r] / 1e6 / ts.median;
		rat[r - 1] = rt[r - 1] / base[r - 1];
		bytes += R->bytes[r];
		up += R->last_ack[r] - R->first_task[r];
		close += R->first_task[r + 1] - R->last_ack[r];
	}
	int n = R->rounds;
	bytes /= n;
	up /= n;
	close /= n;
	bstat rs = bench_stat(rt, n), bs = bench_stat(base, n);
	bstat qs = bench_stat(rat, n);
	double ratio = rs.median / bs.median;
	char note[1024];
	snprintf(note, sizeof note,
	    "model base %d depth %d: %zu floats (%.1f MB f32); 3 protocol "
	    "clients (threads, one TLS connection each) skip training: verify "
	    "the signed model (decode, digest, ECDSA), encode f32, SHA-256, "
	    "sign, send; real fedseg-aggregator (codec f32, fedavg, wait_ms %d "
	    "polling, state on disk with fsync). Round = first Task r received "
	    "-> first Task r+1 (or Done) received, %d rounds. %.1f MB moved per "
	    "round (3 x Task + 3 x Update + replies); raw echo %.0f MB/s "
	    "(median of %d, min %.0f max %.0f; %zu-byte req/rep echo, same "
	    "certificates and TLS config, before and after the rounds). Mean "
	    "split: Task r to last UpdateAck %.3f s, last ack to next Task "
	    "(aggregate, checkpoint, next download) %.3f s; client CPU per "
	    "round: verify %.3f s, encode+hash+sign %.3f s (summed over 3); "
	    "per-round ratio min %.2f max %.2f; against 3 parallel echo "
	    "streams (%.0f MB/s) the ratio is %.2f",
	    R->base, R->depth, R->nw, R->nw * 4 / 1e6, R->wait_ms, n,
	    bytes / 1e6, ts.median, nthr, ts.min, ts.max, size, up, close,
	    R->cli_verify_s / n, R->cli_send_prep_s / n, qs.min, qs.max,
	    t3.median, rs.median / (bytes / 1e6 / t3.median));
	bench_emit("fed_round_tls", "round non-training time, 3 nodes, ~20 MB "
	    "model, mutual TLS on loopback", "s", rs, "bytes moved / raw nng "
	    "TLS echo throughput", bs, ratio, "round seconds / (bytes moved / "
	    "raw TLS bytes per second)", 1.5, 0, note);
	bstat eb = ts;
	snprintf(note, sizeof note, "%zu-byte message echoed over tls+tcp "
	    "127.0.0.1 (rep0 server, fed_client requester), 2 x size per "
	    "echo; %d echoes before and %d after the rounds", size, reps, reps);
	bench_emit("fed_tls_echo", "raw nng TLS throughput (baseline of "
	    "fed_round_tls)", "MB/s", eb, "itself", eb, 1.0, "1 (baseline)",
	    -1, 0, note);
	snprintf(note, sizeof note, "3 clients echo %zu bytes %d times each "
	    "at once (own TLS connections, rep0 server with %d contexts); "
	    "aggregate MB/s of one batch before and one after the rounds",
	    size, reps, ECHO_CTX);
	bench_emit("fed_tls_echo_3", "raw nng TLS throughput, 3 streams at "
	    "once", "MB/s", t3, "1-stream echo", eb, t3.median / eb.median,
	    "3-stream MB/s / 1-stream MB/s", -1, 0, note);
	free(R);
	return 0;
}

static int bench_scale(int quick)
{
	int sizes_full[] = {10, 30, 100}, sizes_quick[] = {10, 30};
	int *sizes = quick ? sizes_quick : sizes_full, ns = quick ? 2 : 3;
	double per10 = 0, hwm10 = 0;
	for (int k = 0; k < ns; k++) {
		fedrun *R = calloc(1, sizeof *R);
		R->xfers = XFERS;
		char name[32];
		snprintf(name, sizeof name, "scale-%d", sizes[k]);
		R->name = name;
		R->base = 4;
		R->depth = 2;
		R->nodes = sizes[k];
		R->rounds = 3;
		R->wait_ms = 50;
		R->verify = 1;
		msg("scale: %d clients, %d rounds", R->nodes, R->rounds);
		double t0 = now_s();
		if (fed_run(R) != 0) {
			msg("scale: %d clients did not complete", R->nodes);
			free(R);
			return -1;
		}
		double rt[MAXR], up = 0;
		for (int r = 1; r <= R->rounds; r++) {
			rt[r - 1] = round_time(R, r);
			up += R->last_ack[r] - R->first_task[r];
		}
		bstat rs = bench_stat(rt, R->rounds);
		double per = rs.median / R->nodes;
		if (k == 0) {
			per10 = per;
			hwm10 = (double)R->hwm_kb;
		}
		bstat b = {per10 * R->nodes, per10 * R->nodes, per10 * R->nodes, 1};
		char note[1024], fig[160], bench[32];
		snprintf(note, sizeof note, "%d protocol clients (threads, one TLS "
		    "connection each, verify every model, f32 delta), tiny model "
		    "base 4 depth 2 (%zu floats), %d rounds, all completed (Done "
		    "with the final signed model at every client) in %.1f s from "
		    "aggregator start to the last Done (incl. %d Joins); round = first Task r -> "
		    "first Task r+1/Done, wait_ms %d polling; mean Task r -> last "
		    "UpdateAck %.3f s; %.3f s per node per round; aggregator peak "
		    "RSS (VmHWM) %.1f MiB", R->nodes, R->nw, R->rounds,
		    now_s() - t0, R->nodes, R->wait_ms, up / R->rounds, per,
		    R->hwm_kb / 1024.0);
		snprintf(fig, sizeof fig, "scale: per-round time, %d nodes, tiny "
		    "model", R->nodes);
		snprintf(bench, sizeof bench, "fed_scale_%d", R->nodes);
		bench_emit(bench, fig, "s", rs, "10-node round time x N/10", b,
		    per / per10, "(round time / N) / (10-node round time / 10)",
		    -1, 0, note);
		double h = R->hwm_kb / 1024.0;
		bstat hs = {h, h, h, 1}, hb = {hwm10 / 1024, hwm10 / 1024,
		    hwm10 / 1024, 1};
		snprintf(fig, sizeof fig, "scale: aggregator peak RSS, %d nodes",
		    R->nodes);
		snprintf(bench, sizeof bench, "fed_scale_%d_rss", R->nodes);
		snprintf(note, sizeof note, "VmHWM of fedseg-aggregator from "
		    "/proc/PID/status (sampled every 20 ms, read last after every "
		    "client held Done, then SIGTERM); %d "
		    "sessions", R->nodes);
		bench_emit(bench, fig, "MiB", hs, "10-node VmHWM", hb,
		    h / (hwm10 / 1024), "VmHWM / 10-node VmHWM", -1, 0, note);
		free(R);
	}
	return 0;
}

static int bench_rss(int quick)
{
	fedrun *R = calloc(1, sizeof *R);
	R->name = "rss";
	R->base = quick ? 8 : 36;
	R->depth = quick ? 4 : 5;
	R->nodes = 16;
	R->rounds = 1;
	R->wait_ms = 50;
	R->verify = 0; /* clients only send: the figure is the aggregator's */
	R->shared = 1;
	/* the issue's bound, 3 x model: 2 resident + 1 in flight */
	R->xfers = XFERS >= 0 ? XFERS : 1;
	if (model_table_of(R) != 0)
		return -1;
	msg("rss: max_model_transfers %d", R->xfers);
	msg("rss: 16 clients, 1 round, %zu floats (%.1f MB)", R->nw,
	    R->nw * 4 / 1e6);
	if (fed_run(R) != 0)
		return -1;
	/* peak VmRSS while the Tasks go out (until the last client holds
	 * Task 1) and afterwards (updates in, FedAvg, checkpoint, Done) */
	long pdl = 0, pup = 0;
	for (int i = 0; i < R->ns; i++) {
		if (R->st[i] < R->last_task[1])
			pdl = R->srss[i] > pdl ? R->srss[i] : pdl;
		else
			pup = R->srss[i] > pup ? R->srss[i] : pup;
	}
	double mib = R->hwm_kb / 1024.0;
	double model = R->nw * 4.0 / 1048576.0, lim = 3 * model + 64;
	bstat v = {mib, mib, mib, 1}, b = {lim, lim, lim, 1};
	char note[1024];
	snprintf(note, sizeof note, "16 protocol clients each send one signed "
	    "f32 update of %zu floats (model %.1f MiB; base %d depth %d) in one "
	    "round to the real fedseg-aggregator (contexts 16, workers 2, "
	    "fedavg, max_model_transfers %d); VmHWM from /proc/PID/status sampled every 20 ms; round "
	    "took %.1f s (Task 1 -> Done), whole run %.1f s; peak VmRSS "
	    "sampled while the 16 Tasks went out %.0f MiB, afterwards (16 "
	    "uploads, FedAvg, checkpoint, Done) %.0f MiB", R->nw, model,
	    R->base, R->depth, R->xfers, round_time(R, 1), R->wall, pdl / 1024.0,
	    pup / 1024.0);
	bench_emit("fedavg_agg_rss", "aggregator peak RSS, 16 updates over TLS",
	    "MiB", v, "3 x model + 64 MiB", b, mib / lim, "VmHWM / (3 x model + "
	    "64 MiB)", 1.0, 0, note);
	free(R);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"quick", no_argument, 0, 'q'}, {"repeats", required_argument, 0, 'r'},
	    {"bin", required_argument, 0, 'b'}, {"only", required_argument, 0, 'o'},
	    {"keep", no_argument, 0, 'k'}, {"help", no_argument, 0, 'h'},
	    {"model-transfers", required_argument, 0, 'x'},
	    {0, 0, 0, 0}};
	int quick = 0, repeats = 5, keep = 0, c;
	const char *only = NULL;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'q': quick = 1; break;
		case 'r': repeats = atoi(optarg); break;
		case 'b': BIN = optarg; break;
		case 'o': only = optarg; break;
		case 'k': keep = 1; break;
		case 'x': XFERS = atoi(optarg); break;
		case 'h':
			printf("usage: bench_fed --bin BUILD_DIR [--quick] "
			    "[--repeats N] [--only round|scale|rss] [--keep]\n"
			    "       [--model-transfers K]  (agg.json "
			    "max_model_transfers; rss default 1, others the "
			    "aggregator's default)\n"
			    "Federation benchmarks against the real "
			    "fedseg-aggregator over mutual TLS; JSON lines on "
			    "stdout (bench/bench_util.h).\n");
			return 0;
		default:
			fprintf(stderr, "bench_fed: bad option (--help)\n");
			return 2;
		}
	}
	if (BIN == NULL || repeats < 1 || repeats > MAXR - 1 ||
	    (only && strcmp(only, "round") && strcmp(only, "scale") &&
	    strcmp(only, "rss"))) {
		fprintf(stderr, "bench_fed: --bin BUILD_DIR, --repeats 1..%d, "
		    "--only round|scale|rss (--help)\n", MAXR - 1);
		return 2;
	}
	char agg[PATH_MAX];
	snprintf(agg, sizeof agg, "%s/aggregator/fedseg-aggregator", BIN);
	if (access(agg, X_OK) != 0) {
		fprintf(stderr, "bench_fed: %s not found\n", agg);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (h_tmpdir("bfed", T) != 0) {
		perror("bench_fed: temp dir");
		return 1;
	}
	snprintf(PKI, sizeof PKI, "%s/pki", T);
	int fail = 0;
	if (!only || !strcmp(only, "round"))
		fail |= bench_round(quick, repeats) != 0;
	if (!only || !strcmp(only, "scale"))
		fail |= bench_scale(quick) != 0;
	if (!only || !strcmp(only, "rss"))
		fail |= bench_rss(quick) != 0;
	if (keep || fail)
		msg("work dir kept: %s", T);
	else
		h_rmtree(T);
	return fail;
}
