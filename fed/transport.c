/*
 * transport.c - nng REQ/REP over mutual TLS (see transport.h).
 */
#define _GNU_SOURCE /* pthread_tryjoin_np */
#include "transport.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>

#include "base.h"

#define PEM_MAX (1u << 20)

/* ---- TLS configuration ------------------------------------------------- */

int
fed_tls_config(int server, const fed_tls_paths *tls, void **out)
{
	nng_tls_config *cfg = NULL;
	char *ca = NULL, *crl = NULL;
	size_t n;
	int rv = -1, e;

	if (tls == NULL || tls->cert_key_pem == NULL || tls->ca == NULL)
		return fs_seterr("TLS needs a certificate PEM and a CA");
	if (fs_read_file(tls->ca, PEM_MAX, (void **)&ca, &n) != 0)
		goto out;
	if (tls->crl != NULL && tls->crl[0] != '\0' &&
	    fs_read_file(tls->crl, PEM_MAX, (void **)&crl, &n) != 0)
		goto out;
	if ((e = nng_tls_config_alloc(&cfg, server ? NNG_TLS_MODE_SERVER :
	    NNG_TLS_MODE_CLIENT)) != 0) {
		fs_seterr("nng_tls_config_alloc: %s", nng_strerror(e));
		goto out;
	}
	if ((e = nng_tls_config_auth_mode(cfg,
	    NNG_TLS_AUTH_MODE_REQUIRED)) != 0 ||
	    (e = nng_tls_config_ca_chain(cfg, ca, crl)) != 0) {
		fs_seterr("TLS CA %s%s%s: %s", tls->ca, crl ? " + CRL " : "",
		    crl ? tls->crl : "", nng_strerror(e));
		goto out;
	}
	if ((e = nng_tls_config_cert_key_file(cfg, tls->cert_key_pem,
	    NULL)) != 0) {
		fs_seterr("TLS certificate+key %s: %s", tls->cert_key_pem,
		    nng_strerror(e));
		goto out;
	}
	*out = cfg;
	cfg = NULL;
	rv = 0;
out:
	if (cfg != NULL)
		nng_tls_config_free(cfg);
	free(ca);
	free(crl);
	return rv;
}

static int
is_tls_url(const char *url)
{
	return strncmp(url, "tls+tcp://", 10) == 0 ||
	    strncmp(url, "tls+tcp4://", 11) == 0 ||
	    strncmp(url, "tls+tcp6://", 11) == 0;
}

static void socket_close_bounded(nng_socket sock, int ms);

/* ---- server ------------------------------------------------------------ */

enum { CTX_RECV, CTX_SEND };

typedef struct srv_ctx {
	struct fed_server *srv;
	nng_ctx ctx;
	nng_aio *aio;
	int state;
	nng_msg *req;           /* request waiting for a worker */
	struct srv_ctx *next;   /* job queue link */
} srv_ctx;

struct fed_server {
	nng_socket sock;
	nng_listener listener;
	srv_ctx *ctxs;
	int nctx;
	pthread_t *workers;
	int nworkers;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	srv_ctx *head, *tail;   /* job queue (FIFO) */
	int stopping;
	fed_handler handler;
	fed_sent_cb sent;
	void *user;
	/* tracked replies (see fed_handler): written out once their pipe's
	 * tx_msgs statistic passes tx0, or the pipe is gone */
	struct srv_track *tracks;
	pthread_cond_t tcv;     /* tracker: a reply to watch, or stopping */
	pthread_t tracker;
	int tracker_on;
};

typedef struct srv_track {
	uint32_t pipe;
	uint64_t tx0;
	void *tag;
	double until;           /* fs_now() after which it counts as sent */
	struct srv_track *next;
} srv_track;

#define TRACK_POLL_US 10000
#define TRACK_MAX_S 300.0

/* tx_msgs of pipe id in a statistics snapshot: 0, or -1 if the pipe is
 * not there (closed). nng counts a message in tx_msgs once the transport
 * has written it whole, just before it frees it. */
static int
stat_pipe_tx(nng_stat *st, uint32_t id, uint64_t *tx)
{
	for (; st != NULL; st = nng_stat_next(st)) {
		if (strcmp(nng_stat_name(st), "pipe") == 0) {
			nng_stat *i = nng_stat_find(st, "id");
			nng_stat *t = nng_stat_find(st, "tx_msgs");
			if (i != NULL && t != NULL && nng_stat_value(i) == id) {
				*tx = nng_stat_value(t);
				return 0;
			}
			continue;
		}
		if (stat_pipe_tx(nng_stat_child(st), id, tx) == 0)
			return 0;
	}
	return -1;
}

static void *
tracker_main(void *arg)
{
	fed_server *s = arg;
	for (;;) {
		pthread_mutex_lock(&s->mu);
		while (s->tracks == NULL && !s->stopping)
			pthread_cond_wait(&s->tcv, &s->mu);
		int stop = s->stopping;
		pthread_mutex_unlock(&s->mu);
		nng_stat *st = NULL;
		if (!stop && nng_stats_get(&st) != 0)
			st = NULL;
		double now = fs_now();
		srv_track *done = NULL;
		pthread_mutex_lock(&s->mu);
		for (srv_track **pp = &s->tracks; *pp != NULL;) {
			srv_track *t = *pp;
			uint64_t tx = 0;
			int gone = st != NULL && stat_pipe_tx(nng_stat_child(st),
			    t->pipe, &tx) != 0;
			if (stop || gone || tx > t->tx0 || now > t->until) {
				*pp = t->next;
				t->next = done;
				done = t;
			} else {
				pp = &t->next;
			}
		}
		pthread_mutex_unlock(&s->mu);
		if (st != NULL)
			nng_stats_free(st);
		while (done != NULL) {
			srv_track *t = done;
			done = t->next;
			s->sent(s->user, t->tag);
			free(t);
		}
		if (stop)
			return NULL;
		usleep(TRACK_POLL_US);
	}
}

/* Before the reply is handed to nng: the pipe's tx_msgs now (the replies
 * to its earlier requests are all written: the peer had them before it
 * sent this one). */
static void
track_add(fed_server *s, uint32_t pipe, void *tag)
{
	srv_track *t = calloc(1, sizeof *t);
	nng_stat *st = NULL;
	int have = t != NULL && s->tracker_on && nng_stats_get(&st) == 0;
	if (have && stat_pipe_tx(nng_stat_child(st), pipe, &t->tx0) != 0)
		have = 0; /* the pipe is gone already: nothing to wait for */
	if (st != NULL)
		nng_stats_free(st);
	if (!have) {
		free(t);
		s->sent(s->user, tag);
		return;
	}
	t->pipe = pipe;
	t->tag = tag;
	t->until = fs_now() + TRACK_MAX_S;
	pthread_mutex_lock(&s->mu);
	if (s->stopping) { /* the tracker may have finished already */
		pthread_mutex_unlock(&s->mu);
		free(t);
		s->sent(s->user, tag);
		return;
	}
	t->next = s->tracks;
	s->tracks = t;
	pthread_cond_signal(&s->tcv);
	pthread_mutex_unlock(&s->mu);
}

