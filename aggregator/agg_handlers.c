/*
 * agg_handlers.c - one function per request kind: Join, TaskRequest,
 * Update, StatusRequest. Run on the transport's worker threads.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg_impl.h"
#include "base.h"
#include "codec.h"

#define CLOCK_SKEW_MS (10 * 60 * 1000)

static nng_msg *
reply(Fedseg__Envelope *env)
{
	nng_msg *m = NULL;
	if (fed_msg_pack(env, &m) != 0)
		fs_log(FS_LOG_ERR, "AGG-PACK", "%s", fs_error());
	return m;
}

agg_node *
agg_node_find(agg *a, const char *cn)
{
	for (int i = 0; i < a->nnodes; i++)
		if (strcmp(a->nodes[i].cn, cn) == 0)
			return &a->nodes[i];
	return NULL;
}

static agg_node *
node_by_session(agg *a, const ProtobufCBinaryData *s)
{
	if (s->len != FED_NONCE_LEN)
		return NULL;
	for (int i = 0; i < a->nnodes; i++)
		if (a->nodes[i].has_session && memcmp(a->nodes[i].session,
		    s->data, FED_NONCE_LEN) == 0)
			return &a->nodes[i];
	return NULL;
}

static int
allowed(const agg *a, const char *cn)
{
	const char *p = a->cfg.allowed_nodes;
	size_t l = strlen(cn);
	if (p[0] == '\0')
		return 1;
	while (*p) {
		const char *e = strchr(p, '\n');
		size_t k = e ? (size_t)(e - p) : strlen(p);
		if (k == l && memcmp(p, cn, l) == 0)
			return 1;
		p += k + (e != NULL);
	}
	return 0;
}

int
agg_update_cert(agg *a, const ProtobufCBinaryData *pem, char cn[FED_CN_MAX])
{
	if (pem->len == 0 || pem->len > 65536)
		return fs_seterr("no certificate in the message");
	pthread_mutex_lock(&a->trust_mu);
	int rv = fed_trust_verify_cert(a->trust, (const char *)pem->data,
	    pem->len, "node", cn);
	pthread_mutex_unlock(&a->trust_mu);
	if (rv == 0 && !allowed(a, cn))
		return fs_seterr("node %s is not in allowed_nodes", cn);
	return rv;
}

/* Per-node rate limit (rate_limit_per_s requests in any 1 s window),
 * under a->mu. Returns 1 if this request may go on. */
static int
rate_ok(agg *a, agg_node *n)
{
	double now = fs_now();
	if (a->cfg.rate_per_s <= 0 || n == NULL)
		return 1;
	if (now - n->window_start >= 1.0) {
		n->window_start = now;
		n->window_count = 0;
	}
	if (++n->window_count <= a->cfg.rate_per_s)
		return 1;
	if (n->window_count == a->cfg.rate_per_s + 1)
		fs_log(FS_LOG_WARN, "AGG-RATE", "node %s: over %d requests/s; "
		    "refusing the excess", n->cn, a->cfg.rate_per_s);
	return 0;
}

/* Requests that name no known node before the work they cost (a Join,
 * before its certificate chain and signature are verified; a
 * StatusRequest; a malformed or unexpected message) share one budget of
 * anon_rate_limit_per_s in any 1 s window, whoever sends them: a peer past
 * TLS cannot make the aggregator verify signatures or write log lines
 * without bound. Returns 1 if this request may go on. */
static int
anon_ok(agg *a, const char *what)
{
	if (a->cfg.anon_rate_per_s <= 0)
		return 1;
	pthread_mutex_lock(&a->anon_mu);
	double now = fs_now();
	if (now - a->anon_start >= 1.0) {
		a->anon_start = now;
		a->anon_count = 0;
	}
	int n = ++a->anon_count;
	pthread_mutex_unlock(&a->anon_mu);
	if (n <= a->cfg.anon_rate_per_s)
		return 1;
	if (n == a->cfg.anon_rate_per_s + 1)
		fs_log(FS_LOG_WARN, "AGG-RATE", "over %d requests/s that name "
		    "no node yet (this one: %s); refusing the excess for the "
		    "rest of the second", a->cfg.anon_rate_per_s, what);
	return 0;
}

static nng_msg *
anon_refused(agg *a)
{
	return fed_msg_error(FED_ERR_REQUEST, "rate limit: at most %d "
	    "requests/s before a node is known", a->cfg.anon_rate_per_s);
}

