/*
 * transport.h - REQ/REP over nng tls+tcp:// with mutual TLS.
 *
 * Both ends use NNG_TLS_AUTH_MODE_REQUIRED with the federation CA as the
 * only trust anchor and the CRL passed with it; the own certificate and key
 * come from ONE PEM file (what `fedseg certs issue` writes as <CN>.pem).
 * nng checks that the peer chains to the CA but does not say who it is:
 * identity is proved by signatures in the messages (crypto.h, msg.h).
 *
 * Server: a rep0 socket with `ncontexts` nng contexts, each receiving with
 * its own aio; a received request is queued to `nworkers` worker threads
 * that call the handler, so slow work (signature checks, decoding,
 * aggregation) never stalls the receive path of other contexts. The
 * handler can ask to be told when a reply has really left (fed_sent_cb),
 * to bound how many large replies nng holds at once.
 *
 * Client: a req0 socket dialled in the background (nng redials by itself);
 * the REQ resend timer is disabled so a large update is never sent twice
 * by nng itself (a request in flight when its connection drops fails with
 * "Connection reset"; the caller sends it again, the aggregator is
 * idempotent for that). Every wait is bounded by the client itself, and a
 * client whose dialer is stuck starts over on a fresh socket (transport.c
 * says why).
 */
#ifndef FEDSEG_FED_TRANSPORT_H
#define FEDSEG_FED_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
	const char *cert_key_pem; /* own certificate + private key, one file */
	const char *ca;           /* federation CA certificate (PEM) */
	const char *crl;          /* CRL (PEM) or NULL */
} fed_tls_paths;

/* Handler called on a worker thread for each request. It owns req and
 * should nng_msg_free it as soon as it has unpacked it (a large request is
 * then not held while the handler works). Returns the reply (ownership
 * passes to the transport) or NULL to send no reply (the requester then
 * times out).
 *
 * Tracked replies: a handler that sets *track (non-NULL) is told, through
 * the server's fed_sent_cb with that value, once the reply has been
 * written out whole to its connection (nng frees it then), or the
 * connection is gone, or 300 s passed. nng itself completes a reply's send
 * as soon as it hands the message to the connection, long before a large
 * one is written, so that completion says nothing about memory; the
 * server watches the connection's tx_msgs statistic instead (polled every
 * 10 ms while replies are tracked). The callback runs on the server's
 * tracker thread; it is also called for a NULL reply, and for any still
 * tracked at fed_server_stop. */
typedef nng_msg *(*fed_handler)(void *user, nng_msg *req, void **track);
typedef void (*fed_sent_cb)(void *user, void *track);

typedef struct fed_server fed_server;

/* Listens on url (tls+tcp://host:port; tcp:// is refused unless
 * allow_plain, which only tests use). max_msg is NNG_OPT_RECVMAXSZ (bytes,
 * > 0): larger messages are dropped by nng and their connection closed.
 * Returns NULL with fs_error() on failure. */
fed_server *fed_server_start(const char *url, const fed_tls_paths *tls,
    size_t max_msg, int ncontexts, int nworkers, fed_handler handler,
    fed_sent_cb sent, void *user);
/* Re-reads the TLS files (e.g. a new CRL on SIGHUP) and swaps the new
 * config into the running listener; later handshakes use it (nng 1.5: the
 * one accept already pending still uses the old config). On failure the
 * old config stays. */
int fed_server_reload_tls(fed_server *s, const fed_tls_paths *tls);
/* Stops receiving, waits for workers to finish their current request,
 * closes the socket. Blocks; must not be called from a handler. NULL-safe. */
void fed_server_stop(fed_server *s);

typedef struct fed_client fed_client;

/* Creates a req0 socket and dials url: a first dial bounded to 15 s (a
 * refused handshake is an error), then in the background. max_msg bounds
 * replies (0 = no bound). The paths in tls are copied. */
fed_client *fed_client_open(const char *url, const fed_tls_paths *tls,
    size_t max_msg);
/* Closes the socket; never waits more than 5 s for nng. */
void fed_client_close(fed_client *c);

/* Sends req and waits up to timeout_ms for the reply. req is consumed in
 * every case. On success *rep is the caller's (nng_msg_free). Errors:
 * -1 with fs_error() ("timed out", "closed", ...); *nngerr (may be NULL)
 * receives nng's code. Bounded by the client itself: it returns within
 * about 2 x timeout_ms + 4 s whatever nng does. When no connection took
 * the request for a whole timeout (>= 1 s), or nng never completed an
 * operation, the client goes on with a fresh socket and dialer (nng 1.5.2
 * can leave a dialer that never redials after a connection reset in the
 * middle of a large write; see transport.c). */
int fed_client_call(fed_client *c, nng_msg *req, int timeout_ms,
    nng_msg **rep, int *nngerr);
/* How many times the client started over on a fresh socket (tests). */
int fed_client_rebuilds(const fed_client *c);

/* Allocates a TLS config for mode (NNG_TLS_MODE_CLIENT / _SERVER) from
 * the paths. Caller frees with nng_tls_config_free. */
int fed_tls_config(int server, const fed_tls_paths *tls, void **cfg);

#ifdef __cplusplus
}
#endif
#endif
