/*
 * msg.c - envelope packing and signed texts (see msg.h).
 */
#include "msg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

/* ---- unpacking an Update without copying its payload ------------------ */

static int
wire_varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
	uint64_t r = 0;
	for (int s = 0; s < 64 && *i < n; s += 7) {
		uint8_t b = p[(*i)++];
		r |= (uint64_t)(b & 0x7f) << s;
		if (!(b & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

/* Steps over one field of wire type wt at *i; for wire type 2 the value's
 * offset and length go to *vo, *vl. */
static int
wire_skip(const uint8_t *p, size_t n, size_t *i, int wt, size_t *vo,
    size_t *vl)
{
	uint64_t v;
	switch (wt) {
	case 0: return wire_varint(p, n, i, &v);
	case 1: v = 8; break;
	case 5: v = 4; break;
	case 2:
		if (wire_varint(p, n, i, &v) != 0)
			return -1;
		*vo = *i;
		*vl = (size_t)v;
		break;
	default: return -1;
	}
	if (v > n - *i)
		return -1;
	*i += (size_t)v;
	return 0;
}

/* Finds the only occurrence of field `num` (wire type 2) in p[0..n):
 * key offset *ko, value offset *vo and length *vl. -1 if absent, repeated
 * or the bytes do not walk. */
static int
wire_find(const uint8_t *p, size_t n, unsigned num, size_t *ko, size_t *vo,
    size_t *vl)
{
	size_t i = 0;
	int found = 0;
	while (i < n) {
		size_t k = i, o = 0, l = 0;
		uint64_t key;
		if (wire_varint(p, n, &i, &key) != 0 ||
		    wire_skip(p, n, &i, (int)(key & 7), &o, &l) != 0)
			return -1;
		if ((key >> 3) == num) {
			if ((key & 7) != 2 || found++)
				return -1;
			*ko = k;
			*vo = o;
			*vl = l;
		}
	}
	return found ? 0 : -1;
}

static size_t
wire_put_varint(uint8_t *b, uint64_t v)
{
	size_t n = 0;
	do {
		b[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v != 0);
	return n;
}

int
fed_msg_unpack_borrow(const void *data, size_t len, Fedseg__Envelope **env,
    int *code, int *borrowed)
{
	const uint8_t *p = data;
	size_t uk, uo, ul, pk, po, pl;
	*borrowed = 0;
	/* Envelope field 6 = update, Update field 5 = payload */
	if (wire_find(p, len, 6, &uk, &uo, &ul) != 0 ||
	    wire_find(p + uo, ul, 5, &pk, &po, &pl) != 0 || pl < 4096)
		return fed_msg_unpack(data, len, env, code);
	pk += uo;
	po += uo;
	size_t cut = po + pl - pk, sub = ul - cut;
	uint8_t *b = malloc(len - cut + 16);
	if (b == NULL)
		return fed_msg_unpack(data, len, env, code);
	size_t n = 0;
	memcpy(b, p, uk);                       /* fields before the update */
	n = uk;
	b[n++] = (6 << 3) | 2;
	n += wire_put_varint(b + n, sub);
	memcpy(b + n, p + uo, pk - uo);         /* update before its payload */
	n += pk - uo;
	memcpy(b + n, p + po + pl, uo + ul - (po + pl)); /* ... after it */
	n += uo + ul - (po + pl);
	memcpy(b + n, p + uo + ul, len - (uo + ul)); /* fields after */
	n += len - (uo + ul);
	int rv = fed_msg_unpack(b, n, env, code);
	free(b);
	if (rv != 0)
		return rv;
	if ((*env)->body_case != FEDSEG__ENVELOPE__BODY_UPDATE ||
	    (*env)->update->payload.len != 0) {
		/* not the shape walked above: unpack the plain way */
		fed_msg_free(*env);
		*env = NULL;
		return fed_msg_unpack(data, len, env, code);
	}
	(*env)->update->payload = (ProtobufCBinaryData){ pl,
		(uint8_t *)p + po };
	*borrowed = 1;
	return 0;
}

void
fed_msg_free_borrowed(Fedseg__Envelope *env, int borrowed)
{
	if (env != NULL && borrowed && env->update != NULL)
		env->update->payload = (ProtobufCBinaryData){ 0, NULL };
	fed_msg_free(env);
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
		"status_request", "status", "error", "upload_request",
		"upload_grant" };
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
