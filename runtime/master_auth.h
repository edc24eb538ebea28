/* Who may use the admin HTTP endpoint (master_http.c): the Bearer token of
 * ROUTEMQ_HTTP_TOKEN, the open paths, and which actions need a loopback
 * binding when there is no token. Pure decisions and the log of refusals;
 * nothing here knows libmicrohttpd, so the C tests call it directly. */
#ifndef ROUTEMQ_MASTER_AUTH_H
#define ROUTEMQ_MASTER_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "log_limit.h"

typedef struct http_auth {
    const char *token;   /* NULL: no token configured */
    int metrics_open;    /* ROUTEMQ_HTTP_METRICS=open */
    int loopback;        /* the endpoint is bound to a loopback address */
} http_auth;

typedef enum http_verdict {
    HTTP_ALLOW = 0,
    HTTP_UNAUTHORIZED,      /* 401: missing or wrong token */
    HTTP_FORBIDDEN_ACTION,  /* 403: an action without a token on a non-loopback binding */
    HTTP_FORBIDDEN_HOST,    /* 403: an action without a token whose Host is a name, not an address (DNS rebinding) */
} http_verdict;

/* 1 for the paths anyone may read: /health, /ready and the console's static
 * files (they hold no data; the page asks for the token itself). */
int http_auth_open_path(const char *path);

/* The verdict for one request. authorization is the Authorization header
 * (NULL when absent), host the Host header (NULL when absent), post 1 for an
 * action. *missing is set to 1 when a 401 is for a missing token. */
http_verdict http_auth_check(const http_auth *a, const char *path, int post, const char *authorization,
                             const char *host, int *missing);

/* Compares a given token to the configured one in time that depends on the
 * configured token's length only; 1 when equal. */
int http_auth_token_equal(const char *given, size_t given_len, const char *token);

/* Logs a refused request (method, path, peer address), at most 5 lines per
 * 10 s counted in *refusals (the endpoint's); the rest are counted and
 * summed up in the next line. now in ns. */
void http_auth_log_refusal(log_limit *refusals, const char *method, const char *path, const char *peer,
                           const char *why, int64_t now);

#endif