static void
queue_push(fed_server *s, srv_ctx *c)
{
	pthread_mutex_lock(&s->mu);
	c->next = NULL;
	if (s->tail != NULL)
		s->tail->next = c;
	else
		s->head = c;
	s->tail = c;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static srv_ctx *
queue_pop(fed_server *s)
{
	pthread_mutex_lock(&s->mu);
	while (s->head == NULL && !s->stopping)
		pthread_cond_wait(&s->cv, &s->mu);
	srv_ctx *c = s->head;
	if (c != NULL) {
		s->head = c->next;
		if (s->head == NULL)
			s->tail = NULL;
	}
	pthread_mutex_unlock(&s->mu);
	return c;
}

static void
ctx_recv(srv_ctx *c)
{
	c->state = CTX_RECV;
	nng_ctx_recv(c->ctx, c->aio);
}

/* aio callback: runs on an nng thread; never does slow work. */
static void
ctx_cb(void *arg)
{
	srv_ctx *c = arg;
	int rv = nng_aio_result(c->aio);

	if (c->state == CTX_SEND) {
		if (rv != 0)
			nng_msg_free(nng_aio_get_msg(c->aio));
		if (rv == NNG_ECLOSED)
			return;
		ctx_recv(c);
		return;
	}
	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
		return;
	if (rv != 0) {
		ctx_recv(c);
		return;
	}
	c->req = nng_aio_get_msg(c->aio);
	nng_aio_set_msg(c->aio, NULL);
	queue_push(c->srv, c);
}

static void *
worker_main(void *arg)
{
	fed_server *s = arg;
	srv_ctx *c;
	while ((c = queue_pop(s)) != NULL) {
		nng_msg *req = c->req;
		uint32_t pipe = nng_pipe_id(nng_msg_get_pipe(req));
		void *tag = NULL;
		c->req = NULL;
		/* the handler owns req: it frees it once unpacked */
		nng_msg *rep = s->handler(s->user, req, &tag);
		if (tag != NULL && rep == NULL)
			s->sent(s->user, tag);
		else if (tag != NULL)
			track_add(s, pipe, tag);
		if (rep == NULL) {
			ctx_recv(c);
			continue;
		}
		c->state = CTX_SEND;
		nng_aio_set_msg(c->aio, rep);
		nng_ctx_send(c->ctx, c->aio);
	}
	return NULL;
}

static int
server_listen(fed_server *s, const char *url, const fed_tls_paths *tls,
    size_t max_msg)
{
	void *cfg = NULL;
	int e;
	if ((e = nng_rep0_open(&s->sock)) != 0)
		return fs_seterr("nng_rep0_open: %s", nng_strerror(e));
	if ((e = nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, max_msg)) != 0)
		return fs_seterr("RECVMAXSZ: %s", nng_strerror(e));
	if ((e = nng_listener_create(&s->listener, s->sock, url)) != 0)
		return fs_seterr("listen %s: %s", url, nng_strerror(e));
	if (is_tls_url(url)) {
		if (fed_tls_config(1, tls, &cfg) != 0)
			return -1;
		e = nng_listener_set_ptr(s->listener, NNG_OPT_TLS_CONFIG, cfg);
		nng_tls_config_free(cfg);
		if (e != 0)
			return fs_seterr("TLS config on %s: %s", url,
			    nng_strerror(e));
	}
	if ((e = nng_listener_start(s->listener, 0)) != 0)
		return fs_seterr("listen %s: %s", url, nng_strerror(e));
	return 0;
}

static int
server_contexts(fed_server *s)
{
	int e;
	s->ctxs = calloc((size_t)s->nctx, sizeof(srv_ctx));
	if (s->ctxs == NULL)
		return fs_seterr("out of memory");
	for (int i = 0; i < s->nctx; i++) {
		srv_ctx *c = &s->ctxs[i];
		c->srv = s;
		if ((e = nng_aio_alloc(&c->aio, ctx_cb, c)) != 0 ||
		    (e = nng_ctx_open(&c->ctx, s->sock)) != 0)
			return fs_seterr("nng context: %s", nng_strerror(e));
	}
	s->workers = calloc((size_t)s->nworkers, sizeof(pthread_t));
	if (s->workers == NULL)
		return fs_seterr("out of memory");
	for (int i = 0; i < s->nworkers; i++)
		if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0) {
			s->nworkers = i;
			return fs_seterr("cannot start worker thread");
		}
	for (int i = 0; i < s->nctx; i++)
		ctx_recv(&s->ctxs[i]);
	return 0;
}

