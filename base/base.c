/* base.c - error messages, logging, durable writes. See base.h. */
#define _GNU_SOURCE
#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char fs_errbuf[1024];
static int fs_loglevel = FS_LOG_INFO;
static char fs_role[64] = "fedseg";

const char *fs_error(void) { return fs_errbuf; }

int fs_seterr(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(fs_errbuf, sizeof(fs_errbuf), fmt, ap);
	va_end(ap);
	return -1;
}

int fs_preferr(const char *fmt, ...)
{
	char pre[512], old[sizeof(fs_errbuf)];
	va_list ap;
	memcpy(old, fs_errbuf, sizeof(old));
	va_start(ap, fmt);
	vsnprintf(pre, sizeof(pre), fmt, ap);
	va_end(ap);
	snprintf(fs_errbuf, sizeof(fs_errbuf), "%s: %s", pre, old);
	return -1;
}

void fs_log_set_level(int level) { fs_loglevel = level; }
int fs_log_level(void) { return fs_loglevel; }
void fs_log_set_role(const char *role)
{
	snprintf(fs_role, sizeof(fs_role), "%s", role);
}

void fs_logf(int level, const char *id, const char *fmt, ...)
{
	static const char *names[8] = {"EMERG", "ALERT", "CRIT", "ERROR",
	    "WARN", "NOTICE", "INFO", "DEBUG"};
	char msg[2048], ts[32];
	struct timespec now;
	struct tm tm;
	va_list ap;

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s.%03ldZ %s[%d] %s %s: %s\n", ts,
	    (long)(now.tv_nsec / 1000000), fs_role, (int)getpid(),
	    names[level & 7], id, msg);
}

struct fs_atomic {
	FILE *f;
	char *path;
	char *tmp;
};

static int fsync_dir_of(const char *path)
{
	char *copy = strdup(path);
	int fd, rv = 0;
	if (copy == NULL)
		return fs_seterr("out of memory");
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY);
	if (fd >= 0) {
		if (fsync(fd) != 0 && errno != EINVAL)
			rv = fs_seterr("%s: fsync of directory: %s", path,
			    strerror(errno));
		close(fd);
	}
	free(copy);
	return rv;
}

fs_atomic *fs_atomic_open(const char *path, mode_t mode)
{
	fs_atomic *a = calloc(1, sizeof(*a));
	int fd;
	if (a == NULL) {
		fs_seterr("out of memory");
		return NULL;
	}
	a->path = strdup(path);
	if (a->path == NULL || asprintf(&a->tmp, "%s.tmp.%d", path,
	    (int)getpid()) < 0) {
		a->tmp = NULL;
		goto fail_mem;
	}
	fd = open(a->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0) {
		fs_seterr("%s: cannot write: %s", path, strerror(errno));
		goto fail;
	}
	fchmod(fd, mode);
	a->f = fdopen(fd, "wb");
	if (a->f == NULL) {
		close(fd);
		unlink(a->tmp);
		goto fail_mem;
	}
	return a;
fail_mem:
	fs_seterr("out of memory");
fail:
	free(a->path);
	free(a->tmp);
	free(a);
	return NULL;
}

void *fs_atomic_file(fs_atomic *a) { return a->f; }

int fs_atomic_commit(fs_atomic *a)
{
	int rv = 0;
	const char *step = NULL;
	int err = 0;
	if (fflush(a->f) != 0)
		step = "write", err = errno;
	else if (fsync(fileno(a->f)) != 0)
		step = "fsync", err = errno;
	if (fclose(a->f) != 0 && step == NULL)
		step = "close", err = errno;
	a->f = NULL;
	if (step == NULL && rename(a->tmp, a->path) != 0)
		step = "rename", err = errno;
	if (step != NULL) {
		rv = fs_seterr("%s: %s failed: %s", a->path, step, strerror(err));
		unlink(a->tmp);
	} else {
		rv = fsync_dir_of(a->path);
	}
	free(a->path);
	free(a->tmp);
	free(a);
	return rv;
}

void fs_atomic_abort(fs_atomic *a)
{
	if (a == NULL)
		return;
	if (a->f != NULL)
		fclose(a->f);
	unlink(a->tmp);
	free(a->path);
	free(a->tmp);
	free(a);
}

int fs_write_atomic(const char *path, const void *data, size_t n, mode_t mode)
{
	fs_atomic *a = fs_atomic_open(path, mode);
	if (a == NULL)
		return -1;
	if (n > 0 && fwrite(data, 1, n, a->f) != n) {
		int e = errno;
		fs_atomic_abort(a);
		return fs_seterr("%s: write failed: %s", path, strerror(e));
	}
	return fs_atomic_commit(a);
}

int fs_read_file(const char *path, size_t max, void **data, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0;
	if (f == NULL)
		return fs_seterr("%s: cannot open: %s", path, strerror(errno));
	for (;;) {
		if (cap - len < 65536) {
			size_t ncap = cap ? cap * 2 : 65536;
			char *nb = realloc(buf, ncap + 1);
			if (nb == NULL) {
				free(buf);
				fclose(f);
				return fs_seterr("%s: out of memory", path);
			}
			buf = nb;
			cap = ncap;
		}
		size_t got = fread(buf + len, 1, cap - len, f);
		len += got;
		if (len > max) {
			free(buf);
			fclose(f);
			return fs_seterr("%s: larger than %zu bytes", path, max);
		}
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		free(buf);
		fclose(f);
		return fs_seterr("%s: read error", path);
	}
	fclose(f);
	buf[len] = '\0';
	*data = buf;
	*n = len;
	return 0;
}

/* Creates one directory; when it is new, its entry in the parent is made
 * durable (fsync of the parent) so that a file later committed inside it
 * (temp, fsync, rename, fsync of the directory) survives a power loss. */
static int mkdir_durable(const char *dir, mode_t mode)
{
	if (mkdir(dir, mode) == 0)
		return fsync_dir_of(dir);
	if (errno != EEXIST)
		return fs_seterr("%s: cannot create: %s", dir, strerror(errno));
	return 0;
}

int fs_mkdir_p(const char *path, int private_dir)
{
	char tmp[4096];
	mode_t mode = private_dir ? 0700 : 0755;
	size_t len = strlen(path);
	if (len == 0 || len >= sizeof(tmp))
		return fs_seterr("%s: bad directory path", path);
	memcpy(tmp, path, len + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir_durable(tmp, mode) != 0)
			return -1;
		*p = '/';
	}
	return mkdir_durable(tmp, mode);
}

double fs_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int fs_path(char *buf, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;
	va_start(ap, fmt);
	n = vsnprintf(buf, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size)
		return fs_seterr("path too long: %.80s...", buf);
	return 0;
}
