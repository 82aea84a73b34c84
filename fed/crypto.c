/* crypto.c - digests, identities, signatures and the trust store (OpenSSL 3).
 * See crypto.h and docs/security-pki.md. */
#define _GNU_SOURCE
#include "crypto.h"

#include "base.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* Certificates and CRLs are small; refuse anything absurd. */
#define FED_PEM_MAX (1 << 20)

int fed_osslerr(const char *fmt, ...)
{
	char msg[640], q[320] = "";
	size_t used = 0;
	unsigned long e;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	while ((e = ERR_get_error()) != 0) {
		char one[160];
		ERR_error_string_n(e, one, sizeof(one));
		if (used < sizeof(q) - 1) {
			int k = snprintf(q + used, sizeof(q) - used, "%s%s",
			    used ? "; " : "", one);
			if (k > 0)
				used += (size_t)k;
		}
	}
	if (q[0] != '\0')
		return fs_seterr("%s (%s)", msg, q);
	return fs_seterr("%s", msg);
}

/* ------------------------------------------------------------------ */
/* Digests */

void fed_sha256(const void *data, size_t n, uint8_t out[FED_SHA256_LEN])
{
	unsigned int len = FED_SHA256_LEN;
	if (!EVP_Digest(data, n, out, &len, EVP_sha256(), NULL)) {
		/* Only on allocation failure inside OpenSSL. */
		ERR_clear_error();
		memset(out, 0, FED_SHA256_LEN);
	}
}

struct fed_sha256_ctx {
	EVP_MD_CTX *md;
	int failed;
};

fed_sha256_ctx *fed_sha256_begin(void)
{
	fed_sha256_ctx *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		fs_seterr("out of memory");
		return NULL;
	}
	if ((c->md = EVP_MD_CTX_new()) == NULL ||
	    !EVP_DigestInit_ex(c->md, EVP_sha256(), NULL)) {
		fed_osslerr("SHA-256: cannot start");
		EVP_MD_CTX_free(c->md);
		free(c);
		return NULL;
	}
	return c;
}

void fed_sha256_update(fed_sha256_ctx *c, const void *data, size_t n)
{
	if (c != NULL && !c->failed && n > 0 &&
	    !EVP_DigestUpdate(c->md, data, n))
		c->failed = 1;
}

void fed_sha256_end(fed_sha256_ctx *c, uint8_t out[FED_SHA256_LEN])
{
	unsigned int len = FED_SHA256_LEN;
	if (c == NULL || c->failed ||
	    !EVP_DigestFinal_ex(c->md, out, &len)) {
		ERR_clear_error();
		memset(out, 0, FED_SHA256_LEN);
	}
	if (c != NULL) {
		EVP_MD_CTX_free(c->md);
		free(c);
	}
}

void fed_hex(const uint8_t *d, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[d[i] >> 4];
		out[2 * i + 1] = digits[d[i] & 15];
	}
	out[2 * n] = '\0';
}

/* ------------------------------------------------------------------ */
/* Certificate helpers */

static X509 *fed_parse_pem(const char *pem, size_t n, const char *what)
{
	BIO *b;
	X509 *x;
	if (pem == NULL || n == 0 || n > FED_PEM_MAX) {
		fs_seterr("%s: no certificate (%zu bytes)", what, n);
		return NULL;
	}
	if ((b = BIO_new_mem_buf(pem, (int)n)) == NULL) {
		fed_osslerr("%s: out of memory", what);
		return NULL;
	}
	x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	if (x == NULL)
		fed_osslerr("%s: not a PEM certificate", what);
	return x;
}

static void fed_name_entry(X509 *x, int nid, char *buf, size_t size)
{
	buf[0] = '\0';
	if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), nid, buf,
		(int)size) < 0)
		buf[0] = '\0';
}

