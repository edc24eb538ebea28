#include "master_request.h"

#include <stdlib.h>
#include <string.h>

/* Printable, short: what a bad request is echoed back as (it goes to a log and a terminal). */
static void sanitize(const char *s, size_t len, char *out, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < len && k + 1 < n; i++) out[k++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[k] = 0;
}

static int is(const char *line, size_t len, const char *word)
{
    return len == strlen(word) && !memcmp(line, word, len);
}

/* 1..1024 in plain decimal digits, else -1. */
static int scale_arg(const char *s, size_t len)
{
    if (len == 0 || len > 4) return -1;
    int n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        n = n * 10 + (s[i] - '0');
    }
    return n >= 1 && n <= 1024 ? n : -1;
}

void master_request_parse(const char *line, size_t len, master_request *r)
{
    memset(r, 0, sizeof *r);
    const char *nul = memchr(line, 0, len);
    if (nul) len = (size_t)(nul - line);
    while (len && (line[len - 1] == '\r' || line[len - 1] == ' ')) len--;
    if (is(line, len, "status")) r->kind = REQ_STATUS;
    else if (is(line, len, "status json")) r->kind = REQ_STATUS_JSON;
    else if (is(line, len, "status cluster")) r->kind = REQ_STATUS_CLUSTER;
    else if (is(line, len, "status cluster json")) r->kind = REQ_STATUS_CLUSTER_JSON;
    else if (is(line, len, "reload")) r->kind = REQ_RELOAD;
    else if (is(line, len, "stop")) r->kind = REQ_STOP;
    else if (is(line, len, "stop keep-sessions")) r->kind = REQ_STOP_KEEP;
    else if (is(line, len, "stop end-sessions")) r->kind = REQ_STOP_END;
    else if (is(line, len, "ping")) r->kind = REQ_PING;
    else if (len >= 6 && !memcmp(line, "scale ", 6)) {
        r->scale = scale_arg(line + 6, len - 6);
        r->kind = r->scale > 0 ? REQ_SCALE : REQ_BAD_SCALE;
        if (r->scale < 0) { r->scale = 0; sanitize(line + 6, len - 6, r->shown, sizeof r->shown); }
    } else {
        r->kind = REQ_UNKNOWN;
        sanitize(line, len, r->shown, sizeof r->shown);
    }
}
