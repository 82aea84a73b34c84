/*
 * agg_main.c - fedseg-aggregator: options, start-up, signals, shutdown.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agg_impl.h"
#include "base.h"
#include "codec.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: fedseg-aggregator --config agg.json [--log-level L]\n"
	    "       (also: fedseg aggregator --config agg.json)\n"
	    "Runs the federation aggregator: listens on tls+tcp://, runs the\n"
	    "rounds, averages the nodes' deltas (FedAvg), writes every global\n"
	    "model and a hash-chained ledger into state_dir.\n"
	    "  --config FILE        the aggregator config (see "
	    "docs/aggregator-config.md)\n"
	    "  --log-level L        error, warn, info (default), debug\n"
	    "  --exit-when-done     exit once every node was told Done\n"
	    "  --help               this text\n"
	    "Signals: SIGINT/SIGTERM stop cleanly, SIGHUP reloads the CRL.\n");
}

static int
fail(const char *fmt, const char *a)
{
	fprintf(stderr, "fedseg aggregator: ");
	fprintf(stderr, fmt, a);
	fprintf(stderr, "\n");
	return 1;
}

static int
setup(agg *a)
{
	char path[AGG_PATH_MAX + 32];
	if (fs_mkdir_p(a->cfg.state_dir, 1) != 0 ||
	    fs_path(path, sizeof path, "%s/models", a->cfg.state_dir) != 0 ||
	    fs_mkdir_p(path, 0) != 0)
		return -1;
	a->id = fed_identity_load(a->cfg.cert, a->cfg.cert);
	if (a->id == NULL)
		return fs_preferr("identity");
	a->trust = fed_trust_load(a->cfg.ca, a->cfg.crl[0] ? a->cfg.crl : NULL);
	if (a->trust == NULL)
		return fs_preferr("trust");
	char cn[FED_CN_MAX];
	size_t pl;
	const char *pem = fed_identity_cert_pem(a->id, &pl);
	if (fed_trust_verify_cert(a->trust, pem, pl, "aggregator", cn) != 0)
		return fs_preferr("own certificate %s", a->cfg.cert);
	double days = fed_cert_days_left(a->cfg.cert);
	if (days < 30)
		fs_log(FS_LOG_WARN, "AGG-CERT", "certificate %s expires in %.0f "
		    "days: renew it (fedseg certs renew)", a->cfg.cert, days);
	if (a->cfg.crl[0] != '\0') {
		double cd = fed_crl_days_left(a->cfg.crl);
		if (cd < 7)
			fs_log(FS_LOG_WARN, "AGG-CRL", "CRL %s must be "
			    "re-issued within %.1f days (after that every "
			    "certificate is refused)", a->cfg.crl, cd);
	}
	if (model_table_build(&a->cfg.spec, &a->tab) != 0)
		return -1;
	a->n = a->tab.total;
	char *tt = model_table_text(&a->tab);
	a->spec_json = model_spec_to_json(&a->cfg.spec);
	if (tt == NULL || a->spec_json == NULL) {
		free(tt);
		return fs_seterr("out of memory");
	}
	fed_sha256(tt, strlen(tt), a->table_digest);
	free(tt);
	if (fs_path(path, sizeof path, "%s/ledger.jsonl", a->cfg.state_dir) ||
	    (a->ledger = fed_ledger_open(path)) == NULL)
		return -1;
	return agg_state_init(a);
}

static void
teardown(agg *a)
{
	fed_ledger_close(a->ledger);
	fed_identity_free(a->id);
	fed_trust_free(a->trust);
	model_table_free(&a->tab);
	free(a->spec_json);
	agg_state_free(a);
	pthread_mutex_destroy(&a->mu);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->trust_mu);
}

/* Waits for signals until asked to stop; returns the signal or 0. */
static void
reload_crl(agg *a, fed_server *srv)
{
	fed_tls_paths tls = { a->cfg.cert, a->cfg.ca,
		a->cfg.crl[0] ? a->cfg.crl : NULL };
	pthread_mutex_lock(&a->trust_mu);
	int rv = fed_trust_reload_crl(a->trust);
	pthread_mutex_unlock(&a->trust_mu);
	if (rv == 0)
		agg_recheck_sessions(a);
	if (rv == 0)
		rv = fed_server_reload_tls(srv, &tls);
	if (rv == 0)
		fs_log(FS_LOG_INFO, "AGG-CRL", "CRL reloaded (messages and "
		    "TLS handshakes)");
	else
		fs_log(FS_LOG_WARN, "AGG-CRL", "CRL reload failed: %s",
		    fs_error());
}