int
agg_recheck_sessions(agg *a)
{
	int ended = 0;
	pthread_mutex_lock(&a->mu);
	for (int i = 0; i < a->nnodes; i++) {
		agg_node *n = &a->nodes[i];
		char cn[FED_CN_MAX];
		if (!n->has_session || n->cert_pem == NULL)
			continue;
		pthread_mutex_lock(&a->trust_mu);
		int rv = fed_trust_verify_cert(a->trust, n->cert_pem,
		    n->cert_len, "node", cn);
		pthread_mutex_unlock(&a->trust_mu);
		if (rv == 0)
			continue;
		int drop = agg_session_end(a, n);
		ended++;
		fs_log(FS_LOG_WARN, "AGG-REVOKED", "node %s: session ended, its "
		    "certificate is refused now: %s%s", n->cn, fs_error(), drop ?
		    "; dropped from this round" : "");
	}
	pthread_mutex_unlock(&a->mu);
	if (ended > 0)
		pthread_cond_signal(&a->cv);
	return ended;
}

/* ---- Join ---------------------------------------------------------------- */

static int
join_check(agg *a, const Fedseg__Join *j, char cn[FED_CN_MAX])
{
	uint8_t text[FED_SIGTEXT_MAX];
	if (agg_update_cert(a, &j->cert_pem, cn) != 0)
		return -1;
	if (j->nonce.len != FED_NONCE_LEN)
		return fs_seterr("nonce must be %d bytes", FED_NONCE_LEN);
	int64_t skew = (int64_t)fed_unix_ms() - (int64_t)j->time_unix_ms;
	if (skew > CLOCK_SKEW_MS || skew < -CLOCK_SKEW_MS)
		return fs_seterr("clock skew of %lld s", (long long)skew / 1000);
	size_t tl = fed_sigtext_join(text, j->nonce.data, j->time_unix_ms);
	if (fed_verify((const char *)j->cert_pem.data, j->cert_pem.len, text,
	    tl, j->signature.data, j->signature.len) != 0)
		return fs_seterr("bad Join signature");
	return 0;
}

static int
node_add(agg *a, const char *cn, const uint8_t session[FED_NONCE_LEN],
    const ProtobufCBinaryData *pem)
{
	agg_node *n = agg_node_get(a, cn);
	if (n == NULL)
		return -1;
	char *copy = malloc(pem->len + 1);
	if (copy == NULL)
		return fs_seterr("out of memory");
	memcpy(copy, pem->data, pem->len);
	copy[pem->len] = '\0';
	free(n->cert_pem);
	n->cert_pem = copy;
	n->cert_len = pem->len;
	memcpy(n->session, session, FED_NONCE_LEN);
	n->has_session = 1;
	n->task_round = 0;
	n->inflight = 0;
	agg_upload_drop(a, n);
	n->last_seen = fs_now();
	n->got_done = 0;
	return 0;
}

static nng_msg *
on_join(agg *a, const Fedseg__Join *j)
{
	char cn[FED_CN_MAX] = "?";
	uint8_t session[FED_NONCE_LEN], text[FED_SIGTEXT_MAX], *sig = NULL;
	size_t sl = 0, pl = 0;
	if (join_check(a, j, cn) != 0) {
		fs_log(FS_LOG_WARN, "AGG-REFUSE", "join refused (cn %s): %s",
		    cn, fs_error());
		return fed_msg_error(FED_ERR_AUTH, "join refused: %s",
		    fs_error());
	}
	if (fed_random(session, sizeof session) != 0)
		return fed_msg_error(FED_ERR_INTERNAL, "%s", fs_error());
	size_t tl = fed_sigtext_joinack(text, session, j->nonce.data);
	if (fed_sign(a->id, text, tl, &sig, &sl) != 0)
		return fed_msg_error(FED_ERR_INTERNAL, "%s", fs_error());
	pthread_mutex_lock(&a->mu);
	if (!rate_ok(a, agg_node_find(a, cn))) {
		pthread_mutex_unlock(&a->mu);
		free(sig);
		return fed_msg_error(FED_ERR_REQUEST, "rate limit: at most %d "
		    "requests/s", a->cfg.rate_per_s);
	}
	int rv = node_add(a, cn, session, &j->cert_pem);
	int joined = 0;
	for (int i = 0; i < a->nnodes; i++)
		joined += a->nodes[i].has_session;
	pthread_mutex_unlock(&a->mu);
	if (rv != 0) {
		free(sig);
		return fed_msg_error(FED_ERR_INTERNAL, "%s", fs_error());
	}
	pthread_cond_signal(&a->cv);
	fs_log(FS_LOG_INFO, "AGG-JOIN", "node %s joined (%d with a live "
	    "session)", cn, joined);
	Fedseg__JoinAck ack = FEDSEG__JOIN_ACK__INIT;
	ack.session = (ProtobufCBinaryData){ FED_NONCE_LEN, session };
	ack.nonce_echo = j->nonce;
	ack.aggregator_cert_pem.data =
	    (uint8_t *)fed_identity_cert_pem(a->id, &pl);
	ack.aggregator_cert_pem.len = pl;
	ack.signature = (ProtobufCBinaryData){ sl, sig };
	ack.max_message_bytes = a->cfg.max_message_bytes;
	ack.codec = (uint32_t)a->cfg.codec;
	ack.model_spec_json = a->spec_json;
	ack.rounds = (uint32_t)a->cfg.rounds;
	ack.table_digest = (ProtobufCBinaryData){ 32, a->table_digest };
	ack.cn = cn;
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_JOIN_ACK;
	env.join_ack = &ack;
	nng_msg *m = reply(&env);
	free(sig);
	return m;
}

