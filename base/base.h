/*
 * base.h - what every fedseg room except the shim shares: the error message
 * convention, logging, durable file writes, small file helpers.
 *
 * Error convention: functions return 0 on success and -1 on failure; on
 * failure they have called fs_seterr() with a one-line reason that names the
 * file or peer involved, which the caller may read with fs_error() and print.
 */
#ifndef FEDSEG_BASE_H
#define FEDSEG_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FS_VERSION "0.1.0"

/* Thread-local message of the last failure ("" if none). Borrowed. */
const char *fs_error(void);
/* Sets the thread-local failure message (printf format). Returns -1 so that
 * `return fs_seterr(...)` reads naturally. */
int fs_seterr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prefixes the current message: "<prefix>: <old message>". Returns -1. */
int fs_preferr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Logging: levels in syslog order; messages below the level are dropped
 * before formatting. Lines go to stderr as
 * "2026-12-03T19:10:09.123Z fedseg[pid] LEVEL id: text". */
enum { FS_LOG_ERR = 3, FS_LOG_WARN = 4, FS_LOG_INFO = 6, FS_LOG_DEBUG = 7 };
void fs_log_set_level(int level);
int fs_log_level(void);
/* Sets the process role shown in log lines ("aggregator", "node site-a"). */
void fs_log_set_role(const char *role);
void fs_logf(int level, const char *id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define fs_log(level, id, ...)                                   \
	do {                                                     \
		if ((level) <= fs_log_level())                   \
			fs_logf((level), (id), __VA_ARGS__);     \
	} while (0)

/* Writes `n` bytes to `path` durably: a temp file beside it, fsync, rename
 * over `path`, fsync of the directory. On failure nothing is left behind and
 * an existing `path` is unchanged. `mode` is the file mode (e.g. 0644, 0600). */
int fs_write_atomic(const char *path, const void *data, size_t n, mode_t mode);

/* Streaming variant for large outputs: fs_atomic_open returns a FILE* on a
 * temp file; fs_atomic_commit flushes, fsyncs, renames and fsyncs the dir;
 * fs_atomic_abort removes the temp file. Exactly one of commit / abort must
 * be called. */
typedef struct fs_atomic fs_atomic;
fs_atomic *fs_atomic_open(const char *path, mode_t mode);
void *fs_atomic_file(fs_atomic *a); /* the FILE* to write to */
int fs_atomic_commit(fs_atomic *a);
void fs_atomic_abort(fs_atomic *a);

/* Reads a whole file (at most max bytes, else error) into a malloc'd buffer
 * with a terminating NUL (not counted in *n). Caller frees. */
int fs_read_file(const char *path, size_t max, void **data, size_t *n);

/* mkdir -p with mode 0755 (0700 when private != 0). Each directory it
 * creates is made durable in its parent (fsync of the parent). */
int fs_mkdir_p(const char *path, int private_dir);

/* Seconds since an arbitrary monotonic origin. */
double fs_now(void);

/* snprintf into a fixed buffer; -1 (with fs_error) if it did not fit. */
int fs_path(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif
