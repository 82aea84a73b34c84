/* test_img_metrics.c - Dice / HD95 / volumes: conventions for empty
 * regions, known shapes, and the EDT-based HD95 against a brute-force
 * nearest-surface search on random anisotropic volumes. */
#include "img_test.h"

#include <math.h>

static int reg(uint8_t c, int r)
{
	return r == 0 ? (c >= 1 && c <= 3) : r == 1 ? (c == 1 || c == 3) :
	    c == 3;
}

static int is_surf(const uint8_t *v, int nx, int ny, int nz, int x, int y,
    int z, int r)
{
	static const int d[6][3] = {{1, 0, 0}, {-1, 0, 0}, {0, 1, 0},
		{0, -1, 0}, {0, 0, 1}, {0, 0, -1}};
	int k;

	if (!reg(v[((size_t)z * ny + y) * nx + x], r))
		return 0;
	for (k = 0; k < 6; k++) {
		int a = x + d[k][0], b = y + d[k][1], c = z + d[k][2];
		if (a < 0 || b < 0 || c < 0 || a >= nx || b >= ny || c >= nz)
			return 1;
		if (!reg(v[((size_t)c * ny + b) * nx + a], r))
			return 1;
	}
	return 0;
}

static int dcmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* brute force HD95 of region r */
static double brute_hd95(const uint8_t *p, const uint8_t *q, int nx, int ny,
    int nz, const double sp[3], int r)
{
	int (*sp_)[3] = malloc(sizeof(int[3]) * (size_t)nx * ny * nz);
	int (*sq)[3] = malloc(sizeof(int[3]) * (size_t)nx * ny * nz);
	double *dist = malloc(sizeof(double) * 2 * (size_t)nx * ny * nz), pos,
	    res;
	int np = 0, nq = 0, x, y, z, i, j, nd = 0, k;

	for (z = 0; z < nz; z++)
		for (y = 0; y < ny; y++)
			for (x = 0; x < nx; x++) {
				if (is_surf(p, nx, ny, nz, x, y, z, r)) {
					sp_[np][0] = x; sp_[np][1] = y;
					sp_[np][2] = z; np++;
				}
				if (is_surf(q, nx, ny, nz, x, y, z, r)) {
					sq[nq][0] = x; sq[nq][1] = y;
					sq[nq][2] = z; nq++;
				}
			}
	for (k = 0; k < 2; k++) {
		int (*A)[3] = k ? sq : sp_, (*B)[3] = k ? sp_ : sq;
		int na = k ? nq : np, nb = k ? np : nq;
		for (i = 0; i < na; i++) {
			double best = INFINITY;
			for (j = 0; j < nb; j++) {
				double dx = (A[i][0] - B[j][0]) * sp[0],
				    dy = (A[i][1] - B[j][1]) * sp[1],
				    dz = (A[i][2] - B[j][2]) * sp[2];
				double d2 = dx * dx + dy * dy + dz * dz;
				if (d2 < best)
					best = d2;
			}
			dist[nd++] = sqrt(best);
		}
	}
	qsort(dist, (size_t)nd, sizeof(double), dcmp);
	pos = 0.95 * (nd - 1);
	i = (int)floor(pos);
	res = i + 1 < nd ? dist[i] + (pos - i) * (dist[i + 1] - dist[i]) :
	    dist[i];
	free(sp_); free(sq); free(dist);
	return res;
}

/* random blobby label volume: a few balls of classes 1..3 */
static void blobs(uint8_t *v, int nx, int ny, int nz, unsigned *seed)
{
	int b, x, y, z;

	memset(v, 0, (size_t)nx * ny * nz);
	for (b = 0; b < 5; b++) {
		int cx = rand_r(seed) % nx, cy = rand_r(seed) % ny,
		    cz = rand_r(seed) % nz, rad = 2 + rand_r(seed) % 5,
		    cls = 1 + rand_r(seed) % 3;
		for (z = 0; z < nz; z++)
			for (y = 0; y < ny; y++)
				for (x = 0; x < nx; x++) {
					int d = (x - cx) * (x - cx) + (y - cy) *
					    (y - cy) + (z - cz) * (z - cz);
					if (d <= rad * rad)
						v[((size_t)z * ny + y) * nx + x]
						    = (uint8_t)cls;
				}
	}
	/* salt: isolated voxels */
	for (b = 0; b < 10; b++)
		v[rand_r(seed) % (nx * ny * nz)] = (uint8_t)(1 + rand_r(seed) % 3);
}

