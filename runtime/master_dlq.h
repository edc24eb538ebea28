/* The dead-letter store on the admin endpoint (master_dlq.c): master_http.c
 * routes /dlq requests here after master_auth.c let them in; each returns
 * the HTTP status and writes the JSON answer to out. */
#ifndef ROUTEMQ_MASTER_DLQ_H
#define ROUTEMQ_MASTER_DLQ_H

#include <stddef.h>
#include <stdint.h>

#include "master.h"
#include "strbuf.h"

/* GET /dlq?route=&since=&limit=&before= (each may be NULL): a page of
 * records, newest first, with the payload's first bytes. */
unsigned master_dlq_list(const master *m, const char *route, const char *since, const char *limit, const char *before,
                         strbuf *out);
/* GET /dlq/<id>: the whole record. */
unsigned master_dlq_show(const master *m, const char *id, strbuf *out);
/* POST /dlq/replay or /dlq/delete with {"ids":[..]} or {"all":true,"route":".."}: {"done":N}. */
unsigned master_dlq_action(const master *m, const char *path, const char *body, size_t len, strbuf *out);
/* routemq_dead_letters{route}: records in the store per route (one query per scrape). */
void master_dlq_metrics(const master *m, strbuf *out);

/* For status: records in the store and the first one's time (ms since the
 * epoch, 0: none). 1; 0 when the store does not exist yet; -1 on error. */
int master_dlq_summary(const master *m, long *count, int64_t *oldest_ms);

#endif
