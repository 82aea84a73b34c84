/*
 * transport.c - nng REQ/REP over mutual TLS (see transport.h).
 */
#include "transport.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	void *user;
};

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
		nng_msg *rep = s->handler(s->user, nng_msg_body(c->req),
		    nng_msg_len(c->req));
		nng_msg_free(c->req);
		c->req = NULL;
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
    int ncontexts, int nworkers, fed_handler handler, void *user)
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
	s->nctx = ncontexts > 0 ? ncontexts : 8;
	s->nworkers = nworkers > 0 ? nworkers : 2;
	s->handler = handler;
	s->user = user;
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
	pthread_mutex_unlock(&s->mu);
	for (int i = 0; i < s->nworkers && s->workers != NULL; i++)
		pthread_join(s->workers[i], NULL);
	for (int i = 0; i < s->nctx && s->ctxs != NULL; i++)
		if (s->ctxs[i].aio != NULL)
			nng_aio_stop(s->ctxs[i].aio);
	nng_close(s->sock);
	for (int i = 0; i < s->nctx && s->ctxs != NULL; i++) {
		nng_aio_free(s->ctxs[i].aio);
		if (s->ctxs[i].req != NULL)
			nng_msg_free(s->ctxs[i].req);
	}
	free(s->ctxs);
	free(s->workers);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
}

/* ---- client ------------------------------------------------------------ */

struct fed_client {
	nng_socket sock;
	nng_dialer dialer;
	char url[512];
};

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

static int
client_dial(fed_client *c, const char *url, const fed_tls_paths *tls)
{
	if (dialer_new(c, url, tls) != 0)
		return -1;
	/* A first synchronous dial reports a refused handshake clearly; when
	 * the peer is simply not there yet, dial again in the background
	 * (nng then keeps redialling by itself). */
	int e = nng_dialer_start(c->dialer, 0);
	if (e == NNG_ECRYPTO || e == NNG_ECONNSHUT || e == NNG_EPEERAUTH)
		return fs_seterr("TLS handshake with %s refused (%s): check "
		    "the certificate, CA and CRL", url, nng_strerror(e));
	if (e == 0)
		return 0;
	nng_dialer_close(c->dialer);
	if (dialer_new(c, url, tls) != 0)
		return -1;
	if ((e = nng_dialer_start(c->dialer, NNG_FLAG_NONBLOCK)) != 0)
		return fs_seterr("dial %s: %s", url, nng_strerror(e));
	return 0;
}

fed_client *
fed_client_open(const char *url, const fed_tls_paths *tls, size_t max_msg)
{
	int e;
	fed_client *c = calloc(1, sizeof *c);
	if (c == NULL)
		return NULL;
	snprintf(c->url, sizeof c->url, "%s", url);
	if ((e = nng_req0_open(&c->sock)) != 0) {
		fs_seterr("nng_req0_open: %s", nng_strerror(e));
		free(c);
		return NULL;
	}
	nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME,
	    NNG_DURATION_INFINITE);
	nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, max_msg);
	if (client_dial(c, url, tls) != 0) {
		nng_close(c->sock);
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
	nng_close(c->sock);
	free(c);
}

int
fed_client_call(fed_client *c, nng_msg *req, int timeout_ms, nng_msg **rep,
    int *nngerr)
{
	nng_aio *aio = NULL;
	int e = nng_aio_alloc(&aio, NULL, NULL);
	if (e != 0) {
		nng_msg_free(req);
		goto fail;
	}
	nng_aio_set_timeout(aio, timeout_ms);
	nng_aio_set_msg(aio, req);
	nng_send_aio(c->sock, aio);
	nng_aio_wait(aio);
	if ((e = nng_aio_result(aio)) != 0) {
		nng_msg_free(nng_aio_get_msg(aio));
		goto fail;
	}
	nng_recv_aio(c->sock, aio);
	nng_aio_wait(aio);
	if ((e = nng_aio_result(aio)) != 0)
		goto fail;
	*rep = nng_aio_get_msg(aio);
	nng_aio_free(aio);
	if (nngerr != NULL)
		*nngerr = 0;
	return 0;
fail:
	nng_aio_free(aio);
	if (nngerr != NULL)
		*nngerr = e;
	return fs_seterr("request to %s: %s", c->url, nng_strerror(e));
}
