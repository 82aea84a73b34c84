/* volume.c - NIfTI volumes through nifti_clib: read any datatype to float,
 * grid checks, atomic writes on an input's header. See imaging.h. */
#define _GNU_SOURCE
#include "imaging.h"
#include "imaging_impl.h"

#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nifti2_io.h>
#include <zlib.h>

static const char *const img_mod_names[IMG_NMOD] = {"t1", "t1c", "t2", "flair"};

const char *img_modality_name(int m)
{
	if (m < 0 || m >= IMG_NMOD)
		return "?";
	return img_mod_names[m];
}

int img_modality_parse(const char *s)
{
	if (s == NULL)
		return -1;
	if (strcasecmp(s, "t1") == 0 || strcasecmp(s, "t1n") == 0)
		return IMG_T1;
	if (strcasecmp(s, "t1c") == 0 || strcasecmp(s, "t1ce") == 0 ||
	    strcasecmp(s, "t1gd") == 0)
		return IMG_T1C;
	if (strcasecmp(s, "t2") == 0 || strcasecmp(s, "t2w") == 0)
		return IMG_T2;
	if (strcasecmp(s, "flair") == 0 || strcasecmp(s, "t2f") == 0)
		return IMG_FLAIR;
	return -1;
}

int img_modality_list_parse(const char *s, int mods[4])
{
	char buf[256], *tok, *save = NULL;
	int n = 0;

	if (s == NULL || strlen(s) >= sizeof(buf))
		return fs_seterr("bad modality list '%s'", s ? s : "(null)");
	memcpy(buf, s, strlen(s) + 1);
	for (tok = strtok_r(buf, ", ", &save); tok != NULL;
	     tok = strtok_r(NULL, ", ", &save)) {
		int m = img_modality_parse(tok), i;
		if (m < 0)
			return fs_seterr("unknown modality '%s' in '%s' "
			    "(expected t1, t1c, t2, flair)", tok, s);
		for (i = 0; i < n; i++)
			if (mods[i] == m)
				return fs_seterr("modality '%s' given twice in "
				    "'%s'", tok, s);
		if (n == IMG_NMOD)
			return fs_seterr("too many modalities in '%s'", s);
		mods[n++] = m;
	}
	if (n == 0)
		return fs_seterr("empty modality list '%s'", s);
	return n;
}

/* Converts nim's raw voxels to float with scaling. */
static int vol_to_float(const nifti_image *nim, const char *path, float *out,
    size_t n)
{
	double slope = nim->scl_slope, inter = nim->scl_inter;
	int scale = slope != 0.0 && isfinite(slope);
	size_t i;

	if (!isfinite(inter))
		inter = 0.0;
	if (!scale) {
		slope = 1.0;
		inter = 0.0;
	}
#define IMG_CONV(T)                                                       \
	do {                                                              \
		const T *src = (const T *)nim->data;                      \
		for (i = 0; i < n; i++)                                   \
			out[i] = (float)((double)src[i] * slope + inter); \
	} while (0)
	switch (nim->datatype) {
	case NIFTI_TYPE_UINT8: IMG_CONV(uint8_t); break;
	case NIFTI_TYPE_INT8: IMG_CONV(int8_t); break;
	case NIFTI_TYPE_INT16: IMG_CONV(int16_t); break;
	case NIFTI_TYPE_UINT16: IMG_CONV(uint16_t); break;
	case NIFTI_TYPE_INT32: IMG_CONV(int32_t); break;
	case NIFTI_TYPE_UINT32: IMG_CONV(uint32_t); break;
	case NIFTI_TYPE_INT64: IMG_CONV(int64_t); break;
	case NIFTI_TYPE_UINT64: IMG_CONV(uint64_t); break;
	case NIFTI_TYPE_FLOAT32: IMG_CONV(float); break;
	case NIFTI_TYPE_FLOAT64: IMG_CONV(double); break;
	default:
		return fs_seterr("%s: unsupported NIfTI datatype %s (%d)", path,
		    nifti_datatype_string(nim->datatype), nim->datatype);
	}
#undef IMG_CONV
	for (i = 0; i < n; i++) {
		if (!isfinite(out[i])) {
			size_t x = i % (size_t)nim->nx;
			size_t y = (i / (size_t)nim->nx) % (size_t)nim->ny;
			size_t z = i / ((size_t)nim->nx * (size_t)nim->ny);
			return fs_seterr("%s: non-finite voxel value (%s) at "
			    "x=%zu y=%zu z=%zu", path,
			    isnan(out[i]) ? "NaN" : "Inf", x, y, z);
		}
	}
	return 0;
}

