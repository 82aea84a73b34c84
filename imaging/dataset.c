/* dataset.c - finding cases on disk: manifests (CSV, JSON), BraTS
 * 2017-2021 and 2023 case folders, DeepMedic BRATS 2013 folders, and the
 * walk that hands MSD, BIDS and Flywheel folders to layouts.c.
 * See imaging.h, docs/imaging.md and docs/data.md. */
#define _GNU_SOURCE
#include "imaging.h"
#include "scan.h"

#include "base.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define IMG_MANIFEST_CSV "fedseg-manifest.csv"
#define IMG_MANIFEST_JSON "fedseg-manifest.json"
#define IMG_SCAN_DEPTH 6
#define IMG_MAX_MANIFEST (64u << 20)

static const char *slot_name(int s)
{
	if (s == SLOT_LABEL)
		return "label";
	if (s == SLOT_MASK)
		return "mask";
	return img_modality_name(s);
}

static void scan_case_free(scan_case *c)
{
	int s;

	free(c->id);
	free(c->where);
	for (s = 0; s < SLOT_N; s++) {
		free(c->file[s]);
		free(c->dupfile[s]);
	}
	memset(c, 0, sizeof(*c));
}

static void scan_list_free(scan_list *l)
{
	int i;

	for (i = 0; i < l->n; i++)
		scan_case_free(&l->v[i]);
	free(l->v);
	free(l->dev);
	free(l->ino);
	for (i = 0; i < l->nskip; i++) {
		free(l->skip[i].path);
		free(l->skip[i].id);
		free(l->skip[i].reason);
	}
	free(l->skip);
	memset(l, 0, sizeof(*l));
}

int scan_skip(scan_list *l, const char *path, const char *id,
    const char *fmt, ...)
{
	img_skip *k;
	va_list ap;
	char *r = NULL;

	if (l->nskip == l->capskip) {
		int cap = l->capskip ? 2 * l->capskip : 8;
		img_skip *v = realloc(l->skip, (size_t)cap * sizeof(*v));
		if (v == NULL)
			return fs_seterr("out of memory");
		l->skip = v;
		l->capskip = cap;
	}
	va_start(ap, fmt);
	if (vasprintf(&r, fmt, ap) < 0)
		r = NULL;
	va_end(ap);
	k = &l->skip[l->nskip];
	k->path = strdup(path ? path : "");
	k->id = id ? strdup(id) : NULL;
	k->reason = r;
	if (k->path == NULL || r == NULL || (id && k->id == NULL)) {
		free(k->path);
		free(k->id);
		free(r);
		return fs_seterr("out of memory");
	}
	l->nskip++;
	/* Paths and reasons (which name files) may hold patient data: they go
	 * to the debug level only; `fedseg data scan` shows them on request. */
	fs_log(FS_LOG_WARN, "imaging", "skipping %s%s (the reason is logged "
	    "at debug level; `fedseg data scan` lists it)", id ? "case " :
	    "an entry of the data folder", id ? id : "");
	fs_log(FS_LOG_DEBUG, "imaging", "skipping %s%s: %s", id ? "case " :
	    "", id ? id : path, r);
	return 0;
}

/* Finds or adds the case `id` found in `where`. NULL on out of memory. */
scan_case *scan_get(scan_list *l, const char *id, const char *where)
{
	scan_case *c;
	int i;

	for (i = 0; i < l->n; i++)
		if (strcmp(l->v[i].id, id) == 0 &&
		    strcmp(l->v[i].where, where) == 0)
			return &l->v[i];
	if (l->n == l->cap) {
		int cap = l->cap ? 2 * l->cap : 16;
		scan_case *v = realloc(l->v, (size_t)cap * sizeof(*v));
		if (v == NULL)
			return NULL;
		l->v = v;
		l->cap = cap;
	}
	c = &l->v[l->n];
	memset(c, 0, sizeof(*c));
	c->id = strdup(id);
	c->where = strdup(where);
	c->label_conv = -1;
	if (c->id == NULL || c->where == NULL) {
		scan_case_free(c);
		return NULL;
	}
	l->n++;
	return c;
}

