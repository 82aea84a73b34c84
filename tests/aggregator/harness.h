/*
 * harness.h - helpers for federation tests that run real processes over
 * real TLS on 127.0.0.1: temp dirs, a PKI made with the certs C API, free
 * ports, spawning and reaping processes, files.
 */
#ifndef FEDSEG_TESTS_HARNESS_H
#define FEDSEG_TESTS_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

/* Makes /tmp/fedseg-<tag>.XXXXXX; out has PATH_MAX bytes. */
int h_tmpdir(const char *tag, char *out);
/* rm -rf (for the temp dir only). */
void h_rmtree(const char *dir);
/* A TCP port on 127.0.0.1 that was free a moment ago. */
int h_free_port(void);
/* Writes text to path. */
int h_write(const char *path, const char *text);
/* Starts argv with stdout+stderr appended to log; returns the pid. */
pid_t h_spawn(char *const argv[], const char *log);
/* Waits up to timeout_s for pid; returns its exit status (0..255), 128+sig
 * if killed by a signal, or -1 on timeout (then it is killed). */
int h_wait(pid_t pid, double timeout_s);
/* Sends SIGTERM, waits up to 10 s, then SIGKILL. */
void h_stop(pid_t pid);
/* Prints the last lines of a log file to stdout, prefixed. */
void h_tail(const char *log, int lines);
/* $FEDSEG_BIN / $FEDSEG_DATA with defaults; NULL if FEDSEG_BIN unset. */
const char *h_bin(void);
const char *h_data(void);
/* 1 if the file exists. */
int h_exists(const char *path);

#endif
