/*
 * node.h - the federation node: `fedseg node --config node.json`.
 *
 * Dials the aggregator (outbound only), joins with a signed Join, then
 * loops: TaskRequest -> verify the signed global model -> save it as
 * state_dir/global.safetensors -> train locally on the node's own cases
 * (loaded once) -> send the signed, encoded delta -> until Done. Reconnects
 * with back-off when the aggregator goes away. See docs/protocol.md.
 */
#ifndef FEDSEG_NODE_H
#define FEDSEG_NODE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NODE_PATH_MAX 1024

typedef struct {
	char aggregator[256];        /* tls+tcp://host:port */
	char cert[NODE_PATH_MAX];    /* node certificate + key, one PEM */
	char ca[NODE_PATH_MAX];
	char crl[NODE_PATH_MAX];     /* "" = none */
	char data[NODE_PATH_MAX];    /* the node's cases */
	char state_dir[NODE_PATH_MAX];
	char device[32];             /* "cpu", "cuda", "cuda:N" */
	int modalities[4];           /* expected modalities (checked against */
	int nmod;                    /*   the model spec); 0 = the spec's */
	int threads;                 /* libtorch threads, 0 = cores */
	uint64_t seed;
	size_t max_message_bytes;    /* bound on replies (global models) */
	int timeout_s;               /* per request */
	int max_cases;               /* 0 = all */
	int save_local;              /* write local-round-NNNN.safetensors */
	double backoff_max_s;        /* longest pause between retries */
	double heartbeat_s;          /* while training, 0 = none */
	int log_level;
} node_config;

node_config node_config_default(void);
/* Reads node.json (relative paths from the file's directory). Unknown keys
 * are an error. */
int node_config_load(const char *path, node_config *cfg);

/* `fedseg node --config node.json`; argv[0] = "node". Returns the exit
 * status: 0 after Done, 1 on a fatal error, 2 on bad usage, 130 when
 * stopped by SIGINT/SIGTERM. */
int node_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
