/* fuzz_nifti.c - the NIfTI reader (header, extensions, gz) on arbitrary
 * bytes: must return an error, never crash. The first byte chooses .nii or
 * .nii.gz naming (the reader must cope with either content either way). */
#include "fuzz_common.h"
#include "imaging.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	img_volume v;
	const char *name = (size > 0 && (data[0] & 1)) ? "f.nii.gz" : "f.nii";
	const char *p = fuzz_file(name, data, size);
	fs_log_set_level(FS_LOG_ERR);
	if (img_volume_read(p, &v) == 0)
		img_volume_free(&v);
	return 0;
}
