/* cmd_infer.c - `fedseg infer`: four MRI volumes in, a uint8 label map out
 * on the input's exact grid, plus a provenance JSON beside it. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "cmds.h"
#include "imaging.h"
#include "model.h"
#include "torch_c.h"

static void infer_usage(FILE *f)
{
	fprintf(f,
	    "usage: fedseg infer --model W.safetensors (--case DIR | --t1 F --t1c F "
	    "--t2 F --flair F) --out SEG.nii.gz [options]\n"
	    "Segments one case; writes a uint8 label map on the input's grid and\n"
	    "SEG.nii.gz.json (provenance: model and input SHA-256, device, time).\n\n"
	    "  --model FILE        weights (fedseg train / a node's global.safetensors)\n"
	    "  --case DIR          a case folder (BraTS naming, or a manifest)\n"
	    "  --t1/--t1c/--t2/--flair FILE   explicit modality files\n"
	    "  --out FILE          label map to write (.nii or .nii.gz)\n"
	    "  --labels CONV       brats2017 (ET = 4, default) or brats2023 (ET = 3)\n"
	    "  --tta               mirror test-time augmentation (8x slower)\n"
	    "  --window N          sliding-window edge (default: whole brain box up to 192)\n"
	    "  --overlap X         window overlap 0..0.9 (default 0.5)\n"
	    "  --threads N         CPU threads (default: all cores)\n"
	    "  --device D          cpu, cuda, cuda:N (default cpu)\n");
}

/* SHA-256 of a file as hex into out[65]. */
static int file_sha256(const char *path, char out[65])
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
    const char *dev, const char *labels, double seconds)
{
	cJSON *root = cJSON_CreateObject(), *inputs, *model, *meta;
	char sha[65], ts[32], *text = NULL;
	time_t now = time(NULL);
	struct tm tm;
	int rv = -1;

	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
	cJSON_AddStringToObject(root, "software", "fedseg " FS_VERSION);
	cJSON_AddStringToObject(root, "libtorch", tc_torch_version());
	cJSON_AddStringToObject(root, "created", ts);
	cJSON_AddStringToObject(root, "device", dev);
	cJSON_AddNumberToObject(root, "threads", tc_get_threads());
	cJSON_AddNumberToObject(root, "seconds", seconds);
	cJSON_AddStringToObject(root, "label_convention", labels);
	model = cJSON_AddObjectToObject(root, "model");
	cJSON_AddStringToObject(model, "file", base_name(model_path));
	if (file_sha256(model_path, sha) != 0)
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
		if (file_sha256(p, sha) != 0)
			goto out;
		cJSON_AddStringToObject(o, "sha256", sha);
	}
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
	    {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *model_path = NULL, *case_dir = NULL, *out = NULL, *dev = "cpu";
	const char *labels = "brats2017";
	char *files[IMG_NMOD] = {0}, *meta = NULL, prov[4096];
	model_spec spec;
	model_infer_opts io = model_infer_opts_default();
	img_dataset ds = {0};
	img_case_ref one, *ref = NULL;
	img_case cs;
	int have_case = 0, threads = 0, rc = 1, conv, c;
	model_net *net = NULL;
	float *w = NULL;
	uint8_t *lab = NULL;
	double t0;

	memset(&one, 0, sizeof(one));
	memset(&cs, 0, sizeof(cs));
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
		case 'T': io.tta = 1; break;
		case 'W': bad = cmd_int("window", optarg, 8, 1024, &io.window); break;
		case 'O': bad = cmd_double("overlap", optarg, 0, 0.9, &io.overlap); break;
		case 't': bad = cmd_int("threads", optarg, 0, 1024, &threads); break;
		case 'v': dev = optarg; break;
		case 'h': infer_usage(stdout); return 0;
		default: infer_usage(stderr); return 2;
		}
		if (bad)
			return 2;
	}
	if (optind < argc)
		return cmd_fail("infer", "unexpected argument '%s'", argv[optind]);
	if (model_path == NULL || out == NULL) {
		infer_usage(stderr);
		return cmd_fail("infer", "--model and --out are required");
	}
	conv = img_label_conv_parse(labels);
	if (conv != IMG_LABELS_BRATS2017 && conv != IMG_LABELS_BRATS2023)
		return cmd_fail("infer", "--labels: '%s': expected brats2017 or "
		    "brats2023", labels);
	if (fs_path(prov, sizeof(prov), "%s.json", out) != 0)
		return cmd_fail("infer", "%s", fs_error());
	if (cmd_threads(threads) != 0)
		return 2;
	if (tc_device_check(dev) != TC_OK)
		return cmd_fail("infer", "--device %s: %s", dev, tc_last_error());
	if (model_weights_load(model_path, &spec, &w, &meta) != 0)
		return cmd_fail("infer", "%s", fs_error());

	if (case_dir != NULL) {
		if (img_dataset_scan(case_dir, spec.modalities, spec.nmod, &ds) != 0) {
			cmd_fail("infer", "%s", fs_error());
			goto out;
		}
		if (ds.n != 1) {
			cmd_fail("infer", "%s: expected one case with %s, found %d",
			    case_dir, spec.nmod == 4 ? "t1, t1c, t2 and flair" :
			    "the model's modalities", ds.n);
			goto out;
		}
		ref = &ds.cases[0];
	} else {
		for (int i = 0; i < spec.nmod; i++) {
			int m = spec.modalities[i];
			if (files[m] == NULL) {
				cmd_fail("infer", "--%s is required (the model takes "
				    "%d modalities) or give --case DIR",
				    img_modality_name(m), spec.nmod);
				goto out;
			}
			one.paths[m] = files[m];
		}
		one.id = "case";
		one.label_conv = -1;
		ref = &one;
	}
	(void)have_case;
	t0 = fs_now();
	if (img_case_load(ref, spec.modalities, spec.nmod, 4, 0, &cs) != 0) {
		cmd_fail("infer", "%s", fs_error());
		goto out;
	}
	net = model_net_create(&spec, dev, w, 0);
	lab = malloc((size_t)cs.nx * cs.ny * cs.nz);
	if (net == NULL || lab == NULL) {
		cmd_fail("infer", "%s", net ? "out of memory" : fs_error());
		goto out;
	}
	if (model_segment(net, &cs, &io, lab) != 0) {
		cmd_fail("infer", "%s", fs_error());
		goto out;
	}
	img_labels_from_classes(lab, (size_t)cs.nx * cs.ny * cs.nz, conv);
	if (img_labels_write(out, &cs.ref, lab) != 0) {
		cmd_fail("infer", "%s", fs_error());
		goto out;
	}
	if (write_provenance(prov, model_path, meta, ref, spec.modalities,
	    spec.nmod, dev, labels, fs_now() - t0) != 0) {
		cmd_fail("infer", "%s", fs_error());
		unlink(out); /* no partial output */
		goto out;
	}
	fprintf(stderr, "infer: %s -> %s (%.1f s, %d threads, %s)\n", cs.id, out,
	    fs_now() - t0, tc_get_threads(), dev);
	rc = 0;
out:
	model_net_destroy(net);
	img_case_free(&cs);
	img_dataset_free(&ds);
	free(lab);
	free(w);
	free(meta);
	return rc;
}
