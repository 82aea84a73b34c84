/* certs.c - federation CA, certificates, CRL and `fedseg certs`. See certs.h
 * and docs/security-pki.md. */
#define _GNU_SOURCE
#include "certs.h"

#include "base.h"
#include "crypto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#define CERTS_MAX_FILE (1 << 20)
/* notBefore and a CRL's lastUpdate are set this far in the past, so that a
 * verifier whose clock is a little behind the CA's accepts them at once. */
#define CERTS_BACKDATE_S 600

/* ------------------------------------------------------------------ */
/* Small helpers (OpenSSL errors go through fed_osslerr, fed/crypto.h) */

static const char *const certs_roles[] = {"aggregator", "node", "admin"};

static int certs_role_ok(const char *role)
{
	for (size_t i = 0; i < sizeof(certs_roles) / sizeof(certs_roles[0]);
	     i++)
		if (role != NULL && strcmp(role, certs_roles[i]) == 0)
			return 1;
	return 0;
}

static int certs_cn_ok(const char *cn)
{
	size_t n = cn ? strlen(cn) : 0;
	if (n < 1 || n > 64)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = cn[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return 0;
	}
	/* ".", ".." would name the directory itself as a file stem */
	return strcmp(cn, ".") != 0 && strcmp(cn, "..") != 0;
}

static int certs_dns_ok(const char *h)
{
	size_t n = strlen(h);
	if (n < 1 || n > 253)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = h[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '-' ||
		    (c == '*' && i == 0)))
			return 0;
	}
	return 1;
}

static int certs_ip_ok(const char *a)
{
	unsigned char buf[16];
	return inet_pton(AF_INET, a, buf) == 1 ||
	    inet_pton(AF_INET6, a, buf) == 1;
}

static int certs_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* ISO 8601 UTC of an ASN1_TIME ("2026-01-31T12:00:00Z"). */
static void certs_isotime(const ASN1_TIME *t, char out[32])
{
	struct tm tm;
	if (t == NULL || !ASN1_TIME_to_tm(t, &tm)) {
		snprintf(out, 32, "?");
		return;
	}
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int certs_parse_iso(const char *s, time_t *out)
{
	struct tm tm;
	const char *end;
	memset(&tm, 0, sizeof(tm));
	end = s ? strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm) : NULL;
	if (end == NULL || *end != '\0')
		return -1;
	*out = timegm(&tm);
	return 0;
}

/* Lower-case hex of a certificate serial (malloc'd). */
static char *certs_serial_hex(const ASN1_INTEGER *serial)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL, *out = NULL;
	if (hex != NULL) {
		out = strdup(hex);
		for (char *p = out; p && *p; p++)
			if (*p >= 'A' && *p <= 'F')
				*p = (char)(*p - 'A' + 'a');
	}
	OPENSSL_free(hex);
	BN_free(bn);
	return out;
}

/* The first entry of nid in name, or "" (into buf). */
static const char *certs_name_entry(const X509_NAME *name, int nid,
    char *buf, size_t size)
{
	buf[0] = '\0';
	if (name != NULL &&
	    X509_NAME_get_text_by_NID((X509_NAME *)name, nid, buf,
		(int)size) < 0)
		buf[0] = '\0';
	return buf;
}

/* Reads the first PEM object of the kind the reader wants from path. */
static X509 *certs_load_cert(const char *path)
{
	BIO *b = BIO_new_file(path, "r");
	X509 *x = NULL;
	if (b == NULL) {
		fed_osslerr("%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	if (x == NULL)
		fed_osslerr("%s: no PEM certificate", path);
	BIO_free(b);
	return x;
}

static EVP_PKEY *certs_load_key(const char *path)
{
	BIO *b = BIO_new_file(path, "r");
	EVP_PKEY *k = NULL;
	if (b == NULL) {
		fed_osslerr("%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	if (k == NULL)
		fed_osslerr("%s: no PEM private key", path);
	BIO_free(b);
	return k;
}

/* PEM of a certificate and/or key into one malloc'd NUL-terminated buffer. */
static char *certs_pem(X509 *x, EVP_PKEY *k, size_t *n)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL, *out = NULL;
	long len;
	if (b == NULL)
		return NULL;
	if ((x == NULL || PEM_write_bio_X509(b, x)) &&
	    (k == NULL ||
		PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL))) {
		len = BIO_get_mem_data(b, &data);
		if (len > 0 && (out = malloc((size_t)len + 1)) != NULL) {
			memcpy(out, data, (size_t)len);
			out[len] = '\0';
			*n = (size_t)len;
		}
	}
	if (out == NULL)
		fed_osslerr("cannot encode PEM");
	BIO_free(b);
	return out;
}

static int certs_write_pem(const char *path, X509 *x, EVP_PKEY *k,
    mode_t mode)
{
	size_t n = 0;
	char *pem = certs_pem(x, k, &n);
	int rv;
	if (pem == NULL)
		return fs_preferr("%s", path);
	rv = fs_write_atomic(path, pem, n, mode);
	OPENSSL_cleanse(pem, n);
	free(pem);
	return rv;
}

static int certs_add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
	if (ext == NULL)
		return fed_osslerr("extension %s = %s", OBJ_nid2sn(nid),
		    value);
	if (!X509_add_ext(x, ext, -1)) {
		X509_EXTENSION_free(ext);
		return fed_osslerr("cannot add extension %s",
		    OBJ_nid2sn(nid));
	}
	X509_EXTENSION_free(ext);
	return 0;
}

static EVP_PKEY *certs_genkey(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	if (k == NULL)
		fed_osslerr("cannot generate an EC P-256 key");
	return k;
}

/* Random positive 128-bit serial (top bit cleared so it stays within the 20
 * octets RFC 5280 allows once DER adds no sign byte; never zero). */
static int certs_random_serial(X509 *x)
{
	unsigned char r[16];
	BIGNUM *bn = NULL;
	int rv = -1;
	if (RAND_bytes(r, sizeof(r)) != 1)
		return fed_osslerr("no randomness for the serial");
	r[0] &= 0x7f;
	r[0] |= 0x40;
	if ((bn = BN_bin2bn(r, sizeof(r), NULL)) != NULL &&
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL)
		rv = 0;
	else
		fed_osslerr("cannot set the serial");
	BN_free(bn);
	return rv;
}

/* notBefore = now + nb_s, notAfter = now + na_s. */
static int certs_set_validity(X509 *x, long nb_s, long na_s)
{
	time_t now = time(NULL);
	if (X509_time_adj_ex(X509_getm_notBefore(x), 0, nb_s, &now) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), 0, na_s, &now) == NULL)
		return fed_osslerr("cannot set the validity period");
	return 0;
}

/* ------------------------------------------------------------------ */
/* Directory lock and index */