int scan_set(scan_case *c, int slot, const char *path)
{
	if (c->file[slot] != NULL) {
		if (strcmp(c->file[slot], path) == 0)
			return 0;
		c->dup[slot] = 1;
		if (c->dupfile[slot] == NULL &&
		    (c->dupfile[slot] = strdup(path)) == NULL)
			return fs_seterr("out of memory");
		return 0;
	}
	c->file[slot] = strdup(path);
	return c->file[slot] ? 0 : fs_seterr("out of memory");
}

/* ---- folder layouts ---------------------------------------------------- */

int scan_has_nii_ext(const char *name, size_t *stem)
{
	size_t n = strlen(name);

	if (n > 7 && strcmp(name + n - 7, ".nii.gz") == 0) {
		*stem = n - 7;
		return 1;
	}
	if (n > 4 && strcmp(name + n - 4, ".nii") == 0) {
		*stem = n - 4;
		return 1;
	}
	return 0;
}

struct suffix_rule {
	const char *suffix;  /* after the case id, before .nii(.gz) */
	int slot;
	int year;            /* 2017 or 2023 naming */
};

static const struct suffix_rule img_suffixes[] = {
	{"_t1", IMG_T1, 2017},
	{"_t1ce", IMG_T1C, 2017},
	{"_t2", IMG_T2, 2017},
	{"_flair", IMG_FLAIR, 2017},
	{"_seg", SLOT_LABEL, 2017},
	{"-t1n", IMG_T1, 2023},
	{"-t1c", IMG_T1C, 2023},
	{"-t2w", IMG_T2, 2023},
	{"-t2f", IMG_FLAIR, 2023},
	{"-seg", SLOT_LABEL, 2023},
};

/* DeepMedic's BRATS 2013 example folders (pre-normalised, with a mask). */
static const struct {
	const char *stem;
	int slot;
} img_deepmedic[] = {
	{"Flair_subtrMeanDivStd", IMG_FLAIR},
	{"T1c_subtrMeanDivStd", IMG_T1C},
	{"T1_subtrMeanDivStd", IMG_T1},
	{"T2_subtrMeanDivStd", IMG_T2},
	{"brainmask", SLOT_MASK},
	{"OTMultiClass", SLOT_LABEL},
};

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int scan_dir(scan_list *l, const char *dir, int depth);

/* Looks at the files of one folder (names sorted). */
static int scan_files(scan_list *l, const char *dir, char **names, int n)
{
	char path[4096], id[1024];
	const char *base;
	size_t stem, k;
	int i, dm = 0;

	base = strrchr(dir, '/');
	base = (base && base[1]) ? base + 1 : dir;
	/* DeepMedic: the folder is the case. */
	for (i = 0; i < n; i++)
		if (scan_has_nii_ext(names[i], &stem) && stem == 21 &&
		    strncmp(names[i], "Flair_subtrMeanDivStd", stem) == 0)
			dm = 1;
	for (i = 0; i < n; i++) {
		const char *nm = names[i];
		if (!scan_has_nii_ext(nm, &stem))
			continue;
		if (fs_path(path, sizeof(path), "%s/%s", dir, nm) != 0)
			return -1;
		if (dm) {
			for (k = 0; k < sizeof(img_deepmedic) /
			     sizeof(img_deepmedic[0]); k++) {
				const char *s = img_deepmedic[k].stem;
				scan_case *c;
				if (strlen(s) != stem || strncmp(nm, s, stem))
					continue;
				c = scan_get(l, base, dir);
				if (c == NULL)
					return fs_seterr("out of memory");
				c->prenormalised = 1;
				c->label_conv = IMG_LABELS_BRATS2013;
				l->layouts |= SCAN_L_DEEPMEDIC;
				if (scan_set(c, img_deepmedic[k].slot, path))
					return -1;
			}
			continue;
		}
		for (k = 0; k < sizeof(img_suffixes) / sizeof(img_suffixes[0]);
		     k++) {
			const struct suffix_rule *r = &img_suffixes[k];
			size_t sl = strlen(r->suffix);
			scan_case *c;
			if (stem <= sl || strncasecmp(nm + stem - sl, r->suffix,
			    sl) != 0)
				continue;
			if (stem - sl >= sizeof(id))
				continue;
			memcpy(id, nm, stem - sl);
			id[stem - sl] = '\0';
			c = scan_get(l, id, dir);
			if (c == NULL)
				return fs_seterr("out of memory");
			l->layouts |= SCAN_L_BRATS;
			if (r->slot == SLOT_LABEL)
				c->label_conv = r->year == 2023 ?
				    IMG_LABELS_BRATS2023 : -1;
			if (scan_set(c, r->slot, path))
				return -1;
		}
	}
	return 0;
}

