/*
 * codec.c - f32 / f16 / q8 / topk payloads with a checked header (see
 * codec.h).
 */
#include "codec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "crypto.h"

#define MAGIC "FSDC"
#define FORMAT_VERSION 1
#define MAX_CHUNK 65536u
#define BLOCK 4096u

/* ---- small helpers ---------------------------------------------------- */

static void
put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void
put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void
put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t
get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t
get_u32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t
get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void
put_f32(uint8_t *p, float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	put_u32(p, u);
}

static float
get_f32(const uint8_t *p)
{
	uint32_t u = get_u32(p);
	float f;
	memcpy(&f, &u, 4);
	return f;
}

const char *
fed_codec_name(int codec)
{
	switch (codec) {
	case FED_CODEC_F32: return "f32";
	case FED_CODEC_F16: return "f16";
	case FED_CODEC_Q8: return "q8";
	case FED_CODEC_TOPK: return "topk";
	default: return NULL;
	}
}

int
fed_codec_parse(const char *name)
{
	for (int c = FED_CODEC_F32; c <= FED_CODEC_TOPK; c++)
		if (name != NULL && strcmp(name, fed_codec_name(c)) == 0)
			return c;
	return -1;
}

/* ---- IEEE binary16 ---------------------------------------------------- */

static uint16_t
f16_round(uint32_t h, uint32_t rem, uint32_t half)
{
	if (rem > half || (rem == half && (h & 1u)))
		h++;
	return (uint16_t)h;
}

uint16_t
fed_f32_to_f16(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	uint32_t sign = (x >> 16) & 0x8000u;
	int exp = (int)((x >> 23) & 0xffu);
	uint32_t mant = x & 0x7fffffu;

	if (exp == 0xff)
		return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
	int e = exp - 127 + 15;
	if (e >= 31)
		return (uint16_t)(sign | 0x7c00u);
	if (e <= 0) {
		/* subnormal half: value / 2^-24, rounded */
		int shift = 14 - e;
		if (exp == 0 || shift > 24)
			return (uint16_t)sign;
		uint32_t m = mant | 0x800000u;
		uint32_t h = m >> shift;
		uint32_t rem = m & ((1u << shift) - 1u);
		return (uint16_t)(sign | f16_round(h, rem, 1u << (shift - 1)));
	}
	uint32_t h = ((uint32_t)e << 10) | (mant >> 13);
	/* a carry out of the mantissa correctly bumps the exponent */
	return (uint16_t)(sign | f16_round(h, mant & 0x1fffu, 0x1000u));
}

float
fed_f16_to_f32(uint16_t h)
{
	uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu;
	uint32_t mant = h & 0x3ffu;
	uint32_t x;

	if (exp == 0x1f) {
		x = sign | 0x7f800000u | (mant << 13);
	} else if (exp != 0) {
		x = sign | ((exp + 112u) << 23) | (mant << 13);
	} else if (mant == 0) {
		x = sign;
	} else {
		/* subnormal: normalise */
		int e = 113;
		while (!(mant & 0x400u)) {
			mant <<= 1;
			e--;
		}
		x = sign | ((uint32_t)e << 23) | ((mant & 0x3ffu) << 13);
	}
	float f;
	memcpy(&f, &x, 4);
	return f;
}

/* ---- sizes and header -------------------------------------------------- */

static size_t
body_size(int codec, uint64_t n, uint32_t chunk)
{
	switch (codec) {
	case FED_CODEC_F32: return (size_t)n * 4;
	case FED_CODEC_F16: return (size_t)n * 2;
	case FED_CODEC_Q8:
		return (size_t)n + 4 * (size_t)((n + chunk - 1) / chunk);
	case FED_CODEC_TOPK: return 8 * (size_t)chunk; /* chunk = k */
	default: return 0;
	}
}

size_t
fed_codec_encoded_size(int codec, size_t n, uint32_t chunk)
{
	if (chunk == 0 && codec != FED_CODEC_TOPK)
		chunk = FED_CODEC_Q8_CHUNK;
	return FED_CODEC_HEADER_LEN + body_size(codec, n, chunk);
}

