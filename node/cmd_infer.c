/* cmd_infer.c - `fedseg infer`: four MRI volumes in, a uint8 label map out
 * on the input's exact grid, plus a provenance JSON beside it. Also batch
 * mode over a dataset folder (--data DIR --out OUTDIR [--jobs N]) and the
 * Flywheel gear folder mode (--gear BASE, see gear_cmd.c). */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "cmds.h"
#include "imaging.h"
#include "infer.h"
#include "model.h"
#include "torch_c.h"

extern char **environ;

static void infer_usage(FILE *f)
{
	fprintf(f,
	    "usage: fedseg infer --model W.safetensors (--case DIR | --t1 F --t1c F "
	    "--t2 F --flair F) --out SEG.nii.gz [options]\n"
	    "       fedseg infer --model W.safetensors --data DIR --out OUTDIR [--jobs N] [options]\n"
	    "       fedseg infer --gear BASE      (Flywheel gear folder, e.g. /flywheel/v0)\n"
	    "Segments one case; writes a uint8 label map on the input's grid and\n"
	    "SEG.nii.gz.json (provenance: model and input SHA-256, device, time).\n"
	    "With --data: every case a layout reader finds in DIR (docs/data.md) ->\n"
	    "OUTDIR/<case>_seg.nii.gz (+ .json); cases already done are skipped, one\n"
	    "line per case, volumes in OUTDIR/volumes.csv.\n\n"
	    "  --model FILE        weights (fedseg train / a node's global.safetensors)\n"
	    "  --case DIR          a case folder (any layout, one case)\n"
	    "  --t1/--t1c/--t2/--flair FILE   explicit modality files\n"
	    "  --out FILE|DIR      label map to write (.nii or .nii.gz); a folder with --data\n"
	    "  --data DIR          batch over every case in DIR\n"
	    "  --jobs N            with --data: N worker processes (threads split)\n"
	    "  --resample          put modalities on another grid onto the first\n"
	    "                      modality's grid (trilinear) instead of refusing\n"
	    "  --gear BASE         run as the Flywheel gear on BASE/config.json\n"
	    "  --labels CONV       brats2017 (ET = 4, default) or brats2023 (ET = 3)\n"
	    "  --tta               mirror test-time augmentation (8x slower)\n"
	    "  --window N          sliding-window edge (default: whole brain box up to 192)\n"
	    "  --overlap X         window overlap 0..0.9 (default 0.5)\n"
	    "  --threads N         CPU threads (default: all cores)\n"
	    "  --device D          cpu, cuda, cuda:N, auto (GPU if present; default cpu)\n"
	    "  --precision P       fp32 (default), bf16 (CPU or CUDA) or fp16 (CUDA only):\n"
	    "                      16-bit convolutions via libtorch autocast\n");
}

