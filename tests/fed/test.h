/* test.h - tiny assertion helpers for the federation tests. */
#ifndef FEDSEG_TESTS_FED_TEST_H
#define FEDSEG_TESTS_FED_TEST_H

#include <stdio.h>
#include <stdlib.h>

#include "base.h"

static int t_fails;
#define T_OK(cond, ...)                                                  \
	do {                                                             \
		if (cond) {                                              \
			printf("ok - ");                                 \
		} else {                                                 \
			printf("FAIL (%s:%d) - ", __FILE__, __LINE__);   \
			t_fails++;                                       \
		}                                                        \
		printf(__VA_ARGS__);                                     \
		printf("\n");                                            \
		fflush(stdout);                                          \
	} while (0)
/* expr must return 0; prints fs_error() otherwise. */
#define T_PASS(expr)                                                     \
	do {                                                             \
		if ((expr) != 0) {                                       \
			printf("FAIL (%s:%d) - %s: %s\n", __FILE__,      \
			    __LINE__, #expr, fs_error());                \
			t_fails++;                                       \
		}                                                        \
	} while (0)
#define T_DONE()                                                         \
	do {                                                             \
		if (t_fails) {                                           \
			printf("%d check(s) failed\n", t_fails);         \
			return 1;                                        \
		}                                                        \
		printf("all checks passed\n");                           \
		return 0;                                                \
	} while (0)

#endif
