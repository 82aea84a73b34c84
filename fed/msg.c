/*
 * msg.c - envelope packing and signed texts (see msg.h).
 */
#include "msg.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "base.h"
#include "crypto.h"

int
fed_msg_pack(Fedseg__Envelope *env, nng_msg **out)
{
	nng_msg *m = NULL;
	env->version = FED_PROTOCOL_VERSION;
	size_t n = fedseg__envelope__get_packed_size(env);
	int rv = nng_msg_alloc(&m, n);
	if (rv != 0)
		return fs_seterr("cannot allocate a %zu-byte message: %s", n,
		    nng_strerror(rv));
	fedseg__envelope__pack(env, nng_msg_body(m));
	*out = m;
	return 0;
}

int
fed_msg_unpack(const void *data, size_t len, Fedseg__Envelope **env,
    int *code)
{
	Fedseg__Envelope *e =
	    fedseg__envelope__unpack(NULL, len, (const uint8_t *)data);
	if (e == NULL) {
		*code = FED_ERR_MALFORMED;
		return fs_seterr("message of %zu bytes is not an Envelope", len);
	}
	if (e->version != FED_PROTOCOL_VERSION) {
		*code = FED_ERR_VERSION;
		fs_seterr("protocol version %u unsupported (this is %d)",
		    e->version, FED_PROTOCOL_VERSION);
		fedseg__envelope__free_unpacked(e, NULL);
		return -1;
	}
	if (e->body_case == FEDSEG__ENVELOPE__BODY__NOT_SET) {
		*code = FED_ERR_MALFORMED;
		fedseg__envelope__free_unpacked(e, NULL);
		return fs_seterr("envelope has no body");
	}
	*env = e;
	return 0;
}

void
fed_msg_free(Fedseg__Envelope *env)
{
	if (env != NULL)
		fedseg__envelope__free_unpacked(env, NULL);
}

nng_msg *
fed_msg_error(int code, const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof reason, fmt, ap);
	va_end(ap);
	Fedseg__Error err = FEDSEG__ERROR__INIT;
	err.code = (uint32_t)code;
	err.reason = reason;
	Fedseg__Envelope env = FEDSEG__ENVELOPE__INIT;
	env.body_case = FEDSEG__ENVELOPE__BODY_ERROR;
	env.error = &err;
	nng_msg *m = NULL;
	if (fed_msg_pack(&env, &m) != 0)
		return NULL;
	return m;
}

const char *
fed_msg_kind(const Fedseg__Envelope *env)
{
	static const char *names[] = { "none", "?", "join", "join_ack",
		"task_request", "task", "update", "update_ack", "wait", "done",
		"status_request", "status", "error" };
	unsigned c = (unsigned)env->body_case;
	return c < sizeof names / sizeof names[0] ? names[c] : "?";
}

/* ---- signed texts ------------------------------------------------------ */

static size_t
put_label(uint8_t *b, const char *label)
{
	size_t n = strlen(label) + 1; /* the NUL separates label and fields */
	memcpy(b, label, n);
	return n;
}

static size_t
put_be(uint8_t *b, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		b[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
	return (size_t)bytes;
}

size_t
fed_sigtext_join(uint8_t *buf, const uint8_t nonce[32], uint64_t time_ms)
{
	size_t n = put_label(buf, "fedseg-join-v1");
	memcpy(buf + n, nonce, 32);
	n += 32;
	return n + put_be(buf + n, time_ms, 8);
}

size_t
fed_sigtext_joinack(uint8_t *buf, const uint8_t session[32],
    const uint8_t nonce[32])
{
	size_t n = put_label(buf, "fedseg-joinack-v1");
	memcpy(buf + n, session, 32);
	memcpy(buf + n + 32, nonce, 32);
	return n + 64;
}

size_t
fed_sigtext_model(uint8_t *buf, const uint8_t digest[32], uint32_t round,
    uint32_t version)
{
	size_t n = put_label(buf, "fedseg-model-v1");
	memcpy(buf + n, digest, 32);
	n += 32;
	n += put_be(buf + n, round, 4);
	return n + put_be(buf + n, version, 4);
}

size_t
fed_sigtext_update(uint8_t *buf, const uint8_t payload_digest[32],
    uint32_t round, uint32_t base_version, uint64_t sample_count,
    const uint8_t session[32])
{
	size_t n = put_label(buf, "fedseg-update-v1");
	memcpy(buf + n, payload_digest, 32);
	n += 32;
	n += put_be(buf + n, round, 4);
	n += put_be(buf + n, base_version, 4);
	n += put_be(buf + n, sample_count, 8);
	memcpy(buf + n, session, 32);
	return n + 32;
}

int
fed_random(uint8_t *buf, size_t n)
{
	if (RAND_bytes(buf, (int)n) != 1)
		return fs_seterr("OpenSSL RAND_bytes failed");
	return 0;
}

void
fed_weights_digest(const float *w, size_t n, uint8_t out[32])
{
	/* float32 in memory is little-endian on every platform we build for;
	 * check once so a big-endian port fails loudly rather than silently */
	const uint16_t one = 1;
	if (*(const uint8_t *)&one != 1) {
		memset(out, 0, 32);
		return;
	}
	fed_sha256(w, n * sizeof(float), out);
}

uint64_t
fed_unix_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)(ts.tv_nsec / 1000000);
}