/* Exclusive lock on dir/.lock; returns the fd (close to release). */
static int certs_lock(const char *dir)
{
	char path[PATH_MAX];
	int fd;
	if (fs_path(path, sizeof(path), "%s/.lock", dir) != 0)
		return -1;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		fs_seterr("%s: cannot open lock file: %s", path,
		    strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX) != 0) {
		fs_seterr("%s: cannot lock: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static cJSON *certs_index_load(const char *dir)
{
	char path[PATH_MAX];
	void *data = NULL;
	size_t n = 0;
	cJSON *idx, *arr;
	if (fs_path(path, sizeof(path), "%s/index.json", dir) != 0)
		return NULL;
	if (fs_read_file(path, CERTS_MAX_FILE, &data, &n) != 0)
		return NULL;
	idx = cJSON_ParseWithLength(data, n);
	free(data);
	arr = idx ? cJSON_GetObjectItemCaseSensitive(idx, "certs") : NULL;
	if (idx == NULL || !cJSON_IsArray(arr)) {
		cJSON_Delete(idx);
		fs_seterr("%s: not a certificate index (bad JSON)", path);
		return NULL;
	}
	return idx;
}

static int certs_index_save(const char *dir, const cJSON *idx)
{
	char path[PATH_MAX];
	char *text;
	int rv;
	if (fs_path(path, sizeof(path), "%s/index.json", dir) != 0)
		return -1;
	if ((text = cJSON_Print(idx)) == NULL)
		return fs_seterr("%s: out of memory", path);
	{
		size_t n = strlen(text);
		char *nl = realloc(text, n + 2);
		if (nl == NULL) {
			free(text);
			return fs_seterr("%s: out of memory", path);
		}
		text = nl;
		text[n] = '\n';
		text[n + 1] = '\0';
	}
	rv = fs_write_atomic(path, text, strlen(text), 0644);
	free(text);
	return rv;
}

static const char *certs_jstr(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static cJSON *certs_index_find(cJSON *idx, const char *cn)
{
	cJSON *e;
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(idx, "certs"))
	{
		const char *c = certs_jstr(e, "cn");
		if (c != NULL && strcmp(c, cn) == 0)
			return e;
	}
	return NULL;
}

/* The CA: cert + key, loaded from dir. */
typedef struct {
	X509 *crt;
	EVP_PKEY *key;
	char federation[128];
} certs_ca;

static void certs_ca_free(certs_ca *ca)
{
	X509_free(ca->crt);
	EVP_PKEY_free(ca->key);
	memset(ca, 0, sizeof(*ca));
}

static int certs_ca_load(const char *dir, certs_ca *ca)
{
	char crt[PATH_MAX], key[PATH_MAX];
	memset(ca, 0, sizeof(*ca));
	if (fs_path(crt, sizeof(crt), "%s/ca.crt", dir) != 0 ||
	    fs_path(key, sizeof(key), "%s/ca.key", dir) != 0)
		return -1;
	if (!certs_exists(crt))
		return fs_seterr("%s: no federation CA here (run `fedseg "
				 "certs init --dir %s` first)", dir, dir);
	if ((ca->crt = certs_load_cert(crt)) == NULL ||
	    (ca->key = certs_load_key(key)) == NULL) {
		certs_ca_free(ca);
		return -1;
	}
	if (X509_check_private_key(ca->crt, ca->key) != 1) {
		certs_ca_free(ca);
		return fed_osslerr("%s does not match %s", key, crt);
	}
	certs_name_entry(X509_get_subject_name(ca->crt), NID_organizationName,
	    ca->federation, sizeof(ca->federation));
	return 0;
}

/* ------------------------------------------------------------------ */
/* CRL */

static const struct {
	const char *name;
	int code;
} certs_reasons[] = {
	{"unspecified", CRL_REASON_UNSPECIFIED},
	{"keyCompromise", CRL_REASON_KEY_COMPROMISE},
	{"caCompromise", CRL_REASON_CA_COMPROMISE},
	{"affiliationChanged", CRL_REASON_AFFILIATION_CHANGED},
	{"superseded", CRL_REASON_SUPERSEDED},
	{"cessationOfOperation", CRL_REASON_CESSATION_OF_OPERATION},
};

static int certs_reason_code(const char *name)
{
	for (size_t i = 0; i < sizeof(certs_reasons) / sizeof(certs_reasons[0]);
	     i++)
		if (strcmp(name, certs_reasons[i].name) == 0)
			return certs_reasons[i].code;
	return -1;
}

static const char *certs_reason_name(int code)
{
	for (size_t i = 0; i < sizeof(certs_reasons) / sizeof(certs_reasons[0]);
	     i++)
		if (certs_reasons[i].code == code)
			return certs_reasons[i].name;
	return "other";
}

/* Builds and writes dir/crl.pem from the revoked entries of idx, with the
 * CRL number in idx ("crl_number") and nextUpdate now + days. */
static int certs_crl_write(const char *dir, const certs_ca *ca, cJSON *idx,
    int days)
{
	char path[PATH_MAX], next[32];
	X509_CRL *crl = NULL;
	ASN1_TIME *t = NULL;
	ASN1_INTEGER *num = NULL;
	X509_EXTENSION *aki = NULL;
	X509V3_CTX ctx;
	BIO *b = NULL;
	const cJSON *jn, *e;
	time_t now = time(NULL);
	int rv = -1;

	if (fs_path(path, sizeof(path), "%s/crl.pem", dir) != 0)
		return -1;
	jn = cJSON_GetObjectItemCaseSensitive(idx, "crl_number");
	if ((crl = X509_CRL_new()) == NULL ||
	    !X509_CRL_set_version(crl, X509_CRL_VERSION_2) ||
	    !X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca->crt)))
		goto ossl;
	if ((t = X509_time_adj_ex(NULL, 0, -CERTS_BACKDATE_S, &now)) == NULL ||
	    !X509_CRL_set1_lastUpdate(crl, t))
		goto ossl;
	if (X509_time_adj_ex(t, days, 0, &now) == NULL ||
	    !X509_CRL_set1_nextUpdate(crl, t))
		goto ossl;
	certs_isotime(t, next);

	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(idx, "certs"))
	{
		const char *st = certs_jstr(e, "status");
		const char *ser = certs_jstr(e, "serial");
		const char *at = certs_jstr(e, "revoked_at");
		const char *why = certs_jstr(e, "reason");
		X509_REVOKED *r;
		BIGNUM *bn = NULL;
		ASN1_INTEGER *ai = NULL;
		ASN1_TIME *rt = NULL;
		time_t when;
		int ok, code;

		if (st == NULL || strcmp(st, "revoked") != 0)
			continue;
		if (ser == NULL || !BN_hex2bn(&bn, ser) || at == NULL ||
		    certs_parse_iso(at, &when) != 0) {
			BN_free(bn);
			fs_seterr("%s/index.json: bad revoked entry", dir);
			goto out;
		}
		code = why ? certs_reason_code(why) : CRL_REASON_UNSPECIFIED;
		r = X509_REVOKED_new();
		ai = BN_to_ASN1_INTEGER(bn, NULL);
		rt = ASN1_TIME_set(NULL, when);
		ok = r != NULL && ai != NULL && rt != NULL &&
		    X509_REVOKED_set_serialNumber(r, ai) &&
		    X509_REVOKED_set_revocationDate(r, rt);
		if (ok && code > CRL_REASON_UNSPECIFIED) {
			ASN1_ENUMERATED *en = ASN1_ENUMERATED_new();
			ok = en != NULL && ASN1_ENUMERATED_set(en, code) &&
			    X509_REVOKED_add1_ext_i2d(r, NID_crl_reason, en, 0,
				0);
			ASN1_ENUMERATED_free(en);
		}
		BN_free(bn);
		ASN1_INTEGER_free(ai);
		ASN1_TIME_free(rt);
		if (!ok || !X509_CRL_add0_revoked(crl, r)) {
			X509_REVOKED_free(r);
			goto ossl;
		}
	}
	if (!X509_CRL_sort(crl))
		goto ossl;
	if ((num = ASN1_INTEGER_new()) == NULL ||
	    !ASN1_INTEGER_set(num, cJSON_IsNumber(jn) ? (long)jn->valuedouble
						      : 1) ||
	    !X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0))
		goto ossl;
	X509V3_set_ctx(&ctx, ca->crt, NULL, NULL, crl, 0);
	if ((aki = X509V3_EXT_nconf_nid(NULL, &ctx,
		 NID_authority_key_identifier, "keyid:always")) == NULL ||
	    !X509_CRL_add_ext(crl, aki, -1))
		goto ossl;
	if (!X509_CRL_sign(crl, ca->key, EVP_sha256()))
		goto ossl;
	{
		char *data;
		long len;
		if ((b = BIO_new(BIO_s_mem())) == NULL ||
		    !PEM_write_bio_X509_CRL(b, crl))
			goto ossl;
		len = BIO_get_mem_data(b, &data);
		if (fs_write_atomic(path, data, (size_t)len, 0644) != 0)
			goto out;
	}
	cJSON_DeleteItemFromObjectCaseSensitive(idx, "crl_next_update");
	cJSON_AddStringToObject(idx, "crl_next_update", next);
	rv = 0;
	goto out;
