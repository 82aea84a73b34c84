/* fuzz_safetensors.c - the weights-file reader on arbitrary bytes. */
#include "fuzz_common.h"
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	model_spec sp;
	float *w = NULL;
	char *meta = NULL;
	const char *p = fuzz_file("w.safetensors", data, size);
	if (model_weights_load(p, &sp, &w, &meta) == 0) {
		free(w);
		free(meta);
	}
	return 0;
}
