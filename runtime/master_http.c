/* The admin HTTP endpoint (ROUTEMQ_HTTP=host:port): /health, /ready,
 * /status, /metrics, /stats, /errors, the console (GET /) and the actions
 * (POST /reload, /scale), the dead-letter store (/dlq, master_dlq.c); who may do what is master_auth.c. libmicrohttpd runs in external-polling epoll mode: its
 * epoll fd sits in the master's epoll and MHD_run is called from the
 * master's loop, so the master stays single-threaded (it forks workers, and
 * a fork with a second thread running could copy a held lock). Requests are
 * answered in the loop from shared memory; building the biggest answer takes
 * microseconds, so serving it never delays supervision noticeably. */
#include "master.h"
#include "master_presence.h"
#include "master_auth.h"
#include "master_console.h"
#include "master_dlq.h"
#include "log.h"
#include "log_limit.h"

#include <dlfcn.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* libmicrohttpd is loaded when ROUTEMQ_HTTP is set, not linked: linked, it
 * maps gnutls and a dozen more libraries into the master and every worker
 * (3 MB of RSS measured). The header still gives the types.
 * A file static, not master's: the library is the process's, loaded once and never unloaded. */
static struct {
    void *lib;
    __typeof__(MHD_start_daemon) *start_daemon;
    __typeof__(MHD_stop_daemon) *stop_daemon;
    __typeof__(MHD_run) *run;
    __typeof__(MHD_get_timeout) *get_timeout;
    __typeof__(MHD_get_daemon_info) *get_daemon_info;
    __typeof__(MHD_create_response_from_buffer) *create_response_from_buffer;
    __typeof__(MHD_add_response_header) *add_response_header;
    __typeof__(MHD_queue_response) *queue_response;
    __typeof__(MHD_destroy_response) *destroy_response;
    __typeof__(MHD_get_connection_info) *get_connection_info;
    __typeof__(MHD_lookup_connection_value) *lookup_connection_value;
} mhd;

#define MHD_start_daemon mhd.start_daemon
#define MHD_stop_daemon mhd.stop_daemon
#define MHD_run mhd.run
#define MHD_get_timeout mhd.get_timeout
#define MHD_get_daemon_info mhd.get_daemon_info
#define MHD_create_response_from_buffer mhd.create_response_from_buffer
#define MHD_add_response_header mhd.add_response_header
#define MHD_queue_response mhd.queue_response
#define MHD_destroy_response mhd.destroy_response
#define MHD_get_connection_info mhd.get_connection_info
#define MHD_lookup_connection_value mhd.lookup_connection_value

/* Loads libmicrohttpd once; 0 ok, -1 after logging why. */
static int mhd_load(void)
{
    if (mhd.lib) return 0;
    void *lib = dlopen("libmicrohttpd.so.12", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        log_error("ROUTEMQ_HTTP: cannot load libmicrohttpd (Debian package libmicrohttpd12): %s", dlerror());
        return -1;
    }
#define MHD_LOAD(field, sym) \
    if (!(*(void **)&mhd.field = dlsym(lib, sym))) goto missing
    MHD_LOAD(start_daemon, "MHD_start_daemon");
    MHD_LOAD(stop_daemon, "MHD_stop_daemon");
    MHD_LOAD(run, "MHD_run");
    MHD_LOAD(get_timeout, "MHD_get_timeout");
    MHD_LOAD(get_daemon_info, "MHD_get_daemon_info");
    MHD_LOAD(create_response_from_buffer, "MHD_create_response_from_buffer");
    MHD_LOAD(add_response_header, "MHD_add_response_header");
    MHD_LOAD(queue_response, "MHD_queue_response");
    MHD_LOAD(destroy_response, "MHD_destroy_response");
    MHD_LOAD(get_connection_info, "MHD_get_connection_info");
    MHD_LOAD(lookup_connection_value, "MHD_lookup_connection_value");
#undef MHD_LOAD
    mhd.lib = lib;
    return 0;
missing:
    log_error("ROUTEMQ_HTTP: libmicrohttpd lacks a function we need: %s", dlerror());
    dlclose(lib);
    return -1;
}

