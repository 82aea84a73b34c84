/* bench_agg.c - (3) streaming FedAvg of K updates of N parameters through
 * the aggregator's own code (linked from fedseg_aggregator and fedseg_fed,
 * not re-implemented), as GB/s over memcpy of the same bytes measured in the
 * same run; and (5) the delta codecs (fed/codec.h): bytes, encode and
 * decode speed against f32, and reconstruction error.
 *
 * usage: bench_agg [--quick] [--repeats N] [--params N] [--updates K]
 * Prints flat JSON lines (bench_util.h). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg_impl.h"
#include "base.h"
#include "bench_util.h"
#include "codec.h"
#include "crypto.h"

#define MAXR 50

/* Deterministic pseudo-Gaussian deltas (sum of uniforms), scale ~1e-3
 * like a few local Adam steps. */
static void fill_delta(float *x, size_t n, uint64_t seed)
{
	uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
	for (size_t i = 0; i < n; i++) {
		uint32_t a, b;
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		a = (uint32_t)s, b = (uint32_t)(s >> 32);
		x[i] = 1e-3f * ((float)a / 4294967296.0f + (float)b / 4294967296.0f - 1.0f) * 2.45f;
	}
}

/* A private agg holding only what the FedAvg path touches. */
static agg *agg_for_bench(size_t n)
{
	agg *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return NULL;
	a->cfg = agg_config_default();
	a->n = n;
	a->rule = AGG_RULE_FEDAVG;
	a->opt = AGG_OPT_NONE;
	a->round = 1;
	a->acc = calloc(n, sizeof(double));
	a->global = calloc(n, sizeof(float)); /* agg_combine: w = global + step */
	if (a->acc == NULL || a->global == NULL) {
		free(a->acc);
		free(a->global);
		free(a);
		return NULL;
	}
	return a;
}

