/* resample.c - one volume onto another's grid through both voxel-to-world
 * affines: trilinear for images, nearest neighbour for labels and masks.
 * See imaging.h (img_resample) and docs/imaging.md. */
#include "imaging.h"
#include "imaging_impl.h"

#include "base.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Inverts a 4x4 affine (last row 0 0 0 1) into inv; -1 if singular. */
static int affine_inverse(const double a[4][4], double inv[4][4])
{
	double det, m[3][3];
	int i, j;

	det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) -
	    a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
	    a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
	if (!(fabs(det) > 1e-12))
		return -1;
	m[0][0] = (a[1][1] * a[2][2] - a[1][2] * a[2][1]) / det;
	m[0][1] = (a[0][2] * a[2][1] - a[0][1] * a[2][2]) / det;
	m[0][2] = (a[0][1] * a[1][2] - a[0][2] * a[1][1]) / det;
	m[1][0] = (a[1][2] * a[2][0] - a[1][0] * a[2][2]) / det;
	m[1][1] = (a[0][0] * a[2][2] - a[0][2] * a[2][0]) / det;
	m[1][2] = (a[0][2] * a[1][0] - a[0][0] * a[1][2]) / det;
	m[2][0] = (a[1][0] * a[2][1] - a[1][1] * a[2][0]) / det;
	m[2][1] = (a[0][1] * a[2][0] - a[0][0] * a[2][1]) / det;
	m[2][2] = (a[0][0] * a[1][1] - a[0][1] * a[1][0]) / det;
	for (i = 0; i < 3; i++) {
		for (j = 0; j < 3; j++)
			inv[i][j] = m[i][j];
		inv[i][3] = -(m[i][0] * a[0][3] + m[i][1] * a[1][3] +
		    m[i][2] * a[2][3]);
	}
	inv[3][0] = inv[3][1] = inv[3][2] = 0.0;
	inv[3][3] = 1.0;
	return 0;
}

int img_resample(const img_volume *src, const img_volume *grid, int nearest,
    img_volume *out)
{
	double inv[4][4], t[4][4];
	img_volume o;
	float *d;
	int i, j, k, x, y, z;
	const int sx = src->nx, sy = src->ny, sz = src->nz;

	if (src->data == NULL)
		return fs_seterr("%s: no voxels to resample", src->path ?
		    src->path : "(volume)");
	if (affine_inverse(src->affine, inv) != 0)
		return fs_seterr("%s: singular voxel-to-world affine",
		    src->path ? src->path : "(volume)");
	/* t = inv(src) * grid: grid voxel -> src voxel. */
	for (i = 0; i < 4; i++)
		for (j = 0; j < 4; j++) {
			double v = 0.0;
			for (k = 0; k < 4; k++)
				v += inv[i][k] * grid->affine[k][j];
			t[i][j] = v;
		}
	memset(&o, 0, sizeof(o));
	if (img_volume_header_copy(grid, &o) != 0)
		return -1;
	free(o.path);
	o.path = src->path ? strdup(src->path) : NULL;
	d = malloc((size_t)grid->nx * grid->ny * grid->nz * sizeof(float));
	if (d == NULL || (src->path && o.path == NULL)) {
		free(d);
		img_volume_free(&o);
		return fs_seterr("out of memory resampling %s", src->path ?
		    src->path : "(volume)");
	}
	for (z = 0; z < grid->nz; z++)
		for (y = 0; y < grid->ny; y++)
			for (x = 0; x < grid->nx; x++) {
				double p[3];
				float v = 0.0f;
				for (i = 0; i < 3; i++)
					p[i] = t[i][0] * x + t[i][1] * y +
					    t[i][2] * z + t[i][3];
				if (nearest) {
					long a = lround(p[0]), b = lround(p[1]),
					    c = lround(p[2]);
					if (a >= 0 && b >= 0 && c >= 0 &&
					    a < sx && b < sy && c < sz)
						v = src->data[((size_t)c * sy +
						    (size_t)b) * sx + (size_t)a];
				} else if (p[0] > -1.0 && p[1] > -1.0 &&
				    p[2] > -1.0 && p[0] < sx && p[1] < sy &&
				    p[2] < sz) {
					int x0 = (int)floor(p[0]),
					    y0 = (int)floor(p[1]),
					    z0 = (int)floor(p[2]), dx, dy, dz;
					double fx = p[0] - x0, fy = p[1] - y0,
					    fz = p[2] - z0, acc = 0.0;
					/* Neighbours outside the grid count as 0. */
					for (dz = 0; dz < 2; dz++)
						for (dy = 0; dy < 2; dy++)
							for (dx = 0; dx < 2; dx++) {
								int xi = x0 + dx, yi = y0 + dy,
								    zi = z0 + dz;
								double w = (dx ? fx : 1 - fx) *
								    (dy ? fy : 1 - fy) *
								    (dz ? fz : 1 - fz);
								if (w == 0.0 || xi < 0 ||
								    yi < 0 || zi < 0 ||
								    xi >= sx || yi >= sy ||
								    zi >= sz)
									continue;
								acc += w * src->data[
								    ((size_t)zi * sy + yi) *
								    sx + xi];
							}
					v = (float)acc;
				}
				d[((size_t)z * grid->ny + y) * grid->nx + x] = v;
			}
	o.data = d;
	*out = o;
	return 0;
}
