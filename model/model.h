/*
 * model.h - the 3D U-Net: its spec, its flat parameter vector and tensor
 * table, weights files (safetensors), training and sliding-window inference.
 *
 * Two layers:
 *  - plain C, no libtorch (library fedseg_modelspec): spec, tensor table,
 *    deterministic initialisation, safetensors read/write. The aggregator
 *    links only this part.
 *  - the network over the shim (library fedseg_model): model_net and the
 *    trainer / inference, which need libtorch.
 *
 * The flat parameter vector is the concatenation, in table order, of every
 * parameter tensor in C order (float32). Federation averages these vectors.
 * Errors follow base.h: 0 / -1 with fs_error().
 */
#ifndef FEDSEG_MODEL_H
#define FEDSEG_MODEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MODEL_MAX_DEPTH 6
#define MODEL_NAME_MAX 64

typedef struct {
	int nmod;            /* input channels = number of modalities (1..4) */
	int modalities[4];   /* img_modality values, in channel order */
	int num_classes;     /* output classes: 4 = bg, NCR, ED, ET */
	int base;            /* filters at the first level */
	int depth;           /* levels; depth-1 downsamplings */
} model_spec;

/* The default model: 4 modalities (t1, t1c, t2, flair), 4 classes, base 8,
 * depth 4. */
model_spec model_spec_default(void);
/* JSON text of the spec, e.g. {"arch":"unet3d","nmod":4,...}; malloc'd. */
char *model_spec_to_json(const model_spec *spec);
int model_spec_from_json(const char *json, model_spec *spec);
/* 1 if two specs describe the same network. */
int model_spec_equal(const model_spec *a, const model_spec *b);
/* Smallest multiple the input edge must be (2^(depth-1)). */
int model_spec_divisor(const model_spec *spec);

typedef struct {
	char name[MODEL_NAME_MAX]; /* e.g. "enc0.conv1.weight" */
	int ndim;
	int64_t shape[5];
	size_t offset;             /* in floats, into the flat vector */
	size_t numel;
} model_tensor_info;

typedef struct {
	model_tensor_info *t;
	int n;
	size_t total;              /* floats in the flat vector */
} model_table;

/* Builds the tensor table of a spec. Free with model_table_free. */
int model_table_build(const model_spec *spec, model_table *out);
void model_table_free(model_table *tab);
/* A canonical text of the table ("name:d0xd1...;" per tensor), malloc'd,
 * for digests: two tables are compatible iff their texts are equal. */
char *model_table_text(const model_table *tab);
/* Deterministic initial weights (Kaiming-uniform convs, unit norm scales,
 * zero biases) from a seed, without libtorch. w holds tab->total floats. */
void model_init_weights(const model_table *tab, uint64_t seed, float *w);

/* Writes a safetensors file (durably: temp, fsync, rename): one F32 tensor
 * per table entry, and __metadata__ holding "fedseg.spec" (spec JSON) plus
 * the string pairs of meta_kv (NULL-terminated key, value, key, value, ...;
 * may be NULL). */
int model_weights_save(const char *path, const model_spec *spec,
    const float *w, const char *const *meta_kv);
/* Reads a safetensors file written by fedseg (or any with the same tensor
 * names and shapes and a fedseg.spec entry). *w is malloc'd (tab->total
 * floats); *meta_json (malloc'd, may be NULL if not wanted) is the
 * __metadata__ object as JSON text. On failure nothing is returned. */
int model_weights_load(const char *path, model_spec *spec, float **w,
    char **meta_json);

/* One convolution of the forward pass at a given input size (benchmarks
 * count FLOPs and time the same convolutions bare). */
typedef struct {
	int cin, cout, k, stride, transposed;
	int in[3];    /* input D, H, W */
	int out[3];   /* output D, H, W */
	double flops; /* 2 * cin * cout * k^3 * output voxels (per sample) */
} model_conv_shape;