/* ---- TaskRequest --------------------------------------------------------- */

static nng_msg *
wait_reply_ms(int ms, const char *reason)
{
	Fedseg__Wait w = FEDSEG__WAIT__INIT;
	w.retry_after_ms = (uint32_t)ms;
	w.reason = (char *)reason;
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_WAIT;
	env.wait = &w;
	return reply(&env);
}

/* ---- model transfer slots -------------------------------------------------
 *
 * Every Task and Done reply carries the whole model, packed into its own
 * nng message that nng holds until it is written out; every Update brings
 * one in (nng reads a request whole before the handler sees it). One
 * budget, max_model_transfers, bounds both: a slot is held by a Task/Done
 * reply from the handler's return until the transport reports it written
 * (agg_task_sent), and by an upload from its UploadGrant until its Update
 * has been checked (accepted or not) or the grant lapsed (upload_grant_ms).
 * A node asking beyond that gets a Wait with a short retry hint. First
 * come, first served across both kinds: a node told to wait keeps its
 * place (task_queued) as long as it keeps asking, and a newer asker does
 * not take a slot that an older waiter is due. */

/* Retry hint for a node waiting for a slot (ms). */
static int
slot_retry_ms(const agg *a)
{
	return a->cfg.wait_ms < 200 ? a->cfg.wait_ms : 200;
}

/* Under a->mu: unused upload grants past their time give their slot back. */
static void
grants_expire(agg *a)
{
	double now = fs_now();
	for (int i = 0; i < a->nnodes; i++) {
		agg_node *o = &a->nodes[i];
		if (o->upload_slot != UP_GRANTED || now <= o->grant_expires)
			continue;
		o->upload_slot = UP_NONE;
		if (a->cfg.max_model_transfers > 0)
			a->task_inflight--;
		fs_log(FS_LOG_WARN, "AGG-GRANT", "node %s: upload grant unused "
		    "for %d ms: expired, slot given back", o->cn,
		    a->cfg.upload_grant_ms);
	}
}

void
agg_upload_drop(agg *a, agg_node *n)
{
	if (n->upload_slot != UP_GRANTED)
		return;
	n->upload_slot = UP_NONE;
	if (a->cfg.max_model_transfers > 0)
		a->task_inflight--;
}

/* Under a->mu. 1: a slot may be taken for n now (the caller counts it);
 * 0: n waits (its place in line is kept), why says so. */
static int
slot_free(agg *a, agg_node *n, const char *what, char *why, size_t wl)
{
	int k = a->cfg.max_model_transfers, ahead = 0;
	double now = fs_now(), fresh = 3 * slot_retry_ms(a) / 1000.0 + 1.0;
	if (k <= 0)
		return 1;
	grants_expire(a);
	for (int i = 0; i < a->nnodes && a->task_inflight < k; i++) {
		const agg_node *o = &a->nodes[i];
		if (o != n && o->task_queued > 0 && o->has_session &&
		    now - o->last_seen <= fresh && (n->task_queued == 0 ||
		    o->task_queued < n->task_queued))
			ahead++;
	}
	if (a->task_inflight + ahead >= k) {
		if (n->task_queued == 0)
			n->task_queued = now;
		snprintf(why, wl, "%s busy (%d of %d model transfers in "
		    "flight, %d node(s) ahead)", what, a->task_inflight, k,
		    ahead);
		return 0;
	}
	n->task_queued = 0;
	return 1;
}

/* Under a->mu. 1: a slot is taken for n's Task/Done reply (it must be
 * tracked, or the slot given back with slot_give); 0: n waits. */
static int
slot_take(agg *a, agg_node *n, char *why, size_t wl)
{
	if (a->cfg.max_model_transfers <= 0)
		return 1;
	if (n->task_sending) {
		snprintf(why, wl, "the previous model sent to this node is "
		    "still in transfer");
		return 0;
	}
	if (!slot_free(a, n, "model transfers", why, wl))
		return 0;
	n->task_sending = 1;
	a->task_inflight++;
	fs_log(FS_LOG_INFO, "AGG-TRANSFER", "node %s: model transfer slot "
	    "taken (%d of %d in flight)", n->cn, a->task_inflight,
	    a->cfg.max_model_transfers);
	return 1;
}

/* Under a->mu: n's upload takes a slot (state st = UP_GRANTED or
 * UP_CHECKING); 0 if none is free. */
static int
upload_take(agg *a, agg_node *n, int st, char *why, size_t wl)
{
	if (!slot_free(a, n, "upload slots", why, wl))
		return 0;
	n->upload_slot = st;
	if (a->cfg.max_model_transfers > 0)
		a->task_inflight++;
	return 1;
}

