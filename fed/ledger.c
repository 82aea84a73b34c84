/*
 * ledger.c - hash-chained JSON-lines ledger (see ledger.h).
 */
#include "ledger.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cJSON.h>

#include "base.h"
#include "crypto.h"

#define LEDGER_MAX ((size_t)1 << 30)
#define HASH_KEY ",\"hash\":\""

struct fed_ledger {
	char *path;
	int fd;
	int count;
	char last_hash[65];
	cJSON *last;
};

static void
sha_hex(const void *d, size_t n, char out[65])
{
	uint8_t h[32];
	fed_sha256(d, n, h);
	fed_hex(h, 32, out);
}

/* Checks one line (len bytes, no newline) against prev; writes its hash. */
static int
line_check(const char *line, size_t len, const char *prev, char hash[65],
    cJSON **parsed)
{
	char *copy = malloc(len + 1);
	int rv = -1;
	if (copy == NULL)
		return fs_seterr("out of memory");
	memcpy(copy, line, len);
	copy[len] = '\0';
	cJSON *o = cJSON_Parse(copy);
	const cJSON *ph = cJSON_GetObjectItemCaseSensitive(o, "prev_hash");
	const cJSON *hh = cJSON_GetObjectItemCaseSensitive(o, "hash");
	char *cut = NULL;
	for (char *p = strstr(copy, HASH_KEY); p; p = strstr(p + 1, HASH_KEY))
		cut = p;
	if (!cJSON_IsString(ph) || !cJSON_IsString(hh) || cut == NULL) {
		fs_seterr("not a ledger line");
		goto out;
	}
	cut[0] = '}';
	char want[65];
	sha_hex(copy, (size_t)(cut - copy) + 1, want);
	if (strcmp(want, hh->valuestring) != 0) {
		fs_seterr("hash does not match the line");
		goto out;
	}
	if (strcmp(ph->valuestring, prev) != 0) {
		fs_seterr("prev_hash does not match the previous line");
		goto out;
	}
	memcpy(hash, want, 65);
	if (parsed != NULL) {
		*parsed = o;
		o = NULL;
	}
	rv = 0;
out:
	cJSON_Delete(o);
	free(copy);
	return rv;
}

/* Walks the text; *good = bytes of complete, verified lines. */
static int
chain_walk(const char *path, const char *text, size_t n, size_t *good,
    int *count, char last_hash[65], cJSON **last)
{
	char prev[65];
	memset(prev, '0', 64);
	prev[64] = '\0';
	size_t off = 0;
	int lines = 0;
	while (off < n) {
		const char *nl = memchr(text + off, '\n', n - off);
		if (nl == NULL)
			break; /* torn last line */
		size_t len = (size_t)(nl - (text + off));
		cJSON *o = NULL;
		if (line_check(text + off, len, prev, prev, &o) != 0)
			return fs_preferr("ledger %s line %d", path, lines + 1);
		if (last != NULL) {
			cJSON_Delete(*last);
			*last = o;
		} else {
			cJSON_Delete(o);
		}
		lines++;
		off += len + 1;
	}
	*good = off;
	*count = lines;
	memcpy(last_hash, prev, 65);
	return 0;
}

int
fed_ledger_verify(const char *path, int *nlines)
{
	char *text = NULL;
	size_t n = 0, good = 0;
	char h[65];
	if (fs_read_file(path, LEDGER_MAX, (void **)&text, &n) != 0)
		return -1;
	int rv = chain_walk(path, text, n, &good, nlines, h, NULL);
	if (rv == 0 && good != n)
		rv = fs_seterr("ledger %s: torn last line", path);
	free(text);
	return rv;
}

fed_ledger *
fed_ledger_open(const char *path)
{
	fed_ledger *l = calloc(1, sizeof *l);
	char *text = NULL;
	size_t n = 0, good = 0;
	if (l == NULL)
		return NULL;
	l->fd = -1;
	l->path = strdup(path);
	if (access(path, F_OK) == 0 &&
	    fs_read_file(path, LEDGER_MAX, (void **)&text, &n) != 0)
		goto fail;
	if (chain_walk(path, text ? text : "", n, &good, &l->count,
	    l->last_hash, &l->last) != 0)
		goto fail;
	l->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (l->fd < 0) {
		fs_seterr("ledger %s: %s", path, strerror(errno));
		goto fail;
	}
	if (good != n) {
		fs_log(FS_LOG_WARN, "LEDGER-TORN",
		    "ledger %s: cutting a torn last line (%zu bytes)", path,
		    n - good);
		if (ftruncate(l->fd, (off_t)good) != 0 || fsync(l->fd) != 0) {
			fs_seterr("ledger %s: truncate: %s", path,
			    strerror(errno));
			goto fail;
		}
	}
	free(text);
	return l;
fail:
	free(text);
	fed_ledger_close(l);
	return NULL;
}

void
fed_ledger_close(fed_ledger *l)
{
	if (l == NULL)
		return;
	if (l->fd >= 0)
		close(l->fd);
	cJSON_Delete(l->last);
	free(l->path);
	free(l);
}

int
fed_ledger_count(const fed_ledger *l)
{
	return l->count;
}

const struct cJSON *
fed_ledger_last(const fed_ledger *l)
{
	return l->last;
}

static int
fsync_dir(const char *path)
{
	char *d = strdup(path);
	if (d == NULL)
		return -1;
	int fd = open(dirname(d), O_RDONLY | O_DIRECTORY);
	free(d);
	if (fd < 0)
		return -1;
	int rv = fsync(fd);
	close(fd);
	return rv;
}

static int
write_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

int
fed_ledger_append(fed_ledger *l, const struct cJSON *obj)
{
	cJSON *o = cJSON_Duplicate(obj, 1);
	char *body = NULL, *line = NULL;
	int rv = -1;
	if (o == NULL || !cJSON_IsObject(o)) {
		fs_seterr("ledger %s: entry is not a JSON object", l->path);
		goto out;
	}
	cJSON_AddStringToObject(o, "prev_hash", l->last_hash);
	body = cJSON_PrintUnformatted(o);
	if (body == NULL) {
		fs_seterr("ledger %s: cannot format the entry", l->path);
		goto out;
	}
	size_t bl = strlen(body);
	char hash[65];
	sha_hex(body, bl, hash);
	line = malloc(bl + 100);
	if (line == NULL) {
		fs_seterr("out of memory");
		goto out;
	}
	body[bl - 1] = '\0'; /* drop the closing brace */
	int ll = snprintf(line, bl + 100, "%s%s%s\"}\n", body, HASH_KEY, hash);
	off_t end = lseek(l->fd, 0, SEEK_END);
	if (write_all(l->fd, line, (size_t)ll) != 0 || fsync(l->fd) != 0) {
		fs_seterr("ledger %s: write: %s", l->path, strerror(errno));
		if (ftruncate(l->fd, end) != 0)
			fs_log(FS_LOG_ERR, "LEDGER-IO", "ledger %s: cannot "
			    "undo a partial line", l->path);
		goto out;
	}
	fsync_dir(l->path);
	memcpy(l->last_hash, hash, 65);
	l->count++;
	cJSON_AddStringToObject(o, "hash", hash);
	cJSON_Delete(l->last);
	l->last = o;
	o = NULL;
	rv = 0;
out:
	cJSON_Delete(o);
	cJSON_free(body);
	free(line);
	return rv;
}
