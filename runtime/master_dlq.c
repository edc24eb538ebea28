/* The dead-letter store on the admin endpoint: GET /dlq (paged, newest
 * first), GET /dlq/<id>, POST /dlq/replay and /dlq/delete, and the
 * routemq_dead_letters{route} gauge. The store is opened for each request
 * and closed before answering: the master forks workers, and an SQLite
 * connection must not be carried across a fork (the child would inherit its
 * lock bookkeeping without the locks). An open costs well under a
 * millisecond; a store that does not exist yet (no dead letter so far) is
 * not created here. */
#include "master_dlq.h"
#include "dlq_json.h"
#include "dlq_store.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DLQ_PAGE_DEFAULT 50
#define DLQ_PAGE_MAX 1000
#define DLQ_BODY_IDS 1000

static unsigned answer_error(strbuf *out, unsigned status, const char *msg)
{
    sb_puts(out, "{\"ok\":false,\"error\":");
    sb_json_str(out, msg);
    sb_puts(out, "}\n");
    return status;
}

/* Opens the store: 1 open, 0 it does not exist yet, -1 error (answered in out with *status). */
static int open_store(const master *m, dlq_store **s, strbuf *out, unsigned *status)
{
    char err[600];
    if (dlq_store_open(m->cfg->dlq_store, 0, s, err, sizeof err) == 0) return 1;
    if (errno == ENOENT) return 0;
    log_error("%s", err);
    *status = answer_error(out, 500, err);
    return -1;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A whole number in [lo, hi] from s; -1 when s is malformed. */
static int parse_num(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* "600", "600s", "10m", "2h", "7d" as ms; -1 when malformed. */
static int64_t parse_since(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || v < 0) return -1;
    double unit = !*end || !strcmp(end, "s") ? 1 : !strcmp(end, "m") ? 60 : !strcmp(end, "h") ? 3600
                : !strcmp(end, "d") ? 86400 : -1;
    return unit < 0 ? -1 : (int64_t)(v * unit * 1000);
}

typedef struct page {
    strbuf *out;
    int n;
    int64_t last_id;
} page;

static int page_row(const dlq_entry *e, void *arg)
{
    page *p = arg;
    if (p->n++) sb_put(p->out, ",", 1);
    dlq_json_entry(p->out, e, 0);
    p->last_id = e->id;
    return 0;
}

unsigned master_dlq_list(const master *m, const char *route, const char *since, const char *limit, const char *before,
                         strbuf *out)
{
    dlq_filter f = { .route = route && *route ? route : NULL, .limit = DLQ_PAGE_DEFAULT };
    long long v;
    if (limit) {
        if (parse_num(limit, 1, DLQ_PAGE_MAX, &v)) return answer_error(out, 400, "limit: a whole number from 1 to 1000");
        f.limit = (long)v;
    }
    if (before) {
        if (parse_num(before, 1, INT64_MAX, &v)) return answer_error(out, 400, "before: a dead-letter id (from 1)");
        f.before_id = v;
    }
    if (since) {
        int64_t d = parse_since(since);
        if (d < 0) return answer_error(out, 400, "since: a duration like 600, 90s, 10m, 2h or 7d");
        f.since_ms = wall_ms() - d;
    }
    dlq_store *s = NULL;
    unsigned status = 200;
    int rc = open_store(m, &s, out, &status);
    if (rc < 0) return status;
    long total = 0, selected = 0;
    page p = { .out = out };
    sb_puts(out, "{\"records\":[");
    if (rc > 0) {
        dlq_filter all = f;
        all.limit = 0;
        all.before_id = 0;
        /* Without a route or time the total is the selection: no second count. */
        int whole = !all.route && !all.since_ms;
        if (dlq_store_list(s, &f, page_row, &p) || dlq_store_count(s, NULL, &total) ||
            (whole ? (selected = total, 0) : dlq_store_count(s, &all, &selected))) {
            char err[600];
            snprintf(err, sizeof err, "%s", dlq_store_error(s));
            dlq_store_close(s);
            sb_free(out);
            sb_init(out);
            return answer_error(out, 500, err);
        }
        dlq_store_close(s);
    }
    sb_printf(out, "],\"count\":%d,\"total\":%ld,\"matching\":%ld,\"store\":", p.n, total, selected);
    sb_json_str(out, m->cfg->dlq_store ? m->cfg->dlq_store : "");
    /* The next page: ids below the last one shown. */
    if (p.n == f.limit && p.last_id > 1) sb_printf(out, ",\"next_before\":%lld", (long long)p.last_id);
    else sb_puts(out, ",\"next_before\":null");
    sb_puts(out, "}\n");
    return 200;
}

static int full_row(const dlq_entry *e, void *arg)
{
    dlq_json_entry(arg, e, 1);
    return 0;
}

unsigned master_dlq_show(const master *m, const char *id, strbuf *out)
{
    long long v;
    if (parse_num(id, 1, INT64_MAX, &v)) return answer_error(out, 400, "not a dead-letter id: /dlq/<id> (from 1)");
    dlq_store *s = NULL;
    unsigned status = 200;
    int rc = open_store(m, &s, out, &status);
    if (rc < 0) return status;
    if (rc > 0) {
        rc = dlq_store_get(s, v, full_row, out);
        if (rc < 0) {
            char err[600];
            snprintf(err, sizeof err, "%s", dlq_store_error(s));
            dlq_store_close(s);
            return answer_error(out, 500, err);
        }
        dlq_store_close(s);
    }
    if (rc == 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "no dead letter %lld", v);
        return answer_error(out, 404, msg);
    }
    sb_put(out, "\n", 1);
    return 200;
}