/* Under a->mu: the Update of n has been checked; its slot goes back. */
static void
upload_done(agg *a, agg_node *n)
{
	if (n->upload_slot == UP_NONE)
		return;
	n->upload_slot = UP_NONE;
	if (a->cfg.max_model_transfers > 0)
		a->task_inflight--;
}

/* Under a->mu: gives a slot back (reply not sent, or written out). */
static void
slot_give(agg *a, agg_node *n)
{
	if (n->task_sending) {
		n->task_sending = 0;
		a->task_inflight--;
	}
}

void
agg_task_sent(void *user, void *track)
{
	agg *a = user;
	intptr_t i = (intptr_t)track - 1;
	pthread_mutex_lock(&a->mu);
	if (i >= 0 && i < a->nnodes)
		slot_give(a, &a->nodes[i]);
	pthread_mutex_unlock(&a->mu);
}

/* The track value of node n's reply. */
static void *
slot_track(agg *a, agg_node *n)
{
	if (a->cfg.max_model_transfers <= 0)
		return NULL;
	return (void *)(intptr_t)(n - a->nodes + 1);
}

static nng_msg *
wait_reply(agg *a, const char *reason)
{
	Fedseg__Wait w = FEDSEG__WAIT__INIT;
	w.retry_after_ms = (uint32_t)a->cfg.wait_ms;
	w.reason = (char *)reason;
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_WAIT;
	env.wait = &w;
	return reply(&env);
}

/* Under a->mu. */
static nng_msg *
task_reply(agg *a)
{
	Fedseg__TrainSettings ts = FEDSEG__TRAIN_SETTINGS__INIT;
	ts.local_steps = (uint32_t)a->cfg.train_steps;
	ts.lr = a->cfg.train_lr;
	ts.batch = (uint32_t)a->cfg.train_batch;
	ts.patch = (uint32_t)a->cfg.train_patch;
	ts.fg_share = a->cfg.train_fg_share;
	ts.prox_mu = a->cfg.train_prox_mu;
	ts.seed = a->cfg.seed * 1000003u + a->round;
	Fedseg__Task t = FEDSEG__TASK__INIT;
	t.round = a->round;
	t.version = a->version;
	t.weights = (ProtobufCBinaryData){ a->task_len, a->task_payload };
	t.model_digest = (ProtobufCBinaryData){ 32, a->digest };
	t.signature = (ProtobufCBinaryData){ a->task_siglen, a->task_sig };
	t.train = &ts;
	double left = a->deadline - fs_now();
	t.deadline_unix_ms = fed_unix_ms() + (uint64_t)(left > 0 ? left * 1000 : 0);
	t.codec = (uint32_t)a->cfg.codec;
	if (a->cfg.codec == FED_CODEC_TOPK)
		t.topk_fraction = a->cfg.topk_fraction;
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_TASK;
	env.task = &t;
	return reply(&env);
}

/* Under a->mu. */
static nng_msg *
done_reply(agg *a, agg_node *n)
{
	Fedseg__Done d = FEDSEG__DONE__INIT;
	d.final_version = a->version;
	d.model_digest = (ProtobufCBinaryData){ 32, a->digest };
	d.weights = (ProtobufCBinaryData){ a->task_len, a->task_payload };
	d.signature = (ProtobufCBinaryData){ a->task_siglen, a->task_sig };
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_DONE;
	env.done = &d;
	if (n != NULL && !n->got_done) {
		n->got_done = 1;
		fs_log(FS_LOG_INFO, "AGG-DONE", "node %s told done (version %u)",
		    n->cn, a->version);
	}
	return reply(&env);
}

/* Takes a->mu and returns the node of session within its rate limit; else
 * NULL with a->mu released and *err the Error to answer. */
static agg_node *
session_lock(agg *a, const ProtobufCBinaryData *session, nng_msg **err)
{
	pthread_mutex_lock(&a->mu);
	agg_node *n = node_by_session(a, session);
	if (n == NULL) {
		pthread_mutex_unlock(&a->mu);
		*err = fed_msg_error(FED_ERR_AUTH, "unknown session: Join "
		    "first");
		return NULL;
	}
	if (!rate_ok(a, n)) {
		pthread_mutex_unlock(&a->mu);
		*err = fed_msg_error(FED_ERR_REQUEST, "rate limit: at most %d "
		    "requests/s", a->cfg.rate_per_s);
		return NULL;
	}
	return n;
}

