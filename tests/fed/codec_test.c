/*
 * codec_test.c - f32 / f16 / q8 / topk payloads: exactness, error bounds,
 * sizes, and every rejection the decoder must make; error feedback and its
 * residual file.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "codec.h"
#include "crypto.h"
#include "ef.h"
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


/* ---- topk ---------------------------------------------------------------- */

static const float *cmp_x;

/* |x| descending, then index ascending: an independent, full-sort
 * reference for the encoder's radix select */
static int
cmp_mag(const void *a, const void *b)
{
	size_t i = *(const size_t *)a, j = *(const size_t *)b;
	float fa = fabsf(cmp_x[i]), fb = fabsf(cmp_x[j]);
	if (fa != fb)
		return fa > fb ? -1 : 1;
	return i < j ? -1 : i > j;
}

/* Encodes x with topk at fraction f; checks size, that decode keeps
 * exactly the reference top k (values bit-exact) and zeros elsewhere, and
 * that axpy adds the same. Returns the number of mismatches. */
static int
topk_check_one(const float *x, size_t n, double f, const char *what)
{
	uint8_t td[32], *p = NULL;
	size_t len = 0;
	fed_sha256("table", 5, td);
	fed_codec_opts o = { .topk_fraction = f };
	T_PASS(fed_codec_encode(FED_CODEC_TOPK, x, n, td, &o, &p, &len));
	size_t k = fed_codec_topk_k(n, f);
	T_OK(len == 84 + 8 * k && len == fed_codec_encoded_size(FED_CODEC_TOPK,
	    n, (uint32_t)k), "%s: topk keeps k = %zu of %zu, %zu bytes = 84 + "
	    "8k (%.2f%% of f32)", what, k, n, len,
	    100.0 * len / (84 + 4.0 * n));
	float *y = malloc((n + 1) * sizeof(float));
	double *acc = calloc(n + 1, sizeof(double));
	size_t *ord = malloc((n + 1) * sizeof(size_t));
	char *keep = calloc(n + 1, 1);
	fed_codec_header h;
	T_PASS(fed_codec_decode(p, len, n, td, y, &h));
	T_PASS(fed_codec_decode_axpy(p, len, n, td, -0.5, acc, NULL));
	T_OK(h.codec == FED_CODEC_TOPK && h.chunk == k && h.count == n,
	    "%s: header says topk, k, count", what);
	for (size_t i = 0; i < n; i++)
		ord[i] = i;
	cmp_x = x;
	qsort(ord, n, sizeof(size_t), cmp_mag);
	for (size_t j = 0; j < k; j++)
		keep[ord[j]] = 1;
	int bad = 0, badacc = 0;
	for (size_t i = 0; i < n; i++) {
		float want = keep[i] ? x[i] : 0.0f;
		if (memcmp(&y[i], &want, 4) != 0 && !(want == 0 && y[i] == 0))
			bad++;
		if (acc[i] != -0.5 * (double)want)
			badacc++;
	}
	T_OK(bad == 0 && badacc == 0, "%s: decode = the k largest |x| of an "
	    "independent full sort, bit-exact, zeros elsewhere (%d wrong); "
	    "axpy adds -0.5 * that (%d wrong)", what, bad, badacc);
	free(p);
	free(y);
	free(acc);
	free(ord);
	free(keep);
	return bad + badacc;
}

