/*
 * agg_spool.c - accepted updates on disk, so that a crash loses nothing
 * that was acknowledged, and the restart path that rebuilds the open round.
 *
 * state_dir/spool/round-NNNN/<name>.update   one per contributor:
 *     "FSUP" | u32 format (1) | SHA-256 of the rest (32) | packed Update
 *   written with temp + fsync + rename + directory fsync BEFORE the node's
 *   UpdateAck. The packed Update still carries the node's certificate and
 *   signature, so on restart every file is re-validated exactly like a
 *   fresh update (certificate against the current CA/CRL, signature,
 *   payload digest, decoding) before it counts.
 * state_dir/spool/round-NNNN/<name>.f32      the decoded delta (raw
 *   little-endian float32), only for rules that combine from disk (median,
 *   trimmed mean). Derived data: deleted and rebuilt from .update on start.
 *
 * A round's spool directory is removed once its ledger line is durable.
 * Anything that does not validate is renamed *.corrupt with a log line and
 * never loaded.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agg_impl.h"
#include "base.h"
#include "codec.h"

#define SPOOL_MAGIC "FSUP"
#define SPOOL_HDR 40

/* ---- fault injection (tests only) --------------------------------------- */

void
agg_crash_point(const char *name)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static int passes;
	const char *e = getenv("FEDSEG_TEST_CRASH_AT");
	size_t l = strlen(name);
	if (e == NULL || strncmp(e, name, l) != 0 ||
	    (e[l] != '\0' && e[l] != ':'))
		return;
	int k = e[l] == ':' ? atoi(e + l + 1) : 1;
	pthread_mutex_lock(&mu);
	int p = ++passes;
	pthread_mutex_unlock(&mu);
	if (p == k) {
		fs_log(FS_LOG_ERR, "AGG-CRASH", "FEDSEG_TEST_CRASH_AT=%s: "
		    "exiting at %s (pass %d)", e, name, p);
		_exit(137);
	}
}

/* ---- names and paths ---------------------------------------------------- */

void
agg_spool_name(const char *cn, char out[80])
{
	uint8_t d[32];
	char hex[65];
	size_t k = 0;
	for (const char *s = cn; *s && k < 40; s++) {
		char c = *s;
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		    (c == '.' && k > 0);
		out[k++] = ok ? c : '_';
	}
	fed_sha256(cn, strlen(cn), d);
	fed_hex(d, 4, hex);
	snprintf(out + k, 80 - k, "-%s", hex);
}

int
agg_spool_path(const agg *a, uint32_t round, const char *name,
    const char *ext, char *buf, size_t n)
{
	if (name == NULL)
		return fs_path(buf, n, "%s/spool/round-%04u", a->cfg.state_dir,
		    round);
	return fs_path(buf, n, "%s/spool/round-%04u/%s.%s", a->cfg.state_dir,
	    round, name, ext);
}

/* The decoded delta of a checked payload, for the robust rules that read
 * it back (a model-sized buffer only while it is written). */
static int
write_f32(agg *a, uint32_t round, const char *name,
    const Fedseg__Update *u)
{
	char p[AGG_PATH_MAX + 160];
	if (agg_spool_path(a, round, name, "f32", p, sizeof p) != 0)
		return -1;
	float *x = malloc(a->n * sizeof(float));
	int rv = x == NULL ? fs_seterr("out of memory") :
	    fed_codec_decode_axpbyf(u->payload.data, u->payload.len, a->n,
	    a->table_digest, 1.0f, 0.0f, x, FED_CODEC_PRECHECKED, NULL);
	if (rv == 0)
		rv = fs_write_atomic(p, x, a->n * sizeof(float), 0600);
	free(x);
	return rv;
}

/* protobuf-c output straight into the spool file and its checksum, so
 * that spooling holds no packed copy of the update. */
typedef struct {
	ProtobufCBuffer base;
	FILE *fp;
	fed_sha256_ctx *sha;
	int err;
} spool_out;

static void
spool_append(ProtobufCBuffer *b, size_t len, const uint8_t *data)
{
	spool_out *o = (spool_out *)b;
	fed_sha256_update(o->sha, data, len);
	if (!o->err && fwrite(data, 1, len, o->fp) != len)
		o->err = 1;
}

