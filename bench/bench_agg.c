/* bench_agg.c - (3) streaming FedAvg of K updates of N parameters through
 * the aggregator's own code (linked from fedseg_aggregator and fedseg_fed,
 * not re-implemented), as GB/s over memcpy of the same bytes measured in the
 * same run; and (5) the delta codecs (fed/codec.h): bytes, encode and
 * decode speed against f32, and reconstruction error.
 *
 * The streaming figure (fedavg_stream_rss) measures memory, not time: a
 * forked child (fresh VmHWM) reads K update payloads one at a time from
 * files written beforehand (as the aggregator's spool holds them), checks
 * and accumulates each through agg_payload_check / agg_contrib_add, frees
 * it, and combines; its VmHWM is compared with 3 x model + 64 MiB, for
 * K = 4 and 16 (it must not grow with K).
 *
 * usage: bench_agg [--quick] [--repeats N] [--params N] [--updates K]
 * Prints flat JSON lines (bench_util.h). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* A private agg holding only what the FedAvg path touches. Its float
 * accumulator is faulted in here, untimed: the aggregator allocates it
 * once at start and reuses it every round. */
static agg *agg_for_bench(size_t n, const uint8_t td[32])
{
	agg *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return NULL;
	a->cfg = agg_config_default();
	a->n = n;
	a->rule = AGG_RULE_FEDAVG;
	a->opt = AGG_OPT_NONE;
	a->round = 1;
	memcpy(a->table_digest, td, 32);
	a->acc = malloc(n * sizeof(float));
	a->global = calloc(n, sizeof(float)); /* agg_combine: w = global + step */
	if (a->acc == NULL || a->global == NULL) {
		free(a->acc);
		free(a->global);
		free(a);
		return NULL;
	}
	memset(a->acc, 0, n * sizeof(float));
	return a;
}

static void agg_bench_free(agg *a)
{
	free(a->acc);
	free(a->global);
	free(a->contrib);
	free(a);
}

static long proc_self_kb(const char *key)
{
	char line[256];
	long v = -1;
	size_t kl = strlen(key);
	FILE *f = fopen("/proc/self/status", "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
			v = atol(line + kl + 1);
			break;
		}
	fclose(f);
	return v;
}

/* The child of stream_rss: K payload files -> checked -> accumulated ->
 * freed, one at a time; then agg_combine. Writes its VmHWM (KiB) to fd. */
static int stream_child(const char *dir, int K, size_t n, const uint8_t td[32],
    uint8_t (*dg)[32], int fd)
{
	char p[4096];
	agg *a = agg_for_bench(n, td);
	agg_node nd;
	memset(&nd, 0, sizeof(nd));
	snprintf(nd.cn, sizeof(nd.cn), "bench");
	if (a == NULL)
		return 1;
	/* a resident global, as in the aggregator (calloc's untouched zero
	 * pages would not count in RSS) */
	fill_delta(a->global, n, 12345);
	for (int k = 0; k < K; k++) {
		void *buf = NULL;
		size_t len = 0;
		double norm = 0;
		Fedseg__Update u = FEDSEG__UPDATE__INIT;
		snprintf(p, sizeof(p), "%s/u%02d.payload", dir, k);
		if (fs_read_file(p, n * sizeof(float) + 4096, &buf, &len) != 0)
			return 1;
		u.payload = (ProtobufCBinaryData){len, buf};
		u.payload_digest = (ProtobufCBinaryData){32, dg[k]};
		u.sample_count = 10 + (uint64_t)k;
		if (agg_payload_check(a, &u, &norm) != 0 ||
		    agg_contrib_add(a, &nd, &u, norm, "bench") != 0)
			return 1;
		free(buf);
	}
	float *w = malloc(n * sizeof(float));
	if (w == NULL || agg_combine(a, w) != 0)
		return 1;
	/* touch the result so that it is resident like the aggregator's */
	volatile float sink = w[n / 2];
	(void)sink;
	free(w);
	agg_bench_free(a);
	long h = proc_self_kb("VmHWM");
	return write(fd, &h, sizeof(h)) == (ssize_t)sizeof(h) ? 0 : 1;
}