static nng_msg *
on_task_request(agg *a, const Fedseg__TaskRequest *r, void **track)
{
	char why[128];
	nng_msg *m;
	agg_node *n = session_lock(a, &r->session, &m);
	if (n == NULL)
		return m;
	n->last_seen = fs_now();
	if (a->phase == AGG_TRAINING && !n->selected &&
	    n->submitted != a->round) {
		/* joined or came back mid-round: it gets the current task */
		n->selected = 1;
		a->nselected++;
		fs_log(FS_LOG_INFO, "AGG-SELECT", "node %s joins round %u in "
		    "progress (%d selected)", n->cn, a->round, a->nselected);
	}
	int heartbeat = a->phase == AGG_TRAINING && n->selected &&
	    n->submitted != a->round && n->task_round == a->round &&
	    r->have_version == a->version;
	int wants = a->phase == AGG_DONE || (!heartbeat &&
	    a->phase == AGG_TRAINING && n->selected &&
	    n->submitted != a->round);
	if (!wants && !heartbeat)
		n->task_queued = 0; /* a heartbeat keeps an upload's place */
	if (wants && !slot_take(a, n, why, sizeof why)) {
		m = wait_reply_ms(slot_retry_ms(a), why);
	} else if (a->phase == AGG_DONE) {
		m = done_reply(a, n);
		if (m != NULL)
			*track = slot_track(a, n);
		else
			slot_give(a, n);
	} else if (heartbeat) {
		/* it holds this round's model: a heartbeat while training */
		snprintf(why, sizeof why, "round %u: training (heartbeat)",
		    a->round);
		m = wait_reply(a, why);
	} else if (wants) {
		m = task_reply(a);
		if (m != NULL) {
			a->bytes_out += (double)nng_msg_len(m);
			n->task_round = a->round;
			*track = slot_track(a, n);
		} else {
			slot_give(a, n);
		}
	} else {
		if (a->phase == AGG_WAITING)
			snprintf(why, sizeof why, "waiting for nodes (%d of "
			    "%d joined)", a->nnodes, a->cfg.min_nodes);
		else if (a->phase == AGG_CLOSING)
			snprintf(why, sizeof why, "closing round %u", a->round);
		else if (n->submitted == a->round)
			snprintf(why, sizeof why, "round %u: update received, "
			    "waiting for the others", a->round);
		else
			snprintf(why, sizeof why, "round %u in progress "
			    "without this node; next round", a->round);
		m = wait_reply(a, why);
	}
	pthread_mutex_unlock(&a->mu);
	return m;
}

/* ---- Update -------------------------------------------------------------- */

static nng_msg *
ack_reply(uint32_t round, int accepted, const char *reason)
{
	Fedseg__UpdateAck ack = FEDSEG__UPDATE_ACK__INIT;
	ack.accepted = accepted;
	ack.reason = (char *)reason;
	ack.round = round;
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_UPDATE_ACK;
	env.update_ack = &ack;
	return reply(&env);
}

enum { U_OK = 0, U_REJECT = 1, U_LATE = 2, U_DUP = 3 };

/* Checks an update (or an UploadRequest for one) against the round state,
 * under a->mu. */
static int
update_state_check(agg *a, const ProtobufCBinaryData *session,
    uint32_t round, uint32_t base_version, const char *cn, char *why,
    size_t wl)
{
	agg_node *n = node_by_session(a, session);
	if (n == NULL || strcmp(n->cn, cn) != 0) {
		snprintf(why, wl, "unknown session for %s: Join first", cn);
		return U_REJECT;
	}
	n->last_seen = fs_now();
	if (round < a->round || (round == a->round &&
	    (a->phase == AGG_CLOSING || a->phase == AGG_DONE))) {
		snprintf(why, wl, "late: round %u is closed", round);
		return n->submitted == round ? U_DUP : U_LATE;
	}
	if (round > a->round || a->phase != AGG_TRAINING) {
		snprintf(why, wl, "round %u is not open", round);
		return U_REJECT;
	}
	if (n->submitted == a->round) {
		snprintf(why, wl, "duplicate: already counted for round %u",
		    a->round);
		return U_DUP;
	}
	if (!n->selected) {
		snprintf(why, wl, "not selected for round %u", a->round);
		return U_REJECT;
	}
	if (base_version != a->version) {
		snprintf(why, wl, "wrong base version %u (global is %u)",
		    base_version, a->version);
		return U_REJECT;
	}
	return U_OK;
}

int
agg_payload_check(agg *a, const Fedseg__Update *u, double *norm)
{
	uint8_t d[32];
	double ss = 0;
	if (u->payload_digest.len != 32)
		return fs_seterr("payload digest must be 32 bytes");
	fed_sha256(u->payload.data, u->payload.len, d);
	if (memcmp(d, u->payload_digest.data, 32) != 0)
		return fs_seterr("payload digest mismatch");
	if (u->sample_count == 0 || u->sample_count > 1000000000ull)
		return fs_seterr("sample count %llu out of range",
		    (unsigned long long)u->sample_count);
	/* the SHA-256 above covers header and body: the codec's own body
	 * SHA-256 would hash the same bytes a second time */
	if (fed_codec_check(u->payload.data, u->payload.len, a->n,
	    a->table_digest, FED_CODEC_BODY_AUTHENTICATED, &ss, NULL) != 0)
		return -1;
	*norm = sqrt(ss);
	return 0;
}

