/* layouts.c - dataset layouts beyond BraTS folders and manifests: Flywheel
 * tar downloads and `fw sync --metadata` trees (classification from
 * .flywheel.json sidecars, then acquisition label and file name), BIDS,
 * and the Medical Segmentation Decathlon Task01 (4-D images).
 * See docs/data.md for the trees and the rules. */
#define _GNU_SOURCE
#include "imaging.h"
#include "scan.h"

#include "base.h"

#include <cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define SIDECAR_SUFFIX ".flywheel.json"
#define MAX_SIDECAR (4u << 20)
#define MAX_DATASET_JSON (64u << 20)

/* ---- names ------------------------------------------------------------ */

static int tok_in(const char *t, const char *const *set)
{
	for (; *set; set++)
		if (strcmp(t, *set) == 0)
			return 1;
	return 0;
}

/* Modality from a free-text name (acquisition label, file name, BIDS
 * suffix, dataset.json channel name). IMG_NMOD = a label map; -1 none. */
static int name_modality(const char *name, const char **why)
{
	static const char *const t1[] = {"t1", "t1w", "t1n", "t1wi", "t1se",
		"t1tse", "mprage", "mp2rage", "spgr", "bravo", "tfl3d", "t1mprage",
		NULL};
	static const char *const t1c[] = {"t1c", "t1ce", "t1gd", "t1post",
		"t1+c", "t1+gd", "t1wce", "t1cegd", "t1+", "t1gad", "t1cet1", NULL};
	static const char *const t2[] = {"t2", "t2w", "t2wi", "t2tse", "t2fse",
		"t2se", "t2frfse", NULL};
	static const char *const contrast[] = {"gad", "gd", "gado", "contrast",
		"ce", "c+", "+c", "enhanced", "dotarem", "magnevist", "gadavist",
		"multihance", "prohance", "gdpost", NULL};
	static const char *const pre[] = {"pre", "precontrast", "noncontrast",
		"nocontrast", "native", "nativ", NULL};
	static const char *const excl[] = {"localizer", "loc", "scout",
		"survey", "dwi", "adc", "trace", "dti", "diffusion", "perfusion",
		"perf", "dsc", "dce", "swi", "bold", "fmri", "asl", "t2*",
		"t2star", "t1map", "t2map", "mip", "phase", "fieldmap", "b0",
		"calibration", "3plane", "mask", "brainmask", "defacemask",
		"t1rho", NULL};
	static const char *const lab[] = {"seg", "segmentation", "label",
		"labels", "labelmap", "dseg", "gt", "truth", NULL};
	char buf[1024], *p, *save = NULL, *tok;
	int flair = 0, is_t1 = 0, is_t2 = 0, c = 0, pr = 0, ex = 0, lb = 0;
	size_t i, n;

	if (name == NULL || *name == '\0')
		return -1;
	n = strlen(name);
	if (n >= sizeof(buf))
		n = sizeof(buf) - 1;
	for (i = 0; i < n; i++)
		buf[i] = (char)tolower((unsigned char)name[i]);
	buf[n] = '\0';
	/* drop the extension */
	if ((p = strstr(buf, ".nii")) != NULL)
		*p = '\0';
	if (strstr(buf, "dark fluid") || strstr(buf, "dark_fluid") ||
	    strstr(buf, "dark-fluid") || strstr(buf, "darkfluid"))
		flair = 1;
	if (strstr(buf, "no contrast") || strstr(buf, "without contrast") ||
	    strstr(buf, "no_contrast") || strstr(buf, "w/o"))
		pr = 1;
	for (tok = strtok_r(buf, " _-./()[],;:=", &save); tok != NULL;
	     tok = strtok_r(NULL, " _-./()[],;:=", &save)) {
		if (strstr(tok, "flair") || strcmp(tok, "t2f") == 0 ||
		    strcmp(tok, "tirm") == 0)
			flair = 1;
		else if (tok_in(tok, t1c))
			is_t1 = c = 1;
		else if (tok_in(tok, t1))
			is_t1 = 1;
		else if (tok_in(tok, t2))
			is_t2 = 1;
		else if (tok_in(tok, excl))
			ex = 1;
		else if (tok_in(tok, lab))
			lb = 1;
		if (tok_in(tok, pre))
			pr = 1;
		else if (tok_in(tok, contrast) || (strncmp(tok, "post", 4) == 0 &&
		    strncmp(tok, "posterior", 9) != 0) ||
		    strncmp(tok, "enhanc", 6) == 0 || strstr(tok, "+c") ||
		    strstr(tok, "c+"))
			c = 1;
	}
	if (lb) {
		*why = "name says segmentation";
		return IMG_NMOD;
	}
	if (ex) {
		*why = "name says a non-structural series";
		return -1;
	}
	if (flair) {
		*why = "name says FLAIR";
		return IMG_FLAIR;
	}
	if (is_t1 || (c && !is_t2)) {
		*why = c && !pr ? "name says T1 with contrast" : "name says T1";
		return c && !pr ? IMG_T1C : IMG_T1;
	}
	if (is_t2) {
		*why = "name says T2";
		return IMG_T2;
	}
	return -1;
}

