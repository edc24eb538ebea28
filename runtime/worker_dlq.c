/* A kept message that ended without success goes into the dead-letter store
 * (dlq_store.h) before it leaves the keep: a kill -9 between the commit and
 * the release gives a second record at worst, never none. Then it is
 * published to ROUTEMQ_DLQ_TOPIC (unless off) and finished. A store that
 * cannot be written now (disk full, locked past the busy timeout) leaves the
 * message kept; the loop tries again after 1 s, then less often (up to
 * every 30 s) while it keeps failing. */
#include "worker_internal.h"
#include "dlq_store.h"
#include "log.h"
#include "log_limit.h"
#include "luavm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A message whose record could not be written yet, and why it died. */
typedef struct dlq_pending {
    int id;
    char *reason, *err, *tb;
} dlq_pending;

struct worker_dlq {
    dlq_store *store;          /* opened on the first dead letter */
    dlq_pending *pending;
    int npending, cap;
    int64_t err_logged_ns;     /* the "cannot store" error: at most every 10 s */
    int64_t next_try_ns;       /* when worker_dlq_retry_due tries the store again */
    int64_t backoff_ns;        /* doubles while it fails (a locked store may block each try for its busy timeout) */
    log_limit lines;           /* "stored as dead letter" lines: at most 10 per 10 s, then a count */
};

#define DLQ_LOG_WINDOW_NS 10000000000LL
#define DLQ_LOG_PER_WINDOW 10

static void log_missed(int n)
{
    if (n)
        log_warn("%d more message%s stored as dead letters (logged: at most %d per 10 s; routemq dlq list shows them)",
                 n, n == 1 ? "" : "s", DLQ_LOG_PER_WINDOW);
}

/* The count of dead letters not logged, once their window is over. */
static void log_unlogged(struct worker_dlq *d, int64_t now)
{
    log_missed(log_limit_roll(&d->lines, now, DLQ_LOG_WINDOW_NS));
}

/* 1 when this dead letter gets its own log line. */
static int log_allowed(worker *w)
{
    struct worker_dlq *d = w->dlq;
    if (!d) return 1;
    int missed, allowed = log_limit_allow(&d->lines, shm_now_ns(), DLQ_LOG_WINDOW_NS, DLQ_LOG_PER_WINDOW, &missed);
    log_missed(missed);
    return allowed;
}

#define DLQ_RETRY_MIN_NS 1000000000LL
#define DLQ_RETRY_MAX_NS 30000000000LL

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct worker_dlq *state(worker *w)
{
    if (!w->dlq) w->dlq = calloc(1, sizeof *w->dlq);
    return w->dlq;
}

static void log_store_error(worker *w, const char *why)
{
    int64_t now = shm_now_ns();
    if (w->dlq && now - w->dlq->err_logged_ns < 10000000000LL) return;
    if (w->dlq) w->dlq->err_logged_ns = now;
    log_error("%s; dead letters stay kept and are stored once it can be written", why);
}

/* The store, opened (created) on first use; NULL with the error logged. */
static dlq_store *store(worker *w)
{
    struct worker_dlq *d = state(w);
    if (!d) {
        log_store_error(w, "out of memory for the dead-letter store");
        return NULL;
    }
    if (d->store) return d->store;
    char err[600];
    if (dlq_store_open(w->cfg->dlq_store, 1, &d->store, err, sizeof err)) log_store_error(w, err);
    return d->store;
}

/* ROUTEMQ_DLQ_TOPIC with {topic} replaced by the original topic; NULL when out of memory. */
static char *dlq_topic(worker *w, const char *topic, size_t tlen)
{
    const char *tpl = w->cfg->dlq_topic ? w->cfg->dlq_topic : "routemq/dlq/{topic}";
    const char *at = strstr(tpl, "{topic}");
    char *out = NULL;
    int n = at ? asprintf(&out, "%.*s%.*s%s", (int)(at - tpl), tpl, (int)tlen, topic, at + 7)
               : asprintf(&out, "%s", tpl);
    return n < 0 ? NULL : out;
}

/* Publishes the stored message's JSON envelope to ROUTEMQ_DLQ_TOPIC; the
 * record is finished when the broker has it, or at once when that fails
 * (the record is stored: nothing is lost). */
