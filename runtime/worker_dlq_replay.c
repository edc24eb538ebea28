/* Replays from the dead-letter store: `routemq dlq replay` (or POST
 * /dlq/replay) marks records; every running worker takes a few of them
 * about once a second, while its keep has room and its queue is short,
 * and handles each as a new message (ctx.replayed = true, ctx.attempt = 1).
 * A taken record is in the worker's keep before the store's transaction
 * commits, so a kill -9 between the two gives a second replay at worst,
 * never a lost one; what a dead worker took and never kept is given back
 * when the slot's next worker starts. Success removes the record from the
 * store (worker_dispatch.c finish -> worker_dlq_replay_done); a final
 * failure stores it again with its new error (worker_dlq_put). */
#include "worker_internal.h"
#include "dlq_store.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REPLAY_BATCH 16          /* records taken at most per turn */
#define REPLAY_PERIOD_NS 1000000000LL

/* The store when its file exists (nothing to replay otherwise: it is made
 * by the first dead letter, not by every worker looking for replays). */
static dlq_store *replay_store(worker *w)
{
    /* An adoption worker drains another instance's session and leaves: the
     * instance's own workers take the replays. */
    if (w->args->adopt_client_id) return NULL;
    if (!w->cfg->dlq_store || access(w->cfg->dlq_store, F_OK)) return NULL;
    return worker_dlq_store(w);
}

/* Who takes the records: the slot's client id, stable across restarts of
 * the slot's worker (so its next worker can give back what this one took). */
static const char *owner(const worker *w)
{
    return w->conn.client_id;
}

/* A record whose topic no route matches: stored again, after the claim's
 * transaction, with that error. */
typedef struct unmatched {
    int64_t id;
    int attempts;
    char reason[16];
    char why[LOG_TOPIC_BUF + 64];
} unmatched;

typedef struct claim_ctx {
    worker *w;
    unmatched none[REPLAY_BATCH];
    int nnone;
    int taken;
} claim_ctx;

static int take(const dlq_entry *e, void *arg)
{
    claim_ctx *c = arg;
    worker *w = c->w;
    char t[LOG_TOPIC_BUF];
    topic_span caps[TOPIC_MAX_WILDCARDS];
    int ncaps = 0;
    int rid = topic_trie_match(w->trie, e->topic, e->topic_len, caps, TOPIC_MAX_WILDCARDS, &ncaps);
    if (rid <= 0) {
        if (c->nnone >= REPLAY_BATCH) return 1;  /* given back: cannot happen, the claim takes at most as many */
        unmatched *u = &c->none[c->nnone++];
        u->id = e->id;
        u->attempts = e->attempts;
        snprintf(u->reason, sizeof u->reason, "%s", e->reason ? e->reason : "error");
        snprintf(u->why, sizeof u->why, "no route matches %s any more", log_topic(t, sizeof t, e->topic, e->topic_len));
        return 0;
    }
    worker_msg m = { .topic = e->topic, .tlen = e->topic_len, .payload = e->payload, .plen = e->payload_len,
                     .props = e->props, .props_len = e->props ? e->props_len : 0, .qos = e->qos, .retain = e->retain,
                     .rid = rid };
    if (!worker_keep_has_room(w)) return 1;
    int id = worker_keep_add(w, &m);
    if (id < 0) return 1;  /* given back: asked for again, taken when there is room */
    shm_rec *r = worker_keep_rec(w, id);
    r->dlq_id = e->id;
    r->replayed = 1;
    worker_enqueue(w, id);
    c->taken++;
    log_with(LOGL_INFO, &(log_fields){ .route = w->app.routes[rid - 1].pattern, .topic = log_topic(t, sizeof t, e->topic, e->topic_len) },
             "replaying dead letter %lld", (long long)e->id);
    return 0;
}

/* Records free in the keep, the cheap part of worker_keep_has_room. */
static int free_records(const worker *w)
{
    return w->keep.nfree + (int)(w->keep.max_recs - w->keep.fresh);
}

void worker_dlq_replay_tick(worker *w, int64_t now)
{
    if (now < w->replay_next_ns) return;
    w->replay_next_ns = now + REPLAY_PERIOD_NS;
    if (w->stop.kind || !w->conn.connected || !worker_keep_has_room(w)) return;
    if (worker_queue_len(w) >= w->cfg->concurrency) return;  /* busy: another worker may take them sooner */
    long limit = free_records(w) - 1;  /* one stays for incoming messages */
    if (limit > REPLAY_BATCH) limit = REPLAY_BATCH;
    if (limit <= 0) return;
    dlq_store *s = replay_store(w);
    if (!s) return;
    claim_ctx c = { .w = w };
    if (dlq_store_claim(s, owner(w), limit, take, &c)) {
        log_error("dead-letter store: %s; replays are taken again later", dlq_store_error(s));
        return;
    }
    for (int i = 0; i < c.nnone; i++) {
        /* Its runs and reason stay; the error says why it was not run. */
        dlq_entry e = { .time_ms = worker_wall_ms(), .attempts = c.none[i].attempts, .reason = c.none[i].reason,
                        .error = c.none[i].why };
        if (dlq_store_replay_failed(s, c.none[i].id, &e))
            log_error("dead-letter store: %s", dlq_store_error(s));
        else
            log_warn("dead letter %lld cannot be replayed: %s", (long long)c.none[i].id, c.none[i].why);
    }
    if (c.taken) worker_pump(w);
}

void worker_dlq_replay_start(worker *w)
{
    dlq_store *s = replay_store(w);
    if (!s) return;
    int n = 0;
    int64_t *keep = calloc(w->keep.max_recs + 1, sizeof *keep);
    if (!keep) { log_error("out of memory"); return; }
    for (uint32_t i = 0; i < w->keep.fresh; i++) {
        shm_rec *r = worker_keep_rec(w, (int)i);
        if (atomic_load_explicit(&r->state, memory_order_acquire) != REC_FREE && r->dlq_id > 0) keep[n++] = r->dlq_id;
    }
    if (dlq_store_unclaim(s, owner(w), keep, n))
        log_error("dead-letter store: %s; what a previous worker of this slot took for replay stays taken",
                  dlq_store_error(s));
    free(keep);
}