static int has_value(const cJSON *obj, const char *aspect, const char *value)
{
	const cJSON *a, *it;

	a = cJSON_GetObjectItem(obj, aspect); /* case-insensitive */
	if (cJSON_IsString(a))
		return strcasecmp(a->valuestring, value) == 0;
	if (!cJSON_IsArray(a))
		return 0;
	cJSON_ArrayForEach(it, a)
		if (cJSON_IsString(it) && strcasecmp(it->valuestring, value) == 0)
			return 1;
	return 0;
}

static int has_aspect(const cJSON *obj, const char *aspect)
{
	const cJSON *a = cJSON_GetObjectItem(obj, aspect);
	return (cJSON_IsArray(a) && cJSON_GetArraySize(a) > 0) ||
	    (cJSON_IsString(a) && a->valuestring[0]);
}

/* Classification (an object of aspect -> list) first, names second. */
static int classify(const cJSON *cls, const char *acq, const char *file,
    const char **why)
{
	const char *w1 = NULL, *w2 = NULL;
	int by_file = name_modality(file, &w1), by_acq, m = -1;

	/* A segmentation says so in its file name, whatever its folder. */
	if (by_file == IMG_NMOD) {
		*why = w1;
		return IMG_NMOD;
	}
	if (cJSON_IsObject(cls)) {
		int contrast = has_value(cls, "Features", "Contrast-Agent") ||
		    has_value(cls, "Contrast", "Contrast");
		int nocontrast = has_value(cls, "Contrast", "No Contrast");
		if (has_aspect(cls, "Intent") &&
		    !has_value(cls, "Intent", "Structural")) {
			*why = "classification Intent is not Structural";
			return -1;
		}
		if (has_value(cls, "Features", "FLAIR")) {
			*why = "classification Features FLAIR";
			return IMG_FLAIR;
		}
		if (has_value(cls, "Measurement", "T2")) {
			*why = "classification Measurement T2";
			return IMG_T2;
		}
		if (has_value(cls, "Measurement", "T1") || contrast) {
			if (contrast) {
				*why = "classification Contrast-Agent";
				return IMG_T1C;
			}
			if (nocontrast) {
				*why = "classification No Contrast";
				return IMG_T1;
			}
			/* Measurement T1 alone does not rule out contrast
			 * (many post-contrast series carry just that): the
			 * names may still say so. */
			by_acq = name_modality(acq, &w2);
			if (by_acq == IMG_T1C || (by_acq < 0 &&
			    by_file == IMG_T1C)) {
				*why = "classification Measurement T1, contrast "
				    "from the name";
				return IMG_T1C;
			}
			*why = "classification Measurement T1";
			return IMG_T1;
		}
		if (has_aspect(cls, "Measurement")) {
			*why = "classification Measurement is not T1/T2";
			return -1;
		}
	}
	by_acq = name_modality(acq, &w2);
	if (by_acq >= 0 && by_acq < IMG_NMOD) {
		*why = w2;
		return by_acq;
	}
	if (by_acq == -1 && w2 != NULL) {
		*why = w2; /* excluded by the acquisition label */
		return -1;
	}
	m = by_file;
	*why = w1 ? w1 : "no classification and no telling name";
	return m;
}