static int scan_visited(scan_list *l, const struct stat *st)
{
	int i;

	for (i = 0; i < l->nvis; i++)
		if (l->dev[i] == st->st_dev && l->ino[i] == st->st_ino)
			return 1;
	if (l->nvis == l->capvis) {
		int cap = l->capvis ? 2 * l->capvis : 32;
		dev_t *d = realloc(l->dev, (size_t)cap * sizeof(*d));
		ino_t *in;
		if (d == NULL)
			return -1;
		l->dev = d;
		in = realloc(l->ino, (size_t)cap * sizeof(*in));
		if (in == NULL)
			return -1;
		l->ino = in;
		l->capvis = cap;
	}
	l->dev[l->nvis] = st->st_dev;
	l->ino[l->nvis] = st->st_ino;
	l->nvis++;
	return 0;
}

void scan_names_free(char **v, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

int scan_list_dir(const char *dir, char ***files, int *nf, char ***dirs,
    int *nd)
{
	DIR *d;
	struct dirent *e;
	struct stat st;
	char path[4096];
	int cf = 0, cd = 0, rv = -1;

	*files = *dirs = NULL;
	*nf = *nd = 0;
	d = opendir(dir);
	if (d == NULL)
		return fs_seterr("%s: %s", dir, strerror(errno));
	while ((e = readdir(d)) != NULL) {
		char ***arr;
		int *na, *ca;
		if (e->d_name[0] == '.')
			continue;
		if (fs_path(path, sizeof(path), "%s/%s", dir, e->d_name) != 0)
			goto out;
		if (stat(path, &st) != 0)
			continue; /* dangling link */
		if (S_ISDIR(st.st_mode)) {
			arr = dirs; na = nd; ca = &cd;
		} else if (S_ISREG(st.st_mode)) {
			arr = files; na = nf; ca = &cf;
		} else {
			continue;
		}
		if (*na == *ca) {
			int cap = *ca ? 2 * *ca : 16;
			char **a = realloc(*arr, (size_t)cap * sizeof(*a));
			if (a == NULL) {
				fs_seterr("out of memory");
				goto out;
			}
			*arr = a;
			*ca = cap;
		}
		if (((*arr)[*na] = strdup(e->d_name)) == NULL) {
			fs_seterr("out of memory");
			goto out;
		}
		(*na)++;
	}
	if (*nf)
		qsort(*files, (size_t)*nf, sizeof(**files), name_cmp);
	if (*nd)
		qsort(*dirs, (size_t)*nd, sizeof(**dirs), name_cmp);
	rv = 0;
out:
	closedir(d);
	if (rv != 0) {
		scan_names_free(*files, *nf);
		scan_names_free(*dirs, *nd);
		*files = *dirs = NULL;
		*nf = *nd = 0;
	}
	return rv;
}

int scan_is_brats_folder(char **files, int nf)
{
	char first[1024] = "";
	size_t stem, k;
	int i, slots = 0;

	for (i = 0; i < nf; i++) {
		const char *nm = files[i];
		if (!scan_has_nii_ext(nm, &stem))
			continue;
		if (stem == 21 && strncmp(nm, "Flair_subtrMeanDivStd", 21) == 0)
			return 1;
		for (k = 0; k < sizeof(img_suffixes) / sizeof(img_suffixes[0]);
		     k++) {
			size_t sl = strlen(img_suffixes[k].suffix);
			if (stem <= sl || stem - sl >= sizeof(first) ||
			    strncasecmp(nm + stem - sl, img_suffixes[k].suffix,
			    sl) != 0)
				continue;
			if (slots == 0) {
				memcpy(first, nm, stem - sl);
				first[stem - sl] = '\0';
				slots = 1;
			} else if (strlen(first) == stem - sl &&
			    strncmp(first, nm, stem - sl) == 0) {
				return 1; /* two slots of one id */
			}
		}
	}
	return 0;
}

static int has_name(char **v, int n, const char *name)
{
	int i;

	for (i = 0; i < n; i++)
		if (strcmp(v[i], name) == 0)
			return 1;
	return 0;
}

/* A BIDS root: dataset_description.json, or sub-* folders holding anat/
 * or ses-* folders. */
static int is_bids_root(const char *dir, char **files, int nf, char **dirs,
    int nd)
{
	char path[4096];
	struct stat st;
	int i;

	for (i = 0; i < nd; i++) {
		if (strncmp(dirs[i], "sub-", 4) != 0)
			continue;
		if (has_name(files, nf, "dataset_description.json"))
			return 1;
		if (fs_path(path, sizeof(path), "%s/%s/anat", dir, dirs[i]) == 0 &&
		    stat(path, &st) == 0 && S_ISDIR(st.st_mode))
			return 1;
	}
	return 0;
}

static int scan_dir(scan_list *l, const char *dir, int depth)
{
	struct stat st;
	char **files = NULL, **dirs = NULL, path[4096];
	int nf = 0, nd = 0, i, rv = -1, v;

	if (stat(dir, &st) != 0)
		return fs_seterr("%s: %s", dir, strerror(errno));
	v = scan_visited(l, &st);
	if (v < 0)
		return fs_seterr("out of memory");
	if (v == 1)
		return 0;
	if (scan_list_dir(dir, &files, &nf, &dirs, &nd) != 0)
		return -1;
	/* Layouts recognised by their root folder. */
	if (has_name(files, nf, "dataset.json") && has_name(dirs, nd,
	    "imagesTr")) {
		rv = scan_msd(l, dir);
		goto out;
	}
	if (has_name(dirs, nd, "SUBJECTS")) {
		rv = scan_fw_sync(l, dir);
		goto out;
	}
	if (is_bids_root(dir, files, nf, dirs, nd)) {
		rv = scan_bids(l, dir);
		goto out;
	}
	/* A Flywheel session of a tar download: acquisition folders. */
	v = scan_fw_tar_session(l, dir, dirs, nd, files, nf);
	if (v != 0) {
		rv = v < 0 ? -1 : 0;
		goto out;
	}
	if (scan_files(l, dir, files, nf) != 0)
		goto out;
	for (i = 0; i < nd; i++) {
		if (depth >= IMG_SCAN_DEPTH)
			break;
		if (fs_path(path, sizeof(path), "%s/%s", dir, dirs[i]) != 0)
			goto out;
		if (scan_dir(l, path, depth + 1) != 0)
			goto out;
	}
	rv = 0;
out:
	scan_names_free(files, nf);
	scan_names_free(dirs, nd);
	return rv;
}

/* ---- manifests --------------------------------------------------------- */

/* Resolves p against the manifest folder mdir. */
static int manifest_path(const char *mdir, const char *p, const char *mpath,
    char *out, size_t size)
{
	struct stat st;

	if (p[0] == '\0')
		return fs_seterr("%s: empty path", mpath);
	if (p[0] == '/') {
		if (fs_path(out, size, "%s", p) != 0)
			return -1;
	} else if (fs_path(out, size, "%s/%s", mdir, p) != 0) {
		return -1;
	}
	if (stat(out, &st) != 0 || !S_ISREG(st.st_mode))
		return fs_seterr("%s: file %s: %s", mpath, out,
		    errno ? strerror(errno) : "not a regular file");
	return 0;
}

/* Maps a manifest key to a slot; -1 if not a file key. */
static int manifest_slot(const char *key)
{
	if (strcasecmp(key, "label") == 0 || strcasecmp(key, "seg") == 0)
		return SLOT_LABEL;
	if (strcasecmp(key, "mask") == 0)
		return SLOT_MASK;
	return img_modality_parse(key);
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' ||
	    e[-1] == '\n'))
		*--e = '\0';
	return s;
}

