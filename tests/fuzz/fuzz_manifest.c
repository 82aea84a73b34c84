/* fuzz_manifest.c - the dataset manifest readers (JSON and CSV) on
 * arbitrary bytes; the first byte chooses which. */
#include "fuzz_common.h"
#include "imaging.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int mods[4] = {0, 1, 2, 3};
	img_dataset ds = {0};
	int json = size > 0 && (data[0] & 1);
	char other[1024];
	fs_log_set_level(0); /* silence skip warnings */
	/* Only one manifest kind in the folder at a time. */
	snprintf(other, sizeof(other), "%s/fedseg-manifest.%s", fuzz_dir(),
	    json ? "csv" : "json");
	unlink(other);
	fuzz_file(json ? "fedseg-manifest.json" : "fedseg-manifest.csv", data, size);
	if (img_dataset_scan(fuzz_dir(), mods, 4, &ds) == 0)
		img_dataset_free(&ds);
	return 0;
}
