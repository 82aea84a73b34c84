/* harness.c - see harness.h. */
#define _GNU_SOURCE
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int
h_tmpdir(const char *tag, char *out)
{
	snprintf(out, 4096, "/tmp/fedseg-%s.XXXXXX", tag);
	return mkdtemp(out) != NULL ? 0 : -1;
}

void
h_rmtree(const char *dir)
{
	if (strncmp(dir, "/tmp/fedseg-", 12) != 0 || getenv("FEDSEG_KEEP"))
		return;
	pid_t pid;
	char *argv[] = { "rm", "-rf", (char *)dir, NULL };
	if (posix_spawnp(&pid, "rm", NULL, NULL, argv, environ) == 0)
		waitpid(pid, NULL, 0);
}

int
h_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a;
	socklen_t l = sizeof a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return ntohs(a.sin_port);
}

int
h_write(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (f == NULL)
		return -1;
	fputs(text, f);
	return fclose(f) == 0 ? 0 : -1;
}

pid_t
h_spawn(char *const argv[], const char *log)
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, log,
	    O_WRONLY | O_CREAT | O_APPEND, 0644);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	int rv = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rv != 0) {
		fprintf(stderr, "spawn %s: %s\n", argv[0], strerror(rv));
		return -1;
	}
	return pid;
}

int
h_wait(pid_t pid, double timeout_s)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		int st;
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) :
			    128 + WTERMSIG(st);
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((double)(t.tv_sec - t0.tv_sec) +
		    (t.tv_nsec - t0.tv_nsec) / 1e9 > timeout_s) {
			h_stop(pid);
			return -1;
		}
		usleep(50000);
	}
}

void
h_stop(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	for (int i = 0; i < 200; i++) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return;
		usleep(50000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

void
h_tail(const char *log, int lines)
{
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "tail -n %d '%s' | sed 's/^/    | /'", lines,
	    log);
	fflush(stdout);
	if (system(cmd) != 0)
		printf("    (no log %s)\n", log);
}

const char *
h_bin(void)
{
	return getenv("FEDSEG_BIN");
}

const char *
h_data(void)
{
	const char *d = getenv("FEDSEG_DATA");
	return d != NULL ? d : "../shared/data";
}

int
h_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}