static void
test_topk(void)
{
	float *x = make_data(43);
	topk_check_one(x, N, 0.01, "random, 1%");
	topk_check_one(x, N, 0.001, "random, 0.1%");
	topk_check_one(x, N, 1.0, "random, 100% (lossless)");
	/* heavy ties: values in {-2,-1,0,1,2}; ties go to lower indices */
	for (size_t i = 0; i < N; i++)
		x[i] = (float)((int)((i * 7919u) % 5u) - 2);
	topk_check_one(x, N, 0.3, "ties, 30%");
	/* all zero, and -0.0 vs 0.0 */
	memset(x, 0, N * sizeof(float));
	x[10] = -0.0f;
	topk_check_one(x, 1000, 0.01, "all zeros");
	x[0] = 3.0f;
	topk_check_one(x, 1, 0.01, "one element");
	/* every exponent range: subnormals up to FLT_MAX */
	for (size_t i = 0; i < 4096; i++)
		x[i] = ldexpf((i & 1) ? -1.0f : 1.0f, (int)(i % 276) - 149) *
		    (1.0f + (float)(i % 13) / 16.0f);
	x[4095] = 3.4e38f;
	topk_check_one(x, 4096, 0.05, "subnormal..FLT_MAX");
	T_OK(fed_codec_topk_k(1000, 0.01) == 10 &&
	    fed_codec_topk_k(1001, 0.01) == 11 &&
	    fed_codec_topk_k(5, 0.01) == 1 && fed_codec_topk_k(5, 0) == 1 &&
	    fed_codec_topk_k(0, 0.5) == 0 && fed_codec_topk_k(10, 2) == 10,
	    "k = ceil(fraction * n) within [1, n]");
	uint8_t *p;
	size_t len;
	fed_codec_opts o = { .topk_fraction = 1.5 };
	T_OK(fed_codec_encode(FED_CODEC_TOPK, x, 10, NULL, &o, &p, &len) != 0,
	    "fraction 1.5 refused: %s", fs_error());
	o.topk_fraction = -0.1;
	T_OK(fed_codec_encode(FED_CODEC_TOPK, x, 10, NULL, &o, &p, &len) != 0,
	    "fraction -0.1 refused: %s", fs_error());
	x[3] = NAN;
	T_OK(fed_codec_encode(FED_CODEC_TOPK, x, 10, NULL, NULL, &p, &len) != 0,
	    "encode refuses NaN: %s", fs_error());
	T_OK(fed_codec_parse("topk") == FED_CODEC_TOPK &&
	    strcmp(fed_codec_name(4), "topk") == 0, "\"topk\" is codec 4");
	free(x);
}

/* a topk body of k entries: indices then values */
static int
wrap_topk(uint32_t k_hdr, uint64_t count, const uint32_t *idx,
    const float *val, size_t k, uint8_t **w, size_t *wn)
{
	uint8_t td[32], body[8 * 16];
	fed_sha256("table", 5, td);
	for (size_t j = 0; j < k; j++) {
		for (int b = 0; b < 4; b++)
			body[4 * j + b] = (uint8_t)(idx[j] >> (8 * b));
		uint32_t u;
		memcpy(&u, &val[j], 4);
		for (int b = 0; b < 4; b++)
			body[4 * k + 4 * j + b] = (uint8_t)(u >> (8 * b));
	}
	return fed_codec_wrap(FED_CODEC_TOPK, k_hdr, count, td, body, 8 * k,
	    w, wn);
}

