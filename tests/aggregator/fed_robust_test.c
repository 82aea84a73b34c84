/*
 * fed_robust_test.c - dropouts, robust aggregation and server optimisers
 * against real fedseg-aggregator processes over real mutual TLS on
 * 127.0.0.1. The nodes are small clients speaking the real protocol with
 * hand-made deltas, so every expected model can be computed here,
 * independently of the aggregator's code:
 *  - dropouts (issue 6 test 3): a node that never answers -> the round
 *    closes at its deadline with the others, its late update is
 *    acknowledged and discarded; with node_timeout_s a silent session
 *    expires and the round closes without waiting for the deadline, while
 *    a node sending heartbeats is kept;
 *  - model replacement (test 4): one node sends a delta x1000; with plain
 *    FedAvg the global model moves by far more than any honest update
 *    (the damage), with clip_norm / median / trimmed_mean its change stays
 *    within a bound computed from the honest updates;
 *  - FedAvgM / FedAdam / FedYogi: two rounds equal the formulas; FedAdam's
 *    state survives a SIGKILL + restart between the rounds;
 *  - allow-list: a valid node certificate whose CN is not listed is refused.
 */
#include <cJSON.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "certs.h"
#include "codec.h"
#include "crypto.h"
#include "harness.h"
#include "ledger.h"
#include "model.h"
#include "msg.h"
#include "test.h"
#include "transport.h"

static char T[PATH_MAX], URL[64], DIR_[PATH_MAX + 64];
static size_t NW;
static uint8_t TABLE[32];

typedef struct {
	const char *cn;
	fed_client *cli;
	fed_identity *id;
	uint8_t session[32];
	uint32_t round, version;
} peer;

static Fedseg__Envelope *
call(fed_client *c, Fedseg__Envelope *env, int timeout_ms)
{
	nng_msg *m = NULL, *r = NULL;
	Fedseg__Envelope *rep = NULL;
	int code;
	if (fed_msg_pack(env, &m) != 0 ||
	    fed_client_call(c, m, timeout_ms, &r, NULL) != 0)
		return NULL;
	if (fed_msg_unpack(nng_msg_body(r), nng_msg_len(r), &rep, &code))
		rep = NULL;
	nng_msg_free(r);
	return rep;
}

static int
peer_join(peer *p)
{
	uint8_t nonce[32], text[FED_SIGTEXT_MAX], *sig = NULL;
	size_t sl = 0, pl = 0;
	fed_random(nonce, 32);
	uint64_t now = fed_unix_ms();
	size_t tl = fed_sigtext_join(text, nonce, now);
	fed_sign(p->id, text, tl, &sig, &sl);
	Fedseg__Join j = FEDSEG__JOIN__INIT;
	j.cert_pem.data = (uint8_t *)fed_identity_cert_pem(p->id, &pl);
	j.cert_pem.len = pl;
	j.nonce = (ProtobufCBinaryData){ 32, nonce };
	j.time_unix_ms = now;
	j.signature = (ProtobufCBinaryData){ sl, sig };
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_JOIN;
	env.join = &j;
	Fedseg__Envelope *r = call(p->cli, &env, 10000);
	free(sig);
	int ok = r && r->body_case == FEDSEG__ENVELOPE__BODY_JOIN_ACK;
	if (ok)
		memcpy(p->session, r->join_ack->session.data, 32);
	else
		fs_seterr("%s: no JoinAck (%s)", p->cn, r && r->body_case ==
		    FEDSEG__ENVELOPE__BODY_ERROR ? r->error->reason : "none");
	fed_msg_free(r);
	return ok ? 0 : -1;
}

static int
peer_open(peer *p, const char *cn)
{
	char pem[PATH_MAX + 64], ca[PATH_MAX + 64];
	memset(p, 0, sizeof *p);
	p->cn = cn;
	snprintf(pem, sizeof pem, "%s/pki/%s.pem", T, cn);
	snprintf(ca, sizeof ca, "%s/pki/ca.crt", T);
	fed_tls_paths tls = { pem, ca, NULL };
	p->id = fed_identity_load(pem, pem);
	p->cli = fed_client_open(URL, &tls, 0);
	if (p->id == NULL || p->cli == NULL)
		return -1;
	return peer_join(p);
}

static void
peer_close(peer *p)
{
	fed_client_close(p->cli);
	fed_identity_free(p->id);
	memset(p, 0, sizeof *p);
}

static Fedseg__Envelope *
task_request(peer *p, uint32_t have)
{
	Fedseg__TaskRequest tr = FEDSEG__TASK_REQUEST__INIT;
	tr.session = (ProtobufCBinaryData){ 32, p->session };
	tr.have_version = have;
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_TASK_REQUEST;
	env.task_request = &tr;
	return call(p->cli, &env, 10000);
}

static double last_prox_mu = -1; /* train.prox_mu of the last Task seen */

/* Asks until a Task comes; *g (NW floats, may be NULL) gets the global. */
static int
get_task(peer *p, float *g)
{
	for (int i = 0; i < 200; i++) {
		Fedseg__Envelope *r = task_request(p, UINT32_MAX);
		if (r && r->body_case == FEDSEG__ENVELOPE__BODY_TASK) {
			p->round = r->task->round;
			p->version = r->task->version;
			last_prox_mu = r->task->train ?
			    r->task->train->prox_mu : -1;
			if (g != NULL)
				fed_codec_decode(r->task->weights.data,
				    r->task->weights.len, NW, TABLE, g, NULL);
			fed_msg_free(r);
			return 0;
		}
		int wait = r && r->body_case == FEDSEG__ENVELOPE__BODY_WAIT;
		fed_msg_free(r);
		if (!wait)
			return fs_seterr("%s: no Task", p->cn);
		usleep(50000);
	}
	return fs_seterr("%s: no Task in 10 s", p->cn);
}

/* One UploadRequest for p's update (round, version): 1 granted (token in
 * tok), 0 Wait (its reason in why), 2 answered with an UpdateAck (reason
 * in why), -1 anything else. */
static int
upload_request(peer *p, uint8_t tok[16], char *why, size_t wl)
{
	Fedseg__UploadRequest ur = FEDSEG__UPLOAD_REQUEST__INIT;
	ur.session = (ProtobufCBinaryData){ 32, p->session };
	ur.round = p->round;
	ur.base_version = p->version;
	ur.payload_bytes = NW * 4;
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_UPLOAD_REQUEST;
	env.upload_request = &ur;
	Fedseg__Envelope *r = call(p->cli, &env, 10000);
	int rv = -1;
	snprintf(why, wl, "%s", r ? fed_msg_kind(r) : "no reply");
	if (r && r->body_case == FEDSEG__ENVELOPE__BODY_UPLOAD_GRANT &&
	    r->upload_grant->token.len == 16) {
		memcpy(tok, r->upload_grant->token.data, 16);
		rv = 1;
	} else if (r && r->body_case == FEDSEG__ENVELOPE__BODY_WAIT) {
		snprintf(why, wl, "%s", r->wait->reason);
		rv = 0;
	} else if (r && r->body_case == FEDSEG__ENVELOPE__BODY_UPDATE_ACK) {
		snprintf(why, wl, "%s", r->update_ack->reason);
		rv = 2;
	}
	fed_msg_free(r);
	return rv;
}

