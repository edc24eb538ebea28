/* Dead-letter records as JSON and as safe text: shared by `routemq dlq`
 * (cli_dlq.c) and the admin endpoint /dlq (master_dlq.c). */
#ifndef ROUTEMQ_DLQ_JSON_H
#define ROUTEMQ_DLQ_JSON_H

#include "dlq_store.h"
#include "strbuf.h"

#include <stddef.h>
#include <stdint.h>

#define DLQ_JSON_SUMMARY 200  /* payload bytes a list shows */

/* 1 when the bytes can be shown and sent as text: well-formed UTF-8, no
 * NUL; with strict, no control character but newline, CR and tab either. */
int dlq_is_text(const void *p, size_t n, int strict);
/* Standard base64 (RFC 4648, padded) of n bytes. */
void dlq_base64(strbuf *b, const void *p, size_t n);
/* "stored" | "replay_asked" | "replaying". */
const char *dlq_state_name(int state);
/* ms since the epoch as 2026-01-02T03:04:05.678Z. */
void dlq_time_iso(int64_t ms, char *out, size_t n);
/* One record as a JSON object. full: the whole payload, the traceback and
 * the properties; else the payload's first DLQ_JSON_SUMMARY bytes
 * ("payload_truncated": true when cut) and no traceback. */
void dlq_json_entry(strbuf *b, const dlq_entry *e, int full);
/* The packed MQTT 5 properties (worker_props.h) as a JSON object. */
void dlq_json_props(strbuf *b, const void *props, size_t len);

#endif