static void publish(worker *w, int id, const worker_msg *m, const char *route, const char *err, int attempts,
                    int64_t dlq_id)
{
    lua_State *L = w->lua.L;
    char lerr[1024], t[LOG_TOPIC_BUF];
    char *topic = strndup(m->topic, m->tlen);
    char *dtopic = topic ? dlq_topic(w, topic, m->tlen) : NULL;
    const char *why = NULL;
    if (!topic || !dtopic) {
        why = "out of memory";
        goto fail;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->lua.envelope_ref);
    lua_pushlstring(L, m->topic, m->tlen);
    lua_pushlstring(L, m->plen ? m->payload : "", m->plen);
    lua_pushstring(L, route);
    lua_pushstring(L, err);
    lua_pushinteger(L, attempts);
    if (luavm_pcall(L, 5, 1, lerr, sizeof lerr, NULL, 0)) {
        why = lerr;
        goto fail;
    }
    size_t elen;
    const char *env = lua_tolstring(L, -1, &elen);
    atomic_store_explicit(&worker_keep_rec(w, id)->state, REC_ACKS, memory_order_release);
    /* Counted as dead-lettered, and released, once the broker has it (worker_dispatch.c finish). */
    int rc = worker_out_publish(w, id, dtopic, env, elen, 1, 0, NULL, &why);
    lua_pop(L, 1);
    if (rc) goto fail;
    free(topic);
    free(dtopic);
    worker_rec_done(w, id);
    return;
fail:
    log_with(LOGL_ERROR, &(log_fields){ .route = route, .error = why },
             "cannot publish dead letter %lld to the dead-letter topic %s; it is in the store only", (long long)dlq_id,
             dtopic ? log_topic(t, sizeof t, dtopic, strlen(dtopic)) : "(none)");
    atomic_fetch_add(&w->shm->publishes_dropped, 1);
    free(topic);
    free(dtopic);
    worker_rec_done(w, id);
}

/* Writes record id to the store and finishes it; 0, or -1 (logged) when
 * the store cannot be written now. */