int
agg_spool_write(agg *a, uint32_t round, const char *name,
    const Fedseg__Update *u)
{
	char p[AGG_PATH_MAX + 160];
	uint8_t hdr[SPOOL_HDR];
	if (agg_spool_path(a, round, NULL, NULL, p, sizeof p) != 0 ||
	    fs_mkdir_p(p, 1) != 0)
		return -1;
	if (a->rule != AGG_RULE_FEDAVG && write_f32(a, round, name, u))
		return -1;
	if (agg_spool_path(a, round, name, "update", p, sizeof p) != 0)
		return -1;
	memset(hdr, 0, sizeof hdr);
	memcpy(hdr, SPOOL_MAGIC, 4);
	hdr[4] = 1;
	fs_atomic *f = fs_atomic_open(p, 0600);
	if (f == NULL)
		return -1;
	spool_out o = { { spool_append }, fs_atomic_file(f),
		fed_sha256_begin(), 0 };
	if (o.sha == NULL) {
		fs_atomic_abort(f);
		return fs_seterr("out of memory");
	}
	/* header with a zero checksum, the Update, then the checksum */
	o.err = fwrite(hdr, 1, sizeof hdr, o.fp) != sizeof hdr;
	fedseg__update__pack_to_buffer(u, &o.base);
	fed_sha256_end(o.sha, hdr + 8);
	if (o.err || fseek(o.fp, 8, SEEK_SET) != 0 ||
	    fwrite(hdr + 8, 1, 32, o.fp) != 32) {
		fs_atomic_abort(f);
		return fs_seterr("%s: write failed", p);
	}
	return fs_atomic_commit(f);
}

static int
ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcmp(s + a - b, suf) == 0;
}

static void
rm_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[AGG_PATH_MAX + 300];
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || ends_with(e->d_name, ".corrupt"))
			continue; /* set-aside files stay for the operator */
		if (fs_path(p, sizeof p, "%s/%s", dir, e->d_name) == 0)
			unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

void
agg_spool_drop(agg *a, uint32_t round)
{
	char p[AGG_PATH_MAX + 160];
	if (agg_spool_path(a, round, NULL, NULL, p, sizeof p) == 0)
		rm_dir(p);
}

/* ---- contributions -------------------------------------------------------- */

agg_node *
agg_node_get(agg *a, const char *cn)
{
	agg_node *n = agg_node_find(a, cn);
	if (n != NULL)
		return n;
	if (a->nnodes == a->capnodes) {
		int cap = a->capnodes ? 2 * a->capnodes : 8;
		agg_node *p = realloc(a->nodes, (size_t)cap * sizeof *p);
		if (p == NULL) {
			fs_seterr("out of memory");
			return NULL;
		}
		a->nodes = p;
		a->capnodes = cap;
	}
	n = &a->nodes[a->nnodes++];
	memset(n, 0, sizeof *n);
	snprintf(n->cn, sizeof n->cn, "%s", cn);
	return n;
}