ossl:
	fed_osslerr("%s: cannot build the CRL", path);
out:
	BIO_free(b);
	X509_EXTENSION_free(aki);
	ASN1_INTEGER_free(num);
	ASN1_TIME_free(t);
	X509_CRL_free(crl);
	return rv;
}

/* ------------------------------------------------------------------ */
/* init */

int certs_init(const char *dir, const char *federation, int days)
{
	char crtp[PATH_MAX], keyp[PATH_MAX], idxp[PATH_MAX], cn[160];
	certs_ca ca;
	X509_NAME *name = NULL;
	cJSON *idx = NULL, *caj;
	char *serial = NULL, after[32];
	int lock = -1, rv = -1;
	size_t flen = federation ? strlen(federation) : 0;

	memset(&ca, 0, sizeof(ca));
	if (flen < 1 || flen > 64)
		return fs_seterr("federation name must be 1..64 characters");
	for (size_t i = 0; i < flen; i++)
		if ((unsigned char)federation[i] < 0x20 ||
		    federation[i] == 0x7f || federation[i] == '/' ||
		    federation[i] == '\\')
			return fs_seterr("federation name '%s': no control "
					 "characters, '/' or '\\'",
			    federation);
	if (days < 1)
		return fs_seterr("--days must be at least 1 (got %d)", days);
	if (fs_mkdir_p(dir, 1) != 0)
		return -1;
	if (fs_path(crtp, sizeof(crtp), "%s/ca.crt", dir) != 0 ||
	    fs_path(keyp, sizeof(keyp), "%s/ca.key", dir) != 0 ||
	    fs_path(idxp, sizeof(idxp), "%s/index.json", dir) != 0)
		return -1;
	if ((lock = certs_lock(dir)) < 0)
		return -1;
	if (certs_exists(crtp) || certs_exists(keyp)) {
		fs_seterr("%s: already holds a federation CA (ca.crt/ca.key); "
			  "refusing to overwrite it",
		    dir);
		goto out;
	}
	snprintf(ca.federation, sizeof(ca.federation), "%s", federation);
	snprintf(cn, sizeof(cn), "%s federation CA", federation);
	if ((ca.key = certs_genkey()) == NULL)
		goto out;
	if ((ca.crt = X509_new()) == NULL || !X509_set_version(ca.crt, 2) ||
	    certs_random_serial(ca.crt) != 0 ||
	    certs_set_validity(ca.crt, -CERTS_BACKDATE_S,
		(long)days * 86400) != 0)
		goto ossl;
	if ((name = X509_NAME_new()) == NULL ||
	    !X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_UTF8,
		(const unsigned char *)federation, -1, -1, 0) ||
	    !X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
		(const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_subject_name(ca.crt, name) ||
	    !X509_set_issuer_name(ca.crt, name) ||
	    !X509_set_pubkey(ca.crt, ca.key))
		goto ossl;
	if (certs_add_ext(ca.crt, ca.crt, NID_basic_constraints,
		"critical,CA:TRUE,pathlen:0") != 0 ||
	    certs_add_ext(ca.crt, ca.crt, NID_key_usage,
		"critical,keyCertSign,cRLSign") != 0 ||
	    certs_add_ext(ca.crt, ca.crt, NID_subject_key_identifier,
		"hash") != 0)
		goto out;
	if (!X509_sign(ca.crt, ca.key, EVP_sha256()))
		goto ossl;

	serial = certs_serial_hex(X509_get_serialNumber(ca.crt));
	certs_isotime(X509_get0_notAfter(ca.crt), after);
	if ((idx = cJSON_CreateObject()) == NULL || serial == NULL)
		goto oom;
	cJSON_AddStringToObject(idx, "federation", federation);
	caj = cJSON_AddObjectToObject(idx, "ca");
	if (caj == NULL)
		goto oom;
	cJSON_AddStringToObject(caj, "cn", cn);
	cJSON_AddStringToObject(caj, "serial", serial);
	cJSON_AddStringToObject(caj, "not_after", after);
	cJSON_AddNumberToObject(idx, "crl_number", 1);
	if (cJSON_AddArrayToObject(idx, "certs") == NULL)
		goto oom;

	/* Key first: a crash after it leaves "already holds a CA", which the
	 * operator can inspect, never a certificate without its key. */
	if (certs_write_pem(keyp, NULL, ca.key, 0600) != 0 ||
	    certs_write_pem(crtp, ca.crt, NULL, 0644) != 0 ||
	    certs_crl_write(dir, &ca, idx, CERTS_CRL_DAYS) != 0 ||
	    certs_index_save(dir, idx) != 0)
		goto out;
	rv = 0;
	goto out;
oom:
	fs_seterr("out of memory");
	goto out;
ossl:
	fed_osslerr("%s: cannot create the CA certificate", crtp);
out:
	free(serial);
	cJSON_Delete(idx);
	X509_NAME_free(name);
	certs_ca_free(&ca);
	if (lock >= 0)
		close(lock);
	return rv;
}

