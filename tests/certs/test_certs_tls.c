/* test_certs_tls: real mutual-TLS handshakes through nng (Debian's 1.5.2,
 * mbedTLS) with certificates made by certs/: what the federation's
 * transport relies on. A rep0 listener on tls+tcp://127.0.0.1:<port> with
 * NNG_TLS_AUTH_MODE_REQUIRED, the federation CA + CRL as the only trust
 * anchor and the aggregator's cert+key PEM; req0 dialers with various
 * certificates. See docs/security-pki.md ("What nng needs"). */
#define _GNU_SOURCE
#include "base.h"
#include "certs.h"
#include "tcheck.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <stdbool.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static char B[512], D[600], R[600];

static char *slurp(const char *dir, const char *name)
{
	char path[1100];
	void *data = NULL;
	size_t n;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	MUST(fs_read_file(path, 1 << 20, &data, &n) == 0, "%s", fs_error());
	return data;
}

/* A TLS config as the transport should build it. own: cert+key PEM file
 * (NULL: none); crl: PEM text or NULL; server_name: NULL to leave unset. */
static nng_tls_config *mkcfg(nng_tls_mode mode, const char *ca_pem,
    const char *crl_pem, const char *own, const char *server_name)
{
	nng_tls_config *cfg = NULL;
	int rv;
	MUST((rv = nng_tls_config_alloc(&cfg, mode)) == 0, "tls_config_alloc: %s",
	    nng_strerror(rv));
	MUST((rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED)) ==
		0,
	    "auth_mode: %s", nng_strerror(rv));
	MUST((rv = nng_tls_config_ca_chain(cfg, ca_pem, crl_pem)) == 0,
	    "ca_chain: %s", nng_strerror(rv));
	if (own != NULL)
		MUST((rv = nng_tls_config_cert_key_file(cfg, own, NULL)) == 0,
		    "cert_key_file %s: %s", own, nng_strerror(rv));
	if (server_name != NULL)
		MUST((rv = nng_tls_config_server_name(cfg, server_name)) == 0,
		    "server_name: %s", nng_strerror(rv));
	return cfg;
}

/* ---- the aggregator side: rep0, echoes "pong:<request>" ---- */
struct server {
	nng_socket s;
	nng_listener l;
	int port;
	pthread_t th;
	int stop;
	int served;
	uint32_t last_pipe;
	bool last_verified;
	int verified_rv;
};

