/* cmds.h - the subcommands built into the `fedseg` binary. Each takes
 * argv[0] = the subcommand name and returns the process exit status. */
#ifndef FEDSEG_CMDS_H
#define FEDSEG_CMDS_H

int cmd_train(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_eval(int argc, char **argv);

/* Shared helpers for commands. */
/* Parses an int option value in [lo, hi]; on error prints a one-line reason
 * naming the option and returns -1. */
int cmd_int(const char *opt, const char *val, long lo, long hi, int *out);
int cmd_double(const char *opt, const char *val, double lo, double hi,
    double *out);
/* Sets the libtorch thread count (0 = cores available). */
int cmd_threads(int n);
/* Prints "fedseg <cmd>: <message>" to stderr and returns 1. */
int cmd_fail(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
