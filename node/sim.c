/* sim.c - `fedseg sim`: provisions a throwaway CA, starts one aggregator
 * and N node processes over real mutual TLS on loopback, splits the cases
 * across the N sites (each sees only its own), runs R rounds with a live
 * line per round, then evaluates the final global model on held-out cases
 * next to a centralised run with the same total number of steps. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <libgen.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "certs.h"
#include "cmds.h"
#include "imaging.h"
#include "model.h"
#include "sim.h"
#include "torch_c.h"

#define SIM_MAX_SITES 64
#define SIM_MAX_DATA 16
#define SIM_MAX_HOLD 64

typedef struct {
	const char *data[SIM_MAX_DATA];
	int ndata;
	const char *hold[SIM_MAX_HOLD];
	int nhold;
	int sites, rounds, steps, patch, batch, threads, central, seed;
	double lr, topk_fraction;
	const char *codec, *workdir;
	model_spec spec;
} sim_opts;

typedef struct {
	pid_t pid;
	char name[32];
	char log[PATH_MAX];
	int done;
	int status;
} child;

static volatile sig_atomic_t sim_stop;
static child kids[SIM_MAX_SITES + 1];
static int nkids;

static void on_signal(int sig) { sim_stop = sig; }

static void sim_usage(FILE *f)
{
	fprintf(f,
	    "usage: fedseg sim --data DIR [--data DIR...] [options]\n"
	    "Runs a whole federation on this machine: a throwaway CA, one aggregator\n"
	    "and N nodes as separate processes over mutual TLS on 127.0.0.1; each\n"
	    "site sees only its share of the cases. Then segments the held-out cases\n"
	    "with the final global model and with a centralised model trained on the\n"
	    "union of the sites' cases for the same total number of steps, and\n"
	    "prints Dice (WT/TC/ET) for both.\n\n"
	    "  --data DIR        dataset folder (repeatable)\n"
	    "  --sites N         number of sites (default 3)\n"
	    "  --rounds R        federated rounds (default 8)\n"
	    "  --steps N         local steps per round (default 20)\n"
	    "  --holdout ID      a held-out case (repeatable; default: the last case)\n"
	    "  --workdir W       where certificates, state and logs go (default: a new\n"
	    "                    folder under /tmp; kept afterwards)\n"
	    "  --patch N         training patch edge (default 64)\n"
	    "  --batch N         patches per step (default 2)\n"
	    "  --base N --depth N  U-Net size (default 8, 4)\n"
	    "  --lr X            learning rate (default 3e-3)\n"
	    "  --codec C         f32, f16, q8 or topk (default q8)\n"
	    "  --topk-fraction F share of each delta topk keeps (default 0.01)\n"
	    "  --threads N       CPU threads in all (default: all cores)\n"
	    "  --no-central      skip the centralised comparison\n"
	    "  --seed N          random seed (default 1)\n");
}

/* ---- child processes ---- */

static void kill_all(int sig)
{
	for (int i = 0; i < nkids; i++)
		if (!kids[i].done && kids[i].pid > 0)
			kill(kids[i].pid, sig);
}

static void reap_all(double timeout)
{
	double t0 = fs_now();
	for (;;) {
		int alive = 0;
		for (int i = 0; i < nkids; i++) {
			if (kids[i].done)
				continue;
			if (waitpid(kids[i].pid, &kids[i].status, WNOHANG) ==
			    kids[i].pid)
				kids[i].done = 1;
			else
				alive++;
		}
		if (alive == 0)
			return;
		if (fs_now() - t0 > timeout) {
			kill_all(SIGKILL);
			timeout = 1e9;
		}
		usleep(50000);
	}
}