static void vol_affine(const nifti_image *nim, double a[4][4])
{
	int i, j;
	const nifti_dmat44 *m = NULL;

	if (nim->sform_code > 0)
		m = &nim->sto_xyz;
	else if (nim->qform_code > 0)
		m = &nim->qto_xyz;
	for (i = 0; i < 4; i++)
		for (j = 0; j < 4; j++)
			a[i][j] = m ? m->m[i][j] : (i == j ? 1.0 : 0.0);
	if (m == NULL) {
		a[0][0] = nim->dx > 0 ? nim->dx : 1.0;
		a[1][1] = nim->dy > 0 ? nim->dy : 1.0;
		a[2][2] = nim->dz > 0 ? nim->dz : 1.0;
	}
}

/* Opens path with nifti_clib, checks it is one 3-D NIfTI volume, and reads
 * its voxels raw (native byte order) into nim->data. With index >= 0 the
 * file may be 4-D: volume `index` is read and the header made 3-D. */
static int vol_read_raw_index(const char *path, int index, nifti_image **pnim);

static int vol_read_raw(const char *path, nifti_image **pnim)
{
	return vol_read_raw_index(path, -1, pnim);
}

static int vol_read_raw_index(const char *path, int index, nifti_image **pnim)
{
	int64_t nt = 1;
	nifti_image *nim = NULL;
	gzFile gz = NULL;
	int zerr = Z_OK;
	struct stat st;
	size_t n, nbytes, got, cap = 0;
	int k, rv = -1;

	if (stat(path, &st) != 0) {
		fs_seterr("%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		fs_seterr("%s: not a regular file", path);
		goto out;
	}
	/* nifti_clib reads and checks the header and decides the data file
	 * and offset (extensions included). We read the voxels ourselves
	 * with zlib (plain files pass through gzread unchanged): the
	 * library's reader silently replaces NaN/Inf floats by 0 and does
	 * not notice a gzip stream cut inside its trailer. */
	nim = nifti_image_read(path, 0);
	if (nim == NULL || nim->iname == NULL) {
		fs_seterr("%s: not a readable NIfTI file (corrupt, truncated "
		    "header or not NIfTI)", path);
		goto out;
	}
	if (nim->nifti_type != NIFTI_FTYPE_NIFTI1_1 &&
	    nim->nifti_type != NIFTI_FTYPE_NIFTI1_2 &&
	    nim->nifti_type != NIFTI_FTYPE_NIFTI2_1 &&
	    nim->nifti_type != NIFTI_FTYPE_NIFTI2_2) {
		fs_seterr("%s: not a NIfTI-1 or NIfTI-2 file (ANALYZE or "
		    "ASCII)", path);
		goto out;
	}
	if (index >= 0 && nim->dim[0] >= 4 && nim->dim[4] > 1)
		nt = nim->dim[4];
	if (index >= nt) {
		fs_seterr("%s: has %lld volume(s); volume %d asked for", path,
		    (long long)nt, index);
		goto out;
	}
	for (k = 4; k <= 7 && k <= nim->dim[0]; k++) {
		if (nim->dim[k] > 1 && !(k == 4 && index >= 0)) {
			fs_seterr("%s: has %lld volumes along dimension %d; one "
			    "3-D volume expected", path,
			    (long long)nim->dim[k], k);
			goto out;
		}
	}
	if (nim->nx < 1 || nim->ny < 1 || nim->nz < 1 ||
	    nim->nx > 100000 || nim->ny > 100000 || nim->nz > 100000 ||
	    (double)nim->nx * (double)nim->ny * (double)nim->nz > 2e9) {
		fs_seterr("%s: bad dimensions %lldx%lldx%lld", path,
		    (long long)nim->nx, (long long)nim->ny, (long long)nim->nz);
		goto out;
	}
	n = (size_t)nim->nx * (size_t)nim->ny * (size_t)nim->nz;
	if ((size_t)nim->nvox != n * (size_t)nt) {
		fs_seterr("%s: voxel count %lld does not match %zu", path,
		    (long long)nim->nvox, n);
		goto out;
	}
	if (nim->nbyper < 1 || nim->nbyper > 8) {
		fs_seterr("%s: unsupported NIfTI datatype %s (%d)", path,
		    nifti_datatype_string(nim->datatype), nim->datatype);
		goto out;
	}
	nbytes = n * (size_t)nim->nbyper;
	free(nim->data);
	nim->data = NULL;
	gz = gzopen(nim->iname, "rb");
	if (gz == NULL) {
		fs_seterr("%s: %s", nim->iname, strerror(errno));
		goto out;
	}
	if (nt > 1) {
		/* One volume of a 4-D file: its bytes, and a 3-D header so
		 * that outputs written on it are 3-D. */
		nim->iname_offset += (int64_t)index * (int64_t)nbytes;
		nim->dim[4] = 1;
		nim->dim[0] = 3;
		for (k = 5; k <= 7; k++)
			nim->dim[k] = 1;
		nifti_update_dims_from_array(nim);
	}
	if (nim->iname_offset < 0 ||
	    gzseek(gz, (z_off_t)nim->iname_offset, SEEK_SET) !=
	    (z_off_t)nim->iname_offset) {
		fs_seterr("%s: cannot reach the voxel data at offset %lld "
		    "(truncated file?)", path, (long long)nim->iname_offset);
		goto out;
	}
	/* Ask for one byte more than the data: zlib reports a stream cut
	 * inside its trailer only when a read reaches past the data. A
	 * plain file may carry bytes after the data. The buffer grows as the
	 * data arrives (from 64 MiB, doubling), so that a small file whose
	 * header claims gigabytes fails as truncated instead of making us
	 * allocate what the header says (found by fuzz_nifti). */
	for (got = 0; got < nbytes;) {
		if (got == cap) {
			size_t ncap = cap ? 2 * cap : (size_t)64 << 20;
			if (ncap > nbytes + 1)
				ncap = nbytes + 1;
			void *p = realloc(nim->data, ncap);
			if (p == NULL) {
				fs_seterr("%s: out of memory", path);
				goto out;
			}
			nim->data = p;
			cap = ncap;
		}
		size_t want = cap - got;
		int r;
		if (want > (1u << 30))
			want = 1u << 30;
		r = gzread(gz, (char *)nim->data + got, (unsigned)want);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	(void)gzerror(gz, &zerr);
	if (got < nbytes) {
		fs_seterr("%s: truncated NIfTI file (%zu of %zu voxel bytes)",
		    path, got, nbytes);
		goto out;
	}
	if (zerr != Z_OK && zerr != Z_STREAM_END) {
		fs_seterr("%s: damaged or truncated gzip stream", path);
		goto out;
	}
	if (nim->swapsize > 1 && nim->byteorder != nifti_short_order())
		nifti_swap_Nbytes((int64_t)n, nim->swapsize, nim->data);
	*pnim = nim;
	nim = NULL;
	rv = 0;
out:
	if (gz != NULL)
		gzclose(gz);
	if (nim != NULL)
		nifti_image_free(nim);
	return rv;
}

int img_volume_read(const char *path, img_volume *out)
{
	return img_volume_read_index(path, -1, out);
}

int img_volume_read_index(const char *path, int index, img_volume *out)
{
	nifti_image *nim = NULL;
	float *data = NULL;
	char *pcopy = NULL;
	size_t n;
	int rv = -1;

	if (vol_read_raw_index(path, index, &nim) != 0)
		goto out;
	n = (size_t)nim->nvox;
	data = malloc(n * sizeof(float));
	pcopy = strdup(path);
	if (data == NULL || pcopy == NULL) {
		fs_seterr("%s: out of memory", path);
		goto out;
	}
	if (vol_to_float(nim, path, data, n) != 0)
		goto out;
	free(nim->data);
	nim->data = NULL;

	memset(out, 0, sizeof(*out));
	out->nx = (int)nim->nx;
	out->ny = (int)nim->ny;
	out->nz = (int)nim->nz;
	out->data = data;
	vol_affine(nim, out->affine);
	out->spacing[0] = nim->dx > 0 ? nim->dx : 1.0;
	out->spacing[1] = nim->dy > 0 ? nim->dy : 1.0;
	out->spacing[2] = nim->dz > 0 ? nim->dz : 1.0;
	out->hdr = nim;
	out->path = pcopy;
	data = NULL;
	pcopy = NULL;
	nim = NULL;
	rv = 0;
out:
	if (nim != NULL)
		nifti_image_free(nim);
	free(data);
	free(pcopy);
	return rv;
}

void img_volume_free(img_volume *v)
{
	if (v == NULL)
		return;
	if (v->hdr != NULL)
		nifti_image_free((nifti_image *)v->hdr);
	free(v->data);
	free(v->path);
	memset(v, 0, sizeof(*v));
}

int img_grid_check(const img_volume *a, const img_volume *b)
{
	int i, j;

	if (a->nx != b->nx || a->ny != b->ny || a->nz != b->nz)
		return fs_seterr("grid mismatch: %s is %dx%dx%d but %s is "
		    "%dx%dx%d", a->path ? a->path : "(volume)", a->nx, a->ny,
		    a->nz, b->path ? b->path : "(volume)", b->nx, b->ny,
		    b->nz);
	for (i = 0; i < 3; i++)
		for (j = 0; j < 4; j++)
			if (fabs(a->affine[i][j] - b->affine[i][j]) > 1e-3)
				return fs_seterr("grid mismatch: %s and %s "
				    "have different voxel-to-world affines "
				    "(row %d col %d: %g vs %g%s)",
				    a->path ? a->path : "(volume)",
				    b->path ? b->path : "(volume)", i, j,
				    a->affine[i][j], b->affine[i][j],
				    img_affine_lr_flipped(a, b) ?
				    "; left/right flipped" : "");
	return 0;
}

int img_volume_header_copy(const img_volume *src, img_volume *dst)
{
	nifti_image *h = NULL;
	char *p = NULL;

	if (src->hdr != NULL) {
		h = nifti_copy_nim_info((const nifti_image *)src->hdr);
		if (h == NULL)
			return fs_seterr("out of memory copying header");
		free(h->data);
		h->data = NULL;
	}
	if (src->path != NULL && (p = strdup(src->path)) == NULL) {
		if (h)
			nifti_image_free(h);
		return fs_seterr("out of memory");
	}
	memcpy(dst, src, sizeof(*dst));
	dst->data = NULL;
	dst->hdr = h;
	dst->path = p;
	return 0;
}

static int ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcmp(s + a - b, suf) == 0;
}

static void fsync_dir(const char *path)
{
	char *copy = strdup(path), *slash;
	int fd;

	if (copy == NULL)
		return;
	slash = strrchr(copy, '/');
	if (slash == NULL)
		strcpy(copy, ".");
	else if (slash == copy)
		copy[1] = '\0';
	else
		*slash = '\0';
	fd = open(copy, O_RDONLY | O_DIRECTORY);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
	free(copy);
}

/* Writes nvox voxels of `datatype` from `buf` on like's header, atomically. */
static int vol_write(const char *path, const img_volume *like, int datatype,
    const void *buf, double cal_min, double cal_max)
{
	static unsigned counter;
	nifti_image *nim = NULL, *back = NULL;
	char *tmp = NULL;
	const char *base, *slash;
	size_t nbytes;
	int fd, rv = -1, made = 0, nbyper, swapsize;

	if (like == NULL || like->hdr == NULL)
		return fs_seterr("%s: no reference header to write on", path);
	if (!ends_with(path, ".nii") && !ends_with(path, ".nii.gz"))
		return fs_seterr("%s: output name must end in .nii or .nii.gz",
		    path);
	slash = strrchr(path, '/');
	base = slash ? slash + 1 : path;
	if (asprintf(&tmp, "%.*s.tmp-%d-%u-%s",
	    slash ? (int)(slash - path + 1) : 0, path, (int)getpid(),
	    __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED), base) < 0) {
		tmp = NULL;
		fs_seterr("%s: out of memory", path);
		goto out;
	}
	/* Reserve the temp name; this also tells us early whether the
	 * directory is writable. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		fs_seterr("cannot write %s: %s", path, strerror(errno));
		goto out;
	}
	close(fd);
	made = 1;

	nim = nifti_copy_nim_info((const nifti_image *)like->hdr);
	if (nim == NULL) {
		fs_seterr("%s: out of memory", path);
		goto out;
	}
	free(nim->data);
	nim->data = NULL;
	nifti_free_extensions(nim);
	nifti_datatype_sizes(datatype, &nbyper, &swapsize);
	nim->datatype = datatype;
	nim->nbyper = nbyper;
	nim->swapsize = swapsize;
	nim->scl_slope = 1.0;
	nim->scl_inter = 0.0;
	nim->cal_min = cal_min;
	nim->cal_max = cal_max;
	if (nim->nifti_type == NIFTI_FTYPE_NIFTI2_1 ||
	    nim->nifti_type == NIFTI_FTYPE_NIFTI2_2)
		nim->nifti_type = NIFTI_FTYPE_NIFTI2_1;
	else
		nim->nifti_type = NIFTI_FTYPE_NIFTI1_1;
	if (nifti_set_filenames(nim, tmp, 0, 1) != 0) {
		fs_seterr("%s: bad output file name", path);
		goto out;
	}
	nim->byteorder = nifti_short_order();
	nbytes = (size_t)nim->nvox * (size_t)nbyper;
	nim->data = (void *)buf;
	nifti_image_write(nim);
	nim->data = NULL;

	/* nifti_image_write reports no status: read the file back. */
	if (vol_read_raw(tmp, &back) != 0 || back->nvox != nim->nvox ||
	    back->datatype != datatype ||
	    memcmp(back->data, buf, nbytes) != 0) {
		fs_seterr("cannot write %s: written file does not read back "
		    "(disk full or I/O error?)", path);
		goto out;
	}
	fd = open(tmp, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) != 0) {
		fs_seterr("cannot write %s: fsync: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto out;
	}
	close(fd);
	if (rename(tmp, path) != 0) {
		fs_seterr("cannot write %s: rename: %s", path, strerror(errno));
		goto out;
	}
	made = 0;
	fsync_dir(path);
	rv = 0;
out:
	if (made)
		unlink(tmp);
	if (nim != NULL)
		nifti_image_free(nim);
	if (back != NULL)
		nifti_image_free(back);
	free(tmp);
	return rv;
}