/* Asks until granted (10 s at most); 1 granted, else as upload_request. */
static int
upload_grant(peer *p, uint8_t tok[16], char *why, size_t wl)
{
	int rv = 0;
	for (int i = 0; i < 200 && (rv = upload_request(p, tok, why, wl)) == 0;
	    i++)
		usleep(50000);
	return rv;
}

/* Sends delta with 1 sample carrying grant tok (NULL: none); returns the
 * UpdateAck (accepted 1/0, reason copied to why) or -1 without an ack. */
static int
send_update_grant(peer *p, const float *delta, const uint8_t *tok,
    char *why, size_t wl)
{
	uint8_t digest[32], text[FED_SIGTEXT_MAX], *pl = NULL, *sig = NULL;
	size_t pn = 0, sl = 0, cl = 0;
	fed_codec_wrap(FED_CODEC_F32, 0, NW, TABLE, delta, NW * 4, &pl, &pn);
	fed_sha256(pl, pn, digest);
	size_t tl = fed_sigtext_update(text, digest, p->round, p->version, 1,
	    p->session);
	fed_sign(p->id, text, tl, &sig, &sl);
	Fedseg__Update u = FEDSEG__UPDATE__INIT;
	Fedseg__Metrics m = FEDSEG__METRICS__INIT;
	m.mean_loss = 0.5;
	u.session = (ProtobufCBinaryData){ 32, p->session };
	u.round = p->round;
	u.base_version = p->version;
	u.sample_count = 1;
	u.payload = (ProtobufCBinaryData){ pn, pl };
	u.payload_digest = (ProtobufCBinaryData){ 32, digest };
	u.metrics = &m;
	u.cert_pem.data = (uint8_t *)fed_identity_cert_pem(p->id, &cl);
	u.cert_pem.len = cl;
	u.signature = (ProtobufCBinaryData){ sl, sig };
	if (tok != NULL)
		u.grant = (ProtobufCBinaryData){ 16, (uint8_t *)tok };
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_UPDATE;
	env.update = &u;
	Fedseg__Envelope *r = call(p->cli, &env, 10000);
	free(pl);
	free(sig);
	int rv = -1;
	if (r && r->body_case == FEDSEG__ENVELOPE__BODY_UPDATE_ACK) {
		rv = r->update_ack->accepted ? 1 : 0;
		snprintf(why, wl, "%s", r->update_ack->reason);
	} else {
		snprintf(why, wl, "no ack");
	}
	fed_msg_free(r);
	return rv;
}

/* Asks for an upload slot (as a node does), then sends delta. An
 * UploadRequest answered with an UpdateAck (late, duplicate, refused)
 * counts as that ack. */
static int
send_update(peer *p, const float *delta, char *why, size_t wl)
{
	uint8_t tok[16];
	int g = upload_grant(p, tok, why, wl);
	if (g == 2)
		return strncmp(why, "duplicate", 9) == 0 ? 1 : 0;
	/* refused (session, rate limit): the Update itself goes, so that its
	 * own refusal is what the caller checks */
	return send_update_grant(p, delta, g == 1 ? tok : NULL, why, wl);
}

/* ---- aggregator processes ------------------------------------------------- */

static pid_t AP;
static char ALOG[PATH_MAX + 128];

static int
agg_start(const char *name, const char *extra, int rounds, int min_nodes,
    int min_updates, double deadline)
{
	char cfg[4096], p[PATH_MAX + 128], bin[PATH_MAX];
	snprintf(URL, sizeof URL, "tls+tcp://127.0.0.1:%d", h_free_port());
	snprintf(DIR_, sizeof DIR_, "%s/%s", T, name);
	fs_mkdir_p(DIR_, 0);
	snprintf(cfg, sizeof cfg,
	    "{\"listen\": \"%s\", \"cert\": \"../pki/aggregator.pem\",\n"
	    " \"ca\": \"../pki/ca.crt\", \"crl\": \"../pki/crl.pem\",\n"
	    " \"state_dir\": \"state\", \"model\": {\"base\": 4, \"depth\": 2},\n"
	    " \"rounds\": %d, \"min_nodes\": %d, \"min_updates\": %d,\n"
	    " \"round_deadline_s\": %g, \"wait_ms\": 50,\n"
	    " \"train\": {\"steps\": 2, \"batch\": 1, \"patch\": 32}%s%s}\n",
	    URL, rounds, min_nodes, min_updates, deadline, extra[0] ? ",\n" :
	    "", extra);
	snprintf(p, sizeof p, "%s/agg.json", DIR_);
	h_write(p, cfg);
	snprintf(bin, sizeof bin, "%s/aggregator/fedseg-aggregator", h_bin());
	snprintf(ALOG, sizeof ALOG, "%s/aggregator.log", DIR_);
	char *argv[] = { bin, "--config", p, NULL };
	AP = h_spawn(argv, ALOG);
	return AP > 0 ? 0 : -1;
}

static int
agg_restart(void)
{
	char p[PATH_MAX + 128], bin[PATH_MAX];
	snprintf(p, sizeof p, "%s/agg.json", DIR_);
	snprintf(bin, sizeof bin, "%s/aggregator/fedseg-aggregator", h_bin());
	char *argv[] = { bin, "--config", p, NULL };
	AP = h_spawn(argv, ALOG);
	return AP > 0 ? 0 : -1;
}

static void
agg_stop(void)
{
	kill(AP, SIGTERM);
	int st = h_wait(AP, 20);
	if (st != 0) {
		printf("    aggregator exit %d\n", st);
		h_tail(ALOG, 20);
	}
}

static float *
model(int version)
{
	char p[PATH_MAX + 128];
	model_spec s;
	float *w = NULL;
	snprintf(p, sizeof p, "%s/state/models/round-%04d.safetensors", DIR_,
	    version);
	for (int i = 0; i < 600 && !h_exists(p); i++)
		usleep(50000);
	usleep(100000); /* the ledger line follows the model file */
	if (model_weights_load(p, &s, &w, NULL) != 0)
		printf("    cannot load %s: %s\n", p, fs_error());
	return w;
}