int
agg_update_payload_check(agg *a, const Fedseg__Update *u, double *norm)
{
	uint8_t text[FED_SIGTEXT_MAX];
	if (u->payload_digest.len != 32)
		return fs_seterr("payload digest must be 32 bytes");
	if (u->session.len != FED_NONCE_LEN)
		return fs_seterr("bad session");
	size_t tl = fed_sigtext_update(text, u->payload_digest.data, u->round,
	    u->base_version, u->sample_count, u->session.data);
	if (fed_verify((const char *)u->cert_pem.data, u->cert_pem.len, text,
	    tl, u->signature.data, u->signature.len) != 0)
		return fs_seterr("bad signature");
	return agg_payload_check(a, u, norm);
}

/* Takes the lock, re-checks (the round may have moved on while we
 * checked) and adds the update. Returns U_*. */
static int
update_commit(agg *a, const Fedseg__Update *u, const char *cn,
    double norm, const char *file, char *why, size_t wl)
{
	pthread_mutex_lock(&a->mu);
	int st = update_state_check(a, &u->session, u->round, u->base_version,
	    cn, why, wl);
	if (st == U_OK && agg_contrib_add(a, agg_node_find(a, cn), u, norm,
	    file) != 0) {
		snprintf(why, wl, "%s", fs_error());
		st = U_REJECT;
	} else if (st == U_OK) {
		snprintf(why, wl, "accepted for round %u (%d of %d)", a->round,
		    a->ncontrib, a->nselected);
	}
	pthread_mutex_unlock(&a->mu);
	if (st == U_OK)
		pthread_cond_signal(&a->cv);
	return st;
}

static nng_msg *
update_refuse(const char *cn, uint32_t round, int st, const char *why)
{
	if (st == U_REJECT)
		fs_log(FS_LOG_WARN, "AGG-REJECT", "update from %s for round "
		    "%u rejected: %s", cn, round, why);
	else
		fs_log(FS_LOG_INFO, "AGG-IGNORE", "update from %s for round "
		    "%u ignored: %s", cn, round, why);
	/* a duplicate was counted: tell the node so, it can move on */
	return ack_reply(round, st == U_DUP, why);
}

/* Clears the node's in-flight mark (see on_update). */
static void
inflight_clear(agg *a, const char *cn)
{
	pthread_mutex_lock(&a->mu);
	agg_node *n = agg_node_find(a, cn);
	if (n != NULL)
		n->inflight = 0;
	pthread_mutex_unlock(&a->mu);
}

/* Under a->mu: the upload slot for n's Update. The grant it holds (token
 * matching, not lapsed) becomes the slot of the check; without one, a slot
 * free at this moment is taken (an Update that did not ask first is still
 * taken when the aggregator is not busy); otherwise 0 and why says so. */
static int
update_slot(agg *a, agg_node *n, const Fedseg__Update *u, char *why,
    size_t wl)
{
	char busy[160];
	grants_expire(a);
	if (n->upload_slot == UP_GRANTED && u->grant.len == sizeof n->grant &&
	    memcmp(u->grant.data, n->grant, sizeof n->grant) == 0) {
		n->upload_slot = UP_CHECKING;
		return 1;
	}
	if (n->upload_slot == UP_GRANTED)
		agg_upload_drop(a, n); /* a stale token: ask the slot again */
	if (upload_take(a, n, UP_CHECKING, busy, sizeof busy))
		return 1;
	snprintf(why, wl, "busy: %s; no valid upload grant: send an "
	    "UploadRequest first", busy);
	return 0;
}

/* Order: certificate -> state check (and an in-flight mark, so that two
 * copies of one node's update never race for its spool file) -> upload
 * slot -> signature, digest, decoding -> spool file durable -> counted
 * under the lock -> ack. The slot goes back when the check is over. */