static void
test_topk_rejections(void)
{
	uint8_t td[32], *w;
	size_t wn;
	float y[300];
	double acc[300] = { 0 };
	fed_sha256("table", 5, td);
	static const struct {
		const char *what;
		uint32_t idx[3];
		float val[3];
		uint64_t count;
	} bad[] = {
		{ "unsorted indices", { 5, 3, 9 }, { 1, 2, 3 }, 300 },
		{ "duplicate index", { 3, 3, 9 }, { 1, 2, 3 }, 300 },
		{ "index = count", { 3, 4, 300 }, { 1, 2, 3 }, 300 },
		{ "index far out of range", { 3, 4, 0xffffffffu }, { 1, 2, 3 },
		    300 },
		{ "NaN value", { 3, 4, 9 }, { 1, NAN, 3 }, 300 },
		{ "Inf value", { 3, 4, 9 }, { 1, 2, -INFINITY }, 300 },
	};
	for (size_t t = 0; t < sizeof bad / sizeof bad[0]; t++) {
		T_PASS(wrap_topk(3, bad[t].count, bad[t].idx, bad[t].val, 3, &w,
		    &wn));
		T_OK(fed_codec_decode(w, wn, 300, td, y, NULL) != 0,
		    "topk %s refused: %s", bad[t].what, fs_error());
		T_OK(fed_codec_decode_axpy(w, wn, 300, td, 1.0, acc, NULL) != 0
		    && acc[3] == 0 && acc[5] == 0 && acc[9] == 0,
		    "axpy refuses topk %s, accumulator unchanged", bad[t].what);
		free(w);
	}
	uint32_t idx[3] = { 0, 7, 299 };
	float val[3] = { -1.5f, 2.0f, 0.25f };
	/* header says k = 2 but the body holds 3 entries, and the reverse */
	T_PASS(wrap_topk(2, 300, idx, val, 3, &w, &wn));
	T_OK(fed_codec_decode(w, wn, 300, td, y, NULL) != 0,
	    "topk body longer than 8k refused: %s", fs_error());
	free(w);
	T_PASS(wrap_topk(4, 300, idx, val, 3, &w, &wn));
	T_OK(fed_codec_decode(w, wn, 300, td, y, NULL) != 0,
	    "topk body shorter than 8k refused: %s", fs_error());
	free(w);
	/* k > count */
	T_PASS(wrap_topk(3, 2, idx, val, 3, &w, &wn));
	T_OK(fed_codec_decode(w, wn, 2, td, y, NULL) != 0,
	    "topk with k > count refused: %s", fs_error());
	free(w);
	/* a good hand-made payload, then the usual header checks on it */
	T_PASS(wrap_topk(3, 300, idx, val, 3, &w, &wn));
	for (int i = 0; i < 300; i++)
		y[i] = 9.0f;
	T_PASS(fed_codec_decode(w, wn, 300, td, y, NULL));
	int ok = y[0] == -1.5f && y[7] == 2.0f && y[299] == 0.25f;
	for (int i = 0; i < 300; i++)
		if (i != 0 && i != 7 && i != 299 && y[i] != 0.0f)
			ok = 0;
	T_OK(ok, "hand-made topk payload decodes to the dense vector");
	T_PASS(fed_codec_decode_axpy(w, wn, 300, td, 2.0, acc, NULL));
	T_OK(acc[0] == -3.0 && acc[7] == 4.0 && acc[299] == 0.5 &&
	    acc[1] == 0, "topk axpy adds 2 * the kept values");
	T_OK(fed_codec_decode(w, wn, 299, td, y, NULL) != 0,
	    "topk wrong element count refused: %s", fs_error());
	uint8_t other[32];
	fed_sha256("other", 5, other);
	T_OK(fed_codec_decode(w, wn, 300, other, y, NULL) != 0,
	    "topk wrong table digest refused: %s", fs_error());
	T_OK(fed_codec_decode(w, wn - 1, 300, td, y, NULL) != 0,
	    "topk truncated payload refused: %s", fs_error());
	w[FED_CODEC_HEADER_LEN + 4] ^= 1;
	T_OK(fed_codec_decode(w, wn, 300, td, y, NULL) != 0,
	    "topk flipped body bit refused: %s", fs_error());
	free(w);
}

/* ---- error feedback ------------------------------------------------------ */

static double
norm2(const double *v, size_t n)
{
	double s = 0;
	for (size_t i = 0; i < n; i++)
		s += v[i] * v[i];
	return sqrt(s);
}

/* A fixed sequence of deltas (a steady direction plus noise, like local
 * training) sent through topk at 5% for R rounds, with and without error
 * feedback. With it, the sum of what was decoded tracks the sum of the
 * true deltas: the gap equals the residual (checked at every round) and
 * the residual stays bounded while the sums grow, so the relative gap
 * falls; without it, most of the delta is lost for good. */
