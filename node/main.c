/* main.c - the `fedseg` front command: dispatches to subcommands, git
 * style; `fedseg <cmd>` runs a built-in command or the executable
 * `fedseg-<cmd>` installed beside this one (the aggregator is one, so the
 * central server never loads libtorch). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "cmds.h"
#include "torch_c.h"
#ifdef FEDSEG_HAVE_NODE
#include "node.h"
#endif
#ifdef FEDSEG_HAVE_CERTS
#include "certs.h"
#endif
#ifdef FEDSEG_HAVE_SIM
#include "sim.h"
#endif
#ifdef FEDSEG_HAVE_DATA
#include "data_cmd.h"
#endif
#include "infer.h"

typedef struct {
	const char *name;
	int (*fn)(int, char **);
	const char *help;
} command;

static const command commands[] = {
    {"train", cmd_train, "train a model centrally on a dataset folder"},
    {"infer", cmd_infer, "segment one case (NIfTI in, label map out)"},
    {"eval", cmd_eval, "Dice / HD95 / volumes of a segmentation vs a reference"},
#ifdef FEDSEG_HAVE_NODE
    {"node", node_main, "run a federation node (trains locally, sends deltas)"},
#endif
#ifdef FEDSEG_HAVE_CERTS
    {"certs", certs_main, "federation CA and certificates (init/issue/renew/revoke/crl/show)"},
#endif
#ifdef FEDSEG_HAVE_SIM
    {"sim", sim_main, "a whole federation on this machine over real TLS"},
#endif
#ifdef FEDSEG_HAVE_DATA
    {"data", data_main, "list the cases a folder holds; synthetic phantoms"},
#endif
    {"gear", gear_main, "run as a Flywheel gear (gear run [--base /flywheel/v0])"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: fedseg <command> [options]   (fedseg <command> --help)\n\n"
	    "commands:\n");
	for (const command *c = commands; c->name; c++)
		fprintf(f, "  %-11s %s\n", c->name, c->help);
	fprintf(f, "  %-11s %s\n", "aggregator",
	    "run the federation aggregator (fedseg-aggregator)");
	fprintf(f, "\nenvironment: FEDSEG_LOG_LEVEL=error|warn|info|debug (default "
	    "info; paths of\npatient data are logged at debug level only)\n");
	fprintf(f, "\nfedseg %s, libtorch %s\n", FS_VERSION, tc_torch_version());
}

int cmd_fail(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "fedseg %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

int cmd_int(const char *opt, const char *val, long lo, long hi, int *out)
{
	char *end;
	long v;
	errno = 0;
	v = strtol(val, &end, 10);
	if (errno || *end || end == val || v < lo || v > hi) {
		fprintf(stderr, "fedseg: --%s: expected an integer in %ld..%ld, "
		    "got '%s'\n", opt, lo, hi, val);
		return -1;
	}
	*out = (int)v;
	return 0;
}

int cmd_double(const char *opt, const char *val, double lo, double hi,
    double *out)
{
	char *end;
	double v;
	errno = 0;
	v = strtod(val, &end);
	if (errno || *end || end == val || !(v >= lo && v <= hi)) {
		fprintf(stderr, "fedseg: --%s: expected a number in %g..%g, "
		    "got '%s'\n", opt, lo, hi, val);
		return -1;
	}
	*out = v;
	return 0;
}

int cmd_threads(int n)
{
	if (n <= 0) {
		long c = sysconf(_SC_NPROCESSORS_ONLN);
		n = c > 0 ? (int)c : 1;
	}
	if (tc_set_threads(n) != TC_OK) {
		fprintf(stderr, "fedseg: --threads: %s\n", tc_last_error());
		return -1;
	}
	return 0;
}

/* Runs fedseg-<name> from the directory of this executable, else PATH. */
static int run_external(const char *name, int argc, char **argv)
{
	char self[PATH_MAX], path[PATH_MAX + 64], prog[128];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	snprintf(prog, sizeof(prog), "fedseg-%s", name);
	(void)argc;
	argv[0] = prog;
	if (n > 0) {
		self[n] = '\0';
		snprintf(path, sizeof(path), "%s/%s", dirname(self), prog);
		if (access(path, X_OK) == 0) {
			execv(path, argv);
			fprintf(stderr, "fedseg: cannot run %s: %s\n", path,
			    strerror(errno));
			return 1;
		}
	}
	execvp(prog, argv);
	fprintf(stderr, "fedseg: '%s' is not a fedseg command (see fedseg "
	    "--help)\n", name);
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return argc < 2 ? 1 : 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("fedseg %s (libtorch %s)\n", FS_VERSION, tc_torch_version());
		return 0;
	}
	/* FEDSEG_LOG_LEVEL=error|warn|info|debug sets the starting level of
	 * every command (a command's own --log-level / config wins) */
	const char *lv = getenv("FEDSEG_LOG_LEVEL");
	if (lv != NULL && *lv != '\0') {
		static const char *ln[] = { "error", "warn", "info", "debug" };
		static const int ll[] = { FS_LOG_ERR, FS_LOG_WARN, FS_LOG_INFO,
		    FS_LOG_DEBUG };
		int k = 0;
		while (k < 4 && strcmp(lv, ln[k]) != 0)
			k++;
		if (k == 4) {
			fprintf(stderr, "fedseg: FEDSEG_LOG_LEVEL=%s: use error, "
			    "warn, info or debug\n", lv);
			return 2;
		}
		fs_log_set_level(ll[k]);
	}
	for (const command *c = commands; c->name; c++)
		if (strcmp(argv[1], c->name) == 0)
			return c->fn(argc - 1, argv + 1);
	return run_external(argv[1], argc - 1, argv + 1);
}
