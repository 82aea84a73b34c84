/* infer.h - inference shared by `fedseg infer` (one case, a dataset, a
 * Flywheel gear folder): a loaded model and one-case segmentation with
 * provenance. */
#ifndef FEDSEG_INFER_H
#define FEDSEG_INFER_H

#include <cjson/cJSON.h>

#include "imaging.h"
#include "model.h"

typedef struct {
	const char *model_path;
	const char *dev;
	const char *labels;      /* "brats2017" or "brats2023" */
	int conv;                /* img_label_conv of labels */
	model_infer_opts io;
	model_spec spec;
	float *w;
	char *meta;              /* safetensors metadata JSON */
	model_net *net;          /* created on first use */
} infer_ctx;

typedef struct {
	double seconds;
	double vol_ml[3];        /* WT, TC, ET of the prediction */
} infer_result;

/* Loads the weights (net created lazily). 0 / -1 with fs_error(). */
int infer_ctx_open(infer_ctx *x, const char *model_path, const char *dev,
    const char *labels);
void infer_ctx_close(infer_ctx *x);
/* Sets x->io.precision from "fp32" / "fp16" / "bf16", checked against the
 * (resolved) device: fp16 on the CPU is refused. 0 / -1 with fs_error(). */
int infer_ctx_set_precision(infer_ctx *x, const char *name);
/* Segments ref: writes the label map `out` and the provenance JSON `prov`
 * (extra, if not NULL, is added to it under "context"; not consumed).
 * Nothing is left behind on failure. */
int infer_case(infer_ctx *x, const img_case_ref *ref, const char *out,
    const char *prov, const cJSON *extra, infer_result *res);
/* SHA-256 of a file as hex into out[65]. */
int infer_file_sha256(const char *path, char out[65]);

/* The gear runner (node/gear_cmd.c): reads BASE/config.json, segments
 * the four inputs, writes BASE/output/<subject>_seg.nii.gz, its
 * provenance and BASE/output/.metadata.json. Returns an exit status. */
int gear_run(const char *base);
/* `fedseg gear run [--base DIR]` (to be registered in node/main.c). */
int gear_main(int argc, char **argv);

#endif
