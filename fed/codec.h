/*
 * codec.h - encoded weight / delta payloads.
 *
 * A payload is a fixed 84-byte little-endian header followed by a body:
 *
 *   off size field
 *     0    4 magic "FSDC"
 *     4    2 format version (1)
 *     6    1 codec id (fed_codec)
 *     7    1 flags (bit 0: q8 stochastic rounding was used; informative)
 *     8    4 chunk (q8: floats per scale; topk: k, the entries kept;
 *            0 for f32 / f16)
 *    12    8 element count
 *    20   32 tensor-table digest (SHA-256 of model_table_text)
 *    52   32 SHA-256 of the body
 *    84    . body
 *
 * Bodies: f32 = count float32 LE; f16 = count IEEE binary16 LE (round to
 * nearest even, overflow to +-Inf is refused); q8 = for each chunk of
 * `chunk` floats a float32 LE scale (max|x| / 127) followed by the chunk's
 * int8 values (x ~= q * scale); the last chunk may be short; topk =
 * k u32 LE indices, strictly increasing and < count, then the k float32 LE
 * values at those indices (every other element is 0). k sits in the
 * header's chunk field, so the body length (8k) is checked like the others
 * before anything is hashed; indices and values in two arrays keep the
 * validation and the scatter simple loops. u32 indices limit topk to 2^32
 * elements. The encoder keeps the k = ceil(topk_fraction * count) largest
 * |x| (ties: lower index first), found by an O(n) radix select on the float
 * bits (no sort of n); kept values are exact. Size: 84 + 8k bytes = 2% of
 * f32 at the default fraction 0.01. topk is biased on its own (99% of a
 * delta is dropped each round): nodes use it with error feedback
 * (fed/ef.h), which carries what was not sent into the next round.
 *
 * Decoding checks everything: magic, version, codec, chunk, count against
 * what the caller expects, table digest, exact body length, body SHA-256,
 * and that every decoded value is finite; topk also: k <= count, indices
 * strictly increasing (no duplicates) and in range. Errors follow base.h.
 *
 * Example:
 *   uint8_t *p; size_t n;
 *   fed_codec_encode(FED_CODEC_Q8, delta, count, table_digest, NULL, &p, &n);
 *   ... send p ...
 *   fed_codec_decode(p, n, count, table_digest, out, NULL);
 *   free(p);
 */
#ifndef FEDSEG_FED_CODEC_H
#define FEDSEG_FED_CODEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
	FED_CODEC_F32 = 1,
	FED_CODEC_F16 = 2,
	FED_CODEC_Q8 = 3,
	FED_CODEC_TOPK = 4,
} fed_codec;

#define FED_CODEC_HEADER_LEN 84
#define FED_CODEC_Q8_CHUNK 256
/* Default share of the elements a topk payload keeps (Aji & Heafield 2017,
 * Lin et al. 2018 keep 0.1-1% with error feedback; 1% is the conservative
 * end, for federations that run few rounds). */
#define FED_CODEC_TOPK_FRACTION 0.01

/* "f32", "f16", "q8", "topk"; NULL for an unknown id. */
const char *fed_codec_name(int codec);
/* Parses a codec name; -1 if unknown. */
int fed_codec_parse(const char *name);

typedef struct {
	uint32_t chunk;      /* q8 floats per scale; 0 = FED_CODEC_Q8_CHUNK */
	int stochastic;      /* q8: stochastic rounding (unbiased) */
	uint64_t seed;       /* seed of the stochastic rounding PRNG */
	double topk_fraction; /* topk: share kept, (0, 1]; 0 = FED_CODEC_TOPK_FRACTION */
} fed_codec_opts;

/* Encodes n floats x with `codec`. Refuses NaN/Inf in x (and f16
 * overflow). *out is malloc'd (caller frees), *outlen its size. opts may
 * be NULL (defaults: chunk 256, deterministic rounding). On failure *out is
 * untouched. */