static int manifest_csv(scan_list *l, const char *mdir, const char *mpath)
{
	char *text = NULL, *line, *save = NULL, full[4096];
	size_t n;
	int lineno = 0, header = 0, rv = -1;

	if (fs_read_file(mpath, IMG_MAX_MANIFEST, (void **)&text, &n) != 0)
		return -1;
	for (line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		char *f[3], *p = trim(line), *comma;
		scan_case *c;
		int k, slot;

		lineno++;
		if (*p == '\0' || *p == '#')
			continue;
		for (k = 0; k < 3; k++) {
			comma = k < 2 ? strchr(p, ',') : NULL;
			if (k < 2 && comma == NULL) {
				fs_seterr("%s:%d: expected 3 fields "
				    "case,modality,path", mpath, lineno);
				goto out;
			}
			if (comma)
				*comma = '\0';
			f[k] = trim(p);
			p = comma ? comma + 1 : p;
		}
		if (!header) {
			if (strcmp(f[0], "case") || strcmp(f[1], "modality") ||
			    strcmp(f[2], "path")) {
				fs_seterr("%s:%d: header must be "
				    "'case,modality,path'", mpath, lineno);
				goto out;
			}
			header = 1;
			continue;
		}
		if (f[0][0] == '\0') {
			fs_seterr("%s:%d: empty case id", mpath, lineno);
			goto out;
		}
		c = scan_get(l, f[0], mpath);
		if (c == NULL) {
			fs_seterr("out of memory");
			goto out;
		}
		if (strcasecmp(f[1], "label_convention") == 0) {
			c->label_conv = strcasecmp(f[2], "guess") == 0 ? -1 :
			    img_label_conv_parse(f[2]);
			if (c->label_conv < 0 && strcasecmp(f[2], "guess")) {
				fs_seterr("%s:%d: unknown label convention "
				    "'%s'", mpath, lineno, f[2]);
				goto out;
			}
			continue;
		}
		if (strcasecmp(f[1], "prenormalised") == 0 ||
		    strcasecmp(f[1], "prenormalized") == 0) {
			c->prenormalised = strcmp(f[2], "1") == 0 ||
			    strcasecmp(f[2], "yes") == 0 ||
			    strcasecmp(f[2], "true") == 0;
			continue;
		}
		slot = manifest_slot(f[1]);
		if (slot < 0) {
			fs_seterr("%s:%d: unknown modality '%s'", mpath,
			    lineno, f[1]);
			goto out;
		}
		if (c->file[slot] != NULL) {
			fs_seterr("%s:%d: case %s has two %s rows", mpath,
			    lineno, f[0], slot_name(slot));
			goto out;
		}
		if (manifest_path(mdir, f[2], mpath, full, sizeof(full)) != 0 ||
		    scan_set(c, slot, full) != 0)
			goto out;
	}
	if (!header) {
		fs_seterr("%s: empty manifest (header 'case,modality,path' "
		    "expected)", mpath);
		goto out;
	}
	rv = 0;
out:
	free(text);
	return rv;
}