static cJSON *
ledger_round(int r)
{
	char p[PATH_MAX + 128], *text = NULL, *save = NULL;
	size_t n;
	cJSON *out = NULL;
	snprintf(p, sizeof p, "%s/state/ledger.jsonl", DIR_);
	if (fs_read_file(p, 1 << 24, (void **)&text, &n) != 0)
		return NULL;
	for (char *l = strtok_r(text, "\n", &save); l;
	    l = strtok_r(NULL, "\n", &save)) {
		cJSON *o = cJSON_Parse(l);
		if (o && cJSON_GetObjectItem(o, "round")->valueint == r) {
			cJSON_Delete(out);
			out = o;
		} else {
			cJSON_Delete(o);
		}
	}
	free(text);
	return out;
}

/* Contributors of round r in the ledger, -1 if it has no such line. */
static int
ncontrib(int r)
{
	cJSON *l = ledger_round(r);
	int n = l ? cJSON_GetArraySize(cJSON_GetObjectItem(l,
	    "contributors")) : -1;
	cJSON_Delete(l);
	return n;
}

static int
log_has(const char *needle)
{
	char *text = NULL;
	size_t n;
	int hit = 0;
	if (fs_read_file(ALOG, 1 << 24, (void **)&text, &n) == 0)
		hit = strstr(text, needle) != NULL;
	free(text);
	return hit;
}

static float *
delta(int k, float scale)
{
	float *d = malloc(NW * sizeof(float));
	for (size_t i = 0; i < NW; i++)
		d[i] = scale * 0.01f * sinf(0.37f * (float)i + 1.3f * (float)k) +
		    0.002f * (float)k;
	return d;
}

static double
norm(const float *a, const float *b)
{
	double s = 0;
	for (size_t i = 0; i < NW; i++) {
		double x = (double)a[i] - (b ? (double)b[i] : 0);
		s += x * x;
	}
	return sqrt(s);
}

/* ---- test 3: dropouts ------------------------------------------------------ */

static void
test_deadline(void)
{
	peer p[3];
	char why[256];
	const char *cn[3] = { "n1", "n2", "n3" };
	T_PASS(agg_start("deadline", "\"node_timeout_s\": 0", 1, 3, 2, 3.0));
	for (int i = 0; i < 3; i++)
		T_PASS(peer_open(&p[i], cn[i]));
	for (int i = 0; i < 3; i++)
		T_PASS(get_task(&p[i], NULL));
	double t0 = fs_now();
	float *d = delta(1, 1);
	for (int i = 0; i < 2; i++)
		T_OK(send_update(&p[i], d, why, sizeof why) == 1, "%s: update "
		    "accepted (%s)", cn[i], why);
	float *g1 = model(1);
	double took = fs_now() - t0;
	int nc = ncontrib(1);
	T_OK(g1 != NULL && nc == 2 && took > 2.0 && took < 15,
	    "n3 never answers: round 1 closed at its deadline (3 s; after "
	    "%.1f s) with the 2 others", took);
	int a = send_update(&p[2], d, why, sizeof why);
	T_OK(a == 0 && strstr(why, "late") != NULL, "n3's late update is "
	    "acknowledged and discarded: \"%s\"", why);
	free(g1);
	free(d);
	for (int i = 0; i < 3; i++)
		peer_close(&p[i]);
	agg_stop();
}

/* Fewer than min_updates at the deadline: the round stays open (one
 * AGG-DEADLINE warning) until enough updates arrive, then closes with
 * them. */
static void
test_deadline_short(void)
{
	peer p[3];
	char why[256], path[PATH_MAX + 128];
	const char *cn[3] = { "n1", "n2", "n3" };
	T_PASS(agg_start("deadline-short", "\"node_timeout_s\": 0", 1, 3, 2,
	    1.0));
	for (int i = 0; i < 3; i++)
		T_PASS(peer_open(&p[i], cn[i]));
	for (int i = 0; i < 3; i++)
		T_PASS(get_task(&p[i], NULL));
	float *d = delta(5, 1);
	T_OK(send_update(&p[0], d, why, sizeof why) == 1, "n1: update "
	    "accepted (%s)", why);
	/* 3 s: well past the 1 s deadline, with 1 update of the 2 needed */
	for (int i = 0; i < 30; i++) {
		fed_msg_free(task_request(&p[0], 0));
		usleep(100000);
	}
	snprintf(path, sizeof path, "%s/state/models/round-0001.safetensors",
	    DIR_);
	T_OK(!h_exists(path) && log_has("AGG-DEADLINE") &&
	    log_has("deadline passed with 1 update(s), 2 needed"), "deadline "
	    "passed with 1 of min_updates 2: round 1 stays open, AGG-DEADLINE "
	    "logged");
	T_OK(send_update(&p[1], d, why, sizeof why) == 1, "n2's update after "
	    "the deadline is accepted into the open round (%s)", why);
	float *g1 = model(1);
	int nc = ncontrib(1);
	T_OK(g1 != NULL && nc == 2, "with the second update the round closes "
	    "at once, 2 contributors (%d)", nc);
	free(g1);
	free(d);
	for (int i = 0; i < 3; i++)
		peer_close(&p[i]);
	agg_stop();
}

/* A node whose session expired comes back mid-round: "unknown session",
 * it joins again and gets the current Task; a node joining for the first
 * time while the round is open is selected too (AGG-SELECT); the round
 * then waits for both and closes with all four. */
static void
test_rejoin(void)
{
	peer p[4];
	char why[256];
	const char *cn[4] = { "n1", "n2", "n3", "n4" };
	T_PASS(agg_start("rejoin", "\"node_timeout_s\": 1.5", 1, 3, 3, 600));
	for (int i = 0; i < 3; i++)
		T_PASS(peer_open(&p[i], cn[i]));
	for (int i = 0; i < 3; i++)
		T_PASS(get_task(&p[i], NULL));
	/* n3 silent for 2.5 s while n1 and n2 poll */
	double t0 = fs_now();
	while (fs_now() - t0 < 2.5) {
		for (int i = 0; i < 2; i++)
			fed_msg_free(task_request(&p[i], 0));
		usleep(300000);
	}
	T_OK(log_has("node n3 silent"), "n3's session expired");
	Fedseg__Envelope *r = task_request(&p[2], UINT32_MAX);
	T_OK(r && r->body_case == FEDSEG__ENVELOPE__BODY_ERROR &&
	    strstr(r->error->reason, "session") != NULL, "n3 back: its old "
	    "session is refused (%s)", r && r->error ? r->error->reason :
	    r ? fed_msg_kind(r) : "no reply");
	fed_msg_free(r);
	T_OK(peer_join(&p[2]) == 0 && get_task(&p[2], NULL) == 0 &&
	    p[2].round == 1, "n3 joins again and gets the current Task "
	    "(round %u)", p[2].round);
	T_PASS(peer_open(&p[3], cn[3]));
	T_OK(get_task(&p[3], NULL) == 0 && p[3].round == 1 &&
	    log_has("node n4 joins round 1 in progress"), "n4, joining for "
	    "the first time mid-round, gets the round-1 Task (AGG-SELECT)");
	float *d = delta(6, 1);
	for (int i = 0; i < 3; i++)
		T_OK(send_update(&p[i], d, why, sizeof why) == 1, "%s: update "
		    "accepted (%s)", cn[i], why);
	usleep(500000);
	T_OK(ncontrib(1) == -1, "with 3 of 4 selected nodes in, the round "
	    "waits for n4 (deadline 600 s)");
	T_OK(send_update(&p[3], d, why, sizeof why) == 1, "n4: update "
	    "accepted (%s)", why);
	float *g1 = model(1);
	int nc = ncontrib(1);
	T_OK(g1 != NULL && nc == 4, "round 1 closes with n1, n2, the "
	    "rejoined n3 and the late joiner n4 (%d contributors)", nc);
	free(g1);
	free(d);
	for (int i = 0; i < 4; i++)
		peer_close(&p[i]);
	agg_stop();
}