int fed_codec_encode(int codec, const float *x, size_t n,
    const uint8_t table_digest[32], const fed_codec_opts *opts,
    uint8_t **out, size_t *outlen);

/* Size in bytes fed_codec_encode would produce. chunk: q8 floats per
 * scale (0 = default); topk: k (fed_codec_topk_k). */
size_t fed_codec_encoded_size(int codec, size_t n, uint32_t chunk);

/* k a topk payload of n elements keeps: ceil(fraction * n) within [1, n]
 * (0 for n = 0); fraction <= 0 means FED_CODEC_TOPK_FRACTION. */
size_t fed_codec_topk_k(size_t n, double fraction);

/* The header fields, as read by fed_codec_peek. */
typedef struct {
	int codec;
	int flags;
	uint32_t chunk;
	uint64_t count;
	uint8_t table_digest[32];
	uint8_t body_sha256[32];
} fed_codec_header;

/* Parses and checks the header only (magic, version, codec, chunk, body
 * length matches count); does not hash the body. */
int fed_codec_peek(const uint8_t *p, size_t len, fed_codec_header *h);

/* Decodes a payload into out (n floats). Checks: header (fed_codec_peek),
 * count == n, table digest == table_digest (when not NULL), body SHA-256,
 * all values finite. On failure out may be partly written. h (may be NULL)
 * receives the header. */
int fed_codec_decode(const uint8_t *p, size_t len, size_t n,
    const uint8_t table_digest[32], float *out, fed_codec_header *h);

/* Like fed_codec_decode but adds alpha * decoded value into acc (double),
 * chunk by chunk (topk: only the k kept entries), without a float copy of
 * the whole vector. On failure acc
 * is unchanged (the payload is fully validated before anything is added). */
int fed_codec_decode_axpy(const uint8_t *p, size_t len, size_t n,
    const uint8_t table_digest[32], double alpha, double *acc,
    fed_codec_header *h);

/* Flags of fed_codec_check / fed_codec_decode_axpbyf. */
/* The caller has checked a SHA-256 over the whole payload (header and
 * body; e.g. the signed digest of an Update), so the body SHA-256 is not
 * computed again (f32 and q8; other codecs keep every check). */
#define FED_CODEC_BODY_AUTHENTICATED 1u
/* axpbyf only: these bytes passed fed_codec_check (same n, table digest)
 * and have not changed since: no validation pass, the header is parsed
 * again. Bad bytes under this flag give garbage in acc, never a read
 * outside the payload. */
#define FED_CODEC_PRECHECKED 2u

/* Every check of fed_codec_decode (body SHA-256 as flags say) without
 * writing the values anywhere, in one pass over the body. sumsq (may be
 * NULL) receives the sum of the squares of the decoded values (double). */
int fed_codec_check(const uint8_t *p, size_t len, size_t n,
    const uint8_t table_digest[32], unsigned flags, double *sumsq,
    fed_codec_header *h);

/* Float accumulation: acc = beta * acc + alpha * decoded value (float
 * arithmetic; beta == 0 stores and does not read acc, alpha 1 / beta 0 is
 * a plain decode). Validates the payload first (fed_codec_check with
 * flags) unless flags has FED_CODEC_PRECHECKED; on failure acc is
 * unchanged. */
int fed_codec_decode_axpbyf(const uint8_t *p, size_t len, size_t n,
    const uint8_t table_digest[32], float alpha, float beta, float *acc,
    unsigned flags, fed_codec_header *h);

/* Wraps a raw body under a header (for tests and tools that build
 * payloads by hand, e.g. hostile-peer tests). The body is copied; the body
 * SHA-256 is computed. *out malloc'd. */
int fed_codec_wrap(int codec, uint32_t chunk, uint64_t count,
    const uint8_t table_digest[32], const void *body, size_t bodylen,
    uint8_t **out, size_t *outlen);

/* IEEE binary16 conversions (round to nearest even). */
uint16_t fed_f32_to_f16(float f);
float fed_f16_to_f32(uint16_t h);

#ifdef __cplusplus
}
#endif
#endif