fed_server *
fed_server_start(const char *url, const fed_tls_paths *tls, size_t max_msg,
    int ncontexts, int nworkers, fed_handler handler, fed_sent_cb sent,
    void *user)
{
	if (!is_tls_url(url) && strncmp(url, "tcp://", 6) != 0 &&
	    strncmp(url, "ipc://", 6) != 0 && strncmp(url, "inproc://", 9) != 0) {
		fs_seterr("listen URL %s: expected tls+tcp://host:port", url);
		return NULL;
	}
	fed_server *s = calloc(1, sizeof *s);
	if (s == NULL)
		return NULL;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	pthread_cond_init(&s->tcv, NULL);
	s->nctx = ncontexts > 0 ? ncontexts : 8;
	s->nworkers = nworkers > 0 ? nworkers : 2;
	s->handler = handler;
	s->sent = sent;
	s->user = user;
	if (sent != NULL && pthread_create(&s->tracker, NULL, tracker_main,
	    s) == 0)
		s->tracker_on = 1;
	if (sent != NULL && !s->tracker_on) {
		fs_seterr("cannot start the transfer tracker thread");
		fed_server_stop(s);
		return NULL;
	}
	if (server_listen(s, url, tls, max_msg) != 0 ||
	    server_contexts(s) != 0) {
		char why[512];
		snprintf(why, sizeof why, "%s", fs_error());
		fed_server_stop(s);
		fs_seterr("%s", why);
		return NULL;
	}
	return s;
}

int
fed_server_reload_tls(fed_server *s, const fed_tls_paths *tls)
{
	void *cfg = NULL;
	if (fed_tls_config(1, tls, &cfg) != 0)
		return -1;
	int e = nng_listener_set_ptr(s->listener, NNG_OPT_TLS_CONFIG, cfg);
	nng_tls_config_free(cfg);
	if (e != 0)
		return fs_seterr("TLS config swap: %s", nng_strerror(e));
	return 0;
}

void
fed_server_stop(fed_server *s)
{
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	s->stopping = 1;
	pthread_cond_broadcast(&s->cv);
	pthread_cond_broadcast(&s->tcv);
	pthread_mutex_unlock(&s->mu);
	for (int i = 0; i < s->nworkers && s->workers != NULL; i++)
		pthread_join(s->workers[i], NULL);
	if (s->tracker_on)
		pthread_join(s->tracker, NULL); /* reports what it still had */
	for (int i = 0; i < s->nctx && s->ctxs != NULL; i++)
		if (s->ctxs[i].aio != NULL)
			nng_aio_stop(s->ctxs[i].aio);
	/* bounded: with nng 1.5.2 a TLS pipe reset in the middle of a large
	 * write can block nng's reaper, and nng_close waits for it (see the
	 * client section); a stop must still finish */
	socket_close_bounded(s->sock, 10000);
	for (int i = 0; i < s->nctx && s->ctxs != NULL; i++) {
		nng_aio_free(s->ctxs[i].aio);
		if (s->ctxs[i].req != NULL)
			nng_msg_free(s->ctxs[i].req);
	}
	free(s->ctxs);
	free(s->workers);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	pthread_cond_destroy(&s->tcv);
	free(s);
}

/* ---- client ------------------------------------------------------------ */

/*
 * Every wait of the client is bounded by the client itself, not only by
 * nng's aio timeout: with Debian's nng 1.5.2, when a peer resets a TLS
 * connection while a large message is being written on it (what the
 * aggregator does with a message over max_message_bytes), the TLS stream
 * can be left with a send that never completes. nng's reaper thread then
 * blocks for ever tearing that pipe down, the dialer (which redials only
 * once the dead pipe is reaped) never reconnects, and a later request can
 * wait in nng_aio_wait past its timeout. So a call waits on its own
 * deadline, cancels, and if nng still does not complete the operation the
 * aio is abandoned (leaked, never freed while nng may use it); after such
 * an abandoned call, or a send that found no connection for the whole
 * timeout, the client starts over on a fresh socket and dialer, and the old
 * socket is closed on a detached thread (its close may block for ever).
 */