static void fed_isotime(const ASN1_TIME *t, char out[32])
{
	struct tm tm;
	if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
		snprintf(out, 32, "?");
	else
		strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ------------------------------------------------------------------ */
/* Identity */

struct fed_identity {
	X509 *cert;
	EVP_PKEY *key;
	char *pem;
	size_t pemlen;
	char cn[FED_CN_MAX];
};

void fed_identity_free(fed_identity *id)
{
	if (id == NULL)
		return;
	X509_free(id->cert);
	EVP_PKEY_free(id->key);
	free(id->pem);
	free(id);
}

fed_identity *fed_identity_load(const char *cert_path, const char *key_path)
{
	fed_identity *id = NULL;
	struct stat st;
	BIO *b = NULL;
	char *data;
	long len;

	if (cert_path == NULL || key_path == NULL) {
		fs_seterr("identity: certificate and key paths are required");
		return NULL;
	}
	/* The key's permissions first: refuse before reading it. */
	if (stat(key_path, &st) != 0) {
		fs_seterr("%s: %s", key_path, strerror(errno));
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		fs_seterr("%s: private key is not a regular file", key_path);
		return NULL;
	}
	if ((st.st_mode & 077) != 0) {
		fs_seterr("%s: private key is readable by others (mode %04o); "
			  "chmod 600",
		    key_path, (unsigned)(st.st_mode & 07777));
		return NULL;
	}
	if ((id = calloc(1, sizeof(*id))) == NULL) {
		fs_seterr("out of memory");
		return NULL;
	}
	if ((b = BIO_new_file(cert_path, "r")) == NULL) {
		fed_osslerr("%s: cannot open: %s", cert_path, strerror(errno));
		goto fail;
	}
	if ((id->cert = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL) {
		fed_osslerr("%s: no PEM certificate", cert_path);
		goto fail;
	}
	BIO_free(b);
	if ((b = BIO_new_file(key_path, "r")) == NULL) {
		fed_osslerr("%s: cannot open: %s", key_path, strerror(errno));
		goto fail;
	}
	if ((id->key = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)) == NULL) {
		fed_osslerr("%s: no usable PEM private key (encrypted keys are "
			    "not supported)",
		    key_path);
		goto fail;
	}
	BIO_free(b);
	b = NULL;
	if (X509_check_private_key(id->cert, id->key) != 1) {
		fed_osslerr("%s: private key does not match the certificate "
			    "in %s",
		    key_path, cert_path);
		goto fail;
	}
	fed_name_entry(id->cert, NID_commonName, id->cn, sizeof(id->cn));
	if (id->cn[0] == '\0') {
		fs_seterr("%s: certificate has no CN", cert_path);
		goto fail;
	}
	/* Re-encode the certificate alone: what is sent to peers never
	 * contains anything else from the file. */
	if ((b = BIO_new(BIO_s_mem())) == NULL ||
	    !PEM_write_bio_X509(b, id->cert)) {
		fed_osslerr("%s: cannot encode the certificate", cert_path);
		goto fail;
	}
	len = BIO_get_mem_data(b, &data);
	if (len <= 0 || (id->pem = malloc((size_t)len + 1)) == NULL) {
		fs_seterr("out of memory");
		goto fail;
	}
	memcpy(id->pem, data, (size_t)len);
	id->pem[len] = '\0';
	id->pemlen = (size_t)len;
	BIO_free(b);
	return id;
fail:
	BIO_free(b);
	fed_identity_free(id);
	return NULL;
}

const char *fed_identity_cert_pem(const fed_identity *id, size_t *n)
{
	if (n != NULL)
		*n = id->pemlen;
	return id->pem;
}

const char *fed_identity_cn(const fed_identity *id) { return id->cn; }

int fed_sign(const fed_identity *id, const void *msg, size_t n,
    uint8_t **sig, size_t *siglen)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t *buf = NULL;
	size_t len = 0;
	int rv = -1;

	if (md == NULL ||
	    EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, id->key) != 1 ||
	    EVP_DigestSign(md, NULL, &len, msg, n) != 1) {
		fed_osslerr("sign as %s: cannot start", id->cn);
		goto out;
	}
	if ((buf = malloc(len)) == NULL) {
		fs_seterr("out of memory");
		goto out;
	}
	if (EVP_DigestSign(md, buf, &len, msg, n) != 1) {
		fed_osslerr("sign as %s: failed", id->cn);
		goto out;
	}
	*sig = buf;
	*siglen = len;
	buf = NULL;
	rv = 0;
out:
	free(buf);
	EVP_MD_CTX_free(md);
	return rv;
}

int fed_verify(const char *pem, size_t n, const void *msg, size_t msglen,
    const uint8_t *sig, size_t siglen)
{
	X509 *x = fed_parse_pem(pem, n, "signature check");
	EVP_PKEY *pk = NULL;
	EVP_MD_CTX *md = NULL;
	char cn[FED_CN_MAX];
	int rv = -1, ok;

	if (x == NULL)
		return -1;
	fed_name_entry(x, NID_commonName, cn, sizeof(cn));
	if ((pk = X509_get0_pubkey(x)) == NULL) {
		fed_osslerr("certificate '%s': no usable public key", cn);
		goto out;
	}
	if (sig == NULL || siglen == 0) {
		fs_seterr("signature of '%s' is missing", cn);
		goto out;
	}
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pk) != 1) {
		fed_osslerr("certificate '%s': cannot verify", cn);
		goto out;
	}
	ok = EVP_DigestVerify(md, sig, siglen, msg, msglen);
	ERR_clear_error(); /* a bad DER signature leaves decoder errors */
	if (ok != 1) {
		fs_seterr("signature does not verify with the certificate of "
			  "'%s'",
		    cn);
		goto out;
	}
	rv = 0;
