/* fuzz_common.h - helpers for the libFuzzer harnesses: the readers under
 * test take file paths, so inputs are written to a per-process temp file. */
#ifndef FEDSEG_FUZZ_COMMON_H
#define FEDSEG_FUZZ_COMMON_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"

/* Writes data to $TMPDIR/fedseg-fuzz-<pid>/<name>; returns the path
 * (static buffer). */
static const char *fuzz_file(const char *name, const uint8_t *data, size_t n)
{
	static char dir[512], path[1024];
	const char *t = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/fedseg-fuzz-%d", t ? t : "/tmp",
	    (int)getpid());
	fs_mkdir_p(dir, 0);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (f == NULL)
		abort();
	if (n > 0)
		fwrite(data, 1, n, f);
	fclose(f);
	return path;
}

static const char *fuzz_dir(void)
{
	static char dir[512];
	const char *t = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/fedseg-fuzz-%d", t ? t : "/tmp",
	    (int)getpid());
	return dir;
}
#endif
