/* metrics.c - BraTS metrics: Dice, HD95 (mm), volumes (mL) for WT, TC, ET.
 *
 * HD95 follows the medpy / BraTS convention: the surface of a region is the
 * region minus its erosion by the 6-neighbourhood (outside the volume counts
 * as background); distances from every surface voxel of one region to the
 * nearest surface voxel of the other, in both directions, are pooled and
 * the 95th percentile taken with linear interpolation (numpy's default).
 * Nearest distances come from an exact Euclidean distance transform
 * (separable lower-envelope method of Felzenszwalb and Huttenlocher) with
 * the voxel spacing, computed on the bounding box of both regions, which
 * holds every surface voxel so the result is exact. */
#include "imaging.h"

#include "base.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define IMG_HD95_ONE_EMPTY 373.13

static int in_region(uint8_t cls, int r)
{
	switch (r) {
	case 0: return cls >= 1 && cls <= 3;     /* WT */
	case 1: return cls == 1 || cls == 3;     /* TC */
	default: return cls == 3;                /* ET */
	}
}

/* 1-D squared distance transform of f (n samples, spacing s) into d, using
 * the lower envelope of parabolas rooted at the finite samples. v, z are
 * scratch of n and n+1. */
static void edt_1d(const double *f, double *d, int n, double s, int *v,
    double *z)
{
	double s2 = s * s;
	int k = -1, q;

	for (q = 0; q < n; q++) {
		double sq;
		if (!isfinite(f[q]))
			continue;
		if (k < 0) {
			k = 0;
			v[0] = q;
			z[0] = -INFINITY;
			z[1] = INFINITY;
			continue;
		}
		for (;;) {
			int p = v[k];
			sq = ((f[q] + s2 * q * q) - (f[p] + s2 * p * p)) /
			    (2.0 * s2 * (q - p));
			if (sq <= z[k])  /* never at k == 0: z[0] = -inf */
				k--;
			else
				break;
		}
		k++;
		v[k] = q;
		z[k] = sq;
		z[k + 1] = INFINITY;
	}
	if (k < 0) {
		for (q = 0; q < n; q++)
			d[q] = INFINITY;
		return;
	}
	k = 0;
	for (q = 0; q < n; q++) {
		double t;
		while (z[k + 1] < q)
			k++;
		t = s * (q - v[k]);
		d[q] = t * t + f[v[k]];
	}
}

/* Squared EDT in place over an nx*ny*nz grid (0 at features, INF else). */
static int edt_3d(double *g, int nx, int ny, int nz, const double sp[3])
{
	int nmax = nx > ny ? nx : ny, x, y, z, i;
	double *f, *d, *zz;
	int *v;

	if (nz > nmax)
		nmax = nz;
	f = malloc((size_t)nmax * sizeof(*f));
	d = malloc((size_t)nmax * sizeof(*d));
	zz = malloc((size_t)(nmax + 1) * sizeof(*zz));
	v = malloc((size_t)nmax * sizeof(*v));
	if (f == NULL || d == NULL || zz == NULL || v == NULL) {
		free(f); free(d); free(zz); free(v);
		return fs_seterr("metrics: out of memory");
	}
	/* x lines */
	for (z = 0; z < nz; z++)
		for (y = 0; y < ny; y++) {
			double *row = g + ((size_t)z * ny + y) * nx;
			memcpy(f, row, (size_t)nx * sizeof(*f));
			edt_1d(f, row, nx, sp[0], v, zz);
		}
	/* y lines */
	for (z = 0; z < nz; z++)
		for (x = 0; x < nx; x++) {
			double *base = g + (size_t)z * ny * nx + x;
			for (i = 0; i < ny; i++)
				f[i] = base[(size_t)i * nx];
			edt_1d(f, d, ny, sp[1], v, zz);
			for (i = 0; i < ny; i++)
				base[(size_t)i * nx] = d[i];
		}
	/* z lines */
	for (y = 0; y < ny; y++)
		for (x = 0; x < nx; x++) {
			double *base = g + (size_t)y * nx + x;
			size_t st = (size_t)nx * ny;
			for (i = 0; i < nz; i++)
				f[i] = base[i * st];
			edt_1d(f, d, nz, sp[2], v, zz);
			for (i = 0; i < nz; i++)
				base[i * st] = d[i];
		}
	free(f); free(d); free(zz); free(v);
	return 0;
}

/* Marks the surface voxels of mask (region voxels with a 6-neighbour
 * outside the region or outside the grid). */
static void surface(const uint8_t *m, uint8_t *s, int nx, int ny, int nz)
{
	int x, y, z;

	for (z = 0; z < nz; z++)
		for (y = 0; y < ny; y++)
			for (x = 0; x < nx; x++) {
				size_t i = ((size_t)z * ny + y) * nx + x;
				size_t sy = (size_t)nx, sz = (size_t)nx * ny;
				s[i] = m[i] && (x == 0 || x == nx - 1 ||
				    y == 0 || y == ny - 1 || z == 0 ||
				    z == nz - 1 || !m[i - 1] || !m[i + 1] ||
				    !m[i - sy] || !m[i + sy] || !m[i - sz] ||
				    !m[i + sz]);
			}
}

static int dbl_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Distances from the surface voxels of `from` to the nearest surface voxel
 * of `to` are appended to dist (squared EDT g is scratch). */
