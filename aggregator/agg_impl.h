/*
 * agg_impl.h - aggregator internals shared by agg_*.c (private).
 *
 * Locking: `mu` guards everything below it in struct agg. Handlers run on
 * the transport's worker threads; the round thread opens and closes
 * rounds. Slow steps (certificate and signature checks, decoding a delta,
 * writing a model file) run outside `mu`; adding a validated delta into the
 * accumulator and packing a Task run inside it.
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

typedef struct {
	char cn[FED_CN_MAX];
	uint8_t session[FED_NONCE_LEN];
	int selected;            /* part of the current round's selection */
	uint32_t submitted;      /* last round this node contributed to */
	int got_done;            /* was sent Done */
	double last_seen;        /* fs_now() */
} agg_node;

typedef struct {
	char cn[FED_CN_MAX];
	uint64_t samples;
	char digest[65];         /* hex SHA-256 of the update payload */
	double mean_loss;
	uint32_t steps;
	double seconds;
	size_t bytes;
} agg_contrib;

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

	pthread_mutex_t mu;
	pthread_cond_t cv;
	int phase;
	uint32_t version;            /* closed rounds = version of global */
	uint32_t round;              /* round in progress (version + 1) */
	float *global;
	uint8_t digest[32];          /* fed_weights_digest(global) */
	uint8_t *task_payload;       /* f32 codec payload of global */
	size_t task_len;
	uint8_t *task_sig;           /* sig over (digest, version+1, version) */
	size_t task_siglen;
	double *acc;                 /* sum of samples * delta, this round */
	double wsum;                 /* sum of samples, this round */
	agg_contrib *contrib;
	int ncontrib, capcontrib;
	agg_node *nodes;
	int nnodes, capnodes;
	int nselected;
	double bytes_out;            /* Task bytes sent this round */
	double deadline;             /* fs_now() at which the round may close */
	int deadline_warned;         /* logged "deadline passed, too few" */
	double done_at;
} agg;

/* agg_round.c */
int agg_state_init(agg *a);          /* initial or restored global */
void agg_state_free(agg *a);
void *agg_round_thread(void *arg);
/* Builds the Task payload + signature for the current global (no lock). */
int agg_task_prepare(agg *a, const float *w, const uint8_t digest[32],
    uint32_t version, uint8_t **payload, size_t *len, uint8_t **sig,
    size_t *siglen);

/* agg_handlers.c */
nng_msg *agg_handle(void *user, const uint8_t *req, size_t len);
agg_node *agg_node_find(agg *a, const char *cn);

#endif
