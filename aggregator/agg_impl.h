/*
 * agg_impl.h - aggregator internals shared by agg_*.c (private).
 *
 * Locking: `mu` guards everything below it in struct agg. Handlers run on
 * the transport's worker threads; the round thread opens and closes
 * rounds. Slow steps (certificate and signature checks, decoding a delta,
 * writing a model file) run outside `mu`; adding a validated payload into
 * the accumulator and packing a Task run inside it.
 */
#ifndef FEDSEG_AGG_IMPL_H
#define FEDSEG_AGG_IMPL_H

#include <pthread.h>
#include <stdint.h>

#include "agg.h"
#include "crypto.h"
#include "ledger.h"
#include "msg.h"
#include "transport.h"

enum { AGG_WAITING, AGG_TRAINING, AGG_CLOSING, AGG_DONE };
enum { UP_NONE, UP_GRANTED, UP_CHECKING };

typedef struct {
	char cn[FED_CN_MAX];
	uint8_t session[FED_NONCE_LEN];
	int has_session;         /* 0: expired, or restored from the spool */
	int selected;            /* part of the current round's selection */
	uint32_t submitted;      /* last round this node contributed to */
	uint32_t task_round;     /* round whose Task this session was sent */
	uint32_t inflight;       /* round of an update being validated */
	int got_done;            /* was sent Done */
	double last_seen;        /* fs_now() */
	double window_start;     /* rate limit: start of the 1 s window */
	int window_count;        /* requests in that window */
	char *cert_pem;          /* certificate of its last Join (malloc'd), */
	size_t cert_len;         /* checked again when the CRL is reloaded */
	int task_sending;        /* a Task/Done reply to it is still in nng */
	double task_queued;      /* fs_now() it was first told to wait for a
	                          * transfer slot (0: not waiting) */
	int upload_slot;         /* UP_NONE, UP_GRANTED, UP_CHECKING */
	uint8_t grant[16];       /* token of its upload grant */
	double grant_expires;    /* fs_now() an unused grant lapses */
	uint32_t grant_round;    /* round the grant was given for */
} agg_node;

typedef struct {
	char cn[FED_CN_MAX];
	uint64_t samples;
	char digest[65];         /* hex SHA-256 of the update payload */
	double mean_loss;
	uint32_t steps;
	double seconds;
	size_t bytes;
	double norm;             /* L2 norm of the decoded delta */
	double scale;            /* clipping factor applied (1 = none) */
	char file[80];           /* spool base name (no extension) */
} agg_contrib;

/* Aggregation rules and server optimisers (agg_strategy.c). */
enum { AGG_RULE_FEDAVG, AGG_RULE_MEDIAN, AGG_RULE_TRIMMED };
enum { AGG_OPT_NONE, AGG_OPT_FEDAVGM, AGG_OPT_FEDADAM, AGG_OPT_FEDYOGI };

typedef struct agg {
	agg_config cfg;
	fed_identity *id;
	fed_trust *trust;
	pthread_mutex_t trust_mu;    /* fed_trust is not shared across threads */
	model_table tab;
	char *spec_json;
	uint8_t table_digest[32];
	size_t n;                    /* floats in the model */
	fed_ledger *ledger;          /* only the round thread appends */
	double started;
	volatile int stop;
	int exit_when_done;

	pthread_mutex_t anon_mu;     /* the anonymous-request window: */
	double anon_start;           /* start of its 1 s window */
	int anon_count;              /* requests in it */

	pthread_mutex_t mu;
	pthread_cond_t cv;
	int phase;
	uint32_t version;            /* closed rounds = version of global */
	uint32_t round;              /* round in progress (version + 1) */
	float *global;               /* the body of task_payload (f32 codec,
	                              * little-endian host): not its own copy */
	uint8_t digest[32];          /* fed_weights_digest(global) */
	uint8_t *task_payload;       /* f32 codec payload of global */
	size_t task_len;
	uint8_t *task_sig;           /* sig over (digest, version+1, version) */
	size_t task_siglen;
	float *acc;                  /* fedavg: sample-weighted mean of this
	                              * round's (clipped) deltas so far */
	double wsum;                 /* sum of samples, this round */
	agg_contrib *contrib;
	int ncontrib, capcontrib;
	agg_node *nodes;
	int nnodes, capnodes;
	int nselected;
	double bytes_out;            /* Task bytes sent this round */
	int task_inflight;           /* whole-model messages in flight: Task /
	                              * Done replies not yet written out, and
	                              * upload slots held (granted, or an Update
	                              * being checked); <= max_model_transfers */
	double deadline;             /* fs_now() at which the round may close */
	int deadline_warned;         /* logged "deadline passed, too few" */
	double done_at;
	int rule;                    /* AGG_RULE_* */
	int opt;                     /* AGG_OPT_* */
	float *opt_m, *opt_v;        /* server optimiser state (or NULL) */
	uint8_t opt_digest[32];      /* SHA-256 of the state file, last close */
} agg;