static nng_msg *
update_check(agg *a, const Fedseg__Update *u, char cn[FED_CN_MAX],
    int *held)
{
	char why[256], file[80];
	double norm = 0;
	if (agg_update_cert(a, &u->cert_pem, cn) != 0) {
		fs_log(FS_LOG_WARN, "AGG-REJECT", "update refused: %s",
		    fs_error());
		return ack_reply(u->round, 0, fs_error());
	}
	pthread_mutex_lock(&a->mu);
	if (!rate_ok(a, agg_node_find(a, cn))) {
		pthread_mutex_unlock(&a->mu);
		snprintf(why, sizeof why, "busy: rate limit of %d requests/s",
		    a->cfg.rate_per_s);
		return update_refuse(cn, u->round, U_REJECT, why);
	}
	int st = update_state_check(a, &u->session, u->round,
	    u->base_version, cn, why, sizeof why);
	if (st == U_OK) {
		agg_node *n = agg_node_find(a, cn);
		if (n->inflight == u->round) {
			snprintf(why, sizeof why, "busy: another update from "
			    "%s for round %u is being checked", cn, u->round);
			st = U_REJECT;
		} else if (!update_slot(a, n, u, why, sizeof why)) {
			st = U_REJECT;
		} else {
			n->inflight = u->round;
			*held = 1;
		}
	}
	pthread_mutex_unlock(&a->mu);
	if (st != U_OK)
		return update_refuse(cn, u->round, st, why);
	if (agg_update_payload_check(a, u, &norm) != 0) {
		snprintf(why, sizeof why, "%s", fs_error());
		inflight_clear(a, cn);
		return update_refuse(cn, u->round, U_REJECT, why);
	}
	agg_spool_name(cn, file);
	if (agg_spool_write(a, u->round, file, u) != 0) {
		fs_log(FS_LOG_ERR, "AGG-SPOOL", "cannot spool the update from "
		    "%s: %s", cn, fs_error());
		snprintf(why, sizeof why, "aggregator cannot store the update; "
		    "retry later");
		inflight_clear(a, cn);
		return update_refuse(cn, u->round, U_REJECT, why);
	}
	agg_crash_point("after_spool");
	st = update_commit(a, u, cn, norm, file, why, sizeof why);
	inflight_clear(a, cn);
	if (st != U_OK)
		return update_refuse(cn, u->round, st, why);
	char dh[65];
	fed_hex(u->payload_digest.data, 32, dh);
	fs_log(FS_LOG_INFO, "AGG-ACCEPT", "update from %s: %s, %llu samples, "
	    "%zu bytes, norm %.4g, loss %.4f, digest %s", cn, why,
	    (unsigned long long)u->sample_count, u->payload.len, norm,
	    u->metrics ? u->metrics->mean_loss : 0.0, dh);
	agg_crash_point("before_ack");
	return ack_reply(u->round, 1, why);
}

/* The Update has been checked (accepted or not): the upload slot of its
 * node, a grant included, goes back. The caller frees the request (the
 * payload) right after. */
static nng_msg *
on_update(agg *a, const Fedseg__Update *u)
{
	char cn[FED_CN_MAX] = "?";
	int held = 0;
	nng_msg *m = update_check(a, u, cn, &held);
	pthread_mutex_lock(&a->mu);
	agg_node *n = agg_node_find(a, cn);
	if (n != NULL && held) {
		upload_done(a, n);
	} else if (u->grant.len == sizeof a->nodes->grant) {
		/* refused before or after its certificate was checked, perhaps
		 * naming another node: the grant its token names was used
		 * either way, whoever holds it (the token is a 16-byte secret
		 * sent only to the grantee) */
		for (int i = 0; i < a->nnodes; i++) {
			agg_node *o = &a->nodes[i];
			if (o->upload_slot == UP_GRANTED &&
			    memcmp(u->grant.data, o->grant, sizeof o->grant) == 0) {
				agg_upload_drop(a, o);
				break;
			}
		}
	}
	pthread_mutex_unlock(&a->mu);
	return m;
}

/* ---- UploadRequest ------------------------------------------------------- */

static nng_msg *
grant_reply(agg *a, agg_node *n, uint32_t round)
{
	Fedseg__UploadGrant g = FEDSEG__UPLOAD_GRANT__INIT;
	g.token = (ProtobufCBinaryData){ sizeof n->grant, n->grant };
	g.expires_in_ms = (uint32_t)a->cfg.upload_grant_ms;
	g.round = round;
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_UPLOAD_GRANT;
	env.upload_grant = &g;
	return reply(&env);
}

/* The Update it announces is checked against the round state first: one
 * that would be late, a duplicate or refused gets that UpdateAck at once
 * (no upload). Otherwise an upload slot: UploadGrant, or Wait "upload slots
 * busy" (its place in line kept while it asks again). Asking again while
 * holding a grant renews it (same token). */
static nng_msg *
on_upload_request(agg *a, const Fedseg__UploadRequest *r)
{
	char why[256];
	nng_msg *m;
	agg_node *n = session_lock(a, &r->session, &m);
	if (n == NULL)
		return m;
	int st = update_state_check(a, &r->session, r->round, r->base_version,
	    n->cn, why, sizeof why);
	if (st == U_OK && r->payload_bytes > a->cfg.max_message_bytes) {
		snprintf(why, sizeof why, "an update of %llu bytes is over "
		    "max_message_bytes %zu", (unsigned long long)
		    r->payload_bytes, a->cfg.max_message_bytes);
		st = U_REJECT;
	}
	if (st != U_OK) {
		agg_upload_drop(a, n);
		char cn[FED_CN_MAX];
		snprintf(cn, sizeof cn, "%s", n->cn);
		pthread_mutex_unlock(&a->mu);
		return update_refuse(cn, r->round, st, why);
	}
	grants_expire(a);
	int renew = n->upload_slot == UP_GRANTED && n->grant_round == r->round;
	if (n->upload_slot == UP_CHECKING || n->inflight == r->round) {
		m = wait_reply_ms(slot_retry_ms(a), "busy: an update from this "
		    "node is being checked");
	} else if (n->upload_slot == UP_GRANTED ||
	    upload_take(a, n, UP_GRANTED, why, sizeof why)) {
		if (!renew && fed_random(n->grant, sizeof n->grant) != 0) {
			upload_done(a, n);
			pthread_mutex_unlock(&a->mu);
			return fed_msg_error(FED_ERR_INTERNAL, "%s", fs_error());
		}
		n->grant_round = r->round;
		n->grant_expires = fs_now() + a->cfg.upload_grant_ms / 1000.0;
		fs_log(FS_LOG_INFO, "AGG-GRANT", "node %s: upload slot %s for "
		    "round %u, %llu bytes (%d of %d model transfers in flight)",
		    n->cn, renew ? "renewed" : "granted", r->round,
		    (unsigned long long)r->payload_bytes, a->task_inflight,
		    a->cfg.max_model_transfers);
		m = grant_reply(a, n, r->round);
	} else {
		m = wait_reply_ms(slot_retry_ms(a), why);
	}
	pthread_mutex_unlock(&a->mu);
	return m;
}