static void
test_error_feedback(void)
{
	enum { M = 4000, R = 200 };
	uint8_t td[32];
	fed_sha256("table", 5, td);
	float *d = malloc(M * sizeof(float)), *e = calloc(M, sizeof(float));
	float *y = malloc(M * sizeof(float));
	double *st = calloc(M, sizeof(double)), *ss = calloc(M, sizeof(double));
	double *sn = calloc(M, sizeof(double)), *gap = malloc(M * sizeof(double));
	uint64_t s = 99;
	double worst_identity = 0, e_half = 0, e_end = 0, e_max = 0;
	fed_codec_opts o = { .topk_fraction = 0.05 };
	for (int r = 0; r < R; r++) {
		for (size_t i = 0; i < M; i++) {
			s = s * 6364136223846793005ull + 1442695040888963407ull;
			double u = (double)(s >> 11) / 9007199254740992.0 - 0.5;
			double mean = 1e-3 * sin((double)i * 0.37);
			d[i] = (float)(mean + 4e-3 * u);
			st[i] += d[i];
		}
		uint8_t *p = NULL;
		size_t len = 0;
		T_PASS(fed_ef_encode(FED_CODEC_TOPK, d, e, M, td, &o, &p, &len));
		T_PASS(fed_codec_decode(p, len, M, td, y, NULL));
		free(p);
		for (size_t i = 0; i < M; i++)
			ss[i] += y[i];
		/* without error feedback: topk of the delta alone */
		T_PASS(fed_codec_encode(FED_CODEC_TOPK, d, M, td, &o, &p, &len));
		T_PASS(fed_codec_decode(p, len, M, td, y, NULL));
		free(p);
		for (size_t i = 0; i < M; i++)
			sn[i] += y[i];
		double en = 0, id = 0;
		for (size_t i = 0; i < M; i++) {
			gap[i] = st[i] - ss[i];
			id = fmax(id, fabs(gap[i] - e[i]));
			en += (double)e[i] * e[i];
		}
		en = sqrt(en);
		worst_identity = fmax(worst_identity, id);
		e_max = fmax(e_max, en);
		if (r == R / 2 - 1)
			e_half = en;
		if (r == R - 1)
			e_end = en;
	}
	double tot = norm2(st, M);
	for (size_t i = 0; i < M; i++)
		gap[i] = st[i] - ss[i];
	double rel_ef = norm2(gap, M) / tot;
	for (size_t i = 0; i < M; i++)
		gap[i] = st[i] - sn[i];
	double rel_no = norm2(gap, M) / tot;
	T_OK(worst_identity < 1e-5, "every round: sum of true deltas - sum of "
	    "sent = residual (max diff %.2g)", worst_identity);
	T_OK(e_end < 1.5 * e_half && e_max < 0.25 * tot,
	    "residual bounded: |e| %.4f at round %d, %.4f at round %d, max "
	    "%.4f; |sum of deltas| %.4f", e_half, R / 2, e_end, R, e_max, tot);
	T_OK(rel_ef < 0.1 && rel_no > 0.5 && rel_ef < rel_no / 3,
	    "with error feedback the sent sum tracks the true sum (relative "
	    "gap %.3f) ; without it it does not (%.3f)", rel_ef, rel_no);
	free(d);
	free(e);
	free(y);
	free(st);
	free(ss);
	free(sn);
	free(gap);
}