static void
test_expiry(void)
{
	peer p[4];
	char why[256];
	const char *cn[4] = { "n1", "n2", "n3", "n4" };
	T_PASS(agg_start("expiry", "\"node_timeout_s\": 1.5", 1, 4, 2, 600));
	for (int i = 0; i < 4; i++)
		T_PASS(peer_open(&p[i], cn[i]));
	for (int i = 0; i < 4; i++)
		T_PASS(get_task(&p[i], NULL));
	double t0 = fs_now();
	float *d = delta(2, 1);
	for (int i = 0; i < 2; i++)
		T_OK(send_update(&p[i], d, why, sizeof why) == 1, "%s: update "
		    "accepted", cn[i]);
	/* n4 trains for 3 s, sending a heartbeat every 0.5 s; n3 is silent */
	int hb_wait = 1;
	while (fs_now() - t0 < 3.0) {
		Fedseg__Envelope *r = task_request(&p[3], p[3].version);
		hb_wait &= r && r->body_case == FEDSEG__ENVELOPE__BODY_WAIT &&
		    strstr(r->wait->reason, "heartbeat") != NULL;
		fed_msg_free(r);
		for (int i = 0; i < 2; i++)   /* n1, n2 poll while waiting */
			fed_msg_free(task_request(&p[i], 0));
		usleep(500000);
	}
	T_OK(hb_wait, "n4's heartbeats while training are answered Wait "
	    "(\"heartbeat\"), not with the model again");
	T_OK(send_update(&p[3], d, why, sizeof why) == 1, "n4's update after "
	    "3 s of heartbeats accepted (%s)", why);
	float *g1 = model(1);
	double took = fs_now() - t0;
	int nc = ncontrib(1);
	T_OK(g1 != NULL && nc == 3 && took < 20, "n3 silent: its session "
	    "expired (node_timeout_s 1.5), round 1 closed after %.1f s (not "
	    "the 600 s deadline) with n1, n2, n4", took);
	T_OK(log_has("AGG-EXPIRE") && log_has("node n3 silent"), "the log "
	    "names the dropped node");
	int a = send_update(&p[2], d, why, sizeof why);
	T_OK(a == 0, "n3's update afterwards is refused: \"%s\"", why);
	free(g1);
	free(d);
	for (int i = 0; i < 4; i++)
		peer_close(&p[i]);
	agg_stop();
}

/* ---- test 4: a model-replacement attempt ---------------------------------- */

/* 3 honest nodes and one sending 1000 x a delta. Returns ||g1 - g0|| and
 * writes the coordinate-wise bound from the honest updates to *bound. */
static double
replacement(const char *name, const char *extra, float **gout,
    float *const hon[3], const float *evil)
{
	peer p[4];
	char why[256];
	const char *cn[4] = { "n1", "n2", "n3", "mallory" };
	float *g0 = malloc(NW * sizeof(float));
	double moved = -1;
	T_PASS(agg_start(name, extra, 1, 4, 4, 600));
	for (int i = 0; i < 4; i++)
		T_PASS(peer_open(&p[i], cn[i]));
	for (int i = 0; i < 4; i++)
		T_PASS(get_task(&p[i], i == 0 ? g0 : NULL));
	int ok = 1;
	for (int i = 0; i < 4; i++)
		ok &= send_update(&p[i], i < 3 ? hon[i] : evil, why,
		    sizeof why) == 1;
	T_OK(ok, "%s: 4 updates accepted (one scaled x1000)", name);
	float *g1 = model(1);
	if (g1 != NULL) {
		for (size_t i = 0; i < NW; i++)
			g1[i] -= g0[i];
		moved = norm(g1, NULL);
	}
	*gout = g1;
	free(g0);
	for (int i = 0; i < 4; i++)
		peer_close(&p[i]);
	agg_stop();
	return moved;
}