/* Slow or idle clients must not starve /health and /ready (a liveness probe
 * that times out restarts a healthy instance). An idle connection is closed
 * after HTTP_CONN_TIMEOUT_S; a client trickling its request defeats that,
 * and all such clients may share one address, so a per-address limit would
 * refuse the probe as well. Instead, when fewer than HTTP_SPARE_CONNS places
 * are left, the connection that has waited longest since it connected or
 * was last answered is closed: a new request (the probe) always gets in,
 * and is the last one to be closed. Every request here is answered at once,
 * so only a connection waiting for its client is ever closed this way. */
#define HTTP_MAX_CONNS 256
#define HTTP_SPARE_CONNS 8
#define HTTP_CONN_TIMEOUT_S 5

typedef struct http_conn {
    int fd;              /* -1: free */
    int64_t since_ns;    /* connected or last answered; INT64_MAX once closed by us */
} http_conn;

/* m->http_state: allocated by master_http_start, freed by master_http_stop. */
struct master_http_state {
    http_conn conn[HTTP_MAX_CONNS];
    int open;
    uint64_t closed;          /* connections closed to make room, since the last log line */
    int64_t logged_ns;
    http_auth auth;           /* who may do what (master_auth.c) */
    log_limit refusals;       /* the refused requests logged, and those not */
};

static http_conn *conn_of_fd(master_http_state *hs, int fd)
{
    for (int i = 0; i < HTTP_MAX_CONNS; i++)
        if (hs->conn[i].fd == fd) return &hs->conn[i];
    return NULL;
}

static int conn_fd(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* Shuts the socket down; libmicrohttpd then sees the end of the connection
 * and closes it (and tells on_connection) in its next run. */
static void close_oldest(master_http_state *hs, const http_conn *except, int64_t now)
{
    http_conn *old = NULL;
    for (int i = 0; i < HTTP_MAX_CONNS; i++) {
        http_conn *e = &hs->conn[i];
        if (e->fd < 0 || e == except || e->since_ns == INT64_MAX) continue;
        if (!old || e->since_ns < old->since_ns) old = e;
    }
    if (!old) return;
    shutdown(old->fd, SHUT_RDWR);
    old->since_ns = INT64_MAX;
    hs->closed++;
    if (now - hs->logged_ns >= 60 * NS_PER_S) {
        log_warn("admin HTTP: %d connections open: closed the %llu longest waiting for their client "
                 "(idle or sending slowly) since the last such line", hs->open,
                 (unsigned long long)hs->closed);
        hs->logged_ns = now;
        hs->closed = 0;
    }
}

static void on_connection(void *cls, struct MHD_Connection *c, void **ctx, enum MHD_ConnectionNotificationCode code)
{
    master_http_state *hs = ((master *)cls)->http_state;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        http_conn *e = *ctx;
        if (e) { e->fd = -1; hs->open--; }
        *ctx = NULL;
        return;
    }
    int64_t now = shm_now_ns();
    http_conn *e = conn_of_fd(hs, -1);
    int fd = conn_fd(c);
    *ctx = NULL;
    if (!e || fd < 0) return;  /* cannot happen below the connection limit */
    *e = (http_conn){ .fd = fd, .since_ns = now };
    *ctx = e;
    hs->open++;
    int waiting = 0;  /* open and not being closed by us already */
    for (int i = 0; i < HTTP_MAX_CONNS; i++)
        waiting += hs->conn[i].fd >= 0 && hs->conn[i].since_ns != INT64_MAX;
    if (waiting > HTTP_MAX_CONNS - HTTP_SPARE_CONNS) close_oldest(hs, e, now);
}

/* Headers of every answer: nothing cached, nothing sniffed, never framed.
 * No Access-Control-* header ever: another site's page cannot read answers. */