/* Forks a child for K updates; its VmHWM in KiB, or -1. */
static long stream_rss_run(const char *dir, int K, size_t n,
    const uint8_t td[32], uint8_t (*dg)[32])
{
	int fds[2];
	long h = -1;
	if (pipe(fds) != 0)
		return -1;
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(fds[0]);
		int rv = stream_child(dir, K, n, td, dg, fds[1]);
		if (rv != 0)
			fprintf(stderr, "bench_agg: stream child: %s\n",
			    fs_error());
		_exit(rv);
	}
	close(fds[1]);
	if (read(fds[0], &h, sizeof(h)) != (ssize_t)sizeof(h))
		h = -1;
	close(fds[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? h : -1;
}

/* (3) fedavg_stream_rss: runs before anything model-sized is allocated
 * here, so the forked child starts small (its VmHWM counts what it
 * inherits as it touches it). */
static int stream_rss(size_t n, const uint8_t td[32])
{
	enum { KMAX = 16 };
	static const int ks[2] = {4, KMAX};
	char dir[] = "/tmp/bench_agg_spool.XXXXXX", p[4096], note[1024];
	uint8_t (*dg)[32] = calloc(KMAX, 32);
	float *x = malloc(n * sizeof(float));
	int rv = -1;
	if (dg == NULL || x == NULL || mkdtemp(dir) == NULL)
		goto out;
	for (int k = 0; k < KMAX; k++) {
		uint8_t *pl = NULL;
		size_t len = 0;
		fill_delta(x, n, (uint64_t)k + 1);
		if (fed_codec_encode(FED_CODEC_F32, x, n, td, NULL, &pl, &len) != 0)
			goto out;
		fed_sha256(pl, len, dg[k]);
		snprintf(p, sizeof(p), "%s/u%02d.payload", dir, k);
		int e = fs_write_atomic(p, pl, len, 0600);
		free(pl);
		if (e != 0)
			goto out;
	}
	free(x);
	x = NULL;
	long h[2];
	for (int i = 0; i < 2; i++)
		if ((h[i] = stream_rss_run(dir, ks[i], n, td, dg)) < 0) {
			fprintf(stderr, "bench_agg: stream child for %d updates "
			    "failed\n", ks[i]);
			goto out;
		}
	double model = n * 4.0 / 1048576.0, lim = 3 * model + 64;
	for (int i = 0; i < 2; i++) {
		char bn[64], fig[160];
		double mib = h[i] / 1024.0;
		bstat v = {mib, mib, mib, 1}, b = {lim, lim, lim, 1};
		snprintf(bn, sizeof(bn), "fedavg_stream_rss_%d", ks[i]);
		snprintf(fig, sizeof(fig), "FedAvg peak RSS, %d updates streamed "
		    "from spool files", ks[i]);
		snprintf(note, sizeof(note), "forked child (fresh VmHWM): %d f32 "
		    "payload files of %zu floats (model %.1f MiB) read one at a "
		    "time, agg_payload_check + agg_contrib_add into the float "
		    "accumulator, freed; then agg_combine into a new model. Holds "
		    "global + accumulator + one payload (or the new model). "
		    "VmHWM %.1f MiB with 4 updates, %.1f MiB with 16", ks[i], n,
		    model, h[0] / 1024.0, h[1] / 1024.0);
		bench_emit(bn, fig, "MiB", v, "3 x model + 64 MiB", b, mib / lim,
		    "VmHWM / (3 x model + 64 MiB)", 1.0, 0, note);
	}
	rv = 0;
out:
	for (int k = 0; k < KMAX; k++) {
		snprintf(p, sizeof(p), "%s/u%02d.payload", dir, k);
		unlink(p);
	}
	rmdir(dir);
	free(x);
	free(dg);
	return rv;
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
	if (stream_rss(n, td) != 0) {
		fprintf(stderr, "bench_agg: streaming RSS figure: %s\n",
		    fs_error());
		return 1;
	}
	float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
	float *w = calloc(n, sizeof(float)), *dst = malloc(n * sizeof(float));
	uint8_t **pl = calloc((size_t)K, sizeof(*pl));
	size_t *pn = calloc((size_t)K, sizeof(*pn));
	uint8_t (*pd)[32] = calloc((size_t)K, 32);
	if (!x || !y || !w || !dst || !pl || !pn || !pd) {
		fprintf(stderr, "bench_agg: out of memory\n");
		return 1;
	}
	double bytes = (double)K * n * sizeof(float);
	double tm[MAXR], ta[MAXR], tf[MAXR], tx[MAXR], tz[MAXR];
	double r1[MAXR], r2[MAXR], r3[MAXR], r4[MAXR];

	/* K f32 payloads, as they arrive at the aggregator (made untimed). */
	for (int k = 0; k < K; k++) {
		fill_delta(x, n, (uint64_t)k + 1);
		if (fed_codec_encode(FED_CODEC_F32, x, n, td, NULL, &pl[k], &pn[k]) != 0) {
			fprintf(stderr, "bench_agg: %s\n", fs_error());
			return 1;
		}
		fed_sha256(pl[k], pn[k], pd[k]); /* the Update's signed digest */
	}
	for (int r = 0; r < repeats; r++) {
		/* baseline: memcpy of the same bytes (K x N floats) */
		double t0 = fs_now();
		for (int k = 0; k < K; k++)
			memcpy(k % 2 ? dst : y, k % 2 ? y : x, n * sizeof(float));
		tm[r] = fs_now() - t0;

		/* (a) the aggregator's accumulate (agg_contrib_add straight
		 * from each checked payload into the float running mean) +
		 * combine */
		agg *a = agg_for_bench(n, td);
		Fedseg__Update u = FEDSEG__UPDATE__INIT;
		agg_node nd;
		memset(&nd, 0, sizeof(nd));
		snprintf(nd.cn, sizeof(nd.cn), "bench");
		ta[r] = 0;
		for (int k = 0; k < K; k++) {
			u.payload = (ProtobufCBinaryData){pn[k], pl[k]};
			u.payload_digest = (ProtobufCBinaryData){32, pd[k]};
			u.sample_count = 10 + (uint64_t)k;
			t0 = fs_now();
			if (agg_contrib_add(a, &nd, &u, 1.0, "bench") != 0) {
				fprintf(stderr, "bench_agg: %s\n", fs_error());
				return 1;
			}
			ta[r] += fs_now() - t0;
		}
		t0 = fs_now();
		if (agg_combine(a, w) != 0) {
			fprintf(stderr, "bench_agg: %s\n", fs_error());
			return 1;
		}
		ta[r] += fs_now() - t0;
		agg_bench_free(a);

		/* (b) the whole accept path the aggregator runs per update
		 * (agg_update_payload_check minus the ECDSA check, i.e.
		 * agg_payload_check, then agg_contrib_add): payload digest,
		 * codec checks + norm in one pass, accumulate; then combine. */
		a = agg_for_bench(n, td);
		t0 = fs_now();
		for (int k = 0; k < K; k++) {
			double norm = 0;
			u.payload = (ProtobufCBinaryData){pn[k], pl[k]};
			u.payload_digest = (ProtobufCBinaryData){32, pd[k]};
			u.sample_count = 10 + (uint64_t)k;
			if (agg_payload_check(a, &u, &norm) != 0 ||
			    agg_contrib_add(a, &nd, &u, norm, "bench") != 0) {
				fprintf(stderr, "bench_agg: %s\n", fs_error());
				return 1;
			}
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

		/* (d) the float variant with every check of its own (body
		 * SHA-256 included), as a stand-alone caller would use it */
		memset(y, 0, n * sizeof(float));
		t0 = fs_now();
		for (int k = 0; k < K; k++)
			if (fed_codec_decode_axpbyf(pl[k], pn[k], n, td,
			    1.0f / (float)(k + 1), (float)k / (float)(k + 1), y, 0,
			    NULL) != 0) {
				fprintf(stderr, "bench_agg: %s\n", fs_error());
				return 1;
			}
		tz[r] = fs_now() - t0;
		r1[r] = tm[r] / ta[r];
		r2[r] = tm[r] / tf[r];
		r3[r] = tm[r] / tx[r];
		r4[r] = tm[r] / tz[r];
	}
	bstat sm = bench_stat(tm, repeats), sa = bench_stat(ta, repeats);
	bstat sf = bench_stat(tf, repeats), sx = bench_stat(tx, repeats);
	bstat q1 = bench_stat(r1, repeats), q2 = bench_stat(r2, repeats);
	bstat q3 = bench_stat(r3, repeats), sz = bench_stat(tz, repeats);
	bstat q4 = bench_stat(r4, repeats);
	snprintf(note, sizeof(note), "%d updates x %zu params (%.0f MB each); "
	    "agg_contrib_add (from the payload, float running mean) + "
	    "agg_combine from fedseg_aggregator; %.2f GB/s vs memcpy %.2f GB/s "
	    "(medians)", K, n,
	    n * 4 / 1e6, bytes / sa.median / 1e9, bytes / sm.median / 1e9);
	bench_emit("fedavg_accumulate", "FedAvg accumulate + combine (aggregator code)",
	    "s", sa, "memcpy of the same bytes", sm, q1.median,
	    "memcpy seconds / FedAvg seconds = GB/s over memcpy GB/s", 0.5, 1, note);
	snprintf(note, sizeof(note), "per update: agg_payload_check (SHA-256 "
	    "of the payload = the signed digest, then fed_codec_check: header, "
	    "finite check and L2 norm in one pass, body not hashed again), "
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
	snprintf(note, sizeof(note), "fed_codec_decode_axpbyf, flags 0 (body "
	    "SHA-256 + finite check, then acc = beta acc + alpha x in float): "
	    "%.2f GB/s (median)", bytes / sz.median / 1e9);
	bench_emit("fedavg_decode_axpbyf", "streaming decode+accumulate, float "
	    "(fed_codec_decode_axpbyf, all checks)", "s", sz,
	    "memcpy of the same bytes", sm, q4.median,
	    "memcpy seconds / path seconds", -1, 1, note);
	for (int k = 0; k < K; k++)
		free(pl[k]);
	free(pd);

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
