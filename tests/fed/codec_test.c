/*
 * codec_test.c - f32 / f16 / q8 payloads: exactness, error bounds, sizes,
 * and every rejection the decoder must make.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "codec.h"
#include "crypto.h"
#include "test.h"

#define N 100003 /* not a multiple of the q8 chunk */

static float *
make_data(uint64_t seed)
{
	float *x = malloc(N * sizeof(float));
	uint64_t s = seed;
	for (size_t i = 0; i < N; i++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		double u = (double)(s >> 11) / 9007199254740992.0;
		/* deltas span several magnitudes, some exact zeros */
		x[i] = (float)((u - 0.5) * pow(10.0, (double)(i % 5) - 4));
		if (i % 97 == 0)
			x[i] = 0.0f;
	}
	return x;
}

static void
test_f16_scalar(void)
{
	/* exact values, halfway cases (nearest even), subnormals, overflow */
	T_OK(fed_f32_to_f16(1.0f) == 0x3c00, "f16(1) = 0x3c00");
	T_OK(fed_f32_to_f16(-2.0f) == 0xc000, "f16(-2) = 0xc000");
	T_OK(fed_f32_to_f16(65504.0f) == 0x7bff, "f16 max = 0x7bff");
	T_OK(fed_f32_to_f16(65520.0f) == 0x7c00, "65520 rounds to Inf");
	/* 1 + 2^-11 is halfway between 1 and 1+2^-10: ties to even (1) */
	T_OK(fed_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00, "tie to even down");
	/* 1 + 3*2^-11 is halfway between 1+2^-10 and 1+2^-9: to even up */
	T_OK(fed_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02, "tie to even up");
	T_OK(fed_f32_to_f16(0x1p-24f) == 0x0001, "smallest subnormal");
	T_OK(fed_f32_to_f16(0x1p-25f) == 0x0000, "half of it ties to 0");
	T_OK(fed_f32_to_f16(0x1.8p-25f) == 0x0001, "0.75 ulp rounds up");
	T_OK(fed_f16_to_f32(0x0001) == 0x1p-24f, "subnormal back");
	T_OK(fed_f16_to_f32(0x3555) == 0x1.554p-2f, "0x3555 back");
	/* every finite half survives a round trip */
	int bad = 0;
	for (uint32_t h = 0; h < 0x10000; h++) {
		if ((h & 0x7c00) == 0x7c00)
			continue;
		if (fed_f32_to_f16(fed_f16_to_f32((uint16_t)h)) != h)
			bad++;
	}
	T_OK(bad == 0, "all 63488 finite halves round-trip (%d bad)", bad);
}

static void
test_roundtrip(int codec, int stochastic, double *maxrel, double *maxq8,
    size_t *size)
{
	uint8_t td[32];
	fed_sha256("table", 5, td);
	float *x = make_data(42);
	float *y = malloc(N * sizeof(float));
	uint8_t *p = NULL;
	size_t n = 0;
	fed_codec_opts o = { .chunk = 0, .stochastic = stochastic, .seed = 7 };
	T_PASS(fed_codec_encode(codec, x, N, td, &o, &p, &n));
	T_OK(n == fed_codec_encoded_size(codec, N, 0), "%s size formula",
	    fed_codec_name(codec));
	T_PASS(fed_codec_decode(p, n, N, td, y, NULL));
	*maxrel = 0;
	*maxq8 = 0; /* error / (chunk max|x|) */
	for (size_t c = 0; c < N; c += FED_CODEC_Q8_CHUNK) {
		size_t k = N - c < FED_CODEC_Q8_CHUNK ? N - c : FED_CODEC_Q8_CHUNK;
		double m = 0;
		for (size_t j = 0; j < k; j++)
			m = fmax(m, fabs(x[c + j]));
		for (size_t j = 0; j < k; j++) {
			double e = fabs((double)y[c + j] - x[c + j]);
			if (m > 0)
				*maxq8 = fmax(*maxq8, e / m);
			if (fabs(x[c + j]) > 1e-4)
				*maxrel = fmax(*maxrel, e / fabs(x[c + j]));
		}
	}
	*size = n;
	free(p);
	free(x);
	free(y);
}

static void
test_codecs(void)
{
	double rel, q8;
	size_t s32, s16, s8, s8s;
	test_roundtrip(FED_CODEC_F32, 0, &rel, &q8, &s32);
	T_OK(rel == 0 && q8 == 0, "f32 is exact");
	test_roundtrip(FED_CODEC_F16, 0, &rel, &q8, &s16);
	T_OK(rel <= 1.0 / 2048 + 1e-9, "f16 relative error %.3g <= 2^-11",
	    rel);
	T_OK(s16 <= 0.51 * s32, "f16 size %zu <= 51%% of f32 %zu (%.1f%%)",
	    s16, s32, 100.0 * s16 / s32);
	test_roundtrip(FED_CODEC_Q8, 0, &rel, &q8, &s8);
	T_OK(q8 <= 1.0 / 254 + 1e-7, "q8 error %.4g <= max|x|/254 per chunk",
	    q8);
	T_OK(s8 <= 0.26 * s32, "q8 size %zu <= 26%% of f32 (%.1f%%)", s8,
	    100.0 * s8 / s32);
	test_roundtrip(FED_CODEC_Q8, 1, &rel, &q8, &s8s);
	T_OK(q8 < 1.0 / 127 + 1e-7, "q8 stochastic error %.4g < max|x|/127",
	    q8);
}

