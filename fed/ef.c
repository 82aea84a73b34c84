/*
 * ef.c - error feedback and its residual file (see ef.h).
 */
#include "ef.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "crypto.h"

#define EF_MAGIC "FSEF"
#define EF_VERSION 1

int
fed_ef_wanted(int codec)
{
	return codec == FED_CODEC_TOPK;
}

int
fed_ef_encode(int codec, const float *x, float *e, size_t n,
    const uint8_t table_digest[32], const fed_codec_opts *opts,
    uint8_t **out, size_t *outlen)
{
	float *v = malloc((n ? n : 1) * sizeof(float));
	if (v == NULL)
		return fs_seterr("out of memory (error feedback, %zu floats)",
		    n);
	for (size_t i = 0; i < n; i++)
		v[i] = x[i] + e[i];
	uint8_t *p = NULL;
	size_t len = 0;
	if (fed_codec_encode(codec, v, n, table_digest, opts, &p, &len) != 0) {
		free(v);
		return fs_preferr("error feedback");
	}
	/* decoded into e's place only once the payload is known good */
	float *d = malloc((n ? n : 1) * sizeof(float));
	if (d == NULL || fed_codec_decode(p, len, n, table_digest, d,
	    NULL) != 0) {
		if (d == NULL)
			fs_seterr("out of memory (error feedback)");
		free(d);
		free(v);
		free(p);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		e[i] = v[i] - d[i];
	free(d);
	free(v);
	*out = p;
	*outlen = len;
	return 0;
}

static void
put_le(uint8_t *p, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t
get_le(const uint8_t *p, int bytes)
{
	uint64_t v = 0;
	for (int i = bytes - 1; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void
ef_digest(const uint8_t *file, size_t len, uint8_t out[32])
{
	fed_sha256_ctx *c = fed_sha256_begin();
	if (c == NULL) {
		memset(out, 0, 32); /* then no file ever matches */
		return;
	}
	fed_sha256_update(c, file, 84);
	fed_sha256_update(c, file + FED_EF_HEADER_LEN, len - FED_EF_HEADER_LEN);
	fed_sha256_end(c, out);
}

int
fed_ef_save(const char *path, const fed_ef_meta *m, const float *e)
{
	size_t n = (size_t)m->count;
	if (n > (SIZE_MAX - FED_EF_HEADER_LEN) / 4)
		return fs_seterr("%s: residual of %zu floats too large", path, n);
	size_t len = FED_EF_HEADER_LEN + 4 * n;
	uint8_t *b = malloc(len);
	if (b == NULL)
		return fs_seterr("%s: out of memory", path);
	memcpy(b, EF_MAGIC, 4);
	put_le(b + 4, EF_VERSION, 2);
	b[6] = (uint8_t)m->codec;
	b[7] = 0;
	put_le(b + 8, m->round, 4);
	put_le(b + 12, m->count, 8);
	memcpy(b + 20, m->table_digest, 32);
	memcpy(b + 52, m->payload_digest, 32);
	for (size_t i = 0; i < n; i++) {
		uint32_t u;
		memcpy(&u, &e[i], 4);
		put_le(b + FED_EF_HEADER_LEN + 4 * i, u, 4);
	}
	ef_digest(b, len, b + 84);
	int rv = fs_write_atomic(path, b, len, 0600);
	free(b);
	return rv;
}

int
fed_ef_load(const char *path, size_t n, const uint8_t table_digest[32],
    fed_ef_meta *mout, float *e)
{
	uint8_t *b = NULL, d[32];
	size_t len = 0;
	if (n > (SIZE_MAX - FED_EF_HEADER_LEN) / 4)
		return fs_seterr("%s: %zu floats too many", path, n);
	if (fs_read_file(path, FED_EF_HEADER_LEN + 4 * n + 1, (void **)&b,
	    &len) != 0)
		return -1;
	int rv = -1;
	fed_ef_meta m;
	if (len < FED_EF_HEADER_LEN || memcmp(b, EF_MAGIC, 4) != 0) {
		fs_seterr("%s: not a residual file", path);
		goto out;
	}
	if (get_le(b + 4, 2) != EF_VERSION) {
		fs_seterr("%s: residual format %u unsupported", path,
		    (unsigned)get_le(b + 4, 2));
		goto out;
	}
	m.codec = b[6];
	m.round = (uint32_t)get_le(b + 8, 4);
	m.count = get_le(b + 12, 8);
	memcpy(m.table_digest, b + 20, 32);
	memcpy(m.payload_digest, b + 52, 32);
	if (m.count != (uint64_t)n) {
		fs_seterr("%s: residual has %llu elements, the model %zu", path,
		    (unsigned long long)m.count, n);
		goto out;
	}
	if (len != FED_EF_HEADER_LEN + 4 * n) {
		fs_seterr("%s: %zu bytes, %zu floats need %zu (torn?)", path,
		    len, n, FED_EF_HEADER_LEN + 4 * n);
		goto out;
	}
	ef_digest(b, len, d);
	if (memcmp(d, b + 84, 32) != 0) {
		fs_seterr("%s: SHA-256 mismatch (torn or altered)", path);
		goto out;
	}
	if (table_digest != NULL && memcmp(m.table_digest, table_digest,
	    32) != 0) {
		fs_seterr("%s: residual is of another tensor table", path);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t u = (uint32_t)get_le(b + FED_EF_HEADER_LEN + 4 * i, 4);
		float f;
		memcpy(&f, &u, 4);
		if (!isfinite(f)) {
			fs_seterr("%s: residual value %zu is not finite", path,
			    i);
			goto out;
		}
		e[i] = f;
	}
	if (mout != NULL)
		*mout = m;
	rv = 0;
out:
	free(b);
	return rv;
}