/* Starts argv in folder cwd with stdout and stderr to log. */
static int spawn(const char *name, const char *cwd, const char *log,
    char *const argv[])
{
	child *k = &kids[nkids];
	pid_t pid;
	memset(k, 0, sizeof(*k));
	snprintf(k->name, sizeof(k->name), "%s", name);
	snprintf(k->log, sizeof(k->log), "%s", log);
	pid = fork();
	if (pid < 0)
		return fs_seterr("fork: %s", strerror(errno));
	if (pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		signal(SIGINT, SIG_IGN); /* the sim stops its children itself */
		if (chdir(cwd) != 0) {
			fprintf(stderr, "cannot enter %s: %s\n", cwd, strerror(errno));
			_exit(127);
		}
		execv(argv[0], argv);
		fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	k->pid = pid;
	nkids++;
	return 0;
}

static void print_log_tail(const char *path, int lines)
{
	char cmd[PATH_MAX + 64];
	snprintf(cmd, sizeof(cmd), "tail -n %d '%s' >&2", lines, path);
	if (system(cmd) != 0)
		fprintf(stderr, "(log %s unreadable)\n", path);
}

/* ---- setup ---- */

static int free_port(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static int write_json(const char *path, cJSON *o)
{
	char *t = cJSON_Print(o);
	int rv;
	if (t == NULL)
		return fs_seterr("out of memory");
	rv = fs_write_atomic(path, t, strlen(t), 0644);
	free(t);
	return rv;
}

static int is_holdout(const sim_opts *o, const char *id)
{
	for (int i = 0; i < o->nhold; i++)
		if (strcmp(o->hold[i], id) == 0)
			return 1;
	return 0;
}

static void add_abs_path(cJSON *o, const char *key, const char *path)
{
	char abs[PATH_MAX];
	cJSON_AddStringToObject(o, key, realpath(path, abs) ? abs : path);
}

/* Writes W/site-K/fedseg-manifest.json for each site: cases dealt round
 * robin (sorted by id, so the split is reproducible). */
static int write_sites(const sim_opts *o, const char *w, img_case_ref **train,
    int ntrain)
{
	for (int s = 0; s < o->sites; s++) {
		char dir[PATH_MAX], path[PATH_MAX];
		cJSON *root = cJSON_CreateObject();
		cJSON *arr = cJSON_AddArrayToObject(root, "cases");
		int rv;
		for (int i = s; i < ntrain; i += o->sites) {
			img_case_ref *r = train[i];
			cJSON *c = cJSON_CreateObject();
			cJSON_AddStringToObject(c, "id", r->id);
			/* Absolute paths: the manifest resolves relative ones
			 * against its own folder. */
			for (int m = 0; m < IMG_NMOD; m++)
				if (r->paths[m])
					add_abs_path(c, img_modality_name(m),
					    r->paths[m]);
			add_abs_path(c, "label", r->label);
			if (r->label_conv >= 0)
				cJSON_AddStringToObject(c, "label_convention",
				    img_label_conv_name(r->label_conv));
			cJSON_AddItemToArray(arr, c);
		}
		if (fs_path(dir, sizeof(dir), "%s/site-%d/data", w, s + 1) ||
		    fs_mkdir_p(dir, 0) ||
		    fs_path(path, sizeof(path), "%s/fedseg-manifest.json", dir)) {
			cJSON_Delete(root);
			return -1;
		}
		rv = write_json(path, root);
		cJSON_Delete(root);
		if (rv != 0)
			return -1;
	}
	return 0;
}

static int write_configs(const sim_opts *o, const char *w, int port,
    int node_threads)
{
	char path[PATH_MAX], url[64];
	cJSON *a = cJSON_CreateObject(), *m, *t, *mods;
	snprintf(url, sizeof(url), "tls+tcp://127.0.0.1:%d", port);
	cJSON_AddStringToObject(a, "listen", url);
	cJSON_AddStringToObject(a, "cert", "pki/aggregator.pem");
	cJSON_AddStringToObject(a, "ca", "pki/ca.crt");
	cJSON_AddStringToObject(a, "crl", "pki/crl.pem");
	cJSON_AddStringToObject(a, "state_dir", "aggregator");
	cJSON_AddNumberToObject(a, "seed", o->seed);
	cJSON_AddNumberToObject(a, "rounds", o->rounds);
	cJSON_AddNumberToObject(a, "min_nodes", o->sites);
	cJSON_AddNumberToObject(a, "min_updates", o->sites);
	cJSON_AddNumberToObject(a, "round_deadline_s", 3600);
	cJSON_AddStringToObject(a, "codec", o->codec);
	if (o->topk_fraction > 0)
		cJSON_AddNumberToObject(a, "topk_fraction", o->topk_fraction);
	cJSON_AddStringToObject(a, "strategy", "fedavg");
	m = cJSON_AddObjectToObject(a, "model");
	mods = cJSON_AddArrayToObject(m, "modalities");
	for (int i = 0; i < o->spec.nmod; i++)
		cJSON_AddItemToArray(mods, cJSON_CreateString(
		    img_modality_name(o->spec.modalities[i])));
	cJSON_AddNumberToObject(m, "base", o->spec.base);
	cJSON_AddNumberToObject(m, "depth", o->spec.depth);
	t = cJSON_AddObjectToObject(a, "train");
	cJSON_AddNumberToObject(t, "steps", o->steps);
	cJSON_AddNumberToObject(t, "lr", o->lr);
	cJSON_AddNumberToObject(t, "batch", o->batch);
	cJSON_AddNumberToObject(t, "patch", o->patch);
	if (fs_path(path, sizeof(path), "%s/agg.json", w) || write_json(path, a)) {
		cJSON_Delete(a);
		return -1;
	}
	cJSON_Delete(a);
	for (int s = 0; s < o->sites; s++) {
		cJSON *n = cJSON_CreateObject();
		char cert[64], state[64], data[64];
		int rv;
		snprintf(cert, sizeof(cert), "pki/site-%d.pem", s + 1);
		snprintf(state, sizeof(state), "site-%d/state", s + 1);
		snprintf(data, sizeof(data), "site-%d/data", s + 1);
		cJSON_AddStringToObject(n, "aggregator", url);
		cJSON_AddStringToObject(n, "cert", cert);
		cJSON_AddStringToObject(n, "ca", "pki/ca.crt");
		cJSON_AddStringToObject(n, "data", data);
		cJSON_AddStringToObject(n, "state_dir", state);
		cJSON_AddStringToObject(n, "device", "cpu");
		cJSON_AddNumberToObject(n, "threads", node_threads);
		cJSON_AddNumberToObject(n, "seed", o->seed + s + 1);
		if (fs_path(path, sizeof(path), "%s/site-%d.json", w, s + 1)) {
			cJSON_Delete(n);
			return -1;
		}
		rv = write_json(path, n);
		cJSON_Delete(n);
		if (rv != 0)
			return -1;
	}
	return 0;
}

/* ---- progress: read the aggregator's ledger ---- */

typedef struct {
	int rounds_seen;
	long offset;
	char final_model[PATH_MAX];
} ledger_watch;

static double json_num(const cJSON *o, const char *k, double dflt)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsNumber(it) ? it->valuedouble : dflt;
}

static void watch_ledger(const char *w, ledger_watch *lw, double t0,
    double *tprev, int total_rounds)
{
	char path[PATH_MAX], line[1 << 16];
	FILE *f;
	snprintf(path, sizeof(path), "%s/aggregator/ledger.jsonl", w);
	f = fopen(path, "r");
	if (f == NULL)
		return;
	fseek(f, lw->offset, SEEK_SET);
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t len = strlen(line);
		cJSON *o, *nodes, *model, *metrics;
		if (len == 0 || line[len - 1] != '\n')
			break; /* partial line: read it next time */
		lw->offset += (long)len;
		o = cJSON_Parse(line);
		if (o == NULL)
			continue;
		nodes = cJSON_GetObjectItemCaseSensitive(o, "nodes");
		model = cJSON_GetObjectItemCaseSensitive(o, "model_file");
		metrics = cJSON_GetObjectItemCaseSensitive(o, "metrics");
		int round = (int)json_num(o, "round", -1);
		if (round >= 1) {
			double now = fs_now();
			lw->rounds_seen = round;
			printf("round %3d/%d  nodes %d  sent %7.2f MB  "
			    "received %7.2f MB  mean local loss %.4f  %6.1f s\n",
			    round, total_rounds, cJSON_GetArraySize(nodes),
			    json_num(o, "bytes_out", 0) / 1e6,
			    json_num(o, "bytes_in", 0) / 1e6,
			    json_num(metrics, "mean_loss", json_num(o,
			    "mean_loss", 0)), now - *tprev);
			fflush(stdout);
			*tprev = now;
			if (cJSON_IsString(model))
				snprintf(lw->final_model, sizeof(lw->final_model),
				    "%s/aggregator/%s", w, model->valuestring);
		}
		cJSON_Delete(o);
	}
	(void)t0;
	fclose(f);
}