static int manifest_json(scan_list *l, const char *mdir, const char *mpath)
{
	static const char *const keys[] = {"t1", "t1c", "t2", "flair", "label",
		"mask"};
	char *text = NULL, full[4096];
	cJSON *root = NULL, *cases, *it;
	size_t n;
	int rv = -1, idx = 0, k;

	if (fs_read_file(mpath, IMG_MAX_MANIFEST, (void **)&text, &n) != 0)
		return -1;
	root = cJSON_Parse(text);
	if (root == NULL) {
		fs_seterr("%s: not valid JSON", mpath);
		goto out;
	}
	cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
	if (!cJSON_IsArray(cases)) {
		fs_seterr("%s: expected {\"cases\": [...]}", mpath);
		goto out;
	}
	cJSON_ArrayForEach(it, cases) {
		cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id"), *v;
		scan_case *c;

		idx++;
		if (!cJSON_IsString(id) || id->valuestring[0] == '\0') {
			fs_seterr("%s: case #%d has no string \"id\"", mpath,
			    idx);
			goto out;
		}
		c = scan_get(l, id->valuestring, mpath);
		if (c == NULL) {
			fs_seterr("out of memory");
			goto out;
		}
		if (c->file[0] || c->file[1] || c->file[2] || c->file[3] ||
		    c->file[SLOT_LABEL]) {
			fs_seterr("%s: case %s listed twice", mpath,
			    id->valuestring);
			goto out;
		}
		for (k = 0; k < 6; k++) {
			int slot = manifest_slot(keys[k]);
			v = cJSON_GetObjectItemCaseSensitive(it, keys[k]);
			if (v == NULL || cJSON_IsNull(v))
				continue;
			if (!cJSON_IsString(v)) {
				fs_seterr("%s: case %s: \"%s\" must be a "
				    "string", mpath, id->valuestring,
				    keys[k]);
				goto out;
			}
			if (manifest_path(mdir, v->valuestring, mpath, full,
			    sizeof(full)) != 0 || scan_set(c, slot, full) != 0)
				goto out;
		}
		v = cJSON_GetObjectItemCaseSensitive(it, "label_convention");
		if (cJSON_IsString(v) && strcasecmp(v->valuestring, "guess")) {
			c->label_conv = img_label_conv_parse(v->valuestring);
			if (c->label_conv < 0) {
				fs_seterr("%s: case %s: unknown label "
				    "convention '%s'", mpath, id->valuestring,
				    v->valuestring);
				goto out;
			}
		} else if (v != NULL && !cJSON_IsNull(v) && !cJSON_IsString(v)) {
			fs_seterr("%s: case %s: \"label_convention\" must be a "
			    "string", mpath, id->valuestring);
			goto out;
		}
		v = cJSON_GetObjectItemCaseSensitive(it, "prenormalised");
		if (v != NULL)
			c->prenormalised = cJSON_IsTrue(v) ||
			    (cJSON_IsNumber(v) && v->valuedouble != 0);
	}
	rv = 0;
out:
	cJSON_Delete(root);
	free(text);
	return rv;
}