static int
cmpf(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

static void
test_replacement(void)
{
	float *hon[3] = { delta(1, 1.0f), delta(2, 0.8f), delta(3, 1.2f) };
	float *evil = delta(4, 1000.0f);
	double hmax = 0, box = 0;
	for (int k = 0; k < 3; k++)
		hmax = fmax(hmax, norm(hon[k], NULL));
	for (size_t i = 0; i < NW; i++) {
		double m = 0;
		for (int k = 0; k < 3; k++)
			m = fmax(m, fabs(hon[k][i]));
		box += m * m;
	}
	box = sqrt(box); /* any value inside the honest range per coordinate */
	printf("honest update norms <= %.4f, coordinate box %.4f, hostile "
	    "%.1f\n", hmax, box, norm(evil, NULL));
	float *d;
	double m = replacement("fedavg", "\"strategy\": \"fedavg\"", &d, hon,
	    evil);
	T_OK(m > 50 * box, "plain FedAvg: the global model moved by %.2f "
	    "(> 50 x the honest bound %.4f): the attack works", m, box);
	free(d);
	char extra[128];
	snprintf(extra, sizeof extra, "\"strategy\": \"fedavg\", "
	    "\"clip_norm\": %.6f", hmax);
	m = replacement("clip", extra, &d, hon, evil);
	T_OK(m >= 0 && m <= hmax * 1.0001, "FedAvg + clip_norm %.4f: moved "
	    "%.4f <= clip_norm", hmax, m);
	free(d);
	m = replacement("median", "\"strategy\": \"median\"", &d, hon, evil);
	T_OK(m >= 0 && m <= box * 1.0001, "coordinate-wise median: moved %.4f "
	    "<= honest bound %.4f", m, box);
	double err = 0;
	for (size_t i = 0; d && i < NW; i++) {
		float c[4] = { hon[0][i], hon[1][i], hon[2][i], evil[i] };
		qsort(c, 4, sizeof(float), cmpf);
		err = fmax(err, fabs(0.5 * ((double)c[1] + c[2]) - d[i]));
	}
	T_OK(d != NULL && err < 1e-6, "median = independent per-coordinate "
	    "median of the 4 deltas (max err %.2g)", err);
	free(d);
	m = replacement("trimmed", "\"strategy\": \"trimmed_mean\", "
	    "\"trim_fraction\": 0.25, \"train\": {\"steps\": 2, \"batch\": 1, "
	    "\"patch\": 32, \"prox_mu\": 0.01}", &d, hon, evil);
	T_OK(fabs(last_prox_mu - 0.01) < 1e-12, "FedProx: the Task carries "
	    "the config's prox_mu to the nodes (%g)", last_prox_mu);
	T_OK(m >= 0 && m <= box * 1.0001, "trimmed mean (25%% each end): "
	    "moved %.4f <= honest bound %.4f", m, box);
	free(d);
	cJSON *l = ledger_round(1);
	const cJSON *ag = l ? cJSON_GetObjectItem(l, "aggregation") : NULL;
	T_OK(ag && strcmp(cJSON_GetObjectItem(ag, "rule")->valuestring,
	    "trimmed_mean") == 0 && strstr(cJSON_GetObjectItem(l,
	    "strategy")->valuestring, "trimmed_mean") && strstr(
	    cJSON_GetObjectItem(l, "strategy")->valuestring, "fedprox(0.01)") &&
	    cJSON_GetObjectItem(ag, "prox_mu") && fabs(cJSON_GetObjectItem(ag,
	    "prox_mu")->valuedouble - 0.01) < 1e-12, "the ledger records "
	    "the strategy and FedProx's mu (%s)", l ? cJSON_GetObjectItem(l,
	    "strategy")->valuestring : "?");
	cJSON_Delete(l);
	for (int k = 0; k < 3; k++)
		free(hon[k]);
	free(evil);
}

/* ---- server optimisers ------------------------------------------------------ */

static void
test_server_opt(const char *opt, int restart)
{
	peer p[2];
	char why[256], extra[256], name[64];
	const char *cn[2] = { "n1", "n2" };
	const double lr = 0.05, b1 = 0.9, b2 = 0.99, tau = 1e-3, mom = 0.8;
	snprintf(name, sizeof name, "%s%s", opt, restart ? "-restart" : "");
	snprintf(extra, sizeof extra, "\"server_optimizer\": \"%s\", "
	    "\"server_lr\": %g, \"beta1\": %g, \"beta2\": %g, \"tau\": %g, "
	    "\"server_momentum\": %g", opt, lr, b1, b2, tau, mom);
	T_PASS(agg_start(name, extra, 2, 2, 2, 600));
	float *g = malloc(NW * sizeof(float)), *w = malloc(NW * sizeof(float));
	float *m = calloc(NW, sizeof(float)), *v = calloc(NW, sizeof(float));
	double err = 0;
	for (int r = 1; r <= 2; r++) {
		float *d[2] = { delta(10 * r, 1.0f), delta(10 * r + 1, 0.5f) };
		for (int i = 0; i < 2; i++)
			T_PASS(peer_open(&p[i], cn[i]));
		for (int i = 0; i < 2; i++)
			T_PASS(get_task(&p[i], i == 0 ? g : NULL));
		for (int i = 0; i < 2; i++)
			T_OK(send_update(&p[i], d[i], why, sizeof why) == 1,
			    "%s round %d: %s accepted", name, r, cn[i]);
		/* the same formulas, independently (state kept as float) */
		for (size_t i = 0; i < NW; i++) {
			double gi = (float)(((double)d[0][i] + d[1][i]) / 2);
			double step;
			if (strcmp(opt, "fedavgm") == 0) {
				m[i] = (float)(mom * m[i] + gi);
				step = m[i];
			} else {
				m[i] = (float)(b1 * m[i] + (1 - b1) * gi);
				double vv = v[i];
				if (strcmp(opt, "fedadam") == 0)
					vv = b2 * vv + (1 - b2) * gi * gi;
				else
					vv -= (1 - b2) * gi * gi *
					    (vv > gi * gi ? 1 : -1);
				v[i] = (float)vv;
				step = m[i] / (sqrt((double)v[i]) + tau);
			}
			w[i] = (float)((double)g[i] + lr * step);
		}
		float *got = model(r);
		for (size_t i = 0; got && i < NW; i++)
			err = fmax(err, fabs((double)got[i] - w[i]) /
			    (1e-3 + fabs((double)w[i])));
		if (got == NULL)
			err = 1;
		free(got);
		for (int i = 0; i < 2; i++) {
			peer_close(&p[i]);
			free(d[i]);
		}
		if (r == 1 && restart) {
			kill(AP, SIGKILL);
			h_wait(AP, 10);
			T_PASS(agg_restart());
		}
	}
	T_OK(err < 1e-5, "%s: two rounds equal the formula%s (max rel err "
	    "%.2g)", opt, restart ? ", its state surviving a SIGKILL + "
	    "restart between them" : "", err);
	cJSON *l = ledger_round(2);
	T_OK(l && cJSON_GetObjectItem(l, "server_state_digest") &&
	    strstr(cJSON_GetObjectItem(l, "strategy")->valuestring, opt),
	    "%s: ledger records the optimiser and its state digest", opt);
	cJSON_Delete(l);
	free(g);
	free(w);
	free(m);
	free(v);
	agg_stop();
}

/* A restart whose server-optimiser state does not match the ledger (a
 * flipped byte): the file is set aside as .corrupt, never loaded, and the
 * aggregator refuses to start with a one-line reason instead of going on
 * with a zeroed state. */
static void
test_corrupt_opt(void)
{
	peer p[2];
	char why[256], f[PATH_MAX + 128], fc[PATH_MAX + 160];
	const char *cn[2] = { "n1", "n2" };
	T_PASS(agg_start("opt-corrupt", "\"server_optimizer\": \"fedadam\", "
	    "\"server_lr\": 0.05", 2, 2, 2, 600));
	float *d = delta(31, 1.0f);
	for (int i = 0; i < 2; i++)
		T_PASS(peer_open(&p[i], cn[i]));
	for (int i = 0; i < 2; i++)
		T_PASS(get_task(&p[i], NULL));
	for (int i = 0; i < 2; i++)
		T_OK(send_update(&p[i], d, why, sizeof why) == 1, "opt-corrupt: "
		    "%s accepted", cn[i]);
	float *g1 = model(1);
	free(g1);
	for (int i = 0; i < 2; i++)
		peer_close(&p[i]);
	kill(AP, SIGKILL);
	h_wait(AP, 10);
	snprintf(f, sizeof f, "%s/state/server/opt-0001.bin", DIR_);
	snprintf(fc, sizeof fc, "%s.corrupt", f);
	FILE *fp = fopen(f, "r+b");
	int flipped = 0;
	if (fp != NULL && fseek(fp, 100, SEEK_SET) == 0) {
		int c = fgetc(fp);
		flipped = c != EOF && fseek(fp, 100, SEEK_SET) == 0 &&
		    fputc(c ^ 0x40, fp) != EOF;
	}
	if (fp != NULL)
		fclose(fp);
	T_OK(flipped, "flipped one byte of %s", f);
	T_PASS(agg_restart());
	int st = h_wait(AP, 20);
	T_OK(st != 0 && st != 128 + SIGKILL && h_exists(fc) && !h_exists(f) &&
	    log_has("server optimiser state is corrupt"), "restart with a "
	    "corrupt optimiser state: set aside as .corrupt, not loaded, the "
	    "aggregator refuses to start (exit %d)", st);
	free(d);
}

/* ---- rate limit ------------------------------------------------------------ */

/* One node floods the aggregator with TaskRequests: beyond
 * rate_limit_per_s in a 1 s window it gets Error 4 "rate limit", the
 * other node is served all along, and the flooder is served again in the
 * next window. */
static void
test_rate_limit(void)
{
	peer f, g;
	int refused = 0, served = 0, other = 0, other_ok = 0;
	T_PASS(agg_start("rate", "\"rate_limit_per_s\": 10", 1, 2, 2, 600));
	T_PASS(peer_open(&f, "n1"));
	T_PASS(peer_open(&g, "n2"));
	double t0 = fs_now();
	for (int i = 0; i < 200; i++) {
		Fedseg__Envelope *r = task_request(&f, UINT32_MAX);
		if (r && r->body_case == FEDSEG__ENVELOPE__BODY_ERROR &&
		    r->error->code == FED_ERR_REQUEST &&
		    strstr(r->error->reason, "rate limit") != NULL)
			refused++;
		else if (r && (r->body_case == FEDSEG__ENVELOPE__BODY_TASK ||
		    r->body_case == FEDSEG__ENVELOPE__BODY_WAIT))
			served++;
		fed_msg_free(r);
		if (i % 50 == 25) {
			/* the other node, in the middle of the flood; the
			 * flooder's Tasks may hold the model-transfer slots
			 * (max_model_transfers) for a moment: g is told to
			 * Wait "busy" and keeps its place, so it asks again */
			other++;
			for (int k = 0; k < 100; k++) {
				r = task_request(&g, UINT32_MAX);
				int busy = r && r->body_case ==
				    FEDSEG__ENVELOPE__BODY_WAIT && r->wait->reason &&
				    strstr(r->wait->reason, "busy") != NULL;
				other_ok += r && r->body_case ==
				    FEDSEG__ENVELOPE__BODY_TASK;
				fed_msg_free(r);
				if (!busy)
					break;
				usleep(20000);
			}
		}
	}
	double took = fs_now() - t0;
	/* fixed 1 s windows from the first request: at most 10 per window */
	int most = 10 * ((int)took + 2);
	T_OK(refused > 0 && served <= most && served + refused == 200,
	    "flood of 200 TaskRequests in %.2f s at rate_limit_per_s 10: %d "
	    "served (at most %d allowed), %d refused with Error 4 \"rate "
	    "limit\"", took, served, most, refused);
	T_OK(other_ok == other, "the other node is served during the flood "
	    "(%d of %d Tasks)", other_ok, other);
	usleep(1100000);
	Fedseg__Envelope *r = task_request(&f, UINT32_MAX);
	T_OK(r && r->body_case == FEDSEG__ENVELOPE__BODY_TASK, "after a quiet "
	    "second the flooder is served again (%s)", r ? fed_msg_kind(r) :
	    "no reply");
	fed_msg_free(r);
	T_OK(log_has("AGG-RATE") && log_has("node n1: over 10 requests/s"),
	    "the aggregator logs AGG-RATE naming n1");
	peer_close(&f);
	peer_close(&g);
	agg_stop();
}

/* Requests that name no node yet (StatusRequest, Join before its checks,
 * malformed messages) share anon_rate_limit_per_s: a flood of
 * StatusRequests is refused beyond it, logged once, and a Join after a
 * quiet second goes through. */
static void
test_anon_rate(void)
{
	peer f, j;
	int refused = 0, served = 0;
	T_PASS(agg_start("anon", "\"anon_rate_limit_per_s\": 20", 1, 2, 2,
	    600));
	T_PASS(peer_open(&f, "n1"));
	double t0 = fs_now();
	for (int i = 0; i < 150; i++) {
		Fedseg__StatusRequest sr = FEDSEG__STATUS_REQUEST__INIT;
		Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
		env.body_case = FEDSEG__ENVELOPE__BODY_STATUS_REQUEST;
		env.status_request = &sr;
		Fedseg__Envelope *r = call(f.cli, &env, 10000);
		if (r && r->body_case == FEDSEG__ENVELOPE__BODY_ERROR &&
		    r->error->code == FED_ERR_REQUEST &&
		    strstr(r->error->reason, "before a node is known"))
			refused++;
		else if (r && r->body_case == FEDSEG__ENVELOPE__BODY_STATUS)
			served++;
		fed_msg_free(r);
	}
	double took = fs_now() - t0;
	int most = 20 * ((int)took + 2);
	T_OK(refused > 0 && served <= most && served + refused == 150,
	    "150 StatusRequests in %.2f s at anon_rate_limit_per_s 20: %d "
	    "served (at most %d), %d refused with Error 4", took, served,
	    most, refused);
	T_OK(log_has("requests/s that name no node yet"), "AGG-RATE logged "
	    "for the anonymous flood");
	usleep(1100000);
	T_OK(peer_open(&j, "n2") == 0, "after a quiet second a new node's "
	    "Join goes through");
	peer_close(&f);
	peer_close(&j);
	agg_stop();
}

/* ---- test 5: a certificate revoked mid-run ------------------------------------ */

/* Opens a connection with cn's certificate and joins. 0: joined;
 * 1: refused at the TLS handshake; 2: handshake passed, Join refused. */
static int
try_join(const char *cn, char *why, size_t wl)
{
	peer p;
	char pem[PATH_MAX + 64], ca[PATH_MAX + 64];
	memset(&p, 0, sizeof p);
	p.cn = cn;
	snprintf(pem, sizeof pem, "%s/pki/%s.pem", T, cn);
	snprintf(ca, sizeof ca, "%s/pki/ca.crt", T);
	fed_tls_paths tls = { pem, ca, NULL };
	p.id = fed_identity_load(pem, pem);
	p.cli = fed_client_open(URL, &tls, 0);
	if (p.cli == NULL) {
		snprintf(why, wl, "%s", fs_error());
		fed_identity_free(p.id);
		return 1;
	}
	int rv = peer_join(&p) == 0 ? 0 : 2;
	snprintf(why, wl, "%s", rv ? fs_error() : "joined");
	peer_close(&p);
	return rv;
}

/* Issue 6 test 5: three nodes finish round 1; in round 2 the operator
 * revokes "victim" and sends SIGHUP. Its session ends at once (no more
 * Tasks), its update on the connection it already has is refused at the
 * certificate check, a new connection is refused (at the handshake; the
 * one accept nng 1.5 already had pending still uses the old TLS config,
 * so that one is refused at Join instead), and n1 + n2 finish rounds 2
 * and 3 without it. */
static void
test_revoke(void)
{
	peer p[3];
	const char *cn[3] = { "n1", "n2", "victim" };
	char why[512], d[PATH_MAX + 64];
	float *dl[3];
	T_PASS(agg_start("revoke", "", 3, 2, 2, 600));
	for (int i = 0; i < 3; i++) {
		T_PASS(peer_open(&p[i], cn[i]));
		dl[i] = delta(i + 1, 1.0f);
	}
	for (int i = 0; i < 3; i++)
		T_PASS(get_task(&p[i], NULL));
	for (int i = 0; i < 3; i++)
		T_OK(send_update(&p[i], dl[i], why, sizeof why) == 1,
		    "round 1: %s's update accepted", cn[i]);
	float *g1 = model(1);
	cJSON *l = ledger_round(1);
	cJSON *nodes = l ? cJSON_GetObjectItem(l, "nodes") : NULL;
	T_OK(g1 && cJSON_GetArraySize(nodes) == 3, "round 1 closes with the "
	    "three nodes");
	cJSON_Delete(l);
	free(g1);
	for (int i = 0; i < 3; i++)
		T_PASS(get_task(&p[i], NULL));
	/* mid-round 2: revoke and SIGHUP */
	snprintf(d, sizeof d, "%s/pki", T);
	T_PASS(certs_revoke(d, "victim", "keyCompromise"));
	kill(AP, SIGHUP);
	for (int i = 0; i < 100 && !log_has("CRL reloaded"); i++)
		usleep(50000);
	T_OK(log_has("CRL reloaded"), "SIGHUP: the aggregator reloads the CRL");
	T_OK(log_has("AGG-REVOKED") && log_has("node victim: session ended"),
	    "victim's session ends at the reload (AGG-REVOKED)");
	int a = send_update(&p[2], dl[2], why, sizeof why);
	T_OK(a == 0 && strstr(why, "revoked") != NULL, "victim's round-2 "
	    "update on its open connection is refused at the certificate "
	    "check: \"%s\"", why);
	Fedseg__Envelope *r = task_request(&p[2], UINT32_MAX);
	T_OK(r && r->body_case == FEDSEG__ENVELOPE__BODY_ERROR &&
	    r->error->code == FED_ERR_AUTH, "victim's old session gets no Task "
	    "(%s)", r && r->body_case == FEDSEG__ENVELOPE__BODY_ERROR ?
	    r->error->reason : (r ? fed_msg_kind(r) : "no reply"));
	fed_msg_free(r);
	/* new connections: at most the one pending accept passes the
	 * handshake (then Join refuses the certificate); then the handshake
	 * refuses it */
	int k = try_join("victim", why, sizeof why);
	int k1 = k;
	char why1[512];
	snprintf(why1, sizeof why1, "%s", why);
	if (k == 2)
		k = try_join("victim", why, sizeof why);
	T_OK(k1 != 0 && (k1 == 1 || strstr(why1, "revoked") != NULL),
	    "victim's first new connection refused (%s): %s", k1 == 1 ?
	    "TLS handshake" : "Join, the pending accept had the old config",
	    why1);
	T_OK(k == 1, "victim's next new connection refused at the TLS "
	    "handshake: %s", why);
	/* the others carry on */
	for (int i = 0; i < 2; i++)
		T_OK(send_update(&p[i], dl[i], why, sizeof why) == 1,
		    "round 2: %s's update accepted (%s)", cn[i], why);
	float *g2 = model(2);
	l = ledger_round(2);
	nodes = l ? cJSON_GetObjectItem(l, "nodes") : NULL;
	T_OK(g2 && cJSON_GetArraySize(nodes) == 2, "round 2 closes with n1 and "
	    "n2 only, without waiting for victim");
	cJSON_Delete(l);
	free(g2);
	for (int i = 0; i < 2; i++) {
		T_PASS(get_task(&p[i], NULL));
		T_OK(p[i].round == 3 && send_update(&p[i], dl[i], why,
		    sizeof why) == 1, "round 3: %s's update accepted", cn[i]);
	}
	float *g3 = model(3);
	T_OK(g3 != NULL, "round 3 closes: the federation finished without "
	    "victim");
	free(g3);
	for (int i = 0; i < 3; i++) {
		peer_close(&p[i]);
		free(dl[i]);
	}
	agg_stop();
}

/* ---- Task fan-out bound ------------------------------------------------------- */

typedef struct {
	peer *p;
	pthread_barrier_t *go;
	int got, waits;
} slot_job;

/* Asks for a Task until one comes (60 s at most), counting the Waits that
 * say the model transfers are busy. */
static void *
slot_thread(void *arg)
{
	slot_job *j = arg;
	pthread_barrier_wait(j->go);
	double end = fs_now() + 60;
	while (!j->got && fs_now() < end) {
		Fedseg__Envelope *r = task_request(j->p, UINT32_MAX);
		int ms = 50;
		if (r && r->body_case == FEDSEG__ENVELOPE__BODY_TASK)
			j->got = 1;
		else if (r && r->body_case == FEDSEG__ENVELOPE__BODY_WAIT) {
			ms = (int)r->wait->retry_after_ms;
			j->waits += strstr(r->wait->reason, "model transfers "
			    "busy") != NULL;
		}
		fed_msg_free(r);
		if (!j->got)
			usleep((useconds_t)ms * 1000);
	}
	return NULL;
}

/* Most "(K of M in flight)" in the log's AGG-TRANSFER lines, and their
 * number. */
static int
log_max_inflight(int *lines)
{
	char *text = NULL, *s;
	size_t n;
	int most = 0;
	*lines = 0;
	if (fs_read_file(ALOG, 1 << 24, (void **)&text, &n) != 0)
		return -1;
	for (s = text; (s = strstr(s, "transfer slot taken (")) != NULL; s++) {
		int k = atoi(s + strlen("transfer slot taken ("));
		most = k > most ? k : most;
		(*lines)++;
	}
	free(text);
	return most;
}

/* max_task_transfers 1, three nodes asking for their Task at once with a
 * model big enough (~6 M floats, 24 MB per Task) that one transfer takes
 * a while: every node gets its Task, the others are told to wait
 * meanwhile, and the aggregator never had two transfers in flight. */
static void
test_task_slots(void)
{
	peer p[3];
	const char *cn[3] = { "n1", "n2", "n3" };
	slot_job j[3];
	pthread_t t[3];
	pthread_barrier_t go;
	T_PASS(agg_start("slots", "\"max_task_transfers\": 1, "
	    "\"model\": {\"base\": 24, \"depth\": 4}", 1, 3, 3, 600));
	for (int i = 0; i < 3; i++)
		T_PASS(peer_open(&p[i], cn[i]));
	pthread_barrier_init(&go, NULL, 3);
	int waits = 0, got = 0;
	for (int i = 0; i < 3; i++) {
		j[i] = (slot_job){ &p[i], &go, 0, 0 };
		pthread_create(&t[i], NULL, slot_thread, &j[i]);
	}
	for (int i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		got += j[i].got;
		waits += j[i].waits;
	}
	pthread_barrier_destroy(&go);
	T_OK(got == 3, "max_task_transfers 1: all three nodes get their Task "
	    "(%d of 3)", got);
	T_OK(waits > 0, "meanwhile the aggregator answered Wait \"model "
	    "transfers busy\" (%d time(s))", waits);
	int lines = 0, most = log_max_inflight(&lines);
	T_OK(lines == 3 && most == 1, "the log shows 3 transfer slots taken, "
	    "never more than 1 in flight (%d lines, most %d)", lines, most);
	for (int i = 0; i < 3; i++)
		peer_close(&p[i]);
	agg_stop();
}

/* max_model_transfers 1 shared by Tasks and uploads, grants lapsing after
 * 1 s, four nodes holding updates: a granted node holds the one slot (the
 * next asker is told Wait "upload slots busy", an Update sent without a
 * grant meanwhile is refused "busy ... no valid upload grant"); a grant
 * never used expires and its slot goes to the next asker; all three
 * granted updates are accepted in turn, and an Update sent without a grant
 * while the slot is free is accepted (docs/protocol.md, "Uploads"). */
static void
test_upload_slots(void)
{
	peer p[4];
	const char *cn[4] = { "n1", "n2", "n3", "n4" };
	uint8_t tok[3][16];
	char why[256];
	T_PASS(agg_start("uploads", "\"max_model_transfers\": 1, "
	    "\"upload_grant_ms\": 1000", 1, 4, 4, 600));
	for (int i = 0; i < 4; i++)
		T_PASS(peer_open(&p[i], cn[i]));
	for (int i = 0; i < 4; i++)
		T_PASS(get_task(&p[i], NULL));
	float *d = delta(1, 0.01f);
	T_OK(upload_grant(&p[0], tok[0], why, sizeof why) == 1, "n1 granted "
	    "the upload slot (%s)", why);
	int w = upload_request(&p[1], tok[1], why, sizeof why);
	T_OK(w == 0 && strstr(why, "upload slots busy") != NULL, "n2 told "
	    "Wait while n1 holds the slot: %s", why);
	int a = send_update_grant(&p[2], d, NULL, why, sizeof why);
	T_OK(a == 0 && strncmp(why, "busy", 4) == 0 && strstr(why,
	    "no valid upload grant") != NULL, "n3's Update without a grant "
	    "refused while the slot is held: %s", why);
	/* n1 never uses its grant: after 1 s n2 (asking) gets the slot */
	double t0 = fs_now();
	T_OK(upload_grant(&p[1], tok[1], why, sizeof why) == 1, "n2 granted "
	    "after n1's grant lapsed (%.1f s; %s)", fs_now() - t0, why);
	T_OK(log_has("upload grant unused"), "the log says n1's grant "
	    "expired");
	T_OK(upload_request(&p[2], tok[2], why, sizeof why) == 0 &&
	    strstr(why, "upload slots busy") != NULL, "n3 waits for n2: %s",
	    why);
	T_OK(send_update_grant(&p[1], d, tok[1], why, sizeof why) == 1,
	    "n2's granted update accepted: %s", why);
	T_OK(upload_grant(&p[2], tok[2], why, sizeof why) == 1 &&
	    send_update_grant(&p[2], d, tok[2], why, sizeof why) == 1,
	    "n3 granted in turn, its update accepted: %s", why);
	T_OK(upload_grant(&p[0], tok[0], why, sizeof why) == 1 &&
	    send_update_grant(&p[0], d, tok[0], why, sizeof why) == 1,
	    "n1 asks again, granted, its update accepted: %s", why);
	T_OK(send_update_grant(&p[3], d, NULL, why, sizeof why) == 1,
	    "n4's Update without a grant accepted while the slot is free: %s",
	    why);
	T_OK(upload_request(&p[3], tok[0], why, sizeof why) == 2 &&
	    (strstr(why, "closed") != NULL || strstr(why, "duplicate") !=
	    NULL), "asking to upload once more after "
	    "being counted is answered with the UpdateAck at once: %s",
	    why);
	int lines = 0, most = log_max_inflight(&lines);
	T_OK(most <= 1, "never more than 1 model transfer in flight (%d "
	    "lines, most %d)", lines, most);
	free(d);
	for (int i = 0; i < 4; i++)
		peer_close(&p[i]);
	agg_stop();
}

/* ---- allow-list ---------------------------------------------------------------- */

static void
test_allow_list(void)
{
	peer p;
	T_PASS(agg_start("allow", "\"allowed_nodes\": [\"n1\", \"n2\"]", 1, 2,
	    1, 600));
	T_OK(peer_open(&p, "n1") == 0, "n1 (listed) joins");
	peer_close(&p);
	int rv = peer_open(&p, "n3");
	T_OK(rv != 0 && strstr(fs_error(), "allowed_nodes") != NULL,
	    "n3 (valid certificate, not listed) refused: %s", fs_error());
	peer_close(&p);
	agg_stop();
}

int
main(void)
{
	char d[PATH_MAX + 64];
	if (h_bin() == NULL) {
		printf("FAIL: FEDSEG_BIN not set (run through ctest)\n");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	model_spec s = model_spec_default();
	model_table t;
	s.base = 4;
	s.depth = 2;
	model_table_build(&s, &t);
	NW = t.total;
	char *tt = model_table_text(&t);
	fed_sha256(tt, strlen(tt), TABLE);
	free(tt);
	model_table_free(&t);
	T_PASS(h_tmpdir("robust", T));
	snprintf(d, sizeof d, "%s/pki", T);
	T_PASS(certs_init(d, "robust", 30));
	T_PASS(certs_issue(d, "aggregator", "aggregator", NULL, NULL, 30));
	const char *nodes[] = { "n1", "n2", "n3", "n4", "mallory", "victim",
		NULL };
	for (int i = 0; nodes[i]; i++)
		T_PASS(certs_issue(d, "node", nodes[i], NULL, NULL, 30));
	if (t_fails)
		T_DONE();
	test_deadline();
	test_deadline_short();
	test_expiry();
	test_rejoin();
	test_replacement();
	test_server_opt("fedadam", 1);
	test_server_opt("fedavgm", 0);
	test_server_opt("fedyogi", 0);
	test_corrupt_opt();
	test_allow_list();
	test_rate_limit();
	test_anon_rate();
	test_revoke();
	test_task_slots();
	test_upload_slots();
	if (t_fails == 0)
		h_rmtree(T);
	else
		printf("kept %s\n", T);
	T_DONE();
}