/* ---- evaluation ---- */

typedef struct {
	double dice[3];
} dice3;

static int evaluate(model_net *net, img_case *hold, int nh, dice3 *out)
{
	model_infer_opts io = model_infer_opts_default();
	for (int i = 0; i < nh; i++) {
		img_case *c = &hold[i];
		size_t n = (size_t)c->nx * c->ny * c->nz;
		uint8_t *pred = malloc(n), *ref = malloc(n);
		img_metrics m;
		int rv = -1;
		if (pred == NULL || ref == NULL)
			fs_seterr("out of memory");
		else if (model_segment(net, c, &io, pred) == 0) {
			img_case_uncrop(c, c->label, ref);
			rv = img_metrics_compute(pred, ref, c->nx, c->ny, c->nz,
			    c->ref.spacing, &m);
		}
		free(pred);
		free(ref);
		if (rv != 0)
			return -1;
		for (int k = 0; k < 3; k++)
			out[i].dice[k] = m.dice[k];
	}
	return 0;
}

static void print_table(const img_case *hold, int nh, const dice3 *fed,
    const dice3 *cen)
{
	double mf[3] = {0}, mc[3] = {0};
	printf("\nHeld-out Dice          federated (WT / TC / ET)    %s\n",
	    cen ? "centralised (WT / TC / ET)" : "");
	for (int i = 0; i < nh; i++) {
		printf("  %-20s  %.3f / %.3f / %.3f", hold[i].id, fed[i].dice[0],
		    fed[i].dice[1], fed[i].dice[2]);
		if (cen)
			printf("         %.3f / %.3f / %.3f", cen[i].dice[0],
			    cen[i].dice[1], cen[i].dice[2]);
		printf("\n");
		for (int k = 0; k < 3; k++) {
			mf[k] += fed[i].dice[k] / nh;
			if (cen)
				mc[k] += cen[i].dice[k] / nh;
		}
	}
	printf("  %-20s  %.3f / %.3f / %.3f", "mean", mf[0], mf[1], mf[2]);
	if (cen)
		printf("         %.3f / %.3f / %.3f", mc[0], mc[1], mc[2]);
	printf("\n");
}