static void *serve(void *arg)
{
	struct server *sv = arg;
	while (!__atomic_load_n(&sv->stop, __ATOMIC_ACQUIRE)) {
		nng_msg *m;
		nng_pipe p;
		int rv = nng_recvmsg(sv->s, &m, 0);
		if (rv == NNG_ETIMEDOUT)
			continue;
		if (rv != 0)
			break;
		p = nng_msg_get_pipe(m);
		sv->last_pipe = nng_pipe_id(p);
		sv->verified_rv = nng_pipe_get_bool(p, NNG_OPT_TLS_VERIFIED,
		    &sv->last_verified);
		nng_msg_insert(m, "pong:", 5);
		if (nng_sendmsg(sv->s, m, 0) != 0)
			nng_msg_free(m);
		else
			__atomic_add_fetch(&sv->served, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

static int listen_on(struct server *sv, nng_tls_config *cfg, int port)
{
	char url[64];
	int rv;
	snprintf(url, sizeof(url), "tls+tcp://127.0.0.1:%d", port);
	if ((rv = nng_listener_create(&sv->l, sv->s, url)) != 0 ||
	    (rv = nng_listener_set_ptr(sv->l, NNG_OPT_TLS_CONFIG, cfg)) != 0 ||
	    (rv = nng_listener_start(sv->l, 0)) != 0)
		return rv;
	return nng_listener_get_int(sv->l, NNG_OPT_TCP_BOUND_PORT, &sv->port);
}

static void server_start(struct server *sv, nng_tls_config *cfg)
{
	int rv;
	memset(sv, 0, sizeof(*sv));
	MUST(nng_rep0_open(&sv->s) == 0, "rep0_open");
	nng_socket_set_ms(sv->s, NNG_OPT_RECVTIMEO, 100);
	MUST((rv = listen_on(sv, cfg, 0)) == 0, "listen: %s", nng_strerror(rv));
	MUST(pthread_create(&sv->th, NULL, serve, sv) == 0, "thread");
}

static void server_stop(struct server *sv)
{
	__atomic_store_n(&sv->stop, 1, __ATOMIC_RELEASE);
	pthread_join(sv->th, NULL);
	nng_close(sv->s);
}

/* ---- a node: req0 dialer; one round trip ---- */
struct attempt {
	int dial_rv; /* nng_dialer_start(d, 0) */
	int io_rv;   /* send + recv, when the dial worked */
	int ok;      /* the reply came back */
};

static struct attempt try_dial(int port, nng_tls_config *cfg)
{
	struct attempt a = {0, 0, 0};
	nng_socket s;
	nng_dialer d;
	char url[64], *reply = NULL;
	size_t n = 0;

	snprintf(url, sizeof(url), "tls+tcp://127.0.0.1:%d", port);
	MUST(nng_req0_open(&s) == 0, "req0_open");
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 1500);
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 1500);
	MUST(nng_dialer_create(&d, s, url) == 0, "dialer_create");
	MUST(nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg) == 0, "set cfg");
	a.dial_rv = nng_dialer_start(d, 0);
	if (a.dial_rv == 0) {
		a.io_rv = nng_send(s, "ping", 5, 0);
		if (a.io_rv == 0)
			a.io_rv = nng_recv(s, &reply, &n, NNG_FLAG_ALLOC);
		if (a.io_rv == 0) {
			a.ok = n == 10 && memcmp(reply, "pong:ping", 10) == 0;
			nng_free(reply, n);
		}
	}
	nng_close(s);
	return a;
}

static const char *why(struct attempt a)
{
	static char buf[160];
	if (a.ok)
		return "round trip ok";
	if (a.dial_rv != 0)
		snprintf(buf, sizeof(buf), "dial failed: %s (%d)",
		    nng_strerror(a.dial_rv), a.dial_rv);
	else
		snprintf(buf, sizeof(buf), "dial ok, then send/recv: %s",
		    nng_strerror(a.io_rv));
	return buf;
}

/* Uses up the accept the listener already has pending (it was set up
 * with the TLS config of its time): a bare TCP connect, closed at once. The
 * kernel hands connections out in order, so the next real dial meets an
 * accept made with the current config. */
static void flush_accept(int port)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	MUST(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0,
	    "flush connect");
	close(fd);
}

/* Client config with the federation CA, optional own cert, and dial. */
static struct attempt node(int port, const char *ca, const char *own,
    const char *server_name)
{
	nng_tls_config *cfg = mkcfg(NNG_TLS_MODE_CLIENT, ca, NULL, own,
	    server_name);
	struct attempt a = try_dial(port, cfg);
	nng_tls_config_free(cfg);
	return a;
}