int img_labels_write(const char *path, const img_volume *like,
    const uint8_t *labels)
{
	size_t i, n = (size_t)like->nx * like->ny * like->nz;
	uint8_t mx = 0;

	for (i = 0; i < n; i++)
		if (labels[i] > mx)
			mx = labels[i];
	return vol_write(path, like, NIFTI_TYPE_UINT8, labels, 0.0, mx);
}

int img_volume_write_float(const char *path, const img_volume *like,
    const float *data)
{
	return vol_write(path, like, NIFTI_TYPE_FLOAT32, data, 0.0, 0.0);
}

int img_labels_read(const char *path, uint8_t **lab, img_volume *vol)
{
	img_volume v;
	uint8_t *l = NULL;
	size_t i, n;

	if (img_volume_read(path, &v) != 0)
		return -1;
	n = (size_t)v.nx * v.ny * v.nz;
	l = malloc(n ? n : 1);
	if (l == NULL) {
		img_volume_free(&v);
		return fs_seterr("%s: out of memory", path);
	}
	for (i = 0; i < n; i++) {
		float f = v.data[i], r = roundf(f);
		if (fabsf(f - r) > 1e-3f || r < 0.0f || r > 255.0f) {
			fs_seterr("%s: label value %g at voxel %zu is not an "
			    "integer in 0..255", path, (double)f, i);
			free(l);
			img_volume_free(&v);
			return -1;
		}
		l[i] = (uint8_t)r;
	}
	free(v.data);
	v.data = NULL;
	*lab = l;
	if (vol != NULL)
		*vol = v;
	else
		img_volume_free(&v);
	return 0;
}