static void common_headers(struct MHD_Response *r, const char *type)
{
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type, strbuf *body)
{
    if (body->oom) {
        sb_free(body);
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        sb_puts(body, "out of memory\n");
    }
    size_t len = body->len;
    char *p = sb_take(body);
    /* MUST_FREE: libmicrohttpd free()s the buffer once it is sent. */
    struct MHD_Response *r = MHD_create_response_from_buffer(len, p, p ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) { free(p); return MHD_NO; }
    common_headers(r, type);
    if (status == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"routemq\"");
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

/* {"error":"msg"} with status. */
static enum MHD_Result respond_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
    strbuf b;
    sb_init(&b);
    sb_puts(&b, "{\"error\":");
    sb_json_str(&b, msg);
    sb_puts(&b, "}\n");
    return respond(c, status, "application/json", &b);
}

/* A file of the console, embedded in the binary (master_console.c). */
static enum MHD_Result respond_static(struct MHD_Connection *c, const console_file *f)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(f->len, (void *)f->data, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    common_headers(r, f->type);
    /* Its own files only: no inline script, no other origin, no framing. */
    MHD_add_response_header(r, "Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
                            "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                            "frame-ancestors 'none'");
    enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return rc;
}

/* The body of an action being received (con_cls of a POST). */
#define HTTP_BODY_MAX 4096
typedef struct http_post {
    strbuf body;
    int too_big;
} http_post;

static void peer_name(struct MHD_Connection *c, char *out, size_t n)
{
    snprintf(out, n, "?");
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return;
    socklen_t len = ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    char host[INET6_ADDRSTRLEN];
    if (!getnameinfo(ci->client_addr, len, host, sizeof host, NULL, 0, NI_NUMERICHOST)) snprintf(out, n, "%s", host);
}

/* Applies master_auth's rules; MHD_YES/NO when it answered (refused), -1 when allowed. */
static int refuse(master *m, struct MHD_Connection *c, const char *url, const char *method, int post)
{
    master_http_state *hs = m->http_state;
    int missing;
    const char *authz = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    http_verdict v = http_auth_check(&hs->auth, url, post, authz, host, &missing);
    if (v == HTTP_ALLOW) return -1;
    char peer[INET6_ADDRSTRLEN + 2];
    peer_name(c, peer, sizeof peer);
    if (v == HTTP_UNAUTHORIZED) {
        http_auth_log_refusal(&hs->refusals, method, url, peer, missing ? "no token" : "wrong token", shm_now_ns());
        return respond_error(c, MHD_HTTP_UNAUTHORIZED, "unauthorized: this endpoint needs Authorization: Bearer <ROUTEMQ_HTTP_TOKEN>");
    }
    http_auth_log_refusal(&hs->refusals, method, url, peer,
                          v == HTTP_FORBIDDEN_HOST ? "action with a Host name, not an address"
                                                   : "action without ROUTEMQ_HTTP_TOKEN on a non-loopback address",
                          shm_now_ns());
    if (v == HTTP_FORBIDDEN_HOST)
        return respond_error(c, MHD_HTTP_FORBIDDEN, "forbidden: without ROUTEMQ_HTTP_TOKEN, actions need a Host of "
                             "127.0.0.1, [::1] or localhost");
    return respond_error(c, MHD_HTTP_FORBIDDEN, "forbidden: actions need ROUTEMQ_HTTP_TOKEN when the admin endpoint "
                         "is not bound to a loopback address");
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode code)
{
    http_post *p = *con_cls;
    if (p) { sb_free(&p->body); free(p); }
    *con_cls = NULL;
}

/* An action: POST with a JSON body (a form of another site cannot send one
 * without the browser asking us first, and we never say yes). */
static enum MHD_Result on_post(master *m, struct MHD_Connection *c, const char *url, const char *upload,
                               size_t *upload_size, void **con_cls)
{
    http_post *p = *con_cls;
    if (!p) {
        int r = refuse(m, c, url, "POST", 1);
        if (r >= 0) return (enum MHD_Result)r;
        const char *type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!type || strncasecmp(type, "application/json", 16))
            return respond_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "actions take a JSON body: send "
                                 "Content-Type: application/json");
        p = calloc(1, sizeof *p);
        if (!p) return MHD_NO;
        sb_init(&p->body);
        *con_cls = p;
        return MHD_YES;
    }
    if (*upload_size) {
        if (p->body.len + *upload_size > HTTP_BODY_MAX) p->too_big = 1;
        else sb_put(&p->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (p->too_big) return respond_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "the JSON body is over 4096 bytes");
    strbuf b;
    sb_init(&b);
    unsigned status = !strncmp(url, "/dlq/", 5)
                          ? master_dlq_action(m, url, p->body.p ? p->body.p : "", p->body.len, &b)
                          : master_console_action(m, url, p->body.p ? p->body.p : "", p->body.len, &b);
    return respond(c, status, "application/json", &b);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    master *m = cls;
    strbuf b;
    sb_init(&b);
    http_conn *e = conn_of_fd(m->http_state, conn_fd(c));
    if (e && e->since_ns != INT64_MAX) e->since_ns = shm_now_ns();
    if (!strcmp(method, "POST")) return on_post(m, c, url, upload, upload_size, con_cls);
    if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        sb_puts(&b, "method not allowed: use GET (or POST for an action)\n");
        return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", &b);
    }
    int r = refuse(m, c, url, method, 0);
    if (r >= 0) return (enum MHD_Result)r;
    if (!strcmp(url, "/health")) {
        sb_puts(&b, "ok\n");
        return respond(c, MHD_HTTP_OK, "text/plain; charset=utf-8", &b);
    }
    if (!strcmp(url, "/ready")) {
        char why[512];
        int ready = master_is_ready(m, why, sizeof why);
        sb_printf(&b, "%s: %s\n", ready ? "ready" : "not ready", why);
        return respond(c, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", &b);
    }
    if (!strcmp(url, "/status")) {
        const char *cluster = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "cluster");
        if (cluster && strcmp(cluster, "0") && strcmp(cluster, "false")) master_presence_json(m, &b);
        else master_status_json(m, &b);
        return respond(c, MHD_HTTP_OK, "application/json", &b);
    }
    if (!strcmp(url, "/metrics")) {
        master_metrics(m, &b);
        return respond(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", &b);
    }
    if (!strcmp(url, "/stats")) {
        const char *w = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "window");
        char *end = NULL;
        long window = w ? strtol(w, &end, 10) : 300;
        if (w && (*end || end == w || window < 1 || window > MASTER_HISTORY_SECONDS)) {
            char msg[96];
            snprintf(msg, sizeof msg, "window: a whole number of seconds from 1 to %d", MASTER_HISTORY_SECONDS);
            return respond_error(c, MHD_HTTP_BAD_REQUEST, msg);
        }
        const char *t = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "routes");
        long top = t ? strtol(t, &end, 10) : 20;
        if (t && (*end || end == t || top < 0 || top > 100000))
            return respond_error(c, MHD_HTTP_BAD_REQUEST, "routes: how many routes get their series, 0 to 100000");
        const char *l = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
        long limit = l ? strtol(l, &end, 10) : 100000;
        if (l && (*end || end == l || limit < 0 || limit > 100000))
            return respond_error(c, MHD_HTTP_BAD_REQUEST, "limit: how many routes, 0 to 100000");
        master_history_json(m, (int)window, (int)top, (int)limit, &b);
        return respond(c, MHD_HTTP_OK, "application/json", &b);
    }
    if (!strcmp(url, "/errors")) {
        master_errors_json(m, &b);
        return respond(c, MHD_HTTP_OK, "application/json", &b);
    }
    if (!strcmp(url, "/dlq")) {
        unsigned st = master_dlq_list(m, MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "route"),
                                      MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since"),
                                      MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit"),
                                      MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "before"), &b);
        return respond(c, st, "application/json", &b);
    }
    if (!strncmp(url, "/dlq/", 5)) return respond(c, master_dlq_show(m, url + 5, &b), "application/json", &b);
    const console_file *f = master_console_file(url);
    if (f) return respond_static(c, f);
    sb_puts(&b, "not found; try /, /health, /ready, /status, /stats, /errors, /dlq or /metrics\n");
    return respond(c, MHD_HTTP_NOT_FOUND, "text/plain; charset=utf-8", &b);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    log_debug("admin HTTP: %s", msg);
}

