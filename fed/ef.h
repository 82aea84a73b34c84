/*
 * ef.h - error feedback for lossy update codecs, and its durable residual.
 *
 * With a lossy codec C a node keeps a residual e (what earlier rounds
 * computed but did not send). Each round it sends C(delta + e) and keeps
 * e = (delta + e) - decoded(C(delta + e)), so that over rounds the sum of
 * what was sent tracks the sum of the true deltas, off by the current e
 * only (Seide et al. 2014; Karimireddy et al. 2019). Nodes use it for topk,
 * which drops 99% of each delta; q8 and f16 errors are small and unbiased
 * enough in practice that nodes send them without it (fed_ef_wanted).
 *
 * Residual file (little-endian), written with fs_write_atomic:
 *
 *   off size field
 *     0    4 magic "FSEF"
 *     4    2 format version (1)
 *     6    1 codec id of the update that left this residual
 *     7    1 0
 *     8    4 round whose update left this residual
 *    12    8 element count
 *    20   32 tensor-table digest (SHA-256 of model_table_text)
 *    52   32 SHA-256 of that round's update payload (all of it)
 *    84   32 SHA-256 of bytes 0..83 and of the body
 *   116    . body: count float32
 *
 * Example:
 *   fed_ef_encode(FED_CODEC_TOPK, delta, resid, n, td, &opts, &p, &len);
 *   ... fed_ef_save(path, &meta, resid) before the update leaves ...
 */
#ifndef FEDSEG_FED_EF_H
#define FEDSEG_FED_EF_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FED_EF_HEADER_LEN 116

/* 1 when nodes apply error feedback with this codec (topk), else 0. */
int fed_ef_wanted(int codec);

/* Encodes x + e with codec (as fed_codec_encode) and sets
 * e = (x + e) - decoded payload. x is not modified; e must hold n floats
 * (zeros for a first round). On failure e is unchanged and *out untouched.
 * Refuses x + e that is not finite. */
int fed_ef_encode(int codec, const float *x, float *e, size_t n,
    const uint8_t table_digest[32], const fed_codec_opts *opts,
    uint8_t **out, size_t *outlen);

typedef struct {
	int codec;
	uint32_t round;
	uint64_t count;
	uint8_t table_digest[32];
	uint8_t payload_digest[32];
} fed_ef_meta;

/* Writes the residual durably (temp, fsync, rename, dir fsync). */
int fed_ef_save(const char *path, const fed_ef_meta *m, const float *e);

/* Reads a residual file into e (n floats). Fails, with a reason, on a
 * short, torn or altered file, another format, a count other than n, a
 * table digest other than table_digest (when not NULL) or a non-finite
 * value; m (may be NULL) receives the header. */
int fed_ef_load(const char *path, size_t n, const uint8_t table_digest[32],
    fed_ef_meta *m, float *e);

#ifdef __cplusplus
}
#endif
#endif