int img_flywheel_modality(const char *classification_json,
    const char *acq_label, const char *file_name, const char **why)
{
	cJSON *cls = NULL;
	const char *w = NULL;
	int m;

	if (classification_json != NULL)
		cls = cJSON_Parse(classification_json);
	m = classify(cls, acq_label, file_name, &w);
	cJSON_Delete(cls);
	if (why != NULL)
		*why = w;
	return m;
}

/* Reads <path>.flywheel.json if present: *cls gets its classification
 * (NULL if none). Returns -1 for a file the sidecar says is not an MR
 * image (modality or type), 0 otherwise. */
static int read_sidecar(scan_list *l, const char *path, cJSON **root,
    const cJSON **cls, int *had)
{
	char side[4096];
	char *text = NULL;
	size_t n;
	struct stat st;
	const cJSON *mod, *type;

	*root = NULL;
	*cls = NULL;
	*had = 0;
	if (fs_path(side, sizeof(side), "%s%s", path, SIDECAR_SUFFIX) != 0 ||
	    stat(side, &st) != 0)
		return 0;
	*had = 1;
	if (fs_read_file(side, MAX_SIDECAR, (void **)&text, &n) != 0) {
		fs_log(FS_LOG_WARN, "imaging", "a Flywheel sidecar is "
		    "unreadable; using file names (path at debug level)");
		fs_log(FS_LOG_DEBUG, "imaging", "%s: unreadable (%s); using "
		    "names", side, fs_error());
		return 0;
	}
	*root = cJSON_Parse(text);
	free(text);
	if (*root == NULL) {
		fs_log(FS_LOG_WARN, "imaging", "a Flywheel sidecar is not "
		    "valid JSON; using file names (path at debug level)");
		fs_log(FS_LOG_DEBUG, "imaging", "%s: not valid JSON; using "
		    "names", side);
		return 0;
	}
	mod = cJSON_GetObjectItem(*root, "modality");
	type = cJSON_GetObjectItem(*root, "type");
	if (cJSON_IsString(type) && strcasecmp(type->valuestring, "nifti"))
		return -1;
	if (cJSON_IsString(mod) && mod->valuestring[0] &&
	    strcasecmp(mod->valuestring, "MR"))
		return -1;
	*cls = cJSON_GetObjectItem(*root, "classification");
	(void)l;
	return 0;
}

/* Case ids become file names: keep [A-Za-z0-9._-], others -> '_'. */
static void make_id(char *out, size_t size, const char *a, const char *b)
{
	size_t o = 0;
	const char *parts[2] = {a, b};
	int k;

	for (k = 0; k < 2 && parts[k]; k++) {
		const char *p = parts[k];
		if (k > 0 && o + 1 < size)
			out[o++] = '_';
		for (; *p && o + 1 < size; p++)
			out[o++] = (isalnum((unsigned char)*p) || *p == '.' ||
			    *p == '-' || *p == '_') ? *p : '_';
	}
	out[o] = '\0';
}

static const char *base_of(const char *path)
{
	const char *s = strrchr(path, '/');
	return s && s[1] ? s + 1 : path;
}

/* Adds the NIfTI files of one Flywheel acquisition folder (tar: files in
 * it; sync: its FILES/ folder) to case c. Returns how many files took a
 * slot, -1 on error. */
static int fw_acquisition(scan_list *l, scan_case *c, const char *acq_label,
    const char *filedir)
{
	char **files = NULL, **dirs = NULL, path[4096];
	int nf, nd, i, taken = 0;
	size_t stem;

	if (scan_list_dir(filedir, &files, &nf, &dirs, &nd) != 0)
		return -1;
	for (i = 0; i < nf; i++) {
		cJSON *root = NULL;
		const cJSON *cls = NULL;
		const char *why = NULL;
		int had, m, notmr;

		if (!scan_has_nii_ext(files[i], &stem))
			continue;
		if (fs_path(path, sizeof(path), "%s/%s", filedir, files[i]) != 0) {
			taken = -1;
			break;
		}
		notmr = read_sidecar(l, path, &root, &cls, &had);
		m = notmr ? -1 : classify(cls, acq_label, files[i], &why);
		cJSON_Delete(root);
		if (notmr)
			why = "sidecar says it is not an MR NIfTI";
		fs_log(FS_LOG_DEBUG, "imaging", "%s: %s (%s)", path,
		    m < 0 ? "ignored" : m == IMG_NMOD ? "label" :
		    img_modality_name(m), why ? why : "");
		if (m < 0)
			continue;
		if (scan_set(c, m == IMG_NMOD ? SLOT_LABEL : m, path) != 0) {
			taken = -1;
			break;
		}
		taken++;
	}
	scan_names_free(files, nf);
	scan_names_free(dirs, nd);
	return taken;
}