int img_volume_probe(const char *path, int dims[4])
{
	nifti_image *nim;
	struct stat st;
	int k;

	if (stat(path, &st) != 0)
		return fs_seterr("%s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return fs_seterr("%s: not a regular file", path);
	/* Quiet: the caller reports the reason in one line. */
	nifti_set_debug_level(0);
	nim = nifti_image_read(path, 0);
	nifti_set_debug_level(1);
	if (nim == NULL || nim->iname == NULL) {
		if (nim)
			nifti_image_free(nim);
		return fs_seterr("%s: not a readable NIfTI file (corrupt, "
		    "truncated header or not NIfTI)", path);
	}
	if (nim->nifti_type == NIFTI_FTYPE_ANALYZE ||
	    nim->nifti_type == NIFTI_FTYPE_ASCII) {
		nifti_image_free(nim);
		return fs_seterr("%s: not a NIfTI-1 or NIfTI-2 file (ANALYZE or "
		    "ASCII)", path);
	}
	dims[0] = (int)nim->nx;
	dims[1] = (int)nim->ny;
	dims[2] = (int)nim->nz;
	dims[3] = nim->dim[0] >= 4 && nim->dim[4] > 1 ? (int)nim->dim[4] : 1;
	for (k = 5; k <= 7 && k <= nim->dim[0]; k++)
		if (nim->dim[k] > 1)
			dims[3] = -(int)nim->dim[k]; /* 5-D and up: refused */
	nifti_image_free(nim);
	return 0;
}

int img_affine_lr_flipped(const img_volume *a, const img_volume *b)
{
	/* The world x (left-right) component of the voxel x axis. */
	double ax = a->affine[0][0], bx = b->affine[0][0];
	return (ax > 0 && bx < 0) || (ax < 0 && bx > 0);
}
