/*
 * certs.h - the federation's small PKI: a CA, certificates for the
 * aggregator, nodes and admins, and a CRL (OpenSSL C API, no shelling out).
 *
 * A CA directory holds:
 *   ca.key (0600)        EC P-256 key of the federation CA
 *   ca.crt               self-signed CA certificate
 *   crl.pem              CRL signed by the CA (re-signed on every revoke)
 *   index.json           every certificate issued: serial, CN, role, expiry,
 *                        status (the CRL is rebuilt from it)
 *   <CN>.crt, <CN>.key (0600), <CN>.pem (cert + key, 0600; what nng wants)
 *   .lock                serialises commands on the directory
 * See docs/security-pki.md.
 *
 * Errors follow base.h: 0 / -1 with fs_error(). Every file is written with
 * fs_write_atomic; a failed call leaves the directory as it was, except that
 * a failed issue may leave the new certificate's files without an index entry
 * (the index is written last, so the CN is then refused as existing).
 * Calls on one directory are serialised with a lock file (D/.lock).
 */
#ifndef FEDSEG_CERTS_H
#define FEDSEG_CERTS_H

#ifdef __cplusplus
extern "C" {
#endif

#define CERTS_CA_DAYS 3650
#define CERTS_LEAF_DAYS 365
#define CERTS_CRL_DAYS 30

/* `fedseg certs <init|issue|renew|revoke|crl|show> ...`; argv[0] is "certs".
 * Returns the process exit status (0 ok, 1 failure, 2 usage). */
int certs_main(int argc, char **argv);

/* Creates the CA in dir (created 0700 if missing): refuses a dir that
 * already has ca.key or ca.crt. days > 0. */
int certs_init(const char *dir, const char *federation, int days);

/* Issues a certificate for role ("aggregator", "node", "admin") and cn
 * ([A-Za-z0-9._-], 1..64 chars, not yet in the index). dns and ips are
 * NULL-terminated lists (either may be NULL); an aggregator with neither
 * gets DNS:localhost + IP:127.0.0.1. Valid from now for days (> 0). */
int certs_issue(const char *dir, const char *role, const char *cn,
    const char *const *dns, const char *const *ips, int days);

/* As certs_issue, with notBefore = now + not_before_days and notAfter =
 * now + days (days may be <= 0 here: for tests that need expired or
 * not-yet-valid certificates). notAfter must be after notBefore. */
int certs_issue_at(const char *dir, const char *role, const char *cn,
    const char *const *dns, const char *const *ips, int not_before_days,
    int days);

/* Issues a new key + certificate for a cn already in the index, with the
 * role and SAN of its latest certificate (the CN is the node's identity in
 * the federation, so a renewal keeps it). Replaces dir/<cn>.crt/.key/.pem;
 * the previous certificate stays valid until it expires or is revoked. */
int certs_renew(const char *dir, const char *cn, int days);

/* Revokes cn (every certificate issued to it): marks it in the index and re-signs the CRL. reason is NULL
 * or one of: unspecified, keyCompromise, caCompromise, affiliationChanged,
 * superseded, cessationOfOperation. Revoking twice is an error. */
int certs_revoke(const char *dir, const char *cn, const char *reason);

/* Re-signs the CRL (same revocations, crlNumber + 1) with nextUpdate now +
 * days: run it before the CRL expires (verifiers refuse every certificate
 * once it has). days may be <= 0 only for tests (an expired CRL). */
int certs_crl_renew(const char *dir, int days);

#ifdef __cplusplus
}
#endif
#endif