/* ---- Flywheel tar download ---------------------------------------------- */

int scan_fw_tar_session(scan_list *l, const char *dir, char **dirs, int nd,
    char **files, int nf)
{
	char sub[4096], id[1024], parent[4096], *slash;
	int i, nacq = 0, classified = 0;
	scan_case *c;

	if (nd < 2)
		return 0;
	/* Every child folder with NIfTI files must be a leaf that is not a
	 * BraTS/DeepMedic case; at least two of them must hold a modality. */
	for (i = 0; i < nd; i++) {
		char **cf = NULL, **cd = NULL;
		int ncf, ncd, j, nii = 0, hit = 0;
		size_t stem;
		if (fs_path(sub, sizeof(sub), "%s/%s", dir, dirs[i]) != 0)
			return -1;
		if (scan_list_dir(sub, &cf, &ncf, &cd, &ncd) != 0)
			return -1;
		for (j = 0; j < ncf; j++)
			if (scan_has_nii_ext(cf[j], &stem)) {
				const char *w;
				int m = classify(NULL, dirs[i], cf[j], &w);
				nii++;
				hit |= m >= 0 && m < IMG_NMOD;
			}
		if (nii > 0 && (ncd > 0 || scan_is_brats_folder(cf, ncf))) {
			scan_names_free(cf, ncf);
			scan_names_free(cd, ncd);
			return 0;
		}
		scan_names_free(cf, ncf);
		scan_names_free(cd, ncd);
		nacq += nii > 0;
		classified += hit;
	}
	if (nacq < 2 || classified < 2)
		return 0;
	/* The case: <subject>_<session>. */
	snprintf(parent, sizeof(parent), "%s", dir);
	slash = strrchr(parent, '/');
	if (slash != NULL && slash != parent) {
		*slash = '\0';
		make_id(id, sizeof(id), base_of(parent), base_of(dir));
	} else {
		make_id(id, sizeof(id), base_of(dir), NULL);
	}
	c = scan_get(l, id, dir);
	if (c == NULL)
		return fs_seterr("out of memory");
	l->layouts |= SCAN_L_FWTAR;
	for (i = 0; i < nd; i++) {
		if (fs_path(sub, sizeof(sub), "%s/%s", dir, dirs[i]) != 0 ||
		    fw_acquisition(l, c, dirs[i], sub) < 0)
			return -1;
	}
	/* Session-level attachments: only a segmentation is taken. */
	for (i = 0; i < nf; i++) {
		size_t stem;
		const char *w;
		if (!scan_has_nii_ext(files[i], &stem) ||
		    name_modality(files[i], &w) != IMG_NMOD)
			continue;
		if (fs_path(sub, sizeof(sub), "%s/%s", dir, files[i]) != 0 ||
		    scan_set(c, SLOT_LABEL, sub) != 0)
			return -1;
	}
	return 1;
}

/* ---- Flywheel sync (fw sync --metadata) ---------------------------------- */

/* Lists the folders of <dir>/<name>; none (0) if it does not exist. */
static int sub_dirs(const char *dir, const char *name, char *path,
    size_t size, char ***dirs, int *nd)
{
	char **files = NULL;
	struct stat st;
	int nf;

	*dirs = NULL;
	*nd = 0;
	if (fs_path(path, size, "%s/%s", dir, name) != 0)
		return -1;
	if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
		return 0;
	if (scan_list_dir(path, &files, &nf, dirs, nd) != 0)
		return -1;
	scan_names_free(files, nf);
	return 0;
}

