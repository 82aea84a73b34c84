/* img_test.h - tiny helpers shared by the imaging tests. */
#ifndef IMG_TEST_H
#define IMG_TEST_H

#define _GNU_SOURCE
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"
#include "imaging.h"

static int img_t_fails;

#define CHECK(c)                                                           \
	do {                                                               \
		if (!(c)) {                                                \
			fprintf(stderr, "%s:%d: CHECK failed: %s [last "   \
			    "error: %s]\n", __FILE__, __LINE__, #c,        \
			    fs_error());                                   \
			img_t_fails++;                                     \
		}                                                          \
	} while (0)

/* CHECK that the last error message contains s. */
#define CHECK_ERR(s)                                                       \
	do {                                                               \
		if (strstr(fs_error(), (s)) == NULL) {                     \
			fprintf(stderr, "%s:%d: error '%s' does not name "  \
			    "'%s'\n", __FILE__, __LINE__, fs_error(), (s)); \
			img_t_fails++;                                     \
		}                                                          \
	} while (0)

/* The real cases; a test that cannot find them fails. */
static const char *img_t_data(void)
{
	static char buf[4096];
	const char *d = getenv("FEDSEG_DATA");
	struct stat st;

	if (d == NULL)
		d = "/work/shared/data";
	snprintf(buf, sizeof(buf), "%s/INVENTORY.md", d);
	if (stat(buf, &st) != 0) {
		fprintf(stderr, "FAIL: real data not found at %s (set "
		    "FEDSEG_DATA)\n", d);
		exit(1);
	}
	snprintf(buf, sizeof(buf), "%s", d);
	return buf;
}

/* Data path helper: returns a static buffer (rotating, 8 slots). */
__attribute__((unused)) static const char *img_t_path(const char *rel)
{
	static char bufs[8][4096];
	static int k;
	char *b = bufs[k++ & 7];

	snprintf(b, 4096, "%s/%s", img_t_data(), rel);
	return b;
}

static char img_t_tmp[4096];

__attribute__((unused)) static const char *img_t_tmpdir(void)
{
	if (img_t_tmp[0] == '\0') {
		snprintf(img_t_tmp, sizeof(img_t_tmp),
		    "/tmp/fedseg-imgtest-XXXXXX");
		if (mkdtemp(img_t_tmp) == NULL) {
			perror("mkdtemp");
			exit(1);
		}
	}
	return img_t_tmp;
}

static int img_t_rm(const char *p, const struct stat *sb, int flag,
    struct FTW *f)
{
	(void)sb; (void)flag; (void)f;
	return remove(p);
}

static int img_t_finish(const char *name)
{
	if (img_t_tmp[0] != '\0')
		nftw(img_t_tmp, img_t_rm, 16, FTW_DEPTH | FTW_PHYS);
	if (img_t_fails) {
		fprintf(stderr, "%s: %d check(s) FAILED\n", name, img_t_fails);
		return 1;
	}
	printf("%s: all checks passed\n", name);
	return 0;
}

#endif
