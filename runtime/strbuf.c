#include "strbuf.h"
#include "topic_pattern.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_init(strbuf *b) { memset(b, 0, sizeof *b); }

void sb_free(strbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

char *sb_take(strbuf *b)
{
    char *p = b->p;
    memset(b, 0, sizeof *b);
    return p;
}

static int reserve(strbuf *b, size_t extra)
{
    if (b->oom) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) { b->oom = 1; return -1; }
    b->p = p;
    b->cap = cap;
    return 0;
}

void sb_put(strbuf *b, const char *s, size_t n)
{
    if (reserve(b, n)) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

void sb_puts(strbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

void sb_printf(strbuf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) { sb_put(b, small, (size_t)n); return; }
    if (reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sb_json_str(strbuf *b, const char *s) { sb_json_strn(b, s, strlen(s)); }

void sb_json_strn(strbuf *b, const char *s, size_t len)
{
    sb_put(b, "\"", 1);
    size_t left = len;
    for (const unsigned char *c = (const unsigned char *)s; left; c++, left--) {
        if (*c == '"' || *c == '\\') { char e[2] = { '\\', (char)*c }; sb_put(b, e, 2); }
        else if (*c == '\n') sb_put(b, "\\n", 2);
        else if (*c == '\t') sb_put(b, "\\t", 2);
        else if (*c < 0x20 || *c == 0x7f) sb_printf(b, "\\u%04x", *c);
        else if (*c < 0x80) sb_put(b, (const char *)c, 1);
        else {
            /* JSON is UTF-8: a path or an error text in another encoding must
             * not make the whole document unreadable. */
            size_t n = topic_utf8_char((const char *)c, left);
            if (n == 0) { sb_put(b, "\\ufffd", 6); continue; }
            sb_put(b, (const char *)c, n);
            c += n - 1;
            left -= n - 1;
        }
    }
    sb_put(b, "\"", 1);
}
