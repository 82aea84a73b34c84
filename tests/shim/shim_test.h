/*
 * shim_test.h - tiny helpers shared by the shim tests: a CHECK macro, a
 * reader for fixtures/ops.txt (see make_fixtures.py for the format) and a
 * tolerance comparison. Header-only; each test includes it once.
 */
#ifndef FEDSEG_SHIM_TEST_H
#define FEDSEG_SHIM_TEST_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "torch_c.h"

static int g_failures;
static int g_checks;

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		g_checks++;                                                    \
		if (!(cond)) {                                                 \
			g_failures++;                                          \
			fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, \
			    __LINE__, #cond);                                  \
			fprintf(stderr, __VA_ARGS__);                          \
			fprintf(stderr, " [tc_last_error: %s]\n",              \
			    tc_last_error());                                  \
		}                                                              \
	} while (0)

/* Aborts the test program at once (for setup failures). */
#define REQUIRE(cond, ...)                                                     \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: REQUIRE(%s) failed: ", __FILE__, \
			    __LINE__, #cond);                                  \
			fprintf(stderr, __VA_ARGS__);                          \
			fprintf(stderr, " [tc_last_error: %s]\n",              \
			    tc_last_error());                                  \
			exit(1);                                               \
		}                                                              \
	} while (0)

static inline int test_summary(const char *name)
{
	if (g_failures) {
		fprintf(stderr, "%s: %d of %d checks FAILED\n", name, g_failures, g_checks);
		return 1;
	}
	printf("%s: all %d checks passed\n", name, g_checks);
	return 0;
}

/* --- fixtures ----------------------------------------------------------- */

typedef struct {
	char name[64];
	int ndim;
	int64_t shape[TC_MAX_DIMS];
	size_t n;
	float *v;
} fx_rec;

static fx_rec *g_fx;
static size_t g_nfx;

static inline void fx_load(const char *path)
{
	FILE *f = fopen(path, "r");
	REQUIRE(f != NULL, "cannot open fixture file %s", path);
	size_t cap = 0;
	char line[512];
	for (;;) {
		int c = fgetc(f);
		if (c == EOF)
			break;
		if (c == '#') {
			if (fgets(line, sizeof line, f) == NULL)
				break;
			continue;
		}
		if (c == '\n' || c == ' ')
			continue;
		ungetc(c, f);
		if (g_nfx == cap) {
			cap = cap ? 2 * cap : 64;
			g_fx = realloc(g_fx, cap * sizeof *g_fx);
			REQUIRE(g_fx != NULL, "out of memory");
		}
		fx_rec *r = &g_fx[g_nfx];
		REQUIRE(fscanf(f, "%63s %d", r->name, &r->ndim) == 2 &&
		    r->ndim >= 0 && r->ndim <= TC_MAX_DIMS, "%s: bad header", path);
		r->n = 1;
		for (int i = 0; i < r->ndim; i++) {
			long long d;
			REQUIRE(fscanf(f, "%lld", &d) == 1 && d >= 0, "%s: bad shape of %s",
			    path, r->name);
			r->shape[i] = d;
			r->n *= (size_t)d;
		}
		r->v = malloc((r->n ? r->n : 1) * sizeof(float));
		REQUIRE(r->v != NULL, "out of memory");
		for (size_t i = 0; i < r->n; i++)
			REQUIRE(fscanf(f, "%f", &r->v[i]) == 1, "%s: %s truncated", path,
			    r->name);
		g_nfx++;
	}
	fclose(f);
	REQUIRE(g_nfx > 0, "%s holds no arrays", path);
}

static inline const fx_rec *fx(const char *name)
{
	for (size_t i = 0; i < g_nfx; i++)
		if (strcmp(g_fx[i].name, name) == 0)
			return &g_fx[i];
	REQUIRE(0, "fixture array '%s' missing (regenerate with make_fixtures.py)", name);
	return NULL;
}