#define CALL_GRACE_MS 2000      /* beyond the timeout before cancelling */
#define CANCEL_GRACE_MS 2000    /* after cancelling before abandoning */
#define DIAL_WAIT_MS 15000      /* bound on the first synchronous dial */

struct fed_client {
	nng_socket sock;
	nng_dialer dialer;
	size_t max_msg;
	char url[512];
	char cert[1024], ca[1024], crl[1024];
	fed_tls_paths tls;
	int rebuilds;
};

/* Completion of one aio operation, waited for with a deadline. Heap
 * allocated with its aio so that an abandoned one can be leaked whole. */
typedef struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
	nng_aio *aio;
} call_op;

static void
call_op_cb(void *arg)
{
	call_op *op = arg;
	pthread_mutex_lock(&op->mu);
	op->done = 1;
	pthread_cond_broadcast(&op->cv);
	pthread_mutex_unlock(&op->mu);
}

static call_op *
call_op_new(void)
{
	call_op *op = calloc(1, sizeof *op);
	if (op == NULL)
		return NULL;
	pthread_mutex_init(&op->mu, NULL);
	pthread_cond_init(&op->cv, NULL);
	if (nng_aio_alloc(&op->aio, call_op_cb, op) != 0) {
		pthread_mutex_destroy(&op->mu);
		pthread_cond_destroy(&op->cv);
		free(op);
		return NULL;
	}
	return op;
}

static void
call_op_free(call_op *op)
{
	nng_aio_free(op->aio);
	pthread_mutex_destroy(&op->mu);
	pthread_cond_destroy(&op->cv);
	free(op);
}

/* *ts = now + ms on CLOCK_REALTIME (pthread_cond_timedwait's clock). */
static void
deadline_in(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Waits up to ms for the operation; 1 if it completed. */
static int
call_op_wait(call_op *op, int ms)
{
	struct timespec ts;
	deadline_in(&ts, ms);
	pthread_mutex_lock(&op->mu);
	while (!op->done &&
	    pthread_cond_timedwait(&op->cv, &op->mu, &ts) == 0)
		;
	int done = op->done;
	pthread_mutex_unlock(&op->mu);
	return done;
}

/* Runs one operation (already started) to completion within timeout_ms
 * (+ grace): 0 = completed (result in nng_aio_result), -1 = abandoned. */
static int
call_op_finish(call_op *op, int timeout_ms)
{
	int ms = timeout_ms < 0 ? 0 : timeout_ms;
	if (call_op_wait(op, ms + CALL_GRACE_MS))
		return 0;
	nng_aio_cancel(op->aio);
	if (call_op_wait(op, CANCEL_GRACE_MS))
		return 0;
	return -1;
}

static void
call_op_reset(call_op *op)
{
	pthread_mutex_lock(&op->mu);
	op->done = 0;
	pthread_mutex_unlock(&op->mu);
}

static int
dialer_new(fed_client *c, const char *url, const fed_tls_paths *tls)
{
	void *cfg = NULL;
	int e;
	if ((e = nng_dialer_create(&c->dialer, c->sock, url)) != 0)
		return fs_seterr("dial %s: %s", url, nng_strerror(e));
	if (is_tls_url(url)) {
		if (fed_tls_config(0, tls, &cfg) != 0)
			return -1;
		e = nng_dialer_set_ptr(c->dialer, NNG_OPT_TLS_CONFIG, cfg);
		nng_tls_config_free(cfg);
		if (e != 0)
			return fs_seterr("TLS config for %s: %s", url,
			    nng_strerror(e));
	}
	nng_dialer_set_ms(c->dialer, NNG_OPT_RECONNMINT, 200);
	nng_dialer_set_ms(c->dialer, NNG_OPT_RECONNMAXT, 5000);
	return 0;
}

/* A synchronous nng dial has no time bound of its own (a peer that
 * accepts TCP and never answers the handshake would hold it for ever), so
 * it runs on a helper thread that the caller waits for with a deadline. */
typedef struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	nng_dialer dialer;
	int done, result, abandoned;
} dial_job;