static void
header_write(uint8_t *p, int codec, int flags, uint32_t chunk, uint64_t n,
    const uint8_t table_digest[32])
{
	memcpy(p, MAGIC, 4);
	put_u16(p + 4, FORMAT_VERSION);
	p[6] = (uint8_t)codec;
	p[7] = (uint8_t)flags;
	put_u32(p + 8, codec == FED_CODEC_Q8 || codec == FED_CODEC_TOPK ?
	    chunk : 0);
	put_u64(p + 12, n);
	if (table_digest != NULL)
		memcpy(p + 20, table_digest, 32);
	else
		memset(p + 20, 0, 32);
}

int
fed_codec_peek(const uint8_t *p, size_t len, fed_codec_header *h)
{
	if (p == NULL || len < FED_CODEC_HEADER_LEN)
		return fs_seterr("payload too short (%zu bytes)", len);
	if (memcmp(p, MAGIC, 4) != 0)
		return fs_seterr("payload has no FSDC magic");
	if (get_u16(p + 4) != FORMAT_VERSION)
		return fs_seterr("payload format version %u unsupported",
		    get_u16(p + 4));
	int codec = p[6];
	if (fed_codec_name(codec) == NULL)
		return fs_seterr("payload codec id %d unknown", codec);
	uint32_t chunk = get_u32(p + 8);
	if (codec == FED_CODEC_Q8 && (chunk == 0 || chunk > MAX_CHUNK))
		return fs_seterr("payload q8 chunk %u out of range", chunk);
	if (codec != FED_CODEC_Q8 && codec != FED_CODEC_TOPK && chunk != 0)
		return fs_seterr("payload chunk must be 0 for %s",
		    fed_codec_name(codec));
	uint64_t n = get_u64(p + 12);
	if (n > (uint64_t)(SIZE_MAX / 8))
		return fs_seterr("payload element count %llu too large",
		    (unsigned long long)n);
	if (codec == FED_CODEC_TOPK && (n > (uint64_t)UINT32_MAX + 1 ||
	    (uint64_t)chunk > n))
		return fs_seterr("payload topk keeps %u of %llu elements", chunk,
		    (unsigned long long)n);
	size_t want = body_size(codec, n, chunk);
	if (len - FED_CODEC_HEADER_LEN != want)
		return fs_seterr("payload body is %zu bytes, %s of %llu "
		    "elements needs %zu", len - FED_CODEC_HEADER_LEN,
		    fed_codec_name(codec), (unsigned long long)n, want);
	h->codec = codec;
	h->flags = p[7];
	h->chunk = chunk;
	h->count = n;
	memcpy(h->table_digest, p + 20, 32);
	memcpy(h->body_sha256, p + 52, 32);
	return 0;
}

/* ---- encoding ---------------------------------------------------------- */

static uint64_t
splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static int
encode_f16(const float *x, size_t n, uint8_t *body)
{
	for (size_t i = 0; i < n; i++) {
		uint16_t h = fed_f32_to_f16(x[i]);
		if ((h & 0x7c00u) == 0x7c00u)
			return fs_seterr("value %g at index %zu does not fit "
			    "f16", (double)x[i], i);
		put_u16(body + 2 * i, h);
	}
	return 0;
}

static void
encode_q8_chunk(const float *x, size_t k, uint8_t *out, int stochastic,
    uint64_t *rng)
{
	float m = 0.0f;
	for (size_t i = 0; i < k; i++)
		m = fmaxf(m, fabsf(x[i]));
	float scale = m / 127.0f;
	put_f32(out, scale);
	int8_t *q = (int8_t *)(out + 4);
	for (size_t i = 0; i < k; i++) {
		float v = scale > 0.0f ? x[i] / scale : 0.0f;
		float r;
		if (stochastic) {
			float u = (float)(splitmix64(rng) >> 40) *
			    (1.0f / 16777216.0f);
			r = floorf(v + u);
		} else {
			r = nearbyintf(v);
		}
		if (r > 127.0f)
			r = 127.0f;
		if (r < -127.0f)
			r = -127.0f;
		q[i] = (int8_t)r;
	}
}