static int
signal_loop(agg *a, fed_server *srv, const sigset_t *set)
{
	struct timespec ts = { 0, 200 * 1000000L };
	while (!a->stop) {
		int sig = sigtimedwait(set, NULL, &ts);
		if (sig == SIGHUP) {
			reload_crl(a, srv);
		} else if (sig == SIGINT || sig == SIGTERM) {
			fs_log(FS_LOG_INFO, "AGG-STOP", "signal %d: stopping",
			    sig);
			return sig;
		}
	}
	return 0;
}

static int
run(agg *a)
{
	sigset_t set;
	pthread_t rt;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* threads inherit the mask */
	signal(SIGPIPE, SIG_IGN);
	fed_tls_paths tls = { a->cfg.cert, a->cfg.ca,
		a->cfg.crl[0] ? a->cfg.crl : NULL };
	fed_server *srv = fed_server_start(a->cfg.listen, &tls,
	    a->cfg.max_message_bytes, a->cfg.contexts, a->cfg.workers,
	    agg_handle, agg_task_sent, a);
	if (srv == NULL)
		return -1;
	fs_log(FS_LOG_INFO, "AGG-START", "listening on %s as %s: %zu "
	    "parameters, %d rounds, min_nodes %d, codec %s, version %u",
	    a->cfg.listen, fed_identity_cn(a->id), a->n, a->cfg.rounds,
	    a->cfg.min_nodes, fed_codec_name(a->cfg.codec), a->version);
	if (pthread_create(&rt, NULL, agg_round_thread, a) != 0) {
		fed_server_stop(srv);
		return fs_seterr("cannot start the round thread");
	}
	signal_loop(a, srv, &set);
	pthread_mutex_lock(&a->mu);
	int failed = a->stop == 2;
	a->stop = a->stop ? a->stop : 1;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
	pthread_join(rt, NULL);
	fed_server_stop(srv);
	fs_log(FS_LOG_INFO, "AGG-STOP", "stopped at version %u", a->version);
	return failed ? -1 : 0;
}

int
agg_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "exit-when-done", no_argument, NULL, 'x' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL, *level = NULL;
	int c, exit_when_done = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:l:xh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': config = optarg; break;
		case 'l': level = optarg; break;
		case 'x': exit_when_done = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (config == NULL)
		return fail("%s", "--config agg.json is required (see --help)");
	if (optind < argc)
		return fail("unexpected argument '%s'", argv[optind]);
	static agg a; /* large; one per process */
	memset(&a, 0, sizeof a);
	a.cfg = agg_config_default();
	if (agg_config_load(config, &a.cfg) != 0)
		return fail("%s", fs_error());
	fs_log_set_level(a.cfg.log_level);
	if (level != NULL) {
		static const char *n[] = { "error", "warn", "info", "debug" };
		static const int l[] = { FS_LOG_ERR, FS_LOG_WARN, FS_LOG_INFO,
			FS_LOG_DEBUG };
		int k = -1;
		for (int i = 0; i < 4; i++)
			if (strcmp(level, n[i]) == 0)
				k = i;
		if (k < 0)
			return fail("--log-level '%s': error|warn|info|debug",
			    level);
		fs_log_set_level(l[k]);
	}
	fs_log_set_role("aggregator");
	a.exit_when_done = exit_when_done;
	a.started = fs_now();
	pthread_mutex_init(&a.mu, NULL);
	pthread_mutex_init(&a.anon_mu, NULL);
	pthread_cond_init(&a.cv, NULL);
	pthread_mutex_init(&a.trust_mu, NULL);
	int rv = setup(&a) == 0 ? run(&a) : -1;
	if (rv != 0)
		fprintf(stderr, "fedseg aggregator: %s\n", fs_error());
	teardown(&a);
	return rv == 0 ? 0 : 1;
}
