/* case.c - loading one case: modalities on one grid, brain mask, crop,
 * z-score, labels as internal classes. See imaging.h. */
#include "imaging.h"
#include "imaging_impl.h"

#include "base.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies the box of a full [nz][ny][nx] float volume. */
static void crop_f(const float *src, int nx, int ny, const int b[6],
    float *dst)
{
	int cx = b[3] - b[0], y, z;
	size_t o = 0;

	for (z = b[2]; z < b[5]; z++)
		for (y = b[1]; y < b[4]; y++) {
			memcpy(dst + o, src + ((size_t)z * ny + y) * nx + b[0],
			    (size_t)cx * sizeof(float));
			o += (size_t)cx;
		}
}

static void crop_u8(const uint8_t *src, int nx, int ny, const int b[6],
    uint8_t *dst)
{
	int cx = b[3] - b[0], y, z;
	size_t o = 0;

	for (z = b[2]; z < b[5]; z++)
		for (y = b[1]; y < b[4]; y++) {
			memcpy(dst + o, src + ((size_t)z * ny + y) * nx + b[0],
			    (size_t)cx);
			o += (size_t)cx;
		}
}

void img_case_uncrop(const img_case *c, const uint8_t *cropped, uint8_t *full)
{
	int y, z;
	size_t o = 0;

	memset(full, 0, (size_t)c->nx * c->ny * c->nz);
	for (z = c->box[2]; z < c->box[5]; z++)
		for (y = c->box[1]; y < c->box[4]; y++) {
			memcpy(full + ((size_t)z * c->ny + y) * c->nx +
			    c->box[0], cropped + o, (size_t)c->cx);
			o += (size_t)c->cx;
		}
}

void img_case_free(img_case *c)
{
	if (c == NULL)
		return;
	free(c->id);
	free(c->img);
	free(c->mask);
	free(c->label);
	img_volume_free(&c->ref);
	memset(c, 0, sizeof(*c));
}

