/* gear_cmd.c - the Flywheel gear runner: reads BASE/config.json (BASE =
 * /flywheel/v0 in the container), segments the four file inputs with the
 * same code as `fedseg infer`, and writes into BASE/output:
 *   <subject>_seg.nii.gz, <subject>_seg_provenance.json, .metadata.json.
 * Reached as `fedseg infer --gear BASE` (gear/run) and, once registered in
 * node/main.c, `fedseg gear run [--base BASE]`. See docs/gear.md. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <ctype.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"
#include "cmds.h"
#include "imaging.h"
#include "infer.h"
#include "torch_c.h"

#define GEAR_MAX_CONFIG (16u << 20)

/* Input names of the manifest, in img_modality order. */
static const char *const gear_inputs[IMG_NMOD] = {"t1", "t1ce", "t2", "flair"};

static int gear_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int gear_fail(const char *fmt, ...)
{
	va_list ap;

	fputs("fedseg gear: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static const char *json_str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The file of input `name`: BASE/input/<name>/<location.name> when it
 * exists (so a test base works with the engine's absolute paths), else
 * location.path. NULL if the input is absent. */
static int input_path(const char *base, const cJSON *inputs, const char *name,
    char *out, size_t size, const cJSON **object)
{
	const cJSON *in = cJSON_GetObjectItemCaseSensitive(inputs, name), *loc;
	const char *fname, *fpath;
	struct stat st;

	*object = NULL;
	if (!cJSON_IsObject(in))
		return 0;
	loc = cJSON_GetObjectItemCaseSensitive(in, "location");
	*object = cJSON_GetObjectItemCaseSensitive(in, "object");
	fname = json_str(loc, "name");
	fpath = json_str(loc, "path");
	if (fname != NULL && strchr(fname, '/') == NULL &&
	    fs_path(out, size, "%s/input/%s/%s", base, name, fname) == 0 &&
	    stat(out, &st) == 0)
		return 1;
	if (fpath != NULL && stat(fpath, &st) == 0 &&
	    fs_path(out, size, "%s", fpath) == 0)
		return 1;
	return fs_seterr("config.json: input '%s' names %s, which does not "
	    "exist", name, fpath ? fpath : fname ? fname : "no file");
}

/* Subject name for outputs: config "subject", else the common prefix of
 * the input file names trimmed of separators, else "case". */
static void subject_name(const cJSON *cfg, char *const names[IMG_NMOD],
    char *out, size_t size)
{
	const char *s = json_str(cfg, "subject");
	char pre[256] = "";
	size_t n = 0, i;
	int k, have = 0;

	if (s != NULL && s[0]) {
		snprintf(pre, sizeof(pre), "%s", s);
	} else {
		for (k = 0; k < IMG_NMOD; k++) {
			const char *b;
			if (names[k] == NULL)
				continue;
			b = strrchr(names[k], '/');
			b = b ? b + 1 : names[k];
			if (!have) {
				snprintf(pre, sizeof(pre), "%s", b);
				have = 1;
				continue;
			}
			for (i = 0; pre[i] && b[i] == pre[i]; i++)
				;
			pre[i] = '\0';
		}
		n = strlen(pre);
		while (n > 0 && strchr("_-. ", pre[n - 1]))
			pre[--n] = '\0';
	}
	for (i = 0, n = 0; pre[i] && n + 1 < size; i++)
		out[n++] = (isalnum((unsigned char)pre[i]) || pre[i] == '-' ||
		    pre[i] == '_' || pre[i] == '.') ? pre[i] : '_';
	out[n] = '\0';
	if (n == 0)
		snprintf(out, size, "case");
}

static cJSON *label_names(int conv)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "0", "background");
	cJSON_AddStringToObject(o, "1", "necrotic / non-enhancing tumour core");
	cJSON_AddStringToObject(o, "2", "peritumoural edema");
	cJSON_AddStringToObject(o, conv == IMG_LABELS_BRATS2023 ? "3" : "4",
	    "enhancing tumour");
	return o;
}

static int write_metadata(const char *path, const char *seg_name,
    const char *prov_path, int conv, const infer_result *res)
{
	cJSON *root = cJSON_CreateObject(), *acq, *files, *f, *cls, *info, *fs, *v;
	char *text, *ptext = NULL;
	size_t pn;
	int rv;

	acq = cJSON_AddObjectToObject(root, "acquisition");
	files = cJSON_AddArrayToObject(acq, "files");
	f = cJSON_CreateObject();
	cJSON_AddStringToObject(f, "name", seg_name);
	cJSON_AddStringToObject(f, "type", "nifti");
	cJSON_AddStringToObject(f, "modality", "MR");
	cls = cJSON_AddObjectToObject(f, "classification");
	cJSON_AddItemToObject(cls, "Intent",
	    cJSON_CreateStringArray((const char *[]){"Structural"}, 1));
	cJSON_AddItemToObject(cls, "Features",
	    cJSON_CreateStringArray((const char *[]){"Derived"}, 1));
	info = cJSON_AddObjectToObject(f, "info");
	cJSON_AddItemToObject(info, "labels", label_names(conv));
	fs = cJSON_AddObjectToObject(info, "fedseg");
	v = cJSON_AddObjectToObject(fs, "volumes_ml");
	cJSON_AddNumberToObject(v, "wt", res->vol_ml[0]);
	cJSON_AddNumberToObject(v, "tc", res->vol_ml[1]);
	cJSON_AddNumberToObject(v, "et", res->vol_ml[2]);
	/* The model digest and round, from the provenance just written. */
	if (fs_read_file(prov_path, 1 << 20, (void **)&ptext, &pn) == 0) {
		cJSON *p = cJSON_Parse(ptext), *m, *mm;
		m = cJSON_GetObjectItemCaseSensitive(p, "model");
		if (cJSON_IsObject(m)) {
			mm = cJSON_Duplicate(m, 1);
			cJSON_DeleteItemFromObject(mm, "metadata");
			cJSON_AddItemToObject(fs, "model", mm);
		}
		cJSON_Delete(p);
		free(ptext);
	}
	cJSON_AddStringToObject(fs, "software", "fedseg " FS_VERSION);
	cJSON_AddItemToArray(files, f);
	text = cJSON_Print(root);
	cJSON_Delete(root);
	if (text == NULL)
		return fs_seterr("out of memory");
	rv = fs_write_atomic(path, text, strlen(text), 0644);
	free(text);
	return rv;
}

int gear_run(const char *base)
{
	char cfgpath[4096], outdir[4096], seg[4096], prov[4096], meta[4096];
	char builtin[4096], model[4096], subject[256], *text = NULL;
	char *paths[IMG_NMOD] = {0};
	const char *dev = "cpu", *labels = "brats2017", *want;
	cJSON *root = NULL, *cfg, *inputs, *v, *ctx = NULL;
	infer_ctx x;
	infer_result res;
	img_case_ref ref;
	struct stat st;
	size_t n;
	int rc = 1, threads = 0, k;

	memset(&x, 0, sizeof(x));
	memset(&ref, 0, sizeof(ref));
	if (fs_path(cfgpath, sizeof(cfgpath), "%s/config.json", base) != 0 ||
	    fs_read_file(cfgpath, GEAR_MAX_CONFIG, (void **)&text, &n) != 0)
		return gear_fail("%s", fs_error());
	root = cJSON_Parse(text);
	if (root == NULL) {
		gear_fail("%s: not valid JSON", cfgpath);
		goto out;
	}
	cfg = cJSON_GetObjectItemCaseSensitive(root, "config");
	inputs = cJSON_GetObjectItemCaseSensitive(root, "inputs");
	if (!cJSON_IsObject(inputs)) {
		gear_fail("%s: no \"inputs\" object", cfgpath);
		goto out;
	}
	/* config: device, threads, labels, tta (+ subject, resample) */
	want = json_str(cfg, "device");
	if (want == NULL || strcmp(want, "auto") == 0)
		dev = tc_cuda_device_count() > 0 ? "cuda" : "cpu";
	else if (strcmp(want, "cpu") == 0)
		dev = "cpu";
	else if (strcmp(want, "gpu") == 0 || strcmp(want, "cuda") == 0) {
		if (tc_cuda_device_count() <= 0) {
			gear_fail("config device is '%s' but this libtorch/host has "
			    "no CUDA device (use auto or cpu)", want);
			goto out;
		}
		dev = "cuda";
	} else {
		gear_fail("%s: config device '%s': expected auto, cpu or gpu",
		    cfgpath, want);
		goto out;
	}
	v = cJSON_GetObjectItemCaseSensitive(cfg, "threads");
	if (v != NULL) {
		if (!cJSON_IsNumber(v) || v->valuedouble < 0 ||
		    v->valuedouble > 1024) {
			gear_fail("%s: config threads must be 0..1024", cfgpath);
			goto out;
		}
		threads = (int)v->valuedouble;
	}
	if (json_str(cfg, "labels") != NULL)
		labels = json_str(cfg, "labels");
	if (cmd_threads(threads) != 0)
		goto out;

	/* inputs: the four images and an optional model */
	for (k = 0; k < IMG_NMOD; k++) {
		char p[4096];
		const cJSON *obj;
		int got = input_path(base, inputs, gear_inputs[k], p, sizeof(p),
		    &obj);
		if (got < 0) {
			gear_fail("%s", fs_error());
			goto out;
		}
		if (got == 0)
			continue;
		paths[k] = strdup(p);
		ref.paths[k] = paths[k];
		/* Cross-check the file's Flywheel classification. */
		if (obj != NULL) {
			const cJSON *cls = cJSON_GetObjectItemCaseSensitive(obj,
			    "classification");
			char *ct = cls ? cJSON_PrintUnformatted(cls) : NULL;
			const char *why = NULL;
			int m = ct ? img_flywheel_modality(ct, NULL, p, &why) : -1;
			if (m >= 0 && m < IMG_NMOD && m != k)
				fs_log(FS_LOG_WARN, "gear", "input %s (%s) looks "
				    "like %s (%s); using it as %s", gear_inputs[k],
				    p, img_modality_name(m), why, gear_inputs[k]);
			free(ct);
		}
	}
	{
		const cJSON *obj;
		int got = input_path(base, inputs, "model", model, sizeof(model),
		    &obj);
		if (got < 0) {
			gear_fail("%s", fs_error());
			goto out;
		}
		if (got == 0) {
			if (fs_path(builtin, sizeof(builtin),
			    "%s/model/fedseg.safetensors", base) != 0 ||
			    stat(builtin, &st) != 0) {
				gear_fail("no model input and no built-in model at "
				    "%s/model/fedseg.safetensors", base);
				goto out;
			}
			snprintf(model, sizeof(model), "%s", builtin);
		}
	}
	if (infer_ctx_open(&x, model, dev, labels) != 0) {
		gear_fail("%s", fs_error());
		goto out;
	}
	for (k = 0; k < x.spec.nmod; k++)
		if (ref.paths[x.spec.modalities[k]] == NULL) {
			gear_fail("input '%s' is required by the model",
			    gear_inputs[x.spec.modalities[k]]);
			goto out;
		}
	if (json_str(cfg, "precision") != NULL &&
	    infer_ctx_set_precision(&x, json_str(cfg, "precision")) != 0) {
		gear_fail("%s: config %s", cfgpath, fs_error());
		goto out;
	}
	v = cJSON_GetObjectItemCaseSensitive(cfg, "tta");
	x.io.tta = cJSON_IsTrue(v);
	v = cJSON_GetObjectItemCaseSensitive(cfg, "resample");
	ref.resample = cJSON_IsTrue(v);
	subject_name(cfg, paths, subject, sizeof(subject));
	ref.id = subject;
	ref.label_conv = -1;

	if (fs_path(outdir, sizeof(outdir), "%s/output", base) != 0 ||
	    fs_mkdir_p(outdir, 0) != 0 ||
	    fs_path(seg, sizeof(seg), "%s/%s_seg.nii.gz", outdir, subject) != 0 ||
	    fs_path(prov, sizeof(prov), "%s/%s_seg_provenance.json", outdir,
	    subject) != 0 ||
	    fs_path(meta, sizeof(meta), "%s/.metadata.json", outdir) != 0) {
		gear_fail("%s", fs_error());
		goto out;
	}
	ctx = cJSON_CreateObject();
	cJSON_AddStringToObject(ctx, "runner", "flywheel gear");
	cJSON_AddStringToObject(ctx, "config_file", cfgpath);
	cJSON_AddItemToObject(ctx, "config", cfg ? cJSON_Duplicate(cfg, 1) :
	    cJSON_CreateObject());
	v = cJSON_GetObjectItemCaseSensitive(root, "destination");
	if (v != NULL)
		cJSON_AddItemToObject(ctx, "destination", cJSON_Duplicate(v, 1));
	fprintf(stderr, "gear: %s on %s, %d thread(s), labels %s%s\n", subject,
	    dev, tc_get_threads(), labels, x.io.tta ? ", tta" : "");
	if (infer_case(&x, &ref, seg, prov, ctx, &res) != 0) {
		gear_fail("%s", fs_error());
		goto out;
	}
	if (write_metadata(meta, strrchr(seg, '/') + 1, prov, x.conv, &res) != 0) {
		gear_fail("%s", fs_error());
		unlink(seg);
		unlink(prov);
		goto out;
	}
	printf("gear: %s -> %s (%.1f s; WT %.1f mL, TC %.1f mL, ET %.1f mL)\n",
	    subject, seg, res.seconds, res.vol_ml[0], res.vol_ml[1],
	    res.vol_ml[2]);
	rc = 0;
out:
	for (k = 0; k < IMG_NMOD; k++)
		free(paths[k]);
	cJSON_Delete(ctx);
	cJSON_Delete(root);
	free(text);
	infer_ctx_close(&x);
	return rc;
}

int gear_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"base", required_argument, 0, 'b'}, {"help", no_argument, 0, 'h'},
	    {0, 0, 0, 0}};
	const char *base = "/flywheel/v0";
	int c;

	if (argc < 2 || strcmp(argv[1], "run") != 0) {
		if (argc >= 2 && (strcmp(argv[1], "--help") == 0 ||
		    strcmp(argv[1], "-h") == 0)) {
			printf("usage: fedseg gear run [--base DIR]   (default "
			    "/flywheel/v0)\n");
			return 0;
		}
		return cmd_fail("gear", "usage: fedseg gear run [--base DIR]");
	}
	optind = 1;
	argc--;
	argv++;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'b': base = optarg; break;
		case 'h':
			printf("usage: fedseg gear run [--base DIR]   (default "
			    "/flywheel/v0)\n");
			return 0;
		default: return 2;
		}
	}
	if (optind < argc)
		return cmd_fail("gear", "unexpected argument '%s'", argv[optind]);
	return gear_run(base);
}