static void
test_stochastic_unbiased(void)
{
	/* a constant 0.3 of the scale: deterministic rounding gives 0 every
	 * time, stochastic rounding 1 in ~30% of cases, mean ~ 0.3 */
	enum { K = 256 * 64 };
	float *x = malloc(K * sizeof(float)), *y = malloc(K * sizeof(float));
	for (int i = 0; i < K; i++)
		x[i] = (i % 256 == 0) ? 127.0f : 0.3f;
	uint8_t *p;
	size_t n;
	fed_codec_opts o = { .stochastic = 1, .seed = 1 };
	T_PASS(fed_codec_encode(FED_CODEC_Q8, x, K, NULL, &o, &p, &n));
	T_PASS(fed_codec_decode(p, n, K, NULL, y, NULL));
	double s = 0;
	for (int i = 0; i < K; i++)
		if (i % 256)
			s += y[i];
	double mean = s / (K - K / 256);
	T_OK(fabs(mean - 0.3) < 0.02, "stochastic q8 is unbiased (mean %.4f)",
	    mean);
	/* same seed, same bytes */
	uint8_t *p2;
	size_t n2;
	T_PASS(fed_codec_encode(FED_CODEC_Q8, x, K, NULL, &o, &p2, &n2));
	T_OK(n == n2 && memcmp(p, p2, n) == 0, "seeded PRNG is reproducible");
	free(p);
	free(p2);
	free(x);
	free(y);
}

static void
test_rejections(void)
{
	uint8_t td[32], other[32];
	fed_sha256("table", 5, td);
	fed_sha256("other", 5, other);
	float x[300], y[300];
	for (int i = 0; i < 300; i++)
		x[i] = (float)i / 300.0f;
	uint8_t *p, *w;
	size_t n, wn;

	x[17] = NAN;
	T_OK(fed_codec_encode(FED_CODEC_F32, x, 300, td, NULL, &p, &n) != 0,
	    "encode refuses NaN: %s", fs_error());
	x[17] = 1e6f;
	T_OK(fed_codec_encode(FED_CODEC_F16, x, 300, td, NULL, &p, &n) != 0,
	    "encode refuses f16 overflow: %s", fs_error());
	x[17] = 0.5f;

	T_PASS(fed_codec_encode(FED_CODEC_Q8, x, 300, td, NULL, &p, &n));
	T_OK(fed_codec_decode(p, n, 300, other, y, NULL) != 0,
	    "wrong table digest refused: %s", fs_error());
	T_OK(fed_codec_decode(p, n, 299, td, y, NULL) != 0,
	    "wrong element count refused: %s", fs_error());
	T_OK(fed_codec_decode(p, n - 1, 300, td, y, NULL) != 0,
	    "truncated payload refused: %s", fs_error());
	p[FED_CODEC_HEADER_LEN + 10] ^= 1;
	T_OK(fed_codec_decode(p, n, 300, td, y, NULL) != 0,
	    "flipped body bit refused: %s", fs_error());
	p[0] = 'X';
	T_OK(fed_codec_decode(p, n, 300, td, y, NULL) != 0,
	    "bad magic refused: %s", fs_error());
	free(p);

	/* NaN / Inf smuggled in with a correct body hash */
	float bad[300];
	memcpy(bad, x, sizeof bad);
	bad[5] = INFINITY;
	T_PASS(fed_codec_wrap(FED_CODEC_F32, 0, 300, td, bad, sizeof bad, &w,
	    &wn));
	T_OK(fed_codec_decode(w, wn, 300, td, y, NULL) != 0,
	    "Inf in f32 body refused: %s", fs_error());
	double acc[300] = { 0 };
	T_OK(fed_codec_decode_axpy(w, wn, 300, td, 1.0, acc, NULL) != 0 &&
	    acc[0] == 0 && acc[299] == 0,
	    "axpy refuses it and leaves the accumulator unchanged");
	free(w);
	uint16_t h[300];
	for (int i = 0; i < 300; i++)
		h[i] = fed_f32_to_f16(x[i]);
	h[299] = 0x7e00; /* NaN */
	T_PASS(fed_codec_wrap(FED_CODEC_F16, 0, 300, td, h, sizeof h, &w,
	    &wn));
	T_OK(fed_codec_decode(w, wn, 300, td, y, NULL) != 0,
	    "NaN in f16 body refused: %s", fs_error());
	free(w);
	uint8_t q[2 * 4 + 300];
	memset(q, 0, sizeof q);
	float nanscale = NAN;
	memcpy(q + 4 + 256, &nanscale, 4);
	T_PASS(fed_codec_wrap(FED_CODEC_Q8, 256, 300, td, q, sizeof q, &w,
	    &wn));
	T_OK(fed_codec_decode(w, wn, 300, td, y, NULL) != 0,
	    "NaN q8 scale refused: %s", fs_error());
	free(w);

	/* axpy adds alpha * value */
	T_PASS(fed_codec_encode(FED_CODEC_F32, x, 300, td, NULL, &p, &n));
	for (int i = 0; i < 300; i++)
		acc[i] = 1.0;
	T_PASS(fed_codec_decode_axpy(p, n, 300, td, 2.0, acc, NULL));
	T_OK(acc[150] == 1.0 + 2.0 * x[150], "axpy adds 2*x");
	free(p);
	T_OK(fed_codec_parse("q8") == FED_CODEC_Q8 &&
	    fed_codec_parse("f64") == -1, "codec names parse");
}

int
main(void)
{
	test_f16_scalar();
	test_codecs();
	test_stochastic_unbiased();
	test_rejections();
	T_DONE();
}