/* "host:port", ":port" (127.0.0.1) or "[v6]:port"; the host may be a name. */
static int resolve(const char *spec, struct addrinfo **out, char *err, size_t errlen)
{
    const char *colon = strrchr(spec, ':'), *given = spec;
    char host[256];
    const char *port = colon ? colon + 1 : "";
    size_t hlen = colon ? (size_t)(colon - spec) : 0;
    if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') { spec++; hlen -= 2; }
    if (hlen >= sizeof host) hlen = sizeof host - 1;
    memcpy(host, spec, hlen);
    host[hlen] = 0;
    char *end;
    long p = strtol(port, &end, 10);
    if (!*port || *end || p < 1 || p > 65535) {
        snprintf(err, errlen, "'%s' is not host:port (port 1-65535)", given);
        return -1;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
    int rc = getaddrinfo(hlen ? host : "127.0.0.1", port, &hints, out);
    if (rc) snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
    return rc ? -1 : 0;
}

/* Our own listening socket, so a busy port is reported with its errno. */
static int listen_on(const struct addrinfo *ai, char *err, size_t errlen)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        /* Bind exactly what was given: [::] is not also 0.0.0.0. */
        if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0) return fd;
    }
    snprintf(err, errlen, "%s", strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
}

/* A PEM file's contents (NUL-terminated), or NULL after logging why. */
static char *read_pem(const char *var, const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0;
    if (f) {
        FILE *mem = open_memstream(&buf, &len);
        char chunk[4096];
        size_t n;
        while (mem && (n = fread(chunk, 1, sizeof chunk, f)) > 0) fwrite(chunk, 1, n, mem);
        if (mem) fclose(mem);
        fclose(f);
    }
    if (!buf || !strstr(buf, "-----BEGIN ")) {
        log_error("%s: %s: %s", var, path, !f ? strerror(errno) : "not a PEM file");
        if (buf) explicit_bzero(buf, len);
        free(buf);
        return NULL;
    }
    return buf;
}