int scan_fw_sync(scan_list *l, const char *project_dir)
{
	char subjects[4096], subj[4096], sessions[4096], ses[4096], acqs[4096],
	    acq[4096], fdir[4096], id[1024];
	char **sv = NULL, **ssv = NULL, **av = NULL;
	int ns = 0, nss = 0, na = 0, i, j, k, rv = -1;

	if (sub_dirs(project_dir, "SUBJECTS", subjects, sizeof(subjects), &sv,
	    &ns) != 0)
		return -1;
	for (i = 0; i < ns; i++) {
		if (fs_path(subj, sizeof(subj), "%s/%s", subjects, sv[i]) != 0 ||
		    sub_dirs(subj, "SESSIONS", sessions, sizeof(sessions), &ssv,
		    &nss) != 0)
			goto out;
		for (j = 0; j < nss; j++) {
			scan_case *c;
			int got = 0;
			if (fs_path(ses, sizeof(ses), "%s/%s", sessions,
			    ssv[j]) != 0 ||
			    sub_dirs(ses, "ACQUISITIONS", acqs, sizeof(acqs), &av,
			    &na) != 0)
				goto out;
			make_id(id, sizeof(id), sv[i], ssv[j]);
			c = scan_get(l, id, ses);
			if (c == NULL) {
				fs_seterr("out of memory");
				goto out;
			}
			for (k = 0; k < na; k++) {
				int t;
				if (fs_path(acq, sizeof(acq), "%s/%s", acqs,
				    av[k]) != 0 ||
				    fs_path(fdir, sizeof(fdir), "%s/FILES",
				    acq) != 0)
					goto out;
				if (access(fdir, R_OK) != 0)
					continue;
				t = fw_acquisition(l, c, av[k], fdir);
				if (t < 0)
					goto out;
				got += t;
			}
			/* Session files: a segmentation attached there. */
			if (fs_path(fdir, sizeof(fdir), "%s/FILES", ses) == 0 &&
			    access(fdir, R_OK) == 0) {
				int t = fw_acquisition(l, c, "", fdir);
				if (t < 0)
					goto out;
			}
			(void)got;
			scan_names_free(av, na);
			av = NULL;
			na = 0;
		}
		scan_names_free(ssv, nss);
		ssv = NULL;
		nss = 0;
	}
	l->layouts |= SCAN_L_FWSYNC;
	rv = 0;
out:
	scan_names_free(sv, ns);
	scan_names_free(ssv, nss);
	scan_names_free(av, na);
	return rv;
}

/* ---- BIDS ------------------------------------------------------------- */

static int bids_anat(scan_list *l, const char *anat, const char *id)
{
	char **files = NULL, **dirs = NULL, path[4096];
	int nf, nd, i, rv = -1;
	scan_case *c;

	if (scan_list_dir(anat, &files, &nf, &dirs, &nd) != 0)
		return -1;
	c = scan_get(l, id, anat);
	if (c == NULL) {
		fs_seterr("out of memory");
		goto out;
	}
	for (i = 0; i < nf; i++) {
		size_t stem;
		const char *nm = files[i], *us;
		int slot = -1;
		char suffix[64];
		if (!scan_has_nii_ext(nm, &stem))
			continue;
		us = memrchr(nm, '_', stem);
		if (us == NULL || (size_t)(nm + stem - us) >= sizeof(suffix))
			continue;
		memcpy(suffix, us + 1, (size_t)(nm + stem - us - 1));
		suffix[nm + stem - us - 1] = '\0';
		if (strcmp(suffix, "T1w") == 0)
			slot = (strstr(nm, "_ce-") != NULL) ? IMG_T1C : IMG_T1;
		else if (strcmp(suffix, "T2w") == 0)
			slot = IMG_T2;
		else if (strcmp(suffix, "FLAIR") == 0)
			slot = IMG_FLAIR;
		else if (strcmp(suffix, "dseg") == 0)
			slot = SLOT_LABEL;
		if (slot < 0)
			continue;
		if (fs_path(path, sizeof(path), "%s/%s", anat, nm) != 0 ||
		    scan_set(c, slot, path) != 0)
			goto out;
	}
	rv = 0;
out:
	scan_names_free(files, nf);
	scan_names_free(dirs, nd);
	return rv;
}