static int store_one(worker *w, int id, const char *reason, const char *err, const char *tb)
{
    shm_rec *r = worker_keep_rec(w, id);
    worker_kept k;
    worker_keep_open(w, id, &k);
    int ri = r->route_index;
    const char *route = ri >= 1 && ri <= w->app.nroutes ? w->app.routes[ri - 1].pattern : "";
    /* Runs it had: deaths and failed attempts, and the one that just failed
     * (a crash is counted in deaths already). */
    int attempts = (int)(r->attempts + r->failures) + (strcmp(reason, "crash") ? 1 : 0);
    int64_t dlq_id = r->dlq_id;
    char t[LOG_TOPIC_BUF];
    log_topic(t, sizeof t, k.msg.topic, k.msg.tlen);
    /* r->dlq survives a kill -9 in the keep: a record already committed is
     * not stored twice by the next worker. */
    if (!r->dlq) {
        dlq_store *s = store(w);
        if (!s) return -1;
        dlq_entry e = { .time_ms = wall_ms(), .topic = k.msg.topic, .topic_len = k.msg.tlen, .route = route,
                        .payload = k.msg.payload, .payload_len = k.msg.plen, .qos = k.msg.qos, .retain = k.msg.retain,
                        .props = k.msg.props, .props_len = k.msg.props_len, .attempts = attempts, .reason = reason,
                        .error = err, .traceback = tb };
        long dropped = 0;
        int rc = dlq_id > 0 ? dlq_store_replay_failed(s, dlq_id, &e) : dlq_store_put(s, &e, w->cfg->dlq_max, &dlq_id, &dropped);
        if (rc) {
            log_store_error(w, dlq_store_error(s));
            return -1;
        }
        r->dlq = 1;
        /* A handler's error, timeout or ctx:fail was logged already by
         * the dispatcher, under the handler errors' rate limit (a second
         * line per message would undo it when every message fails): debug
         * here. A crash has only this line, at most 10 per 10 s. */
        if (!strcmp(reason, "error") || !strcmp(reason, "timeout") || !strcmp(reason, "failed"))
            log_with(LOGL_DEBUG, &(log_fields){ .route = route, .topic = t, .error = err },
                     "message stored as dead letter %lld (%s after %d attempt%s)", (long long)dlq_id, reason,
                     attempts, attempts == 1 ? "" : "s");
        else if (log_allowed(w))
            log_with(LOGL_ERROR, &(log_fields){ .route = route, .topic = t, .error = err },
                     "message stored as dead letter %lld (%s after %d attempt%s)", (long long)dlq_id, reason,
                     attempts, attempts == 1 ? "" : "s");
        if (dropped) atomic_fetch_add(&w->shm->dlq_trimmed, (uint64_t)dropped);
        if (dropped)
            log_warn("the dead-letter store is full (ROUTEMQ_DLQ_MAX=%ld): the %ld oldest record%s deleted",
                     w->cfg->dlq_max, dropped, dropped == 1 ? " was" : "s were");
    }
    if (w->cfg->dlq_topic_off) {
        worker_rec_done(w, id);
        return 0;
    }
    publish(w, id, &k.msg, route, err ? err : reason, attempts, dlq_id);
    return 0;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void pending_free(dlq_pending *p)
{
    free(p->reason);
    free(p->err);
    free(p->tb);
}

int worker_dlq_put(worker *w, int id, const char *reason, const char *err, const char *tb)
{
    /* Not started again, not released: it waits for the store. */
    atomic_store_explicit(&worker_keep_rec(w, id)->state, REC_ACKS, memory_order_release);
    struct worker_dlq *d = state(w);
    /* While earlier ones wait, the store is known to fail: this one queues
     * behind them rather than block the loop on another try. */
    if ((!d || !d->npending) && store_one(w, id, reason, err, tb) == 0) return 0;
    if (!d) return -1;
    if (!d->npending) {
        d->backoff_ns = DLQ_RETRY_MIN_NS;
        d->next_try_ns = shm_now_ns() + d->backoff_ns;
    }
    if (d->npending == d->cap) {
        int ncap = d->cap ? d->cap * 2 : 16;
        dlq_pending *g = realloc(d->pending, (size_t)ncap * sizeof *g);
        if (!g) {
            log_error("out of memory queueing a dead letter; it stays kept for the next worker of the slot");
            return -1;
        }
        d->pending = g;
        d->cap = ncap;
    }
    dlq_pending *p = &d->pending[d->npending];
    p->id = id;
    p->reason = strdup(reason);
    p->err = dup_or_null(err);
    p->tb = dup_or_null(tb);
    if (!p->reason) {
        pending_free(p);
        log_error("out of memory queueing a dead letter; it stays kept for the next worker of the slot");
        return -1;
    }
    d->npending++;
    return -1;
}

void worker_dlq_retry_due(worker *w)
{
    struct worker_dlq *d = w->dlq;
    if (d && d->lines.missed) log_unlogged(d, shm_now_ns());
    if (!d || !d->npending) return;
    int64_t now = shm_now_ns();
    if (now < d->next_try_ns) return;
    int k = 0;
    for (int i = 0; i < d->npending; i++) {
        dlq_pending *p = &d->pending[i];
        /* Once one fails the store is still unwritable: the rest wait too. */
        if (k == 0 && store_one(w, p->id, p->reason, p->err, p->tb) == 0) {
            pending_free(p);
            continue;
        }
        d->pending[k++] = *p;
    }
    if (k < d->npending) log_info("%d dead letter%s stored after waiting for the store", d->npending - k,
                                  d->npending - k == 1 ? "" : "s");
    d->npending = k;
    if (k) {
        d->backoff_ns = d->backoff_ns * 2 > DLQ_RETRY_MAX_NS ? DLQ_RETRY_MAX_NS : d->backoff_ns * 2;
        d->next_try_ns = shm_now_ns() + d->backoff_ns;
    }
}

int worker_dlq_replay_done(worker *w, int64_t dlq_id)
{
    dlq_store *s = store(w);
    if (!s) return -1;
    if (dlq_store_replay_done(s, dlq_id)) {
        log_store_error(w, dlq_store_error(s));
        return -1;
    }
    return 0;
}

dlq_store *worker_dlq_store(worker *w)
{
    return store(w);
}

void worker_dlq_free(worker *w)
{
    struct worker_dlq *d = w->dlq;
    if (!d) return;
    log_unlogged(d, INT64_MAX);
    if (d->npending)
        log_warn("%d dead letter%s could not be stored; %s kept for the next worker of the slot", d->npending,
                 d->npending == 1 ? "" : "s", d->npending == 1 ? "it stays" : "they stay");
    for (int i = 0; i < d->npending; i++) pending_free(&d->pending[i]);
    free(d->pending);
    dlq_store_close(d->store);
    free(d);
    w->dlq = NULL;
}