static int clampi(int v, int lo, int hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* Adds the --resample hint to a grid-mismatch error. */
static void resample_hint(const img_case_ref *ref)
{
	char msg[1024];

	snprintf(msg, sizeof(msg), "%s", fs_error());
	fs_seterr("case %s: %s (--resample puts it on the first modality's "
	    "grid)", ref->id, msg);
}

/* Checks v against grid g; with ref->resample, replaces v by its
 * resampling onto g (nearest for masks) instead of failing. */
static int on_grid(const img_case_ref *ref, const img_volume *g,
    img_volume *v, int nearest)
{
	img_volume r;

	if (img_grid_check(g, v) == 0)
		return 0;
	if (!ref->resample) {
		resample_hint(ref);
		return -1;
	}
	fs_log(FS_LOG_INFO, "imaging", "case %s: resampling a volume onto the "
	    "grid of the first modality (%s; paths at debug level)", ref->id,
	    nearest ? "nearest" : "trilinear");
	fs_log(FS_LOG_DEBUG, "imaging", "case %s: resampling %s onto the grid "
	    "of %s (%s)", ref->id, v->path, g->path, nearest ? "nearest" :
	    "trilinear");
	if (img_resample(v, g, nearest, &r) != 0)
		return -1;
	img_volume_free(v);
	*v = r;
	return 0;
}

/* Resamples a uint8 label map (on lvol's grid) onto g, nearest. */
static int labels_onto(uint8_t **lab, img_volume *lvol, const img_volume *g)
{
	size_t n = (size_t)lvol->nx * lvol->ny * lvol->nz, gn, i;
	img_volume r;
	uint8_t *nl;
	int rv;

	fs_log(FS_LOG_DEBUG, "imaging", "resampling labels %s onto the grid of "
	    "%s (nearest)", lvol->path, g->path);
	lvol->data = malloc(n * sizeof(float));
	if (lvol->data == NULL)
		return fs_seterr("out of memory");
	for (i = 0; i < n; i++)
		lvol->data[i] = (*lab)[i];
	rv = img_resample(lvol, g, 1, &r);
	free(lvol->data);
	lvol->data = NULL;
	if (rv != 0)
		return -1;
	gn = (size_t)g->nx * g->ny * g->nz;
	nl = malloc(gn ? gn : 1);
	if (nl == NULL) {
		img_volume_free(&r);
		return fs_seterr("out of memory");
	}
	for (i = 0; i < gn; i++)
		nl[i] = (uint8_t)r.data[i];
	img_volume_free(&r);
	free(*lab);
	*lab = nl;
	return 0;
}

int img_case_load(const img_case_ref *ref, const int *mods, int nmod,
    int margin, int want_label, img_case *out)
{
	img_volume vol[IMG_NMOD], mvol, lvol;
	uint8_t *fmask = NULL, *lab = NULL;
	img_case c;
	size_t n = 0, cn, i;
	int m, k, x, y, z, rv = -1;
	int lo[3] = {0, 0, 0}, hi[3] = {-1, -1, -1};

	memset(vol, 0, sizeof(vol));
	memset(&mvol, 0, sizeof(mvol));
	memset(&lvol, 0, sizeof(lvol));
	memset(&c, 0, sizeof(c));
	if (nmod < 1 || nmod > IMG_NMOD)
		return fs_seterr("case %s: bad modality count %d", ref->id,
		    nmod);
	if (margin < 0)
		margin = 0;
	c.id = strdup(ref->id);
	if (c.id == NULL) {
		fs_seterr("out of memory");
		goto out;
	}
	c.nmod = nmod;

	/* All modalities on one grid. */
	for (m = 0; m < nmod; m++) {
		const char *p = (mods[m] >= 0 && mods[m] < IMG_NMOD) ?
		    ref->paths[mods[m]] : NULL;
		if (p == NULL) {
			fs_seterr("case %s: no %s image", ref->id,
			    img_modality_name(mods[m]));
			goto out;
		}
		if (img_volume_read_index(p, ref->volume[mods[m]] - 1,
		    &vol[m]) != 0)
			goto out;
		if (m > 0 && on_grid(ref, &vol[0], &vol[m], 0) != 0)
			goto out;
	}
	c.nx = vol[0].nx;
	c.ny = vol[0].ny;
	c.nz = vol[0].nz;
	n = (size_t)c.nx * c.ny * c.nz;

	/* Brain mask on the full grid. */
	fmask = calloc(n, 1);
	if (fmask == NULL) {
		fs_seterr("case %s: out of memory", ref->id);
		goto out;
	}
	if (ref->mask != NULL) {
		if (img_volume_read(ref->mask, &mvol) != 0 ||
		    on_grid(ref, &vol[0], &mvol, 1) != 0)
			goto out;
		for (i = 0; i < n; i++)
			fmask[i] = mvol.data[i] > 0.5f;
		img_volume_free(&mvol);
	} else {
		for (m = 0; m < nmod; m++)
			for (i = 0; i < n; i++)
				fmask[i] |= vol[m].data[i] != 0.0f;
	}
	for (z = 0; z < c.nz; z++)
		for (y = 0; y < c.ny; y++) {
			const uint8_t *row = fmask + ((size_t)z * c.ny + y) *
			    c.nx;
			for (x = 0; x < c.nx; x++) {
				if (!row[x])
					continue;
				if (hi[0] < 0) {
					lo[0] = hi[0] = x;
					lo[1] = hi[1] = y;
					lo[2] = hi[2] = z;
				}
				if (x < lo[0]) lo[0] = x;
				if (x > hi[0]) hi[0] = x;
				if (y < lo[1]) lo[1] = y;
				if (y > hi[1]) hi[1] = y;
				if (z < lo[2]) lo[2] = z;
				if (z > hi[2]) hi[2] = z;
			}
		}
	if (hi[0] < 0) {
		fs_seterr("case %s: empty brain mask (%s)", ref->id,
		    ref->mask ? ref->mask : "all images are zero");
		goto out;
	}
	c.box[0] = clampi(lo[0] - margin, 0, c.nx);
	c.box[1] = clampi(lo[1] - margin, 0, c.ny);
	c.box[2] = clampi(lo[2] - margin, 0, c.nz);
	c.box[3] = clampi(hi[0] + 1 + margin, 0, c.nx);
	c.box[4] = clampi(hi[1] + 1 + margin, 0, c.ny);
	c.box[5] = clampi(hi[2] + 1 + margin, 0, c.nz);
	c.cx = c.box[3] - c.box[0];
	c.cy = c.box[4] - c.box[1];
	c.cz = c.box[5] - c.box[2];
	cn = (size_t)c.cx * c.cy * c.cz;

	c.mask = malloc(cn);
	c.img = malloc((size_t)nmod * cn * sizeof(float));
	if (c.mask == NULL || c.img == NULL) {
		fs_seterr("case %s: out of memory", ref->id);
		goto out;
	}
	crop_u8(fmask, c.nx, c.ny, c.box, c.mask);
	free(fmask);
	fmask = NULL;

	for (m = 0; m < nmod; m++) {
		float *dst = c.img + (size_t)m * cn;
		double sum = 0.0, sq = 0.0, mean = 0.0, sd = 1.0;
		size_t cnt = 0;

		crop_f(vol[m].data, c.nx, c.ny, c.box, dst);
		if (m == 0) {
			if (img_volume_header_copy(&vol[0], &c.ref) != 0)
				goto out;
		}
		img_volume_free(&vol[m]);
		for (i = 0; i < cn; i++)
			if (c.mask[i]) {
				sum += dst[i];
				cnt++;
			}
		if (!ref->prenormalised && cnt > 0) {
			mean = sum / (double)cnt;
			for (i = 0; i < cn; i++)
				if (c.mask[i]) {
					double d = dst[i] - mean;
					sq += d * d;
				}
			sd = sqrt(sq / (double)cnt);
			if (!(sd > 1e-8))
				sd = 1.0;
		}
		for (i = 0; i < cn; i++)
			dst[i] = c.mask[i] ? (ref->prenormalised ? dst[i] :
			    (float)((dst[i] - mean) / sd)) : 0.0f;
	}

	if (want_label && ref->label != NULL) {
		size_t inside = 0, total = 0;
		int conv = ref->label_conv;

		if (img_labels_read(ref->label, &lab, &lvol) != 0)
			goto out;
		lvol.data = NULL;
		if (img_grid_check(&c.ref, &lvol) != 0) {
			if (!ref->resample) {
				resample_hint(ref);
				goto out;
			}
			if (labels_onto(&lab, &lvol, &c.ref) != 0)
				goto out;
		}
		if (conv < 0)
			conv = (int)img_label_conv_guess(lab, n);
		if (img_labels_to_classes(lab, n, (img_label_conv)conv) != 0) {
			fs_preferr("%s", ref->label);
			goto out;
		}
		c.label = malloc(cn);
		if (c.label == NULL) {
			fs_seterr("case %s: out of memory", ref->id);
			goto out;
		}
		crop_u8(lab, c.nx, c.ny, c.box, c.label);
		for (i = 0; i < n; i++)
			total += lab[i] != 0;
		for (i = 0; i < cn; i++)
			inside += c.label[i] != 0;
		if (inside != total)
			fs_log(FS_LOG_WARN, "imaging", "case %s: %zu of %zu "
			    "tumour voxels of its label lie outside the "
			    "brain-mask box and are dropped", ref->id,
			    total - inside, total);
	}
	*out = c;
	memset(&c, 0, sizeof(c));
	rv = 0;
out:
	for (k = 0; k < IMG_NMOD; k++)
		img_volume_free(&vol[k]);
	img_volume_free(&mvol);
	img_volume_free(&lvol);
	free(fmask);
	free(lab);
	img_case_free(&c);
	return rv;
}