/* Lists the convolutions of one forward pass for an input of d x h x w
 * voxels (multiples of the divisor) into out[max]; returns the count. */
int model_conv_layers(const model_spec *spec, int d, int h, int w,
    model_conv_shape *out, int max);
/* FLOPs of one forward pass (convolutions only) for one sample. */
double model_forward_flops(const model_spec *spec, int d, int h, int w);

/* ---- the network over libtorch (fedseg_model) ---- */

typedef struct model_net model_net;
struct img_case;

/* Creates the network on `device` ("cpu", "cuda", "cuda:N") with weights w
 * (tab total floats) or, when w is NULL, model_init_weights(seed). */
model_net *model_net_create(const model_spec *spec, const char *device,
    const float *w, uint64_t seed);
void model_net_destroy(model_net *net);
const model_spec *model_net_spec(const model_net *net);
const model_table *model_net_table(const model_net *net);
int model_net_set_weights(model_net *net, const float *w);
int model_net_get_weights(const model_net *net, float *w);

typedef struct {
	int steps;           /* optimiser steps */
	int batch;           /* patches per step */
	int patch;           /* patch edge in voxels (multiple of divisor) */
	double lr;           /* Adam learning rate */
	double fg_share;     /* share of patches centred on tumour (0..1) */
	uint64_t seed;
	double prox_mu;      /* FedProx: mu/2 * ||w - prox_ref||^2; 0 = off */
	const float *prox_ref; /* flat reference weights when prox_mu > 0 */
	int verbose;         /* print a loss line every N steps (0 = never) */
} model_train_opts;

model_train_opts model_train_opts_default(void);

typedef struct {
	int steps;
	double first_loss;   /* mean loss over the first 10% of steps */
	double last_loss;    /* mean loss over the last 10% of steps */
	double mean_loss;
	double seconds;
} model_train_stats;

/* Trains in place on n loaded cases (each with a label). */
int model_train(model_net *net, struct img_case *const *cases, int n,
    const model_train_opts *opts, model_train_stats *stats);

/* Arithmetic of the inference forward. FP16/BF16: libtorch autocast
 * (convolutions in 16 bits, norm statistics, softmax and the window
 * accumulation in float32). FP16 needs CUDA; BF16 runs on CPU and CUDA. */
typedef enum {
	MODEL_FP32 = 0,
	MODEL_FP16 = 1,
	MODEL_BF16 = 2,
} model_precision;

/* "fp32" / "fp16" / "bf16" -> model_precision, -1 if none of them. */
int model_precision_parse(const char *name);
/* Static name of a precision ("fp32", ...); "?" if out of range. */
const char *model_precision_name(int precision);
/* 0 if `precision` can run on `device` ("cpu", "cuda", "cuda:N"), else -1
 * with a one-line reason (fp16 on the CPU). */
int model_precision_check(int precision, const char *device);

typedef struct {
	int window;          /* sliding-window edge (multiple of divisor) */
	double overlap;      /* 0..0.9 */
	int tta;             /* mirror test-time augmentation */
	int batch;           /* windows per forward */
	int precision;       /* model_precision (default MODEL_FP32) */
} model_infer_opts;

model_infer_opts model_infer_opts_default(void);

/* The sliding-window plan for a cropped case of cx*cy*cz voxels: window
 * edges (win = {wx, wy, wz}) and the number of windows. */
void model_infer_plan(const model_spec *spec, const model_infer_opts *opts,
    int cx, int cy, int cz, int win[3], int *nwin);

/* Segments a loaded case: labels receives the internal classes
 * (0 bg, 1 NCR, 2 ED, 3 ET) on the case's full input grid
 * (nx*ny*nz bytes, x fastest). */
int model_segment(model_net *net, const struct img_case *c,
    const model_infer_opts *opts, uint8_t *labels);

#ifdef __cplusplus
}
#endif
#endif