static void
dial_job_free(dial_job *j)
{
	pthread_mutex_destroy(&j->mu);
	pthread_cond_destroy(&j->cv);
	free(j);
}

static void *
dial_thread(void *arg)
{
	dial_job *j = arg;
	int e = nng_dialer_start(j->dialer, 0);
	pthread_mutex_lock(&j->mu);
	j->done = 1;
	j->result = e;
	int abandoned = j->abandoned;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->mu);
	if (abandoned)
		dial_job_free(j);
	return NULL;
}

/* nng_dialer_start(d, 0) bounded by ms: its result, or NNG_ETIMEDOUT (the
 * dial then goes on in the background; nng keeps the dialer). */
static int
dial_bounded(nng_dialer d, int ms)
{
	dial_job *j = calloc(1, sizeof *j);
	pthread_t t;
	if (j == NULL)
		return NNG_ENOMEM;
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, NULL);
	j->dialer = d;
	if (pthread_create(&t, NULL, dial_thread, j) != 0) {
		dial_job_free(j);
		return nng_dialer_start(d, NNG_FLAG_NONBLOCK);
	}
	pthread_detach(t);
	struct timespec ts;
	deadline_in(&ts, ms);
	pthread_mutex_lock(&j->mu);
	while (!j->done && pthread_cond_timedwait(&j->cv, &j->mu, &ts) == 0)
		;
	int done = j->done, rv = j->result;
	if (!done)
		j->abandoned = 1;  /* the thread frees it */
	pthread_mutex_unlock(&j->mu);
	if (!done)
		return NNG_ETIMEDOUT;
	dial_job_free(j);
	return rv;
}

static int
client_dial(fed_client *c, const char *url, const fed_tls_paths *tls,
    int sync)
{
	if (dialer_new(c, url, tls) != 0)
		return -1;
	int e = NNG_ECONNREFUSED;
	if (sync) {
		/* A first synchronous dial reports a refused handshake
		 * clearly; when the peer is simply not there yet, dial again
		 * in the background (nng then keeps redialling by itself). */
		e = dial_bounded(c->dialer, DIAL_WAIT_MS);
		if (e == NNG_ECRYPTO || e == NNG_ECONNSHUT ||
		    e == NNG_EPEERAUTH)
			return fs_seterr("TLS handshake with %s refused (%s): "
			    "check the certificate, CA and CRL", url,
			    nng_strerror(e));
		if (e == 0 || e == NNG_ETIMEDOUT)
			return 0; /* connected, or still dialling */
		nng_dialer_close(c->dialer);
		if (dialer_new(c, url, tls) != 0)
			return -1;
	}
	if ((e = nng_dialer_start(c->dialer, NNG_FLAG_NONBLOCK)) != 0)
		return fs_seterr("dial %s: %s", url, nng_strerror(e));
	return 0;
}

static int
client_socket(fed_client *c, int sync)
{
	int e;
	if ((e = nng_req0_open(&c->sock)) != 0)
		return fs_seterr("nng_req0_open: %s", nng_strerror(e));
	nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME,
	    NNG_DURATION_INFINITE);
	nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, c->max_msg);
	if (client_dial(c, c->url, &c->tls, sync) != 0) {
		nng_close(c->sock);
		return -1;
	}
	return 0;
}

static void *
close_thread(void *arg)
{
	nng_socket *s = arg;
	nng_close(*s);
	free(s);
	return NULL;
}

/* Closes a socket without waiting more than ms for nng (see above). */
static void
socket_close_bounded(nng_socket sock, int ms)
{
	nng_socket *s = malloc(sizeof *s);
	pthread_t t;
	if (s == NULL) {
		return;
	}
	*s = sock;
	if (pthread_create(&t, NULL, close_thread, s) != 0) {
		free(s);
		return; /* leave it open rather than risk blocking */
	}
	if (ms <= 0) {
		pthread_detach(t);
		return;
	}
	/* poll for the thread's end; detach it if nng does not let go */
	for (int waited = 0; waited < ms; waited += 20) {
		if (pthread_tryjoin_np(t, NULL) == 0)
			return;
		struct timespec ts = { 0, 20 * 1000000L };
		nanosleep(&ts, NULL);
	}
	pthread_detach(t);
}