/* ------------------------------------------------------------------ */
/* issue */

/* Appends "KIND:value" items to a comma list (malloc'd, grows). */
static int certs_san_add(char **san, const char *kind, const char *v)
{
	char *s = NULL;
	if (asprintf(&s, "%s%s%s:%s", *san ? *san : "", *san ? "," : "", kind,
		v) < 0)
		return fs_seterr("out of memory");
	free(*san);
	*san = s;
	return 0;
}

/* renew: cn must be in the index; role and SAN come from its latest
 * entry, its files are replaced, and earlier entries get "superseded_by". */
static int certs_issue_impl(const char *dir, const char *role,
    const char *cn, const char *const *dns, const char *const *ips,
    int not_before_days, int days, int renew)
{
	char crtp[PATH_MAX], keyp[PATH_MAX], pemp[PATH_MAX];
	char before[32], after[32];
	certs_ca ca;
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	X509_NAME *name = NULL;
	cJSON *idx = NULL, *e, *prev = NULL;
	char *san = NULL, *serial = NULL;
	long nb_s, na_s;
	int lock = -1, rv = -1, nsan = 0;

	memset(&ca, 0, sizeof(ca));
	if (!renew && !certs_role_ok(role))
		return fs_seterr("role '%s': must be aggregator, node or "
				 "admin",
		    role ? role : "");
	if (!certs_cn_ok(cn))
		return fs_seterr("name '%s': 1..64 characters from "
				 "[A-Za-z0-9._-]",
		    cn ? cn : "");
	if (not_before_days < -36500 || not_before_days > 36500 ||
	    days < -36500 || days > 36500)
		return fs_seterr("validity out of range");
	nb_s = (long)not_before_days * 86400 - CERTS_BACKDATE_S;
	na_s = (long)days * 86400;
	if (na_s <= nb_s)
		return fs_seterr("validity: notAfter (now %+d days) is not "
				 "after notBefore (now %+d days)",
		    days, not_before_days);
	for (size_t i = 0; dns && dns[i]; i++, nsan++)
		if (!certs_dns_ok(dns[i]))
			return fs_seterr("--dns '%s': not a DNS name", dns[i]);
	for (size_t i = 0; ips && ips[i]; i++, nsan++)
		if (!certs_ip_ok(ips[i]))
			return fs_seterr("--ip '%s': not an IPv4 or IPv6 "
					 "address",
			    ips[i]);

	if (fs_path(crtp, sizeof(crtp), "%s/%s.crt", dir, cn) != 0 ||
	    fs_path(keyp, sizeof(keyp), "%s/%s.key", dir, cn) != 0 ||
	    fs_path(pemp, sizeof(pemp), "%s/%s.pem", dir, cn) != 0)
		return -1;
	if (!certs_exists(dir))
		return fs_seterr("%s: no such directory (run `fedseg certs "
				 "init --dir %s` first)", dir, dir);
	if ((lock = certs_lock(dir)) < 0)
		return -1;
	if (certs_ca_load(dir, &ca) != 0 ||
	    (idx = certs_index_load(dir)) == NULL)
		goto out;
	if (strcmp(cn, "ca") == 0 || strcmp(cn, "crl") == 0 ||
	    strcmp(cn, "index") == 0) {
		fs_seterr("name '%s' is reserved for the CA's own files", cn);
		goto out;
	}
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(idx, "certs"))
	{
		const char *c = certs_jstr(e, "cn");
		if (c != NULL && strcmp(c, cn) == 0)
			prev = e; /* the latest one */
	}
	if (renew) {
		const char *ps;
		if (prev == NULL) {
			fs_seterr("%s: no certificate named '%s' to renew", dir,
			    cn);
			goto out;
		}
		role = certs_jstr(prev, "role");
		ps = certs_jstr(prev, "san");
		if (!certs_role_ok(role)) {
			fs_seterr("%s/index.json: '%s' has no valid role", dir,
			    cn);
			goto out;
		}
		if (ps != NULL && ps[0] != '\0' && (san = strdup(ps)) == NULL)
			goto oom;
	} else if (prev != NULL) {
		fs_seterr("%s: a certificate for '%s' was already issued "
			  "(see index.json); pick another name, or `renew` it",
		    dir, cn);
		goto out;
	}
	if (!renew &&
	    (certs_exists(crtp) || certs_exists(keyp) || certs_exists(pemp))) {
		fs_seterr("%s: %s.crt/.key/.pem already exist; refusing to "
			  "overwrite",
		    dir, cn);
		goto out;
	}

	if ((key = certs_genkey()) == NULL)
		goto out;
	if ((x = X509_new()) == NULL || !X509_set_version(x, 2) ||
	    certs_random_serial(x) != 0 ||
	    certs_set_validity(x, nb_s, na_s) != 0)
		goto ossl;
	if ((name = X509_NAME_new()) == NULL ||
	    !X509_NAME_add_entry_by_NID(name, NID_organizationName,
		MBSTRING_UTF8, (const unsigned char *)ca.federation, -1, -1,
		0) ||
	    !X509_NAME_add_entry_by_NID(name, NID_organizationalUnitName,
		MBSTRING_UTF8, (const unsigned char *)role, -1, -1, 0) ||
	    !X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
		(const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_subject_name(x, name) ||
	    !X509_set_issuer_name(x, X509_get_subject_name(ca.crt)) ||
	    !X509_set_pubkey(x, key))
		goto ossl;

	if (san == NULL && strcmp(role, "aggregator") == 0 && nsan == 0) {
		if (certs_san_add(&san, "DNS", "localhost") != 0 ||
		    certs_san_add(&san, "IP", "127.0.0.1") != 0)
			goto out;
	}
	for (size_t i = 0; dns && dns[i]; i++)
		if (certs_san_add(&san, "DNS", dns[i]) != 0)
			goto out;
	for (size_t i = 0; ips && ips[i]; i++)
		if (certs_san_add(&san, "IP", ips[i]) != 0)
			goto out;

	/* mbedTLS (nng's TLS) checks keyUsage digitalSignature for ECDHE-ECDSA
	 * and the extendedKeyUsage matching the side of the handshake. */
	if (certs_add_ext(x, ca.crt, NID_basic_constraints,
		"critical,CA:FALSE") != 0 ||
	    certs_add_ext(x, ca.crt, NID_key_usage,
		"critical,digitalSignature") != 0 ||
	    certs_add_ext(x, ca.crt, NID_ext_key_usage,
		strcmp(role, "aggregator") == 0 ? "serverAuth"
						: "clientAuth") != 0 ||
	    certs_add_ext(x, ca.crt, NID_subject_key_identifier, "hash") != 0 ||
	    certs_add_ext(x, ca.crt, NID_authority_key_identifier,
		"keyid:always") != 0 ||
	    (san != NULL &&
		certs_add_ext(x, ca.crt, NID_subject_alt_name, san) != 0))
		goto out;
	if (!X509_sign(x, ca.key, EVP_sha256()))
		goto ossl;

	if ((serial = certs_serial_hex(X509_get_serialNumber(x))) == NULL)
		goto ossl;
	certs_isotime(X509_get0_notBefore(x), before);
	certs_isotime(X509_get0_notAfter(x), after);
	if (renew) {
		cJSON_ArrayForEach(e,
		    cJSON_GetObjectItemCaseSensitive(idx, "certs"))
		{
			const char *c = certs_jstr(e, "cn");
			if (c != NULL && strcmp(c, cn) == 0 &&
			    !cJSON_HasObjectItem(e, "superseded_by"))
				cJSON_AddStringToObject(e, "superseded_by",
				    serial);
		}
	}
	if ((e = cJSON_CreateObject()) == NULL)
		goto oom;
	cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(idx, "certs"), e);
	cJSON_AddStringToObject(e, "serial", serial);
	cJSON_AddStringToObject(e, "cn", cn);
	cJSON_AddStringToObject(e, "role", role);
	cJSON_AddStringToObject(e, "not_before", before);
	cJSON_AddStringToObject(e, "not_after", after);
	cJSON_AddStringToObject(e, "san", san ? san : "");
	cJSON_AddStringToObject(e, "status", "valid");

	if (certs_write_pem(keyp, NULL, key, 0600) != 0 ||
	    certs_write_pem(crtp, x, NULL, 0644) != 0 ||
	    certs_write_pem(pemp, x, key, 0600) != 0 ||
	    certs_index_save(dir, idx) != 0)
		goto out;
	rv = 0;
	goto out;
