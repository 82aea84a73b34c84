/*
 * ledger_test.c - the hash chain: appends, reopen, torn line, tampering.
 */
#include <cJSON.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ledger.h"
#include "test.h"

int
main(void)
{
	char dir[] = "/tmp/fedseg-ledger.XXXXXX", path[256];
	T_OK(mkdtemp(dir) != NULL, "temp dir");
	snprintf(path, sizeof path, "%s/ledger.jsonl", dir);
	fed_ledger *l = fed_ledger_open(path);
	T_OK(l != NULL && fed_ledger_count(l) == 0, "new ledger is empty");
	for (int r = 1; r <= 3; r++) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "round", r);
		cJSON_AddStringToObject(o, "note", "a \"quoted\" ,\"hash\":\" text");
		T_PASS(fed_ledger_append(l, o));
		cJSON_Delete(o);
	}
	const cJSON *last = fed_ledger_last(l);
	T_OK(cJSON_GetObjectItem(last, "round")->valueint == 3 &&
	    cJSON_IsString(cJSON_GetObjectItem(last, "hash")),
	    "last entry has round 3 and its hash");
	fed_ledger_close(l);
	int n = 0;
	T_PASS(fed_ledger_verify(path, &n));
	T_OK(n == 3, "verify counts 3 lines");

	/* a torn line (crash mid-append) is cut at open */
	FILE *f = fopen(path, "a");
	fputs("{\"round\":4,\"prev", f);
	fclose(f);
	T_OK(fed_ledger_verify(path, &n) != 0, "verify reports the torn line");
	l = fed_ledger_open(path);
	T_OK(l != NULL && fed_ledger_count(l) == 3, "open cuts it: %s",
	    l ? "3 lines" : fs_error());
	fed_ledger_close(l);
	T_PASS(fed_ledger_verify(path, &n));

	/* tampering with an old line breaks the chain */
	char *text = NULL;
	size_t len = 0;
	T_PASS(fs_read_file(path, 1 << 20, (void **)&text, &len));
	char *p = strstr(text, "\"round\":2");
	p[8] = '7';
	fs_write_atomic(path, text, len, 0644);
	T_OK(fed_ledger_verify(path, &n) != 0, "edited line refused: %s",
	    fs_error());
	T_OK(fed_ledger_open(path) == NULL, "open refuses a broken chain");
	free(text);
	unlink(path);
	rmdir(dir);
	T_DONE();
}