static void agg_bench_free(agg *a)
{
	free(a->acc);
	free(a->global);
	free(a->contrib);
	free(a);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"quick", no_argument, 0, 'q'}, {"repeats", required_argument, 0, 'r'},
	    {"params", required_argument, 0, 'p'},
	    {"updates", required_argument, 0, 'k'},
	    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	int repeats = 5, K = 16, quick = 0, c;
	size_t n = 20000000;
	char note[1024];
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'q')
			quick = 1;
		else if (c == 'r')
			repeats = atoi(optarg);
		else if (c == 'p')
			n = (size_t)atoll(optarg);
		else if (c == 'k')
			K = atoi(optarg);
		else {
			fprintf(c == 'h' ? stdout : stderr, "usage: bench_agg "
			    "[--quick] [--repeats N] [--params N] [--updates K]\n");
			return c == 'h' ? 0 : 2;
		}
	}
	if (quick) {
		n = 1000000;
		K = 4;
		if (repeats > 2)
			repeats = 2;
	}
	if (repeats < 1 || repeats > MAXR || K < 1 || n < 1000) {
		fprintf(stderr, "bench_agg: bad --repeats/--updates/--params\n");
		return 2;
	}
	uint8_t td[32];
	fed_sha256("bench table", 11, td);
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
	float *w = calloc(n, sizeof(float)), *dst = malloc(n * sizeof(float));
	uint8_t **pl = calloc((size_t)K, sizeof(*pl));
	size_t *pn = calloc((size_t)K, sizeof(*pn));
	if (!x || !y || !w || !dst || !pl || !pn) {
		fprintf(stderr, "bench_agg: out of memory\n");
		return 1;
	}
	double bytes = (double)K * n * sizeof(float);
	double tm[MAXR], ta[MAXR], tf[MAXR], tx[MAXR], r1[MAXR], r2[MAXR], r3[MAXR];

	/* K f32 payloads, as they arrive at the aggregator (made untimed). */
	for (int k = 0; k < K; k++) {
		fill_delta(x, n, (uint64_t)k + 1);
		if (fed_codec_encode(FED_CODEC_F32, x, n, td, NULL, &pl[k], &pn[k]) != 0) {
			fprintf(stderr, "bench_agg: %s\n", fs_error());
			return 1;
		}
	}
	/* Decoded deltas for the accumulate-only figure: one buffer reused,
	 * refilled from the payload untimed (K*N floats would not fit RSS). */
	for (int r = 0; r < repeats; r++) {
		/* baseline: memcpy of the same bytes (K x N floats) */
		double t0 = fs_now();
		for (int k = 0; k < K; k++)
			memcpy(k % 2 ? dst : y, k % 2 ? y : x, n * sizeof(float));
		tm[r] = fs_now() - t0;

		/* (a) the aggregator's accumulate (agg_contrib_add) + combine */
		agg *a = agg_for_bench(n);
		Fedseg__Update u = FEDSEG__UPDATE__INIT;
		uint8_t dg[32] = {0};
		agg_node nd;
		memset(&nd, 0, sizeof(nd));
		snprintf(nd.cn, sizeof(nd.cn), "bench");
		u.payload_digest = (ProtobufCBinaryData){32, dg};
		ta[r] = 0;
		for (int k = 0; k < K; k++) {
			memcpy(x, pl[k] + FED_CODEC_HEADER_LEN, n * sizeof(float));
			u.sample_count = 10 + (uint64_t)k;
			u.payload.len = pn[k];
			t0 = fs_now();
			agg_contrib_add(a, &nd, &u, x, 1.0, "bench");
			ta[r] += fs_now() - t0;
		}
		t0 = fs_now();
		if (agg_combine(a, w) != 0) {
			fprintf(stderr, "bench_agg: %s\n", fs_error());
			return 1;
		}
		ta[r] += fs_now() - t0;
		agg_bench_free(a);

		/* (b) the whole accept path the aggregator runs per update today
		 * (agg_update_payload_check minus the ECDSA check, then
		 * agg_contrib_add): payload digest, decode (header, body SHA-256,
		 * finiteness), norm, accumulate; then combine. */
		a = agg_for_bench(n);
		t0 = fs_now();
		for (int k = 0; k < K; k++) {
			double ss = 0;
			fed_sha256(pl[k], pn[k], dg);
			if (fed_codec_decode(pl[k], pn[k], n, td, x, NULL) != 0) {
				fprintf(stderr, "bench_agg: %s\n", fs_error());
				return 1;
			}
			for (size_t i = 0; i < n; i++)
				ss += (double)x[i] * (double)x[i];
			u.sample_count = 10 + (uint64_t)k;
			agg_contrib_add(a, &nd, &u, x, sqrt(ss), "bench");
		}
		agg_combine(a, w);
		tf[r] = fs_now() - t0;
		agg_bench_free(a);

		/* (c) streaming decode-and-accumulate (fed_codec_decode_axpy:
		 * no float copy of the delta) into a double accumulator */
		double *acc = calloc(n, sizeof(double));
		t0 = fs_now();
		for (int k = 0; k < K; k++)
			if (fed_codec_decode_axpy(pl[k], pn[k], n, td,
			    10.0 + k, acc, NULL) != 0) {
				fprintf(stderr, "bench_agg: %s\n", fs_error());
				return 1;
			}
		tx[r] = fs_now() - t0;
		free(acc);
		r1[r] = tm[r] / ta[r];
		r2[r] = tm[r] / tf[r];
		r3[r] = tm[r] / tx[r];
	}
	bstat sm = bench_stat(tm, repeats), sa = bench_stat(ta, repeats);
	bstat sf = bench_stat(tf, repeats), sx = bench_stat(tx, repeats);
	bstat q1 = bench_stat(r1, repeats), q2 = bench_stat(r2, repeats);
	bstat q3 = bench_stat(r3, repeats);
	snprintf(note, sizeof(note), "%d updates x %zu params (%.0f MB each); "
	    "agg_contrib_add + agg_combine from fedseg_aggregator, double "
	    "accumulator; %.2f GB/s vs memcpy %.2f GB/s (medians)", K, n,
	    n * 4 / 1e6, bytes / sa.median / 1e9, bytes / sm.median / 1e9);
	bench_emit("fedavg_accumulate", "FedAvg accumulate + combine (aggregator code)",
	    "s", sa, "memcpy of the same bytes", sm, q1.median,
	    "memcpy seconds / FedAvg seconds = GB/s over memcpy GB/s", 0.5, 1, note);
	snprintf(note, sizeof(note), "per update: SHA-256 of the payload, "
	    "fed_codec_decode (header, body SHA-256, finite check), L2 norm, "
	    "agg_contrib_add; then agg_combine. ECDSA verify and spool write "
	    "excluded. %.2f GB/s (median)", bytes / sf.median / 1e9);
	bench_emit("fedavg_accept_path", "FedAvg incl. digest + decode per update",
	    "s", sf, "memcpy of the same bytes", sm, q2.median,
	    "memcpy seconds / path seconds", -1, 1, note);
	snprintf(note, sizeof(note), "fed_codec_decode_axpy (body SHA-256 + "
	    "finite check + axpy into double, no float copy): %.2f GB/s (median)",
	    bytes / sx.median / 1e9);
	bench_emit("fedavg_decode_axpy", "streaming decode+accumulate (fed_codec_decode_axpy)",
	    "s", sx, "memcpy of the same bytes", sm, q3.median,
	    "memcpy seconds / path seconds", -1, 1, note);
	for (int k = 0; k < K; k++)
		free(pl[k]);

	/* (5) codecs on one delta of n floats. */
	enum { NC = 4 };
	const int codecs[NC] = {FED_CODEC_F32, FED_CODEC_F16, FED_CODEC_Q8,
	    FED_CODEC_TOPK};
	double te[NC][MAXR], tdc[NC][MAXR], err[NC] = {0};
	size_t cb[NC] = {0};
	fill_delta(x, n, 99);
	for (int r = 0; r < repeats; r++)
		for (int ci = 0; ci < NC; ci++) {
			uint8_t *p = NULL;
			size_t len = 0;
			double t0 = fs_now();
			if (fed_codec_encode(codecs[ci], x, n, td, NULL, &p, &len) != 0) {
				fprintf(stderr, "bench_agg: %s\n", fs_error());
				return 1;
			}
			te[ci][r] = fs_now() - t0;
			t0 = fs_now();
			if (fed_codec_decode(p, len, n, td, y, NULL) != 0) {
				fprintf(stderr, "bench_agg: %s\n", fs_error());
				return 1;
			}
			tdc[ci][r] = fs_now() - t0;
			cb[ci] = len;
			if (r == 0) {
				double e2 = 0, x2 = 0;
				for (size_t i = 0; i < n; i++) {
					double d = (double)y[i] - x[i];
					e2 += d * d;
					x2 += (double)x[i] * x[i];
				}
				err[ci] = sqrt(e2 / x2);
			}
			free(p);
		}
	bstat e32 = bench_stat(te[0], repeats), d32 = bench_stat(tdc[0], repeats);
	for (int ci = 0; ci < NC; ci++) {
		bstat es = ci ? bench_stat(te[ci], repeats) : e32;
		bstat ds = ci ? bench_stat(tdc[ci], repeats) : d32;
		bstat bs = {(double)cb[ci], (double)cb[ci], (double)cb[ci], 1};
		bstat b32 = {(double)cb[0], (double)cb[0], (double)cb[0], 1};
		char fig[128], bn[32];
		const char *nm = fed_codec_name(codecs[ci]);
		snprintf(bn, sizeof(bn), "codec_%s_bytes", nm);
		snprintf(fig, sizeof(fig), "%s payload bytes, %zu-float delta", nm, n);
		snprintf(note, sizeof(note), "relative L2 reconstruction error "
		    "%.2e%s; encode %.2f GB/s, decode %.2f GB/s of f32 input (medians)",
		    err[ci], codecs[ci] == FED_CODEC_TOPK ? " (k = 1% of the "
		    "floats; one round, before error feedback carries the rest)" :
		    "", n * 4 / es.median / 1e9, n * 4 / ds.median / 1e9);
		bench_emit(bn, fig, "bytes", bs, "f32 payload bytes", b32,
		    (double)cb[ci] / cb[0], "bytes / f32 bytes",
		    codecs[ci] == FED_CODEC_Q8 ? 0.26 : -1, 0, note);
		snprintf(bn, sizeof(bn), "codec_%s_encode", nm);
		snprintf(fig, sizeof(fig), "%s encode (incl. SHA-256)", nm);
		bench_emit(bn, fig, "s", es, "f32 encode", e32,
		    e32.median / es.median, "f32 seconds / codec seconds", -1, 1, "");
		snprintf(bn, sizeof(bn), "codec_%s_decode", nm);
		snprintf(fig, sizeof(fig), "%s decode (incl. SHA-256, finite check)", nm);
		bench_emit(bn, fig, "s", ds, "f32 decode", d32,
		    d32.median / ds.median, "f32 seconds / codec seconds", -1, 1, "");
	}
	free(x), free(y), free(w), free(dst), free(pl), free(pn);
	return 0;
}