static void
test_ef_file(void)
{
	enum { M = 1000 };
	char dir[] = "/tmp/fed_ef_test.XXXXXX", path[64], bad[80];
	T_OK(mkdtemp(dir) != NULL, "temp dir");
	snprintf(path, sizeof path, "%s/ef.bin", dir);
	float e[M], f[M];
	for (int i = 0; i < M; i++)
		e[i] = (float)sin(i) * 1e-3f;
	fed_ef_meta m = { .codec = FED_CODEC_TOPK, .round = 7, .count = M };
	fed_sha256("table", 5, m.table_digest);
	fed_sha256("payload", 7, m.payload_digest);
	T_PASS(fed_ef_save(path, &m, e));
	fed_ef_meta g;
	memset(f, 0, sizeof f);
	T_PASS(fed_ef_load(path, M, m.table_digest, &g, f));
	T_OK(memcmp(e, f, sizeof e) == 0 && g.round == 7 && g.count == M &&
	    g.codec == FED_CODEC_TOPK &&
	    memcmp(g.payload_digest, m.payload_digest, 32) == 0,
	    "residual file round trip (values, round, codec, digests)");
	T_OK(fed_ef_load(path, M - 1, m.table_digest, &g, f) != 0,
	    "residual of another size refused: %s", fs_error());
	uint8_t other[32];
	fed_sha256("other", 5, other);
	T_OK(fed_ef_load(path, M, other, &g, f) != 0,
	    "residual of another table refused: %s", fs_error());
	uint8_t *b = NULL;
	size_t n = 0;
	T_PASS(fs_read_file(path, 1 << 20, (void **)&b, &n));
	snprintf(bad, sizeof bad, "%s/flip.bin", dir);
	b[FED_EF_HEADER_LEN + 100] ^= 4;
	T_PASS(fs_write_atomic(bad, b, n, 0600));
	T_OK(fed_ef_load(bad, M, m.table_digest, &g, f) != 0,
	    "altered residual refused: %s", fs_error());
	b[FED_EF_HEADER_LEN + 100] ^= 4;
	T_PASS(fs_write_atomic(bad, b, n - 4, 0600));
	T_OK(fed_ef_load(bad, M, m.table_digest, &g, f) != 0,
	    "torn residual refused: %s", fs_error());
	free(b);
	unlink(bad);
	unlink(path);
	rmdir(dir);
}

/* ---- float accumulation (fed_codec_check, fed_codec_decode_axpbyf) ------- */

/* Largest |got - want| / (tiny + mag) over n: the error relative to the
 * magnitude of the terms summed (a sum may cancel). */
static double
rel_err(const float *got, const double *want, const double *mag, size_t n)
{
	double e = 0;
	for (size_t i = 0; i < n; i++)
		e = fmax(e, fabs((double)got[i] - want[i]) / (1e-30 + mag[i]));
	return e;
}