/* ---- Status -------------------------------------------------------------- */

static nng_msg *
on_status(agg *a)
{
	static const char *names[] = { "waiting", "training", "closing",
		"done" };
	Fedseg__Status s = FEDSEG__STATUS__INIT;
	pthread_mutex_lock(&a->mu);
	s.round = a->round;
	s.version = a->version;
	s.rounds = (uint32_t)a->cfg.rounds;
	s.state = (char *)names[a->phase];
	uint32_t live = 0;
	for (int i = 0; i < a->nnodes; i++)
		live += a->nodes[i].has_session;
	s.joined = live;
	s.updates = a->phase == AGG_TRAINING ? (uint32_t)a->ncontrib : 0;
	s.selected = (uint32_t)a->nselected;
	s.model_digest = (ProtobufCBinaryData){ 32, a->digest };
	s.uptime_s = fs_now() - a->started;
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_STATUS;
	env.status = &s;
	nng_msg *m = reply(&env);
	pthread_mutex_unlock(&a->mu);
	return m;
}

/* ---- dispatch ------------------------------------------------------------ */

nng_msg *
agg_handle(void *user, nng_msg *req, void **track)
{
	agg *a = user;
	Fedseg__Envelope *env = NULL;
	int code = 0, borrowed = 0;
	nng_msg *m;
	/* protobuf-c copies the bytes fields: an Update's payload is not
	 * unpacked but read in place (the request is freed once the Update
	 * has been checked, so an upload is in memory once); any other
	 * request goes at once, before the work */
	int bad = fed_msg_unpack_borrow(nng_msg_body(req), nng_msg_len(req),
	    &env, &code, &borrowed);
	if (!borrowed) {
		nng_msg_free(req);
		req = NULL;
	}
	if (bad != 0) {
		char why[512];
		snprintf(why, sizeof why, "%s", fs_error());
		if (!anon_ok(a, "malformed"))
			return anon_refused(a);
		fs_log(FS_LOG_WARN, "AGG-BADMSG", "%s", why);
		return fed_msg_error(code, "%s", why);
	}
	int anon = env->body_case == FEDSEG__ENVELOPE__BODY_JOIN ||
	    env->body_case == FEDSEG__ENVELOPE__BODY_STATUS_REQUEST ||
	    (env->body_case != FEDSEG__ENVELOPE__BODY_TASK_REQUEST &&
	    env->body_case != FEDSEG__ENVELOPE__BODY_UPDATE &&
	    env->body_case != FEDSEG__ENVELOPE__BODY_UPLOAD_REQUEST);
	if (anon && !anon_ok(a, fed_msg_kind(env))) {
		fed_msg_free_borrowed(env, borrowed);
		if (req != NULL)
			nng_msg_free(req);
		return anon_refused(a);
	}
	switch (env->body_case) {
	case FEDSEG__ENVELOPE__BODY_JOIN: m = on_join(a, env->join); break;
	case FEDSEG__ENVELOPE__BODY_TASK_REQUEST:
		m = on_task_request(a, env->task_request, track);
		break;
	case FEDSEG__ENVELOPE__BODY_UPDATE: m = on_update(a, env->update); break;
	case FEDSEG__ENVELOPE__BODY_UPLOAD_REQUEST:
		m = on_upload_request(a, env->upload_request);
		break;
	case FEDSEG__ENVELOPE__BODY_STATUS_REQUEST: m = on_status(a); break;
	default:
		fs_log(FS_LOG_WARN, "AGG-BADMSG", "unexpected %s request",
		    fed_msg_kind(env));
		m = fed_msg_error(FED_ERR_REQUEST, "unexpected %s request",
		    fed_msg_kind(env));
		break;
	}
	fed_msg_free_borrowed(env, borrowed);
	if (req != NULL)
		nng_msg_free(req);
	return m;
}
