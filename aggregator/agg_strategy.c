/*
 * agg_strategy.c - how a round's updates become the next global model.
 *
 * 1. Each update may be clipped to an L2 norm (clip_norm): its delta is
 *    scaled by min(1, clip_norm / ||delta||) before anything else.
 * 2. Rule (strategy):
 *    - fedavg: sum(samples_i * delta_i) / sum(samples_i), streamed as
 *      updates arrive straight from each payload into one float running
 *      weighted mean (agg_contrib_add; O(model) memory, no decoded copy);
 *    - median: coordinate-wise median of the deltas (unweighted);
 *    - trimmed_mean: per coordinate, drop the floor(trim_fraction * K)
 *      largest and smallest of the K values, average the rest (unweighted).
 *    The robust rules need every update of the round at once: they read
 *    the spooled decoded deltas (spool/round-NNNN/<name>.f32) in blocks of
 *    BLOCK coordinates, so memory is O(model) for the result plus
 *    K * BLOCK floats, never K * model.
 * 3. Server optimiser on the combined delta g (Reddi et al., "Adaptive
 *    Federated Optimization", 2021; no bias correction):
 *    - none:    w += server_lr * g
 *    - fedavgm: m = momentum * m + g;              w += server_lr * m
 *    - fedadam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *               w += server_lr * m / (sqrt(v) + tau)
 *    - fedyogi: as fedadam but v -= (1-b2) g^2 sign(v - g^2)
 *    m and v start at 0 and are written with every model
 *    (server/opt-NNNN.bin, digest in the ledger) so a restart continues
 *    with exactly the same state.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agg_impl.h"
#include "base.h"

#define BLOCK 16384
#define OPT_MAGIC "FSOS"
#define OPT_HDR 24

int
agg_strategy_parse(agg *a)
{
	const char *r = a->cfg.strategy, *o = a->cfg.server_optimizer;
	a->rule = strcmp(r, "median") == 0 ? AGG_RULE_MEDIAN :
	    strcmp(r, "trimmed_mean") == 0 ? AGG_RULE_TRIMMED : AGG_RULE_FEDAVG;
	a->opt = strcmp(o, "fedavgm") == 0 ? AGG_OPT_FEDAVGM :
	    strcmp(o, "fedadam") == 0 ? AGG_OPT_FEDADAM :
	    strcmp(o, "fedyogi") == 0 ? AGG_OPT_FEDYOGI : AGG_OPT_NONE;
	if (a->opt != AGG_OPT_NONE) {
		a->opt_m = calloc(a->n, sizeof(float));
		a->opt_v = calloc(a->n, sizeof(float));
		if (a->opt_m == NULL || a->opt_v == NULL)
			return fs_seterr("out of memory (optimiser state)");
	}
	return 0;
}

void
agg_strategy_text(const agg *a, char *buf, size_t n)
{
	size_t k = (size_t)snprintf(buf, n, "%s", a->cfg.strategy);
	if (a->rule == AGG_RULE_TRIMMED && k < n)
		k += (size_t)snprintf(buf + k, n - k, "(%g)",
		    a->cfg.trim_fraction);
	if (a->cfg.clip_norm > 0 && k < n)
		k += (size_t)snprintf(buf + k, n - k, "+clip(%g)",
		    a->cfg.clip_norm);
	if (a->cfg.train_prox_mu > 0 && k < n)
		k += (size_t)snprintf(buf + k, n - k, "+fedprox(%g)",
		    a->cfg.train_prox_mu);
	if (a->opt == AGG_OPT_FEDAVGM && k < n)
		snprintf(buf + k, n - k, "+fedavgm(lr=%g,momentum=%g)",
		    a->cfg.server_lr, a->cfg.server_momentum);
	else if (a->opt != AGG_OPT_NONE && k < n)
		snprintf(buf + k, n - k, "+%s(lr=%g,b1=%g,b2=%g,tau=%g)",
		    a->cfg.server_optimizer, a->cfg.server_lr, a->cfg.beta1,
		    a->cfg.beta2, a->cfg.tau);
	else if (a->cfg.server_lr != 1.0 && k < n)
		snprintf(buf + k, n - k, "+lr(%g)", a->cfg.server_lr);
}

static int
cmp_float(const void *x, const void *y)
{
	float a = *(const float *)x, b = *(const float *)y;
	return (a > b) - (a < b);
}

/* Median / trimmed mean from the spooled .f32 deltas, block by block. */
static int
combine_spool(agg *a, float *g)
{
	int K = a->ncontrib, rv = -1;
	FILE **f = calloc((size_t)K, sizeof *f);
	float *buf = malloc((size_t)K * BLOCK * sizeof(float));
	float *col = malloc((size_t)K * sizeof(float));
	char p[AGG_PATH_MAX + 160];
	if (f == NULL || buf == NULL || col == NULL) {
		fs_seterr("out of memory (%d x %d floats)", K, BLOCK);
		goto out;
	}
	for (int k = 0; k < K; k++) {
		if (agg_spool_path(a, a->round, a->contrib[k].file, "f32", p,
		    sizeof p) != 0)
			goto out;
		f[k] = fopen(p, "rb");
		if (f[k] == NULL) {
			fs_seterr("%s: cannot open the spooled delta", p);
			goto out;
		}
	}
	int trim = 0;
	if (a->rule == AGG_RULE_TRIMMED) {
		trim = (int)floor(a->cfg.trim_fraction * K);
		if (K - 2 * trim < 1)
			trim = (K - 1) / 2;
	}
	for (size_t i0 = 0; i0 < a->n; i0 += BLOCK) {
		size_t m = a->n - i0 < BLOCK ? a->n - i0 : BLOCK;
		for (int k = 0; k < K; k++) {
			float *b = buf + (size_t)k * BLOCK;
			if (fread(b, sizeof(float), m, f[k]) != m) {
				fs_seterr("spooled delta of %s is short",
				    a->contrib[k].cn);
				goto out;
			}
			float s = (float)a->contrib[k].scale;
			if (s != 1.0f)
				for (size_t j = 0; j < m; j++)
					b[j] *= s;
		}
		for (size_t j = 0; j < m; j++) {
			for (int k = 0; k < K; k++)
				col[k] = buf[(size_t)k * BLOCK + j];
			qsort(col, (size_t)K, sizeof(float), cmp_float);
			double v = 0;
			if (a->rule == AGG_RULE_MEDIAN) {
				v = K % 2 ? col[K / 2] :
				    0.5 * ((double)col[K / 2 - 1] + col[K / 2]);
			} else {
				for (int k = trim; k < K - trim; k++)
					v += col[k];
				v /= (double)(K - 2 * trim);
			}
			g[i0 + j] = (float)v;
		}
	}
	rv = 0;
out:
	for (int k = 0; f != NULL && k < K; k++)
		if (f[k] != NULL)
			fclose(f[k]);
	free(f);
	free(buf);
	free(col);
	return rv;
}