int main(void)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char own[700], rogue_own[700], path[700];
	char *ca, *crl, *rogue_ca;
	nng_tls_config *scfg;
	struct server sv;
	struct attempt a;
	int served, rv;

	snprintf(B, sizeof(B), "%s/fedseg-tls.XXXXXX", tmp);
	MUST(mkdtemp(B) != NULL, "mkdtemp");
	snprintf(D, sizeof(D), "%s/pki", B);
	snprintf(R, sizeof(R), "%s/rogue", B);
	printf("# nng %s, TLS engine %s\n", nng_version(),
	    nng_tls_engine_name());

	MUST(certs_init(D, "tls-test", 30) == 0, "%s", fs_error());
	MUST(certs_issue(D, "aggregator", "agg", NULL, NULL, 30) == 0, "%s",
	    fs_error());
	MUST(certs_issue(D, "node", "site-a", NULL, NULL, 30) == 0, "%s",
	    fs_error());
	MUST(certs_issue(D, "node", "site-b", NULL, NULL, 30) == 0, "%s",
	    fs_error());
	MUST(certs_issue(D, "admin", "ops", NULL, NULL, 30) == 0, "%s",
	    fs_error());
	MUST(certs_issue_at(D, "node", "old", NULL, NULL, -10, -1) == 0, "%s",
	    fs_error());
	MUST(certs_init(R, "rogue", 30) == 0, "%s", fs_error());
	MUST(certs_issue(R, "node", "site-a", NULL, NULL, 30) == 0, "%s",
	    fs_error());
	MUST(certs_issue(R, "aggregator", "agg", NULL, NULL, 30) == 0, "%s",
	    fs_error());
	ca = slurp(D, "ca.crt");
	crl = slurp(D, "crl.pem");
	rogue_ca = slurp(R, "ca.crt");

	/* The aggregator: CA + CRL, its own cert+key PEM, client auth
	 * required. */
	snprintf(own, sizeof(own), "%s/agg.pem", D);
	scfg = mkcfg(NNG_TLS_MODE_SERVER, ca, crl, own, NULL);
	server_start(&sv, scfg);
	printf("# listening on tls+tcp://127.0.0.1:%d\n", sv.port);

