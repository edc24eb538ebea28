/* Admin HTTP access rules (master_auth.h). The token is compared, never
 * printed: the logs name the peer and the path, not what was sent. */
#include "master_auth.h"
#include "clock.h"
#include "log.h"
#include "log_limit.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define REFUSAL_WINDOW_NS (10 * NS_PER_S)
#define REFUSAL_LINES 5

int http_auth_open_path(const char *path)
{
    static const char *const open[] = { "/health", "/ready", "/", "/console.js", "/console.css", "/favicon.ico" };
    for (size_t i = 0; i < sizeof open / sizeof *open; i++)
        if (!strcmp(path, open[i])) return 1;
    return 0;
}

int http_auth_token_equal(const char *given, size_t given_len, const char *token)
{
    size_t n = strlen(token);
    unsigned char diff = given_len != n;
    /* Always the configured length: neither where a difference is nor the
     * given length changes the time taken. */
    for (size_t i = 0; i < n; i++) {
        unsigned char g = i < given_len ? (unsigned char)given[i] : 0;
        diff |= (unsigned char)(g ^ (unsigned char)token[i]);
    }
    return diff == 0;
}

/* "Bearer <token>": 1 when it carries the configured token. */
static int bearer_ok(const char *authorization, const char *token, int *missing)
{
    *missing = !authorization || !*authorization;
    if (*missing) return 0;
    if (strncasecmp(authorization, "Bearer ", 7)) { *missing = 1; return 0; }
    const char *t = authorization + 7;
    while (*t == ' ') t++;
    size_t n = strlen(t);
    while (n && t[n - 1] == ' ') n--;
    return http_auth_token_equal(t, n, token);
}

/* A Host header naming an address (or localhost), not a DNS name: a page of
 * another site that rebinds its name to 127.0.0.1 sends its own name. */
static int host_is_address(const char *host)
{
    if (!host || !*host) return 1;  /* HTTP/1.0 clients (curl -0) send none */
    if (host[0] == '[') return 1;   /* [v6]:port */
    size_t n = strcspn(host, ":");
    if (n == 9 && !strncasecmp(host, "localhost", 9)) return 1;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)host[i]) && host[i] != '.') return 0;
    return n > 0;
}

http_verdict http_auth_check(const http_auth *a, const char *path, int post, const char *authorization,
                             const char *host, int *missing)
{
    *missing = 0;
    if (!post && http_auth_open_path(path)) return HTTP_ALLOW;
    if (!post && a->metrics_open && !strcmp(path, "/metrics")) return HTTP_ALLOW;
    if (a->token) return bearer_ok(authorization, a->token, missing) ? HTTP_ALLOW : HTTP_UNAUTHORIZED;
    if (!post) return HTTP_ALLOW;
    if (!a->loopback) return HTTP_FORBIDDEN_ACTION;
    return host_is_address(host) ? HTTP_ALLOW : HTTP_FORBIDDEN_HOST;
}

/* The path as logged: printable ASCII, at most 100 bytes. */
static void clean(char *out, size_t n, const char *s)
{
    size_t i = 0;
    for (; s && *s && i + 1 < n; s++) out[i++] = *s > ' ' && *s < 127 ? *s : '?';
    out[i] = 0;
}

void http_auth_log_refusal(log_limit *refusals, const char *method, const char *path, const char *peer,
                           const char *why, int64_t now)
{
    int more, allowed = log_limit_allow(refusals, now, REFUSAL_WINDOW_NS, REFUSAL_LINES, &more);
    if (more)
        log_warn("admin HTTP: %d more requests refused in the last 10 s (not logged: at most %d lines per 10 s)", more,
                 REFUSAL_LINES);
    if (!allowed) return;
    char m[16], p[101];
    clean(m, sizeof m, method);
    clean(p, sizeof p, path);
    log_warn("admin HTTP: refused %s %s from %s: %s", m, p, peer, why);
}