/* w = global + lr * g: the fedavg / no-optimiser case, one vectorised
 * pass (g is acc, already the weighted mean). */
static void
step_plain(float *restrict w, const float *restrict global,
    const float *restrict g, double lr, size_t n)
{
	size_t i = 0;
	for (; i + 8 <= n; i += 8)
		for (int l = 0; l < 8; l++)
			w[i + l] = (float)((double)global[i + l] +
			    lr * (double)g[i + l]);
	for (; i < n; i++)
		w[i] = (float)((double)global[i] + lr * (double)g[i]);
}

int
agg_combine(agg *a, float *w)
{
	/* the combined delta g: fedavg's running mean acc as it is; the
	 * robust rules write theirs into w, which the step below then
	 * overwrites element by element (no temporary model) */
	const float *g = a->acc;
	if (a->rule != AGG_RULE_FEDAVG) {
		if (combine_spool(a, w) != 0)
			return -1;
		g = w;
	}
	const double lr = a->cfg.server_lr, b1 = a->cfg.beta1,
	    b2 = a->cfg.beta2, tau = a->cfg.tau, mu = a->cfg.server_momentum;
	if (a->opt == AGG_OPT_NONE && g != w) {
		step_plain(w, a->global, g, lr, a->n);
		return 0;
	}
	for (size_t i = 0; i < a->n; i++) {
		double gi = g[i], step = gi;
		if (a->opt == AGG_OPT_FEDAVGM) {
			double m = mu * a->opt_m[i] + gi;
			a->opt_m[i] = (float)m;
			step = a->opt_m[i];
		} else if (a->opt != AGG_OPT_NONE) {
			double m = b1 * a->opt_m[i] + (1 - b1) * gi;
			double v = a->opt_v[i], g2 = gi * gi;
			if (a->opt == AGG_OPT_FEDADAM)
				v = b2 * v + (1 - b2) * g2;
			else
				v = v - (1 - b2) * g2 * (v > g2 ? 1 : v < g2 ?
				    -1 : 0);
			a->opt_m[i] = (float)m;
			a->opt_v[i] = (float)v;
			step = (double)a->opt_m[i] /
			    (sqrt((double)a->opt_v[i]) + tau);
		}
		w[i] = (float)((double)a->global[i] + lr * step);
	}
	return 0;
}