out:
	EVP_MD_CTX_free(md);
	X509_free(x);
	return rv;
}

double fed_cert_days_left(const char *path)
{
	BIO *b = BIO_new_file(path, "r");
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	int days = 0, secs = 0;
	double rv = -1e9;

	if (x == NULL)
		fed_osslerr("%s: no PEM certificate", path);
	else if (!ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)))
		fed_osslerr("%s: bad notAfter", path);
	else
		rv = days + secs / 86400.0;
	X509_free(x);
	BIO_free(b);
	return rv;
}

double fed_crl_days_left(const char *path)
{
	BIO *b = BIO_new_file(path, "r");
	X509_CRL *crl = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
	const ASN1_TIME *next = crl ? X509_CRL_get0_nextUpdate(crl) : NULL;
	int days = 0, secs = 0;
	double rv = -1e9;

	if (crl == NULL)
		fed_osslerr("%s: no PEM CRL", path);
	else if (next == NULL)
		fs_seterr("%s: CRL has no nextUpdate", path);
	else if (!ASN1_TIME_diff(&days, &secs, NULL, next))
		fed_osslerr("%s: bad nextUpdate", path);
	else
		rv = days + secs / 86400.0;
	X509_CRL_free(crl);
	BIO_free(b);
	return rv;
}

/* ------------------------------------------------------------------ */
/* Trust store */

struct fed_trust {
	pthread_mutex_t lk; /* guards store (the pointer, not its content) */
	X509_STORE *store;  /* immutable once published; refcounted */
	X509 *ca;
	char *ca_path;
	char *crl_path; /* NULL: no CRL checking */
	char ca_cn[FED_CN_MAX];
};