oom:
	fs_seterr("out of memory");
	goto out;
ossl:
	fed_osslerr("%s: cannot create the certificate", crtp);
out:
	free(serial);
	free(san);
	cJSON_Delete(idx);
	X509_NAME_free(name);
	X509_free(x);
	EVP_PKEY_free(key);
	certs_ca_free(&ca);
	if (lock >= 0)
		close(lock);
	return rv;
}

int certs_issue_at(const char *dir, const char *role, const char *cn,
    const char *const *dns, const char *const *ips, int not_before_days,
    int days)
{
	return certs_issue_impl(dir, role, cn, dns, ips, not_before_days, days,
	    0);
}

int certs_renew(const char *dir, const char *cn, int days)
{
	if (days < 1)
		return fs_seterr("--days must be at least 1 (got %d)", days);
	return certs_issue_impl(dir, NULL, cn, NULL, NULL, 0, days, 1);
}

int certs_issue(const char *dir, const char *role, const char *cn,
    const char *const *dns, const char *const *ips, int days)
{
	if (days < 1)
		return fs_seterr("--days must be at least 1 (got %d)", days);
	return certs_issue_at(dir, role, cn, dns, ips, 0, days);
}

/* ------------------------------------------------------------------ */
/* revoke, crl */

static int certs_bump_crl(cJSON *idx)
{
	cJSON *n = cJSON_GetObjectItemCaseSensitive(idx, "crl_number");
	double v = cJSON_IsNumber(n) ? n->valuedouble + 1 : 2;
	cJSON_DeleteItemFromObjectCaseSensitive(idx, "crl_number");
	return cJSON_AddNumberToObject(idx, "crl_number", v) ? 0
							      : fs_seterr(
								    "out of "
								    "memory");
}

int certs_revoke(const char *dir, const char *cn, const char *reason)
{
	certs_ca ca;
	cJSON *idx = NULL, *e;
	const char *st;
	char now_iso[32];
	time_t now = time(NULL);
	struct tm tm;
	int lock = -1, rv = -1, nrev = 0;

	memset(&ca, 0, sizeof(ca));
	if (reason == NULL)
		reason = "unspecified";
	if (certs_reason_code(reason) < 0)
		return fs_seterr("--reason '%s': one of unspecified, "
				 "keyCompromise, caCompromise, "
				 "affiliationChanged, superseded, "
				 "cessationOfOperation",
		    reason);
	if (!certs_cn_ok(cn))
		return fs_seterr("name '%s': 1..64 characters from "
				 "[A-Za-z0-9._-]",
		    cn ? cn : "");
	if (!certs_exists(dir))
		return fs_seterr("%s: no such directory", dir);
	if ((lock = certs_lock(dir)) < 0)
		return -1;
	if (certs_ca_load(dir, &ca) != 0 ||
	    (idx = certs_index_load(dir)) == NULL)
		goto out;
	if ((e = certs_index_find(idx, cn)) == NULL) {
		fs_seterr("%s: no certificate named '%s' in index.json", dir,
		    cn);
		goto out;
	}
	/* Every certificate of cn not yet revoked (a renewed CN has
	 * several). */
	gmtime_r(&now, &tm);
	strftime(now_iso, sizeof(now_iso), "%Y-%m-%dT%H:%M:%SZ", &tm);
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(idx, "certs"))
	{
		const char *c = certs_jstr(e, "cn");
		if (c == NULL || strcmp(c, cn) != 0)
			continue;
		st = certs_jstr(e, "status");
		if (st != NULL && strcmp(st, "revoked") == 0)
			continue;
		cJSON_DeleteItemFromObjectCaseSensitive(e, "status");
		cJSON_AddStringToObject(e, "status", "revoked");
		cJSON_AddStringToObject(e, "revoked_at", now_iso);
		cJSON_AddStringToObject(e, "reason", reason);
		nrev++;
	}
	if (nrev == 0) {
		fs_seterr("'%s' is already revoked", cn);
		goto out;
	}
	/* CRL first: if the index write then fails, the certificate is
	 * already refused and `revoke` can simply be run again. */
	if (certs_bump_crl(idx) != 0 ||
	    certs_crl_write(dir, &ca, idx, CERTS_CRL_DAYS) != 0 ||
	    certs_index_save(dir, idx) != 0)
		goto out;
	rv = 0;
out:
	cJSON_Delete(idx);
	certs_ca_free(&ca);
	if (lock >= 0)
		close(lock);
	return rv;
}

int certs_crl_renew(const char *dir, int days)
{
	certs_ca ca;
	cJSON *idx = NULL;
	int lock = -1, rv = -1;

	memset(&ca, 0, sizeof(ca));
	if (days < -3650 || days > 3650)
		return fs_seterr("--days %d out of range", days);
	if (!certs_exists(dir))
		return fs_seterr("%s: no such directory", dir);
	if ((lock = certs_lock(dir)) < 0)
		return -1;
	if (certs_ca_load(dir, &ca) != 0 ||
	    (idx = certs_index_load(dir)) == NULL)
		goto out;
	if (certs_bump_crl(idx) != 0 ||
	    certs_crl_write(dir, &ca, idx, days) != 0 ||
	    certs_index_save(dir, idx) != 0)
		goto out;
	rv = 0;
out:
	cJSON_Delete(idx);
	certs_ca_free(&ca);
	if (lock >= 0)
		close(lock);
	return rv;
}