/* ---- main ---- */

int sim_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"data", required_argument, 0, 'd'}, {"sites", required_argument, 0, 'n'},
	    {"rounds", required_argument, 0, 'r'}, {"steps", required_argument, 0, 's'},
	    {"holdout", required_argument, 0, 'H'}, {"workdir", required_argument, 0, 'w'},
	    {"patch", required_argument, 0, 'p'}, {"batch", required_argument, 0, 'b'},
	    {"base", required_argument, 0, 'B'}, {"depth", required_argument, 0, 'D'},
	    {"lr", required_argument, 0, 'l'}, {"codec", required_argument, 0, 'c'},
	    {"threads", required_argument, 0, 't'}, {"no-central", no_argument, 0, 'N'},
	    {"seed", required_argument, 0, 'S'}, {"help", no_argument, 0, 'h'},
	    {"topk-fraction", required_argument, 0, 'K'},
	    {0, 0, 0, 0}};
	sim_opts o;
	img_dataset ds[SIM_MAX_DATA] = {0};
	img_case_ref **train = NULL, **held = NULL;
	img_case *hold = NULL, *tcases = NULL, **tcp = NULL;
	dice3 *dfed = NULL, *dcen = NULL;
	model_net *net = NULL;
	ledger_watch lw;
	char w[PATH_MAX - 64], self[PATH_MAX], agg_bin[PATH_MAX], path[PATH_MAX];
	int ntrain = 0, nheld = 0, nloaded = 0, rc = 1, c, total = 0;
	double t0, tprev;
	float *fw = NULL;

	memset(&o, 0, sizeof(o));
	memset(&lw, 0, sizeof(lw));
	o.sites = 3, o.rounds = 8, o.steps = 20, o.patch = 64, o.batch = 2;
	o.lr = 3e-3, o.codec = "q8", o.central = 1, o.seed = 1;
	o.spec = model_spec_default();
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		int bad = 0;
		switch (c) {
		case 'd':
			if (o.ndata == SIM_MAX_DATA)
				return cmd_fail("sim", "too many --data");
			o.data[o.ndata++] = optarg;
			break;
		case 'H':
			if (o.nhold == SIM_MAX_HOLD)
				return cmd_fail("sim", "too many --holdout");
			o.hold[o.nhold++] = optarg;
			break;
		case 'n': bad = cmd_int("sites", optarg, 1, SIM_MAX_SITES, &o.sites); break;
		case 'r': bad = cmd_int("rounds", optarg, 1, 100000, &o.rounds); break;
		case 's': bad = cmd_int("steps", optarg, 1, 1000000, &o.steps); break;
		case 'w': o.workdir = optarg; break;
		case 'p': bad = cmd_int("patch", optarg, 8, 512, &o.patch); break;
		case 'b': bad = cmd_int("batch", optarg, 1, 256, &o.batch); break;
		case 'B': bad = cmd_int("base", optarg, 1, 64, &o.spec.base); break;
		case 'D': bad = cmd_int("depth", optarg, 1, MODEL_MAX_DEPTH, &o.spec.depth); break;
		case 'l': bad = cmd_double("lr", optarg, 1e-8, 10, &o.lr); break;
		case 'c': o.codec = optarg; break;
		case 'K': bad = cmd_double("topk-fraction", optarg, 1e-6, 1, &o.topk_fraction); break;
		case 't': bad = cmd_int("threads", optarg, 0, 1024, &o.threads); break;
		case 'N': o.central = 0; break;
		case 'S': bad = cmd_int("seed", optarg, 0, 1000000, &o.seed); break;
		case 'h': sim_usage(stdout); return 0;
		default: sim_usage(stderr); return 2;
		}
		if (bad)
			return 2;
	}
	if (optind < argc)
		return cmd_fail("sim", "unexpected argument '%s'", argv[optind]);
	if (o.ndata == 0) {
		sim_usage(stderr);
		return cmd_fail("sim", "--data is required");
	}
	if (strcmp(o.codec, "f32") && strcmp(o.codec, "f16") && strcmp(o.codec, "q8") &&
	    strcmp(o.codec, "topk"))
		return cmd_fail("sim", "--codec: '%s': expected f32, f16, q8 or topk", o.codec);
	if (o.topk_fraction > 0 && strcmp(o.codec, "topk") != 0)
		return cmd_fail("sim", "--topk-fraction goes with --codec topk");
	if (o.patch % model_spec_divisor(&o.spec) != 0)
		return cmd_fail("sim", "--patch %d must be a multiple of %d", o.patch,
		    model_spec_divisor(&o.spec));
	if (o.threads <= 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		o.threads = n > 0 ? (int)n : 1;
	}
	{
		ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
		if (n <= 0)
			return cmd_fail("sim", "cannot find my own executable");
		self[n] = '\0';
		char tmp[PATH_MAX];
		snprintf(tmp, sizeof(tmp), "%s", self);
		snprintf(agg_bin, sizeof(agg_bin), "%s/fedseg-aggregator", dirname(tmp));
		if (access(agg_bin, X_OK) != 0) {
			snprintf(agg_bin, sizeof(agg_bin), "%s/../aggregator/"
			    "fedseg-aggregator", dirname(tmp));
			if (access(agg_bin, X_OK) != 0)
				return cmd_fail("sim", "fedseg-aggregator not found "
				    "beside %s", self);
		}
	}

	/* Cases: every labelled case of every --data folder. */
	for (int i = 0; i < o.ndata; i++) {
		if (img_dataset_scan(o.data[i], o.spec.modalities, o.spec.nmod,
		    &ds[i]) != 0)
			return cmd_fail("sim", "%s", fs_error());
		total += ds[i].n;
	}
	train = calloc(total + 1, sizeof(*train));
	held = calloc(total + 1, sizeof(*held));
	if (train == NULL || held == NULL) {
		cmd_fail("sim", "out of memory");
		goto out;
	}
	for (int i = 0; i < o.ndata; i++)
		for (int j = 0; j < ds[i].n; j++) {
			img_case_ref *r = &ds[i].cases[j];
			if (r->label == NULL)
				continue;
			if (is_holdout(&o, r->id))
				held[nheld++] = r;
			else
				train[ntrain++] = r;
		}
	if (o.nhold == 0 && ntrain > 1)
		held[nheld++] = train[--ntrain];
	if (nheld != (o.nhold ? o.nhold : 1)) {
		cmd_fail("sim", "--holdout: %d of %d held-out cases found among the "
		    "labelled cases", nheld, o.nhold);
		goto out;
	}
	if (ntrain < o.sites) {
		cmd_fail("sim", "%d labelled training cases for %d sites: each site "
		    "needs at least one", ntrain, o.sites);
		goto out;
	}

	/* Work folder, PKI, site manifests, configs. */
	if (o.workdir != NULL) {
		snprintf(w, sizeof(w), "%s", o.workdir);
		if (fs_mkdir_p(w, 1) != 0) {
			cmd_fail("sim", "%s", fs_error());
			goto out;
		}
		snprintf(path, sizeof(path), "%s/pki", w);
		if (access(path, F_OK) == 0) {
			cmd_fail("sim", "%s already holds a federation: give a new "
			    "--workdir", w);
			goto out;
		}
	} else {
		snprintf(w, sizeof(w), "/tmp/fedseg-sim.XXXXXX");
		if (mkdtemp(w) == NULL) {
			cmd_fail("sim", "mkdtemp: %s", strerror(errno));
			goto out;
		}
	}
	if (realpath(w, path) != NULL && strlen(path) < sizeof(w))
		memcpy(w, path, strlen(path) + 1);
	printf("fedseg sim: %d sites, %d rounds x %d local steps, %d training "
	    "cases, %d held out; work folder %s\n", o.sites, o.rounds, o.steps,
	    ntrain, nheld, w);
	for (int s = 0; s < o.sites; s++) {
		printf("  site-%d:", s + 1);
		for (int i = s; i < ntrain; i += o.sites)
			printf(" %s", train[i]->id);
		printf("\n");
	}
	printf("  held out:");
	for (int i = 0; i < nheld; i++)
		printf(" %s", held[i]->id);
	printf("\n");
	fflush(stdout);
	{
		char pki[PATH_MAX], logs[PATH_MAX];
		snprintf(pki, sizeof(pki), "%s/pki", w);
		snprintf(logs, sizeof(logs), "%s/logs", w);
		if (certs_init(pki, "fedseg-sim", 30) != 0 ||
		    certs_issue(pki, "aggregator", "aggregator", NULL, NULL, 30) != 0)
			goto fail_err;
		for (int s = 0; s < o.sites; s++) {
			char cn[32];
			snprintf(cn, sizeof(cn), "site-%d", s + 1);
			if (certs_issue(pki, "node", cn, NULL, NULL, 30) != 0)
				goto fail_err;
		}
		if (fs_mkdir_p(logs, 0) != 0 || write_sites(&o, w, train, ntrain) != 0)
			goto fail_err;
	}
	{
		int port = free_port();
		int nt = o.threads / o.sites > 0 ? o.threads / o.sites : 1;
		if (port < 0) {
			cmd_fail("sim", "no free loopback port");
			goto out;
		}
		if (write_configs(&o, w, port, nt) != 0)
			goto fail_err;
	}

	/* Start the federation. */
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	{
		char log[PATH_MAX];
		char *aargv[] = {agg_bin, "--config", "agg.json", "--exit-when-done", NULL};
		snprintf(log, sizeof(log), "%s/logs/aggregator.log", w);
		if (spawn("aggregator", w, log, aargv) != 0)
			goto fail_err;
		for (int s = 0; s < o.sites; s++) {
			char name[32], cfg[64];
			snprintf(name, sizeof(name), "site-%d", s + 1);
			snprintf(cfg, sizeof(cfg), "site-%d.json", s + 1);
			snprintf(log, sizeof(log), "%s/logs/%s.log", w, name);
			char *nargv[] = {self, "node", "--config", cfg, NULL};
			if (spawn(name, w, log, nargv) != 0)
				goto fail_err;
		}
	}
	t0 = tprev = fs_now();
	printf("federation started: aggregator + %d nodes over mutual TLS "
	    "(logs in %s/logs)\n", o.sites, w);
	fflush(stdout);
	for (;;) {
		int nodes_left = 0;
		watch_ledger(w, &lw, t0, &tprev, o.rounds);
		if (sim_stop) {
			fprintf(stderr, "fedseg sim: interrupted; stopping the "
			    "aggregator and nodes\n");
			kill_all(SIGTERM);
			reap_all(10);
			rc = 130;
			goto out;
		}
		for (int i = 0; i < nkids; i++) {
			child *k = &kids[i];
			if (k->done)
				continue;
			if (waitpid(k->pid, &k->status, WNOHANG) != k->pid)
				continue;
			k->done = 1;
			int okexit = WIFEXITED(k->status) &&
			    WEXITSTATUS(k->status) == 0;
			if (!okexit || (i == 0 && lw.rounds_seen < o.rounds)) {
				fprintf(stderr, "fedseg sim: %s stopped (%s %d) "
				    "before the federation finished; last lines of "
				    "%s:\n", k->name, WIFEXITED(k->status) ?
				    "exit status" : "signal", WIFEXITED(k->status) ?
				    WEXITSTATUS(k->status) : WTERMSIG(k->status),
				    k->log);
				print_log_tail(k->log, 8);
				kill_all(SIGTERM);
				reap_all(10);
				goto out;
			}
		}
		for (int i = 1; i < nkids; i++)
			nodes_left += !kids[i].done;
		if (lw.rounds_seen >= o.rounds && nodes_left == 0)
			break;
		usleep(200000);
	}
	kill_all(SIGTERM);
	reap_all(10);
	printf("federated: %d rounds in %.1f s\n", o.rounds, fs_now() - t0);
	if (lw.final_model[0] == '\0') {
		cmd_fail("sim", "the ledger names no final model");
		goto out;
	}

	/* Evaluate the final global model on the held-out cases. */
	cmd_threads(o.threads);
	hold = calloc(nheld, sizeof(*hold));
	dfed = calloc(nheld, sizeof(*dfed));
	dcen = calloc(nheld, sizeof(*dcen));
	if (hold == NULL || dfed == NULL || dcen == NULL) {
		cmd_fail("sim", "out of memory");
		goto out;
	}
	for (int i = 0; i < nheld; i++, nloaded++)
		if (img_case_load(held[i], o.spec.modalities, o.spec.nmod, 4, 1,
		    &hold[i]) != 0)
			goto fail_err;
	{
		model_spec sp;
		if (model_weights_load(lw.final_model, &sp, &fw, NULL) != 0)
			goto fail_err;
		net = model_net_create(&sp, "cpu", fw, 0);
		if (net == NULL || evaluate(net, hold, nheld, dfed) != 0)
			goto fail_err;
		model_net_destroy(net);
		net = NULL;
	}
	if (!o.central) {
		print_table(hold, nheld, dfed, NULL);
		rc = 0;
		goto out;
	}

	/* Centralised: the union of the sites' cases, the same total steps. */
	{
		model_train_opts to = model_train_opts_default();
		model_train_stats st;
		char wpath[PATH_MAX];
		tcases = calloc(ntrain, sizeof(*tcases));
		tcp = calloc(ntrain, sizeof(*tcp));
		if (tcases == NULL || tcp == NULL) {
			cmd_fail("sim", "out of memory");
			goto out;
		}
		to.steps = o.sites * o.rounds * o.steps;
		to.batch = o.batch;
		to.patch = o.patch;
		to.lr = o.lr;
		to.seed = (uint64_t)o.seed;
		to.verbose = to.steps >= 10 ? to.steps / 5 : 0;
		printf("centralised: %d steps on the union of the sites' %d cases\n",
		    to.steps, ntrain);
		fflush(stdout);
		for (int i = 0; i < ntrain; i++) {
			if (img_case_load(train[i], o.spec.modalities, o.spec.nmod, 4,
			    1, &tcases[i]) != 0) {
				for (int j = 0; j < i; j++)
					img_case_free(&tcases[j]);
				free(tcases);
				tcases = NULL;
				goto fail_err;
			}
			tcp[i] = &tcases[i];
		}
		net = model_net_create(&o.spec, "cpu", NULL, (uint64_t)o.seed);
		if (net == NULL || model_train(net, tcp, ntrain, &to, &st) != 0)
			goto fail_err;
		printf("centralised: loss %.4f -> %.4f in %.1f s\n", st.first_loss,
		    st.last_loss, st.seconds);
		snprintf(wpath, sizeof(wpath), "%s/central.safetensors", w);
		free(fw);
		fw = malloc(model_net_table(net)->total * sizeof(float));
		if (fw == NULL || model_net_get_weights(net, fw) != 0 ||
		    model_weights_save(wpath, &o.spec, fw, NULL) != 0 ||
		    evaluate(net, hold, nheld, dcen) != 0)
			goto fail_err;
	}
	print_table(hold, nheld, dfed, dcen);
	printf("final federated model: %s\n", lw.final_model);
	rc = 0;
	goto out;
fail_err:
	cmd_fail("sim", "%s", fs_error());
out:
	if (nkids > 0 && rc != 0) {
		kill_all(SIGTERM);
		reap_all(10);
	}
	model_net_destroy(net);
	for (int i = 0; i < nloaded; i++)
		img_case_free(&hold[i]);
	if (tcases != NULL)
		for (int i = 0; i < ntrain; i++)
			img_case_free(&tcases[i]);
	free(tcases);
	free(tcp);
	free(hold);
	free(dfed);
	free(dcen);
	free(fw);
	free(train);
	free(held);
	for (int i = 0; i < o.ndata; i++)
		img_dataset_free(&ds[i]);
	return rc;
}