#define NODE(name) (snprintf(path, sizeof(path), "%s/%s.pem", D, name), path)
	a = node(sv.port, ca, NODE("site-a"), NULL);
	CHECK(a.ok, "node site-a, no server name set: %s", why(a));
	CHECK(sv.verified_rv == 0 && sv.last_verified,
	    "server pipe reports NNG_OPT_TLS_VERIFIED = true (rv %d)",
	    sv.verified_rv);
	a = node(sv.port, ca, NODE("site-a"), "localhost");
	CHECK(a.ok, "node site-a, server name localhost (in the SAN): %s",
	    why(a));
	a = node(sv.port, ca, NODE("site-a"), "wrong.example.org");
	CHECK(!a.ok, "server name not in the aggregator's SAN: refused (%s)",
	    why(a));
	a = node(sv.port, ca, NODE("site-a"), "127.0.0.1");
	printf("# note: server name 127.0.0.1 (an IP SAN): %s\n", why(a));
	a = node(sv.port, ca, NODE("ops"), NULL);
	CHECK(a.ok, "admin ops (clientAuth): %s", why(a));

	served = __atomic_load_n(&sv.served, __ATOMIC_ACQUIRE);
	snprintf(rogue_own, sizeof(rogue_own), "%s/site-a.pem", R);
	a = node(sv.port, ca, rogue_own, NULL);
	CHECK(!a.ok, "node certificate from another CA: refused (%s)", why(a));
	a = node(sv.port, ca, NULL, NULL);
	CHECK(!a.ok, "no client certificate: refused (%s)", why(a));
	a = node(sv.port, ca, NODE("old"), NULL);
	CHECK(!a.ok, "expired node certificate: refused (%s)", why(a));
	a = node(sv.port, ca, NODE("agg"), NULL);
	CHECK(!a.ok, "aggregator certificate (serverAuth only) as a client: "
		     "refused (%s)",
	    why(a));
	a = node(sv.port, rogue_ca, NODE("site-a"), NULL);
	CHECK(!a.ok, "a node that trusts only another CA refuses the "
		     "aggregator (%s)",
	    why(a));
	CHECK(__atomic_load_n(&sv.served, __ATOMIC_ACQUIRE) == served,
	    "the aggregator received nothing from the refused clients");

	/* Revocation. nng.h says a started endpoint's TLS config is
	 * read-only, yet nng 1.5.2 accepts a new one on a running listener:
	 * new handshakes use it, except the one accept already pending (it
	 * holds the old config), which flush_accept uses up. Established
	 * connections survive. */
	MUST(certs_revoke(D, "site-b", "keyCompromise") == 0, "%s",
	    fs_error());
	free(crl);
	crl = slurp(D, "crl.pem");
	a = node(sv.port, ca, NODE("site-b"), NULL);
	CHECK(a.ok, "revoked site-b still admitted by the listener built with "
		    "the old CRL: %s",
	    why(a));
	{
		nng_socket s;
		nng_dialer d;
		nng_tls_config *cc = mkcfg(NNG_TLS_MODE_CLIENT, ca, NULL,
		    NODE("site-a"), NULL);
		nng_tls_config *c2;
		char url[64], *reply = NULL;
		size_t n;
		uint32_t pipe_before;

		/* A long-lived connection from site-a, kept across the swap. */
		snprintf(url, sizeof(url), "tls+tcp://127.0.0.1:%d", sv.port);
		MUST(nng_req0_open(&s) == 0, "req0");
		nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 3000);
		nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 3000);
		nng_socket_set_ms(s, NNG_OPT_RECONNMINT, 50);
		MUST(nng_dialer_create(&d, s, url) == 0 &&
			nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cc) == 0 &&
			nng_dialer_start(d, 0) == 0,
		    "long-lived dial");
		MUST(nng_send(s, "ping", 5, 0) == 0 &&
			nng_recv(s, &reply, &n, NNG_FLAG_ALLOC) == 0,
		    "long-lived round trip");
		nng_free(reply, n);
		pipe_before = sv.last_pipe;

		c2 = mkcfg(NNG_TLS_MODE_SERVER, ca, crl, own, NULL);
		rv = nng_listener_set_ptr(sv.l, NNG_OPT_TLS_CONFIG, c2);
		nng_tls_config_free(c2);
		CHECK(rv == 0, "a new TLS config (new CRL) on the running "
			       "listener: %s",
		    nng_strerror(rv));
		flush_accept(sv.port);
		a = node(sv.port, ca, NODE("site-b"), NULL);
		CHECK(!a.ok, "revoked site-b refused at the handshake after "
			     "the swap (%s)",
		    why(a));
		a = node(sv.port, ca, NODE("site-a"), NULL);
		CHECK(a.ok, "a new site-a connection after the swap: %s",
		    why(a));
		rv = nng_send(s, "ping", 5, 0);
		if (rv == 0)
			rv = nng_recv(s, &reply, &n, NNG_FLAG_ALLOC);
		if (rv == 0)
			nng_free(reply, n);
		CHECK(rv == 0 && sv.last_pipe == pipe_before,
		    "the established connection lives on through the swap "
		    "(pipe %u -> %u): %s",
		    pipe_before, sv.last_pipe, nng_strerror(rv));
		nng_close(s);
		nng_tls_config_free(cc);
	}

	/* An expired CRL (nextUpdate passed): mbedTLS refuses everyone. */
	MUST(certs_crl_renew(D, -1) == 0, "%s", fs_error());
	free(crl);
	crl = slurp(D, "crl.pem");
	{
		nng_tls_config *c3 = mkcfg(NNG_TLS_MODE_SERVER, ca, crl, own,
		    NULL);
		MUST(nng_listener_set_ptr(sv.l, NNG_OPT_TLS_CONFIG, c3) == 0,
		    "set config");
		nng_tls_config_free(c3);
	}
	a = node(sv.port, ca, NODE("site-a"), NULL);
	printf("# note: the first handshake after a config swap without "
	       "flush_accept: %s (the pending accept keeps the old config)\n",
	    why(a));
	a = node(sv.port, ca, NODE("site-a"), NULL);
	CHECK(!a.ok, "with an expired CRL even a good node is refused (%s)",
	    why(a));

	/* A node certificate (clientAuth) used as a server certificate. */
	server_stop(&sv);
	nng_tls_config_free(scfg);
	scfg = mkcfg(NNG_TLS_MODE_SERVER, ca, NULL, NODE("site-a"), NULL);
	server_start(&sv, scfg);
	a = node(sv.port, ca, NODE("ops"), NULL);
	CHECK(!a.ok, "a node certificate cannot act as the aggregator (%s)",
	    why(a));
	server_stop(&sv);
	nng_tls_config_free(scfg);

	free(ca);
	free(crl);
	free(rogue_ca);
	{
		char cmd[700];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", B);
		if (system(cmd) != 0)
			printf("# could not remove %s\n", B);
	}
	return tc_done();
}
