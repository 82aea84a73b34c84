/* test_certs_crypto: fed/crypto (digests, identities, signatures, trust
 * store) against certificates made by certs/ in a fresh directory. */
#define _GNU_SOURCE
#include "base.h"
#include "certs.h"
#include "crypto.h"
#include "tcheck.h"

#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

static char B[512], D[600], R[600];

static char *slurp(const char *path, size_t *n)
{
	void *data = NULL;
	MUST(fs_read_file(path, 1 << 20, &data, n) == 0, "%s", fs_error());
	return data;
}

static char *pem_of(const char *dir, const char *name, size_t *n)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return slurp(path, n);
}

static int copy_file(const char *from, const char *to, mode_t mode)
{
	size_t n;
	char *d = slurp(from, &n);
	int rv = fs_write_atomic(to, d, n, mode);
	free(d);
	return rv;
}

/* verify_cert as a one-liner: 0 / -1, error in fs_error(). */
static int vc(fed_trust *t, const char *name, const char *role, char *cn)
{
	size_t n;
	char *pem = pem_of(D, name, &n);
	int rv = fed_trust_verify_cert(t, pem, n, role, cn);
	free(pem);
	return rv;
}

struct race {
	fed_trust *t;
	char *pem;
	size_t n;
	int failures;
};

static void *race_verify(void *arg)
{
	struct race *r = arg;
	char cn[FED_CN_MAX];
	for (int i = 0; i < 300; i++)
		if (fed_trust_verify_cert(r->t, r->pem, r->n, "node", cn) != 0 ||
		    strcmp(cn, "site-b") != 0)
			__atomic_add_fetch(&r->failures, 1, __ATOMIC_RELAXED);
	return NULL;
}