static void
encode_q8(const float *x, size_t n, uint32_t chunk, int stochastic,
    uint64_t seed, uint8_t *body)
{
	uint64_t rng = seed;
	for (size_t i = 0; i < n; i += chunk) {
		size_t k = n - i < chunk ? n - i : chunk;
		encode_q8_chunk(x + i, k, body, stochastic, &rng);
		body += 4 + k;
	}
}

static int
check_finite(const float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(x[i]))
			return fs_seterr("value at index %zu is %s", i,
			    isnan(x[i]) ? "NaN" : "Inf");
	return 0;
}

/* ---- topk -------------------------------------------------------------- */

size_t
fed_codec_topk_k(size_t n, double fraction)
{
	if (n == 0)
		return 0;
	if (!(fraction > 0))
		fraction = FED_CODEC_TOPK_FRACTION;
	double k = ceil(fraction * (double)n);
	if (k < 1)
		k = 1;
	return k >= (double)n ? n : (size_t)k;
}

/* |x| as its IEEE bits: for finite non-negative floats the integer order
 * is the numeric order, so a radix select on the bits finds the k-th
 * largest |x| exactly. */
static uint32_t
abs_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u & 0x7fffffffu;
}

/*
 * Keeps the k largest |x| (ties broken by lower index): a two-pass radix
 * select (16 high bits, then the 16 low bits inside the chosen bucket)
 * finds the threshold T = bits of the k-th largest |x| in O(n) with two
 * 256 KiB histograms and no copy of x; a last pass emits every index with
 * |x| > T and the first (k - #greater) with |x| == T, so the indices come
 * out in increasing order without a sort. Body: k u32 indices, then the
 * k float32 values, little-endian.
 */
static int
encode_topk(const float *x, size_t n, size_t k, uint8_t *body)
{
	if (k == 0)
		return 0;
	size_t *hist = calloc(65536, sizeof(size_t));
	if (hist == NULL)
		return fs_seterr("out of memory (topk histogram)");
	for (size_t i = 0; i < n; i++)
		hist[abs_bits(x[i]) >> 16]++;
	size_t above = 0; /* elements in buckets above the chosen one */
	uint32_t hi = 65535;
	while (above + hist[hi] < k)
		above += hist[hi--];
	memset(hist, 0, 65536 * sizeof(size_t));
	for (size_t i = 0; i < n; i++) {
		uint32_t b = abs_bits(x[i]);
		if (b >> 16 == hi)
			hist[b & 0xffffu]++;
	}
	uint32_t lo = 65535;
	while (above + hist[lo] < k)
		above += hist[lo--];
	free(hist);
	uint32_t t = hi << 16 | lo;
	size_t ties = k - above; /* how many |x| == T to keep, >= 1 */
	uint8_t *idx = body, *val = body + 4 * k;
	size_t j = 0;
	for (size_t i = 0; i < n && j < k; i++) {
		uint32_t b = abs_bits(x[i]);
		if (b > t || (b == t && ties > 0)) {
			if (b == t)
				ties--;
			put_u32(idx + 4 * j, (uint32_t)i);
			put_f32(val + 4 * j, x[i]);
			j++;
		}
	}
	if (j != k) /* cannot happen: the counts above say k qualify */
		return fs_seterr("topk selected %zu of %zu", j, k);
	return 0;
}

/* Checks a topk body once, for every entry point: indices strictly
 * increasing (so no duplicates) and < count, values finite. */