/* Fixture array as a tensor in scope s (NULL: caller-owned). */
static inline tc_tensor *fx_tensor(tc_scope *s, const char *name)
{
	const fx_rec *r = fx(name);
	tc_tensor *t = tc_from_float(s, r->v, r->shape, r->ndim, "cpu");
	REQUIRE(t != NULL, "tc_from_float(%s)", name);
	return t;
}

/* Fixture array (class indices stored as floats) as an int64 tensor. */
static inline tc_tensor *fx_long(tc_scope *s, const char *name)
{
	const fx_rec *r = fx(name);
	uint8_t *u = malloc(r->n ? r->n : 1);
	REQUIRE(u != NULL, "out of memory");
	for (size_t i = 0; i < r->n; i++)
		u[i] = (uint8_t)r->v[i];
	tc_tensor *t = tc_from_u8_as_long(s, u, r->shape, r->ndim, "cpu");
	free(u);
	REQUIRE(t != NULL, "tc_from_u8_as_long(%s)", name);
	return t;
}

#define RTOL 1e-5

/* Compares `got` with fixture `name`: same shape, and every element within
 * RTOL * |ref| + atol, where atol = RTOL * max|ref| (float32 summation
 * order differs between thread counts). Returns 1 if equal. */
static inline int fx_close(const tc_tensor *got, const char *name, double rtol_scale)
{
	const fx_rec *r = fx(name);
	g_checks++;
	if (got == NULL) {
		g_failures++;
		fprintf(stderr, "compare %s: tensor is NULL [%s]\n", name, tc_last_error());
		return 0;
	}
	int64_t sh[TC_MAX_DIMS];
	int nd = tc_shape(got, sh);
	int same = nd == r->ndim;
	for (int i = 0; same && i < nd; i++)
		same = sh[i] == r->shape[i];
	if (!same) {
		g_failures++;
		fprintf(stderr, "compare %s: shape differs (ndim %d vs %d)", name, nd, r->ndim);
		for (int i = 0; i < nd && i < TC_MAX_DIMS; i++)
			fprintf(stderr, " %lld", (long long)sh[i]);
		fprintf(stderr, " vs");
		for (int i = 0; i < r->ndim; i++)
			fprintf(stderr, " %lld", (long long)r->shape[i]);
		fprintf(stderr, "\n");
		return 0;
	}
	float *buf = malloc((r->n ? r->n : 1) * sizeof(float));
	REQUIRE(buf != NULL, "out of memory");
	if (tc_to_float(got, buf, r->n) != TC_OK) {
		g_failures++;
		fprintf(stderr, "compare %s: tc_to_float failed: %s\n", name, tc_last_error());
		free(buf);
		return 0;
	}
	double rtol = RTOL * rtol_scale, maxref = 0, worst = 0;
	size_t worst_i = 0;
	for (size_t i = 0; i < r->n; i++)
		if (fabs(r->v[i]) > maxref)
			maxref = fabs(r->v[i]);
	int ok = 1;
	for (size_t i = 0; i < r->n; i++) {
		double err = fabs((double)buf[i] - (double)r->v[i]);
		double tol = rtol * fabs(r->v[i]) + rtol * maxref + 1e-12;
		if (!(err <= tol)) {
			if (ok || err / tol > worst) {
				worst = err / tol;
				worst_i = i;
			}
			ok = 0;
		}
	}
	if (!ok) {
		g_failures++;
		fprintf(stderr, "compare %s: element %zu is %.9g, PyTorch says %.9g "
		    "(%.1fx over tolerance)\n", name, worst_i, buf[worst_i],
		    r->v[worst_i], worst);
	}
	free(buf);
	return ok;
}

static inline const char *fixture_path(const char *dir, const char *file)
{
	static char buf[4096];
	snprintf(buf, sizeof buf, "%s/%s", dir, file);
	return buf;
}

#endif