/* ------------------------------------------------------------------ */
/* show */

static void certs_show_name(FILE *out, const char *label,
    const X509_NAME *name)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL;
	long len;
	if (b == NULL)
		return;
	X509_NAME_print_ex(b, name, 0,
	    (XN_FLAG_ONELINE & ~XN_FLAG_SPC_EQ & ~ASN1_STRFLGS_ESC_MSB));
	len = BIO_get_mem_data(b, &data);
	fprintf(out, "%-20s %.*s\n", label, (int)len, data);
	BIO_free(b);
}

static void certs_show_cert(FILE *out, X509 *x)
{
	const X509_NAME *subj = X509_get_subject_name(x);
	char buf[256], t0[32], t1[32];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char *serial = certs_serial_hex(X509_get_serialNumber(x));
	GENERAL_NAMES *sans;
	EXTENDED_KEY_USAGE *eku;
	int pday = 0, psec = 0;

	certs_show_name(out, "subject:", subj);
	fprintf(out, "%-20s %s\n", "  CN:",
	    certs_name_entry(subj, NID_commonName, buf, sizeof(buf)));
	fprintf(out, "%-20s %s\n", "  OU:",
	    certs_name_entry(subj, NID_organizationalUnitName, buf,
		sizeof(buf)));
	fprintf(out, "%-20s %s\n", "  O:",
	    certs_name_entry(subj, NID_organizationName, buf, sizeof(buf)));
	certs_show_name(out, "issuer:", X509_get_issuer_name(x));
	fprintf(out, "%-20s %s\n", "serial:", serial ? serial : "?");
	certs_isotime(X509_get0_notBefore(x), t0);
	certs_isotime(X509_get0_notAfter(x), t1);
	fprintf(out, "%-20s %s\n", "not before:", t0);
	fprintf(out, "%-20s %s", "not after:", t1);
	if (ASN1_TIME_diff(&pday, &psec, NULL, X509_get0_notAfter(x))) {
		if (pday < 0 || (pday == 0 && psec < 0))
			fprintf(out, " (EXPIRED)");
		else
			fprintf(out, " (%d days left)", pday);
	}
	if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0)
		fprintf(out, " (NOT YET VALID)");
	fputc('\n', out);

	fprintf(out, "%-20s ", "SAN:");
	sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	if (sans == NULL || sk_GENERAL_NAME_num(sans) == 0)
		fprintf(out, "(none)");
	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		const char *sep = i ? ", " : "";
		if (g->type == GEN_DNS) {
			fprintf(out, "%sDNS:%.*s", sep,
			    ASN1_STRING_length(g->d.dNSName),
			    (const char *)ASN1_STRING_get0_data(
				g->d.dNSName));
		} else if (g->type == GEN_IPADD) {
			char ip[INET6_ADDRSTRLEN] = "?";
			int len = ASN1_STRING_length(g->d.iPAddress);
			const unsigned char *p =
			    ASN1_STRING_get0_data(g->d.iPAddress);
			inet_ntop(len == 16 ? AF_INET6 : AF_INET, p, ip,
			    sizeof(ip));
			fprintf(out, "%sIP:%s", sep, ip);
		} else {
			fprintf(out, "%s(other)", sep);
		}
	}
	fputc('\n', out);
	GENERAL_NAMES_free(sans);

	certs_name_entry(subj, NID_organizationalUnitName, buf, sizeof(buf));
	fprintf(out, "%-20s %s\n", "role:",
	    X509_check_ca(x)  ? "federation CA"
	    : certs_role_ok(buf) ? buf
				 : "(none: not a fedseg certificate)");
	fprintf(out, "%-20s ", "extended key usage:");
	eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
	if (eku == NULL)
		fprintf(out, "(none)");
	for (int i = 0; eku && i < sk_ASN1_OBJECT_num(eku); i++)
		fprintf(out, "%s%s", i ? ", " : "",
		    OBJ_nid2sn(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i))));
	fputc('\n', out);
	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);

	if (X509_digest(x, EVP_sha256(), md, &mdlen)) {
		fprintf(out, "%-20s ", "SHA-256 fingerprint:");
		for (unsigned i = 0; i < mdlen; i++)
			fprintf(out, "%s%02X", i ? ":" : "", md[i]);
		fputc('\n', out);
	}
	free(serial);
}

static int certs_show_crl(FILE *out, X509_CRL *crl)
{
	STACK_OF(X509_REVOKED) *rev = X509_CRL_get_REVOKED(crl);
	ASN1_INTEGER *num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL,
	    NULL);
	char t0[32], t1[32];
	char *n = num ? certs_serial_hex(num) : NULL;

	fprintf(out, "CRL\n");
	certs_show_name(out, "issuer:", X509_CRL_get_issuer(crl));
	fprintf(out, "%-20s %s\n", "CRL number (hex):", n ? n : "(none)");
	certs_isotime(X509_CRL_get0_lastUpdate(crl), t0);
	certs_isotime(X509_CRL_get0_nextUpdate(crl), t1);
	fprintf(out, "%-20s %s\n", "last update:", t0);
	fprintf(out, "%-20s %s%s\n", "next update:", t1,
	    X509_cmp_current_time(X509_CRL_get0_nextUpdate(crl)) < 0
		? " (EXPIRED: renew with `fedseg certs crl`)"
		: "");
	fprintf(out, "%-20s %d\n", "revoked:", sk_X509_REVOKED_num(rev));
	for (int i = 0; i < sk_X509_REVOKED_num(rev); i++) {
		X509_REVOKED *r = sk_X509_REVOKED_value(rev, i);
		char *s = certs_serial_hex(X509_REVOKED_get0_serialNumber(r));
		ASN1_ENUMERATED *why = X509_REVOKED_get_ext_d2i(r,
		    NID_crl_reason, NULL, NULL);
		certs_isotime(X509_REVOKED_get0_revocationDate(r), t0);
		fprintf(out, "  %s  %s  %s\n", s ? s : "?", t0,
		    why ? certs_reason_name((int)ASN1_ENUMERATED_get(why))
			: "unspecified");
		ASN1_ENUMERATED_free(why);
		free(s);
	}
	ASN1_INTEGER_free(num);
	free(n);
	return 0;
}

/* Prints what a PEM file holds: certificates (all of them), a CRL, and
 * whether a private key is there (never its content). */