static X509_CRL *fed_load_crl(const char *path, X509 *ca)
{
	BIO *b = BIO_new_file(path, "r");
	X509_CRL *crl = NULL;
	EVP_PKEY *pk;

	if (b == NULL) {
		fed_osslerr("%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL);
	BIO_free(b);
	if (crl == NULL) {
		fed_osslerr("%s: no PEM CRL", path);
		return NULL;
	}
	/* Checked here too so that a bad file is refused when (re)loaded,
	 * not at the first verification. */
	pk = X509_get0_pubkey(ca);
	if (X509_NAME_cmp(X509_CRL_get_issuer(crl),
		X509_get_subject_name(ca)) != 0 ||
	    pk == NULL || X509_CRL_verify(crl, pk) != 1) {
		ERR_clear_error();
		X509_CRL_free(crl);
		fs_seterr("%s: CRL is not signed by the federation CA", path);
		return NULL;
	}
	return crl;
}

/* A new store holding the CA and, when crl_path is set, the CRL. */
static X509_STORE *fed_store_build(fed_trust *t)
{
	X509_STORE *s = X509_STORE_new();
	X509_CRL *crl = NULL;

	if (s == NULL || !X509_STORE_add_cert(s, t->ca)) {
		fed_osslerr("%s: cannot build the trust store", t->ca_path);
		goto fail;
	}
	if (t->crl_path != NULL) {
		if ((crl = fed_load_crl(t->crl_path, t->ca)) == NULL)
			goto fail;
		if (!X509_STORE_add_crl(s, crl)) {
			fed_osslerr("%s: cannot add the CRL", t->crl_path);
			goto fail;
		}
		X509_CRL_free(crl);
		crl = NULL;
		X509_STORE_set_flags(s, X509_V_FLAG_CRL_CHECK);
	}
	return s;
fail:
	X509_CRL_free(crl);
	X509_STORE_free(s);
	return NULL;
}

void fed_trust_free(fed_trust *t)
{
	if (t == NULL)
		return;
	X509_STORE_free(t->store);
	X509_free(t->ca);
	free(t->ca_path);
	free(t->crl_path);
	pthread_mutex_destroy(&t->lk);
	free(t);
}

fed_trust *fed_trust_load(const char *ca_path, const char *crl_path)
{
	fed_trust *t;
	BIO *b;

	if (ca_path == NULL) {
		fs_seterr("trust: the federation CA certificate is required");
		return NULL;
	}
	if ((t = calloc(1, sizeof(*t))) == NULL) {
		fs_seterr("out of memory");
		return NULL;
	}
	pthread_mutex_init(&t->lk, NULL);
	t->ca_path = strdup(ca_path);
	t->crl_path = crl_path ? strdup(crl_path) : NULL;
	if (t->ca_path == NULL || (crl_path != NULL && t->crl_path == NULL)) {
		fs_seterr("out of memory");
		goto fail;
	}
	if ((b = BIO_new_file(ca_path, "r")) == NULL) {
		fed_osslerr("%s: cannot open: %s", ca_path, strerror(errno));
		goto fail;
	}
	t->ca = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	if (t->ca == NULL) {
		fed_osslerr("%s: no PEM certificate", ca_path);
		goto fail;
	}
	if (X509_check_ca(t->ca) == 0) {
		fs_seterr("%s: not a CA certificate", ca_path);
		goto fail;
	}
	fed_name_entry(t->ca, NID_commonName, t->ca_cn, sizeof(t->ca_cn));
	if ((t->store = fed_store_build(t)) == NULL)
		goto fail;
	return t;
fail:
	fed_trust_free(t);
	return NULL;
}

int fed_trust_reload_crl(fed_trust *t)
{
	X509_STORE *s, *old;
	if (t->crl_path == NULL)
		return 0;
	if ((s = fed_store_build(t)) == NULL)
		return fs_preferr("CRL reload failed, the previous CRL stays");
	pthread_mutex_lock(&t->lk);
	old = t->store;
	t->store = s;
	pthread_mutex_unlock(&t->lk);
	/* Verifications in flight hold their own reference. */
	X509_STORE_free(old);
	return 0;
}

/* Turns a verification failure into the one-line reason crypto.h names. */
static int fed_verify_err(fed_trust *t, X509 *x, const char *cn, int err)
{
	char when[32];
	switch (err) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
		fed_isotime(X509_get0_notAfter(x), when);
		return fs_seterr("certificate '%s' expired on %s", cn, when);
	case X509_V_ERR_CERT_NOT_YET_VALID:
		fed_isotime(X509_get0_notBefore(x), when);
		return fs_seterr("certificate '%s' is not yet valid (from %s; "
				 "check the clocks)",
		    cn, when);
	case X509_V_ERR_CERT_REVOKED:
		return fs_seterr("certificate '%s' is revoked (%s)", cn,
		    t->crl_path);
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_CERT_UNTRUSTED:
	case X509_V_ERR_CERT_REJECTED:
		return fs_seterr("certificate '%s' is not signed by the "
				 "federation CA ('%s', %s)",
		    cn, t->ca_cn, t->ca_path);
	case X509_V_ERR_CRL_HAS_EXPIRED:
		return fs_seterr("the CRL %s has expired: every certificate is "
				 "refused until it is renewed (`fedseg certs "
				 "crl`) and reloaded",
		    t->crl_path);
	case X509_V_ERR_CRL_NOT_YET_VALID:
		return fs_seterr("the CRL %s is not yet valid (check the "
				 "clocks)",
		    t->crl_path);
	case X509_V_ERR_UNABLE_TO_GET_CRL:
		return fs_seterr("no CRL of the federation CA loaded from %s",
		    t->crl_path);
	default:
		return fs_seterr("certificate '%s': %s", cn,
		    X509_verify_cert_error_string(err));
	}
}

int fed_trust_verify_cert(fed_trust *t, const char *pem, size_t n,
    const char *want_role, char cn[FED_CN_MAX])
{
	X509 *x = fed_parse_pem(pem, n, "peer certificate");
	X509_STORE *s = NULL;
	X509_STORE_CTX *ctx = NULL;
	char subj_cn[FED_CN_MAX], role[64];
	int rv = -1;

	if (x == NULL)
		return -1;
	fed_name_entry(x, NID_commonName, subj_cn, sizeof(subj_cn));
	fed_name_entry(x, NID_organizationalUnitName, role, sizeof(role));
	if (subj_cn[0] == '\0') {
		fs_seterr("peer certificate has no CN");
		goto out;
	}
	pthread_mutex_lock(&t->lk);
	s = t->store;
	X509_STORE_up_ref(s);
	pthread_mutex_unlock(&t->lk);

	if ((ctx = X509_STORE_CTX_new()) == NULL ||
	    !X509_STORE_CTX_init(ctx, s, x, NULL)) {
		fed_osslerr("certificate '%s': cannot verify", subj_cn);
		goto out;
	}
	if (X509_verify_cert(ctx) != 1) {
		int err = X509_STORE_CTX_get_error(ctx);
		ERR_clear_error();
		fed_verify_err(t, x, subj_cn, err);
		goto out;
	}
	/* The CA itself chains to itself; it is no peer. */
	if (X509_check_ca(x) != 0) {
		fs_seterr("certificate '%s' is a CA certificate, not a peer's",
		    subj_cn);
		goto out;
	}
	if (want_role != NULL && strcmp(role, want_role) != 0) {
		fs_seterr("certificate '%s': role %s expected, certificate is "
			  "%s",
		    subj_cn, want_role, role[0] ? role : "(no role)");
		goto out;
	}
	snprintf(cn, FED_CN_MAX, "%s", subj_cn);
	rv = 0;
out:
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(s);
	X509_free(x);
	return rv;
}
