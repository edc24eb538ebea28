/* A growable byte buffer for building responses (status JSON and table,
 * Prometheus text, control replies). Allocation failure is sticky: the
 * buffer stops growing and `oom` tells the caller to answer with an error. */
#ifndef ROUTEMQ_STRBUF_H
#define ROUTEMQ_STRBUF_H

#include <stddef.h>

typedef struct strbuf {
    char *p;        /* NUL-terminated when len > 0; owned, free with sb_free */
    size_t len, cap;
    int oom;
} strbuf;

void sb_init(strbuf *b);
void sb_free(strbuf *b);
/* Hands the bytes over to the caller (who frees them with free()); the buffer is empty again. */
char *sb_take(strbuf *b);
void sb_put(strbuf *b, const char *s, size_t n);
void sb_puts(strbuf *b, const char *s);
void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal: quotes, escapes, control bytes as \u00XX, bytes
 * that are not UTF-8 as \ufffd. */
void sb_json_str(strbuf *b, const char *s);
/* The same for len bytes that may hold NULs (\u0000). */
void sb_json_strn(strbuf *b, const char *s, size_t len);

#endif