static int directed(const uint8_t *sfrom, const uint8_t *sto, double *g,
    size_t n, int bx, int by, int bz, const double sp[3], double *dist,
    size_t *nd)
{
	size_t i;

	for (i = 0; i < n; i++)
		g[i] = sto[i] ? 0.0 : INFINITY;
	if (edt_3d(g, bx, by, bz, sp) != 0)
		return -1;
	for (i = 0; i < n; i++)
		if (sfrom[i])
			dist[(*nd)++] = sqrt(g[i]);
	return 0;
}

static int hd95_region(const uint8_t *pred, const uint8_t *ref, int nx,
    int ny, int nz, const double sp[3], int r, double *out)
{
	int lo[3] = {nx, ny, nz}, hi[3] = {-1, -1, -1};
	int x, y, z, bx, by, bz, rv = -1;
	uint8_t *a = NULL, *b = NULL, *sa = NULL, *sb = NULL;
	double *g = NULL, *dist = NULL, pos;
	size_t n, i, nd = 0, ns = 0, k;

	for (z = 0; z < nz; z++)
		for (y = 0; y < ny; y++)
			for (x = 0; x < nx; x++) {
				size_t j = ((size_t)z * ny + y) * nx + x;
				if (!in_region(pred[j], r) &&
				    !in_region(ref[j], r))
					continue;
				if (x < lo[0]) lo[0] = x;
				if (x > hi[0]) hi[0] = x;
				if (y < lo[1]) lo[1] = y;
				if (y > hi[1]) hi[1] = y;
				if (z < lo[2]) lo[2] = z;
				if (z > hi[2]) hi[2] = z;
			}
	bx = hi[0] - lo[0] + 1;
	by = hi[1] - lo[1] + 1;
	bz = hi[2] - lo[2] + 1;
	n = (size_t)bx * by * bz;
	a = malloc(n);
	b = malloc(n);
	sa = malloc(n);
	sb = malloc(n);
	g = malloc(n * sizeof(*g));
	if (!a || !b || !sa || !sb || !g) {
		fs_seterr("metrics: out of memory");
		goto out;
	}
	i = 0;
	for (z = lo[2]; z <= hi[2]; z++)
		for (y = lo[1]; y <= hi[1]; y++)
			for (x = lo[0]; x <= hi[0]; x++, i++) {
				size_t j = ((size_t)z * ny + y) * nx + x;
				a[i] = (uint8_t)in_region(pred[j], r);
				b[i] = (uint8_t)in_region(ref[j], r);
			}
	surface(a, sa, bx, by, bz);
	surface(b, sb, bx, by, bz);
	for (i = 0; i < n; i++)
		ns += (size_t)sa[i] + sb[i];
	dist = malloc(ns * sizeof(*dist));
	if (dist == NULL) {
		fs_seterr("metrics: out of memory");
		goto out;
	}
	if (directed(sa, sb, g, n, bx, by, bz, sp, dist, &nd) != 0 ||
	    directed(sb, sa, g, n, bx, by, bz, sp, dist, &nd) != 0)
		goto out;
	qsort(dist, nd, sizeof(*dist), dbl_cmp);
	pos = 0.95 * (double)(nd - 1);
	k = (size_t)floor(pos);
	*out = k + 1 < nd ? dist[k] + (pos - (double)k) *
	    (dist[k + 1] - dist[k]) : dist[k];
	rv = 0;
out:
	free(a); free(b); free(sa); free(sb); free(g); free(dist);
	return rv;
}

int img_metrics_compute(const uint8_t *pred, const uint8_t *ref, int nx,
    int ny, int nz, const double sp[3], img_metrics *out)
{
	size_t n = (size_t)nx * ny * nz, i, np[3] = {0}, nr[3] = {0},
	    both[3] = {0};
	double vox_ml = sp[0] * sp[1] * sp[2] / 1000.0;
	img_metrics m;
	int r;

	if (nx < 1 || ny < 1 || nz < 1)
		return fs_seterr("metrics: bad grid %dx%dx%d", nx, ny, nz);
	for (i = 0; i < n; i++) {
		if (pred[i] > 3 || ref[i] > 3)
			return fs_seterr("metrics: class value %u at voxel %zu "
			    "is not 0..3 (convert labels to classes first)",
			    (unsigned)(pred[i] > 3 ? pred[i] : ref[i]), i);
		for (r = 0; r < 3; r++) {
			int p = in_region(pred[i], r), q = in_region(ref[i], r);
			np[r] += (size_t)p;
			nr[r] += (size_t)q;
			both[r] += (size_t)(p && q);
		}
	}
	memset(&m, 0, sizeof(m));
	for (r = 0; r < 3; r++) {
		m.vol_pred_ml[r] = (double)np[r] * vox_ml;
		m.vol_ref_ml[r] = (double)nr[r] * vox_ml;
		if (np[r] + nr[r] == 0) {
			m.dice[r] = 1.0;
			m.hd95[r] = 0.0;
			continue;
		}
		m.dice[r] = 2.0 * (double)both[r] / (double)(np[r] + nr[r]);
		if (np[r] == 0 || nr[r] == 0) {
			m.hd95[r] = IMG_HD95_ONE_EMPTY;
			continue;
		}
		if (hd95_region(pred, ref, nx, ny, nz, sp, r, &m.hd95[r]) != 0)
			return -1;
	}
	*out = m;
	return 0;
}