int scan_bids(scan_list *l, const char *dir)
{
	char **files = NULL, **dirs = NULL, **sd = NULL, **sf = NULL;
	char sub[4096], anat[4096], id[1024];
	int nf, nd, nsd = 0, nsf = 0, i, j, rv = -1;
	struct stat st;

	if (scan_list_dir(dir, &files, &nf, &dirs, &nd) != 0)
		return -1;
	for (i = 0; i < nd; i++) {
		if (strncmp(dirs[i], "sub-", 4) != 0)
			continue;
		if (fs_path(sub, sizeof(sub), "%s/%s", dir, dirs[i]) != 0)
			goto out;
		if (fs_path(anat, sizeof(anat), "%s/anat", sub) != 0)
			goto out;
		if (stat(anat, &st) == 0 && S_ISDIR(st.st_mode) &&
		    bids_anat(l, anat, dirs[i]) != 0)
			goto out;
		if (scan_list_dir(sub, &sf, &nsf, &sd, &nsd) != 0)
			goto out;
		for (j = 0; j < nsd; j++) {
			if (strncmp(sd[j], "ses-", 4) != 0)
				continue;
			if (fs_path(anat, sizeof(anat), "%s/%s/anat", sub,
			    sd[j]) != 0)
				goto out;
			if (stat(anat, &st) != 0 || !S_ISDIR(st.st_mode))
				continue;
			make_id(id, sizeof(id), dirs[i], sd[j]);
			if (bids_anat(l, anat, id) != 0)
				goto out;
		}
		scan_names_free(sf, nsf);
		scan_names_free(sd, nsd);
		sf = sd = NULL;
		nsf = nsd = 0;
	}
	l->layouts |= SCAN_L_BIDS;
	rv = 0;
out:
	scan_names_free(files, nf);
	scan_names_free(dirs, nd);
	scan_names_free(sf, nsf);
	scan_names_free(sd, nsd);
	return rv;
}

/* ---- Medical Segmentation Decathlon Task01 ------------------------------ */

/* Label name -> internal class; -1 if not understood. */
static int msd_label_class(const char *s)
{
	char b[256];
	size_t i, n = strlen(s);

	if (n >= sizeof(b))
		n = sizeof(b) - 1;
	for (i = 0; i < n; i++)
		b[i] = (char)tolower((unsigned char)s[i]);
	b[n] = '\0';
	if (strstr(b, "background"))
		return 0;
	if (strstr(b, "non-enhanc") || strstr(b, "non enhanc") ||
	    strstr(b, "nonenhanc") || strstr(b, "necro") || strstr(b, "ncr"))
		return 1;
	if (strstr(b, "edema") || strstr(b, "oedema"))
		return 2;
	if (strstr(b, "enhanc"))
		return 3;
	return -1;
}

static int msd_path(const char *dir, const char *rel, char *out, size_t size)
{
	while (rel[0] == '.' && rel[1] == '/')
		rel += 2;
	if (rel[0] == '/')
		return fs_path(out, size, "%s", rel);
	return fs_path(out, size, "%s/%s", dir, rel);
}

static int msd_case(scan_list *l, const char *dir, const char *djson,
    const char *image, const char *label, const int chan[IMG_NMOD], int conv)
{
	char ipath[4096], lpath[4096], id[1024];
	const char *b;
	size_t stem;
	struct stat st;
	scan_case *c;
	int m;

	if (msd_path(dir, image, ipath, sizeof(ipath)) != 0 ||
	    (label && msd_path(dir, label, lpath, sizeof(lpath)) != 0))
		return -1;
	b = base_of(ipath);
	if (!scan_has_nii_ext(b, &stem))
		stem = strlen(b);
	snprintf(id, sizeof(id), "%.*s", (int)stem, b);
	if (stat(ipath, &st) != 0)
		return scan_skip(l, ipath, id, "listed in %s but missing: %s",
		    djson, strerror(errno));
	if (label && stat(lpath, &st) != 0)
		return scan_skip(l, lpath, id, "label listed in %s but missing: "
		    "%s", djson, strerror(errno));
	c = scan_get(l, id, dir);
	if (c == NULL)
		return fs_seterr("out of memory");
	for (m = 0; m < IMG_NMOD; m++) {
		if (chan[m] < 0)
			continue;
		if (scan_set(c, m, ipath) != 0)
			return -1;
		c->vol[m] = chan[m] + 1;
	}
	if (label) {
		if (scan_set(c, SLOT_LABEL, lpath) != 0)
			return -1;
		c->label_conv = conv;
	}
	return 0;
}