/* agg_round.c */
int agg_state_init(agg *a);          /* initial or restored global */
void agg_state_free(agg *a);
void *agg_round_thread(void *arg);
/* Builds the Task payload + signature for the current global (no lock). */
int agg_task_prepare(agg *a, const float *w, const uint8_t digest[32],
    uint32_t version, uint8_t **payload, size_t *len, uint8_t **sig,
    size_t *siglen);

/* agg_spool.c: accepted updates on disk, restart, crash points */
/* Test-only fault injection: FEDSEG_TEST_CRASH_AT=name[:k] makes the
 * process _exit(137) at the k-th (default 1st) pass through `name`. */
void agg_crash_point(const char *name);
/* Base name of a node's spool file for a CN (no extension). */
void agg_spool_name(const char *cn, char out[80]);
/* Writes the packed Update durably to spool/round-NNNN/<name>.update and
 * the decoded delta to <name>.f32 (when the rule needs it; u's payload has
 * passed agg_payload_check). */
int agg_spool_write(agg *a, uint32_t round, const char *name,
    const Fedseg__Update *u);
/* Path of spool/round-NNNN[/<name>.<ext>]. */
int agg_spool_path(const agg *a, uint32_t round, const char *name,
    const char *ext, char *buf, size_t n);
/* Removes spool/round-NNNN (after the round's ledger line is durable). */
void agg_spool_drop(agg *a, uint32_t round);
/* On start (global restored, version known): drops spools of closed
 * rounds, sets aside corrupt / half-written files, re-validates every
 * spooled update of the open round and adds it (contrib + accumulator).
 * Under no lock (before the threads start). */
int agg_spool_restore(agg *a);
/* Adds an update whose payload passed agg_payload_check to the round:
 * fedavg folds it straight from the payload into the running weighted
 * mean acc (no decoded copy), then the contributor row. Under a->mu (or
 * before threads start). -1 (acc unchanged) only if the payload is not
 * the one that was checked. */
int agg_contrib_add(agg *a, agg_node *n, const Fedseg__Update *u,
    double norm, const char *file);
/* Creates or finds the node entry for cn (under a->mu). */
agg_node *agg_node_get(agg *a, const char *cn);

/* agg_strategy.c */
int agg_strategy_parse(agg *a);
/* Short description for the ledger and model metadata. */
void agg_strategy_text(const agg *a, char *buf, size_t n);
/* Combines the round's updates into the new global w (n floats) from the
 * accumulator (fedavg) or the spooled deltas (median, trimmed mean), then
 * applies the server optimiser (updating its state). No lock. */
int agg_combine(agg *a, float *w);
/* Server optimiser state file of a version: write / load (digest checked
 * against hex when not NULL). */
int agg_opt_save(agg *a, uint32_t version);
int agg_opt_load(agg *a, uint32_t version, const char *hex);

/* agg_handlers.c */
/* Certificate of an Join / Update: chain, CRL, expiry, role node, and the
 * allow-list; the CN into cn. */
int agg_update_cert(agg *a, const ProtobufCBinaryData *pem,
    char cn[FED_CN_MAX]);
/* Signature, then agg_payload_check (no lock). */
int agg_update_payload_check(agg *a, const Fedseg__Update *u, double *norm);
/* Payload digest (the one SHA-256 pass over the payload), sample count,
 * and every check of the codec in one more pass that writes nothing (the
 * body SHA-256 is not recomputed: the digest just checked covers it);
 * *norm = L2 norm of the delta. */
int agg_payload_check(agg *a, const Fedseg__Update *u, double *norm);
/* The transport's handler: unpacks req and frees it before any work. A
 * Task or Done reply is tracked (*track) until nng has written it out. */
nng_msg *agg_handle(void *user, nng_msg *req, void **track);
/* The transport's fed_sent_cb: the tracked reply has left; frees its
 * transfer slot. */
void agg_task_sent(void *user, void *track);
/* After a CRL reload (SIGHUP): every live session whose certificate is now
 * refused (revoked, expired) ends at once, and the node leaves the open
 * round, so a revoked node can neither fetch a Task nor hold a round up.
 * Takes a->mu and trust_mu. Returns the number of sessions ended. */
int agg_recheck_sessions(agg *a);
/* Under a->mu: ends n's session (its upload grant goes back); if it was
 * selected for the open round and has not contributed, it leaves the
 * selection so the round does not wait for it. Returns 1 in that case. */
int agg_session_end(agg *a, agg_node *n);
agg_node *agg_node_find(agg *a, const char *cn);
/* Under a->mu: gives back n's upload slot (session ended, or replaced). An
 * Update being checked keeps its slot until the check is over. */
void agg_upload_drop(agg *a, agg_node *n);

#endif