static int
topk_check(const fed_codec_header *h, const uint8_t *body)
{
	size_t k = h->chunk;
	const uint8_t *idx = body, *val = body + 4 * k;
	uint64_t prev = 0;
	for (size_t j = 0; j < k; j++) {
		uint64_t i = get_u32(idx + 4 * j);
		if (i >= h->count)
			return fs_seterr("topk index %llu at entry %zu is out of "
			    "range (%llu elements)", (unsigned long long)i, j,
			    (unsigned long long)h->count);
		if (j > 0 && i <= prev)
			return fs_seterr("topk indices not strictly increasing "
			    "at entry %zu (%llu after %llu)", j,
			    (unsigned long long)i, (unsigned long long)prev);
		prev = i;
		float v = get_f32(val + 4 * j);
		if (!isfinite(v))
			return fs_seterr("topk value at index %llu is %s",
			    (unsigned long long)i, isnan(v) ? "NaN" : "Inf");
	}
	return 0;
}

/* First entry whose index is >= i (indices already checked sorted). */
static size_t
topk_lower_bound(const uint8_t *idx, size_t k, size_t i)
{
	size_t a = 0, b = k;
	while (a < b) {
		size_t m = a + (b - a) / 2;
		if (get_u32(idx + 4 * m) < i)
			a = m + 1;
		else
			b = m;
	}
	return a;
}

int
fed_codec_encode(int codec, const float *x, size_t n,
    const uint8_t table_digest[32], const fed_codec_opts *opts,
    uint8_t **out, size_t *outlen)
{
	fed_codec_opts o = { 0 };
	if (opts != NULL)
		o = *opts;
	if (o.chunk == 0)
		o.chunk = FED_CODEC_Q8_CHUNK;
	if (fed_codec_name(codec) == NULL)
		return fs_seterr("codec id %d unknown", codec);
	if (o.chunk > MAX_CHUNK)
		return fs_seterr("q8 chunk %u too large", o.chunk);
	if (check_finite(x, n) != 0)
		return fs_preferr("encode %s", fed_codec_name(codec));
	if (codec == FED_CODEC_TOPK) {
		if (n > (size_t)UINT32_MAX + 1)
			return fs_seterr("topk: %zu elements do not fit u32 "
			    "indices", n);
		double f = o.topk_fraction;
		if (f == 0)
			f = FED_CODEC_TOPK_FRACTION;
		if (!(f > 0 && f <= 1))
			return fs_seterr("topk fraction %g outside (0, 1]", f);
		o.chunk = (uint32_t)fed_codec_topk_k(n, f);
	}
	size_t blen = body_size(codec, n, o.chunk);
	uint8_t *p = malloc(FED_CODEC_HEADER_LEN + blen + 1);
	if (p == NULL)
		return fs_seterr("out of memory encoding %zu floats", n);
	uint8_t *body = p + FED_CODEC_HEADER_LEN;
	int flags = 0;
	if (codec == FED_CODEC_F32) {
		for (size_t i = 0; i < n; i++)
			put_f32(body + 4 * i, x[i]);
	} else if (codec == FED_CODEC_F16) {
		if (encode_f16(x, n, body) != 0) {
			free(p);
			return -1;
		}
	} else if (codec == FED_CODEC_TOPK) {
		if (encode_topk(x, n, o.chunk, body) != 0) {
			free(p);
			return -1;
		}
	} else {
		encode_q8(x, n, o.chunk, o.stochastic, o.seed, body);
		flags = o.stochastic ? 1 : 0;
	}
	header_write(p, codec, flags, o.chunk, n, table_digest);
	fed_sha256(body, blen, p + 52);
	*out = p;
	*outlen = FED_CODEC_HEADER_LEN + blen;
	return 0;
}

int
fed_codec_wrap(int codec, uint32_t chunk, uint64_t count,
    const uint8_t table_digest[32], const void *body, size_t bodylen,
    uint8_t **out, size_t *outlen)
{
	uint8_t *p = malloc(FED_CODEC_HEADER_LEN + bodylen + 1);
	if (p == NULL)
		return fs_seterr("out of memory wrapping %zu bytes", bodylen);
	header_write(p, codec, 0, chunk, count, table_digest);
	put_u32(p + 8, chunk);
	if (bodylen > 0)
		memcpy(p + FED_CODEC_HEADER_LEN, body, bodylen);
	fed_sha256(p + FED_CODEC_HEADER_LEN, bodylen, p + 52);
	*out = p;
	*outlen = FED_CODEC_HEADER_LEN + bodylen;
	return 0;
}