/* ---- optimiser state files ------------------------------------------------ */

static int
opt_path(const agg *a, uint32_t version, char *buf, size_t n)
{
	return fs_path(buf, n, "%s/server/opt-%04u.bin", a->cfg.state_dir,
	    version);
}

int
agg_opt_save(agg *a, uint32_t version)
{
	char p[AGG_PATH_MAX + 64];
	uint8_t hdr[OPT_HDR];
	uint64_t n = a->n;
	if (a->opt == AGG_OPT_NONE)
		return 0;
	if (fs_path(p, sizeof p, "%s/server", a->cfg.state_dir) != 0 ||
	    fs_mkdir_p(p, 1) != 0 || opt_path(a, version, p, sizeof p) != 0)
		return -1;
	memset(hdr, 0, sizeof hdr);
	memcpy(hdr, OPT_MAGIC, 4);
	hdr[4] = 1;
	hdr[8] = (uint8_t)a->opt;
	memcpy(hdr + 16, &n, 8);
	fs_atomic *f = fs_atomic_open(p, 0600);
	if (f == NULL)
		return -1;
	FILE *fp = fs_atomic_file(f);
	fed_sha256_ctx *c = fed_sha256_begin();
	fed_sha256_update(c, hdr, sizeof hdr);
	fed_sha256_update(c, a->opt_m, a->n * sizeof(float));
	fed_sha256_update(c, a->opt_v, a->n * sizeof(float));
	fed_sha256_end(c, a->opt_digest);
	if (fwrite(hdr, 1, sizeof hdr, fp) != sizeof hdr ||
	    fwrite(a->opt_m, sizeof(float), a->n, fp) != a->n ||
	    fwrite(a->opt_v, sizeof(float), a->n, fp) != a->n) {
		fs_atomic_abort(f);
		return fs_seterr("%s: write failed", p);
	}
	if (fs_atomic_commit(f) != 0)
		return -1;
	if (version >= 2 && opt_path(a, version - 2, p, sizeof p) == 0)
		unlink(p); /* keep the last two */
	return 0;
}

int
agg_opt_load(agg *a, uint32_t version, const char *hex)
{
	char p[AGG_PATH_MAX + 64], to[AGG_PATH_MAX + 80], h[65];
	uint8_t *buf = NULL, d[32];
	size_t len = 0, want = OPT_HDR + 2 * a->n * sizeof(float);
	uint64_t n = 0;
	if (opt_path(a, version, p, sizeof p) != 0 ||
	    fs_read_file(p, want + 1, (void **)&buf, &len) != 0)
		return fs_preferr("server optimiser state");
	fed_sha256(buf, len, d);
	fed_hex(d, 32, h);
	if (len >= OPT_HDR)
		memcpy(&n, buf + 16, 8);
	if (len != want || memcmp(buf, OPT_MAGIC, 4) != 0 || n != a->n ||
	    buf[8] != (uint8_t)a->opt || (hex != NULL && strcmp(h, hex))) {
		free(buf);
		snprintf(to, sizeof to, "%s.corrupt", p);
		rename(p, to);
		fs_log(FS_LOG_ERR, "AGG-CORRUPT", "%s: does not match the "
		    "ledger (size or digest); set aside as %s", p, to);
		return fs_seterr("%s: server optimiser state is corrupt (set "
		    "aside as .corrupt); restore it from a backup", p);
	}
	memcpy(a->opt_m, buf + OPT_HDR, a->n * sizeof(float));
	memcpy(a->opt_v, buf + OPT_HDR + a->n * sizeof(float),
	    a->n * sizeof(float));
	memcpy(a->opt_digest, d, 32);
	free(buf);
	return 0;
}