/* ---- public ------------------------------------------------------------ */

static int case_cmp(const void *a, const void *b)
{
	const scan_case *x = a, *y = b;
	int c = strcmp(x->id, y->id);
	return c ? c : strcmp(x->where, y->where);
}

static char *dup_or_null(const char *s, int *oom)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*oom = 1;
	return d;
}

/* Checks that the case's files open as NIfTI with the right number of
 * volumes; on failure writes the reason into why. */
static int probe_case(const scan_case *c, const int *mods, int nmod,
    char *why, size_t size)
{
	int j, dims[4];

	for (j = 0; j < nmod + 2; j++) {
		int slot = j < nmod ? mods[j] : j == nmod ? SLOT_LABEL :
		    SLOT_MASK;
		int vol = slot < IMG_NMOD ? c->vol[slot] : 0;
		const char *p = c->file[slot];
		if (p == NULL)
			continue;
		if (img_volume_probe(p, dims) != 0) {
			snprintf(why, size, "unreadable file: %s", fs_error());
			return -1;
		}
		if (dims[3] < 0) {
			snprintf(why, size, "%s: 5-D or higher NIfTI (dim %d); "
			    "a 3-D volume expected", p, -dims[3]);
			return -1;
		}
		if (vol == 0 && dims[3] > 1) {
			snprintf(why, size, "%s: 4-D file with %d volumes; one "
			    "3-D volume expected for %s", p, dims[3],
			    slot_name(slot));
			return -1;
		}
		if (vol > dims[3]) {
			snprintf(why, size, "%s: has %d volume(s); %s is "
			    "volume %d", p, dims[3], slot_name(slot), vol - 1);
			return -1;
		}
	}
	return 0;
}

