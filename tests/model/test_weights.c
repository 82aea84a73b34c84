/* test_weights.c - tensor table, deterministic init, safetensors round trip
 * and refusal of bad weights files. argv[1] = a temp directory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "model.h"

static int fails;
#define CHECK(c, ...) do { if (c) printf("ok - " __VA_ARGS__); else { \
	printf("FAIL - " __VA_ARGS__); fails++; } printf("\n"); } while (0)

int main(int argc, char **argv)
{
	char path[512], raw[512], bad[512];
	model_spec sp = model_spec_default(), sp2;
	model_table tab;
	float *w, *w2, *r;
	char *meta = NULL;
	if (argc < 2)
		return 2;
	snprintf(path, sizeof(path), "%s/w.safetensors", argv[1]);
	snprintf(raw, sizeof(raw), "%s/w.raw", argv[1]);

	CHECK(model_table_build(&sp, &tab) == 0, "table builds");
	size_t off = 0;
	int contiguous = 1;
	for (int i = 0; i < tab.n; i++) {
		contiguous &= tab.t[i].offset == off;
		off += tab.t[i].numel;
		for (int j = 0; j < i; j++)
			contiguous &= strcmp(tab.t[i].name, tab.t[j].name) != 0;
	}
	CHECK(contiguous && off == tab.total, "offsets contiguous, names unique "
	    "(%d tensors, %zu floats)", tab.n, tab.total);
	/* base 8, depth 4, 4 inputs, 4 classes: count by hand. */
	size_t expect = 0;
	int ch[4] = {8, 16, 32, 64};
	for (int l = 0; l < 4; l++) {
		int ci = l ? ch[l - 1] : 4;
		expect += (size_t)ch[l] * ci * 27 + 2 * ch[l];
		expect += (size_t)ch[l] * ch[l] * 27 + 2 * ch[l];
	}
	for (int l = 2; l >= 0; l--) {
		expect += (size_t)ch[l + 1] * ch[l] * 8 + ch[l];
		expect += (size_t)ch[l] * 2 * ch[l] * 27 + 2 * ch[l];
		expect += (size_t)ch[l] * ch[l] * 27 + 2 * ch[l];
	}
	expect += 4 * 8 + 4;
	CHECK(tab.total == expect, "parameter count %zu == hand count %zu",
	    tab.total, expect);

	w = malloc(tab.total * 4);
	w2 = malloc(tab.total * 4);
	model_init_weights(&tab, 7, w);
	model_init_weights(&tab, 7, w2);
	CHECK(memcmp(w, w2, tab.total * 4) == 0, "init is deterministic");
	model_init_weights(&tab, 8, w2);
	CHECK(memcmp(w, w2, tab.total * 4) != 0, "another seed differs");
	free(w2);

	const char *kv[] = {"fedseg.round", "3", NULL};
	CHECK(model_weights_save(path, &sp, w, kv) == 0, "save: %s", fs_error());
	FILE *f = fopen(raw, "wb");
	fwrite(w, 4, tab.total, f);
	fclose(f);
	CHECK(model_weights_load(path, &sp2, &r, &meta) == 0, "load: %s",
	    fs_error());
	CHECK(model_spec_equal(&sp, &sp2), "spec round trip");
	CHECK(memcmp(w, r, tab.total * 4) == 0, "weights round trip bit-exact");
	CHECK(meta && strstr(meta, "\"fedseg.round\":\"3\""), "metadata kept: %s",
	    meta ? meta : "(null)");
	free(r);
	free(meta);

	/* Refusals: truncated file, not safetensors, other spec's shapes. */
	void *buf;
	size_t n;
	fs_read_file(path, 1 << 30, &buf, &n);
	snprintf(bad, sizeof(bad), "%s/trunc.safetensors", argv[1]);
	fs_write_atomic(bad, buf, n - 100, 0644);
	CHECK(model_weights_load(bad, &sp2, &r, NULL) != 0 &&
	    strstr(fs_error(), "trunc.safetensors"), "truncated refused: %s",
	    fs_error());
	snprintf(bad, sizeof(bad), "%s/junk.safetensors", argv[1]);
	fs_write_atomic(bad, "hello world, not weights", 24, 0644);
	CHECK(model_weights_load(bad, &sp2, &r, NULL) != 0 &&
	    strstr(fs_error(), "junk.safetensors"), "junk refused: %s", fs_error());
	/* Same header but spec says base 4: shapes disagree. */
	char *s = buf;
	char *p = strstr(s + 8, "\\\"base\\\":8");
	if (p != NULL) {
		p[9] = '4';
		snprintf(bad, sizeof(bad), "%s/otherspec.safetensors", argv[1]);
		fs_write_atomic(bad, buf, n, 0644);
		CHECK(model_weights_load(bad, &sp2, &r, NULL) != 0 &&
		    strstr(fs_error(), "shape"), "other spec refused: %s",
		    fs_error());
	} else {
		CHECK(0, "spec text found in header");
	}
	free(buf);
	free(w);
	model_table_free(&tab);
	return fails ? 1 : 0;
}