/* The action's body: {"ids":[1,2]} or {"all":true,"route":"..."}. */
typedef struct dlq_body {
    int64_t ids[DLQ_BODY_IDS];
    int nids, has_ids, all;
    char route[1024];
    int has_route;
} dlq_body;

static const char *ws(const char *p, const char *end)
{
    while (p < end && isspace((unsigned char)*p)) p++;
    return p;
}

/* A JSON string (escapes \" \\ \/ only: route patterns need no more). */
static const char *str(const char *p, const char *end, char *out, size_t n)
{
    if (p >= end || *p != '"') return NULL;
    size_t k = 0;
    for (p++; p < end && *p != '"'; p++) {
        char c = *p;
        if ((unsigned char)c < 0x20) return NULL;
        if (c == '\\') {
            if (++p >= end || (*p != '"' && *p != '\\' && *p != '/')) return NULL;
            c = *p;
        }
        if (k + 1 >= n) return NULL;
        out[k++] = c;
    }
    out[k] = 0;
    return p < end ? p + 1 : NULL;
}

/* 0, or -1 with what is wrong in err. */
static int parse_body(const char *body, size_t len, dlq_body *b, char *err, size_t errlen)
{
    const char *p = ws(body, body + len), *end = body + len;
    memset(b, 0, sizeof *b);
    snprintf(err, errlen, "the body is not a JSON object like {\"ids\":[1,2]} or {\"all\":true,\"route\":\"R\"}");
    if (p >= end || *p++ != '{') return -1;
    p = ws(p, end);
    if (p < end && *p == '}') return ws(p + 1, end) == end ? 0 : -1;
    for (;;) {
        char key[32];
        if (!(p = str(ws(p, end), end, key, sizeof key))) return -1;
        p = ws(p, end);
        if (p >= end || *p++ != ':') return -1;
        p = ws(p, end);
        if (!strcmp(key, "ids")) {
            b->has_ids = 1;
            if (p >= end || *p++ != '[') return -1;
            p = ws(p, end);
            if (p < end && *p == ']') p++;
            else
                for (;;) {
                    char *e;
                    errno = 0;
                    long long v = strtoll(p, &e, 10);
                    if (e == p || e > end || errno || v < 1) {
                        snprintf(err, errlen, "ids: a list of dead-letter ids (whole numbers from 1)");
                        return -1;
                    }
                    if (b->nids == DLQ_BODY_IDS) {
                        snprintf(err, errlen, "ids: at most %d in one request", DLQ_BODY_IDS);
                        return -1;
                    }
                    b->ids[b->nids++] = v;
                    p = ws(e, end);
                    if (p < end && *p == ',') { p = ws(p + 1, end); continue; }
                    if (p < end && *p == ']') { p++; break; }
                    return -1;
                }
        } else if (!strcmp(key, "all")) {
            if (end - p >= 4 && !strncmp(p, "true", 4)) { b->all = 1; p += 4; }
            else if (end - p >= 5 && !strncmp(p, "false", 5)) p += 5;
            else {
                snprintf(err, errlen, "all: true or false");
                return -1;
            }
        } else if (!strcmp(key, "route")) {
            if (!(p = str(p, end, b->route, sizeof b->route))) {
                snprintf(err, errlen, "route: a string (the route's pattern)");
                return -1;
            }
            b->has_route = 1;
        } else {
            snprintf(err, errlen, "unknown member \"%s\": the body has ids, or all and route", key);
            return -1;
        }
        p = ws(p, end);
        if (p < end && *p == ',') { p++; continue; }
        if (p < end && *p == '}') return ws(p + 1, end) == end ? 0 : -1;
        return -1;
    }
}