static const char *layout_name(unsigned b)
{
	static const struct { unsigned bit; const char *name; } names[] = {
		{SCAN_L_BRATS, "brats"}, {SCAN_L_DEEPMEDIC, "deepmedic"},
		{SCAN_L_FWTAR, "flywheel-tar"}, {SCAN_L_FWSYNC, "flywheel-sync"},
		{SCAN_L_BIDS, "bids"}, {SCAN_L_MSD, "msd"},
	};
	size_t i;
	int n = 0;
	const char *one = "none";

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (b & names[i].bit) {
			one = names[i].name;
			n++;
		}
	if (n > 1)
		return (b & ~(unsigned)(SCAN_L_BRATS | SCAN_L_DEEPMEDIC)) ?
		    "mixed" : "brats";
	return one;
}

int img_dataset_scan(const char *dir, const int *mods, int nmod,
    img_dataset *out)
{
	return img_dataset_scan_ex(dir, mods, nmod, 0, out);
}

int img_dataset_scan_ex(const char *dir, const int *mods, int nmod,
    int flags, img_dataset *out)
{
	scan_list l;
	img_case_ref *refs = NULL;
	char csv[4096], json[4096], absdir[4096];
	struct stat st;
	const char *layout;
	int have_csv, have_json, i, j, k, nref = 0, oom = 0, rv = -1, kept = -1;

	memset(&l, 0, sizeof(l));
	if (stat(dir, &st) != 0)
		return fs_seterr("%s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return fs_seterr("%s: not a folder", dir);
	/* Absolute paths in the case refs (symlinks kept), so that they
	 * still work after a chdir (fedseg sim, node work folders). */
	if (dir[0] != '/') {
		char cwd[4096];
		if (getcwd(cwd, sizeof(cwd)) == NULL)
			return fs_seterr("%s: cannot get the working folder: %s",
			    dir, strerror(errno));
		while (dir[0] == '.' && dir[1] == '/')
			dir += 2;
		if (fs_path(absdir, sizeof(absdir), "%s/%s", cwd,
		    strcmp(dir, ".") == 0 ? "" : dir) != 0)
			return -1;
		dir = absdir;
	}
	if (fs_path(csv, sizeof(csv), "%s/%s", dir, IMG_MANIFEST_CSV) != 0 ||
	    fs_path(json, sizeof(json), "%s/%s", dir, IMG_MANIFEST_JSON) != 0)
		return -1;
	have_csv = stat(csv, &st) == 0;
	have_json = stat(json, &st) == 0;
	if (have_csv && have_json) {
		fs_seterr("%s: both %s and %s present; keep one", dir,
		    IMG_MANIFEST_CSV, IMG_MANIFEST_JSON);
		goto out;
	}
	if (have_csv) {
		layout = "manifest-csv";
		if (manifest_csv(&l, dir, csv) != 0)
			goto out;
	} else if (have_json) {
		layout = "manifest-json";
		if (manifest_json(&l, dir, json) != 0)
			goto out;
	} else {
		if (scan_dir(&l, dir, 0) != 0)
			goto out;
		layout = layout_name(l.layouts);
	}

	if (l.n > 1) /* l.v is NULL when nothing was found (fuzz_manifest) */
		qsort(l.v, (size_t)l.n, sizeof(*l.v), case_cmp);
	refs = calloc((size_t)(l.n ? l.n : 1), sizeof(*refs));
	if (refs == NULL) {
		fs_seterr("out of memory");
		goto out;
	}
	for (i = 0; i < l.n; i++) {
		scan_case *c = &l.v[i];
		const char *why = NULL;
		char reason[1536] = "";
		int any = 0;

		for (k = 0; k < IMG_NMOD; k++)
			any |= c->file[k] != NULL;
		if (!any) {
			if (scan_skip(&l, c->where, c->id, "%s",
			    c->file[SLOT_LABEL] ? "a label file but no image" :
			    "no T1, T1c, T2 or FLAIR image found") != 0)
				goto out;
			continue;
		}
		for (k = 0; k < SLOT_N && why == NULL; k++)
			if (c->dup[k]) {
				snprintf(reason, sizeof(reason), "two "
				    "candidate files for %s: %s and %s",
				    slot_name(k), c->file[k],
				    c->dupfile[k] ? c->dupfile[k] : "?");
				why = reason;
			}
		for (j = 0; j < nmod && why == NULL; j++)
			if (mods[j] < 0 || mods[j] >= IMG_NMOD ||
			    c->file[mods[j]] == NULL) {
				int w = snprintf(reason, sizeof(reason),
				    "no %s image in %s (found:",
				    img_modality_name(mods[j]), c->where);
				for (k = 0; k < SLOT_LABEL && w > 0 &&
				     (size_t)w < sizeof(reason); k++)
					if (c->file[k])
						w += snprintf(reason + w,
						    sizeof(reason) - (size_t)w,
						    " %s", slot_name(k));
				if (w > 0 && (size_t)w < sizeof(reason) - 1)
					snprintf(reason + w, sizeof(reason) -
					    (size_t)w, ")");
				why = reason;
			}
		if (why == NULL && nref > 0 &&
		    strcmp(refs[nref - 1].id, c->id) == 0) {
			snprintf(reason, sizeof(reason), "the same case id "
			    "is also in %s (kept; this one is in %s)",
			    l.v[kept].where, c->where);
			why = reason;
		}
		if (why == NULL && !(flags & IMG_SCAN_NO_PROBE) &&
		    probe_case(c, mods, nmod, reason, sizeof(reason)) != 0)
			why = reason;
		if (why != NULL) {
			if (scan_skip(&l, c->where, c->id, "%s", why) != 0)
				goto out;
			continue;
		}
		refs[nref].id = dup_or_null(c->id, &oom);
		for (k = 0; k < IMG_NMOD; k++) {
			refs[nref].paths[k] = dup_or_null(c->file[k], &oom);
			refs[nref].volume[k] = c->vol[k];
		}
		refs[nref].label = dup_or_null(c->file[SLOT_LABEL], &oom);
		refs[nref].mask = dup_or_null(c->file[SLOT_MASK], &oom);
		refs[nref].label_conv = c->label_conv;
		refs[nref].prenormalised = c->prenormalised;
		nref++;
		kept = i;
		if (oom) {
			fs_seterr("out of memory");
			goto out;
		}
	}
	if (nref == 0 && !(flags & IMG_SCAN_ALLOW_EMPTY)) {
		if (l.nskip > 0)
			fs_seterr("%s: no usable cases found (%d skipped; first: "
			    "%s: %s)", dir, l.nskip, l.skip[0].id ?
			    l.skip[0].id : l.skip[0].path, l.skip[0].reason);
		else
			fs_seterr("%s: no usable cases found", dir);
		goto out;
	}
	out->cases = refs;
	out->n = nref;
	out->skipped = l.skip;
	out->nskipped = l.nskip;
	out->layout = layout;
	l.skip = NULL;
	l.nskip = l.capskip = 0;
	refs = NULL;
	rv = 0;
out:
	if (refs != NULL) {
		img_dataset tmp;
		memset(&tmp, 0, sizeof(tmp));
		tmp.cases = refs;
		tmp.n = nref;
		img_dataset_free(&tmp);
	}
	scan_list_free(&l);
	return rv;
}

void img_dataset_free(img_dataset *ds)
{
	int i, k;

	if (ds == NULL)
		return;
	for (i = 0; i < ds->n; i++) {
		img_case_ref *r = &ds->cases[i];
		free(r->id);
		for (k = 0; k < IMG_NMOD; k++)
			free(r->paths[k]);
		free(r->label);
		free(r->mask);
	}
	free(ds->cases);
	for (i = 0; i < ds->nskipped; i++) {
		free(ds->skipped[i].path);
		free(ds->skipped[i].id);
		free(ds->skipped[i].reason);
	}
	free(ds->skipped);
	memset(ds, 0, sizeof(*ds));
}