int main(void)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char path[1024], path2[1024], cn[FED_CN_MAX], hex[65];
	uint8_t dg[FED_SHA256_LEN], dg2[FED_SHA256_LEN];
	fed_identity *id, *idb;
	fed_trust *t, *tnocrl;
	size_t n, nb, siglen = 0;
	uint8_t *sig = NULL;
	char *pem;
	const char *ip_local[] = {"127.0.0.1", NULL};

	snprintf(B, sizeof(B), "%s/fedseg-crypto.XXXXXX", tmp);
	MUST(mkdtemp(B) != NULL, "mkdtemp");
	snprintf(R, sizeof(R), "%s/rogue", B);
	snprintf(D, sizeof(D), "%s/pki", B);

	/* --- digests --- */
	fed_sha256("abc", 3, dg);
	fed_hex(dg, sizeof(dg), hex);
	CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb4"
			  "10ff61f20015ad") == 0,
	    "SHA-256(\"abc\") = FIPS 180-2 vector (%s)", hex);
	{
		size_t big = 3 * 1000 * 1000 + 17;
		uint8_t *buf = malloc(big);
		fed_sha256_ctx *c;
		MUST(buf != NULL, "malloc");
		for (size_t i = 0; i < big; i++)
			buf[i] = (uint8_t)(i * 2654435761u >> 13);
		fed_sha256(buf, big, dg);
		c = fed_sha256_begin();
		MUST(c != NULL, "sha256_begin: %s", fs_error());
		fed_sha256_update(c, buf, 1);
		fed_sha256_update(c, buf + 1, 0);
		fed_sha256_update(c, buf + 1, 1000003);
		fed_sha256_update(c, buf + 1000004, big - 1000004);
		fed_sha256_end(c, dg2);
		CHECK(memcmp(dg, dg2, sizeof(dg)) == 0,
		    "incremental SHA-256 of 3 MB in uneven pieces = one-shot");
		free(buf);
	}

	/* --- a federation --- */
	MUST(certs_init(D, "crypto-test", 30) == 0, "init: %s", fs_error());
	MUST(certs_issue(D, "aggregator", "agg", NULL, NULL, 30) == 0, "%s",
	    fs_error());
	MUST(certs_issue(D, "node", "site-a", NULL, ip_local, 10) == 0, "%s",
	    fs_error());
	MUST(certs_issue(D, "node", "site-b", NULL, NULL, 30) == 0, "%s",
	    fs_error());
	MUST(certs_issue(D, "admin", "ops", NULL, NULL, 30) == 0, "%s",
	    fs_error());
	MUST(certs_issue_at(D, "node", "old", NULL, NULL, -10, -1) == 0, "%s",
	    fs_error());
	MUST(certs_issue_at(D, "node", "future", NULL, NULL, 5, 30) == 0, "%s",
	    fs_error());
	MUST(certs_init(R, "rogue", 30) == 0, "%s", fs_error());
	MUST(certs_issue(R, "node", "site-a", NULL, NULL, 30) == 0, "%s",
	    fs_error());
	CHECK(certs_init(D, "again", 30) != 0 &&
		strstr(fs_error(), "refusing to overwrite") != NULL,
	    "certs_init refuses an existing CA: %s", fs_error());
	CHECK(certs_issue(D, "node", "site-a", NULL, NULL, 30) != 0,
	    "certs_issue refuses an existing CN: %s", fs_error());

	/* --- identity --- */
	snprintf(path, sizeof(path), "%s/site-a.pem", D);
	id = fed_identity_load(path, path);
	CHECK(id != NULL, "identity from one PEM holding cert + key: %s",
	    id ? "" : fs_error());
	MUST(id != NULL, "identity");
	CHECK(strcmp(fed_identity_cn(id), "site-a") == 0, "identity CN %s",
	    fed_identity_cn(id));
	pem = (char *)fed_identity_cert_pem(id, &n);
	CHECK(n == strlen(pem) && strstr(pem, "BEGIN CERTIFICATE") &&
		!strstr(pem, "PRIVATE KEY"),
	    "identity PEM is the certificate only (%zu bytes)", n);
	snprintf(path, sizeof(path), "%s/site-b.crt", D);
	snprintf(path2, sizeof(path2), "%s/site-b.key", D);
	idb = fed_identity_load(path, path2);
	CHECK(idb != NULL, "identity from separate .crt and .key: %s",
	    idb ? "" : fs_error());
	MUST(idb != NULL, "identity b");
	snprintf(path, sizeof(path), "%s/site-a.crt", D);
	CHECK(fed_identity_load(path, path2) == NULL &&
		strstr(fs_error(), "does not match"),
	    "a key of another certificate is refused: %s", fs_error());
	snprintf(path, sizeof(path), "%s/open.key", D);
	MUST(copy_file(path2, path, 0644) == 0, "%s", fs_error());
	MUST(chmod(path, 0644) == 0, "chmod");
	snprintf(path2, sizeof(path2), "%s/site-b.crt", D);
	{
		char want[1100];
		snprintf(want, sizeof(want),
		    "%s: private key is readable by others (mode 0644); chmod "
		    "600",
		    path);
		CHECK(fed_identity_load(path2, path) == NULL &&
			strcmp(fs_error(), want) == 0,
		    "a 0644 key is refused: %s", fs_error());
	}
	MUST(chmod(path, 0640) == 0, "chmod");
	CHECK(fed_identity_load(path2, path) == NULL &&
		strstr(fs_error(), "(mode 0640)"),
	    "a 0640 key is refused: %s", fs_error());
	MUST(chmod(path, 0600) == 0, "chmod");
	{
		fed_identity *ok = fed_identity_load(path2, path);
		CHECK(ok != NULL, "the same key at 0600 is accepted");
		fed_identity_free(ok);
	}
	CHECK(fed_identity_load("/nonexistent/x.crt", "/nonexistent/x.key") ==
		    NULL &&
		strstr(fs_error(), "/nonexistent/x.key"),
	    "missing key file named: %s", fs_error());

	/* --- signatures --- */
	{
		const char msg[] = "round 7, digest 0123, nonce abcd";
		char flipped[sizeof(msg)];
		size_t bn;
		const char *pb = fed_identity_cert_pem(idb, &bn);
		MUST(fed_sign(id, msg, sizeof(msg), &sig, &siglen) == 0, "%s",
		    fs_error());
		CHECK(siglen > 60 && siglen <= 72 && sig[0] == 0x30,
		    "ECDSA P-256 DER signature (%zu bytes)", siglen);
		CHECK(fed_verify(pem, n, msg, sizeof(msg), sig, siglen) == 0,
		    "signature verifies");
		memcpy(flipped, msg, sizeof(msg));
		flipped[3] ^= 0x01;
		CHECK(fed_verify(pem, n, flipped, sizeof(msg), sig, siglen) != 0,
		    "one flipped message bit fails: %s", fs_error());
		sig[siglen - 1] ^= 0x80;
		CHECK(fed_verify(pem, n, msg, sizeof(msg), sig, siglen) != 0,
		    "one flipped signature bit fails: %s", fs_error());
		sig[siglen - 1] ^= 0x80;
		CHECK(fed_verify(pb, bn, msg, sizeof(msg), sig, siglen) != 0,
		    "another node's certificate does not verify it: %s",
		    fs_error());
		CHECK(fed_verify(pem, n, msg, sizeof(msg), sig, 0) != 0,
		    "empty signature fails");
		CHECK(fed_verify("junk", 4, msg, sizeof(msg), sig, siglen) != 0,
		    "junk certificate fails: %s", fs_error());
		free(sig);
		MUST(fed_sign(id, "", 0, &sig, &siglen) == 0, "%s", fs_error());
		CHECK(fed_verify(pem, n, "", 0, sig, siglen) == 0,
		    "empty message signs and verifies");
		free(sig);
	}

	/* --- trust --- */
	snprintf(path, sizeof(path), "%s/ca.crt", D);
	snprintf(path2, sizeof(path2), "%s/crl.pem", D);
	t = fed_trust_load(path, path2);
	MUST(t != NULL, "trust: %s", fs_error());
	tnocrl = fed_trust_load(path, NULL);
	MUST(tnocrl != NULL, "trust without CRL: %s", fs_error());
	CHECK(fed_trust_load(path2, NULL) == NULL,
	    "a CRL is no CA certificate: %s", fs_error());
	memset(cn, 0, sizeof(cn));
	CHECK(vc(t, "site-a.crt", "node", cn) == 0 && strcmp(cn, "site-a") == 0,
	    "good node certificate, role node -> CN %s", cn);
	CHECK(vc(t, "site-a.pem", "node", cn) == 0,
	    "the cert+key PEM verifies too (cert is read, key ignored)");
	CHECK(fed_trust_verify_cert(t, pem, n, NULL, cn) == 0,
	    "role NULL: any role");
	CHECK(vc(t, "agg.crt", "aggregator", cn) == 0 &&
		strcmp(cn, "agg") == 0,
	    "aggregator with role aggregator");
	CHECK(vc(t, "ops.crt", "admin", cn) == 0, "admin with role admin");
	CHECK(vc(t, "ops.crt", "node", cn) != 0 &&
		strstr(fs_error(), "role node expected, certificate is admin"),
	    "admin refused as node: %s", fs_error());
	CHECK(vc(t, "site-a.crt", "aggregator", cn) != 0 &&
		strstr(fs_error(),
		    "role aggregator expected, certificate is node"),
	    "node refused as aggregator: %s", fs_error());
	{
		char *rp = pem_of(R, "site-a.crt", &nb);
		CHECK(fed_trust_verify_cert(t, rp, nb, "node", cn) != 0 &&
			strstr(fs_error(), "not signed by the federation CA"),
		    "another CA's certificate (same CN): %s", fs_error());
		free(rp);
		rp = pem_of(R, "ca.crt", &nb);
		CHECK(fed_trust_verify_cert(t, rp, nb, NULL, cn) != 0 &&
			strstr(fs_error(), "not signed by the federation CA"),
		    "another CA's own certificate: %s", fs_error());
		free(rp);
	}
	CHECK(vc(t, "old.crt", "node", cn) != 0 &&
		strstr(fs_error(), "expired"),
	    "expired: %s", fs_error());
	CHECK(vc(t, "future.crt", "node", cn) != 0 &&
		strstr(fs_error(), "not yet valid"),
	    "not yet valid: %s", fs_error());
	CHECK(vc(t, "ca.crt", NULL, cn) != 0 &&
		strstr(fs_error(), "is a CA certificate"),
	    "the CA certificate is no peer: %s", fs_error());
	CHECK(fed_trust_verify_cert(t, "-----BEGIN CERTIFICATE-----\nAAAA\n"
					"-----END CERTIFICATE-----\n",
		  60, NULL, cn) != 0,
	    "garbage PEM: %s", fs_error());
	CHECK(fed_trust_verify_cert(t, NULL, 0, NULL, cn) != 0,
	    "no PEM: %s", fs_error());

	/* --- revocation --- */
	MUST(certs_revoke(D, "site-a", "keyCompromise") == 0, "%s", fs_error());
	CHECK(vc(t, "site-a.crt", "node", cn) == 0,
	    "before reload the old CRL is in force (site-a accepted)");
	CHECK(fed_trust_reload_crl(t) == 0, "reload CRL");
	CHECK(vc(t, "site-a.crt", "node", cn) != 0 &&
		strstr(fs_error(), "revoked"),
	    "revoked after reload: %s", fs_error());
	CHECK(vc(t, "site-b.crt", "node", cn) == 0, "site-b still accepted");
	CHECK(vc(tnocrl, "site-a.crt", "node", cn) == 0,
	    "a trust store without a CRL does not know revocations");
	{
		size_t cn_len;
		char *good = pem_of(D, "crl.pem", &cn_len);
		char *rogue = pem_of(R, "crl.pem", &nb);
		MUST(fs_write_atomic(path2, "junk\n", 5, 0644) == 0, "write");
		CHECK(fed_trust_reload_crl(t) != 0 &&
			strstr(fs_error(), "previous CRL stays"),
		    "a junk CRL is refused: %s", fs_error());
		MUST(fs_write_atomic(path2, rogue, nb, 0644) == 0, "write");
		CHECK(fed_trust_reload_crl(t) != 0 &&
			strstr(fs_error(), "not signed by the federation CA"),
		    "another CA's CRL is refused: %s", fs_error());
		CHECK(vc(t, "site-a.crt", "node", cn) != 0 &&
			strstr(fs_error(), "revoked"),
		    "after failed reloads the old CRL stays: %s", fs_error());
		MUST(fs_write_atomic(path2, good, cn_len, 0644) == 0, "write");
		free(good);
		free(rogue);
	}
	MUST(certs_crl_renew(D, -1) == 0, "%s", fs_error());
	CHECK(fed_trust_reload_crl(t) == 0, "an expired CRL loads");
	CHECK(vc(t, "site-b.crt", "node", cn) != 0 &&
		strstr(fs_error(), "CRL") && strstr(fs_error(), "expired"),
	    "an expired CRL refuses everyone: %s", fs_error());
	MUST(certs_crl_renew(D, 30) == 0, "%s", fs_error());
	CHECK(fed_trust_reload_crl(t) == 0 &&
		vc(t, "site-b.crt", "node", cn) == 0,
	    "renewed CRL: site-b accepted again");
	CHECK(vc(t, "site-a.crt", "node", cn) != 0 &&
		strstr(fs_error(), "revoked"),
	    "renewed CRL keeps site-a revoked");

	/* --- concurrent verifies while the CRL is reloaded --- */
	{
		struct race r = {t, NULL, 0, 0};
		pthread_t th[4];
		int reload_fail = 0;
		r.pem = pem_of(D, "site-b.crt", &r.n);
		for (int i = 0; i < 4; i++)
			pthread_create(&th[i], NULL, race_verify, &r);
		for (int i = 0; i < 30; i++)
			reload_fail += fed_trust_reload_crl(t) != 0;
		for (int i = 0; i < 4; i++)
			pthread_join(th[i], NULL);
		CHECK(r.failures == 0 && reload_fail == 0,
		    "4 threads x 300 verifies during 30 CRL reloads: %d "
		    "failures",
		    r.failures);
		free(r.pem);
	}

	/* --- days left --- */
	{
		double a, o;
		snprintf(path, sizeof(path), "%s/site-a.crt", D);
		a = fed_cert_days_left(path);
		snprintf(path, sizeof(path), "%s/old.crt", D);
		o = fed_cert_days_left(path);
		CHECK(a > 9.99 && a <= 10.0, "site-a: %.4f days left", a);
		CHECK(o < -0.99 && o >= -1.01, "old: %.4f days left", o);
		CHECK(fed_cert_days_left("/nonexistent.crt") == -1e9,
		    "missing file: -1e9");
		snprintf(path, sizeof(path), "%s/crl.pem", D);
		MUST(certs_crl_renew(D, 7) == 0, "%s", fs_error());
		a = fed_crl_days_left(path);
		CHECK(a > 6.99 && a <= 7.0, "CRL: %.4f days left", a);
		CHECK(fed_crl_days_left("/nonexistent.pem") == -1e9,
		    "CRL missing: -1e9");
	}

	fed_identity_free(id);
	fed_identity_free(idb);
	fed_trust_free(t);
	fed_trust_free(tnocrl);
	{
		char cmd[1200];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", B);
		if (system(cmd) != 0)
			printf("# could not remove %s\n", B);
	}
	return tc_done();
}