static int certs_show(const char *path, FILE *out)
{
	void *data = NULL;
	size_t n = 0;
	BIO *b = NULL;
	X509 *x;
	int ncert = 0, rv = -1, key;

	if (fs_read_file(path, CERTS_MAX_FILE, &data, &n) != 0)
		return -1;
	key = strstr(data, "PRIVATE KEY-----") != NULL;
	if ((b = BIO_new_mem_buf(data, (int)n)) == NULL)
		goto out;
	fprintf(out, "%-20s %s\n", "file:", path);
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
		if (ncert++ > 0)
			fprintf(out, "\n");
		certs_show_cert(out, x);
		X509_free(x);
	}
	ERR_clear_error();
	if (strstr(data, "-----BEGIN X509 CRL-----") != NULL) {
		X509_CRL *crl;
		BIO_free(b);
		b = BIO_new_mem_buf(data, (int)n);
		crl = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
		if (crl == NULL) {
			fed_osslerr("%s: unreadable CRL", path);
			goto out;
		}
		if (ncert > 0)
			fprintf(out, "\n");
		certs_show_crl(out, crl);
		X509_CRL_free(crl);
		ncert++;
	}
	if (ncert == 0 && !key) {
		fs_seterr("%s: no PEM certificate or CRL in it", path);
		goto out;
	}
	fprintf(out, "%-20s %s\n", "private key:",
	    key ? "present (not shown)" : "absent");
	rv = 0;
out:
	ERR_clear_error();
	BIO_free(b);
	if (data != NULL)
		OPENSSL_cleanse(data, n);
	free(data);
	return rv;
}

/* ------------------------------------------------------------------ */
/* CLI */

static int certs_int_arg(const char *opt, const char *s, int lo, int hi,
    int *out)
{
	char *end;
	long v;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "fedseg certs: %s '%s': expected an integer "
				"in %d..%d\n",
		    opt, s, lo, hi);
		return -1;
	}
	*out = (int)v;
	return 0;
}

static int certs_fail(const char *what)
{
	fprintf(stderr, "fedseg certs %s: %s\n", what, fs_error());
	return 1;
}

static int certs_usage_err(const char *cmd, const char *msg)
{
	fprintf(stderr, "fedseg certs %s: %s (see --help)\n", cmd, msg);
	return 2;
}

/* getopt's own messages are off (opterr = 0): one line of ours instead. */
static int certs_badopt(const char *cmd, char **argv, int c)
{
	char msg[160];
	const char *opt = argv[optind - 1];
	if (c == ':')
		snprintf(msg, sizeof(msg), "option '%s' needs a value", opt);
	else
		snprintf(msg, sizeof(msg), "unknown option '%s'", opt);
	return certs_usage_err(cmd, msg);
}

static const char certs_help_init[] =
    "usage: fedseg certs init --dir DIR --federation NAME [--days N]\n"
    "Creates the federation CA in DIR (created 0700): ca.key (0600),\n"
    "ca.crt (CN \"NAME federation CA\"), an empty crl.pem and index.json.\n"
    "Refuses a DIR that already holds a CA.\n"
    "  --days N   CA validity in days (default 3650)\n";

static const char certs_help_issue[] =
    "usage: fedseg certs issue --dir DIR --role aggregator|node|admin "
    "--name CN\n"
    "                          [--dns HOST]... [--ip ADDR]... [--days N]\n"
    "Issues a key and certificate signed by the CA in DIR: DIR/CN.crt,\n"
    "DIR/CN.key (0600) and DIR/CN.pem (certificate + key, 0600, for nng).\n"
    "Subject O=<federation>, OU=<role>, CN=<CN>. CN: 1..64 of "
    "[A-Za-z0-9._-].\n"
    "An aggregator given no --dns/--ip gets DNS:localhost, IP:127.0.0.1.\n"
    "  --days N   validity in days (default 365)\n"
    "  --not-before-days M  (testing only) notBefore = now + M days; with\n"
    "             it --days may be <= 0, to make expired or not-yet-valid\n"
    "             certificates\n";

static const char certs_help_renew[] =
    "usage: fedseg certs renew --dir DIR --name CN [--days N]\n"
    "Issues a new key and certificate for an existing CN, with the same\n"
    "role and SANs (the identity in the federation is the CN, so it must\n"
    "stay): DIR/CN.crt, .key and .pem are replaced. The previous\n"
    "certificate stays valid until it expires or `revoke` (which revokes\n"
    "every certificate of the CN) is run.\n"
    "  --days N   validity in days (default 365)\n";

static const char certs_help_revoke[] =
    "usage: fedseg certs revoke --dir DIR --name CN [--reason R]\n"
    "Revokes CN (every certificate issued to it): re-signs DIR/crl.pem (next update in 30 days) and marks\n"
    "it in index.json. Send SIGHUP to the aggregator to reload the CRL.\n"
    "  --reason R  unspecified (default), keyCompromise, caCompromise,\n"
    "              affiliationChanged, superseded, cessationOfOperation\n";

static const char certs_help_crl[] =
    "usage: fedseg certs crl --dir DIR [--days N]\n"
    "Re-signs DIR/crl.pem with the same revocations and next update in N\n"
    "days (default 30). Run it before the CRL expires: an expired CRL\n"
    "makes every verifier refuse every certificate.\n";

static const char certs_help_show[] =
    "usage: fedseg certs show FILE\n"
    "Prints the certificate(s) or CRL in a PEM file: subject, issuer,\n"
    "serial, validity, SANs, role, SHA-256 fingerprint. A private key in\n"
    "the file is reported as present, never printed.\n";

static const char certs_help[] =
    "usage: fedseg certs <command> [options]\n"
    "  init     create the federation CA\n"
    "  issue    issue a certificate (aggregator, node, admin)\n"
    "  renew    new key + certificate for an existing CN\n"
    "  revoke   revoke a certificate (updates the CRL)\n"
    "  crl      re-sign the CRL before it expires\n"
    "  show     print a certificate, PEM bundle or CRL\n"
    "`fedseg certs <command> --help` for each. See docs/security-pki.md.\n";

static int certs_cmd_init(int argc, char **argv)
{
	static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
	    {"federation", required_argument, 0, 'f'},
	    {"days", required_argument, 0, 'n'},
	    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *dir = NULL, *fed = NULL;
	int days = CERTS_CA_DAYS, c;
	char path[PATH_MAX];

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'f': fed = optarg; break;
		case 'n':
			if (certs_int_arg("--days", optarg, 1, 36500, &days))
				return 2;
			break;
		case 'h': fputs(certs_help_init, stdout); return 0;
		default: return certs_badopt("init", argv, c);
		}
	}
	if (optind < argc)
		return certs_usage_err("init", "unexpected argument");
	if (dir == NULL || fed == NULL)
		return certs_usage_err("init", "--dir and --federation are "
					       "required");
	if (certs_init(dir, fed, days) != 0)
		return certs_fail("init");
	snprintf(path, sizeof(path), "%s/ca.crt", dir);
	printf("created the \"%s federation CA\" in %s (valid %d days)\n", fed,
	    dir, days);
	printf("  %s/ca.key (0600)  keep it offline; it signs every "
	       "certificate\n  %s\n  %s/crl.pem\n  %s/index.json\n",
	    dir, path, dir, dir);
	return 0;
}

