/*
 * crypto.h - digests, identities and signatures for federation (OpenSSL).
 *
 * Debian's nng 1.5 tells whether a TLS peer was verified but not who it is,
 * so identity is proved at the application layer: every Join / Update
 * carries the sender's certificate (PEM) and an ECDSA P-256 / SHA-256
 * signature; the receiver verifies the certificate against the federation
 * CA and CRL, checks its role, and takes the identity from its CN.
 *
 * Certificates carry the role in the subject's OU: "aggregator", "node" or
 * "admin". Errors follow base.h: 0 / -1 with fs_error(); OpenSSL's error
 * queue is emptied into that message.
 */
#ifndef FEDSEG_FED_CRYPTO_H
#define FEDSEG_FED_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FED_SHA256_LEN 32
#define FED_CN_MAX 256

/* fs_seterr() with OpenSSL's error queue appended (and emptied): the one
 * place OpenSSL failures become fedseg error messages. Returns -1. */
int fed_osslerr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

void fed_sha256(const void *data, size_t n, uint8_t out[FED_SHA256_LEN]);
/* Incremental SHA-256 for large or scattered inputs. */
typedef struct fed_sha256_ctx fed_sha256_ctx;
fed_sha256_ctx *fed_sha256_begin(void);
void fed_sha256_update(fed_sha256_ctx *c, const void *data, size_t n);
/* Writes the digest and frees the context. */
void fed_sha256_end(fed_sha256_ctx *c, uint8_t out[FED_SHA256_LEN]);
/* Lower-case hex of n bytes into out (2n+1 chars). */
void fed_hex(const uint8_t *d, size_t n, char *out);

/* Own identity: certificate + private key. The key file must not be
 * readable by group or others (refused with a reason otherwise). cert and
 * key may be the same file (a PEM holding both, as nng wants). */
typedef struct fed_identity fed_identity;
fed_identity *fed_identity_load(const char *cert_path, const char *key_path);
void fed_identity_free(fed_identity *id);
/* The certificate as PEM text (borrowed, NUL-terminated, length in *n). */
const char *fed_identity_cert_pem(const fed_identity *id, size_t *n);
/* CN of the own certificate (borrowed). */
const char *fed_identity_cn(const fed_identity *id);
/* ECDSA/SHA-256 signature (DER) of msg; *sig malloc'd, caller frees. */
int fed_sign(const fed_identity *id, const void *msg, size_t n,
    uint8_t **sig, size_t *siglen);

/* Trust store: the federation CA and (optionally) its CRL. */
typedef struct fed_trust fed_trust;
fed_trust *fed_trust_load(const char *ca_path, const char *crl_path);
void fed_trust_free(fed_trust *t);
/* Re-reads the CRL file (SIGHUP). On failure the old CRL stays. */
int fed_trust_reload_crl(fed_trust *t);
/* Verifies a PEM certificate: chain to the CA, not revoked, within its
 * validity period, and (when want_role is not NULL) OU == want_role. On
 * success writes its CN to cn (FED_CN_MAX bytes). The error says which
 * check failed ("revoked", "expired", "not signed by the federation CA",
 * "role node expected, certificate is admin"). */
int fed_trust_verify_cert(fed_trust *t, const char *pem, size_t n,
    const char *want_role, char cn[FED_CN_MAX]);
/* Verifies a signature made by fed_sign with the key of the PEM
 * certificate (the certificate itself is not checked here: call
 * fed_trust_verify_cert first). 0 if valid. */
int fed_verify(const char *pem, size_t n, const void *msg, size_t msglen,
    const uint8_t *sig, size_t siglen);
/* Days until the PEM certificate at path expires (negative if expired);
 * used for warnings at start. -1e9 on error. */
double fed_cert_days_left(const char *path);
/* Days until the PEM CRL at path must be replaced (its nextUpdate;
 * negative once passed, when every verifier - fed_trust and mbedTLS in nng
 * alike - refuses every certificate). -1e9 on error (fs_error). */
double fed_crl_days_left(const char *path);

#ifdef __cplusplus
}
#endif
#endif