int
agg_contrib_add(agg *a, agg_node *n, const Fedseg__Update *u,
    double norm, const char *file)
{
	double s = (double)u->sample_count;
	double scale = 1.0;
	if (a->cfg.clip_norm > 0 && norm > a->cfg.clip_norm)
		scale = a->cfg.clip_norm / norm;
	if (a->rule == AGG_RULE_FEDAVG) {
		/* running weighted mean: acc = (W acc + s scale x) / (W + s),
		 * a convex combination in float that cannot overflow and
		 * needs no division at the end; the first update stores
		 * (beta 0: acc is not read, so it needs no clearing) */
		double w1 = a->wsum + s;
		if (fed_codec_decode_axpbyf(u->payload.data, u->payload.len,
		    a->n, a->table_digest, (float)(s * scale / w1),
		    (float)(a->wsum / w1), a->acc, FED_CODEC_PRECHECKED,
		    NULL) != 0)
			return -1;
	}
	a->wsum += s;
	n->submitted = a->round;
	if (a->ncontrib == a->capcontrib) {
		int cap = a->capcontrib ? 2 * a->capcontrib : 8;
		agg_contrib *p = realloc(a->contrib, (size_t)cap * sizeof *p);
		if (p == NULL)
			return 0; /* the delta counts; only the ledger row is lost */
		a->contrib = p;
		a->capcontrib = cap;
	}
	agg_contrib *c = &a->contrib[a->ncontrib++];
	memset(c, 0, sizeof *c);
	snprintf(c->cn, sizeof c->cn, "%s", n->cn);
	c->samples = u->sample_count;
	fed_hex(u->payload_digest.data, 32, c->digest);
	c->bytes = u->payload.len;
	c->norm = norm;
	c->scale = scale;
	snprintf(c->file, sizeof c->file, "%s", file);
	if (u->metrics != NULL) {
		c->mean_loss = isfinite(u->metrics->mean_loss) ?
		    u->metrics->mean_loss : 0;
		c->steps = u->metrics->steps;
		c->seconds = u->metrics->train_seconds;
	}
	if (scale < 1.0)
		fs_log(FS_LOG_WARN, "AGG-CLIP", "update from %s for round %u: "
		    "norm %.4g clipped to %.4g", n->cn, a->round, norm,
		    a->cfg.clip_norm);
	return 0;
}

/* ---- restart --------------------------------------------------------------- */

static void
set_aside(const char *path, const char *why)
{
	char to[AGG_PATH_MAX + 320];
	if (fs_path(to, sizeof to, "%s.corrupt", path) != 0 ||
	    rename(path, to) != 0) {
		fs_log(FS_LOG_ERR, "AGG-CORRUPT", "%s: %s; cannot rename it "
		    "aside (%s), removing it", path, why, strerror(errno));
		unlink(path);
		return;
	}
	fs_log(FS_LOG_WARN, "AGG-CORRUPT", "%s: %s; set aside as %s (not "
	    "loaded)", path, why, to);
}


/* Validates one spooled update and adds it. Returns 0 added, -1 with
 * fs_error() (the caller sets the file aside). */
static int
spool_load(agg *a, const char *path, const char *file)
{
	uint8_t *buf = NULL, d[32];
	size_t len = 0;
	double norm = 0;
	char cn[FED_CN_MAX], want[80];
	Fedseg__Update *u = NULL;
	int rv = -1;
	if (fs_read_file(path, a->cfg.max_message_bytes + 4096,
	    (void **)&buf, &len) != 0)
		return -1;
	if (len < SPOOL_HDR || memcmp(buf, SPOOL_MAGIC, 4) != 0 || buf[4] != 1) {
		fs_seterr("not a spooled update (bad header, %zu bytes)", len);
		goto out;
	}
	fed_sha256(buf + SPOOL_HDR, len - SPOOL_HDR, d);
	if (memcmp(d, buf + 8, 32) != 0) {
		fs_seterr("checksum mismatch (torn or altered file)");
		goto out;
	}
	u = fedseg__update__unpack(NULL, len - SPOOL_HDR, buf + SPOOL_HDR);
	free(buf); /* u holds its own copy of the payload */
	buf = NULL;
	if (u == NULL) {
		fs_seterr("cannot be parsed as an Update");
		goto out;
	}
	if (agg_update_cert(a, &u->cert_pem, cn) != 0)
		goto out;
	agg_spool_name(cn, want);
	if (strcmp(want, file) != 0) {
		fs_seterr("file name does not match its certificate (%s)", cn);
		goto out;
	}
	if (u->round != a->round || u->base_version != a->version) {
		fs_seterr("round %u / base %u, expected %u / %u", u->round,
		    u->base_version, a->round, a->version);
		goto out;
	}
	if (agg_update_payload_check(a, u, &norm) != 0)
		goto out;
	agg_node *n = agg_node_get(a, cn);
	if (n == NULL)
		goto out;
	if (n->submitted == a->round) {
		fs_seterr("a second update from %s", cn);
		goto out;
	}
	if (a->rule != AGG_RULE_FEDAVG && write_f32(a, a->round, file, u))
		goto out;
	if (agg_contrib_add(a, n, u, norm, file) != 0)
		goto out;
	fs_log(FS_LOG_INFO, "AGG-RESTORE", "round %u: update from %s restored "
	    "from the spool (digest %.16s, %llu samples)", a->round, cn,
	    a->contrib[a->ncontrib - 1].digest,
	    (unsigned long long)u->sample_count);
	rv = 0;
out:
	if (u != NULL)
		fedseg__update__free_unpacked(u, NULL);
	free(buf);
	return rv;
}

