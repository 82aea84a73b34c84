/* phantom.c - synthetic multi-modal brain-tumour phantoms: the README
 * demo's fallback on a machine without the real cases, and fast fixtures.
 * Each case: an ellipsoidal "brain" with a smooth tissue pattern, a
 * spherical tumour at a random place (necrotic core, enhancing rim, edema
 * halo) whose intensities differ per modality as they do on real MRI
 * (enhancing rim bright on T1c, edema bright on T2 and FLAIR), Gaussian
 * noise and a bias field; BraTS 2017-2021 labels (1, 2, 4). */
#define _GNU_SOURCE
#include <math.h>
#include <nifti2_io.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "imaging.h"

static double ph_unif(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return ((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0);
}

static double ph_gauss(uint64_t *s)
{
	double u = ph_unif(s) + 1e-12, v = ph_unif(s);
	return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

int img_phantom_write(const char *dir, const char *id, int n, uint64_t seed)
{
	/* Tissue intensities: brain, edema, enhancing rim, necrotic core. */
	static const double inten[4][4] = {
	    {400, 330, 380, 220},  /* t1 */
	    {420, 400, 950, 260},  /* t1ce */
	    {300, 720, 520, 900},  /* t2 */
	    {310, 820, 620, 420},  /* flair */
	};
	static const char *suffix[4] = {"t1", "t1ce", "t2", "flair"};
	int nx = n, ny = n, nz = n * 2 / 3;
	size_t nv = (size_t)nx * ny * nz;
	int64_t dims[8] = {3, nx, ny, nz, 1, 1, 1, 1};
	nifti_image *nim = NULL;
	img_volume like;
	float *img = NULL;
	uint8_t *seg = NULL, *tis = NULL;
	char path[4096], cdir[4096];
	uint64_t s = seed * 7919 + 17;
	int rv = -1;

	if (n < 16 || n > 512)
		return fs_seterr("phantom size %d out of range 16..512", n);
	if (fs_path(cdir, sizeof(cdir), "%s/%s", dir, id) != 0 ||
	    fs_mkdir_p(cdir, 0) != 0)
		return -1;
	img = malloc(nv * sizeof(float));
	seg = calloc(nv, 1);
	tis = calloc(nv, 1);
	nim = nifti_make_new_nim(dims, NIFTI_TYPE_FLOAT32, 0);
	if (img == NULL || seg == NULL || tis == NULL || nim == NULL) {
		fs_seterr("out of memory");
		goto out;
	}
	/* 1 mm voxels, LPS-like orientation as BraTS ships it. */
	nim->qform_code = nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
	nim->pixdim[1] = nim->pixdim[2] = nim->pixdim[3] = 1.0;
	nim->dx = nim->dy = nim->dz = 1.0;
	nim->qfac = 1;
	nim->quatern_b = nim->quatern_c = 0;
	nim->quatern_d = 1; /* 180 degrees about z: x -> -x, y -> -y */
	nim->qoffset_x = nx / 2.0, nim->qoffset_y = ny / 2.0;
	nim->qoffset_z = -nz / 2.0;
	nim->qto_xyz = nifti_quatern_to_dmat44(nim->quatern_b, nim->quatern_c,
	    nim->quatern_d, nim->qoffset_x, nim->qoffset_y, nim->qoffset_z,
	    1, 1, 1, 1);
	nim->sto_xyz = nim->qto_xyz;
	nim->xyz_units = NIFTI_UNITS_MM;

	/* Geometry: brain ellipsoid; tumour inside it. */
	double bx = nx / 2.0, by = ny / 2.0, bz = nz / 2.0;
	double rx = 0.40 * nx, ry = 0.45 * ny, rz = 0.42 * nz;
	double rt = (0.08 + 0.06 * ph_unif(&s)) * n;
	double tx = bx + (ph_unif(&s) - 0.5) * 0.5 * rx;
	double ty = by + (ph_unif(&s) - 0.5) * 0.5 * ry;
	double tz = bz + (ph_unif(&s) - 0.5) * 0.5 * rz;
	double re = rt * (1.5 + 0.4 * ph_unif(&s));
	double phase = ph_unif(&s) * 6.28;
	for (int z = 0; z < nz; z++)
		for (int y = 0; y < ny; y++)
			for (int x = 0; x < nx; x++) {
				size_t i = ((size_t)z * ny + y) * nx + x;
				double ex = (x - bx) / rx, ey = (y - by) / ry,
				    ez = (z - bz) / rz;
				if (ex * ex + ey * ey + ez * ez > 1.0)
					continue;
				double d = sqrt((x - tx) * (x - tx) +
				    (y - ty) * (y - ty) + (z - tz) * (z - tz));
				tis[i] = 1;
				if (d < 0.6 * rt)
					tis[i] = 4, seg[i] = 1;
				else if (d < rt)
					tis[i] = 3, seg[i] = 4;
				else if (d < re)
					tis[i] = 2, seg[i] = 2;
			}
	for (int m = 0; m < 4; m++) {
		for (int z = 0; z < nz; z++)
			for (int y = 0; y < ny; y++)
				for (int x = 0; x < nx; x++) {
					size_t i = ((size_t)z * ny + y) * nx + x;
					if (tis[i] == 0) {
						img[i] = 0;
						continue;
					}
					double base = inten[m][tis[i] - 1];
					double pattern = 1.0 + 0.08 * sin(0.21 * x +
					    phase) * cos(0.17 * y) * sin(0.23 * z + m);
					double bias = 1.0 + 0.1 * (x - bx) / nx;
					img[i] = (float)(base * pattern * bias *
					    (1.0 + 0.04 * ph_gauss(&s)));
				}
		like.nx = nx, like.ny = ny, like.nz = nz;
		like.hdr = nim;
		if (fs_path(path, sizeof(path), "%s/%s_%s.nii.gz", cdir, id,
		    suffix[m]) != 0 || img_volume_write_float(path, &like, img) != 0)
			goto out;
	}
	if (fs_path(path, sizeof(path), "%s/%s_seg.nii.gz", cdir, id) != 0 ||
	    img_labels_write(path, &like, seg) != 0)
		goto out;
	rv = 0;
out:
	if (nim != NULL)
		nifti_image_free(nim);
	free(img);
	free(seg);
	free(tis);
	return rv;
}
