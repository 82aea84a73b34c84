/*
 * ledger.h - an append-only, hash-chained JSON-lines ledger.
 *
 * Each line is one JSON object written by fed_ledger_append: the caller's
 * fields, then "prev_hash" (hex SHA-256 of the previous line's "hash", 64
 * zeros for the first line), then "hash", always the last member:
 *
 *   {"round":1,...,"prev_hash":"<hex>","hash":"<hex>"}
 *
 * hash = SHA-256 of the line's text with its `,"hash":"<hex>"` member
 * removed (i.e. of `{... ,"prev_hash":"<hex>"}`, exactly those bytes). So
 * any tool can check a line without canonical JSON: cut the text at the
 * last `,"hash":"`, add `}`, hash it.
 *
 * Appends are durable (write + fsync of file and directory). A torn last
 * line (no newline, after a crash) is cut off when the ledger is opened.
 */
#ifndef FEDSEG_FED_LEDGER_H
#define FEDSEG_FED_LEDGER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fed_ledger fed_ledger;
struct cJSON;

/* Opens (creating if absent) the ledger at path and verifies its chain.
 * Fails with the line number if the chain is broken. */
fed_ledger *fed_ledger_open(const char *path);
void fed_ledger_close(fed_ledger *l);
/* Lines in the ledger. */
int fed_ledger_count(const fed_ledger *l);
/* The last line as parsed JSON (borrowed, valid until the next append or
 * close), NULL if empty. */
const struct cJSON *fed_ledger_last(const fed_ledger *l);
/* Appends obj (must be a JSON object without "prev_hash"/"hash"; it is
 * not modified). On failure the file is unchanged. */
int fed_ledger_append(fed_ledger *l, const struct cJSON *obj);

/* Verifies a ledger file without opening it for writing: every line's hash
 * and link. On success *nlines is the number of lines. */
int fed_ledger_verify(const char *path, int *nlines);

#ifdef __cplusplus
}
#endif
#endif