/* ---- decoding ---------------------------------------------------------- */

/* Decodes the block of k values starting at element i into buf. For q8,
 * i is a multiple of the chunk and k <= chunk. Returns -1 on a non-finite
 * value or a bad q8 scale / code. */
static int
decode_block(const fed_codec_header *h, const uint8_t *body, size_t i,
    size_t k, float *buf)
{
	if (h->codec == FED_CODEC_F32) {
		for (size_t j = 0; j < k; j++)
			buf[j] = get_f32(body + 4 * (i + j));
	} else if (h->codec == FED_CODEC_F16) {
		for (size_t j = 0; j < k; j++)
			buf[j] = fed_f16_to_f32(get_u16(body + 2 * (i + j)));
	} else if (h->codec == FED_CODEC_TOPK) {
		/* dense view of [i, i + k) (body checked by topk_check) */
		size_t kk = h->chunk;
		const uint8_t *idx = body, *val = body + 4 * kk;
		memset(buf, 0, k * sizeof(float));
		for (size_t e = topk_lower_bound(idx, kk, i); e < kk; e++) {
			size_t at = get_u32(idx + 4 * e);
			if (at >= i + k)
				break;
			if (at >= i) /* always, for a checked body */
				buf[at - i] = get_f32(val + 4 * e);
		}
	} else {
		const uint8_t *c = body + i + 4 * (i / h->chunk);
		float scale = get_f32(c);
		if (!isfinite(scale) || scale < 0.0f)
			return fs_seterr("q8 chunk at element %zu has scale %g",
			    i, (double)scale);
		const int8_t *q = (const int8_t *)(c + 4);
		for (size_t j = 0; j < k; j++) {
			if (q[j] == -128)
				return fs_seterr("q8 code -128 at element %zu",
				    i + j);
			buf[j] = (float)q[j] * scale;
		}
	}
	for (size_t j = 0; j < k; j++)
		if (!isfinite(buf[j]))
			return fs_seterr("decoded value at index %zu is %s",
			    i + j, isnan(buf[j]) ? "NaN" : "Inf");
	return 0;
}

static int
decode_check(const uint8_t *p, size_t len, size_t n,
    const uint8_t table_digest[32], fed_codec_header *h)
{
	if (fed_codec_peek(p, len, h) != 0)
		return -1;
	if (h->count != (uint64_t)n)
		return fs_seterr("payload has %llu elements, model has %zu",
		    (unsigned long long)h->count, n);
	if (table_digest != NULL &&
	    memcmp(h->table_digest, table_digest, 32) != 0)
		return fs_seterr("payload tensor-table digest does not match "
		    "the model's");
	uint8_t d[32];
	fed_sha256(p + FED_CODEC_HEADER_LEN, len - FED_CODEC_HEADER_LEN, d);
	if (memcmp(d, h->body_sha256, 32) != 0)
		return fs_seterr("payload body SHA-256 mismatch");
	if (h->codec == FED_CODEC_TOPK &&
	    topk_check(h, p + FED_CODEC_HEADER_LEN) != 0)
		return -1;
	return 0;
}

static size_t
block_len(const fed_codec_header *h)
{
	return h->codec == FED_CODEC_Q8 ? h->chunk : BLOCK;
}

int
fed_codec_decode(const uint8_t *p, size_t len, size_t n,
    const uint8_t table_digest[32], float *out, fed_codec_header *hout)
{
	fed_codec_header h;
	if (decode_check(p, len, n, table_digest, &h) != 0)
		return -1;
	const uint8_t *body = p + FED_CODEC_HEADER_LEN;
	size_t b = block_len(&h);
	for (size_t i = 0; i < n; i += b) {
		size_t k = n - i < b ? n - i : b;
		if (decode_block(&h, body, i, k, out + i) != 0)
			return -1;
	}
	if (hout != NULL)
		*hout = h;
	return 0;
}