/* Starts over on a new socket and dialer; the old socket is closed in the
 * background. */
static void
client_rebuild(fed_client *c)
{
	nng_socket old = c->sock;
	if (client_socket(c, 0) != 0) {
		c->sock = old;  /* keep the old one; try again next time */
		return;
	}
	c->rebuilds++;
	socket_close_bounded(old, 0);
}

fed_client *
fed_client_open(const char *url, const fed_tls_paths *tls, size_t max_msg)
{
	fed_client *c = calloc(1, sizeof *c);
	if (c == NULL)
		return NULL;
	snprintf(c->url, sizeof c->url, "%s", url);
	if (tls != NULL) {
		snprintf(c->cert, sizeof c->cert, "%s",
		    tls->cert_key_pem ? tls->cert_key_pem : "");
		snprintf(c->ca, sizeof c->ca, "%s", tls->ca ? tls->ca : "");
		snprintf(c->crl, sizeof c->crl, "%s", tls->crl ? tls->crl : "");
		c->tls.cert_key_pem = tls->cert_key_pem ? c->cert : NULL;
		c->tls.ca = tls->ca ? c->ca : NULL;
		c->tls.crl = tls->crl ? c->crl : NULL;
	}
	c->max_msg = max_msg;
	if (client_socket(c, 1) != 0) {
		free(c);
		return NULL;
	}
	return c;
}

void
fed_client_close(fed_client *c)
{
	if (c == NULL)
		return;
	socket_close_bounded(c->sock, 5000);
	free(c);
}

int
fed_client_rebuilds(const fed_client *c)
{
	return c != NULL ? c->rebuilds : 0;
}

int
fed_client_call(fed_client *c, nng_msg *req, int timeout_ms, nng_msg **rep,
    int *nngerr)
{
	const char *phase = "send";
	call_op *op = call_op_new();
	int e = NNG_ENOMEM;
	if (op == NULL) {
		nng_msg_free(req);
		goto fail;
	}
	nng_aio_set_timeout(op->aio, timeout_ms);
	nng_aio_set_msg(op->aio, req);
	nng_send_aio(c->sock, op->aio);
	if (call_op_finish(op, timeout_ms) != 0)
		goto abandon;
	if ((e = nng_aio_result(op->aio)) != 0) {
		nng_msg_free(nng_aio_get_msg(op->aio));
		nng_aio_set_msg(op->aio, NULL);
		/* no connection took the request for the whole timeout:
		 * the dialer may be stuck (see above); start over */
		if (e == NNG_ETIMEDOUT && timeout_ms >= 1000)
			client_rebuild(c);
		call_op_free(op);
		goto fail;
	}
	phase = "reply";
	call_op_reset(op);
	nng_recv_aio(c->sock, op->aio);
	if (call_op_finish(op, timeout_ms) != 0)
		goto abandon;
	if ((e = nng_aio_result(op->aio)) != 0) {
		call_op_free(op);
		goto fail;
	}
	*rep = nng_aio_get_msg(op->aio);
	call_op_free(op);
	if (nngerr != NULL)
		*nngerr = 0;
	return 0;
abandon:
	/* nng did not complete the operation even after a cancel: leave the
	 * aio to nng (never freed) and use a fresh socket from now on */
	client_rebuild(c);
	e = NNG_ETIMEDOUT;
	if (nngerr != NULL)
		*nngerr = e;
	return fs_seterr("request to %s: no %s completion from nng within "
	    "%d ms (connection abandoned, dialling again)", c->url, phase,
	    timeout_ms + CALL_GRACE_MS + CANCEL_GRACE_MS);
fail:
	if (nngerr != NULL)
		*nngerr = e;
	return fs_seterr("request to %s: %s", c->url, nng_strerror(e));
}