/* Models written after the last ledger line were never committed (a crash
 * between the model file and its ledger line): the round is redone. */
static void
models_scan(agg *a)
{
	char dir[AGG_PATH_MAX + 32], p[AGG_PATH_MAX + 300];
	if (fs_path(dir, sizeof dir, "%s/models", a->cfg.state_dir) != 0)
		return;
	DIR *d = opendir(dir);
	struct dirent *e;
	unsigned v;
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || ends_with(e->d_name, ".corrupt"))
			continue;
		if (fs_path(p, sizeof p, "%s/%s", dir, e->d_name) != 0)
			continue;
		if (strstr(e->d_name, ".tmp.") != NULL) {
			set_aside(p, "half-written (temp file of a crashed "
			    "write)");
		} else if (sscanf(e->d_name, "round-%u.", &v) == 1 &&
		    v > a->version) {
			fs_log(FS_LOG_WARN, "AGG-RESTORE", "%s: written after "
			    "the last ledger line (uncommitted); removed, "
			    "round %u is redone", p, v);
			unlink(p);
		}
	}
	closedir(d);
}

/* Two passes: first the derived .f32 files and leftovers go, then every
 * .update is validated (writing fresh .f32 files the first pass would
 * otherwise meet again). */
static void
round_dir_restore(agg *a, const char *dir)
{
	char p[AGG_PATH_MAX + 300], base[256];
	for (int pass = 0; pass < 2; pass++) {
		DIR *d = opendir(dir);
		struct dirent *e;
		if (d == NULL)
			return;
		while ((e = readdir(d)) != NULL) {
			const char *f = e->d_name;
			int upd = ends_with(f, ".update");
			if (f[0] == '.' || ends_with(f, ".corrupt") ||
			    fs_path(p, sizeof p, "%s/%s", dir, f) != 0)
				continue;
			if (pass == 1) {
				if (!upd || strlen(f) >= sizeof base)
					continue;
				snprintf(base, sizeof base, "%.*s",
				    (int)(strlen(f) - 7), f);
				if (spool_load(a, p, base) != 0)
					set_aside(p, fs_error());
			} else if (ends_with(f, ".f32") &&
			    strstr(f, ".tmp.") == NULL) {
				unlink(p); /* derived: rebuilt from .update */
			} else if (!upd) {
				set_aside(p, strstr(f, ".tmp.") ?
				    "half-written (temp file of a crashed "
				    "write)" : "unexpected file");
			}
		}
		closedir(d);
	}
}

int
agg_spool_restore(agg *a)
{
	char dir[AGG_PATH_MAX + 32], p[AGG_PATH_MAX + 300];
	unsigned r;
	char tail;
	models_scan(a);
	if (fs_path(dir, sizeof dir, "%s/spool", a->cfg.state_dir) != 0 ||
	    fs_mkdir_p(dir, 1) != 0)
		return -1;
	DIR *d = opendir(dir);
	struct dirent *e;
	if (d == NULL)
		return fs_seterr("%s: %s", dir, strerror(errno));
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || ends_with(e->d_name, ".corrupt"))
			continue;
		if (fs_path(p, sizeof p, "%s/%s", dir, e->d_name) != 0)
			continue;
		if (sscanf(e->d_name, "round-%u%c", &r, &tail) != 1) {
			set_aside(p, "unexpected entry in the spool");
		} else if (r <= a->version) {
			rm_dir(p); /* that round is closed and in the ledger */
		} else if (r > a->round) {
			set_aside(p, "spool of a round after the open one");
		} else {
			round_dir_restore(a, p);
		}
	}
	closedir(d);
	if (a->ncontrib > 0)
		fs_log(FS_LOG_INFO, "AGG-RESTORE", "round %u reopened with %d "
		    "spooled update(s)", a->round, a->ncontrib);
	return 0;
}