int
fed_codec_decode_axpy(const uint8_t *p, size_t len, size_t n,
    const uint8_t table_digest[32], double alpha, double *acc,
    fed_codec_header *hout)
{
	fed_codec_header h;
	if (decode_check(p, len, n, table_digest, &h) != 0)
		return -1;
	const uint8_t *body = p + FED_CODEC_HEADER_LEN;
	if (h.codec == FED_CODEC_TOPK) {
		/* sparse: validated by decode_check, add only the k entries */
		size_t k = h.chunk;
		for (size_t j = 0; j < k; j++)
			acc[get_u32(body + 4 * j)] += alpha *
			    (double)get_f32(body + 4 * k + 4 * j);
		if (hout != NULL)
			*hout = h;
		return 0;
	}
	size_t b = block_len(&h);
	float *buf = malloc(b * sizeof(float));
	if (buf == NULL)
		return fs_seterr("out of memory");
	int rv = 0;
	/* pass 1 validates every value so that acc stays unchanged on error */
	for (size_t i = 0; i < n && rv == 0; i += b)
		rv = decode_block(&h, body, i, n - i < b ? n - i : b, buf);
	for (size_t i = 0; i < n && rv == 0; i += b) {
		size_t k = n - i < b ? n - i : b;
		decode_block(&h, body, i, k, buf);
		for (size_t j = 0; j < k; j++)
			acc[i + j] += alpha * (double)buf[j];
	}
	free(buf);
	if (rv == 0 && hout != NULL)
		*hout = h;
	return rv;
}

/* ---- float accumulation for the aggregator ------------------------------ */

/* The f32 and q8 fast paths read the body with plain loads on a
 * little-endian host (the format is little-endian) so that the loops
 * vectorise; elsewhere they go through get_f32. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_LE 1
#else
#define HOST_LE 0
#endif

static inline float
ld_f32(const uint8_t *p)
{
#if HOST_LE
	float f;
	memcpy(&f, p, 4);
	return f;
#else
	return get_f32(p);
#endif
}

/* Header checks of fed_codec_decode; the body SHA-256 is skipped only for
 * f32 / q8 with FED_CODEC_BODY_AUTHENTICATED (other codecs keep every check
 * of decode_check, whatever the flags). */
static int
check_head(const uint8_t *p, size_t len, size_t n,
    const uint8_t table_digest[32], unsigned flags, fed_codec_header *h)
{
	if (fed_codec_peek(p, len, h) != 0)
		return -1;
	if (!(flags & FED_CODEC_BODY_AUTHENTICATED) ||
	    (h->codec != FED_CODEC_F32 && h->codec != FED_CODEC_Q8))
		return decode_check(p, len, n, table_digest, h);
	if (h->count != (uint64_t)n)
		return fs_seterr("payload has %llu elements, model has %zu",
		    (unsigned long long)h->count, n);
	if (table_digest != NULL &&
	    memcmp(h->table_digest, table_digest, 32) != 0)
		return fs_seterr("payload tensor-table digest does not match "
		    "the model's");
	return 0;
}

/* The loops below work on groups of V values with a constant trip count
 * (GCC's -O2 cost model vectorises only those) and a scalar tail. */
#define V 16

/* f32: every value finite (exponent field not all ones: adding one to it
 * carries into bit 31 only then); sum of squares in 8 independent partial
 * sums (a fixed order, so the result is reproducible). */