unsigned master_dlq_action(const master *m, const char *path, const char *body, size_t len, strbuf *out)
{
    int del = !strcmp(path, "/dlq/delete");
    if (!del && strcmp(path, "/dlq/replay")) return answer_error(out, 404, "no such action; POST /dlq/replay or /dlq/delete");
    dlq_body *b = malloc(sizeof *b);
    if (!b) return answer_error(out, 500, "out of memory");
    char err[160];
    unsigned status = 200;
    if (parse_body(body, len, b, err, sizeof err)) {
        status = answer_error(out, 400, err);
        goto out;
    }
    if (b->all == b->has_ids) {
        status = answer_error(out, 400, "give \"ids\":[...] or \"all\":true (with \"route\" for one route's)");
        goto out;
    }
    if (b->has_route && !b->all) {
        status = answer_error(out, 400, "\"route\" goes with \"all\":true");
        goto out;
    }
    dlq_store *s = NULL;
    int rc = open_store(m, &s, out, &status);
    if (rc < 0) goto out;
    long done = 0;
    if (rc > 0) {
        dlq_filter f = { .route = b->has_route ? b->route : NULL };
        int (*fn)(dlq_store *, const int64_t *, int, int, const dlq_filter *, long *) =
            del ? dlq_store_delete : dlq_store_ask_replay;
        if (fn(s, b->ids, b->nids, b->all, &f, &done)) {
            snprintf(err, sizeof err, "%s", dlq_store_error(s));
            dlq_store_close(s);
            status = answer_error(out, 500, err);
            goto out;
        }
        dlq_store_close(s);
    }
    const char *what = del ? "deleted" : "asked for replay";
    log_info("admin endpoint: %ld dead letter%s %s", done, done == 1 ? "" : "s", what);
    sb_printf(out, "{\"ok\":true,\"done\":%ld,\"message\":\"%ld dead letter%s %s\"}\n", done, done,
              done == 1 ? "" : "s", what);
out:
    free(b);
    return status;
}

static int gauge_row(const char *route, long count, void *arg)
{
    strbuf *out = arg;
    sb_puts(out, "routemq_dead_letters{route=");
    /* A Prometheus label value escapes backslash, quote and newline like JSON does. */
    sb_json_str(out, route);
    sb_printf(out, "} %ld\n", count);
    return 0;
}

void master_dlq_metrics(const master *m, strbuf *out)
{
    uint64_t trimmed = 0;
    for (int i = 0; i < m->nslots; i++) trimmed += atomic_load(&m->shm->slots[i].dlq_trimmed);
    sb_printf(out, "# HELP routemq_dead_letters_trimmed_total Oldest dead-letter records deleted to stay within "
                   "ROUTEMQ_DLQ_MAX.\n# TYPE routemq_dead_letters_trimmed_total counter\n"
                   "routemq_dead_letters_trimmed_total %llu\n", (unsigned long long)trimmed);
    sb_puts(out, "# HELP routemq_dead_letters Records in the dead-letter store, per route.\n"
                 "# TYPE routemq_dead_letters gauge\n");
    dlq_store *s = NULL;
    char err[600];
    if (dlq_store_open(m->cfg->dlq_store, 0, &s, err, sizeof err)) return;
    if (dlq_store_count_routes(s, gauge_row, out)) log_error("routemq_dead_letters: %s", dlq_store_error(s));
    dlq_store_close(s);
}

int master_dlq_summary(const master *m, long *count, int64_t *oldest_ms)
{
    *count = 0;
    *oldest_ms = 0;
    dlq_store *s = NULL;
    char err[600];
    if (dlq_store_open(m->cfg->dlq_store, 0, &s, err, sizeof err)) return errno == ENOENT ? 0 : -1;
    int rc = dlq_store_count(s, NULL, count) || dlq_store_oldest(s, oldest_ms) ? -1 : 1;
    dlq_store_close(s);
    return rc;
}