static void
test_axpbyf(void)
{
	uint8_t td[32], *p[4];
	size_t pn[4];
	const int codecs[4] = { FED_CODEC_F32, FED_CODEC_Q8, FED_CODEC_F16,
		FED_CODEC_TOPK };
	fed_sha256("table", 5, td);
	float *x = make_data(11), *a0 = make_data(12);
	float *acc = malloc(N * sizeof(float)), *dec = malloc(N * sizeof(float));
	double *want = malloc(N * sizeof(double));
	double *mag = malloc(N * sizeof(double));
	for (int c = 0; c < 4; c++) {
		const char *nm = fed_codec_name(codecs[c]);
		T_PASS(fed_codec_encode(codecs[c], x, N, td, NULL, &p[c], &pn[c]));
		T_PASS(fed_codec_decode(p[c], pn[c], N, td, dec, NULL));
		/* independent: the decoded values, squared and summed in
		 * index order in double */
		double ss = 0, got = -1;
		for (size_t i = 0; i < N; i++)
			ss += (double)dec[i] * dec[i];
		T_PASS(fed_codec_check(p[c], pn[c], N, td, 0, &got, NULL));
		T_OK(fabs(got - ss) <= 1e-12 * ss, "%s: check's sum of squares "
		    "%.9g = independent %.9g", nm, got, ss);
		/* alpha 1, beta 0 is a plain decode, bit for bit; acc is
		 * not read (NaN there must not show) */
		for (size_t i = 0; i < N; i++)
			acc[i] = NAN;
		T_PASS(fed_codec_decode_axpbyf(p[c], pn[c], N, td, 1.0f, 0.0f,
		    acc, 0, NULL));
		T_OK(memcmp(acc, dec, N * sizeof(float)) == 0, "%s: axpbyf(1, "
		    "0) = fed_codec_decode bit for bit, acc not read", nm);
		/* acc = beta acc + alpha x against the same in double */
		memcpy(acc, a0, N * sizeof(float));
		T_PASS(fed_codec_decode_axpbyf(p[c], pn[c], N, td, 0.3f, 0.7f,
		    acc, 0, NULL));
		for (size_t i = 0; i < N; i++) {
			want[i] = (double)0.7f * a0[i] + (double)0.3f * dec[i];
			mag[i] = fabs((double)0.7f * a0[i]) +
			    fabs((double)0.3f * dec[i]);
		}
		double e = rel_err(acc, want, mag, N);
		T_OK(e < 1e-6, "%s: axpbyf(0.3, 0.7) = independent double sum "
		    "(max err %.2g of the terms' magnitude)", nm, e);
	}
	/* the aggregator's use: a running sample-weighted mean of 3 updates,
	 * against sum(s_i x_i) / sum(s_i) in double */
	float *xs[3] = { x, a0, make_data(13) };
	const double smp[3] = { 120, 7, 33 };
	uint8_t *q[3];
	size_t qn[3];
	double W = 0;
	for (size_t i = 0; i < N; i++)
		want[i] = 0;
	for (int k = 0; k < 3; k++) {
		T_PASS(fed_codec_encode(FED_CODEC_F32, xs[k], N, td, NULL, &q[k],
		    &qn[k]));
		T_PASS(fed_codec_check(q[k], qn[k], N, td,
		    FED_CODEC_BODY_AUTHENTICATED, NULL, NULL));
		double w1 = W + smp[k];
		T_PASS(fed_codec_decode_axpbyf(q[k], qn[k], N, td,
		    (float)(smp[k] / w1), (float)(W / w1), acc,
		    FED_CODEC_PRECHECKED, NULL));
		W = w1;
		for (size_t i = 0; i < N; i++)
			want[i] += smp[k] * xs[k][i];
	}
	for (size_t i = 0; i < N; i++) {
		want[i] /= W;
		/* relative to the inputs' magnitude: a mean may cancel */
		mag[i] = 0;
		for (int k = 0; k < 3; k++)
			mag[i] = fmax(mag[i], fabs((double)xs[k][i]));
	}
	double emax = rel_err(acc, want, mag, N);
	T_OK(emax < 1e-6, "running weighted mean of 3 f32 updates = "
	    "sum(s x) / sum(s) in double (max err %.2g of max |x|)", emax);
	for (int k = 0; k < 3; k++)
		free(q[k]);
	free(xs[2]);

	/* corrupted payloads: refused, acc unchanged */
	float *keep = malloc(N * sizeof(float));
	memcpy(acc, a0, N * sizeof(float));
	memcpy(keep, acc, N * sizeof(float));
	p[0][FED_CODEC_HEADER_LEN + 4 * 777 + 1] ^= 0x10; /* hash now stale */
	T_OK(fed_codec_decode_axpbyf(p[0], pn[0], N, td, 0.5f, 0.5f, acc, 0,
	    NULL) != 0 && memcmp(acc, keep, N * sizeof(float)) == 0,
	    "f32 body bit flipped: refused (%s), acc unchanged", fs_error());
	T_OK(fed_codec_check(p[0], pn[0], N, td, FED_CODEC_BODY_AUTHENTICATED,
	    NULL, NULL) == 0, "with FED_CODEC_BODY_AUTHENTICATED the body "
	    "SHA-256 is not computed (the caller's digest covers it)");
	float *bad = malloc(N * sizeof(float));
	uint8_t *w;
	size_t wn;
	memcpy(bad, x, N * sizeof(float));
	bad[N - 3] = NAN; /* in the scalar tail of the last block */
	bad[4100] = INFINITY;
	T_PASS(fed_codec_wrap(FED_CODEC_F32, 0, N, td, bad, N * sizeof(float),
	    &w, &wn));
	for (unsigned fl = 0; fl <= FED_CODEC_BODY_AUTHENTICATED; fl++)
		T_OK(fed_codec_decode_axpbyf(w, wn, N, td, 0.5f, 0.5f, acc, fl,
		    NULL) != 0 && strstr(fs_error(), "4100") != NULL &&
		    memcmp(acc, keep, N * sizeof(float)) == 0,
		    "Inf in an f32 body (flags %u): refused (%s), acc "
		    "unchanged", fl, fs_error());
	free(w);
	bad[4100] = x[4100];
	T_PASS(fed_codec_wrap(FED_CODEC_F32, 0, N, td, bad, N * sizeof(float),
	    &w, &wn));
	T_OK(fed_codec_check(w, wn, N, td, 0, NULL, NULL) != 0 &&
	    strstr(fs_error(), "NaN") != NULL, "NaN in the tail refused: %s",
	    fs_error());
	free(w);
	/* q8: code -128 and an overflowing scale, with correct hashes */
	memcpy(bad, x, N * sizeof(float));
	T_PASS(fed_codec_encode(FED_CODEC_Q8, bad, N, td, NULL, &w, &wn));
	uint8_t *body = malloc(wn - FED_CODEC_HEADER_LEN), *w2;
	size_t w2n;
	memcpy(body, w + FED_CODEC_HEADER_LEN, wn - FED_CODEC_HEADER_LEN);
	body[4 + 50] = 0x80; /* chunk 0, element 50: -128 */
	T_PASS(fed_codec_wrap(FED_CODEC_Q8, 256, N, td, body,
	    wn - FED_CODEC_HEADER_LEN, &w2, &w2n));
	T_OK(fed_codec_decode_axpbyf(w2, w2n, N, td, 1.0f, 1.0f, acc, 0,
	    NULL) != 0 && memcmp(acc, keep, N * sizeof(float)) == 0,
	    "q8 code -128: refused (%s), acc unchanged", fs_error());
	free(w2);
	body[4 + 50] = 1;
	float big = 3e38f; /* 127 * scale overflows; code 1 does not */
	memcpy(body + 260, &big, 4);
	memset(body + 264, 0, 256);
	T_PASS(fed_codec_wrap(FED_CODEC_Q8, 256, N, td, body,
	    wn - FED_CODEC_HEADER_LEN, &w2, &w2n));
	T_OK(fed_codec_check(w2, w2n, N, td, 0, NULL, NULL) == 0,
	    "q8 scale 3e38 with codes 0: every value finite, accepted");
	body[264 + 9] = 2; /* 2 * 3e38 = Inf */
	free(w2);
	T_PASS(fed_codec_wrap(FED_CODEC_Q8, 256, N, td, body,
	    wn - FED_CODEC_HEADER_LEN, &w2, &w2n));
	T_OK(fed_codec_decode_axpbyf(w2, w2n, N, td, 1.0f, 1.0f, acc, 0,
	    NULL) != 0 && memcmp(acc, keep, N * sizeof(float)) == 0,
	    "q8 value 2 x 3e38: refused (%s), acc unchanged", fs_error());
	T_OK(fed_codec_decode_axpbyf(w2, w2n, N - 1, td, 1.0f, 1.0f, acc,
	    FED_CODEC_PRECHECKED, NULL) != 0, "PRECHECKED still refuses a "
	    "wrong element count: %s", fs_error());
	free(w2);
	free(w);
	free(body);
	free(bad);
	free(keep);
	for (int c = 0; c < 4; c++)
		free(p[c]);
	free(x);
	free(a0);
	free(acc);
	free(dec);
	free(want);
	free(mag);
}

int
main(void)
{
	test_f16_scalar();
	test_codecs();
	test_stochastic_unbiased();
	test_rejections();
	test_topk();
	test_topk_rejections();
	test_error_feedback();
	test_ef_file();
	test_axpbyf();
	T_DONE();
}