static void test_conventions(void)
{
	enum { N = 10 * 10 * 10 };
	uint8_t p[N], q[N];
	double sp[3] = {1, 1, 1};
	img_metrics m;

	memset(p, 0, N);
	memset(q, 0, N);
	CHECK(img_metrics_compute(p, q, 10, 10, 10, sp, &m) == 0);
	CHECK(m.dice[0] == 1 && m.dice[1] == 1 && m.dice[2] == 1);
	CHECK(m.hd95[0] == 0 && m.hd95[2] == 0);
	p[555] = 2; /* edema only in pred */
	CHECK(img_metrics_compute(p, q, 10, 10, 10, sp, &m) == 0);
	CHECK(m.dice[0] == 0 && m.hd95[0] == 373.13);
	CHECK(m.dice[1] == 1 && m.hd95[1] == 0);
	CHECK(fabs(m.vol_pred_ml[0] - 0.001) < 1e-12 && m.vol_ref_ml[0] == 0);
	memcpy(q, p, N);
	CHECK(img_metrics_compute(p, q, 10, 10, 10, sp, &m) == 0);
	CHECK(m.dice[0] == 1 && m.hd95[0] == 0);
	p[1] = 9;
	CHECK(img_metrics_compute(p, q, 10, 10, 10, sp, &m) == -1);
	CHECK_ERR("9");
}

static void test_cubes(void)
{
	enum { NX = 30, NY = 20, NZ = 20 };
	static uint8_t p[NX * NY * NZ], q[NX * NY * NZ];
	double sp[3] = {2.0, 1.0, 1.0};
	img_metrics m;
	int x, y, z;

	/* two 6-voxel cubes of ET, the second shifted by 3 voxels in x */
	for (z = 5; z < 11; z++)
		for (y = 5; y < 11; y++)
			for (x = 5; x < 11; x++) {
				p[((size_t)z * NY + y) * NX + x] = 3;
				q[((size_t)z * NY + y) * NX + x + 3] = 3;
			}
	CHECK(img_metrics_compute(p, q, NX, NY, NZ, sp, &m) == 0);
	/* overlap 3/6 of each cube */
	CHECK(fabs(m.dice[2] - 0.5) < 1e-12);
	CHECK(fabs(m.dice[0] - 0.5) < 1e-12);
	CHECK(fabs(m.vol_pred_ml[2] - 216 * 2.0 / 1000) < 1e-12);
	/* the x faces are 3 voxels = 6 mm apart; 95th percentile of the
	 * pooled distances equals the brute force */
	CHECK(fabs(m.hd95[2] - brute_hd95(p, q, NX, NY, NZ, sp, 2)) < 1e-9);
	CHECK(m.hd95[2] > 0 && m.hd95[2] <= 6.0 + 1e-9);
}

static void test_random(void)
{
	enum { NX = 24, NY = 20, NZ = 16 };
	static uint8_t p[NX * NY * NZ], q[NX * NY * NZ];
	double sp[3] = {0.9, 1.5, 2.5};
	unsigned seed = 12345;
	img_metrics m;
	int t, r;

	for (t = 0; t < 12; t++) {
		blobs(p, NX, NY, NZ, &seed);
		blobs(q, NX, NY, NZ, &seed);
		CHECK(img_metrics_compute(p, q, NX, NY, NZ, sp, &m) == 0);
		for (r = 0; r < 3; r++) {
			size_t i, a = 0, b = 0, ab = 0;
			for (i = 0; i < (size_t)NX * NY * NZ; i++) {
				a += reg(p[i], r);
				b += reg(q[i], r);
				ab += reg(p[i], r) && reg(q[i], r);
			}
			if (a == 0 || b == 0)
				continue;
			CHECK(fabs(m.dice[r] - 2.0 * ab / (double)(a + b)) <
			    1e-12);
			CHECK(fabs(m.hd95[r] - brute_hd95(p, q, NX, NY, NZ, sp,
			    r)) < 1e-6);
			CHECK(fabs(m.vol_ref_ml[r] - b * 0.9 * 1.5 * 2.5 /
			    1000.0) < 1e-9);
		}
	}
}

int main(void)
{
	test_conventions();
	test_cubes();
	test_random();
	return img_t_finish("test_img_metrics");
}
