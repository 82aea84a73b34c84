/* tcheck.h - tiny TAP-style checks for the certs tests. */
#ifndef FEDSEG_TESTS_CERTS_TCHECK_H
#define FEDSEG_TESTS_CERTS_TCHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tc_n, tc_fail;

#define CHECK(cond, ...)                                                 \
	do {                                                             \
		tc_n++;                                                  \
		if (cond) {                                              \
			printf("ok %d - ", tc_n);                        \
		} else {                                                 \
			tc_fail++;                                       \
			printf("not ok %d - (%s:%d) ", tc_n, __FILE__,   \
			    __LINE__);                                   \
		}                                                        \
		printf(__VA_ARGS__);                                     \
		printf("\n");                                            \
		fflush(stdout);                                          \
	} while (0)

/* A call that must succeed for the rest of the test to make sense. */
#define MUST(cond, ...)                                                  \
	do {                                                             \
		if (!(cond)) {                                           \
			printf("Bail out! (%s:%d) ", __FILE__, __LINE__); \
			printf(__VA_ARGS__);                             \
			printf("\n");                                    \
			exit(1);                                         \
		}                                                        \
	} while (0)

static int tc_done(void)
{
	printf("%d checks, %d failed\n", tc_n, tc_fail);
	return tc_fail == 0 ? 0 : 1;
}

#endif