static int is_loopback(const struct sockaddr *a)
{
    if (a->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
    if (a->sa_family == AF_INET6) {
        const struct in6_addr *v6 = &((const struct sockaddr_in6 *)a)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(v6)) return v6->s6_addr[12] == 127;
        return IN6_IS_ADDR_LOOPBACK(v6);
    }
    return 0;
}

int master_http_start(master *m)
{
    const char *spec = m->cfg->http;
    char err[300];
    struct addrinfo *ai = NULL;
    if (!spec) return 0;
    if (mhd_load()) return -1;
    /* Released in the master's teardown (master_http_stop, _history_free, _errors_free), even when this fails. */
    if (!(m->http_state = calloc(1, sizeof *m->http_state)) || master_history_start(m) || master_errors_start(m)) {
        log_error("ROUTEMQ_HTTP: cannot start the admin endpoint: out of memory");
        return -1;
    }
    if (resolve(spec, &ai, err, sizeof err)) {
        log_error("ROUTEMQ_HTTP: %s", err);
        return -1;
    }
    int fd = listen_on(ai, err, sizeof err);
    int v6 = ai->ai_family == AF_INET6;
    int loopback = is_loopback(ai->ai_addr);
    char host[INET6_ADDRSTRLEN] = "?", serv[16] = "?";
    getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV);
    freeaddrinfo(ai);
    if (fd < 0) {
        log_error("ROUTEMQ_HTTP: cannot listen on %s: %s", spec, err);
        return -1;
    }
    char *cert = NULL, *key = NULL;
    int tls = m->cfg->http_tls_cert != NULL;
    if (tls && (!(cert = read_pem("ROUTEMQ_HTTP_TLS_CERT", m->cfg->http_tls_cert)) ||
                !(key = read_pem("ROUTEMQ_HTTP_TLS_KEY", m->cfg->http_tls_key)))) {
        free(cert);
        close(fd);
        return -1;
    }
    master_http_state *hs = m->http_state;
    hs->auth = (http_auth){ .token = m->cfg->http_token, .metrics_open = m->cfg->http_metrics_open,
                            .loopback = loopback };
    hs->refusals = (log_limit){ .window_ns = INT64_MIN / 2 };  /* the first refusal opens a window */
    for (int i = 0; i < HTTP_MAX_CONNS; i++) hs->conn[i].fd = -1;
    /* From here libmicrohttpd owns fd and closes it in MHD_stop_daemon. */
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0) | (tls ? MHD_USE_TLS : 0);
    if (tls)
        m->http = MHD_start_daemon(flags, 0, NULL, NULL, on_request, m, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                                   MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNS,
                                   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_CONN_TIMEOUT_S,
                                   MHD_OPTION_NOTIFY_CONNECTION, on_connection, m,
                                   MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                   MHD_OPTION_HTTPS_MEM_CERT, cert, MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_END);
    else
        m->http = MHD_start_daemon(flags, 0, NULL, NULL, on_request, m, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                                   MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_MAX_CONNS,
                                   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_CONN_TIMEOUT_S,
                                   MHD_OPTION_NOTIFY_CONNECTION, on_connection, m,
                                   MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    /* libmicrohttpd keeps its own copies of the PEM text. */
    if (key) explicit_bzero(key, strlen(key));
    free(cert);
    free(key);
    const union MHD_DaemonInfo *info = m->http ? MHD_get_daemon_info(m->http, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = MEV(MEV_HTTP, 0) };
    if (!info || epoll_ctl(m->epfd, EPOLL_CTL_ADD, info->epoll_fd, &ev)) {
        log_error("ROUTEMQ_HTTP: cannot start the admin endpoint on %s%s", spec,
                  tls ? " (with TLS: are ROUTEMQ_HTTP_TLS_CERT and _KEY a matching certificate and key?)" : "");
        if (m->http) MHD_stop_daemon(m->http);
        else close(fd);
        m->http = NULL;
        return -1;
    }
    m->http_epfd = info->epoll_fd;
    log_info("admin HTTP on %s://%s%s%s:%s/ (console; /health /ready /status /stats /errors /metrics)%s",
             tls ? "https" : "http", v6 ? "[" : "", host, v6 ? "]" : "", serv,
             m->cfg->http_token ? "; token required" : "");
    if (!loopback && !m->cfg->http_token)
        log_warn("ROUTEMQ_HTTP: %s is not a loopback address and ROUTEMQ_HTTP_TOKEN is not set: anyone who reaches "
                 "it reads the status, routes and errors (actions are refused); set ROUTEMQ_HTTP_TOKEN", spec);
    return 0;
}

void master_http_run(master *m)
{
    if (m->http) MHD_run(m->http);
}

int64_t master_http_timeout_ms(master *m)
{
    MHD_UNSIGNED_LONG_LONG t;
    if (!m->http || MHD_get_timeout(m->http, &t) != MHD_YES) return -1;
    return t > INT32_MAX ? INT32_MAX : (int64_t)t;
}

void master_http_stop(master *m)
{
    if (m->http) {
        if (m->http_epfd >= 0 && m->epfd >= 0) epoll_ctl(m->epfd, EPOLL_CTL_DEL, m->http_epfd, NULL);
        MHD_stop_daemon(m->http);  /* tells on_connection of every open connection: m->http_state lives until here */
        m->http = NULL;
        m->http_epfd = -1;
    }
    free(m->http_state);
    m->http_state = NULL;
}
