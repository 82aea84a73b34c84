/*
 * agg.h - the federation aggregator (executable fedseg-aggregator).
 *
 * It listens on tls+tcp://, admits nodes whose certificate chains to the
 * federation CA with role "node", hands out signed global models, takes
 * signed weight deltas, averages them (FedAvg weighted by sample counts,
 * streaming: one double accumulator of model size whatever the number of
 * nodes), writes every global model durably and records each round in a
 * hash-chained ledger. See docs/protocol.md and docs/aggregator-config.md.
 *
 * It links only the plain-C part of model/ (fedseg_modelspec): never
 * libtorch.
 */
#ifndef FEDSEG_AGG_H
#define FEDSEG_AGG_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AGG_PATH_MAX 1024

/* The configuration (agg.json). Paths are absolute after loading
 * (relative ones are taken from the config file's directory). */
typedef struct {
	char listen[256];            /* tls+tcp://host:port */
	char cert[AGG_PATH_MAX];     /* aggregator certificate + key, one PEM */
	char ca[AGG_PATH_MAX];       /* federation CA certificate */
	char crl[AGG_PATH_MAX];      /* CRL PEM ("" = none) */
	char state_dir[AGG_PATH_MAX];
	char initial_weights[AGG_PATH_MAX]; /* "" = from seed */
	model_spec spec;
	uint64_t seed;
	int rounds;                  /* rounds to run (>= 1) */
	int min_nodes;               /* joined nodes needed to open a round */
	int min_updates;             /* updates needed to close at the deadline */
	double round_deadline_s;     /* seconds from a round's opening */
	int codec;                   /* fed_codec for updates */
	double topk_fraction;        /* codec topk: share kept, sent in Task */
	char strategy[32];           /* "fedavg", "median", "trimmed_mean" */
	double trim_fraction;        /* trimmed_mean: share cut at each end */
	double clip_norm;            /* L2 bound on each update, 0 = off */
	char server_optimizer[32];   /* "none", "fedavgm", "fedadam", "fedyogi" */
	double server_lr;            /* global += server_lr * step */
	double server_momentum;      /* fedavgm */
	double beta1, beta2, tau;    /* fedadam / fedyogi */
	double node_timeout_s;       /* silent sessions expire, 0 = never */
	char allowed_nodes[4096];    /* CNs, '\n'-separated; "" = any */
	int rate_per_s;              /* requests per node per second, 0 = off */
	int anon_rate_per_s;         /* requests naming no node yet (Join
	                              * before its checks, Status, malformed),
	                              * all peers together, per second; 0 off */
	size_t max_message_bytes;    /* NNG_OPT_RECVMAXSZ, announced in JoinAck */
	int contexts;                /* nng contexts (concurrent requests) */
	int workers;                 /* handler threads */
	int max_model_transfers;     /* whole-model messages in flight: Task /
	                              * Done replies + granted uploads (0 = any);
	                              * alias max_task_transfers */
	int upload_grant_ms;         /* an unused upload grant expires */
	/* local training settings sent in every Task */
	int train_steps;
	double train_lr;
	int train_batch;
	int train_patch;
	double train_fg_share;
	double train_prox_mu;
	int wait_ms;                 /* retry_after_ms in Wait replies */
	int log_level;
} agg_config;

agg_config agg_config_default(void);
/* Reads agg.json into *cfg (starting from the defaults). Unknown keys are
 * an error (a typo must not silently fall back to a default). */
int agg_config_load(const char *path, agg_config *cfg);

/* `fedseg-aggregator --config agg.json` (argv[0] = any name). Returns the
 * process exit status; stops cleanly on SIGINT / SIGTERM; SIGHUP reloads
 * the CRL. */
int agg_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
