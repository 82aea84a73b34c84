/* bench_util.h - shared by the bench programs: order statistics and the one
 * output format bench/run.sh turns into docs/benchmarks.md.
 *
 * Every figure is printed as ONE flat JSON line (no nesting, keys in this
 * order) so that a shell script can pick fields without a JSON library:
 *
 *   {"bench":"infer_inproc","figure":"...","unit":"s","n":5,
 *    "min":1.0,"median":1.1,"max":1.3,"baseline":"...","base_min":..,
 *    "base_median":..,"base_max":..,"ratio":0.66,"ratio_is":"...",
 *    "target":">= 0.60","met":"yes","note":"..."}
 *
 * ratio is always computed from figures measured in the same run. */
#ifndef FEDSEG_BENCH_UTIL_H
#define FEDSEG_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
	double min, median, max;
	int n;
} bstat;

static int bench_cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Order statistics of v[0..n) (v is sorted in place). */
static inline bstat bench_stat(double *v, int n)
{
	bstat s = {0, 0, 0, n};
	if (n <= 0)
		return s;
	qsort(v, (size_t)n, sizeof(double), bench_cmp_d);
	s.min = v[0];
	s.max = v[n - 1];
	s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
	return s;
}

/* Copies s without quotes/backslashes/newlines (JSON-safe, awk-safe). */
static inline void bench_clean(char *d, size_t cap, const char *s)
{
	size_t j = 0;
	for (; s != NULL && *s && j + 1 < cap; s++)
		d[j++] = (*s == '"' || *s == '\\' || *s == '\n') ? '\'' : *s;
	d[j] = 0;
}

/* Prints one figure. target_ge: 1 if the ratio must be >= target, 0 if
 * <= target; target < 0: no target. */
static inline void bench_emit(const char *bench, const char *figure,
    const char *unit, bstat v, const char *baseline, bstat b, double ratio,
    const char *ratio_is, double target, int target_ge, const char *note)
{
	char f[512], bl[512], ri[512], no[1024], tg[64];
	if (target < 0)
		snprintf(tg, sizeof(tg), "none");
	else
		snprintf(tg, sizeof(tg), "%s%.4g", target_ge ? ">= " : "<= ",
		    target);
	bench_clean(f, sizeof(f), figure);
	bench_clean(bl, sizeof(bl), baseline);
	bench_clean(ri, sizeof(ri), ratio_is);
	bench_clean(no, sizeof(no), note);
	printf("{\"bench\":\"%s\",\"figure\":\"%s\",\"unit\":\"%s\",\"n\":%d,"
	    "\"min\":%.6g,\"median\":%.6g,\"max\":%.6g,\"baseline\":\"%s\","
	    "\"base_min\":%.6g,\"base_median\":%.6g,\"base_max\":%.6g,"
	    "\"ratio\":%.4g,\"ratio_is\":\"%s\",\"target\":\"%s\","
	    "\"met\":\"%s\",\"note\":\"%s\"}\n",
	    bench, f, unit, v.n, v.min, v.median, v.max, bl, b.min, b.median,
	    b.max, ratio, ri, tg,
	    target < 0 ? "n/a" : (target_ge ? ratio >= target : ratio <= target) ?
	    "yes" : "no", no);
	fflush(stdout);
}

#endif