static int
check_f32(const uint8_t *restrict body, size_t n, double *sumsq)
{
	double s[8] = { 0 };
	for (size_t i = 0; i < n; i += BLOCK) {
		size_t k = n - i < BLOCK ? n - i : BLOCK, j = 0;
		const uint8_t *b = body + 4 * i;
		uint32_t bad = 0;
		for (; j + V <= k; j += V) {
			uint32_t t[V];
			memcpy(t, b + 4 * j, sizeof t);
			for (int l = 0; l < V; l++)
				bad |= (t[l] & 0x7f800000u) + 0x00800000u;
		}
		for (; j < k; j++)
			bad |= (get_u32(b + 4 * j) & 0x7f800000u) + 0x00800000u;
		if (bad & 0x80000000u) {
			for (j = 0; j < k; j++) {
				float v = get_f32(b + 4 * j);
				if (!isfinite(v))
					return fs_seterr("decoded value at "
					    "index %zu is %s", i + j,
					    isnan(v) ? "NaN" : "Inf");
			}
		}
		for (j = 0; j + 8 <= k; j += 8) {
			float t[8];
			for (int l = 0; l < 8; l++)
				t[l] = ld_f32(b + 4 * (j + l));
			for (int l = 0; l < 8; l++)
				s[l] += (double)t[l] * (double)t[l];
		}
		for (; j < k; j++) {
			double v = ld_f32(b + 4 * j);
			s[0] += v * v;
		}
	}
	*sumsq = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) +
	    (s[6] + s[7]));
	return 0;
}

/* q8: every scale finite and >= 0, every decoded value finite (always
 * when 127 * scale is), no code -128. */
static int
check_q8(const fed_codec_header *h, const uint8_t *body, size_t n,
    double *sumsq)
{
	double ss = 0;
	for (size_t i = 0; i < n; i += h->chunk) {
		size_t k = n - i < h->chunk ? n - i : h->chunk;
		const uint8_t *c = body + i + 4 * (i / h->chunk);
		float scale = get_f32(c);
		if (!isfinite(scale) || scale < 0.0f)
			return fs_seterr("q8 chunk at element %zu has scale %g",
			    i, (double)scale);
		const int8_t *q = (const int8_t *)(c + 4);
		if (!isfinite(127.0f * scale))
			for (size_t j = 0; j < k; j++)
				if (!isfinite((float)q[j] * scale))
					return fs_seterr("decoded value at "
					    "index %zu is Inf", i + j);
		int bad = 0;
		double s = 0;
		for (size_t j = 0; j < k; j++) {
			bad |= q[j] == -128;
			double v = (float)q[j] * scale;
			s += v * v;
		}
		if (bad)
			for (size_t j = 0; j < k; j++)
				if (q[j] == -128)
					return fs_seterr("q8 code -128 at "
					    "element %zu", i + j);
		ss += s;
	}
	*sumsq = ss;
	return 0;
}

int
fed_codec_check(const uint8_t *p, size_t len, size_t n,
    const uint8_t table_digest[32], unsigned flags, double *sumsq,
    fed_codec_header *hout)
{
	fed_codec_header h;
	double ss = 0;
	if (check_head(p, len, n, table_digest, flags, &h) != 0)
		return -1;
	const uint8_t *body = p + FED_CODEC_HEADER_LEN;
	int rv = 0;
	if (h.codec == FED_CODEC_F32) {
		rv = check_f32(body, n, &ss);
	} else if (h.codec == FED_CODEC_Q8) {
		rv = check_q8(&h, body, n, &ss);
	} else {
		float *buf = malloc(BLOCK * sizeof(float));
		if (buf == NULL)
			return fs_seterr("out of memory");
		for (size_t i = 0; i < n && rv == 0; i += BLOCK) {
			size_t k = n - i < BLOCK ? n - i : BLOCK;
			rv = decode_block(&h, body, i, k, buf);
			for (size_t j = 0; j < k && rv == 0; j++)
				ss += (double)buf[j] * (double)buf[j];
		}
		free(buf);
	}
	if (rv != 0)
		return -1;
	if (sumsq != NULL)
		*sumsq = ss;
	if (hout != NULL)
		*hout = h;
	return 0;
}

