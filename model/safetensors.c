/* safetensors.c - weights files in the safetensors format:
 *   u64 little-endian N, N bytes of JSON header, then raw tensor bytes.
 * Header: {"__metadata__": {str: str}, "<name>": {"dtype": "F32",
 * "shape": [...], "data_offsets": [begin, end]}, ...}; offsets are relative
 * to the end of the header. PyTorch / MONAI users can open these with the
 * safetensors package. Plain C (no libtorch). */
#define _GNU_SOURCE
#include "model.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"

#define ST_MAX_HEADER (16u << 20)

int model_weights_save(const char *path, const model_spec *spec,
    const float *w, const char *const *meta_kv)
{
	model_table tab;
	cJSON *root = NULL, *meta;
	char *spec_json = NULL, *hdr = NULL;
	fs_atomic *a = NULL;
	int rv = -1;

	if (model_table_build(spec, &tab) != 0)
		return fs_preferr("%s", path);
	root = cJSON_CreateObject();
	meta = cJSON_AddObjectToObject(root, "__metadata__");
	spec_json = model_spec_to_json(spec);
	if (root == NULL || meta == NULL || spec_json == NULL) {
		fs_seterr("%s: out of memory", path);
		goto out;
	}
	cJSON_AddStringToObject(meta, "format", "pt");
	cJSON_AddStringToObject(meta, "fedseg.spec", spec_json);
	cJSON_AddStringToObject(meta, "fedseg.version", FS_VERSION);
	for (int i = 0; meta_kv != NULL && meta_kv[i] != NULL &&
	    meta_kv[i + 1] != NULL; i += 2)
		cJSON_AddStringToObject(meta, meta_kv[i], meta_kv[i + 1]);
	for (int i = 0; i < tab.n; i++) {
		const model_tensor_info *e = &tab.t[i];
		cJSON *o = cJSON_AddObjectToObject(root, e->name);
		double shp[5], offs[2];
		for (int d = 0; d < e->ndim; d++)
			shp[d] = (double)e->shape[d];
		offs[0] = (double)(e->offset * 4);
		offs[1] = (double)((e->offset + e->numel) * 4);
		cJSON_AddStringToObject(o, "dtype", "F32");
		cJSON_AddItemToObject(o, "shape",
		    cJSON_CreateDoubleArray(shp, e->ndim));
		cJSON_AddItemToObject(o, "data_offsets",
		    cJSON_CreateDoubleArray(offs, 2));
	}
	hdr = cJSON_PrintUnformatted(root);
	if (hdr == NULL) {
		fs_seterr("%s: out of memory", path);
		goto out;
	}
	{
		size_t hlen = strlen(hdr), padded = (hlen + 7) & ~(size_t)7;
		uint8_t len8[8];
		FILE *f;
		for (int i = 0; i < 8; i++)
			len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
		a = fs_atomic_open(path, 0644);
		if (a == NULL)
			goto out;
		f = fs_atomic_file(a);
		fwrite(len8, 1, 8, f);
		fwrite(hdr, 1, hlen, f);
		for (size_t i = hlen; i < padded; i++)
			fputc(' ', f);
		/* x86-64 and aarch64 are little-endian, as the format is. */
		fwrite(w, sizeof(float), tab.total, f);
		if (ferror(f)) {
			fs_seterr("%s: write failed: %s", path, strerror(errno));
			fs_atomic_abort(a);
			goto out;
		}
		rv = fs_atomic_commit(a);
	}
out:
	free(hdr);
	free(spec_json);
	cJSON_Delete(root);
	model_table_free(&tab);
	return rv;
}