static int certs_cmd_issue(int argc, char **argv)
{
	static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
	    {"role", required_argument, 0, 'r'},
	    {"name", required_argument, 0, 'c'},
	    {"dns", required_argument, 0, 'D'},
	    {"ip", required_argument, 0, 'I'},
	    {"days", required_argument, 0, 'n'},
	    {"not-before-days", required_argument, 0, 'b'},
	    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *dir = NULL, *role = NULL, *cn = NULL;
	const char **dns = calloc((size_t)argc + 1, sizeof(char *));
	const char **ips = calloc((size_t)argc + 1, sizeof(char *));
	int ndns = 0, nips = 0, days = CERTS_LEAF_DAYS, nb = 0, have_nb = 0;
	int c, rv = 2;

	if (dns == NULL || ips == NULL) {
		fprintf(stderr, "fedseg certs issue: out of memory\n");
		goto out;
	}
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'r': role = optarg; break;
		case 'c': cn = optarg; break;
		case 'D': dns[ndns++] = optarg; break;
		case 'I': ips[nips++] = optarg; break;
		case 'n':
			if (certs_int_arg("--days", optarg, -36500, 36500,
				&days))
				goto out;
			break;
		case 'b':
			if (certs_int_arg("--not-before-days", optarg, -36500,
				36500, &nb))
				goto out;
			have_nb = 1;
			break;
		case 'h':
			fputs(certs_help_issue, stdout);
			rv = 0;
			goto out;
		default: rv = certs_badopt("issue", argv, c); goto out;
		}
	}
	if (optind < argc) {
		rv = certs_usage_err("issue", "unexpected argument");
		goto out;
	}
	if (dir == NULL || role == NULL || cn == NULL) {
		rv = certs_usage_err("issue", "--dir, --role and --name are "
					      "required");
		goto out;
	}
	if (!have_nb && days < 1) {
		rv = certs_usage_err("issue", "--days must be at least 1");
		goto out;
	}
	if (certs_issue_at(dir, role, cn, dns, ips, nb, days) != 0) {
		rv = certs_fail("issue");
		goto out;
	}
	printf("issued %s certificate '%s' (%s, valid %d days)\n", role, cn,
	    dir, days - nb);
	printf("  %s/%s.crt\n  %s/%s.key (0600)\n  %s/%s.pem (certificate + "
	       "key, 0600)\n",
	    dir, cn, dir, cn, dir, cn);
	if (have_nb)
		printf("  note: --not-before-days is for tests only\n");
	rv = 0;
out:
	free(dns);
	free(ips);
	return rv;
}

static int certs_cmd_renew(int argc, char **argv)
{
	static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
	    {"name", required_argument, 0, 'c'},
	    {"days", required_argument, 0, 'n'},
	    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *dir = NULL, *cn = NULL;
	int days = CERTS_LEAF_DAYS, c;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'c': cn = optarg; break;
		case 'n':
			if (certs_int_arg("--days", optarg, 1, 36500, &days))
				return 2;
			break;
		case 'h': fputs(certs_help_renew, stdout); return 0;
		default: return certs_badopt("renew", argv, c);
		}
	}
	if (optind < argc)
		return certs_usage_err("renew", "unexpected argument");
	if (dir == NULL || cn == NULL)
		return certs_usage_err("renew", "--dir and --name are required");
	if (certs_renew(dir, cn, days) != 0)
		return certs_fail("renew");
	printf("renewed '%s' (valid %d days): %s/%s.crt, .key, .pem replaced; "
	       "the previous certificate stays valid until it expires or is "
	       "revoked\n",
	    cn, days, dir, cn);
	return 0;
}

static int certs_cmd_revoke(int argc, char **argv)
{
	static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
	    {"name", required_argument, 0, 'c'},
	    {"reason", required_argument, 0, 'r'},
	    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *dir = NULL, *cn = NULL, *reason = NULL;
	int c;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'c': cn = optarg; break;
		case 'r': reason = optarg; break;
		case 'h': fputs(certs_help_revoke, stdout); return 0;
		default: return certs_badopt("revoke", argv, c);
		}
	}
	if (optind < argc)
		return certs_usage_err("revoke", "unexpected argument");
	if (dir == NULL || cn == NULL)
		return certs_usage_err("revoke", "--dir and --name are "
						 "required");
	if (certs_revoke(dir, cn, reason) != 0)
		return certs_fail("revoke");
	printf("revoked '%s'; %s/crl.pem re-signed (valid %d days). Reload "
	       "it on the aggregator (SIGHUP).\n",
	    cn, dir, CERTS_CRL_DAYS);
	return 0;
}

static int certs_cmd_crl(int argc, char **argv)
{
	static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
	    {"days", required_argument, 0, 'n'},
	    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *dir = NULL;
	int days = CERTS_CRL_DAYS, c;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'n':
			if (certs_int_arg("--days", optarg, -3650, 3650,
				&days))
				return 2;
			break;
		case 'h': fputs(certs_help_crl, stdout); return 0;
		default: return certs_badopt("crl", argv, c);
		}
	}
	if (optind < argc)
		return certs_usage_err("crl", "unexpected argument");
	if (dir == NULL)
		return certs_usage_err("crl", "--dir is required");
	if (certs_crl_renew(dir, days) != 0)
		return certs_fail("crl");
	printf("%s/crl.pem re-signed, next update in %d days%s\n", dir, days,
	    days <= 0 ? " (already expired: for tests only)" : "");
	return 0;
}

static int certs_cmd_show(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	int c;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (c) {
		case 'h': fputs(certs_help_show, stdout); return 0;
		default: return certs_badopt("show", argv, c);
		}
	}
	if (optind != argc - 1)
		return certs_usage_err("show", "expects exactly one FILE");
	if (certs_show(argv[optind], stdout) != 0)
		return certs_fail("show");
	return 0;
}

int certs_main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : NULL;
	if (cmd == NULL) {
		fputs(certs_help, stderr);
		return 2;
	}
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
	    strcmp(cmd, "help") == 0) {
		fputs(certs_help, stdout);
		return 0;
	}
	if (strcmp(cmd, "init") == 0)
		return certs_cmd_init(argc - 1, argv + 1);
	if (strcmp(cmd, "issue") == 0)
		return certs_cmd_issue(argc - 1, argv + 1);
	if (strcmp(cmd, "renew") == 0)
		return certs_cmd_renew(argc - 1, argv + 1);
	if (strcmp(cmd, "revoke") == 0)
		return certs_cmd_revoke(argc - 1, argv + 1);
	if (strcmp(cmd, "crl") == 0)
		return certs_cmd_crl(argc - 1, argv + 1);
	if (strcmp(cmd, "show") == 0)
		return certs_cmd_show(argc - 1, argv + 1);
	fprintf(stderr, "fedseg certs: unknown command '%s' (init, issue, "
			"renew, revoke, crl, show)\n",
	    cmd);
	return 2;
}