int scan_msd(scan_list *l, const char *dir)
{
	char djson[4096], *text = NULL;
	cJSON *root = NULL, *mod, *labs, *tr, *ts, *it;
	int chan[IMG_NMOD] = {-1, -1, -1, -1}, map[8], conv = -1, rv = -1, k;
	size_t n;

	if (fs_path(djson, sizeof(djson), "%s/dataset.json", dir) != 0 ||
	    fs_read_file(djson, MAX_DATASET_JSON, (void **)&text, &n) != 0)
		return -1;
	root = cJSON_Parse(text);
	if (root == NULL) {
		fs_seterr("%s: not valid JSON", djson);
		goto out;
	}
	mod = cJSON_GetObjectItemCaseSensitive(root, "modality");
	if (!cJSON_IsObject(mod)) {
		fs_seterr("%s: no \"modality\" object (MSD dataset.json "
		    "expected)", djson);
		goto out;
	}
	cJSON_ArrayForEach(it, mod) {
		const char *w;
		char *end;
		long ch = strtol(it->string, &end, 10);
		int m;
		if (*end || ch < 0 || ch > 64 || !cJSON_IsString(it))
			continue;
		m = img_modality_parse(it->valuestring);
		if (m < 0)
			m = name_modality(it->valuestring, &w);
		if (m < 0 || m >= IMG_NMOD)
			continue;
		if (chan[m] >= 0) {
			fs_seterr("%s: channels %d and %ld are both %s", djson,
			    chan[m], ch, img_modality_name(m));
			goto out;
		}
		chan[m] = (int)ch;
	}
	/* Label convention from the names of the label values. */
	labs = cJSON_GetObjectItemCaseSensitive(root, "labels");
	for (k = 0; k < 8; k++)
		map[k] = -2;
	if (cJSON_IsObject(labs)) {
		cJSON_ArrayForEach(it, labs) {
			char *end;
			long v = strtol(it->string, &end, 10);
			if (*end || v < 0 || v > 7 || !cJSON_IsString(it))
				continue;
			map[v] = msd_label_class(it->valuestring);
		}
		if (map[1] == 2 && map[2] == 1 && map[3] == 3 && map[4] == -2)
			conv = IMG_LABELS_MSD;
		else if (map[1] == 1 && map[2] == 2 && map[3] == 3 &&
		    map[4] == -2)
			conv = IMG_LABELS_BRATS2023;
		else if (map[1] == 1 && map[2] == 2 && map[4] == 3 &&
		    map[3] == -2)
			conv = IMG_LABELS_BRATS2017;
		else {
			fs_seterr("%s: \"labels\" not understood (expected "
			    "edema / non-enhancing / enhancing names)", djson);
			goto out;
		}
	}
	tr = cJSON_GetObjectItemCaseSensitive(root, "training");
	cJSON_ArrayForEach(it, tr) {
		cJSON *im = cJSON_GetObjectItemCaseSensitive(it, "image");
		cJSON *lb = cJSON_GetObjectItemCaseSensitive(it, "label");
		if (!cJSON_IsString(im))
			continue;
		if (msd_case(l, dir, djson, im->valuestring,
		    cJSON_IsString(lb) ? lb->valuestring : NULL, chan,
		    conv) != 0)
			goto out;
	}
	ts = cJSON_GetObjectItemCaseSensitive(root, "test");
	cJSON_ArrayForEach(it, ts) {
		const char *p = cJSON_IsString(it) ? it->valuestring : NULL;
		cJSON *im = cJSON_GetObjectItemCaseSensitive(it, "image");
		if (p == NULL && cJSON_IsString(im))
			p = im->valuestring;
		if (p != NULL && msd_case(l, dir, djson, p, NULL, chan,
		    conv) != 0)
			goto out;
	}
	l->layouts |= SCAN_L_MSD;
	rv = 0;
out:
	cJSON_Delete(root);
	free(text);
	return rv;
}