int model_weights_load(const char *path, model_spec *spec_out, float **w_out,
    char **meta_out)
{
	FILE *f = fopen(path, "rb");
	uint8_t len8[8];
	uint64_t hlen = 0;
	char *hdr = NULL;
	cJSON *root = NULL, *meta, *it;
	model_spec spec;
	model_table tab = {0};
	float *w = NULL;
	long fsize;
	int rv = -1;

	if (f == NULL)
		return fs_seterr("%s: cannot open: %s", path, strerror(errno));
	fseek(f, 0, SEEK_END);
	fsize = ftell(f);
	rewind(f);
	if (fread(len8, 1, 8, f) != 8) {
		fs_seterr("%s: not a safetensors file (too short)", path);
		goto out;
	}
	for (int i = 0; i < 8; i++)
		hlen |= (uint64_t)len8[i] << (8 * i);
	if (hlen < 2 || hlen > ST_MAX_HEADER || (long)(8 + hlen) > fsize) {
		fs_seterr("%s: not a safetensors file (bad header length)", path);
		goto out;
	}
	hdr = malloc(hlen + 1);
	if (hdr == NULL || fread(hdr, 1, hlen, f) != hlen) {
		fs_seterr("%s: cannot read header", path);
		goto out;
	}
	hdr[hlen] = '\0';
	root = cJSON_Parse(hdr);
	if (root == NULL || !cJSON_IsObject(root)) {
		fs_seterr("%s: not a safetensors file (header is not JSON)", path);
		goto out;
	}
	meta = cJSON_GetObjectItemCaseSensitive(root, "__metadata__");
	it = meta ? cJSON_GetObjectItemCaseSensitive(meta, "fedseg.spec") : NULL;
	if (!cJSON_IsString(it)) {
		fs_seterr("%s: no fedseg.spec in __metadata__ (not a fedseg "
		    "weights file)", path);
		goto out;
	}
	if (model_spec_from_json(it->valuestring, &spec) != 0) {
		fs_preferr("%s", path);
		goto out;
	}
	if (model_table_build(&spec, &tab) != 0) {
		fs_preferr("%s", path);
		goto out;
	}
	{
		uint64_t data_len = (uint64_t)fsize - 8 - hlen;
		int ntensors = cJSON_GetArraySize(root) - (meta ? 1 : 0);
		if (ntensors != tab.n) {
			fs_seterr("%s: %d tensors, the spec needs %d", path,
			    ntensors, tab.n);
			goto out;
		}
		w = malloc(tab.total * sizeof(float) + 1);
		if (w == NULL) {
			fs_seterr("%s: out of memory", path);
			goto out;
		}
		for (int i = 0; i < tab.n; i++) {
			const model_tensor_info *e = &tab.t[i];
			cJSON *o = cJSON_GetObjectItemCaseSensitive(root, e->name);
			cJSON *dt, *shp, *offs;
			if (!cJSON_IsObject(o)) {
				fs_seterr("%s: tensor %s missing", path, e->name);
				goto out;
			}
			dt = cJSON_GetObjectItemCaseSensitive(o, "dtype");
			shp = cJSON_GetObjectItemCaseSensitive(o, "shape");
			offs = cJSON_GetObjectItemCaseSensitive(o, "data_offsets");
			if (!cJSON_IsString(dt) || strcmp(dt->valuestring, "F32")) {
				fs_seterr("%s: tensor %s is not F32", path, e->name);
				goto out;
			}
			if (!cJSON_IsArray(shp) ||
			    cJSON_GetArraySize(shp) != e->ndim) {
				fs_seterr("%s: tensor %s has the wrong rank", path,
				    e->name);
				goto out;
			}
			for (int d = 0; d < e->ndim; d++) {
				cJSON *x = cJSON_GetArrayItem(shp, d);
				if (!cJSON_IsNumber(x) ||
				    (int64_t)x->valuedouble != e->shape[d]) {
					fs_seterr("%s: tensor %s has the wrong "
					    "shape for this model spec", path,
					    e->name);
					goto out;
				}
			}
			if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2) {
				fs_seterr("%s: tensor %s: bad data_offsets", path,
				    e->name);
				goto out;
			}
			double b = cJSON_GetArrayItem(offs, 0)->valuedouble;
			double en = cJSON_GetArrayItem(offs, 1)->valuedouble;
			if (b < 0 || en < b || (uint64_t)en > data_len ||
			    (uint64_t)(en - b) != e->numel * 4) {
				fs_seterr("%s: tensor %s: data_offsets out of "
				    "range (file truncated?)", path, e->name);
				goto out;
			}
			if (fseek(f, (long)(8 + hlen + (uint64_t)b), SEEK_SET) != 0 ||
			    fread(w + e->offset, 4, e->numel, f) != e->numel) {
				fs_seterr("%s: tensor %s: read failed", path,
				    e->name);
				goto out;
			}
		}
	}
	for (size_t i = 0; i < tab.total; i++) {
		if (w[i] != w[i] || w[i] - w[i] != 0) {
			fs_seterr("%s: weights contain NaN or Inf", path);
			goto out;
		}
	}
	if (meta_out != NULL) {
		*meta_out = meta ? cJSON_PrintUnformatted(meta) : strdup("{}");
		if (*meta_out == NULL) {
			fs_seterr("%s: out of memory", path);
			goto out;
		}
	}
	*spec_out = spec;
	*w_out = w;
	w = NULL;
	rv = 0;
out:
	free(w);
	free(hdr);
	cJSON_Delete(root);
	model_table_free(&tab);
	fclose(f);
	return rv;
}