/* acc = beta * acc + alpha * x; beta == 0 stores (acc is not read). */
static void
axpby_f32(float *restrict acc, const uint8_t *restrict x, size_t k,
    float alpha, float beta)
{
	size_t j = 0;
	if (beta == 0.0f) {
		for (; j + V <= k; j += V) {
			float t[V];
			for (int l = 0; l < V; l++)
				t[l] = ld_f32(x + 4 * (j + l));
			for (int l = 0; l < V; l++)
				acc[j + l] = alpha * t[l];
		}
		for (; j < k; j++)
			acc[j] = alpha * ld_f32(x + 4 * j);
	} else {
		for (; j + V <= k; j += V) {
			float t[V];
			for (int l = 0; l < V; l++)
				t[l] = ld_f32(x + 4 * (j + l));
			for (int l = 0; l < V; l++)
				acc[j + l] = beta * acc[j + l] + alpha * t[l];
		}
		for (; j < k; j++)
			acc[j] = beta * acc[j] + alpha * ld_f32(x + 4 * j);
	}
}

static void
axpby_i8(float *restrict acc, const int8_t *restrict q, size_t k,
    float a, float beta)
{
	size_t j = 0;
	if (beta == 0.0f) {
		for (; j + V <= k; j += V)
			for (int l = 0; l < V; l++)
				acc[j + l] = a * (float)q[j + l];
		for (; j < k; j++)
			acc[j] = a * (float)q[j];
	} else {
		for (; j + V <= k; j += V)
			for (int l = 0; l < V; l++)
				acc[j + l] = beta * acc[j + l] +
				    a * (float)q[j + l];
		for (; j < k; j++)
			acc[j] = beta * acc[j] + a * (float)q[j];
	}
}

static void
axpby_buf(float *restrict acc, const float *restrict x, size_t k,
    float alpha, float beta)
{
	for (size_t j = 0; j < k; j++)
		acc[j] = beta == 0.0f ? alpha * x[j] : beta * acc[j] +
		    alpha * x[j];
}

int
fed_codec_decode_axpbyf(const uint8_t *p, size_t len, size_t n,
    const uint8_t table_digest[32], float alpha, float beta, float *acc,
    unsigned flags, fed_codec_header *hout)
{
	fed_codec_header h;
	if (flags & FED_CODEC_PRECHECKED) {
		if (fed_codec_peek(p, len, &h) != 0)
			return -1;
		if (h.count != (uint64_t)n)
			return fs_seterr("payload has %llu elements, model has "
			    "%zu", (unsigned long long)h.count, n);
	} else if (fed_codec_check(p, len, n, table_digest, flags, NULL,
	    &h) != 0) {
		return -1; /* acc untouched */
	}
	const uint8_t *body = p + FED_CODEC_HEADER_LEN;
	if (h.codec == FED_CODEC_F32) {
		/* blocks keep the x stream and acc in step for the prefetcher
		 * without changing the arithmetic */
		for (size_t i = 0; i < n; i += BLOCK) {
			size_t k = n - i < BLOCK ? n - i : BLOCK;
			axpby_f32(acc + i, body + 4 * i, k, alpha, beta);
		}
	} else if (h.codec == FED_CODEC_Q8) {
		for (size_t i = 0; i < n; i += h.chunk) {
			size_t k = n - i < h.chunk ? n - i : h.chunk;
			const uint8_t *c = body + i + 4 * (i / h.chunk);
			/* (float)q * scale, then * alpha: the value decoded by
			 * fed_codec_decode times alpha, up to one rounding */
			float scale = get_f32(c);
			if (alpha == 1.0f && beta == 0.0f) {
				const int8_t *q = (const int8_t *)(c + 4);
				for (size_t j = 0; j < k; j++)
					acc[i + j] = (float)q[j] * scale;
			} else {
				axpby_i8(acc + i, (const int8_t *)(c + 4), k,
				    alpha * scale, beta);
			}
		}
	} else {
		float *buf = malloc(BLOCK * sizeof(float));
		if (buf == NULL)
			return fs_seterr("out of memory");
		for (size_t i = 0; i < n; i += BLOCK) {
			size_t k = n - i < BLOCK ? n - i : BLOCK;
			if (decode_block(&h, body, i, k, buf) != 0) {
				free(buf);
				return -1; /* only without a check before */
			}
			axpby_buf(acc + i, buf, k, alpha, beta);
		}
		free(buf);
	}
	if (hout != NULL)
		*hout = h;
	return 0;
}