/* SHA-256 of a file as hex into out[65]. */
int infer_file_sha256(const char *path, char out[65])
{
	unsigned char buf[1 << 16], md[32];
	unsigned int mdlen = 0;
	size_t n;
	FILE *f = fopen(path, "rb");
	EVP_MD_CTX *ctx;
	if (f == NULL)
		return fs_seterr("%s: cannot open", path);
	ctx = EVP_MD_CTX_new();
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		EVP_DigestUpdate(ctx, buf, n);
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	fclose(f);
	for (int i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
	return 0;
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

static int write_provenance(const char *path, const char *model_path,
    const char *meta_json, const img_case_ref *ref, const int *mods, int nmod,
    const char *dev, int precision, const char *labels, double seconds,
    const double vol[3], const cJSON *extra)
{
	cJSON *root = cJSON_CreateObject(), *inputs, *model, *meta, *v;
	char sha[65], ts[32], *text = NULL;
	time_t now = time(NULL);
	struct tm tm;
	int rv = -1;

	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	cJSON_AddStringToObject(root, "software", "fedseg " FS_VERSION);
	cJSON_AddStringToObject(root, "libtorch", tc_torch_version());
	cJSON_AddStringToObject(root, "created", ts);
	cJSON_AddStringToObject(root, "case", ref->id);
	cJSON_AddStringToObject(root, "device", dev);
	cJSON_AddStringToObject(root, "precision", model_precision_name(precision));
	cJSON_AddNumberToObject(root, "threads", tc_get_threads());
	cJSON_AddNumberToObject(root, "seconds", seconds);
	cJSON_AddStringToObject(root, "label_convention", labels);
	v = cJSON_AddObjectToObject(root, "volumes_ml");
	cJSON_AddNumberToObject(v, "wt", vol[0]);
	cJSON_AddNumberToObject(v, "tc", vol[1]);
	cJSON_AddNumberToObject(v, "et", vol[2]);
	model = cJSON_AddObjectToObject(root, "model");
	cJSON_AddStringToObject(model, "file", base_name(model_path));
	if (infer_file_sha256(model_path, sha) != 0)
		goto out;
	cJSON_AddStringToObject(model, "sha256", sha);
	meta = cJSON_Parse(meta_json ? meta_json : "{}");
	if (meta != NULL) {
		cJSON *r = cJSON_GetObjectItemCaseSensitive(meta, "fedseg.round");
		if (cJSON_IsString(r))
			cJSON_AddStringToObject(model, "round", r->valuestring);
		cJSON_AddItemToObject(model, "metadata", meta);
	}
	inputs = cJSON_AddObjectToObject(root, "inputs");
	for (int i = 0; i < nmod; i++) {
		const char *p = ref->paths[mods[i]];
		cJSON *o = cJSON_AddObjectToObject(inputs, img_modality_name(mods[i]));
		cJSON_AddStringToObject(o, "file", base_name(p));
		if (ref->volume[mods[i]] > 0)
			cJSON_AddNumberToObject(o, "volume", ref->volume[mods[i]] - 1);
		if (infer_file_sha256(p, sha) != 0)
			goto out;
		cJSON_AddStringToObject(o, "sha256", sha);
	}
	if (ref->resample)
		cJSON_AddBoolToObject(root, "resample", 1);
	if (extra != NULL)
		cJSON_AddItemToObject(root, "context", cJSON_Duplicate(extra, 1));
	text = cJSON_Print(root);
	if (text == NULL) {
		fs_seterr("out of memory");
		goto out;
	}
	rv = fs_write_atomic(path, text, strlen(text), 0644);
out:
	free(text);
	cJSON_Delete(root);
	return rv;
}

int infer_ctx_open(infer_ctx *x, const char *model_path, const char *dev,
    const char *labels)
{
	memset(x, 0, sizeof(*x));
	x->io = model_infer_opts_default();
	x->model_path = model_path;
	/* auto: the first GPU when this libtorch has CUDA and one is
	 * visible, else the CPU. */
	if (strcmp(dev, "auto") == 0)
		dev = tc_cuda_available() ? "cuda" : "cpu";
	x->dev = dev;
	x->labels = labels;
	x->conv = img_label_conv_parse(labels);
	if (x->conv != IMG_LABELS_BRATS2017 && x->conv != IMG_LABELS_BRATS2023)
		return fs_seterr("--labels: '%s': expected brats2017 or "
		    "brats2023", labels);
	if (tc_device_check(dev) != TC_OK)
		return fs_seterr("--device %s: %s", dev, tc_last_error());
	if (model_weights_load(model_path, &x->spec, &x->w, &x->meta) != 0)
		return -1;
	return 0;
}

int infer_ctx_set_precision(infer_ctx *x, const char *name)
{
	int p = model_precision_parse(name);
	if (p < 0)
		return fs_seterr("--precision: '%s': expected fp32, fp16 or bf16",
		    name ? name : "");
	if (model_precision_check(p, x->dev) != 0) {
		char why[512];
		snprintf(why, sizeof(why), "%s", fs_error());
		return fs_seterr("--%s", why); /* "--precision fp16 needs ..." */
	}
	x->io.precision = p;
	return 0;
}

void infer_ctx_close(infer_ctx *x)
{
	model_net_destroy(x->net);
	free(x->w);
	free(x->meta);
	memset(x, 0, sizeof(*x));
}

int infer_case(infer_ctx *x, const img_case_ref *ref, const char *out,
    const char *prov, const cJSON *extra, infer_result *res)
{
	img_case cs;
	uint8_t *lab = NULL;
	double t0 = fs_now(), vox;
	size_t n, i, cnt[3] = {0, 0, 0};
	int rv = -1;

	memset(&cs, 0, sizeof(cs));
	memset(res, 0, sizeof(*res));
	if (img_case_load(ref, x->spec.modalities, x->spec.nmod, 4, 0, &cs) != 0)
		goto out;
	if (x->net == NULL) {
		x->net = model_net_create(&x->spec, x->dev, x->w, 0);
		if (x->net == NULL)
			goto out;
	}
	n = (size_t)cs.nx * cs.ny * cs.nz;
	lab = malloc(n);
	if (lab == NULL) {
		fs_seterr("out of memory");
		goto out;
	}
	if (model_segment(x->net, &cs, &x->io, lab) != 0)
		goto out;
	for (i = 0; i < n; i++) {
		cnt[0] += lab[i] != 0;
		cnt[1] += lab[i] == 1 || lab[i] == 3;
		cnt[2] += lab[i] == 3;
	}
	vox = cs.ref.spacing[0] * cs.ref.spacing[1] * cs.ref.spacing[2] / 1000.0;
	for (i = 0; i < 3; i++)
		res->vol_ml[i] = (double)cnt[i] * vox;
	img_labels_from_classes(lab, n, (img_label_conv)x->conv);
	if (img_labels_write(out, &cs.ref, lab) != 0)
		goto out;
	res->seconds = fs_now() - t0;
	if (write_provenance(prov, x->model_path, x->meta, ref,
	    x->spec.modalities, x->spec.nmod, x->dev, x->io.precision, x->labels,
	    res->seconds,
	    res->vol_ml, extra) != 0) {
		unlink(out); /* no partial output */
		goto out;
	}
	rv = 0;
out:
	img_case_free(&cs);
	free(lab);
	return rv;
}

/* ---- batch mode -------------------------------------------------------- */

typedef struct {
	const char *data, *outdir, *model, *dev, *labels, *precision;
	int threads, jobs, shard, nshards, resample, tta, window;
	double overlap;
	int window_set, overlap_set;
} batch_opts;

static int prov_volumes(const char *prov, double vol[3], double *secs)
{
	char *text = NULL;
	size_t n;
	cJSON *root, *v;
	int rv = -1;

	if (access(prov, R_OK) != 0 ||
	    fs_read_file(prov, 1 << 20, (void **)&text, &n) != 0)
		return -1;
	root = cJSON_Parse(text);
	free(text);
	v = cJSON_GetObjectItemCaseSensitive(root, "volumes_ml");
	if (cJSON_IsObject(v)) {
		static const char *k[3] = {"wt", "tc", "et"};
		cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "seconds");
		rv = 0;
		for (int i = 0; i < 3; i++) {
			cJSON *e = cJSON_GetObjectItemCaseSensitive(v, k[i]);
			if (!cJSON_IsNumber(e))
				rv = -1;
			else
				vol[i] = e->valuedouble;
		}
		*secs = cJSON_IsNumber(s) ? s->valuedouble : 0;
	}
	cJSON_Delete(root);
	return rv;
}

static int case_paths(const batch_opts *o, const char *id, char *seg,
    char *prov, size_t size)
{
	if (fs_path(seg, size, "%s/%s_seg.nii.gz", o->outdir, id) != 0 ||
	    fs_path(prov, size, "%s.json", seg) != 0)
		return -1;
	return 0;
}

/* Runs this process's share of the cases (i % nshards == shard). */
static int batch_work(const batch_opts *o, img_dataset *ds, infer_ctx *x)
{
	char seg[4096], prov[4096];
	int failed = 0;

	for (int i = 0; i < ds->n; i++) {
		img_case_ref *r = &ds->cases[i];
		infer_result res;
		double vol[3], secs;

		if (i % o->nshards != o->shard)
			continue;
		if (case_paths(o, r->id, seg, prov, sizeof(seg)) != 0) {
			printf("%s: FAILED: %s\n", r->id, fs_error());
			failed++;
			continue;
		}
		if (access(seg, R_OK) == 0 && prov_volumes(prov, vol, &secs) == 0) {
			printf("%s: done earlier, skipped (WT %.1f mL, TC %.1f mL, "
			    "ET %.1f mL)\n", r->id, vol[0], vol[1], vol[2]);
			fflush(stdout);
			continue;
		}
		r->resample = o->resample;
		if (infer_case(x, r, seg, prov, NULL, &res) != 0) {
			printf("%s: FAILED: %s\n", r->id, fs_error());
			fflush(stdout);
			failed++;
			continue;
		}
		printf("%s: ok %.1f s, WT %.1f mL, TC %.1f mL, ET %.1f mL -> %s\n",
		    r->id, res.seconds, res.vol_ml[0], res.vol_ml[1],
		    res.vol_ml[2], seg);
		fflush(stdout);
	}
	return failed;
}

/* Starts `jobs` children `fedseg infer --data ... --shard k/N` and waits. */
static int batch_spawn(const batch_opts *o)
{
	pid_t *pids = calloc((size_t)o->jobs, sizeof(*pids));
	int per = o->threads / o->jobs, bad = 0;
	char self[4096];
	ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (pids == NULL || sl <= 0) {
		free(pids);
		return fs_seterr("cannot start workers: %s", pids ? "no "
		    "/proc/self/exe" : "out of memory");
	}
	self[sl] = '\0';
	if (per < 1)
		per = 1;
	for (int k = 0; k < o->jobs; k++) {
		char shard[32], thr[16], win[16], ov[32];
		const char *av[40];
		int a = 0;
		snprintf(shard, sizeof(shard), "%d/%d", k, o->jobs);
		snprintf(thr, sizeof(thr), "%d", per);
		av[a++] = "fedseg";
		av[a++] = "infer";
		av[a++] = "--model"; av[a++] = o->model;
		av[a++] = "--data"; av[a++] = o->data;
		av[a++] = "--out"; av[a++] = o->outdir;
		av[a++] = "--labels"; av[a++] = o->labels;
		av[a++] = "--device"; av[a++] = o->dev;
		av[a++] = "--precision"; av[a++] = o->precision;
		av[a++] = "--threads"; av[a++] = thr;
		av[a++] = "--shard"; av[a++] = shard;
		if (o->tta)
			av[a++] = "--tta";
		if (o->resample)
			av[a++] = "--resample";
		if (o->window_set) {
			snprintf(win, sizeof(win), "%d", o->window);
			av[a++] = "--window"; av[a++] = win;
		}
		if (o->overlap_set) {
			snprintf(ov, sizeof(ov), "%.17g", o->overlap);
			av[a++] = "--overlap"; av[a++] = ov;
		}
		av[a] = NULL;
		if (posix_spawn(&pids[k], self, NULL, NULL, (char **)av,
		    environ) != 0) {
			fs_seterr("cannot start worker %d: %s", k, strerror(errno));
			pids[k] = 0;
			bad = 1;
		}
	}
	for (int k = 0; k < o->jobs; k++) {
		int st;
		if (pids[k] > 0 && waitpid(pids[k], &st, 0) == pids[k] &&
		    !(WIFEXITED(st) && WEXITSTATUS(st) <= 1)) {
			fs_seterr("worker %d ended abnormally", k);
			bad = 1;
		}
	}
	free(pids);
	return bad ? -1 : 0;
}

/* OUTDIR/volumes.csv from the provenance files; returns the number of
 * cases without a result, *ndone those with one. */
static int batch_csv(const batch_opts *o, const img_dataset *ds, int *ndone)
{
	char seg[4096], prov[4096], path[4096], line[8192];
	size_t cap = 4096, len;
	char *buf = malloc(cap);
	int missing = 0;

	*ndone = 0;
	if (buf == NULL)
		return ds->n;
	len = (size_t)snprintf(buf, cap, "case,status,wt_ml,tc_ml,et_ml,"
	    "seconds,segmentation\n");
	for (int i = 0; i < ds->n; i++) {
		double vol[3] = {0, 0, 0}, secs = 0;
		int w;
		if (case_paths(o, ds->cases[i].id, seg, prov, sizeof(seg)) != 0)
			continue;
		if (access(seg, R_OK) == 0 && prov_volumes(prov, vol, &secs) == 0) {
			(*ndone)++;
			w = snprintf(line, sizeof(line), "%s,ok,%.3f,%.3f,%.3f,"
			    "%.2f,%s\n", ds->cases[i].id, vol[0], vol[1], vol[2],
			    secs, base_name(seg));
		} else {
			missing++;
			w = snprintf(line, sizeof(line), "%s,failed,,,,,\n",
			    ds->cases[i].id);
		}
		if (w < 0)
			continue;
		if (len + (size_t)w + 1 > cap) {
			char *nb;
			cap = 2 * (len + (size_t)w + 1);
			nb = realloc(buf, cap);
			if (nb == NULL)
				break;
			buf = nb;
		}
		memcpy(buf + len, line, (size_t)w + 1);
		len += (size_t)w;
	}
	if (fs_path(path, sizeof(path), "%s/volumes.csv", o->outdir) != 0 ||
	    fs_write_atomic(path, buf, len, 0644) != 0)
		fprintf(stderr, "fedseg infer: %s\n", fs_error());
	free(buf);
	return missing;
}

static int batch_run(const batch_opts *o)
{
	img_dataset ds;
	infer_ctx x;
	int rc = 1, failed = 0, done = 0, missing;

	memset(&ds, 0, sizeof(ds));
	if (infer_ctx_open(&x, o->model, o->dev, o->labels) != 0 ||
	    infer_ctx_set_precision(&x, o->precision) != 0) {
		cmd_fail("infer", "%s", fs_error());
		infer_ctx_close(&x);
		return 1;
	}
	if (o->tta)
		x.io.tta = 1;
	if (o->window_set)
		x.io.window = o->window;
	if (o->overlap_set)
		x.io.overlap = o->overlap;
	if (img_dataset_scan_ex(o->data, x.spec.modalities, x.spec.nmod,
	    IMG_SCAN_ALLOW_EMPTY, &ds) != 0) {
		cmd_fail("infer", "%s", fs_error());
		goto out;
	}
	if (o->nshards == 1) {
		for (int i = 0; i < ds.nskipped; i++)
			printf("%s: not a usable case (%s): %s\n",
			    ds.skipped[i].id ? ds.skipped[i].id : "-",
			    ds.skipped[i].path, ds.skipped[i].reason);
		if (ds.n == 0) {
			cmd_fail("infer", "%s: no usable case (%d skipped)",
			    o->data, ds.nskipped);
			goto out;
		}
		if (fs_mkdir_p(o->outdir, 0) != 0) {
			cmd_fail("infer", "%s", fs_error());
			goto out;
		}
	}
	if (o->jobs > 1 && o->nshards == 1) {
		fflush(stdout);
		if (batch_spawn(o) != 0)
			fprintf(stderr, "fedseg infer: %s\n", fs_error());
	} else {
		failed = batch_work(o, &ds, &x);
	}
	if (o->nshards > 1) { /* a worker: the parent writes the CSV */
		rc = failed ? 1 : 0;
		goto out;
	}
	missing = batch_csv(o, &ds, &done);
	printf("batch: %d case(s), %d segmented, %d failed, %d not usable; "
	    "volumes in %s/volumes.csv\n", ds.n, done, missing, ds.nskipped,
	    o->outdir);
	rc = missing ? 1 : 0;
out:
	img_dataset_free(&ds);
	infer_ctx_close(&x);
	return rc;
}

int cmd_infer(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"model", required_argument, 0, 'w'}, {"case", required_argument, 0, 'c'},
	    {"t1", required_argument, 0, '1'}, {"t1c", required_argument, 0, '2'},
	    {"t1ce", required_argument, 0, '2'}, {"t2", required_argument, 0, '3'},
	    {"flair", required_argument, 0, '4'}, {"out", required_argument, 0, 'o'},
	    {"labels", required_argument, 0, 'L'}, {"tta", no_argument, 0, 'T'},
	    {"window", required_argument, 0, 'W'}, {"overlap", required_argument, 0, 'O'},
	    {"threads", required_argument, 0, 't'}, {"device", required_argument, 0, 'v'},
	    {"data", required_argument, 0, 'd'}, {"jobs", required_argument, 0, 'j'},
	    {"shard", required_argument, 0, 'S'}, {"resample", no_argument, 0, 'R'},
	    {"gear", required_argument, 0, 'G'},
	    {"precision", required_argument, 0, 'P'},
	    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *model_path = NULL, *case_dir = NULL, *out = NULL, *dev = "cpu";
	const char *labels = "brats2017", *data = NULL, *gear = NULL;
	const char *precision = "fp32";
	char *files[IMG_NMOD] = {0}, prov[4096];
	infer_ctx x;
	infer_result res;
	img_dataset ds = {0};
	img_case_ref one, *ref = NULL;
	int threads = 0, rc = 1, c, jobs = 1, shard = 0, nshards = 1;
	int resample = 0, tta = 0, window = 0, window_set = 0, overlap_set = 0;
	double overlap = 0;

	memset(&one, 0, sizeof(one));
	memset(&x, 0, sizeof(x));
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case 'w': model_path = optarg; break;
		case 'c': case_dir = optarg; break;
		case '1': files[IMG_T1] = optarg; break;
		case '2': files[IMG_T1C] = optarg; break;
		case '3': files[IMG_T2] = optarg; break;
		case '4': files[IMG_FLAIR] = optarg; break;
		case 'o': out = optarg; break;
		case 'L': labels = optarg; break;
		case 'T': tta = 1; break;
		case 'W': bad = cmd_int("window", optarg, 8, 1024, &window);
			window_set = 1; break;
		case 'O': bad = cmd_double("overlap", optarg, 0, 0.9, &overlap);
			overlap_set = 1; break;
		case 't': bad = cmd_int("threads", optarg, 0, 1024, &threads); break;
		case 'v': dev = optarg; break;
		case 'd': data = optarg; break;
		case 'j': bad = cmd_int("jobs", optarg, 1, 64, &jobs); break;
		case 'S':
			if (sscanf(optarg, "%d/%d", &shard, &nshards) != 2 ||
			    nshards < 1 || shard < 0 || shard >= nshards)
				return cmd_fail("infer", "--shard: expected K/N, "
				    "got '%s'", optarg);
			break;
		case 'R': resample = 1; break;
		case 'G': gear = optarg; break;
		case 'P':
			if (model_precision_parse(optarg) < 0)
				return cmd_fail("infer", "--precision: '%s': "
				    "expected fp32, fp16 or bf16", optarg);
			precision = optarg;
			break;
		case 'h': infer_usage(stdout); return 0;
		default: infer_usage(stderr); return 2;
		}
		if (bad)
			return 2;
	}
	if (optind < argc)
		return cmd_fail("infer", "unexpected argument '%s'", argv[optind]);
	if (gear != NULL)
		return gear_run(gear);
	if (model_path == NULL || out == NULL) {
		infer_usage(stderr);
		return cmd_fail("infer", "--model and --out are required");
	}
	if (cmd_threads(threads) != 0)
		return 2;
	if (data != NULL) {
		batch_opts bo;
		if (case_dir != NULL || files[0] || files[1] || files[2] || files[3])
			return cmd_fail("infer", "--data is a batch over a folder; "
			    "do not combine it with --case or modality files");
		memset(&bo, 0, sizeof(bo));
		bo.data = data;
		bo.outdir = out;
		bo.model = model_path;
		bo.dev = dev;
		bo.labels = labels;
		bo.precision = precision;
		bo.threads = tc_get_threads();
		bo.jobs = jobs;
		bo.shard = shard;
		bo.nshards = nshards;
		bo.resample = resample;
		bo.tta = tta;
		bo.window = window;
		bo.window_set = window_set;
		bo.overlap = overlap;
		bo.overlap_set = overlap_set;
		return batch_run(&bo);
	}
	if (fs_path(prov, sizeof(prov), "%s.json", out) != 0)
		return cmd_fail("infer", "%s", fs_error());
	if (infer_ctx_open(&x, model_path, dev, labels) != 0 ||
	    infer_ctx_set_precision(&x, precision) != 0) {
		cmd_fail("infer", "%s", fs_error());
		goto out;
	}
	if (tta)
		x.io.tta = 1;
	if (window_set)
		x.io.window = window;
	if (overlap_set)
		x.io.overlap = overlap;

	if (case_dir != NULL) {
		if (img_dataset_scan(case_dir, x.spec.modalities, x.spec.nmod,
		    &ds) != 0) {
			cmd_fail("infer", "%s", fs_error());
			goto out;
		}
		if (ds.n != 1) {
			cmd_fail("infer", "%s: expected one case with %s, found %d "
			    "(use --data DIR --out OUTDIR for many)", case_dir,
			    x.spec.nmod == 4 ? "t1, t1c, t2 and flair" :
			    "the model's modalities", ds.n);
			goto out;
		}
		ref = &ds.cases[0];
	} else {
		for (int i = 0; i < x.spec.nmod; i++) {
			int m = x.spec.modalities[i];
			if (files[m] == NULL) {
				cmd_fail("infer", "--%s is required (the model takes "
				    "%d modalities) or give --case DIR",
				    img_modality_name(m), x.spec.nmod);
				goto out;
			}
			one.paths[m] = files[m];
		}
		one.id = "case";
		one.label_conv = -1;
		ref = &one;
	}
	ref->resample = resample;
	if (infer_case(&x, ref, out, prov, NULL, &res) != 0) {
		cmd_fail("infer", "%s", fs_error());
		goto out;
	}
	fprintf(stderr, "infer: %s -> %s (%.1f s, %d threads, %s, %s; WT %.1f mL, "
	    "TC %.1f mL, ET %.1f mL)\n", ref->id, out, res.seconds,
	    tc_get_threads(), x.dev, model_precision_name(x.io.precision),
	    res.vol_ml[0], res.vol_ml[1], res.vol_ml[2]);
	rc = 0;
out:
	img_dataset_free(&ds);
	infer_ctx_close(&x);
	return rc;
}
