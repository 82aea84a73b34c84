/*
 * msg.h - envelopes (protobuf-c, proto/fedseg.proto) and the exact byte
 * strings that signatures cover.
 *
 * Signed texts are a domain label followed by fixed-width big-endian
 * integers and raw bytes (see docs/protocol.md, "Signatures"):
 *   join:    "fedseg-join-v1\0"    | nonce(32) | time_ms(u64)
 *   joinack: "fedseg-joinack-v1\0" | session(32) | nonce(32)
 *   model:   "fedseg-model-v1\0"   | digest(32) | round(u32) | version(u32)
 *   update:  "fedseg-update-v1\0"  | payload_digest(32) | round(u32) |
 *            base_version(u32) | sample_count(u64) | session(32)
 */
#ifndef FEDSEG_FED_MSG_H
#define FEDSEG_FED_MSG_H

#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>

#include "fedseg.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FED_PROTOCOL_VERSION 1
#define FED_NONCE_LEN 32

/* Error codes carried in Error.code. */
enum {
	FED_ERR_MALFORMED = 1,   /* bytes are not an Envelope */
	FED_ERR_VERSION = 2,     /* unsupported protocol version */
	FED_ERR_AUTH = 3,        /* certificate, signature or session refused */
	FED_ERR_REQUEST = 4,     /* well-formed but not acceptable here */
	FED_ERR_INTERNAL = 5,    /* the aggregator failed (its log says why) */
};

/* Packs env (version set to FED_PROTOCOL_VERSION) into a new nng message.
 * On success *out is the caller's (free with nng_msg_free, or hand to a
 * send that succeeds). */
int fed_msg_pack(Fedseg__Envelope *env, nng_msg **out);

/* Unpacks an envelope. Returns 0 and *env (free with fed_msg_free) on
 * success; -1 with *code = FED_ERR_MALFORMED for garbage or no body, or
 * FED_ERR_VERSION for a version other than FED_PROTOCOL_VERSION. */
int fed_msg_unpack(const void *data, size_t len, Fedseg__Envelope **env,
    int *code);
void fed_msg_free(Fedseg__Envelope *env);
/* Like fed_msg_unpack, but an Update's payload (>= 4 KiB) is not copied:
 * env->update->payload points into data, which must outlive *env; then
 * *borrowed = 1 and *env is freed with fed_msg_free_borrowed. Other
 * messages (and odd encodings) are unpacked the plain way (*borrowed = 0).
 * The aggregator uses it so that an upload is in memory once, not twice. */
int fed_msg_unpack_borrow(const void *data, size_t len,
    Fedseg__Envelope **env, int *code, int *borrowed);
void fed_msg_free_borrowed(Fedseg__Envelope *env, int borrowed);

/* Builds an Error envelope message (code, printf reason). NULL on OOM. */
nng_msg *fed_msg_error(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Name of an envelope body case ("join", "task", ...). */
const char *fed_msg_kind(const Fedseg__Envelope *env);

/* Signed texts (fixed sizes; buffers given by the caller). Each returns
 * the number of bytes written. */
#define FED_SIGTEXT_MAX 160
size_t fed_sigtext_join(uint8_t *buf, const uint8_t nonce[32],
    uint64_t time_ms);
size_t fed_sigtext_joinack(uint8_t *buf, const uint8_t session[32],
    const uint8_t nonce[32]);
size_t fed_sigtext_model(uint8_t *buf, const uint8_t digest[32],
    uint32_t round, uint32_t version);
size_t fed_sigtext_update(uint8_t *buf, const uint8_t payload_digest[32],
    uint32_t round, uint32_t base_version, uint64_t sample_count,
    const uint8_t session[32]);

/* 32 random bytes from OpenSSL's RNG. */
int fed_random(uint8_t *buf, size_t n);

/* SHA-256 of n floats as float32 little-endian (the model digest). */
void fed_weights_digest(const float *w, size_t n, uint8_t out[32]);

/* Wall clock in ms since the Unix epoch. */
uint64_t fed_unix_ms(void);

#ifdef __cplusplus
}
#endif
#endif
